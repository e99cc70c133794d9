"""Celery's task signals for requests answered without running: coalesced callers, recovery's answers.

Celery fires ``task_prerun``, ``task_success``/``task_failure`` and
``task_postrun`` around every task it runs.  A caller answered by another
execution never runs, so the answering worker fires them for it, right after
its answer is stored, with ``task.request`` set to that caller's own request:
its id, parent, root, origin and trace context, the worker's hostname and
the execution's delivery info, and ``coalesced``/``coalesced_onto``.
opentelemetry-instrumentation-celery makes its consumer span from these
signals; the span is made in the caller's own trace (not inside the
execution's span) and linked to the execution's span.  See docs/events.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from celery import Celery, signals, states
from celery.app.task import Context

from . import lineage, tracing
from .events import Answered
from .records import RequestRecord

logger = logging.getLogger(__name__)


TASK_SIGNALS = (signals.task_prerun, signals.task_success, signals.task_failure, signals.task_postrun)


def heard(task: Any) -> bool:
    """Whether any receiver listens to ``task``'s signals: if none does, a caller's request is not even built."""
    return any(signal.has_listeners(task) for signal in TASK_SIGNALS)


def fire(app: Celery, answered: Iterable[tuple[RequestRecord, Any]], by: Answered) -> None:
    """The task signals of each answered (record, outcome), in this worker; a receiver's error is only logged."""
    listened: dict[str, bool] = {}
    for record, outcome in answered:
        task = app.tasks.get(record.task)
        if task is None:
            continue
        if record.task not in listened:
            listened[record.task] = heard(task)
        if not listened[record.task]:
            continue
        try:
            _fire(task, record, outcome, by)
        except Exception:
            logger.warning("could not fire the task signals of answered request %s", record.id, exc_info=True)


def request_of(record: RequestRecord, by: Answered) -> Context:
    """The request Celery would have built had ``record`` run on worker ``by.hostname``."""
    options = record.options
    trace = lineage.trace_headers(options)
    origin = (options.get(lineage.KEY) or {}).get("origin")
    coalesced = by.coalesced(record)
    return Context(
        id=record.id, task=record.task, args=list(record.args or []), kwargs=dict(record.kwargs or {}),
        hostname=by.hostname, delivery_info={"routing_key": by.routing_key, "exchange": by.exchange},
        root_id=options.get("root_id") or record.id, parent_id=options.get("parent_id"),
        group=options.get("group_id"), group_index=options.get("group_index"), origin=origin,
        reply_to=options.get("reply_to"), ignore_result=bool(options.get("ignore_result", False)),
        is_eager=False, called_directly=False, retries=0,
        coalesced=coalesced, coalesced_onto=by.onto if coalesced else None,
        **trace,  # traceparent, tracestate: where the instrumentation reads a request's trace context
    )


def _fire(task: Any, record: RequestRecord, outcome: Any, by: Answered) -> None:
    request = request_of(record, by)
    args, kwargs = request.args, request.kwargs
    # Never push_request: it copies the running request's fields (its trace context too) into this one.
    task.request_stack.push(request)
    try:
        # The caller's trace context (or none): its span must not become a child of the execution's.
        with tracing.restored(lineage.trace_headers(record.options) if tracing.available() else None):
            signals.task_prerun.send(sender=task, task_id=record.id, task=task, args=args, kwargs=kwargs)
            tracing.annotate({"coalesced": request.coalesced, "coalesced_onto": request.coalesced_onto},
                             link_to=by.span if request.coalesced else None)
            if isinstance(outcome, BaseException):
                signals.task_failure.send(sender=task, task_id=record.id, exception=outcome, args=args,
                                          kwargs=kwargs, traceback=None, einfo=None)
                state = states.FAILURE
            else:
                signals.task_success.send(sender=task, result=outcome, runtime=by.runtime or 0.0)
                state = states.SUCCESS
            signals.task_postrun.send(sender=task, task_id=record.id, task=task, args=args, kwargs=kwargs,
                                      retval=outcome, state=state)
    finally:
        task.request_stack.pop()
