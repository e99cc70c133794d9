"""The benchmark app: devices and plain tasks, configured from the environment.

The runner and every worker subprocess import this module with the same
``BENCH_*`` variables, so they share one broker, backend, key prefix and
queue names, all distinct from the tests' (Redis db 12, prefix ``cpbench*``).
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery
from celery_singleton import Singleton

from celery_persistent import Device, Persistent

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
BROKER_URL = os.environ.get("BENCH_BROKER_URL", REDIS_URL)  # RabbitMQ for the groups scenario's other broker
PREFIX = os.environ.get("BENCH_PREFIX", "cpbench")
DEFAULT_QUEUE = f"{PREFIX}.q"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

app = Celery("bench", broker=BROKER_URL, backend=REDIS_URL)
app.conf.update(
    task_default_queue=DEFAULT_QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=600,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    persistent_key_prefix=PREFIX,
    persistent_queue_prefix=f"{PREFIX}.g",
    persistent_redis_url=REDIS_URL,
    # 10 MB base messages are part of the benchmark (the default is 32 MB; be explicit).
    persistent_max_message_bytes=MAX_MESSAGE_BYTES,
    persistent_lease_ttl=10.0,
    # Task events for coalesced waiters (Flower); on by default, as in the plugin.
    persistent_send_events=os.environ.get("BENCH_SEND_EVENTS", "1") == "1",
    singleton_backend_url=REDIS_URL,
    singleton_key_prefix=f"{PREFIX}:singleton:",
)
persistent = Persistent(app)

_client: redis.Redis | None = None


def counters() -> redis.Redis:
    """Where executions are counted (same Redis, bench prefix)."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(REDIS_URL)
    return _client


def runs_key(system: str, tag: str) -> str:
    return f"{PREFIX}:runs:{system}:{tag}"


def summary(msg1: Any, msg2: Any) -> dict[str, Any]:
    """The small answer of the large-message scenario (same for both systems)."""
    return {"n": msg2.get("n"), "items": len(msg1.get("data", ()))}


# -- devices -------------------------------------------------------------------


@persistent.device("blob")
class Blob(Device):
    """A large base message, one group per msg1["id"]."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "blob-" + str(msg1["id"])

    def peek(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return summary(msg1, msg2)


@persistent.device("roll")
class Roll(Device):
    """A large rolling state (the rolling scenario): a request changes one small field, the reply is that field."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "roll-" + str(msg1["id"])

    def touch(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return touched(msg1, msg2)

    def peek(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return msg1

    def reply(self, msg1: Any, msg2: Any, msg3: Any, opts: Any) -> Any:
        return {"version": msg3.get("version", 0), "n": msg2.get("n"), "items": len(msg3.get("data", ()))}


def touched(state: Any, msg2: Any) -> dict[str, Any]:
    """The rolling scenario's update, the same for both systems: one small field changes."""
    return {**state, "version": state.get("version", 0) + 1, "last": msg2.get("n")}


@persistent.device("echo")
class Echo(Device):
    """Default grouper (hash of both messages): the ordinary leader path."""

    def run(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return {"n": msg2.get("n")}


@persistent.device("nap")
class Nap(Device):
    """Counts its executions in Redis, then sleeps: identical requests coalesce."""

    def run(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        counters().incr(runs_key("persistent", str(msg1["tag"])))
        time.sleep(float(msg2["sleep"]))
        return {"ok": True}


@persistent.device("tick")
class Tick(Device):
    """A trivial device, one group per msg1["id"] (serialized groups at scale)."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "t-" + str(msg1["id"])

    def run(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return {"n": msg2.get("n")}


@persistent.device("seed")
class Seed(Device):
    """hb_persistent's test device: groups by Msg1 alone, its grouper calling default_grouper(Msg1)."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return persistent.default_grouper(msg1)

    def peek(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return summary(msg1, msg2)


# -- plain Celery baselines ----------------------------------------------------


@app.task(name="bench.plain")
def plain(msg1: Any, msg2: Any) -> Any:
    """A plain task carrying Msg1 by value."""
    return summary(msg1, msg2)


@app.task(name="bench.plain_roll")
def plain_roll(state: Any, msg2: Any) -> Any:
    """A plain task carrying a rolling state in and out: the caller keeps the state and sends it each time."""
    return touched(state, msg2)


@app.task(name="bench.noop")
def noop() -> None:
    """The floor: a bare round trip."""


@app.task(name="bench.nap")
def nap(tag: str, sleep: float) -> Any:
    counters().incr(runs_key("plain", tag))
    time.sleep(sleep)
    return {"ok": True}


@app.task(name="bench.singleton_nap", base=Singleton)
def singleton_nap(tag: str, sleep: float) -> Any:
    counters().incr(runs_key("singleton", tag))
    time.sleep(sleep)
    return {"ok": True}
