"""Layered options (call > app.conf > default), app-wide Settings, and settings read at use (start_worker)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery

from celery_persistent import Device, Persistent
from celery_persistent.config import OPTION_DEFAULTS, Settings, resolve_options
from celery_persistent.errors import ConfigurationError, InvalidOptions

DESIGN_DEFAULTS = {
    "await_inprogress": True,
    "spawn_worker": False,
    "static_worker": False,
    "worker_timeout": 10.0,
    "error_strategy": "ignore",
    "allow_infinite": False,
    # Rolling state (docs/guarantees.md §4): a checkpoint after every request unless set otherwise.
    "checkpoint_every": 1,
    "checkpoint_interval": 0.0,
}


def celery_conf(**settings: Any) -> Any:
    app = Celery("cfgtest", set_as_current=False)
    app.conf.update(settings)
    return app.conf


# --- resolve_options: layering -------------------------------------------------


@pytest.mark.parametrize("call", [None, {}])
def test_defaults_match_the_design(call: dict[str, Any] | None) -> None:
    assert OPTION_DEFAULTS == DESIGN_DEFAULTS
    assert resolve_options(call, {}) == DESIGN_DEFAULTS
    assert resolve_options(call, celery_conf()) == DESIGN_DEFAULTS


def test_app_conf_overrides_defaults() -> None:
    conf = celery_conf(persistent_spawn_worker=True, persistent_worker_timeout=3,
                       persistent_error_strategy="throw")
    opts = resolve_options(None, conf)
    assert opts["spawn_worker"] is True
    assert opts["worker_timeout"] == 3.0 and isinstance(opts["worker_timeout"], float)
    assert opts["error_strategy"] == "throw"
    assert opts["static_worker"] is False  # untouched ones keep the default


def test_call_option_overrides_app_conf() -> None:
    conf = {"persistent_spawn_worker": True, "persistent_worker_timeout": 3.0,
            "persistent_await_inprogress": "named"}
    opts = resolve_options({"spawn_worker": False, "worker_timeout": 7.5}, conf)
    assert opts["spawn_worker"] is False
    assert opts["worker_timeout"] == 7.5
    assert opts["await_inprogress"] == "named"  # from conf, not overridden


def test_call_option_overrides_default_without_conf() -> None:
    opts = resolve_options({"await_inprogress": False, "allow_infinite": True}, celery_conf())
    assert opts["await_inprogress"] is False
    assert opts["allow_infinite"] is True


def test_resolve_does_not_mutate_its_inputs() -> None:
    call = {"spawn_worker": True}
    conf = {"persistent_static_worker": True}
    resolve_options(call, conf)
    assert call == {"spawn_worker": True}
    assert conf == {"persistent_static_worker": True}


# --- resolve_options: bad input ------------------------------------------------


def test_unknown_option_is_rejected_by_name() -> None:
    with pytest.raises(InvalidOptions) as info:
        resolve_options({"spawn_workers": True, "zzz": 1}, {})
    assert info.value.option == "spawn_workers"
    assert "spawn_workers" in str(info.value) and "zzz" in str(info.value)
    assert "spawn_worker" in str(info.value).split("known:")[1]


@pytest.mark.parametrize("call", [["spawn_worker"], "spawn_worker", 1])
def test_non_mapping_opts_are_rejected(call: Any) -> None:
    with pytest.raises(InvalidOptions, match="mapping"):
        resolve_options(call, {})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("await_inprogress", "yes"),
        ("await_inprogress", None),
        ("await_inprogress", "Named"),
        ("await_inprogress", 0),  # == False, but not False
        ("await_inprogress", 1),  # == True, but not True
        ("await_inprogress", 1.0),
        ("error_strategy", "raise"),
        ("error_strategy", None),
        ("error_strategy", "IGNORE"),
        ("worker_timeout", 0),
        ("worker_timeout", -1.5),
        ("worker_timeout", "10"),
        ("worker_timeout", True),
        ("worker_timeout", None),
        ("worker_timeout", math.nan),
        ("spawn_worker", 1),
        ("spawn_worker", "true"),
        ("static_worker", None),
        ("allow_infinite", 0),
    ],
)
def test_bad_option_values_are_rejected(name: str, value: Any) -> None:
    with pytest.raises(InvalidOptions) as info:
        resolve_options({name: value}, {})
    assert info.value.option == name
    assert name in str(info.value)


def test_bad_value_in_app_conf_is_rejected_too() -> None:
    with pytest.raises(InvalidOptions) as info:
        resolve_options(None, {"persistent_error_strategy": "explode"})
    assert info.value.option == "error_strategy"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("await_inprogress", True),
        ("await_inprogress", False),
        ("await_inprogress", "named"),
        ("error_strategy", "ignore"),
        ("error_strategy", "throw"),
        ("worker_timeout", 0.25),
        ("worker_timeout", 600),
        ("spawn_worker", True),
        ("static_worker", True),
        ("allow_infinite", True),
    ],
)
def test_good_option_values_pass_through(name: str, value: Any) -> None:
    opts = resolve_options({name: value}, {})
    assert opts[name] == value
    assert type(opts[name]) is (float if name == "worker_timeout" else type(value))


# --- Settings ---------------------------------------------------------------------


def test_settings_defaults() -> None:
    settings = Settings.from_conf({"persistent_redis_url": "redis://h:1/0"})
    assert settings.redis_url == "redis://h:1/0"
    assert settings.key_prefix == "persistent"
    assert settings.queue_prefix == "persistent"
    assert settings.lease_ttl == 10.0
    assert settings.queue_ttl == 600.0
    assert settings.max_message_bytes == 32 * 1024 * 1024
    assert settings.reap_interval == 1.0


def test_settings_read_persistent_keys() -> None:
    conf = celery_conf(
        persistent_redis_url="redis://r:2/3",
        persistent_key_prefix="kp",
        persistent_queue_prefix="qp",
        persistent_lease_ttl=1.5,
        persistent_queue_ttl=30,
        persistent_max_message_bytes=1024,
    )
    settings = Settings.from_conf(conf)
    assert (settings.redis_url, settings.key_prefix, settings.queue_prefix) == ("redis://r:2/3", "kp", "qp")
    assert settings.lease_ttl == 1.5 and settings.queue_ttl == 30.0
    assert settings.max_message_bytes == 1024
    assert settings.reap_interval == pytest.approx(0.5)  # a third of a short lease


@pytest.mark.parametrize("ttl", [0.3, 0, -1])
def test_too_short_lease_is_a_configuration_error(ttl: float) -> None:
    with pytest.raises(ConfigurationError, match="persistent_lease_ttl"):
        Settings.from_conf({"persistent_redis_url": "redis://h/0", "persistent_lease_ttl": ttl})


def test_redis_url_prefers_the_result_backend() -> None:
    conf = celery_conf(result_backend="redis://backend:6379/1", broker_url="redis://broker:6379/0")
    assert Settings.from_conf(conf).redis_url == "redis://backend:6379/1"


def test_redis_url_falls_back_to_the_broker() -> None:
    app = Celery("cfgtest", broker="redis://broker:6379/0", backend="rpc://", set_as_current=False)
    assert Settings.from_conf(app.conf).redis_url == "redis://broker:6379/0"
    assert Settings.from_conf({"broker_url": "rediss://b:6380/0"}).redis_url == "rediss://b:6380/0"


def test_explicit_redis_url_wins_over_backend_and_broker() -> None:
    conf = {"persistent_redis_url": "redis://mine/5", "result_backend": "redis://b/1",
            "broker_url": "redis://q/0"}
    assert Settings.from_conf(conf).redis_url == "redis://mine/5"


@pytest.mark.parametrize(
    "conf",
    [
        {},
        {"result_backend": "rpc://", "broker_url": "amqp://guest@localhost//"},
        {"result_backend": "db+sqlite:///r.db", "broker_url": "memory://"},
        {"result_backend": None, "broker_url": None},
    ],
)
def test_no_redis_anywhere_is_a_configuration_error(conf: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="persistent_redis_url"):
        Settings.from_conf(conf)


def test_settings_are_immutable() -> None:
    settings = Settings.from_conf({"persistent_redis_url": "redis://h/0"})
    with pytest.raises(AttributeError):
        settings.lease_ttl = 1.0


# --- start_worker reads persistent_worker_timeout at the call --------------------------


class _Idle(Device):
    def touch(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return msg1


def _placed_timeout(persistent: Persistent, opts: dict[str, Any] | None = None) -> float:
    """Place a group on a (heartbeating) persistent worker; the idle timeout the registry recorded."""
    persistent.registry.heartbeat("cfgtest-worker@unit", {"groups": 0})
    handle = persistent.start_worker({"device": "idle", "n": uuid.uuid4().hex}, opts)
    return float(persistent.registry.owner(handle.group)["timeout"])


@pytest.fixture
def late_app(redis_url: str) -> Iterator[tuple[Celery, Persistent, dict[str, Any]]]:
    """``Persistent(app)`` on an app whose configuration comes later, through ``config_from_object``."""
    uid = uuid.uuid4().hex[:10]
    app = Celery("cfgtest-late", set_as_current=False)
    persistent = Persistent(app)
    persistent.device("idle")(_Idle)
    base = {"broker_url": redis_url, "result_backend": redis_url, "persistent_redis_url": redis_url,
            "persistent_key_prefix": f"cpcfg{uid}", "persistent_queue_prefix": f"cpcfgq{uid}"}
    try:
        yield app, persistent, base
    finally:
        if persistent._wired is not None:
            persistent.runtime.keeper.stop()
            stale = list(persistent.redis.scan_iter(match=f"*{uid}*", count=1000))
            if stale:
                persistent.redis.delete(*stale)
            persistent.runtime.client.close()
        app.close()


def test_start_worker_takes_worker_timeout_from_config_from_object(late_app: Any) -> None:
    app, persistent, base = late_app
    app.config_from_object(SimpleNamespace(**base, persistent_worker_timeout=42))
    assert _placed_timeout(persistent) == 42.0


def test_start_worker_sees_a_config_loaded_after_its_settings_were_read(late_app: Any) -> None:
    """The plugin read its settings (Redis, prefixes) before the app loaded its final config."""
    app, persistent, base = late_app
    app.config_from_object(SimpleNamespace(**base))
    assert _placed_timeout(persistent) == 0.0  # nobody set it: the worker's --persistent-timeout applies
    assert persistent.settings.worker_timeout is None  # read, and kept, before the next config
    app.config_from_object(SimpleNamespace(**base, persistent_worker_timeout=42))
    assert _placed_timeout(persistent) == 42.0


def test_the_calls_worker_timeout_wins_over_the_config(late_app: Any) -> None:
    app, persistent, base = late_app
    app.config_from_object(SimpleNamespace(**base, persistent_worker_timeout=42))
    assert _placed_timeout(persistent, {"worker_timeout": 7}) == 7.0
