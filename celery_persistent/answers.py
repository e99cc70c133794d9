"""Answering requests that never ran themselves: coalesced waiters, lost leaders.

For each, do what Celery's tracer would have done had the request run:
store its result under its own task id (so ``AsyncResult.get()`` wakes),
count it towards its chord, and fire its links and chain, or its errbacks
and the failure of its chain.  One waiter's failure never stops the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from celery import Celery, signature

from .events import announce
from .records import RequestRecord

logger = logging.getLogger(__name__)


def answer(app: Celery, records: Iterable[RequestRecord], outcome: Any) -> int:
    """Give every record the leader's Msg3, or its error; return how many."""
    done = []
    for record in records:
        try:
            if isinstance(outcome, BaseException):
                _fail(app, record, outcome)
            else:
                _succeed(app, record, outcome)
            done.append((record, outcome))
        except Exception:
            logger.exception("could not answer request %s", record.id)
    announce(app, done)
    return len(done)


def _succeed(app: Celery, record: RequestRecord, msg3: Any) -> None:
    ctx = record.context()
    app.backend.mark_as_done(record.id, msg3, request=ctx)
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
