"""Every Redis key name the plugin uses, built from one configurable prefix.

Per-group keys share the hash tag ``{group}`` so that one group's keys sit in
one Redis Cluster slot.  Lua scripts never build key names: they receive
them all through KEYS.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KeySpace:
    prefix: str = "persistent"

    def owner(self, group: str) -> str:
        """HASH: token, task_id, key, state, request of the group's leader."""
        return f"{self.prefix}:{{{group}}}:owner"

    def inflight(self, group: str) -> str:
        """HASH: coalescing key (Msg2 digest) -> task id executing it."""
        return f"{self.prefix}:{{{group}}}:inflight"

    def waiters(self, group: str, key: str) -> str:
        """LIST: waiter records coalesced onto the execution of ``key``."""
        return f"{self.prefix}:{{{group}}}:waiters:{key}"

    def pending(self, group: str) -> str:
        """LIST: requests with other Msg2s, run one at a time after the leader."""
        return f"{self.prefix}:{{{group}}}:pending"

    def hosted_ids(self, group: str) -> str:
        """ZSET: ids of a hosted group's accepted, unfinished requests, by arrival."""
        return f"{self.prefix}:{{{group}}}:hq"

    def hosted_records(self, group: str) -> str:
        """HASH: id -> record of those requests (to run them again after a crash)."""
        return f"{self.prefix}:{{{group}}}:hr"

    def delivery(self, group: str, token: str) -> str:
        """HASH: an execution's answers still to be delivered (outcome, its own record, next request).

        Written in the same script that finishes the execution, deleted once
        every caller is answered: a process that dies in between leaves it
        for the reaper (``deliveries``).
        """
        return f"{self.prefix}:{{{group}}}:delivery:{token}"

    def delivery_waiters(self, group: str, token: str) -> str:
        """LIST: the waiter records of that delivery (the waiters list, renamed)."""
        return f"{self.prefix}:{{{group}}}:delivery:{token}:waiters"

    def deliveries(self) -> str:
        """ZSET: "<group> <token>" of pending deliveries -> deadline (ms, server clock)."""
        return f"{self.prefix}:deliveries"

    def group_keys(self, group: str, key: str) -> list[str]:
        """The KEYS list of submit."""
        return [
            self.owner(group),
            self.inflight(group),
            self.waiters(group, key),
            self.pending(group),
            self.leases(),
            self.hosted_ids(group),
            self.hosted_records(group),
            self.metrics(),
        ]

    def inbox(self, hostname: str) -> str:
        """LIST: groups placed on a persistent worker, and stop requests, to pick up."""
        return f"{self.prefix}:inbox:{hostname}"

    def bell(self, hostname: str) -> str:
        """LIST: names of groups a persistent worker naps (does not consume) that got a request (nap.lua)."""
        return f"{self.prefix}:bell:{hostname}"

    def leases(self) -> str:
        """ZSET: group -> lease deadline in ms; the reaper scans expired ones."""
        return f"{self.prefix}:leases"

    def hosts(self) -> str:
        """ZSET: group -> time (ms) it was placed, for every hosted group."""
        return f"{self.prefix}:hosts"

    def workers(self) -> str:
        """ZSET: persistent worker hostname -> heartbeat deadline in ms."""
        return f"{self.prefix}:workers"

    def worker(self, hostname: str) -> str:
        """HASH: a persistent worker's load and limits."""
        return f"{self.prefix}:worker:{hostname}"

    def store(self, digest: str) -> str:
        """STRING: a stored message, content addressed."""
        return f"{self.prefix}:store:{digest}"

    def checkpoint(self, group: str, writer: str) -> str:
        """HASH: one checkpoint of a rolling group: ``state`` (the message, JSON) and its holders.

        ``writer`` names the step that wrote it (a hash of the request's task
        id, as in its delivery).  Holders: ``current`` while it is its group's
        state, ``delivery`` while a delivery answers from it.  Never shared with
        another group or a caller's ``ref``: the script that takes the last
        holder away deletes it.
        """
        return f"{self.prefix}:{{{group}}}:ckpt:{writer}"

    def journal(self, group: str) -> str:
        """LIST: records of the requests applied since the group's checkpoint, in order (replayed on adoption)."""
        return f"{self.prefix}:{{{group}}}:journal"

    def parked(self) -> str:
        """ZSET: rolling groups kept with their checkpoint while no persistent worker runs them -> when parked (ms)."""
        return f"{self.prefix}:parked"

    def revoked(self) -> str:
        """ZSET: task ids workers were told to revoke -> when (s); answers skip them."""
        return f"{self.prefix}:revoked"

    def pulse(self) -> str:
        """HASH: when any worker last reached the registry, and when it resumed after a gap."""
        return f"{self.prefix}:pulse"

    def metrics(self) -> str:
        """HASH: counters (executions, coalesced, placements, ...)."""
        return f"{self.prefix}:metrics"
