"""An operator releases a stuck group (``celery persistent release``): token-checked, nobody left waiting.

The operator names the owner token ``inspect`` showed; nothing changes if
another token owns the group by then.  What happens next reuses the paths
the reaper takes when an owner dies (recovery.py):

- an ordinary group: release.lua takes it from its owner under a new token,
  as expire.lua takes a dead leader, and ``Dispatcher.complete`` finishes it
  with a ``Released`` error: the request and its waiters are answered with
  it, and the next queued request is published.  The old owner's worker is
  fenced by the token: a late outcome of it is dropped (``Ignore``);
- a hosted group: release.lua lets it go as unhost.lua does, token-checked.
  The request it runs and that request's waiters get ``Released``; its other
  accepted requests are handed on as ordinary requests against its last
  state (``Placer.hand_on``, as when a dead worker's group finds no host).
  The worker notices on its next beat (its lease renewal fails) and stops
  consuming the group queue.  A rolling group is not dissolved: it is
  parked with its state and its other requests (release.lua), and the next
  persistent worker takes it up (see docs/guarantees.md §4).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from .answers import Answerer
from .dispatch import Dispatcher
from .errors import Released, ReleaseRefused
from .placement import Placer
from .protocol import ReleasedGroup, ReleaseStatus
from .records import RequestRecord
from .registry import Registry, unavailable_as_typed
from .store import REF_KEY, Ref

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReleaseReport:
    """What a release did, for the operator (plain and ``--json``)."""

    group: str
    token: str  # the owner token that was released
    mode: str  # "leader" (an ordinary group), "hosted" (dissolved), or "parked" (a rolling group, kept)
    request: str  # id of the request answered Released ("" if a hosted group ran none)
    state: str  # the state that request was in
    answered: list[str] = field(default_factory=list)  # ids answered Released (the request, its waiters)
    next_request: str = ""  # ordinary: the queued request published next ("" if none: the group is free)
    handed_on: list[str] = field(default_factory=list)  # hosted: accepted requests resubmitted, in order
    host: str = ""  # hosted: the worker that hosted it

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Releaser:
    def __init__(self, registry: Registry, answer: Answerer, dispatcher: Dispatcher, placer: Placer) -> None:
        self.registry = registry
        self.answer = answer
        self.dispatcher = dispatcher
        self.placer = placer

    def release(self, group: str, token: str | None = None) -> ReleaseReport:
        """Release ``group`` if ``token`` (default: its owner token right now) still owns it."""
        with unavailable_as_typed():
            if token is None:
                token = self.registry.owner(group).get("token", "")
                if not token:
                    raise self._refusal(group, "", ReleasedGroup(ReleaseStatus.UNKNOWN))
            released = self.registry.release(group, token)
            if released.status is ReleaseStatus.LEADER:
                return self._finish_leader(group, token, released)
            if released.status in (ReleaseStatus.HOSTED, ReleaseStatus.PARKED):
                return self._let_go(group, token, released)
        raise self._refusal(group, token, released)

    def _finish_leader(self, group: str, token: str, released: ReleasedGroup) -> ReleaseReport:
        leader = released.request
        key = leader.key if leader is not None else ""
        leader_id = leader.id if leader is not None else ""
        error = self._error(group, leader_id, released.state)
        finished = self.dispatcher.complete(group, key, released.token, error, settle=False)
        if finished.stale:
            # Only if this process stalled past a whole lease: the reaper answered them LeaderDied.
            return ReleaseReport(group, token, "leader", leader_id, released.state)
        mine = self.answer.unanswered([leader]) if leader is not None else []
        self.answer(mine, error)
        self.dispatcher.settle(finished.delivery)
        logger.warning("%s", error)
        return ReleaseReport(
            group, token, "leader", leader_id, released.state,
            answered=[r.id for r in (*mine, *finished.waiters)],
            next_request=finished.next_request.id if finished.next_request is not None else "",
        )

    def _let_go(self, group: str, token: str, released: ReleasedGroup) -> ReleaseReport:
        running = released.request
        answered: list[RequestRecord] = []
        if running is not None:
            error = self._error(group, running.id, "running")
            answered = [*self.answer.unanswered([running]), *released.waiters]
            self.answer(answered, error)
            logger.warning("%s", error)
        self.placer.hand_on(released.handed_on, Ref({REF_KEY: released.ref, "device": released.device}))
        return ReleaseReport(
            group, token, released.status.value, running.id if running is not None else "",
            "running" if running else "",
            answered=[r.id for r in answered], handed_on=[r.id for r in released.handed_on], host=released.host,
        )

    @staticmethod
    def _error(group: str, request_id: str, state: str) -> Released:
        return Released(f"group {group} was released by an operator: request {request_id} ({state}) "
                        "will not be answered by its execution", group, request_id)

    @staticmethod
    def _refusal(group: str, token: str, released: ReleasedGroup) -> ReleaseRefused:
        status = released.status
        if status is ReleaseStatus.UNKNOWN:
            return ReleaseRefused(f"unknown group {group}: nothing owns it", group, "unknown")
        if status is ReleaseStatus.STALE:
            return ReleaseRefused(f"group {group} is not owned by token {token} any more: "
                                  "inspect it again and pass its current token", group, "stale")
        if status is ReleaseStatus.MOVED:
            return ReleaseRefused(f"group {group} is the old name of {released.target}: "
                                  f"release {released.target} instead", group, "moved")
        return ReleaseRefused(f"group {group} kept starting requests while it was read: try again", group, "busy")
