"""What ``find_or_register`` returns: the seed's ``{leader, _}`` / ``{wait, _}`` / ``infinite_recursion``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Leader:
    """This caller owns the group and must execute, then ``unregister_notify``."""

    group: str
    key: str
    token: str
    task_id: str


@dataclass(frozen=True)
class Wait:
    """Another execution owns the group; ``await_`` returns this caller's Msg3.

    ``queued`` is True when the owner runs a different Msg2: this request is
    then executed after it, in order, rather than sharing its result.
    """

    group: str
    key: str
    leader_id: str
    waiter_id: str
    queued: bool = False


@dataclass(frozen=True)
class InfiniteRecursion:
    """The caller is itself executing this group; waiting would deadlock."""

    group: str
