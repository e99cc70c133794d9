"""Group queues: ``<prefix>.<group>``, declared the same way by producers and workers.

On RabbitMQ each group queue carries ``x-single-active-consumer`` so that the
broker itself allows one active consumer per group; producers and consumers
must declare a queue with identical arguments, so both build it here.  Other
transports ignore the argument.
"""

from __future__ import annotations

from kombu.entity import Exchange, Queue

SINGLE_ACTIVE_CONSUMER = {"x-single-active-consumer": True}


def queue_name(prefix: str, group: str) -> str:
    return f"{prefix}.{group}"


def group_queue(name: str) -> Queue:
    """The kombu Queue of a group: direct exchange and routing key named after it."""
    return Queue(
        name,
        Exchange(name, type="direct", durable=True),
        routing_key=name,
        durable=True,
        queue_arguments=dict(SINGLE_ACTIVE_CONSUMER),
    )
