"""Caller threads: a bounded, closed-loop load that records each request's fate.

Each caller sends a request, then waits for its answer by reading its
result from the result backend (a plain GET of Celery's own result key, so
that a restarting Redis cannot wedge a shared result consumer), and sends
the next one.  A caller stops at ``stop()``; a request with no final state
by its deadline (``grace`` after the fault's end, or after its send if that
was later) is lost.  Sending from several threads at once is what a web
app in front of Celery does.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

import redis
from celery import states

from celery_persistent import PersistentError
from chaos.calls import Call
from chaos.settings import GRACE

ERROR_PAUSE = 0.1
"""A caller told its request failed waits this long before its next one, as a client that backs off would."""

HARD_LIMIT = 180.0
"""A request is given up after this long even when no fault end is known yet."""


class Load:
    def __init__(self, persistent: Any, backend_url: str, seed: int, grace: float = GRACE) -> None:
        self.persistent = persistent
        self.grace = grace
        self.backend_url = backend_url
        self.rng = random.Random(seed)
        self.calls: list[Call] = []
        self.fault_end: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._shapes: dict[str, tuple[str, Mapping[str, Any], Mapping[str, Any]]] = {}  # group -> kind, msg1, msg2

    # -- what to send -----------------------------------------------------------------

    def serial(self, groups: list[str], per_group: int, sleep: float, duplicates: float = 0.2) -> None:
        """Callers on ordinary groups; a share of the sends go twice (identical Msg2: coalesced)."""
        for gid in groups:
            for n in range(per_group):
                msg1 = {"device": "serial", "id": gid}
                self._caller(f"s{gid}.{n}", "serial", "s-" + gid, msg1, {"path": "run", "sleep": sleep}, duplicates)

    def tally(self, groups: list[str], per_group: int, sleep: float) -> None:
        """Callers on rolling hosted groups: every update has its own id, none is sent twice."""
        for gid in groups:
            for n in range(per_group):
                msg1 = initial_tally(gid)
                self._caller(f"t{gid}.{n}", "tally", "t-" + gid, msg1, {"path": "add", "sleep": sleep}, 0.0)

    def burst(self, kind: str, group: str, rid: str, msg1: Mapping[str, Any], msg2: Mapping[str, Any],
              copies: int) -> None:
        """Now, from a thread of its own: ``copies`` identical requests with this ``rid``, then wait for them."""
        def send() -> None:
            results = redis.Redis.from_url(self.backend_url, socket_timeout=2, socket_connect_timeout=1)
            self._await(results, [self._send(kind, group, rid, msg1, {**msg2, "rid": rid}) for _ in range(copies)])
            results.close()

        thread = threading.Thread(target=send, name=f"burst-{rid}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def probe(self, tag: str) -> None:
        """One fresh request per group, from new threads: callers stuck on a lost request send nothing more."""
        for group, (kind, msg1, msg2) in self._shapes.items():
            self.burst(kind, group, f"{tag}-{group}", msg1, msg2, copies=1)

    def _caller(self, tag: str, kind: str, group: str, msg1: Mapping[str, Any], msg2: Mapping[str, Any],
                duplicates: float) -> None:
        self._shapes[group] = (kind, msg1, msg2)
        seed = self.rng.random()
        thread = threading.Thread(target=self._loop, args=(tag, kind, group, msg1, msg2, duplicates, seed),
                                  name=f"caller-{tag}", daemon=True)
        self._threads.append(thread)

    # -- running ----------------------------------------------------------------------

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """No new requests; callers still wait for the ones they sent."""
        self._stop.set()

    def wait(self) -> list[Call]:
        """Until every caller is done (each stops at its requests' deadlines); then pending means lost."""
        for thread in self._threads:
            while thread.is_alive():
                thread.join(0.5)
                if self._overdue():
                    break
        with self._lock:
            for call in self.calls:
                if not call.final:
                    call.status = "lost"
            return list(self.calls)

    def _overdue(self) -> bool:
        now = time.time()
        with self._lock:
            return all(call.final or now > self.deadline(call) + 5 for call in self.calls)

    def deadline(self, call: Call) -> float:
        if self.fault_end is None:
            return call.sent_at + HARD_LIMIT
        return max(self.fault_end, call.sent_at) + self.grace

    def _loop(self, tag: str, kind: str, group: str, msg1: Mapping[str, Any], msg2: Mapping[str, Any],
              duplicates: float, seed: float) -> None:
        rng = random.Random(seed)
        results = redis.Redis.from_url(self.backend_url, socket_timeout=2, socket_connect_timeout=1)
        n = 0
        while not self._stop.is_set():
            rid = f"{tag}.{n}"
            n += 1
            copies = 2 if rng.random() < duplicates else 1
            sent = [self._send(kind, group, rid, msg1, {**msg2, "rid": rid}) for _ in range(copies)]
            self._await(results, sent)
            if any(c.status == "error" for c in sent):
                time.sleep(ERROR_PAUSE)
        results.close()

    def _send(self, kind: str, group: str, rid: str, msg1: Mapping[str, Any], msg2: Mapping[str, Any]) -> Call:
        call = Call(task_id=str(uuid.uuid4()), kind=kind, group=group, rid=rid, sent_at=time.time())
        with self._lock:
            self.calls.append(call)
        try:
            self.persistent.resolve.apply_async((dict(msg1), dict(msg2)), task_id=call.task_id)
        except Exception as exc:  # the send itself failed: that is this caller's answer
            self._settle(call, "error", exc.__class__.__name__, isinstance(exc, PersistentError), at_send=True)
        return call

    def _await(self, results: redis.Redis, calls: list[Call]) -> None:
        while True:
            pending = [c for c in calls if not c.final]
            if not pending:
                return
            if time.time() > max(self.deadline(c) for c in pending):
                return
            raw: list[Any] = []
            with contextlib.suppress(redis.RedisError):
                raw = results.mget([f"celery-task-meta-{c.task_id}" for c in pending])
            for call, payload in zip(pending, raw, strict=False):
                if payload is not None:
                    self._read(call, payload)
            time.sleep(0.05)

    def _read(self, call: Call, payload: bytes) -> None:
        meta = json.loads(payload)
        status = meta.get("status")
        if status == states.SUCCESS:
            self._settle(call, "ok", value=meta.get("result"))
        elif status in states.READY_STATES:
            exc = meta.get("result") or {}
            name = str(exc.get("exc_type", status)) if isinstance(exc, dict) else str(status)
            module = str(exc.get("exc_module", "")) if isinstance(exc, dict) else ""
            self._settle(call, "error", name, module.startswith("celery_persistent"))

    def _settle(self, call: Call, status: str, error: str = "", typed: bool = False, at_send: bool = False,
                value: Any = None) -> None:
        with self._lock:
            if call.final:
                return
            call.status, call.error, call.typed, call.at_send, call.value = status, error, typed, at_send, value
            call.done_at = time.time()


def initial_tally(gid: str) -> dict[str, Any]:
    """The first state of a rolling counter (callers keep sending it: the worker holds the real one)."""
    return {"device": "tally", "id": gid, "count": 0, "applied": []}
