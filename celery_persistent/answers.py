"""Answering requests that never ran themselves: coalesced waiters, lost leaders.

For each, do what Celery's tracer would have done had the request run:
store its result under its own task id (so ``AsyncResult.get()`` wakes),
count it towards its chord, and fire its links and chain, or its errbacks
and the failure of its chain.  One waiter's failure never stops the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from celery import Celery, signature, states
from celery.backends.redis import RedisBackend
from kombu.utils import json

from . import signals
from .errors import PersistentError
from .events import Events, answered_by
from .records import RequestRecord

logger = logging.getLogger(__name__)


class Answerer:
    """Answers requests that did not run themselves, and announces them as task events.

    ``revoked`` tells which of them were revoked (``revocation.RevokedIds``):
    those are stored as REVOKED instead, and their links never run.
    """

    def __init__(self, app: Celery, events: Events, revoked: Callable[[list[str]], set[str]] | None = None) -> None:
        self.app = app
        self.events = events
        self.revoked = revoked

    def __call__(self, records: Iterable[RequestRecord], outcome: Any, onto: str | None = None) -> int:
        """Give every record the leader's Msg3, or its error; return how many.

        ``onto`` is the request that ran (default: the execution running here,
        if any).  In a worker, each answer is then announced as task events of
        this worker and fires the task signals (events.py, signals.py).
        """
        pending = self._skip_revoked(list(records))
        if not pending:
            return 0  # a leader with nobody waiting: nothing to store, announce or fire
        done = answer(self.app, pending, outcome)
        by = answered_by(onto)
        self.events.announce(done, by)
        if by is not None:
            signals.fire(self.app, done, by)
        return len(done)

    def _skip_revoked(self, records: list[RequestRecord]) -> list[RequestRecord]:
        if self.revoked is None or not records:
            return records
        try:
            revoked = self.revoked([record.id for record in records])
        except Exception:  # answering matters more than honouring a revoke
            logger.warning("could not read revoked ids; answering everyone", exc_info=True)
            return records
        for record in records:
            if record.id in revoked:
                try:
                    self.app.backend.mark_as_revoked(record.id, "revoked", request=record.context())
                except Exception:
                    logger.exception("could not store the revocation of %s", record.id)
        return [record for record in records if record.id not in revoked]

    def is_answered(self, task_id: str) -> bool:
        return is_answered(self.app, task_id)

    def unanswered(self, records: Iterable[RequestRecord]) -> list[RequestRecord]:
        """The records without a final state yet (a recovery answers only these)."""
        return [record for record in records if not self.is_answered(record.id)]

    def stored_outcome(self, task_id: str) -> Any:
        """What the backend holds for ``task_id``: its Msg3, its error, or None (no final state)."""
        result = self.app.AsyncResult(task_id)
        if result.state == states.SUCCESS:
            return result.result
        if result.state in states.PROPAGATE_STATES:
            error = result.result
            return error if isinstance(error, BaseException) else PersistentError(str(error))
        return None

    def encode_outcome(self, outcome: Any) -> str:
        """An outcome as text for a delivery: the value, or the error as the backend records it."""
        if isinstance(outcome, BaseException):
            return str(json.dumps({"error": self.app.backend.prepare_exception(outcome, "json")}))
        return str(json.dumps({"value": outcome}))

    def decode_outcome(self, raw: str) -> Any:
        data = json.loads(raw)
        if "error" in data:
            return self.app.backend.exception_to_python(data["error"])
        return data["value"]


def answer(app: Celery, records: Iterable[RequestRecord], outcome: Any) -> list[tuple[RequestRecord, Any]]:
    """Store the outcome for every record and run what follows it; the (record, outcome) pairs answered."""
    pending = list(records)
    done: list[tuple[RequestRecord, Any]] = []
    if not isinstance(outcome, BaseException):
        stored = store_together(app, pending, outcome)
        for record in stored:
            try:
                _follow_up(app, record, outcome)
            except Exception:
                logger.exception("could not run the links of request %s", record.id)
        done += [(record, outcome) for record in stored]
        stored_ids = {record.id for record in stored}
        pending = [record for record in pending if record.id not in stored_ids]
    for record in pending:
        try:
            if isinstance(outcome, BaseException):
                _fail(app, record, outcome)
            else:
                _succeed(app, record, outcome)
            done.append((record, outcome))
        except Exception:
            logger.exception("could not answer request %s", record.id)
    return done


def store_together(app: Celery, records: list[RequestRecord], msg3: Any) -> list[RequestRecord]:
    """Store one success for many waiters in a single Redis pipeline.

    Only plain waiters of a Redis result backend qualify (no chord part, result
    not ignored, no extended results); the others go through Celery's own
    ``mark_as_done``.  The stored value is the meta Celery's Redis backend
    writes (status, result, traceback, children, date_done, task_id, group_id,
    parent_id), set with the backend's expiry and published on the task's key,
    so ``AsyncResult.get()`` wakes as usual.
    """
    backend = app.backend
    if not isinstance(backend, RedisBackend) or app.conf.find_value_for_key("extended", "result"):
        return []
    simple = [r for r in records if not r.options.get("chord") and not r.options.get("ignore_result")]
    if len(simple) < 2:
        return []
    result = backend.encode_result(msg3, states.SUCCESS)
    done_at = app.now().isoformat()
    try:
        with backend.client.pipeline() as pipe:
            for record in simple:
                meta = {"status": states.SUCCESS, "result": result, "traceback": None, "children": [],
                        "date_done": done_at, "task_id": record.id}
                for field, option in (("group_id", "group_id"), ("parent_id", "parent_id")):
                    if record.options.get(option):
                        meta[field] = record.options[option]
                key, value = backend.get_key_for_task(record.id), backend.encode(meta)
                if backend.expires:
                    pipe.setex(key, backend.expires, value)
                else:
                    pipe.set(key, value)
                pipe.publish(key, value)
            pipe.execute()
    except Exception:
        logger.warning("storing %d answers together failed; storing them one by one", len(simple), exc_info=True)
        return []
    return simple


def _succeed(app: Celery, record: RequestRecord, msg3: Any) -> None:
    app.backend.mark_as_done(record.id, msg3, request=record.context())
    _follow_up(app, record, msg3)


def _follow_up(app: Celery, record: RequestRecord, msg3: Any) -> None:
    """What the tracer does after a success: links, then the next step of the chain."""
    ctx = record.context()
    for callback in ctx.callbacks or ():
        signature(callback, app=app).apply_async((msg3,), parent_id=record.id, root_id=ctx.root_id)
    if ctx.chain:
        chain = list(ctx.chain)
        step = signature(chain.pop(), app=app)
        step.apply_async((msg3,), chain=chain, parent_id=record.id, root_id=ctx.root_id)


def _fail(app: Celery, record: RequestRecord, error: BaseException) -> None:
    app.backend.mark_as_failure(record.id, error, traceback=None, request=record.context())


def is_answered(app: Celery, task_id: str) -> bool:
    """Whether Celery already stored a final state for ``task_id``."""
    return bool(app.AsyncResult(task_id).ready())
