"""Devices: the code that resolves Msg2 against Msg1.

A device is a class; each public method is a key that ``msg2["path"]`` can
name.  The hooks below are the seed's device ``info`` (grouper, worker,
await); their defaults do nothing special, so a device overrides only what
it needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .errors import InvalidMessage, UnknownDevice, UnknownKey

Msg = Mapping[str, Any]

HOOKS = frozenset({"grouper", "await_inprogress", "on_idle", "worker", "name", "reply", "deterministic"})


class Device:
    """Base class for devices.  Override hooks as needed; keys are methods."""

    name: str = ""
    #: Forces ``await_inprogress`` for this device (None: take it from opts).
    await_inprogress: bool | str | None = None
    #: Whether running a key again on the same Msg1 and Msg2 gives the same Msg3.  A rolling
    #: group journals requests between checkpoints and replays them after a crash, which
    #: needs this; a device that sets it False gets a checkpoint after every request.
    deterministic: bool = True

    def grouper(self, msg1: Msg, msg2: Msg | None, opts: Mapping[str, Any]) -> str | None:
        """Return the group name of a request, or None to use the default.

        Overriding this makes the device "named" for ``await_inprogress="named"``.
        """
        return None

    def on_idle(self, msg1: Msg, opts: Mapping[str, Any]) -> None:
        """Called by a persistent worker before it lets an idle group go."""

    def worker(self, msg1: Msg, msg2: Msg, opts: Mapping[str, Any], run: Callable[[], Any]) -> Any:
        """Persistent-worker behaviour for one request; ``run()`` resolves it.

        Override to compute state forward differently (e.g. the seed's process
        worker, which advances to the slot a request names).  The return value
        is Msg3.
        """
        return run()

    def reply(self, msg1: Msg, msg2: Msg, msg3: Msg, opts: Mapping[str, Any]) -> Any:
        """What the callers of a rolling persistent worker get: Msg3 by default.

        Msg3 still becomes the group's state.  A device with a large state
        returns a small answer here (what the request changed, a status),
        so that the state is neither stored nor sent with every answer.
        """
        return msg3


def has_own_grouper(device: Device) -> bool:
    return type(device).grouper is not Device.grouper


D = TypeVar("D", bound=type[Device])


class DeviceRegistry:
    """Devices by name, one instance each per process."""

    def __init__(self) -> None:
        self._devices: dict[str, Device] = {}

    def register(self, name: str, cls: type[Device]) -> Device:
        if not isinstance(name, str) or not name:
            raise ValueError("a device needs a non-empty str name")
        if not (isinstance(cls, type) and issubclass(cls, Device)):
            raise TypeError(f"device {name!r} must subclass celery_persistent.Device")
        instance = cls()
        instance.name = name
        self._devices[name] = instance
        return instance

    def names(self) -> list[str]:
        return sorted(self._devices)

    def for_message(self, msg1: Msg) -> Device:
        name = msg1.get("device")
        if name is None:
            raise UnknownDevice("msg1 has no 'device' key naming a registered device", "")
        if not isinstance(name, str):
            raise InvalidMessage(f"msg1.device must be a str, not {type(name).__name__}", "msg1.device")
        try:
            return self._devices[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise UnknownDevice(f"unknown device {name!r} (registered: {known})", name) from None

    def method(self, device: Device, msg2: Msg) -> Callable[..., Any]:
        key = msg2.get("path")
        if not isinstance(key, str) or not key:
            raise UnknownKey(f"msg2 must name a key of device {device.name!r} in 'path'", device.name, "")
        if key.startswith("_") or key in HOOKS:
            raise UnknownKey(f"device {device.name!r} has no key {key!r}", device.name, key)
        method: Callable[..., Any] | None = getattr(device, key, None)
        if method is None or not callable(method):
            raise UnknownKey(f"device {device.name!r} has no key {key!r}", device.name, key)
        return method
