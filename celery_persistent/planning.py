"""From (Msg1, Msg2, opts) to a plan: checked input, device, group, coalescing key.

Done once per request, on the client when it sends and on the worker for
requests that reached it another way, so that every bad input fails early
with a typed error and nothing is registered for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .config import resolve_options
from .context import current_stack
from .device import Device, DeviceRegistry, has_own_grouper
from .errors import InvalidOptions
from .grouping import default_group, normalise
from .messages import digest, validate


@dataclass(frozen=True)
class Plan:
    msg1: Mapping[str, Any]
    msg2: Mapping[str, Any]
    device: Device
    method: Callable[..., Any]
    opts: dict[str, Any]
    group: str | None  # None: ungrouped, executes without registration
    key: str  # digest of Msg2 without priv: equal keys coalesce
    stack: tuple[str, ...]  # groups executing above this request
    shadow: str  # readable task name for Flower and logs

    @property
    def recursive(self) -> bool:
        return self.group is not None and self.group in self.stack and not self.opts["allow_infinite"]


def plan(
    devices: DeviceRegistry,
    conf: Any,
    max_bytes: int,
    msg1: Any,
    msg2: Any,
    opts: Mapping[str, Any] | None,
    stack: tuple[str, ...] | None = None,
) -> Plan:
    merged = resolve_options(opts, conf)
    msg1_encoded = validate(msg1, "msg1", max_bytes)
    msg2_encoded = validate(msg2, "msg2", max_bytes)
    device = devices.for_message(msg1)
    method = devices.method(device, msg2)
    group = group_of(device, msg1, msg2, merged, msg1_encoded)
    return Plan(
        msg1=msg1,
        msg2=msg2,
        device=device,
        method=method,
        opts=merged,
        group=group,
        key=digest(msg2_encoded),
        stack=current_stack() if stack is None else tuple(stack),
        shadow=f"persistent:{device.name}/{msg2['path']}",
    )


def group_of(
    device: Device,
    msg1: Mapping[str, Any],
    msg2: Mapping[str, Any] | None,
    opts: dict[str, Any],
    msg1_encoded: bytes,
) -> str | None:
    """The seed's group/3: None when the request is not to be coalesced."""
    mode = device.await_inprogress if device.await_inprogress is not None else opts["await_inprogress"]
    if mode is False or (mode == "named" and not has_own_grouper(device)):
        return None
    custom = device.grouper(msg1, msg2, opts)
    if custom is not None:
        return normalise(custom)
    return default_group(msg1_encoded, msg2)


def unpack(args: Any, kwargs: Any) -> tuple[Any, Any, Any]:
    """(msg1, msg2, opts) from a resolve call's args and kwargs."""
    params = dict(zip(("msg1", "msg2", "opts"), tuple(args or ()), strict=False))
    for name, value in (kwargs or {}).items():
        if name not in ("msg1", "msg2", "opts") or name in params:
            raise InvalidOptions(f"resolve() got an unexpected or repeated argument {name!r}", name)
        params[name] = value
    if "msg1" not in params or "msg2" not in params:
        raise InvalidOptions("resolve() takes (msg1, msg2, opts=None)", "msg2")
    return params["msg1"], params["msg2"], params.get("opts")
