"""Cluster-wide counters kept in one Redis hash, readable by ``status --json``."""

from __future__ import annotations

import logging

import redis

logger = logging.getLogger(__name__)

COUNTERS = ("executions", "coalesced", "queued", "placements", "recoveries", "evictions")


class Metrics:
    def __init__(self, client: redis.Redis, key: str) -> None:
        self._client = client
        self._key = key

    def incr(self, name: str, amount: int = 1) -> None:
        try:
            self._client.hincrby(self._key, name, amount)
        except redis.RedisError:
            # Counting must never fail a request.
            logger.warning("could not count %s", name, exc_info=True)

    def read(self) -> dict[str, int]:
        raw = self._client.hgetall(self._key)
        values = {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in raw.items()}
        return {name: values.get(name, 0) for name in COUNTERS} | values
