"""The per-process runtime: settings and the Redis-backed parts built on them.

One ``Runtime`` per process, built on first use (the app may be configured
after ``Persistent(app)``) and again in a forked child, because redis-py
connection pools and background threads do not survive a fork.  Everything
here is plain data and components; no Celery app is needed to build one,
so tests can make a runtime from a Redis URL alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import redis

from .config import Settings
from .keys import KeySpace
from .leases import LeaseKeeper
from .metrics import Metrics
from .registry import Registry
from .store import MessageStore


@dataclass
class Runtime:
    settings: Settings
    client: redis.Redis
    keys: KeySpace
    registry: Registry
    store: MessageStore
    keeper: LeaseKeeper
    metrics: Metrics
    pid: int = field(default_factory=os.getpid)

    @classmethod
    def build(cls, settings: Settings, client: redis.Redis | None = None) -> Runtime:
        """Wire the parts from ``settings``; ``client`` defaults to one for ``settings.redis_url``."""
        client = client if client is not None else redis.Redis.from_url(settings.redis_url)
        keys = KeySpace(settings.key_prefix)
        registry = Registry(client, keys, settings.lease_ttl, settings.queue_ttl,
                            heartbeat_ttl=settings.heartbeat_ttl)
        return cls(
            settings=settings,
            client=client,
            keys=keys,
            registry=registry,
            store=MessageStore(client, keys, settings.max_message_bytes, settings.store_ttl,
                               cache_bytes=settings.store_cache_bytes),
            keeper=LeaseKeeper(registry, interval=settings.beat_interval),
            metrics=Metrics(client, keys.metrics(), send=registry.observe_unawaited),
        )

    @property
    def current(self) -> bool:
        """False in a forked child: build a fresh runtime there."""
        return self.pid == os.getpid()
