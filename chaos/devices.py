"""The chaos devices: each execution leaves evidence in the evidence Redis.

Every execution logs its [start, end, pid] under its group, so that
overlapping executions of one group can be found (an execution whose
process died has a start and no end).

``serial`` (ordinary groups, one per ``msg1["id"]``) also counts its
executions per request id, so that a request executed twice is found.

``tally`` (rolling hosted groups) keeps ``{"count": n, "applied": [ids]}``
as its state (the last ``KEEP_APPLIED`` update ids, more than a run sends),
so the final state says which updates were applied, and whether one was
applied twice.  A re-execution is not a double apply: after a crash, an
update that was never checkpointed runs again from the last checkpoint.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery_persistent import Device, Persistent
from chaos import evidence
from chaos.settings import KEEP_APPLIED


@contextmanager
def interval(group: str, rid: str, *extra: tuple[str, str]) -> Iterator[None]:
    """Log the start (and the request id) before the body runs, and the end after it."""
    r = evidence.client()
    exec_id = uuid.uuid4().hex[:12]
    pipe = r.pipeline(transaction=False)
    pipe.rpush(evidence.key("starts", group), f"{exec_id} {time.time():.6f} {os.getpid()} {rid}")
    for hash_key, field in extra:
        pipe.hincrby(hash_key, field, 1)
    pipe.execute()
    yield
    r.rpush(evidence.key("ends", group), f"{exec_id} {time.time():.6f}")


class Serial(Device):
    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "s-" + str(msg1["id"])

    def run(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        rid = str(msg2["rid"])
        with interval("s-" + str(msg1["id"]), rid, (evidence.key("runs"), rid)):
            time.sleep(float(msg2.get("sleep", 0)))
        return {"rid": rid, "pid": os.getpid()}


class Tally(Device):
    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "t-" + str(msg1["id"])

    def add(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        group, rid = "t-" + str(msg1["id"]), str(msg2["rid"])
        applied = list(msg1.get("applied") or [])
        count = int(msg1.get("count", 0))
        extra = [(evidence.key("reapplied"), rid)] if rid in applied else []
        with interval(group, rid, *extra):
            time.sleep(float(msg2.get("sleep", 0)))
        return {**msg1, "count": count + 1, "applied": [*applied, rid][-KEEP_APPLIED:]}

    def peek(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        """The state as it is (a rolling group rolls forward to the same state)."""
        return msg1


def install(persistent: Persistent) -> None:
    persistent.device("serial")(Serial)
    persistent.device("tally")(Tally)
