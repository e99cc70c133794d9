"""Layered configuration: per-call option, then ``app.conf.persistent_*``, then default.

Per-call options are the seed's ``Opts``; app-wide settings are Celery-style
``persistent_*`` keys so they sit in the same config module as the rest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .checkpoints import check_policy_options
from .errors import ConfigurationError, InvalidOptions

ERROR_STRATEGIES = ("ignore", "throw")

DEFAULT_WORKER_TIMEOUT = 10.0
"""Idle seconds before a persistent worker lets a group go (the seed's default)."""

DEFAULT_CACHE_BYTES = 512 * 1024 * 1024
"""Bound of a persistent worker's in-memory Msg1 cache."""

OPTION_DEFAULTS: dict[str, Any] = {
    "await_inprogress": True,
    "spawn_worker": False,
    "static_worker": False,
    "worker_timeout": DEFAULT_WORKER_TIMEOUT,
    "error_strategy": "ignore",
    "allow_infinite": False,
    # A rolling group's checkpoints (checkpoints.CheckpointPolicy): every request by default.
    "checkpoint_every": 1,
    "checkpoint_interval": 0.0,
}

DEFAULT_PARKED_TIMEOUT = 300.0
"""Seconds a request to a parked group (no live persistent worker) waits before it is answered GroupParked."""


def _check_option(name: str, value: Any) -> Any:
    if name == "await_inprogress" and not (isinstance(value, bool) or value == "named"):
        raise InvalidOptions(
            f"await_inprogress must be True, False or 'named', not {value!r}", name
        )
    if name == "error_strategy" and value not in ERROR_STRATEGIES:
        raise InvalidOptions(f"error_strategy must be 'ignore' or 'throw', not {value!r}", name)
    if name == "worker_timeout":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise InvalidOptions(f"worker_timeout must be a positive number, not {value!r}", name)
        return float(value)
    if name in ("spawn_worker", "static_worker", "allow_infinite") and not isinstance(value, bool):
        raise InvalidOptions(f"{name} must be a bool, not {value!r}", name)
    if name == "checkpoint_every":
        return check_policy_options(value, 1.0)[0]
    if name == "checkpoint_interval":
        return check_policy_options(1, value)[1]
    return value


def resolve_options(call: Mapping[str, Any] | None, conf: Any) -> dict[str, Any]:
    """Merge per-call options over app settings over defaults, and check them."""
    if call is not None and not isinstance(call, Mapping):
        raise InvalidOptions(f"opts must be a mapping, not {type(call).__name__}")
    call = call or {}
    unknown = sorted(set(call) - set(OPTION_DEFAULTS))
    if unknown:
        raise InvalidOptions(
            f"unknown option(s) {', '.join(map(str, unknown))}; known: "
            + ", ".join(sorted(OPTION_DEFAULTS)),
            str(unknown[0]),
        )
    merged: dict[str, Any] = {}
    for name, default in OPTION_DEFAULTS.items():
        value = call[name] if name in call else conf.get(f"persistent_{name}", default)
        merged[name] = _check_option(name, value)
    check_policy_options(merged["checkpoint_every"], merged["checkpoint_interval"])
    return merged


def placement_timeout(call: Mapping[str, Any] | None, conf: Any, merged: Mapping[str, Any]) -> float:
    """The idle timeout a placement carries: the call's, else ``persistent_worker_timeout``, else 0.

    0 leaves it to the hosting worker (``--persistent-timeout``).  Read from
    ``conf`` at each call, not from the ``Settings`` read once: an app may be
    configured (``config_from_object``) after its settings were first read.
    ``merged``: ``resolve_options(call, conf)``, which the caller has already.
    """
    if (call and "worker_timeout" in call) or conf.get("persistent_worker_timeout") is not None:
        return float(merged["worker_timeout"])
    return 0.0


@dataclass(frozen=True)
class Settings:
    """App-wide settings read once from ``app.conf``: the one source of every default."""

    redis_url: str
    key_prefix: str = "persistent"
    queue_prefix: str = "persistent"
    lease_ttl: float = 10.0
    queue_ttl: float = 600.0
    max_message_bytes: int = 32 * 1024 * 1024
    reap_interval: float = 1.0
    store_ttl: float = 7 * 24 * 3600.0
    inline_bytes: int = 64 * 1024
    worker_timeout: float | None = None  # persistent_worker_timeout; None: the worker's own default applies
    cache_bytes: int = DEFAULT_CACHE_BYTES
    store_cache_bytes: int = 64 * 1024 * 1024
    send_events: bool = True
    metrics_per_group: bool = False  # a `group` label on Prometheus series: opt-in, its cardinality is unbounded
    metrics_address: str = "127.0.0.1"  # where `celery persistent metrics --port N` listens
    parked_timeout: float = DEFAULT_PARKED_TIMEOUT  # a request to a parked group waits this long at most
    nap_after: float = 5.0  # Redis broker: a hosted group's queue idle this long is no longer consumed (naps)
    sweep_interval: float = 5.0  # Redis broker: napping queues holding a message unrung are woken within this

    @property
    def beat_interval(self) -> float:
        """Seconds between lease renewals: three beats per lease, and at least one reap per interval."""
        return min(self.lease_ttl / 3, self.reap_interval)

    @property
    def heartbeat_ttl(self) -> float:
        """How long a silent persistent worker still counts as live for placement: three missed beats."""
        return min(self.lease_ttl, max(3 * self.beat_interval, 1.0))

    @property
    def outage_gap(self) -> float:
        """A pause this long in every worker's beats means the registry was unreachable (see pulse.lua)."""
        return 1.5 * self.beat_interval

    @property
    def default_worker_timeout(self) -> float:
        return self.worker_timeout if self.worker_timeout is not None else DEFAULT_WORKER_TIMEOUT

    @classmethod
    def from_conf(cls, conf: Any) -> Settings:
        try:
            return cls._from_conf(conf)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"bad persistent_* setting: {exc}") from exc

    @classmethod
    def _from_conf(cls, conf: Any) -> Settings:
        lease_ttl = float(conf.get("persistent_lease_ttl", cls.lease_ttl))
        if lease_ttl <= 0.3:
            raise ConfigurationError("persistent_lease_ttl must be above 0.3 seconds")
        settings = cls(
            redis_url=conf.get("persistent_redis_url") or _default_redis_url(conf),
            key_prefix=str(conf.get("persistent_key_prefix", "persistent")),
            queue_prefix=str(conf.get("persistent_queue_prefix", "persistent")),
            lease_ttl=lease_ttl,
            queue_ttl=float(conf.get("persistent_queue_ttl", 600.0)),
            max_message_bytes=int(conf.get("persistent_max_message_bytes", 32 * 1024 * 1024)),
            reap_interval=float(conf.get("persistent_reap_interval", min(1.0, lease_ttl / 3))),
            store_ttl=float(conf.get("persistent_store_ttl", 7 * 24 * 3600)),
            inline_bytes=int(conf.get("persistent_inline_bytes", 64 * 1024)),
            worker_timeout=_optional_float(conf.get("persistent_worker_timeout")),
            cache_bytes=int(conf.get("persistent_cache_bytes", DEFAULT_CACHE_BYTES)),
            store_cache_bytes=int(conf.get("persistent_store_cache_bytes", 64 * 1024 * 1024)),
            send_events=bool(conf.get("persistent_send_events", True)),
            metrics_per_group=bool(conf.get("persistent_metrics_per_group", False)),
            metrics_address=str(conf.get("persistent_metrics_address", "127.0.0.1")),
            parked_timeout=parked_timeout(conf),
            nap_after=float(conf.get("persistent_nap_after", 5.0)),
            sweep_interval=float(conf.get("persistent_sweep_interval", 5.0)),
        )
        for name in ("queue_ttl", "max_message_bytes", "reap_interval", "store_ttl", "inline_bytes", "cache_bytes",
                     "store_cache_bytes", "parked_timeout", "nap_after", "sweep_interval"):
            if not getattr(settings, name) > 0:
                raise ConfigurationError(f"persistent_{name} must be positive")
        return settings


def parked_timeout(conf: Any) -> float:
    """``persistent_parked_timeout``, read at each call (like ``placement_timeout``)."""
    return float(conf.get("persistent_parked_timeout", DEFAULT_PARKED_TIMEOUT))


def _optional_float(value: Any) -> float | None:
    if value is None:
        return None
    checked: float = _check_option("worker_timeout", value)
    return checked


def _default_redis_url(conf: Any) -> str:
    """The registry lives in the Redis result backend or, failing that, the broker."""
    # Celery's own properties also read CELERY_RESULT_BACKEND / CELERY_BROKER_URL.
    candidates = (getattr(conf, "result_backend", None) or conf.get("result_backend"),
                  getattr(conf, "broker_url", None) or conf.get("broker_url"))
    for url in candidates:
        if isinstance(url, str) and url.startswith(("redis://", "rediss://", "unix://")):
            return url
    raise ConfigurationError(
        "celery_persistent needs Redis for its registry: set persistent_redis_url, "
        "or use a redis:// result backend or broker (also with task_always_eager; in tests, the pytest "
        "fixture persistent_app of celery_persistent.pytest_plugin configures one: see docs/testing.md)"
    )
