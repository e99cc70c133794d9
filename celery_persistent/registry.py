"""Group ownership in Redis: typed wrappers around one Lua script per operation.

This is the seed's ``pg``/``hb_name`` made cluster-wide: registration is
atomic (register-if-absent with an owner token and a lease), leases are
renewed only by their holder, and a stale owner can never release or renew
its successor's registration because every write checks the token.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any, TypeVar

import redis
from redis.client import Pipeline
from redis.commands.core import Script as RedisScript
from redis.connection import PythonRespSerializer
from redis.exceptions import NoScriptError

from .errors import RegistryUnavailable
from .inbox import Command
from .inbox import place as place_command
from .keys import KeySpace
from .protocol import (
    Adopted,
    CheckpointStatus,
    Delivery,
    Expired,
    ExpiredKind,
    Finished,
    HostedGroup,
    HostedStart,
    ParkStatus,
    Placed,
    Placement,
    PlaceStatus,
    ReleasedGroup,
    ReleaseStatus,
    RenameStatus,
    SubmitOutcome,
    Submitted,
    Unhosted,
    UnhostStatus,
    Withdrawn,
    WithdrawStatus,
)
from .records import RequestRecord
from .store import checkpoint_of, stored_key, writer_key

logger = logging.getLogger(__name__)


def now_ms() -> int:
    """This host's clock, in ms: for display only; leases use the Redis server's clock."""
    return int(time.time() * 1000)


def new_token() -> str:
    return uuid.uuid4().hex


UNREACHABLE = (redis.ConnectionError, redis.TimeoutError)
"""What redis-py raises when the server cannot be reached (a restart, a partition)."""

T = TypeVar("T")


def until_reachable(call: Callable[[], T], budget: float) -> T:
    """Repeat a token-checked registry step while Redis is unreachable, for up to ``budget`` seconds.

    Only for steps that are safe to repeat: each checks the owner token (or
    the request's id), so a repeat after a reply that was lost finds the
    step done ("stale"/"gone") instead of doing it twice.  After a short
    outage owners get one lease of grace (pulse.lua), so a budget of one
    lease keeps a healthy owner's group.
    """
    deadline = time.monotonic() + budget
    delay = 0.05
    while True:
        try:
            return call()
        except UNREACHABLE as exc:
            if time.monotonic() + delay > deadline:
                raise RegistryUnavailable(f"the registry's Redis is unreachable: {exc}") from exc
            logger.warning("the registry's Redis is unreachable; retrying in %.2fs", delay)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


@contextmanager
def unavailable_as_typed() -> Iterator[None]:
    """Callers see ``RegistryUnavailable``, not redis-py's connection errors."""
    try:
        yield
    except UNREACHABLE as exc:
        raise RegistryUnavailable(f"the registry's Redis is unreachable: {exc}") from exc


def delivery_member(group: str, token: str) -> str:
    """The deliveries ZSET member of one delivery: a space never occurs in a group name or token."""
    return f"{group} {token}"


def parse_member(member: str) -> tuple[str, str]:
    group, _, token = member.partition(" ")
    return group, token


def bulk_client(client: redis.Redis) -> redis.Redis:
    """A client of the same server for the steps that carry a whole state (a checkpoint): redis-py's own packer.

    With hiredis installed, redis-py packs every command with
    ``hiredis.pack_command``, which copies each argument into one buffer: 29
    ms for a 10 MB checkpoint on the benchmark machine.  redis-py's Python
    packer sends an argument that large as a buffer of its own, uncopied.
    Replies are parsed as usual.  Its pool connects only when first used.
    """
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["command_packer"] = PythonRespSerializer(6000, pool.get_encoder().encode)
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


class Script(RedisScript):
    """redis-py's ``Script``, called straight through ``execute_command``.

    The same EVALSHA, with a script load on NOSCRIPT (after a Redis restart),
    without copying keys and arguments into a new tuple and through the
    ``evalsha`` deprecation wrapper: about 10 µs per call on the benchmark
    machine, on every registry step of every request.  In a pipeline it is
    redis-py's own call, which loads the script before the pipeline runs.
    """

    def __call__(self, keys: Sequence[Any] | None = None, args: Iterable[Any] | None = None,
                 client: Any = None) -> Any:
        client = self.registered_client if client is None else client
        if isinstance(client, Pipeline):
            return super().__call__(keys, args, client)
        keys = keys or ()
        args = args or ()
        try:
            return client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            self.sha = client.script_load(self.script)
            return client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


class Unawaited:
    """Token-checked steps whose reply no caller needs, written at once and not waited for.

    Each goes out as an EVAL (never NOSCRIPT) on a connection of this
    process's own; Redis runs it as it arrives, as it would had the caller
    waited, and the caller's path has no round trip for it.  The reply is
    read before the next step is sent (a step that failed is logged then),
    so at most one step is ever unanswered: whatever the socket has received
    can only be that step's reply, so Redis has the step, and a process that
    dies now (its socket closed with unread data: a reset) loses no step.
    Only for steps that are safe in any order against the process's other
    steps: each checks its owner token and state itself.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._lock = threading.Lock()
        self._connection: Any = None
        self._unread = False
        self._pid = os.getpid()
        # A prefork child may be forked while another thread (the lease beat) holds the lock: it gets
        # a lock of its own, as the plugin's does (the hang of issue 9, item 15).
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _fresh_lock(ref))

    def run(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> None:
        """Send ``script``; raises redis-py's connection errors if it could not be sent."""
        with self._lock:
            connection = self._ready()
            try:
                self._read(connection)
            except UNREACHABLE:  # the last step's reply is lost with the connection, not this step
                self._discard()
                connection = self._ready()
            try:
                # No health check: its PING would read the unread reply as its PONG.
                connection.send_command("EVAL", script.script, len(keys), *keys, *args, check_health=False)
            except BaseException:
                self._discard()
                raise
            self._unread = True

    def _ready(self) -> Any:
        if self._pid != os.getpid():  # a forked child: never touch the parent's socket
            self._connection, self._unread, self._pid = None, False, os.getpid()
        if self._connection is None:
            self._connection = self._pool.get_connection()
            self._unread = False
        return self._connection

    def _read(self, connection: Any) -> None:
        """Read the last step's reply (it has long arrived when steps are spaced); a closed connection raises."""
        if self._unread:
            self._unread = False
            try:
                connection.read_response()
            except redis.ResponseError as exc:
                logger.warning("a registry step sent without waiting failed: %s", exc)
        if connection.can_read(timeout=0):
            # Nothing is owed, yet the socket is readable: the server closed it (a restart, a
            # timeout).  A step written now would be lost unseen; as redis-py's pool does, reconnect.
            raise redis.ConnectionError("the connection for steps sent without waiting was closed")

    def _discard(self) -> None:
        connection, self._connection, self._unread = self._connection, None, False
        if connection is not None:
            connection.disconnect()
            self._pool.release(connection)


def _fresh_lock(ref: weakref.ReferenceType[Unawaited]) -> None:
    unawaited = ref()
    if unawaited is not None:
        unawaited._lock = threading.Lock()


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class Registry:
    """Atomic registry operations; one instance per Redis client."""

    SCRIPTS = (
        "submit", "claim", "renew", "finish", "expire",
        "place", "adopt", "start_hosted", "finish_hosted", "unhost", "rename", "take", "heartbeat", "deliver",
        "published", "reserve", "pulse", "withdraw", "release", "checkpoint", "park", "strand",
        "stop_parked", "observe", "live",
    )

    def __init__(self, client: redis.Redis, keys: KeySpace, lease_ttl: float, queue_ttl: float,
                 heartbeat_ttl: float | None = None):
        self.client = client
        self.keys = keys
        self.lease_ms = int(lease_ttl * 1000)
        self.queue_ms = int(queue_ttl * 1000)
        # A persistent worker beats every beat interval; placement skips one silent for longer than this.
        self.heartbeat_ms = int((heartbeat_ttl if heartbeat_ttl is not None else lease_ttl) * 1000)
        self._bulk = bulk_client(client)
        self._unawaited = Unawaited(client)
        package = resources.files(__package__) / "lua"
        self._scripts = {
            name: Script(client, (package / f"{name}.lua").read_text("utf-8"))
            for name in self.SCRIPTS
        }

    def submit(self, group: str, record: RequestRecord, flags: str = "", host_group: str | None = None) -> Submitted:
        """Register a request (one round trip).

        With ``host_group`` (the group of Msg1 alone), a persistent worker
        hosting that group takes the request instead, in the same script.
        """
        token = new_token()
        keys = self.keys.group_keys(group, record.key)
        args: list[Any] = [group, record.key, record.id, token, record.waiter().dumps(), record.dumps(),
                           self.lease_ms, flags]
        if host_group is not None and host_group != group:
            keys += self.keys.group_keys(host_group, record.key)
            args.append(host_group)
        reply = [_text(x) if x is not None else "" for x in self._scripts["submit"](keys=keys, args=args)]
        outcome, registered = SubmitOutcome(reply[0]), reply[-1]
        if outcome is SubmitOutcome.LEADER and len(reply) > 3:
            token = reply[2]  # made leader by an earlier submit of the same request ("a")
        if outcome is SubmitOutcome.HOSTED:
            return Submitted(outcome, token, queue=reply[1], ref=reply[2], host=reply[3], group=registered)
        if outcome is SubmitOutcome.MOVED:
            return Submitted(outcome, token, target=reply[1], group=registered)
        return Submitted(outcome, token, other_id=reply[1] if len(reply) > 2 else "", group=registered)

    def steady(self, call: Callable[[], T]) -> T:
        """``call`` (a token-checked step) repeated through an outage of up to one lease."""
        return until_reachable(call, self.lease_ms / 1000)

    def pulse(self, gap_ms: int) -> int:
        """Note that the registry is reachable; returns when it last resumed after a gap (ms)."""
        return int(self._scripts["pulse"](keys=[self.keys.pulse(), self.keys.leases()], args=[gap_ms, self.lease_ms]))

    def server_ms(self) -> int:
        """The Redis server's clock, which every lease deadline is measured on."""
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def claim(self, group: str, token: str) -> bool:
        """Mark the leader as running; False means this copy is stale."""
        keys = [self.keys.owner(group), self.keys.leases()]
        return bool(self._scripts["claim"](keys=keys, args=[group, token, self.lease_ms]))

    def published(self, group: str, token: str) -> bool:
        """A registered leader is on the broker: it may wait there up to the queue TTL."""
        keys = [self.keys.owner(group), self.keys.leases()]
        return bool(self._scripts["published"](keys=keys, args=[group, token, self.queue_ms]))

    def reserve(self, group: str, token: str) -> bool:
        """A worker received the leader: a short lease again, renewed by that worker until it runs."""
        keys = [self.keys.owner(group), self.keys.leases()]
        return bool(self._scripts["reserve"](keys=keys, args=[group, token, self.lease_ms]))

    def published_unawaited(self, group: str, token: str) -> None:
        """``published``, sent without waiting for its reply (``Unawaited``): the client that sent the leader.

        The short lease becomes the queue TTL when the step arrives, as
        before; the sender goes on at once.  It checks the token and the
        "queued" state, so a worker's reserve or claim that overtakes it wins.
        """
        self._unawaited.run(self._scripts["published"], [self.keys.owner(group), self.keys.leases()],
                            [group, token, self.queue_ms])

    def observe_unawaited(self, fields: Sequence[tuple[str, int | float]]) -> None:
        """Add an execution's metrics fields (``metrics.observation``), sent without waiting for the reply.

        Counting only adds, so its order against any other step is free.
        """
        self._unawaited.run(self._scripts["observe"], [self.keys.metrics()],
                            [part for pair in fields for part in pair])

    def reserve_unawaited(self, group: str, token: str) -> None:
        """``reserve``, sent without waiting for its reply (``Unawaited``): a worker's reception of a leader.

        Redis gives the leader its short lease when the step arrives, as
        before, but the worker's path from reception to the claim has one
        round trip fewer.  The claim that may overtake it refuses nothing:
        ``reserve`` after ``claim`` (or after the group moved on) is a no-op.
        """
        self._unawaited.run(self._scripts["reserve"], [self.keys.owner(group), self.keys.leases()],
                            [group, token, self.lease_ms])

    def stop_parked(self, group: str, token: str) -> bool:
        """Mark a parked group to end once a persistent worker takes it up; False if it is not parked
        under ``token`` any more."""
        return bool(self._scripts["stop_parked"](keys=[self.keys.owner(group)], args=[token]))

    def strand(self, group: str, token: str) -> bool:
        """A published leader's message was fetched by a worker that died: let the reaper take it now."""
        keys = [self.keys.owner(group), self.keys.leases()]
        return bool(self._scripts["strand"](keys=keys, args=[group, token]))

    def renew(self, leases: list[tuple[str, str]]) -> list[bool]:
        """Renew many (group, token) leases in one round trip."""
        if not leases:
            return []
        pipe = self.client.pipeline(transaction=False)
        for group, token in leases:
            self._scripts["renew"](
                keys=[self.keys.owner(group), self.keys.leases()],
                args=[group, token, self.lease_ms],
                client=pipe,
            )
        return [bool(r) for r in pipe.execute()]

    def finish(self, group: str, key: str, token: str, outcome: str, keep: bool = False,
               executed: bool = False, observed: Sequence[tuple[str, int | float]] = ()) -> Finished:
        """Release the group (holder only), take the waiters, hand it on.

        ``outcome`` is the execution's outcome, encoded: it is kept, with the
        leader's own request, the waiters and the next request, as a delivery
        until ``delivered`` (see deliver.lua).  ``keep`` releases only the key:
        the group stays with the token, for a persistent worker to take over
        (``spawn_worker``).  ``observed``: the execution's metrics fields
        (``metrics.observation``), added in the same step.
        """
        next_token = new_token()
        member = delivery_member(group, token)
        keys = self.keys.group_keys(group, key)
        reply = self._scripts["finish"](
            keys=[*keys[:5], self.keys.metrics(), self.keys.delivery(group, token),
                  self.keys.delivery_waiters(group, token), self.keys.deliveries()],
            args=[group, key, token, next_token, self.queue_ms, "keep" if keep else "",
                  "1" if executed else "", self.lease_ms, member, outcome,
                  *(part for pair in observed for part in pair)],
        )
        if _text(reply[0]) == "stale":
            return Finished(stale=True)
        raw_next = reply[1]
        waiters = [RequestRecord.loads(w) for w in reply[2:]]
        return Finished(
            stale=False,
            next_request=RequestRecord.loads(raw_next) if raw_next else None,
            next_token=next_token,
            waiters=waiters,
            delivery=member,
        )

    def take_waiters(self, group: str, key: str) -> list[RequestRecord]:
        """Pop the waiters of (group, key) without releasing the group."""
        pipe = self.client.pipeline(transaction=True)
        pipe.lrange(self.keys.waiters(group, key), 0, -1)
        pipe.delete(self.keys.waiters(group, key))
        raw, _ = pipe.execute()
        return [RequestRecord.loads(w) for w in raw]

    def expired(self, limit: int = 100) -> list[tuple[str, str]]:
        """(group, token) of leases past their deadline; reads only.

        A lease whose owner hash is gone is returned with an empty token:
        ``expire`` removes it (in its script, so this read never writes).
        """
        groups = self.client.zrangebyscore(self.keys.leases(), "-inf", self.server_ms(), start=0, num=limit)
        if not groups:
            return []
        pipe = self.client.pipeline(transaction=False)
        names = [_text(g) for g in groups]
        for group in names:
            pipe.hget(self.keys.owner(group), "token")
        return [(group, _text(token) if token is not None else "")
                for group, token in zip(names, pipe.execute(), strict=True)]

    def expire(self, group: str, token: str) -> Expired:
        """Take an expired lease from its owner (atomic, checked)."""
        fresh = new_token()
        reply = self._scripts["expire"](
            keys=[self.keys.owner(group), self.keys.leases(), self.keys.pulse()],
            args=[group, token, fresh, self.lease_ms, self.lease_ms],
        )
        kind = ExpiredKind(_text(reply[0]))
        has_request = kind in (ExpiredKind.REQUEUE, ExpiredKind.DEAD) and len(reply) > 1 and reply[1]
        request = RequestRecord.loads(reply[1]) if has_request else None
        return Expired(kind, fresh, request)

    OWNER_FIELDS = ("mode", "token", "host", "queue", "ref", "static", "timeout", "state", "device",
                    "last", "bytes", "executions", "task_id", "key", "target", "errors", "ckpt", "parked",
                    "stopping")

    def owner(self, group: str) -> dict[str, str]:
        """The owner hash without its (possibly large) stored request."""
        return self._owner_fields(self.client.hmget(self.keys.owner(group), self.OWNER_FIELDS))

    def _owner_fields(self, values: list[Any]) -> dict[str, str]:
        return {f: _text(v) for f, v in zip(self.OWNER_FIELDS, values, strict=True) if v is not None}

    # -- hosted groups (persistent workers) ----------------------------------

    def place(self, where: Placement, expect: str = "", initial: bytes | str = "") -> Placed:
        """Give a group to a worker (or, with ``expect``, move it from that owner token).

        ``initial``: a new rolling group's state, encoded, written as its first
        checkpoint (``where.ref``) only if the group is placed.
        """
        token = new_token()
        g = where.group
        reply = self._scripts["place"](
            keys=[self.keys.owner(g), self.keys.leases(), self.keys.hosts(), self.keys.inbox(where.host),
                  self.keys.pending(g), self.keys.hosted_ids(g), self.keys.hosted_records(g),
                  self.keys.worker(where.host), self.keys.parked(), self._state_key(where.ref, g)],
            args=[g, token, where.host, where.queue, where.ref, "1" if where.static else "0", where.timeout,
                  self.lease_ms, expect, where.device, where.size, where.error_strategy,
                  place_command(g).encode(), initial, where.policy],
            client=self._bulk if initial else self.client,
        )
        status, rest = PlaceStatus(_text(reply[0])), [_text(x) for x in reply[1:]]
        if status is PlaceStatus.EXISTS:
            return Placed(status, host=rest[0], queue=rest[1])
        if status is PlaceStatus.BUSY:
            return Placed(status, why=rest[0] if rest else "")
        return Placed(status, token=token, host=where.host, queue=where.queue)

    def adopt(self, group: str, host: str) -> Adopted | None:
        return self.adopt_many([group], host)[0]

    def adopt_many(self, groups: list[str], host: str) -> list[Adopted | None]:
        """``adopt`` for many groups in one round trip (a worker takes thousands up at once)."""
        pipe = self.client.pipeline(transaction=False)
        for group in groups:
            keys = [self.keys.owner(group), self.keys.leases(), self.keys.hosted_ids(group),
                    self.keys.hosted_records(group), self.keys.journal(group)]
            self._scripts["adopt"](keys=keys, args=[group, host, self.lease_ms], client=pipe)
        return [self._adopted(group, host, reply) for group, reply in zip(groups, pipe.execute(), strict=True)]

    def _adopted(self, group: str, host: str, reply: Any) -> Adopted | None:
        if _text(reply[0]) != "ok":
            return None
        token, queue, ref, static, timeout, device, size, errors, policy = (_text(x) for x in reply[1:10])
        owner = {"queue": queue, "ref": ref, "static": static, "timeout": timeout, "device": device,
                 "bytes": size, "errors": errors, "ckpt": policy}
        return Adopted(token, Placement.from_owner(group, host, owner),
                       [RequestRecord.loads(r) for r in reply[12:]], journaled=int(reply[10]),
                       stopping=_text(reply[11]) == "1")

    def start_hosted(self, group: str, token: str, task_id: str) -> HostedStart:
        keys = [self.keys.owner(group), self.keys.hosted_records(group)]
        return HostedStart(int(self._scripts["start_hosted"](keys=keys, args=[token, task_id])))

    def finish_hosted(self, group: str, token: str, key: str, task_id: str, outcome: str,
                      new_ref: str = "", size: int = 0, state: bytes | str = "", replaces: str = "",
                      journal: bool = False, journal_of: str = "") -> Finished:
        """Finish a hosted request: its waiters, and a delivery of its outcome (``outcome`` encoded,
        or "" when it is the new checkpoint ``new_ref``).  ``stale``: another host owns the group;
        ``gone``: the request was finished or withdrawn already.

        A rolling group's new state is either a checkpoint (``state``, encoded, under
        ``new_ref``; the group's previous state ``replaces`` loses its holder) or, with
        ``journal``, the request's record appended to the group's journal (``journal_of``:
        the group's current name, for a request that ran under an old one).
        """
        member = delivery_member(group, task_id)
        keys = [self.keys.owner(group), self.keys.inflight(group), self.keys.waiters(group, key),
                self.keys.hosted_ids(group), self.keys.hosted_records(group), self.keys.metrics(),
                self.keys.delivery(group, task_id), self.keys.delivery_waiters(group, task_id),
                self.keys.deliveries(), self._state_key(new_ref, group), self._state_key(replaces, group),
                self.keys.journal(journal_of or group)]
        mode = "c" if state else "j" if journal else ""
        old = replaces if checkpoint_of(replaces) else ""
        reply = self._scripts["finish_hosted"](
            keys=keys, args=[token, key, task_id, new_ref, size, outcome, self.lease_ms, member, mode, state, old],
            client=self._bulk if state else self.client)
        status = _text(reply[0])
        if status != "done":
            return Finished(stale=status == "stale", gone=status == "gone")
        return Finished(stale=False, waiters=[RequestRecord.loads(w) for w in reply[1:]], delivery=member)

    def delivered(self, member: str) -> None:
        """Every caller of a delivery is answered: forget it."""
        group, token = parse_member(member)
        self._scripts["deliver"](
            keys=[self.keys.delivery(group, token), self.keys.delivery_waiters(group, token),
                  self.keys.deliveries(), self.keys.checkpoint(group, writer_key(token))],
            args=[member, "done"])

    def delivered_unawaited(self, member: str) -> None:
        """``delivered``, sent without waiting for its reply (``Unawaited``).

        It only deletes, and only what ``member`` names: safe after anything
        this process sent before it.  A delivery whose step is lost stays
        until its deadline, and the reaper then finds every caller answered.
        """
        group, token = parse_member(member)
        self._unawaited.run(self._scripts["deliver"],
                            [self.keys.delivery(group, token), self.keys.delivery_waiters(group, token),
                             self.keys.deliveries(), self.keys.checkpoint(group, writer_key(token))],
                            [member, "done"])

    def due_deliveries(self, limit: int = 100) -> list[str]:
        """Members of deliveries past their deadline (their writer died); reads only."""
        found = self.client.zrangebyscore(self.keys.deliveries(), "-inf", self.server_ms(), start=0, num=limit)
        return [_text(m) for m in found]

    def take_delivery(self, member: str) -> Delivery | None:
        """Take over a due delivery (re-leased to this caller for one lease); None if settled or not due."""
        group, token = parse_member(member)
        reply = self._scripts["deliver"](
            keys=[self.keys.delivery(group, token), self.keys.delivery_waiters(group, token),
                  self.keys.deliveries()],
            args=[member, "take", self.lease_ms])
        if _text(reply[0]) != "taken":
            return None
        leader, raw_next, next_token, own, outcome, ref, device = (_text(x) for x in reply[1:8])
        return Delivery(
            member=member, group=group, leader=leader,
            next_request=RequestRecord.loads(raw_next) if raw_next else None, next_token=next_token,
            own=RequestRecord.loads(own) if own else None, outcome=outcome, ref=ref, device=device,
            waiters=[RequestRecord.loads(w) for w in reply[8:]],
        )

    def withdraw(self, group: str, task_id: str, key: str) -> Withdrawn:
        """Take back an accepted request of a hosted group before it runs (its waiters come back too)."""
        keys = [self.keys.owner(group), self.keys.inflight(group), self.keys.waiters(group, key),
                self.keys.hosted_ids(group), self.keys.hosted_records(group)]
        reply = self._scripts["withdraw"](keys=keys, args=[task_id, key])
        return Withdrawn(WithdrawStatus(_text(reply[0])), [RequestRecord.loads(w) for w in reply[1:]])

    def unhost(self, group: str, token: str, force: bool = False, drop: str = "") -> Unhosted:
        """Unregister a hosted group (its journal and parked entry go with it).

        ``drop``: the group's current state, deleted with it if it is a
        checkpoint (a rolling group that ended: nothing needs it any more).
        """
        drop = drop if checkpoint_of(drop) else ""
        keys = [self.keys.owner(group), self.keys.inflight(group), self.keys.leases(), self.keys.hosts(),
                self.keys.hosted_ids(group), self.keys.hosted_records(group), self._state_key(drop, group),
                self.keys.journal(group), self.keys.parked()]
        reply = self._scripts["unhost"](keys=keys, args=[group, token, "1" if force else "", drop])
        return Unhosted(UnhostStatus(_text(reply[0])), [RequestRecord.loads(r) for r in reply[1:]])

    def rename(self, old: str, new: str, token: str, new_queue: str) -> tuple[RenameStatus, str]:
        fresh = new_token()
        keys = [self.keys.owner(old), self.keys.owner(new), self.keys.leases(), self.keys.hosts()]
        reply = self._scripts["rename"](keys=keys, args=[old, new, token, fresh, new_queue,
                                                         self.lease_ms])
        return RenameStatus(_text(reply[0])), fresh

    def _state_key(self, storage_id: str, group: str) -> str:
        """The key of a checkpoint (for a script's KEYS); the group's journal when ``storage_id`` is not one
        (a placeholder the script does not write)."""
        return stored_key(self.keys, storage_id) if checkpoint_of(storage_id) else self.keys.journal(group)

    def checkpoint(self, group: str, token: str, storage_id: str, size: int, state: bytes | str, replaces: str,
                   covered: int) -> CheckpointStatus:
        """Make ``state`` (encoded, under ``storage_id``) the group's checkpoint, from the state ``replaces``
        plus the first ``covered`` requests of its journal (see checkpoint.lua)."""
        keys = [self.keys.owner(group), stored_key(self.keys, storage_id), self._state_key(replaces, group),
                self.keys.journal(group)]
        reply = self._scripts["checkpoint"](
            keys=keys, args=[token, storage_id, size, state, replaces, "1" if checkpoint_of(replaces) else "",
                             covered], client=self._bulk)
        return CheckpointStatus(_text(reply[0]))

    def journal(self, group: str) -> list[RequestRecord]:
        """The requests a rolling group applied since its checkpoint, in order (reads only)."""
        return [RequestRecord.loads(r) for r in self.client.lrange(self.keys.journal(group), 0, -1)]

    def park(self, group: str, token: str) -> ParkStatus:
        """Keep a rolling group with its state and requests while no persistent worker can take it."""
        keys = [self.keys.owner(group), self.keys.leases(), self.keys.hosts(), self.keys.parked()]
        reply = self._scripts["park"](keys=keys, args=[group, token, new_token()])
        return ParkStatus(_text(reply[0]))

    def parked(self, limit: int = 100) -> list[str]:
        """Parked groups, longest parked first (reads only)."""
        return [_text(g) for g in self.client.zrange(self.keys.parked(), 0, limit - 1)]

    def forget_parked(self, group: str) -> None:
        """Drop a parked entry whose group is gone (an operator released it); checked in one transaction."""
        with self.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(self.keys.owner(group))
                if pipe.exists(self.keys.owner(group)):
                    return
                pipe.multi()
                pipe.zrem(self.keys.parked(), group)
                pipe.execute()
            except redis.WatchError:
                return  # the group came back meanwhile: it is not gone

    def take(self, group: str) -> list[RequestRecord]:
        """Remove and return a group's waiting requests (not the running one), in order."""
        keys = [self.keys.hosted_ids(group), self.keys.hosted_records(group), self.keys.pending(group),
                self.keys.inflight(group), self.keys.owner(group)]
        return [RequestRecord.loads(r) for r in self._scripts["take"](keys=keys, args=[])]

    def accepted(self, group: str) -> list[RequestRecord]:
        """The accepted, unfinished requests of a hosted group, in order (reads only)."""
        return self.accepted_many([group])[0]

    def accepted_many(self, groups: list[str]) -> list[list[RequestRecord]]:
        """``accepted`` for many groups in two round trips at most (a worker looks at hundreds at once)."""
        if not groups:
            return []
        pipe = self.client.pipeline(transaction=False)
        for group in groups:
            pipe.zrange(self.keys.hosted_ids(group), 0, -1)
        ids = [[_text(i) for i in found] for found in pipe.execute()]
        pipe = self.client.pipeline(transaction=False)
        for group, found in zip(groups, ids, strict=True):
            if found:
                pipe.hmget(self.keys.hosted_records(group), found)
        raw = iter(pipe.execute())
        return [[RequestRecord.loads(r) for r in next(raw) if r is not None] if found else [] for found in ids]

    def unfinished(self, group: str) -> int:
        """How many accepted requests of a hosted group are not done yet."""
        return int(self.client.zcard(self.keys.hosted_ids(group)))

    def live_workers(self) -> list[tuple[str, int]]:
        """(hostname, hosted group count) of persistent workers that take new groups."""
        # The server's clock, the heartbeats and the loads in one round trip (live.lua).
        reply = self._scripts["live"](keys=[self.keys.workers()], args=[self.keys.worker("")])
        return [(_text(reply[i]), int(reply[i + 1] or 0)) for i in range(0, len(reply), 2)]

    def worker_info(self) -> list[dict[str, Any]]:
        """Live persistent workers with what they last reported (reads only)."""
        names = [_text(h) for h in self.client.zrangebyscore(self.keys.workers(), self.server_ms(), "+inf")]
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.keys.worker(name))
        out = []
        for name, raw in zip(names, pipe.execute(), strict=True):
            info: dict[str, Any] = {"hostname": name}
            info.update({_text(k): int(_text(v)) for k, v in raw.items()})
            out.append(info)
        return out

    def heartbeat(self, hostname: str, info: dict[str, int]) -> None:
        fields = [item for pair in info.items() for item in pair]
        self._scripts["heartbeat"](keys=[self.keys.workers(), self.keys.worker(hostname)],
                                   args=[hostname, self.heartbeat_ms, 3 * self.lease_ms, *fields])

    def leave(self, hostname: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(self.keys.workers(), hostname)
        pipe.delete(self.keys.worker(hostname))
        pipe.execute()

    def take_inbox(self, hostname: str) -> list[str]:
        """Every command posted to ``hostname`` since the last call, raw (``Command.decode`` reads them)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.lrange(self.keys.inbox(hostname), 0, -1)
        pipe.delete(self.keys.inbox(hostname))
        raw, _ = pipe.execute()
        return [_text(x) for x in raw]

    def post(self, hostname: str, command: Command) -> None:
        self.client.rpush(self.keys.inbox(hostname), command.encode())

    def hosted_groups(self) -> list[HostedGroup]:
        """Every hosted group as its owner hash describes it (reads only)."""
        groups = [_text(g) for g in self.client.zrange(self.keys.hosts(), 0, -1)]
        pipe = self.client.pipeline(transaction=False)
        for group in groups:
            pipe.hmget(self.keys.owner(group), self.OWNER_FIELDS)
        now = time.time()
        rows = []
        for group, values in zip(groups, pipe.execute(), strict=True):
            owner = self._owner_fields(values)
            if owner.get("mode") == "hosted":
                rows.append(HostedGroup.from_owner(group, owner, now))
        return rows

    # -- operators ---------------------------------------------------------------

    def release(self, group: str, token: str) -> ReleasedGroup:
        """Take a group from its owner if ``token`` still owns it (``celery persistent release``).

        An ordinary group is held under a new token for the caller to finish;
        a hosted group is let go, its requests returned (see release.lua).
        The request a hosted group runs is read first and checked again in
        the script: if another one starts in between, it is read again.
        """
        for _ in range(3):
            running = _text(self.client.hget(self.keys.owner(group), "running") or b"")
            raw = self.client.hget(self.keys.hosted_records(group), running) if running else None
            key = RequestRecord.loads(raw).key if raw else ""
            released = self._release(group, token, running, key)
            if released.status is not ReleaseStatus.CHANGED:
                return released
        return released

    def _release(self, group: str, token: str, running: str, key: str) -> ReleasedGroup:
        fresh = new_token()
        keys = [self.keys.owner(group), self.keys.inflight(group), self.keys.leases(), self.keys.hosts(),
                self.keys.hosted_ids(group), self.keys.hosted_records(group), self.keys.waiters(group, key),
                self.keys.parked()]
        reply = self._scripts["release"](keys=keys, args=[group, token, fresh, self.lease_ms, running, key])
        status = ReleaseStatus(_text(reply[0]))
        if status is ReleaseStatus.LEADER:
            state, raw = _text(reply[1]), reply[2]
            return ReleasedGroup(status, token=fresh, state=state, request=RequestRecord.loads(raw) if raw else None)
        if status is ReleaseStatus.MOVED:
            return ReleasedGroup(status, target=_text(reply[1]))
        if status not in (ReleaseStatus.HOSTED, ReleaseStatus.PARKED):
            return ReleasedGroup(status)
        host, queue, ref, device, own = (_text(x) for x in reply[1:6])
        count = int(reply[6])
        return ReleasedGroup(
            status, host=host, queue=queue, ref=ref, device=device,
            request=RequestRecord.loads(own) if own else None,
            waiters=[RequestRecord.loads(w) for w in reply[7:7 + count]],
            handed_on=[RequestRecord.loads(r) for r in reply[7 + count:]],
        )
