"""Group queues on the broker: their name, their one definition, and their clean-up.

A group with a persistent worker has its own queue, ``<prefix>.<group>``.
Producers and the consuming worker both build it with ``group_queue``: on
RabbitMQ each group queue carries ``x-single-active-consumer`` so that the
broker itself allows one active consumer per group, and RabbitMQ refuses a
queue declared twice with different arguments.  Other transports ignore the
argument.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import suppress
from typing import Any

import redis
from celery import Celery
from kombu.entity import Exchange, Queue
from kombu.transport.redis import Transport as RedisTransport
from kombu.transport.virtual import Transport as VirtualTransport

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


def queue_depths(app: Celery, names: Iterable[str]) -> dict[str, int | None]:
    """Messages waiting in each queue, by a passive declare (Redis and AMQP alike).

    On Redis, kombu's passive declare sums the queue's list and its priority
    lists (``name\\x06\\x163`` ...); Redis deletes empty lists, so a missing
    queue counts 0.  On AMQP a missing queue is ``None``.
    """
    names = list(dict.fromkeys(names))
    if not names:
        return {}
    depths: dict[str, int | None] = {}
    with app.connection_for_read() as conn:
        missing = 0 if isinstance(conn.transport, VirtualTransport) else None
        channel = None
        try:
            for name in names:
                channel = channel or conn.channel()
                try:
                    depths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
                except conn.channel_errors:
                    depths[name] = missing
                    _close(channel)  # AMQP closes the channel on 404: the next queue gets a new one
                    channel = None
        finally:
            if channel is not None:
                _close(channel)
    return depths


def _close(channel: Any) -> None:
    with suppress(Exception):  # a channel the broker already closed
        channel.close()


def brpop_costs(transport: Any) -> bool:
    """Whether consuming a queue costs on every fetch: kombu's Redis transport names every consumed
    queue (and its priority lists) in each ``BRPOP``; AMQP brokers push to their consumers."""
    return isinstance(transport, RedisTransport)


WAITING_SCRIPT = """
local found = {}
local s1, s2, s3 = ARGV[1], ARGV[2], ARGV[3]
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key, key .. s1, key .. s2, key .. s3) > 0 then
    found[#found + 1] = i
  end
end
return found
"""
"""KEYS: queue lists; ARGV: the suffixes of their three priority lists. Returns the (1-based) positions of
those holding a message (Redis deletes an empty list, so a list that exists holds one): one call per queue.
The priority lists' names are built here: kombu's Redis transport is single-server."""


WAITING_BATCH = 5000
"""Queues looked at in one script call (one round trip) by ``waiting``."""


def waiting(app: Celery, names: list[str]) -> list[str]:
    """The queues among ``names`` holding a message, a round trip per WAITING_BATCH of them (kombu's
    Redis transport only).

    Counts the queue's list and its priority lists (``name\\x06\\x163`` ...), under
    ``global_keyprefix``, as kombu names them (kombu/transport/redis.py, ``Channel._q_for_pri``).
    """
    if not names:
        return []
    with app.pool.acquire(block=True) as conn:
        channel = conn.default_channel
        prefix = str(getattr(channel, "global_keyprefix", "") or "")
        suffixes = [f"{channel.sep}{pri}" for pri in channel.priority_steps if pri]
        suffixes = (suffixes + suffixes[-1:] * 3)[:3] if suffixes else ["", "", ""]  # the script takes three
        found: list[str] = []
        with channel.conn_or_acquire() as client:
            raw = redis.Redis(connection_pool=client.connection_pool)  # unprefixed: names are prefixed here
            for first in range(0, len(names), WAITING_BATCH):
                batch = names[first:first + WAITING_BATCH]
                hits = raw.eval(WAITING_SCRIPT, len(batch), *[prefix + n for n in batch], *suffixes)
                found.extend(batch[int(i) - 1] for i in hits)
    return found
