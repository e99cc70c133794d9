"""GroupQueues and Celery's consumer restart (a broker restart): queues are added, never consumed early.

After a broker restart Celery builds a new task consumer and only later sets
its message handler; calling ``consume()`` in between fails with kombu's
"Consumer does not have any callbacks" and used to kill persistent workers.
The fake below behaves like kombu's consumer in exactly that respect.
"""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

from celery_persistent.hosting.consumer import GroupQueues


class TaskConsumer:
    """Like kombu's Consumer: consume() needs a callback."""

    def __init__(self, queues: list[str]) -> None:
        self.queues = list(queues)
        self.callbacks: list[Any] = []
        self.consumed = 0

    def consuming_from(self, name: str) -> bool:
        return name in self.queues

    def add_queue(self, queue: Any) -> None:
        self.queues.append(queue.name)

    def consume(self) -> None:
        if not self.callbacks:
            raise NotImplementedError("Consumer does not have any callbacks")
        self.consumed += 1


class Consumer:
    def __init__(self, app: Celery, task_consumer: TaskConsumer) -> None:
        self.app = app
        self.task_consumer = task_consumer
        self.hub = None


@pytest.fixture
def app() -> Celery:
    return Celery("queues-unit", broker="memory://")


def test_bind_after_a_restart_adds_group_queues_without_consuming(app: Celery) -> None:
    queues = GroupQueues(app)
    restarted = TaskConsumer(queues=["celery"])  # no callback yet, as after a reconnect
    queues.bind(Consumer(app, restarted), ["persistent.g1", "persistent.g2"])
    assert restarted.queues == ["celery", "persistent.g1", "persistent.g2"]
    assert restarted.consumed == 0
    # Later, with the loop running, new groups are consumed at once.
    restarted.callbacks.append(object())
    queues.consume("persistent.g3")
    assert restarted.consumed == 1
    assert app.amqp.queues["persistent.g3"].queue_arguments == {"x-single-active-consumer": True}


def test_work_handed_over_before_bind_waits_for_the_consumer(app: Celery) -> None:
    queues = GroupQueues(app)
    ran: list[str] = []
    queues.soon(lambda: ran.append("adopt"))
    assert ran == [], "work must not run on the lease thread before the consumer exists"
    queues.bind(Consumer(app, TaskConsumer([])), [])
    assert ran == ["adopt"]
