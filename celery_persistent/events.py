"""Celery task events for requests answered without running, and the plugin's worker events.

Coalesced callers and requests answered by recovery (``LeaderDied``) are
announced as ``task-received`` then ``task-succeeded``/``task-failed``, from
the real worker that gave the answer: the node whose execution produced it,
or the worker whose reaper answered.  Never from a made-up node name: a
monitor (``celery.events.state.State``, so Flower and celery-exporter) takes
the hostname of every task event but ``task-sent`` for a worker, and would
list it as one.  The events carry ``coalesced``, ``coalesced_onto`` (the
request that ran), the execution's ``runtime`` and its queue
(``queue``/``routing_key``).  A process that is no worker (the seed API, a
failed hosted send) sends none.  See docs/events.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_shutdown

from . import tracing
from .records import RequestRecord

logger = logging.getLogger(__name__)

_worker: dict[str, str | None] = {"hostname": None}


def _remember_worker(sender: Any = None, **_: Any) -> None:
    _worker["hostname"] = getattr(sender, "hostname", None)


def _forget_worker(**_: Any) -> None:
    _worker["hostname"] = None  # a worker run inside a test process has ended: it is a client again


# Every worker sends worker_init before its pool starts, so prefork children inherit the name.
worker_init.connect(_remember_worker, weak=False)
worker_shutdown.connect(_forget_worker, weak=False)


def worker_hostname() -> str | None:
    """The node name of the worker this process belongs to; None outside a worker."""
    return _worker["hostname"]


@dataclass(frozen=True)
class Execution:
    """The execution running in this context, whose outcome other callers get."""

    task_id: str
    hostname: str
    routing_key: str | None
    exchange: str | None
    started: float
    span: Any = None  # its OpenTelemetry span context, for links

    @classmethod
    def of(cls, request: Any) -> Execution:
        info = getattr(request, "delivery_info", None) or {}
        return cls(task_id=request.id, hostname=request.hostname or worker_hostname() or "",
                   routing_key=info.get("routing_key"), exchange=info.get("exchange"), started=time.time(),
                   span=tracing.current_span())


_current: ContextVar[Execution | None] = ContextVar("celery_persistent_execution", default=None)


@contextmanager
def executing(execution: Execution) -> Iterator[None]:
    token = _current.set(execution)
    try:
        yield
    finally:
        _current.reset(token)


def current() -> Execution | None:
    return _current.get()


@dataclass(frozen=True)
class Answered:
    """Who gave an answer: a worker, the request that ran (``onto``), its queue, runtime and span."""

    hostname: str
    onto: str | None = None
    routing_key: str | None = None
    exchange: str | None = None
    runtime: float | None = None
    span: Any = None

    def coalesced(self, record: RequestRecord) -> bool:
        return self.onto is not None and record.id != self.onto


def answered_by(onto: str | None = None) -> Answered | None:
    """The worker answering now, from the current execution or else this process's worker; None in a client."""
    execution = current()
    if execution is not None:
        return Answered(execution.hostname, onto or execution.task_id, execution.routing_key, execution.exchange,
                        max(0.0, time.time() - execution.started), execution.span)
    hostname = worker_hostname()
    return Answered(hostname, onto) if hostname else None


class Events:
    """The plugin's event sender; ``enabled`` is ``persistent_send_events``."""

    def __init__(self, app: Celery, enabled: bool = True) -> None:
        self.app = app
        self.enabled = enabled

    def announce(self, answered: Iterable[tuple[RequestRecord, Any]], by: Answered | None) -> None:
        if self.enabled and by is not None:
            announce(self.app, answered, by)

    def worker(self, hostname: str, kind: str, **fields: Any) -> None:
        if self.enabled:
            worker_event(self.app, hostname, kind, **fields)


def announce(app: Celery, answered: Iterable[tuple[RequestRecord, Any]], by: Answered) -> None:
    """Send task-received and task-succeeded/failed for each (record, outcome), from worker ``by.hostname``."""
    items = list(answered)
    if not items:
        return
    try:
        with app.amqp.producer_pool.acquire(block=True) as producer:
            # Buffered: all the events of one answer go out as one "task.multi"
            # message, which Celery's event receivers (Flower too) unpack.
            dispatcher = app.events.Dispatcher(producer.connection, hostname=by.hostname, channel=producer.channel,
                                               buffer_group=["task"], buffer_limit=2 * len(items) + 1)
            with dispatcher:
                for record, outcome in items:
                    _send(dispatcher, record, outcome, by)
                dispatcher.flush()
    except Exception:  # events are a view: never fail an answer for them
        logger.warning("could not send task events for answered requests", exc_info=True)


def _send(dispatcher: Any, record: RequestRecord, outcome: Any, by: Answered) -> None:
    options = record.options
    name = options.get("shadow") or record.task
    now = time.time()
    coalesced = by.coalesced(record)
    mark = {"coalesced": coalesced, "coalesced_onto": by.onto if coalesced else None}
    queue = by.routing_key or options.get("queue") or options.get("routing_key")
    dispatcher.send("task-received", uuid=record.id, name=name, args=repr(record.args or []),
                    kwargs="{}", root_id=options.get("root_id") or record.id,
                    parent_id=options.get("parent_id"), retries=0, eta=None, expires=None,
                    queue=queue, routing_key=queue, exchange=by.exchange, timestamp=now, **mark)
    if isinstance(outcome, BaseException):
        dispatcher.send("task-failed", uuid=record.id, exception=repr(outcome), traceback="",
                        timestamp=now, **mark)
    else:
        # A monitor observes every task-succeeded's runtime (celery-exporter's histogram
        # fails on None): an answer whose execution is not known here counts as 0 s.
        dispatcher.send("task-succeeded", uuid=record.id, result=repr(outcome)[:1024],
                        runtime=by.runtime if by.runtime is not None else 0.0, timestamp=now, **mark)


def worker_event(app: Celery, hostname: str, kind: str, **fields: Any) -> None:
    """A ``persistent-<kind>`` event from a persistent worker (hosted, released, handed-off)."""
    try:
        with app.events.default_dispatcher(hostname=hostname) as dispatcher:
            dispatcher.send(f"persistent-{kind}", **fields)
    except Exception:
        logger.warning("could not send the persistent-%s event", kind, exc_info=True)
