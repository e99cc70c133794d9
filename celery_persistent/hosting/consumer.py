"""The worker's consumer, as hosting sees it: consume and cancel group queues, run on its loop.

Threads: the lease thread must not touch the consumer, so anything that does
is handed to the worker's event loop with ``hub.call_soon`` (``soon``),
which runs between tasks.  Without a consumer (tests, a worker still
starting) calls run at once and consuming is a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Celery

from ..queues import delete_queue, group_queue

logger = logging.getLogger(__name__)


class GroupQueues:
    def __init__(self, app: Celery) -> None:
        self.app = app
        self.consumer: Any = None

    def bind(self, consumer: Any) -> None:
        self.consumer = consumer

    def soon(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the worker's event loop (between tasks)."""
        hub = getattr(self.consumer, "hub", None) if self.consumer is not None else None
        if hub is None:
            fn()
        else:
            hub.call_soon(fn)

    def consume(self, *queues: str) -> None:
        """Consume group queues: declared once each, then one consume() for the batch.

        Celery's ``add_task_queue`` restarts consuming for every queue added,
        which is quadratic when a worker takes up thousands of groups at once.
        """
        consumer = self.consumer
        if consumer is None:
            return
        declared = consumer.app.amqp.queues
        tasks = consumer.task_consumer
        added = False
        for name in queues:
            if tasks.consuming_from(name):
                continue
            tasks.add_queue(declared.select_add(group_queue(name)))
            added = True
        if added:
            tasks.consume()
            logger.info("consuming %d more group queue(s)", len(queues))

    def stop(self, queue: str) -> None:
        if self.consumer is not None:
            try:
                self.consumer.cancel_task_queue(queue)
            except Exception:
                logger.exception("could not stop consuming %s", queue)

    def drop(self, queue: str) -> None:
        """Stop consuming a group queue and delete it (what is left in it is stale)."""
        self.stop(queue)
        try:
            delete_queue(self.app, queue)
        except Exception:
            logger.warning("could not delete the queue %s", queue, exc_info=True)
