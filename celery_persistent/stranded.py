"""Leaders stranded in a dead worker: found in kombu's Redis ``unacked`` index and handed to the reaper.

A published leader waits on the broker with a queue-TTL lease (it may sit
behind other work), and gets a short lease when a worker receives it
(``task_received``, reserve.lua).  On the Redis transport a worker's fetch
moves the message into kombu's ``unacked`` hash first, and the two happen in
the same call a few milliseconds apart; a worker killed in between leaves
the leader "published" for the queue TTL (600 s) while its only message
waits out kombu's visibility timeout (1 h by default) before it is restored.

So the reaper also reads that index: a message of ours fetched longer than a
lease ago whose leader is still only "published" was never received by a
live worker.  Its lease is cut to now (strand.lua), the reaper's expire
re-publishes the request under a new token, and the stranded copy, fenced by
its old token, is dropped from kombu's index so it never comes back.

Key names and their layout (``unacked`` HASH of delivery tag -> JSON
``[payload, exchange, routing_key]``, ``unacked_index`` ZSET of delivery tag
-> fetch time, both under ``global_keyprefix``) are kombu's Redis transport's
(kombu/transport/redis.py, ``QoS.append``; options documented there).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis

from .dispatch import HEADER
from .registry import Registry

logger = logging.getLogger(__name__)

REDIS_TRANSPORTS = ("redis", "rediss")
"""kombu transports whose ``unacked`` index this reads (``redis://``, ``rediss://``, ``redis+socket://``).

Not Sentinel: its URL names the sentinels, not the server holding the index."""


@dataclass(frozen=True)
class UnackedKeys:
    """Where kombu's Redis transport keeps fetched, unacknowledged messages."""

    hash: str
    index: str

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> UnackedKeys:
        prefix = str(options.get("global_keyprefix") or "")
        return cls(prefix + str(options.get("unacked_key") or "unacked"),
                   prefix + str(options.get("unacked_index_key") or "unacked_index"))


def stranded_header(raw: bytes | str | None) -> dict[str, Any] | None:
    """The plugin's header of a leader in one ``unacked`` entry, or None (not ours, hosted, unreadable)."""
    if raw is None:
        return None
    try:
        payload = json.loads(raw)[0]
        header = (payload.get("headers") or {}).get(HEADER)
    except (ValueError, TypeError, IndexError, AttributeError):
        return None
    if not isinstance(header, dict) or header.get("hosted") or not header.get("token") or not header.get("group"):
        return None  # hosted requests are recovered from their group's records, not from this message
    return header


class StrandedLeaders:
    """One scan per reaper beat: cut the lease of leaders fetched by a worker that died before receiving them."""

    def __init__(self, broker: redis.Redis, keys: UnackedKeys, registry: Registry, after: float,
                 clock: Callable[[], float] = time.time, limit: int = 1000) -> None:
        self.broker = broker
        self.keys = keys
        self.registry = registry
        self.after = after  # kombu scores a fetch with the fetching host's time.time()
        self.clock = clock
        self.limit = limit
        self._settled: set[bytes] = set()  # tags already judged: not ours, or received by a worker

    def scan(self) -> int:
        """Hand stranded leaders to the reaper; return how many."""
        tags = cast("list[bytes]", self.broker.zrangebyscore(
            self.keys.index, "-inf", self.clock() - self.after, start=0, num=self.limit))
        if len(tags) < self.limit:  # a full view: forget tags that were acked or restored since
            self._settled &= set(tags)
        fresh = [t for t in tags if t not in self._settled]
        if not fresh:
            return 0
        cut = 0
        for tag, raw in zip(fresh, self.broker.hmget(self.keys.hash, fresh), strict=True):
            header = stranded_header(raw)
            if header is None or not self.registry.strand(str(header["group"]), str(header["token"])):
                self._settled.add(tag)
                continue
            cut += 1
            logger.warning("request of group %s was fetched by a worker that died before receiving it: "
                           "the reaper publishes it again", header["group"])
            self._forget(tag)
        return cut

    def _forget(self, tag: bytes) -> None:
        """Drop the fenced copy from kombu's index, so its visibility timeout never restores it."""
        pipe = self.broker.pipeline(transaction=True)
        pipe.zrem(self.keys.index, tag)
        pipe.hdel(self.keys.hash, tag)
        pipe.execute()


def stranded_leaders(app: Any, registry: Registry, after: float) -> StrandedLeaders | None:
    """The scan for ``app``'s broker, or None where there is no ``unacked`` index to read."""
    conn = app.connection_for_write()
    try:
        if conn.transport_cls not in REDIS_TRANSPORTS:
            return None
        broker = redis.Redis(**broker_params(conn))  # connects on first use, from the reaper's thread
        options = dict(conn.transport_options or {})
    finally:
        conn.release()
    return StrandedLeaders(broker, UnackedKeys.from_options(options), registry, after)


def broker_params(conn: Any) -> dict[str, Any]:
    """redis-py arguments for the server a kombu Redis connection names, read as kombu reads them.

    The virtual host is the database number ("/" or none is 0); a
    ``redis+socket://`` URL names a Unix socket.
    """
    params: dict[str, Any] = {"username": conn.userid or None, "password": conn.password or None}
    host = str(conn.hostname or "localhost")
    if host.startswith("socket://"):
        params["unix_socket_path"] = host[len("socket://"):]
    else:
        params.update(host=host, port=int(conn.port or 6379))
        if conn.ssl:
            params["ssl"] = True
            if isinstance(conn.ssl, Mapping):
                params.update({k: v for k, v in conn.ssl.items() if k.startswith("ssl_")})
    vhost = str(conn.virtual_host or "").strip("/")
    params["db"] = int(vhost) if vhost.isdigit() else 0
    return params
