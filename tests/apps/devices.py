"""Devices of the test apps, registered on a Persistent by ``install``.

They leave evidence in Redis (run counts, [start, end] intervals, order)
for the tests to check.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis

from celery_persistent import Device, Persistent

PREFIX = os.environ.get("CP_PREFIX", "cptest")
plugin: Persistent | None = None
_DEVICES: list[tuple[str, type[Device]]] = []


def _device(name: str) -> Any:
    def register(cls: type[Device]) -> type[Device]:
        _DEVICES.append((name, cls))
        return cls

    return register


_evidence: redis.Redis | None = None


def evidence() -> redis.Redis:
    """Where devices record what they did (same Redis as the registry)."""
    global _evidence
    if _evidence is None:
        assert plugin is not None
        _evidence = redis.Redis.from_url(plugin.app.conf.persistent_redis_url)
    return _evidence


def ekey(*parts: str) -> str:
    return ":".join((PREFIX, "evidence", *parts))


@_device("counter")
class Counter(Device):
    """Groups by msg1["id"]: every request on one counter is serialized."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "counter-" + str(msg1["id"])

    def add(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return {**msg1, "count": msg1["count"] + msg2["by"]}


@_device("work")
class Work(Device):
    """Default grouper (hash of both messages): identical requests coalesce."""

    def run(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return _record_run(msg1, msg2)


@_device("serial")
class Serial(Device):
    """One group per msg1["id"], so different Msg2s queue behind each other."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "serial-" + str(msg1["id"])

    def run(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return _record_run(msg1, msg2)

    def fail(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        _record_run(msg1, msg2)
        raise ValueError(f"failed on purpose: {msg2.get('why', '')}")


@_device("recursive")
class Recursive(Device):
    """Requests its own group from inside its execution."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "rec-" + str(msg1["id"])

    def again(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        inner = {"path": "again", "depth": msg2.get("depth", 0) + 1}
        assert plugin is not None
        plugin.resolve.delay(msg1, inner, opts=msg2.get("opts"))
        return {"unreachable": True}


@_device("badout")
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
    if msg2.get("until"):
        # Hold the execution until the test says so (a key in Redis), so that a test can
        # observe what happens meanwhile without guessing how long that takes.
        deadline = time.monotonic() + 60
        while not r.exists(ekey("release", str(msg2["until"]))) and time.monotonic() < deadline:
            time.sleep(0.02)
    end = time.time()
    r.rpush(ekey("intervals", tag), f"{start:.6f} {end:.6f} {os.getpid()}")
    r.rpush(ekey("order", tag), str(msg2.get("n", "")))
    return {"id": tag, "n": msg2.get("n"), "pid": os.getpid(), "echo": msg2.get("echo")}


@_device("state")
class State(Device):
    """A large, long-lived base message: grouped by msg1["id"]."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "state-" + str(msg1["id"])

    def peek(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        """Static use: report which in-memory Msg1 answered."""
        _record_run({"id": msg1["id"]}, msg2)
        return {"identity": id(msg1), "pid": os.getpid(), "blob": len(msg1.get("blob", "")),
                "n": msg2.get("n"), "count": msg1.get("count")}

    def add(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        """Rolling use: the result is the next state."""
        _record_run({"id": msg1["id"]}, msg2)
        return {**msg1, "count": msg1.get("count", 0) + msg2.get("by", 1)}

    def fail(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        raise ValueError("state device failed on purpose")

    def on_idle(self, msg1: Any, opts: Any) -> None:
        evidence().rpush(ekey("idle", str(msg1["id"])), str(msg1.get("count")))


@_device("process")
class Process(Device):
    """The seed's process-worker pattern: requests name a slot; the worker computes forward."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "proc-" + str(msg1["id"])

    def step(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return {**msg1, "slot": msg1["slot"] + 1, "sum": msg1["sum"] + msg1["slot"] + 1}

    def compute(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        state = msg1
        while state["slot"] < msg2["slot"]:
            state = self.step(state, msg2, opts)
        evidence().incr(ekey("steps", str(msg1["id"])), msg2["slot"] - msg1["slot"])
        return state

    def worker(self, msg1: Any, msg2: Any, opts: Any, run: Any) -> Any:
        # A request for a slot already passed is answered from the state, not recomputed.
        if msg2.get("slot", 0) <= msg1["slot"]:
            return msg1
        return run()


@_device("phased")
class Phased(Device):
    """Its group depends on its state, so a rolling worker re-registers as it advances."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return f"ph-{msg1['id']}-{msg1.get('phase', 0)}"

    def advance(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return {**msg1, "phase": msg1.get("phase", 0) + 1}

    def peek(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return {**msg1, "pid": os.getpid()}


@_device("pingpong")
class PingPong(Device):
    """Side a requests side b, which requests side a again: recursion through another group."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return f"pp-{msg1['id']}-{msg1['side']}"

    def hit(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        assert plugin is not None
        other = {**msg1, "side": "b" if msg1["side"] == "a" else "a"}
        return {"next": plugin.resolve.delay(other, {"path": "hit"}).id}


def install(persistent: Persistent) -> None:
    """Register every test device and helper task on ``persistent``'s app."""
    global plugin
    plugin = persistent
    for name, cls in _DEVICES:
        persistent.device(name)(cls)
    app = persistent.app

    @app.task(name="tests.collect", shared=False)
    def collect(results: list[Any]) -> list[Any]:
        return results


    @app.task(name="tests.mark", shared=False)
    def mark(result: Any, label: str) -> str:
        evidence().rpush(ekey("marks", label), "ok")
        return label


    @app.task(name="tests.mark_error", shared=False)
    def mark_error(request: Any, exc: Any, traceback: Any, label: str) -> str:
        evidence().rpush(ekey("errors", label), type(exc).__name__)
        return label
