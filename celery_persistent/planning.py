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
from .messages import KnownMessage, fingerprint
from .store import MessageStore, as_ref, is_ref


@dataclass(frozen=True)
class Plan:
    msg1: Mapping[str, Any]  # the message, or a Ref to a stored one
    msg2: Mapping[str, Any]
    msg1_digest: str
    msg1_size: int
    device: Device
    method: Callable[..., Any]
    opts: dict[str, Any]
    group: str | None  # None: ungrouped, executes without registration
    host_group: str | None  # group(Msg1, None): where a persistent worker of Msg1 lives
    key: str  # digest of Msg2 without priv: equal keys coalesce
    stack: tuple[str, ...]  # groups executing above this request
    shadow: str  # readable task name for Flower and logs

    @property
    def recursive(self) -> bool:
        return self.group is not None and self.group in self.stack and not self.opts["allow_infinite"]


def plan(
    devices: DeviceRegistry,
    store: MessageStore,
    conf: Any,
    max_bytes: int,
    msg1: Any,
    msg2: Any,
    opts: Mapping[str, Any] | None,
    stack: tuple[str, ...] | None = None,
) -> Plan:
    merged = resolve_options(opts, conf)
    if is_ref(msg1):
        msg1 = as_ref(msg1)
        msg1_digest, msg1_size = msg1.digest, msg1.size
    else:
        msg1_digest, msg1_size = fingerprint(msg1, "msg1", max_bytes)
    key = fingerprint(msg2, "msg2", max_bytes).digest
    device = devices.for_message(msg1)
    method = devices.method(device, msg2)
    content = Lazy(lambda: store.get(msg1) if is_ref(msg1) else frozen(msg1, msg1_digest, msg1_size))
    group = group_of(device, content, msg2, merged, msg1_digest)
    host_group = group_of(device, content, None, merged, msg1_digest) if group is not None else None
    return Plan(
        msg1=msg1,
        msg2=msg2,
        msg1_digest=msg1_digest,
        msg1_size=msg1_size,
        device=device,
        method=method,
        opts=merged,
        group=group,
        host_group=host_group,
        key=key,
        stack=current_stack() if stack is None else tuple(stack),
        shadow=f"persistent:{device.name}/{msg2['path']}",
    )


class Planner:
    """Plans requests against the app's devices, options and message store."""

    def __init__(self, devices: DeviceRegistry, store: MessageStore, conf: Any, max_bytes: int) -> None:
        self.devices = devices
        self.store = store
        self.conf = conf
        self.max_bytes = max_bytes

    def plan(self, msg1: Any, msg2: Any, opts: Mapping[str, Any] | None,
             stack: tuple[str, ...] | None = None) -> Plan:
        return plan(self.devices, self.store, self.conf, self.max_bytes, msg1, msg2, opts, stack)

    def group(self, msg1: Any, msg2: Any = None, opts: Mapping[str, Any] | None = None) -> str | None:
        """The seed's group/3 on raw input: None when the request is not coalesced."""
        merged = resolve_options(opts, self.conf)
        msg1_digest, content = self._msg1_digest(msg1)
        if msg2 is not None:
            fingerprint(msg2, "msg2", self.max_bytes)
        return group_of(self.devices.for_message(msg1), content, msg2, merged, msg1_digest)

    def default_grouper(self, msg1: Any, msg2: Any = None) -> str:
        msg1_digest, _ = self._msg1_digest(msg1)
        if msg2 is not None:
            fingerprint(msg2, "msg2", self.max_bytes)
        return default_group(msg1_digest, msg2)

    def _msg1_digest(self, msg1: Any) -> tuple[str, Any]:
        """Msg1's digest (a stored or loaded message keeps its own) and its content for a grouper."""
        if is_ref(msg1):
            ref = as_ref(msg1)
            return ref.digest, Lazy(lambda: self.store.get(ref))
        found, size = fingerprint(msg1, "msg1", self.max_bytes)
        return found, Lazy(lambda: frozen(msg1, found, size))


def frozen(msg1: Any, msg1_digest: str, size: int) -> Any:
    """What a grouper sees of a Msg1 passed by value: a shallow copy carrying the digest just computed,
    so that ``default_grouper(msg1)`` inside it does not hash Msg1 a second time."""
    if isinstance(msg1, KnownMessage) and msg1.known() is not None:
        return msg1
    return KnownMessage(msg1, msg1_digest, size)


class Lazy:
    """Msg1's content, fetched only if a custom grouper looks at it."""

    def __init__(self, load: Callable[[], Mapping[str, Any]]) -> None:
        self._load = load
        self._value: Mapping[str, Any] | None = None

    def __call__(self) -> Mapping[str, Any]:
        if self._value is None:
            self._value = self._load()
        return self._value


def group_of(
    device: Device,
    msg1: Mapping[str, Any] | Lazy,
    msg2: Mapping[str, Any] | None,
    opts: dict[str, Any],
    msg1_digest: str,
) -> str | None:
    """The seed's group/3: None when the request is not to be coalesced."""
    mode = device.await_inprogress if device.await_inprogress is not None else opts["await_inprogress"]
    if mode is False or (mode == "named" and not has_own_grouper(device)):
        return None
    if has_own_grouper(device):
        custom = device.grouper(msg1() if isinstance(msg1, Lazy) else msg1, msg2, opts)
        if custom is not None:
            return normalise(custom)
    return default_group(msg1_digest, msg2)


CHAINED = (
    "in a chain or a link Celery passes the previous result as the first argument, so resolve.s(msg1, msg2) "
    "there is called as resolve(previous result, msg1, msg2). Write resolve.s(msg2) or resolve.s(msg2, opts) "
    "to resolve msg2 against the previous result (it becomes Msg1, as in hb_persistent), or "
    "resolve.si(msg1, msg2) to ignore the previous result"
)


def unpack(args: Any, kwargs: Any) -> tuple[Any, Any, Any]:
    """(msg1, msg2, opts) from a resolve call's args and kwargs."""
    positional = tuple(args or ())
    if len(positional) > 3:
        raise InvalidOptions(f"resolve() takes (msg1, msg2, opts=None), not {len(positional)} arguments: {CHAINED}",
                             "opts")
    params = dict(zip(("msg1", "msg2", "opts"), positional, strict=False))
    for name, value in (kwargs or {}).items():
        if name not in ("msg1", "msg2", "opts") or name in params:
            raise InvalidOptions(f"resolve() got an unexpected or repeated argument {name!r}", name)
        params[name] = value
    if "msg1" not in params or "msg2" not in params:
        raise InvalidOptions("resolve() takes (msg1, msg2, opts=None)", "msg2")
    opts = params.get("opts")
    if isinstance(opts, Mapping) and "path" in opts:
        # A Msg2 where the options go: the classic shape of a full request chained after another task.
        raise InvalidOptions(f"resolve() got a message with a path where its opts go: {CHAINED}", "opts")
    return params["msg1"], params["msg2"], opts
