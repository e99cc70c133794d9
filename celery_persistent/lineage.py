"""What a request keeps from its caller until it is published.

Celery takes a message's parent, root, client (the ``origin`` header) and
trace context from the process and task that publish it.  A queued request
is published later by another process (the worker whose execution hands the
group on), and a recovered one by the reaper, so without this they would
show that execution as their parent and root, and a worker as their client.
The caller's values are computed when it sends (as ``Celery.send_task``
computes them) and kept with the request, under ``options["lineage"]``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from celery import Celery
from celery.utils.nodenames import anon_nodename

from . import tracing

KEY = "lineage"


def of_caller(app: Celery, options: dict[str, Any]) -> None:
    """Fill ``parent_id``/``root_id`` (when the caller runs in a task) and the lineage into ``options``."""
    if not options.get("root_id") or not options.get("parent_id"):
        parent = app.current_worker_task
        if parent is not None:
            request = parent.request
            if not options.get("root_id"):
                options["root_id"] = request.root_id or request.id
            if not options.get("parent_id"):
                options["parent_id"] = request.id
    lineage: dict[str, Any] = {"origin": anon_nodename()}
    trace = tracing.capture()
    if trace is not None:
        lineage["trace"] = trace
    options[KEY] = lineage


def trace_headers(options: Mapping[str, Any]) -> dict[str, str]:
    """The caller's propagation headers kept with a request ({} if none)."""
    lineage = options.get(KEY) or {}
    return dict(lineage.get("trace") or {})


class CallerSentEvent:
    """The task-sent event of a request published later, as its caller would have sent it.

    Celery builds the event's parent and root from the task running where
    the message is published; this puts back the caller's, and sends it from
    the caller's node name (Flower's "Client" is that hostname).
    """

    def __init__(self, app: Celery, origin: str, parent_id: str | None, root_id: str) -> None:
        self.dispatcher = app.events.Dispatcher(enabled=False, hostname=origin)
        self.ids = {"parent_id": parent_id, "root_id": root_id}

    def publish(self, type: str, fields: dict[str, Any], producer: Any, **kwargs: Any) -> Any:
        return self.dispatcher.publish(type, {**fields, **self.ids}, producer, **kwargs)


@contextmanager
def applied(app: Celery, task_id: str, options: dict[str, Any], headers: dict[str, Any]) -> Iterator[None]:
    """Publish a request as its caller would have: its parent, root, origin and trace context.

    Pops the lineage from ``options`` (nothing changes without one).  The
    message headers carry the caller's ``parent_id``, ``root_id`` and
    ``origin`` (``send_task_message`` lets them override what Celery
    computed from the task running here); the task-sent event says the same
    (``task_send_sent_event``); the request joins no trail here; and the
    caller's trace context is current while the message is published, so
    the instrumentation's producer span is in the caller's trace.
    """
    kept = options.pop(KEY, None)
    if not kept:
        yield
        return
    parent_id, root_id = options.get("parent_id"), options.get("root_id") or task_id
    headers.update(parent_id=parent_id, root_id=root_id)
    options["add_to_parent"] = False
    origin = kept.get("origin")
    if origin:
        headers["origin"] = origin
        if app.conf.task_send_sent_event and "event_dispatcher" not in options:
            options["event_dispatcher"] = CallerSentEvent(app, origin, parent_id, root_id)
    with tracing.restored(kept.get("trace")):
        yield
