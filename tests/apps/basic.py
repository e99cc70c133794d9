"""The test app: devices that leave evidence in Redis for the tests to check.

Configured from the environment so that the tests and their worker
subprocesses share one broker, backend and key prefix.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery

from celery_persistent import Device, Persistent

BROKER = os.environ.get("CP_BROKER_URL", "redis://127.0.0.1:6379/13")
BACKEND = os.environ.get("CP_BACKEND_URL", BROKER)
PREFIX = os.environ.get("CP_PREFIX", "cptest")

app = Celery("basic", broker=BROKER, backend=BACKEND)
app.conf.update(
    task_default_queue=os.environ.get("CP_QUEUE", "cptest"),
    persistent_key_prefix=PREFIX,
    persistent_redis_url=os.environ.get("CP_REDIS_URL", BACKEND),
    persistent_lease_ttl=float(os.environ.get("CP_LEASE_TTL", "3")),
    persistent_max_message_bytes=int(os.environ.get("CP_MAX_BYTES", str(1024 * 1024))),
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    result_expires=600,
)
app.conf.accept_content = os.environ.get("CP_ACCEPT", "json,msgpack").split(",")
if os.environ.get("CP_ACCEPT_PICKLE"):
    # Only to prove that the plugin refuses pickle even where the app allows it.
    app.conf.accept_content = ["json", "msgpack", "pickle"]

persistent = Persistent(app)

_evidence: redis.Redis | None = None


def evidence() -> redis.Redis:
    """Where devices record what they did (same Redis as the registry)."""
    global _evidence
    if _evidence is None:
        _evidence = redis.Redis.from_url(app.conf.persistent_redis_url)
    return _evidence


def ekey(*parts: str) -> str:
    return ":".join((PREFIX, "evidence", *parts))


@persistent.device("counter")
class Counter(Device):
    """Groups by msg1["id"]: every request on one counter is serialized."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "counter-" + str(msg1["id"])

    def add(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return {**msg1, "count": msg1["count"] + msg2["by"]}


@persistent.device("work")
class Work(Device):
    """Default grouper (hash of both messages): identical requests coalesce."""

    def run(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return _record_run(msg1, msg2)


@persistent.device("serial")
class Serial(Device):
    """One group per msg1["id"], so different Msg2s queue behind each other."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "serial-" + str(msg1["id"])

    def run(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return _record_run(msg1, msg2)

    def fail(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        _record_run(msg1, msg2)
        raise ValueError(f"failed on purpose: {msg2.get('why', '')}")


@persistent.device("recursive")
class Recursive(Device):
    """Requests its own group from inside its execution."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "rec-" + str(msg1["id"])

    def again(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        inner = {"path": "again", "depth": msg2.get("depth", 0) + 1}
        persistent.resolve.delay(msg1, inner, opts=msg2.get("opts"))
        return {"unreachable": True}


@persistent.device("badout")
class BadOutput(Device):
    def run(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return {"oops": object()}


def _record_run(msg1: Any, msg2: Any) -> Any:
    """Count the execution and log its [start, end] interval, then answer."""
    tag = str(msg1.get("id", "x"))
    r = evidence()
    r.incr(ekey("runs", tag))
    start = time.time()
    time.sleep(float(msg2.get("sleep", 0)))
    end = time.time()
    r.rpush(ekey("intervals", tag), f"{start:.6f} {end:.6f} {os.getpid()}")
    r.rpush(ekey("order", tag), str(msg2.get("n", "")))
    return {"id": tag, "n": msg2.get("n"), "pid": os.getpid(), "echo": msg2.get("echo")}


@app.task(name="tests.collect")
def collect(results: list[Any]) -> list[Any]:
    return results


@app.task(name="tests.mark")
def mark(result: Any, label: str) -> str:
    evidence().rpush(ekey("marks", label), "ok")
    return label


@app.task(name="tests.mark_error")
def mark_error(request: Any, exc: Any, traceback: Any, label: str) -> str:
    evidence().rpush(ekey("errors", label), type(exc).__name__)
    return label
