"""The registry's typed protocol: what each Lua script returns, and a hosted group's row.

Scripts answer with short strings; ``registry.py`` turns each reply into one
of these enums or dataclasses at once, so no caller ever compares a bare
status string.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from .records import RequestRecord


class SubmitOutcome(str, Enum):
    """What ``submit.lua`` did with a request."""

    LEADER = "leader"  # registered as the group's owner: publish it
    WAIT = "wait"  # coalesced onto an identical request in flight
    QUEUED = "queued"  # runs after the owner, in order
    HOSTED = "hosted"  # a persistent worker owns the group: publish to its queue
    MOVED = "moved"  # a rolling group re-registered under another name
    NOT_HOSTED = "nothost"  # flag "h" and no persistent worker


@dataclass(frozen=True)
class Submitted:
    outcome: SubmitOutcome
    token: str
    other_id: str = ""  # leader: own id; wait: id executing the same key; queued: owner id
    queue: str = ""  # hosted: the group's queue
    ref: str = ""  # hosted: storage id of the worker's Msg1
    host: str = ""  # hosted: the worker's hostname
    target: str = ""  # moved: the group's new name
    group: str = ""  # the group the request registered with


class Mode(str, Enum):
    """The ``mode`` field of a group's owner hash."""

    LEADER = "leader"
    HOSTED = "hosted"
    MOVED = "moved"


@dataclass(frozen=True)
class Placement:
    """Where a group is to be hosted (arguments of place.lua).

    ``timeout`` 0 means none was chosen: the hosting worker's default applies.
    """

    group: str
    host: str
    queue: str
    ref: str
    static: bool
    timeout: float
    device: str
    size: int
    error_strategy: str = "ignore"
    policy: str = ""  # a rolling group's checkpoint policy (checkpoints.CheckpointPolicy.encode)

    @classmethod
    def from_owner(cls, group: str, host: str, owner: Mapping[str, str]) -> Placement:
        """The same group, as its owner hash describes it, on another host."""
        return cls(group, host, owner.get("queue", ""), owner.get("ref", ""), owner.get("static") == "1",
                   float(owner.get("timeout") or 0), owner.get("device", ""), int(owner.get("bytes") or 0),
                   owner.get("errors") or "ignore", owner.get("ckpt", ""))


class PlaceStatus(str, Enum):
    PLACED = "placed"
    EXISTS = "exists"  # already hosted (host and queue say where)
    BUSY = "busy"  # executing, or its owner changed since the caller looked


@dataclass(frozen=True)
class Placed:
    status: PlaceStatus
    token: str = ""
    host: str = ""  # exists: where the group is
    queue: str = ""
    why: str = ""  # busy: "executing" or "changed"


@dataclass(frozen=True)
class Adopted:
    """A group this host takes up: its token, its placement, and what it had accepted."""

    token: str
    where: Placement
    unfinished: list[RequestRecord]
    journaled: int = 0  # requests applied since the group's checkpoint (replayed when its state loads)
    stopping: bool = False  # stop_worker marked it while parked: end it once its accepted requests are done


@dataclass
class Finished:
    stale: bool
    next_request: RequestRecord | None = None
    next_token: str = ""
    waiters: list[RequestRecord] = field(default_factory=list)
    delivery: str = ""  # member of the delivery left until every caller is answered ("" if none)
    gone: bool = False  # finish_hosted: the request was finished or withdrawn already


@dataclass(frozen=True)
class Delivery:
    """Answers an execution owed when its process died (taken over by the reaper).

    The outcome is, in this order of preference: ``outcome`` (encoded by
    ``outcomes.encode_outcome``), the checkpoint ``ref`` (a rolling group's
    Msg3), or the result stored for ``leader`` in the result backend.
    """

    member: str
    group: str
    leader: str
    next_request: RequestRecord | None
    next_token: str
    own: RequestRecord | None  # a hosted request's own record: it is answered like a waiter
    outcome: str
    ref: str
    device: str
    waiters: list[RequestRecord]


class ExpiredKind(str, Enum):
    """What ``expire.lua`` found behind an expired lease."""

    GONE = "gone"  # the owner changed meanwhile
    ALIVE = "alive"  # renewed meanwhile
    REQUEUE = "requeue"  # never started: publish again under the new token
    DEAD = "dead"  # died while running: answer and hand on under the new token
    ORPHAN = "orphan"  # a persistent worker died: place the group again


