"""The worker's consumer, as hosting sees it: consume and cancel group queues, run on its loop.

Threads: the lease thread must not touch the consumer, so anything that does
is handed to the worker's event loop with ``hub.call_soon`` (``soon``),
which runs between tasks.  Work handed over before the consumer is bound (a
worker still starting) waits for ``bind``, so it never runs on the lease
thread beside the first executions.

On kombu's Redis transport (``lazy``) idle group queues nap (see ``naps``):
``nap`` stops consuming one without a log line, and ``nudge`` pushes an empty
message onto this worker's own nudge queue, consumed beside the task queues,
so that the ``BRPOP`` in flight returns and the next one names the queues
just added (else they would wait for its timeout, one second).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from celery import Celery
from kombu.entity import Queue
from kombu.messaging import Consumer, Producer

from ..queues import brpop_costs, delete_queue, group_queue

logger = logging.getLogger(__name__)


class GroupQueues:
    def __init__(self, app: Celery, nudge_queue: str = "") -> None:
        self.app = app
        self.consumer: Any = None
        self.lazy = False  # set by bind: idle queues nap on this transport
        self.nudge_queue = nudge_queue
        self._nudges: Any = None
        self._waiting: list[Callable[[], Any]] = []
        self._lock = threading.Lock()

    def bind(self, consumer: Any, queues: list[str] | None = None, napping: list[str] | None = None) -> None:
        """The consumer (re)started: add ``queues`` to it, then run the work that waited for it.

        ``napping``: the queues of napping groups, consumed too unless this
        transport lets them nap (``lazy``).

        Called from the consumer's bootstep, before its event loop starts
        consuming: queues are only added here, and the loop's own
        ``consume()`` starts them (consuming before Celery has set its message
        handler fails with "Consumer does not have any callbacks").
        """
        with self._lock:
            self.consumer = consumer
            waiting, self._waiting = self._waiting, []
        self.lazy = bool(self.nudge_queue) and brpop_costs(getattr(getattr(consumer, "connection", None),
                                                                   "transport", None))
        if self.lazy:
            # On the task consumer's channel, so that it shares its BRPOP; never declared, no acks.
            self._nudges = Consumer(consumer.task_consumer.channel, queues=[Queue(self.nudge_queue, no_declare=True)],
                                    no_ack=True, auto_declare=False, on_message=lambda message: None)
        self.consume(*(queues or ()), *(() if self.lazy else napping or ()), start=False)
        if self._nudges is not None:
            self._nudges.consume()
        for fn in waiting:
            self.soon(fn)

    def soon(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the worker's event loop (between tasks); before ``bind``, once bound."""
        with self._lock:
            if self.consumer is None:
                self._waiting.append(fn)
                return
        hub = getattr(self.consumer, "hub", None)
        if hub is None:
            fn()
        else:
            hub.call_soon(fn)

    def consume(self, *queues: str, start: bool = True, quiet: bool = False) -> None:
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
        if added and start:
            tasks.consume()
            (logger.debug if quiet else logger.info)("consuming %d more group queue(s)", len(queues))

    def consumed(self) -> int:
        """How many queues the task consumer consumes (group queues and the worker's own)."""
        consumer = self.consumer
        return 0 if consumer is None else len(consumer.task_consumer.queues)

    def consuming(self, queue: str) -> bool:
        consumer = self.consumer
        return consumer is not None and bool(consumer.task_consumer.consuming_from(queue))

    def nap(self, queue: str) -> None:
        """Stop consuming an idle group queue (on the event loop; no log line: thousands nap)."""
        consumer = self.consumer
        if consumer is None:
            return
        consumer.app.amqp.queues.deselect(queue)
        consumer.task_consumer.cancel_by_queue(queue)

    def nudge(self) -> None:
        """Make the consumer's BRPOP in flight return, so that the next one names the queues just added."""
        consumer = self.consumer
        if consumer is None or not self.lazy:
            return
        try:
            Producer(consumer.task_consumer.channel, auto_declare=False).publish(
                b"", exchange="", routing_key=self.nudge_queue, serializer=None, content_type="text/plain",
                content_encoding="utf-8", retry=False)
        except Exception:  # the queue is consumed anyway, from the next BRPOP (at most its timeout later)
            logger.warning("could not nudge the consumer", exc_info=True)

    def stop(self, queue: str) -> None:
        if self.consumer is not None and self.lazy and not self.consuming(queue):
            self.nap(queue)  # napping already: nothing to cancel, and no log line
            return
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
