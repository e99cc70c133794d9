"""Celery task events for requests answered without running (coalesced waiters,
requests answered LeaderDied), so that Flower and `celery events` show them as
tasks with a readable name and their final state."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterable
from typing import Any

from celery import Celery

from .records import RequestRecord

logger = logging.getLogger(__name__)

NODE = f"persistent@{socket.gethostname()}"


class Events:
    """The plugin's event sender; ``enabled`` is ``persistent_send_events``."""

    def __init__(self, app: Celery, enabled: bool = True) -> None:
        self.app = app
        self.enabled = enabled

    def announce(self, answered: Iterable[tuple[RequestRecord, Any]]) -> None:
        if self.enabled:
            announce(self.app, answered)

    def worker(self, hostname: str, kind: str, **fields: Any) -> None:
        if self.enabled:
            worker_event(self.app, hostname, kind, **fields)


def announce(app: Celery, answered: Iterable[tuple[RequestRecord, Any]]) -> None:
    """Send task-received and task-succeeded/failed for each (record, outcome)."""
    items = list(answered)
    if not items:
        return
    try:
        with app.amqp.producer_pool.acquire(block=True) as producer:
            # Buffered: all the events of one answer go out as one "task.multi"
            # message, which Celery's event receivers (Flower too) unpack.
            dispatcher = app.events.Dispatcher(producer.connection, hostname=NODE, channel=producer.channel,
                                               buffer_group=["task"], buffer_limit=2 * len(items) + 1)
            with dispatcher:
                for record, outcome in items:
                    _send(dispatcher, record, outcome)
                dispatcher.flush()
    except Exception:  # events are a view: never fail an answer for them
        logger.warning("could not send task events for answered requests", exc_info=True)


def _send(dispatcher: Any, record: RequestRecord, outcome: Any) -> None:
    name = record.options.get("shadow") or record.task
    now = time.time()
    dispatcher.send("task-received", uuid=record.id, name=name, args=repr(record.args or []),
                    kwargs="{}", root_id=record.options.get("root_id") or record.id,
                    parent_id=record.options.get("parent_id"), retries=0, eta=None, expires=None,
                    coalesced=True, timestamp=now)
    if isinstance(outcome, BaseException):
        dispatcher.send("task-failed", uuid=record.id, exception=repr(outcome), traceback="",
                        coalesced=True, timestamp=now)
    else:
        dispatcher.send("task-succeeded", uuid=record.id, result=repr(outcome)[:1024], runtime=0.0,
                        coalesced=True, timestamp=now)


def worker_event(app: Celery, hostname: str, kind: str, **fields: Any) -> None:
    """A ``persistent-<kind>`` event from a persistent worker (hosted, released, handed-off)."""
    try:
        with app.events.default_dispatcher(hostname=hostname) as dispatcher:
            dispatcher.send(f"persistent-{kind}", **fields)
    except Exception:
        logger.warning("could not send the persistent-%s event", kind, exc_info=True)