@dataclass(frozen=True)
class Expired:
    kind: ExpiredKind
    token: str = ""
    request: RequestRecord | None = None


class UnhostStatus(str, Enum):
    OK = "ok"
    STALE = "stale"  # another owner holds the group
    BUSY = "busy"  # a request raced the idle timeout: keep hosting


@dataclass(frozen=True)
class Unhosted:
    status: UnhostStatus
    unfinished: list[RequestRecord] = field(default_factory=list)


class WithdrawStatus(str, Enum):
    WITHDRAWN = "withdrawn"  # it will not run
    RUNNING = "running"  # too late: it is executing
    GONE = "gone"  # not accepted (finished already, or not registered with this group)


@dataclass(frozen=True)
class Withdrawn:
    status: WithdrawStatus
    waiters: list[RequestRecord] = field(default_factory=list)


class CheckpointStatus(str, Enum):
    """What ``checkpoint.lua`` did with a state a host wrote between requests."""

    OK = "ok"  # it is the group's state now; the journal it covers is dropped
    STALE = "stale"  # another owner holds the group
    CHANGED = "changed"  # the group's state is not the one the host wrote it from: nothing written


class ParkStatus(str, Enum):
    PARKED = "parked"  # kept with its state and requests, for the next persistent worker
    STALE = "stale"  # another owner holds the group


class RenameStatus(str, Enum):
    OK = "ok"
    STALE = "stale"
    BUSY = "busy"  # the new name is taken: keep the old one


class HostedStart(Enum):
    """``start_hosted``: what a host does with a message it took from a group queue."""

    RUN = 1  # this host owns the group and the request is still to be done
    DONE = 0  # finished or withdrawn already: the message is a stale copy
    ELSEWHERE = -1  # still to be done, but the group is not this host's: hand the message back


@dataclass(frozen=True)
class HostedGroup:
    """One hosted group as the registry knows it: ``groups()``, status, monitor and metrics rows."""

    group: str
    hostname: str
    queue: str
    static: bool
    executions: int
    idle: float | None  # seconds since its last execution (None: never ran)
    msg1_bytes: int
    state: str
    timeout: float

    @classmethod
    def from_owner(cls, group: str, owner: Mapping[str, str], now: float | None = None) -> HostedGroup:
        now = time.time() if now is None else now
        last = float(owner.get("last") or 0) / 1000
        return cls(
            group=group,
            hostname=owner.get("host", ""),
            queue=owner.get("queue", ""),
            static=owner.get("static") == "1",
            executions=int(owner.get("executions") or 0),
            idle=round(max(0.0, now - last), 3) if last else None,
            msg1_bytes=int(owner.get("bytes") or 0),
            state=owner.get("state", ""),
            timeout=float(owner.get("timeout") or 0),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ReleaseStatus(str, Enum):
    """What ``release.lua`` did with a group an operator asked to release."""

    LEADER = "leader"  # an ordinary group: the caller holds it under the new token, to finish it
    HOSTED = "hosted"  # a hosted group: let go; the caller answers its running request, hands on the rest
    UNKNOWN = "unknown"  # nothing owns the group
    STALE = "stale"  # another token owns it now: nothing changed
    MOVED = "moved"  # a rolling group's old name: ``target`` is where it lives on
    CHANGED = "changed"  # hosted: another request runs than the caller read: read again
    PARKED = "parked"  # a hosted rolling group: kept with its state and requests for the next persistent worker


@dataclass(frozen=True)
class ReleasedGroup:
    """The reply of ``release.lua``, typed (``Registry.release``).

    ``token`` is the caller's new hold on an ordinary group (``LEADER``);
    ``request`` is the request that was running or about to (the leader, or
    the hosted request that runs) with its ``waiters``; ``handed_on`` are a
    hosted group's other accepted requests, in order.
    """

    status: ReleaseStatus
    token: str = ""
    state: str = ""  # leader: the state it was in (queued, published, reserved, running, dead)
    request: RequestRecord | None = None
    waiters: list[RequestRecord] = field(default_factory=list)
    handed_on: list[RequestRecord] = field(default_factory=list)
    host: str = ""  # hosted: the worker that hosted it
    queue: str = ""
    ref: str = ""  # hosted: storage id of its last state (the handed-on requests run against it)
    device: str = ""
    target: str = ""  # moved: the group's new name
