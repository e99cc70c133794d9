"""Moving waiting messages from one group queue to another (the seed's forward_work)."""

from __future__ import annotations

from celery import Celery

from .routing import group_queue


def move_messages(app: Celery, source: str, target: str, limit: int = 100_000) -> int:
    """Republish every message waiting in ``source`` to ``target``, in order; return how many."""
    moved = 0
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        src = group_queue(source)(channel)
        src.declare()
        dst = group_queue(target)
        producer = conn.Producer(channel)
        while moved < limit:
            message = src.get(no_ack=False, accept=["application/json", "application/x-msgpack"])
            if message is None:
                break
            producer.publish(
                message.body,
                exchange=dst.exchange,
                routing_key=dst.routing_key,
                declare=[dst],
                headers=message.headers,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                **{k: v for k, v in message.properties.items() if k in ("correlation_id", "reply_to", "priority")},
            )
            message.ack()
            moved += 1
    return moved


def delete_queue(app: Celery, name: str) -> None:
    """Delete a released group's queue; what is left in it is stale (already run)."""
    with app.connection_for_write() as conn:
        queue = group_queue(name)(conn.default_channel)
        # kombu's virtual transports (Redis) delete only bindings this channel
        # knows of: declaring first makes the delete complete on every transport.
        queue.declare()
        queue.delete()


def queue_exists(app: Celery, name: str) -> bool:
    """Whether the broker knows the queue (passive declare), on any transport."""
    with app.connection_for_write() as conn:
        try:
            conn.default_channel.queue_declare(name, passive=True)
        except conn.channel_errors:
            return False
    return True
