"""Device registration and key lookup (``celery_persistent/device.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from celery_persistent import Device, InvalidMessage, UnknownDevice, UnknownKey
from celery_persistent.device import HOOKS, DeviceRegistry, has_own_grouper


class Counter(Device):
    version = 3  # a plain attribute, not a key

    def add(self, msg1: Any, msg2: Any, opts: Any) -> int:
        return int(msg1["n"]) + int(msg2["by"])

    def _helper(self) -> None:
        """Private: never a key."""


class Sharded(Device):
    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str | None:
        return str(msg1.get("shard"))

    def read(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "read"


@pytest.fixture
def devices() -> DeviceRegistry:
    reg = DeviceRegistry()
    reg.register("counter", Counter)
    reg.register("sharded", Sharded)
    return reg


def test_register_returns_a_named_instance(devices: DeviceRegistry) -> None:
    dev = devices.for_message({"device": "counter"})
    assert isinstance(dev, Counter)
    assert dev.name == "counter"
    assert devices.for_message({"device": "counter"}) is dev  # one instance per process
    assert devices.names() == ["counter", "sharded"]


def test_register_replaces_a_name() -> None:
    reg = DeviceRegistry()
    reg.register("x", Counter)
    again = reg.register("x", Sharded)
    assert reg.for_message({"device": "x"}) is again
    assert isinstance(again, Sharded)
    assert reg.names() == ["x"]


@pytest.mark.parametrize("cls", [object, dict, Counter(), "Counter", None])
def test_register_needs_a_device_subclass(cls: Any) -> None:
    reg = DeviceRegistry()
    with pytest.raises(TypeError, match="must subclass"):
        reg.register("bad", cls)
    assert reg.names() == []


@pytest.mark.parametrize("name", ["", None, 3])
def test_register_needs_a_name(name: Any) -> None:
    with pytest.raises(ValueError):
        DeviceRegistry().register(name, Counter)


def test_unknown_device_lists_registered_names(devices: DeviceRegistry) -> None:
    with pytest.raises(UnknownDevice) as info:
        devices.for_message({"device": "nope"})
    assert info.value.device == "nope"
    assert "'nope'" in str(info.value)
    assert "counter" in str(info.value) and "sharded" in str(info.value)


def test_unknown_device_on_an_empty_registry() -> None:
    with pytest.raises(UnknownDevice, match="none"):
        DeviceRegistry().for_message({"device": "nope"})


def test_missing_device_key(devices: DeviceRegistry) -> None:
    with pytest.raises(UnknownDevice) as info:
        devices.for_message({"n": 1})
    assert info.value.device == ""
    assert "device" in str(info.value)


@pytest.mark.parametrize("name", [1, b"counter", ["counter"], {"x": 1}, True])
def test_non_str_device_is_invalid(devices: DeviceRegistry, name: Any) -> None:
    with pytest.raises(InvalidMessage) as info:
        devices.for_message({"device": name})
    assert info.value.path == "msg1.device"
    assert not isinstance(info.value, UnknownDevice)


def test_method_returns_the_bound_key(devices: DeviceRegistry) -> None:
    dev = devices.for_message({"device": "counter"})
    method = devices.method(dev, {"path": "add"})
    assert method({"n": 2}, {"by": 5}, {}) == 7
    assert getattr(method, "__self__", None) is dev


@pytest.mark.parametrize(
    "path",
    ["missing", "_helper", "__init__", "__class__", "version", *sorted(HOOKS)],
)
def test_method_refuses_non_keys(devices: DeviceRegistry, path: str) -> None:
    dev = devices.for_message({"device": "counter"})
    with pytest.raises(UnknownKey) as info:
        devices.method(dev, {"path": path})
    assert info.value.device == "counter"
    assert info.value.key == path
    assert repr(path) in str(info.value)


def test_hooks_include_grouper_and_worker() -> None:
    assert {"grouper", "worker", "on_idle", "await_inprogress", "name"} <= HOOKS


def test_overridden_hook_is_still_not_a_key(devices: DeviceRegistry) -> None:
    dev = devices.for_message({"device": "sharded"})
    with pytest.raises(UnknownKey):
        devices.method(dev, {"path": "grouper"})
    assert devices.method(dev, {"path": "read"})({}, {}, {}) == "read"


@pytest.mark.parametrize("msg2", [{}, {"path": ""}, {"path": 3}, {"path": None}, {"path": ["add"]}])
def test_method_needs_a_str_path(devices: DeviceRegistry, msg2: dict[str, Any]) -> None:
    dev = devices.for_message({"device": "counter"})
    with pytest.raises(UnknownKey) as info:
        devices.method(dev, msg2)
    assert info.value.device == "counter" and info.value.key == ""


def test_has_own_grouper(devices: DeviceRegistry) -> None:
    assert has_own_grouper(devices.for_message({"device": "sharded"})) is True
    assert has_own_grouper(devices.for_message({"device": "counter"})) is False
    assert has_own_grouper(Device()) is False


def test_default_hooks() -> None:
    dev = Device()
    assert dev.grouper({}, None, {}) is None
    assert dev.on_idle({}, {}) is None
    assert dev.worker({}, {}, {}, lambda: {"out": 1}) == {"out": 1}
    assert dev.await_inprogress is None
