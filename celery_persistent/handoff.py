"""Broker-side housekeeping of group queues: deletion of released ones, existence checks."""

from __future__ import annotations

from celery import Celery

from .routing import group_queue


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
