"""A persistent worker's groups over time: adopt, keep alive, release, hand off.

``tick`` runs on the lease thread every beat (so it works while a request
runs): it renews every hosted group's lease, reports the worker's load,
takes parked groups up, reads the inbox (placements, stop, drain), finds
idle groups and rolling groups whose journal is due for a checkpoint.
Anything that touches the consumer or executes requests is handed to the
worker's event loop (``GroupQueues.soon``).

An idle group naps (``naps.py``): the beat picks groups idle for
``nap_after``, the event loop naps them (``nap.lua``: a long lease, and the
next request rings the host's bell), and on kombu's Redis transport their
queue is then no longer consumed.  A ring, the beat's sweep (a message in a
napping queue, Redis) or a message run without a ring (RabbitMQ, where the
queue stays consumed) wakes them.  Napping groups are renewed rarely, so a
beat costs O(awake groups) in Redis, not O(hosted groups), on both brokers.

A rolling group is never reset by a worker going away: when no other
persistent worker can take it (warm shutdown, drain, a cancelled queue, a
failed restart) it is parked with its state and its requests, and the next
persistent worker takes it up.  It ends only by ``stop_worker`` or its idle
timeout, and ``on_idle`` sees its final state first.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from ..checkpoints import CheckpointPolicy
from ..device import DeviceRegistry
from ..dispatch import Dispatcher
from ..errors import PersistentError, RequestLost
from ..events import Events
from ..inbox import Command, CommandKind
from ..metrics import Metrics
from ..placement import Placer
from ..protocol import Adopted, ParkStatus, Placement, UnhostStatus
from ..queues import queue_depths, waiting
from ..registry import Registry
from ..store import REF_KEY, MessageStore, Ref
from .cache import Msg1Cache
from .consumer import GroupQueues
from .hosted import Hosted, HostedTable
from .naps import Bell, NapRegistry
from .runner import Runner
from .state import GroupState

logger = logging.getLogger(__name__)

TOUCH_MAX = 3600.0
"""Seconds between renewals of the stored Msg1s' TTL at most (a quarter of the TTL, 7 days by default,
would be days).  Every minute, as before, put a burst of 10,000 PEXPIREs into every minute of an idle
worker hosting 10,000 groups."""

ADOPT_BATCH = 500
"""Groups adopted in one round trip."""

FULL_EVERY = 5
"""Beats between looks at napping groups (idle timeout, stop, due renewal) on kombu's Redis transport."""

CONSUME_WINDOW = 128
"""Group queues consumed at once on kombu's Redis transport, where each ``BRPOP`` names every consumed queue
(times four priority lists): 10,000 groups woken together by a burst made each fetch cost 60 ms.  Beyond
it, woken groups wait their turn (``_admit``), and consumed groups nap as soon as they are idle."""

LOST_LOOKS = 500
"""Groups whose nap was refused looked at for lost requests at once (a sample of them beyond): under a
backlog over thousands of groups every nap is refused, and the look runs on the event loop."""


class Host:
    """The groups hosted by this worker process (one per ``--persistent`` worker)."""

    def __init__(self, events: Events, hostname: str, registry: Registry, store: MessageStore, placer: Placer,
                 devices: DeviceRegistry, metrics: Metrics, table: HostedTable, cache: Msg1Cache,
                 queues: GroupQueues, default_timeout: float, dispatcher: Dispatcher,
                 reserved_groups: Callable[[], set[str]] = set, *, state: GroupState,
                 naps: NapRegistry | None = None, nap_after: float = 5.0, sweep_interval: float = 5.0,
                 gap: float = 1.5) -> None:
        self.events = events
        self.app = queues.app
        self.dispatcher = dispatcher
        self.reserved_groups = reserved_groups
        self.hostname = hostname
        self.registry = registry
        self.store = store
        self.placer = placer
        self.devices = devices
        self.metrics = metrics
        self.table = table
        self.cache = cache
        self.queues = queues
        self.state = state
        self.default_timeout = default_timeout
        self.runner: Runner | None = None  # attached by attach(): it calls back into restart()
        self.draining = False
        self._beats = 0
        self.naps = naps if naps is not None else NapRegistry(registry, hostname)
        self.nap_after = nap_after
        self.sweep_interval = sweep_interval
        self.gap = gap  # a pause this long between renewals: renew napping groups too (pulse.lua cut them)
        self.bell = Bell(self.naps, self.ring)
        self._kept_at = time.monotonic()
        self._swept_at = time.monotonic()
        self._touched_at = time.monotonic()  # a placed Msg1 was stored or renewed within a quarter of its TTL
        self._sums: tuple[int, int] | None = None  # cache bytes used, executions: refreshed on full beats
        self._resumed: str | None = None  # pulse.lua's "resumed" as last seen
        self._turn: deque[Hosted] = deque()  # woken, awaiting a place in CONSUME_WINDOW (event loop only)

    def hosts_queue(self, queue: str) -> bool:
        return any(queue in h.queues() for h in self.table.all())

    def attach(self, runner: Runner) -> None:
        self.runner = runner

    @property
    def busy(self) -> bool:
        return self.runner is not None and self.runner.busy

    # -- wiring -------------------------------------------------------------------

    def bind(self, consumer: object) -> None:
        """Called when the worker's consumer (re)starts: consume hosted queues again (on Redis napping ones
        stay napping: their bell is set in Redis) and read the bell."""
        groups = self.table.all()
        self.queues.bind(consumer, [q for h in groups if not h.asleep for q in h.queues()],
                         napping=[q for h in groups if h.asleep for q in h.queues()])
        self.bell.start()

    # -- the lease thread's beat --------------------------------------------------

    def tick(self) -> None:
        """One beat.  Napping groups are looked at every ``FULL_EVERY`` beats (and after a gap), the
        others on every beat: with thousands napping, a beat costs O(awake groups)."""
        now = time.monotonic()
        gap = now - self._kept_at > self.gap or self._resumed_changed()
        full = gap or self._beats % FULL_EVERY == 0
        groups = self.table.all() if full else self.table.awake()
        self._renew(groups, now, gap)
        self.registry.heartbeat(self.hostname, self.load(full))
        self._beats += 1
        if now - self._touched_at >= min(self.store.ttl / 4, TOUCH_MAX):
            self._touched_at = now
            self.store.touch([h.ref for h in self.table.all()])
        if not self.draining:
            self._unpark()
        stops: set[str] = set()
        placed = [g for g in (self._handle(raw, stops) for raw in self.registry.take_inbox(self.hostname)) if g]
        adopted = self._adopt(placed)
        for h, _ in adopted:  # stop_worker on a group placed, not yet adopted: its stop follows in the inbox
            h.stopping = h.stopping or h.group in stops
        if adopted:
            self.queues.soon(partial(self._activate, adopted))
        if self.queues.lazy:
            self._sweep(now)
        self._pick_naps(groups, now)
        for h in groups:
            self._upkeep(h, now)

    def _resumed_changed(self) -> bool:
        """Whether the registry resumed after a gap since the last beat: pulse.lua then cut every long
        lease (napping groups') to one lease, and this beat renews them all."""
        try:
            resumed = self.naps.resumed()
        except Exception:
            return True  # unknown: renew everything, which is always safe
        changed = resumed != self._resumed
        self._resumed = resumed
        return changed

    def _renew(self, groups: list[Hosted], now: float, gap: bool) -> None:
        """Renew the leases of awake groups, and of napping groups every third of their lease (all of them
        after a gap in this host's renewals: the registry may have cut long leases, pulse.lua)."""
        every = self.naps.nap_lease / 3
        due = [h for h in groups if not h.asleep or gap or now - h.kept >= every]
        leases = self.table.leases_of(due)
        kept = self.naps.keep(leases)
        self._kept_at = now
        for h in due:
            h.kept = now
        for (name, token), ok in zip(leases, kept, strict=True):
            if not ok:
                self._lost(name, token)

    # -- napping (kombu's Redis transport) --------------------------------------------

    def _pick_naps(self, groups: list[Hosted], now: float) -> None:
        """Groups idle for ``nap_after`` nap, on the event loop (one batch per beat)."""
        if self.draining:
            return
        # While woken groups wait for the consume window, consumed ones nap as soon as they are idle.
        after = 0.0 if self._turn else self.nap_after
        batch = [h for h in groups if not h.asleep and not h.napping and not h.releasing and not h.stopping
                 and not h.waiting and now - h.last >= after and not h.live_aliases()]
        if batch:
            for h in batch:
                h.napping = True
            self.queues.soon(partial(self.nap, batch))

    def nap(self, batch: list[Hosted]) -> None:
        """Stop consuming idle groups' queues (on the event loop): each only if none of its requests is
        accepted (nap.lua), which then makes the next request ring."""
        live = [h for h in batch if self.table.lookup(h.group) is h and not h.releasing]
        for h in live:
            self.table.set_asleep(h, True)  # first: a ring (only possible once nap.lua has run) sets it back
        refused: list[Hosted] = []
        try:
            napped = self.naps.nap([(h.group, h.token) for h in live])
        except Exception:
            logger.warning("could not nap %d idle group(s); retrying later", len(live), exc_info=True)
            napped = [2] * len(live)  # unknown: stay awake and consumed, try again after nap_after
        now = time.monotonic()
        for h in batch:
            h.napping = False
        busy: list[Hosted] = []
        for h, status in zip(live, napped, strict=True):
            if status == 1:
                # As if renewed up to a sixth of the napping lease ago: groups that napped together
                # (thousands, after a placement) are renewed over many beats, not in one burst.
                h.kept = now - random.uniform(0.0, self.naps.nap_lease / 6)
                if self.queues.lazy:
                    self.queues.nap(h.queue)
                continue
            self.table.set_asleep(h, False)
            h.last = now  # busy again: look at it after another nap_after
            if status < 0:
                self._lost(h.group, h.token)
                continue
            busy.append(h)
            if status == 0:
                refused.append(h)
        self._admit(busy)  # those consumed already are left as they are; napped ones made room
        self._look_for_lost(refused)

    def _look_for_lost(self, refused: list[Hosted]) -> None:
        """Groups idle for ``nap_after`` whose nap was refused hold accepted requests: normally their
        messages are on the way, but a broker that went down just after taking a message (no publisher
        confirms) or a purge leaves them with none.  Two looks, a nap refused apart, answer those with
        ``RequestLost`` (``_settle_lost``) instead of leaving their callers waiting for the idle timeout.
        All in a few round trips: a look per group, each on a new broker connection, held the event loop
        for minutes under a backlog of 10,000 groups (bench, target 5 table)."""
        if self.busy:
            return
        looked = [h for h in refused if self.table.lookup(h.group) is h and not h.releasing]
        if len(looked) > LOST_LOOKS:
            looked = random.sample(looked, LOST_LOOKS)
        try:
            self._settle_lost_many(looked)
        except Exception:
            logger.warning("could not look for lost requests of %d group(s)", len(looked), exc_info=True)

    def ring(self, names: list[str]) -> None:
        """The bell rang for ``names`` (the bell's thread): they are awake from now on (renewed on every
        beat), and their napping queues (Redis) are consumed again on the event loop."""
        now = time.monotonic()
        woken = []
        for name in dict.fromkeys(names):
            h = self.table.lookup(name)
            if h is not None and self.table.set_asleep(h, False):
                h.last = now
                woken.append(h)
        if woken and self.queues.lazy:  # elsewhere its queue was consumed all along
            self.queues.soon(partial(self.rouse, woken))

    def rouse(self, woken: list[Hosted]) -> None:
        """Consume woken groups' queues again (on the event loop), and have the next BRPOP name them."""
        self._admit(woken)

    def _admit(self, groups: list[Hosted]) -> None:
        """Consume the queues of awake groups (on the event loop); on kombu's Redis transport within
        CONSUME_WINDOW, the others in turn (first woken, first consumed) as consumed ones nap."""
        if not self.queues.lazy:
            self.queues.consume(*[h.queue for h in groups])
            return
        for h in groups:
            if not h.waiting and not self.queues.consuming(h.queue):
                h.waiting = True
                self._turn.append(h)
        room = CONSUME_WINDOW - self.queues.consumed()
        taken: list[str] = []
        while self._turn and len(taken) < room:
            h = self._turn.popleft()
            h.waiting = False
            if self.table.lookup(h.group) is h and not h.asleep and not h.releasing:
                taken.append(h.queue)
        if taken:
            self.queues.consume(*taken, quiet=True)  # thousands wake: no log line each
            self.queues.nudge()

    def _sweep(self, now: float) -> None:
        """Every ``sweep_interval``: napping queues holding a message (put there without a ring: a
        hand-back, a re-publish) are woken; their bell is taken down (keep.lua "wake")."""
        if now - self._swept_at < self.sweep_interval:
            return
        self._swept_at = now
        asleep = {h.queue: h for h in self.table.all() if h.asleep}
        if not asleep:
            return
        woken = self._wake([asleep[q] for q in waiting(self.app, list(asleep))])
        if woken:
            logger.info("waking %d napping group(s) with messages and no ring", len(woken))

    def _wake(self, groups: list[Hosted]) -> list[Hosted]:
        """Wake napping groups that have work nobody rang for: their bell is taken down, so their lease
        is an ordinary one again (keep.lua "wake"), renewed on every beat, and their queues are consumed."""
        now = time.monotonic()
        woken = [h for h in groups if self.table.set_asleep(h, False)]
        if not woken:
            return []
        for h in woken:
            h.last = now
        kept = self.naps.keep([(h.group, h.token) for h in woken], wake=[h.group for h in woken])
        for h, ok in zip(woken, kept, strict=True):
            if not ok:
                self._lost(h.group, h.token)
        if self.queues.lazy:
            self.queues.soon(partial(self.rouse, woken))
        return woken

    def _upkeep(self, h: Hosted, now: float) -> None:
        """One group on the beat: retire drained old names, checkpoint a due journal, end it if idle or stopped."""
        if h.aliases:
            self._retire_aliases(h)
        if h.releasing:
            return
        if self._flush_due(h, now):
            h.flushing = True
            self.queues.soon(partial(self.flush, h))
        if not self.busy and (h.stopping or now - h.last > h.timeout):
            h.releasing = True
            self.queues.soon(partial(self.release, h, reason="stop" if h.stopping else "idle"))

    def _unpark(self) -> None:
        """Rolling groups parked while no persistent worker ran: placed on the least loaded one (this
        worker, on its first beats), which adopts them from its inbox.  A failure waits for the next beat
        and never keeps this one from renewing and adopting."""
        try:
            self.placer.unpark()
        except Exception:
            logger.exception("could not take parked groups up; retrying on the next beat")

    @staticmethod
    def _flush_due(h: Hosted, now: float) -> bool:
        """A journal older than the policy's interval is checkpointed between requests."""
        interval = h.policy.interval
        return (not h.static and not h.flushing and h.journaled > 0 and interval > 0
                and now - h.journaled_at >= interval)

    def flush(self, h: Hosted) -> bool:
        """Checkpoint a rolling group's journaled state (on the event loop, between requests)."""
        try:
            if h.static or h.journaled == 0 or self.table.lookup(h.group) is not h:
                return True
            return self.state.flush(h, self.cache.get(h))
        except Exception:
            logger.exception("group %s: checkpointing its state failed; its journal keeps the requests", h.group)
            return False
        finally:
            h.flushing = False

    def load(self, full: bool = True) -> dict[str, int]:
        """What the heartbeat reports; the sums over every group are taken on full beats only."""
        if full or self._sums is None:
            hosted = self.table.all()
            self._sums = (self.cache.used(), sum(h.executions for h in hosted))
        used, executions = self._sums
        return {"groups": len(self.table), "cache_bytes": used, "max_cache_bytes": self.cache.max_bytes,
                "executions": executions, "draining": int(self.draining)}

    def _retire_aliases(self, h: Hosted) -> None:
        """Stop consuming an old name's queue once its accepted requests are done.

        The old name stays registered as a "moved" marker while the group is
        hosted, so callers holding an old Msg1 still find the group.
        """
        for alias, (_token, queue) in list(h.aliases.items()):
            if alias not in h.retired and self.registry.unfinished(alias) == 0:
                h.retired.add(alias)
                self.queues.soon(partial(self.queues.drop, queue))

    def let_go(self, h: Hosted) -> None:
        """Stop serving a group without touching the registry (it could not be reached): its lease lapses
        and the reaper gives it, with its accepted requests, to a live worker."""
        self._lost(h.group, h.token)

    def _lost(self, name: str, token: str) -> None:
        """Another owner has the group (this worker stalled past its lease): let it go, queue untouched."""
        h = self.table.lookup(name)
        if h is None or h.token_for(name) != token or not self.table.forget(h):
            return
        logger.warning("lost group %s to another owner; letting it go", name)
        for queue in h.queues():
            self.queues.soon(partial(self.queues.stop, queue))

    # -- the inbox ------------------------------------------------------------------

    def _handle(self, raw: str, stops: set[str]) -> str | None:
        """Handle one inbox command; the name of a group placed here is returned, for ``_adopt``."""
        try:
            command = Command.decode(raw)
        except PersistentError:
            logger.warning("ignoring an unknown inbox command %r", raw)
            return None
        if command.kind is CommandKind.DRAIN:
            self.draining = True
            # Tell placement at once, so that no new group lands here.
            self.registry.heartbeat(self.hostname, self.load())
            self.queues.soon(self.hand_off_all)
            return None
        if command.kind is CommandKind.STOP:
            h = self.table.lookup(command.group)
            if h is not None:
                h.stopping = True  # released on this beat or, if busy, a later one
            else:
                stops.add(command.group)  # placed by this same read of the inbox, adopted after it
            return None
        return command.group

    def _adopt(self, groups: list[str]) -> list[tuple[Hosted, Adopted]]:
        """Adopt the groups placed here (a draining worker passes them on), ADOPT_BATCH per round trip."""
        if self.draining:
            groups = [group for group in groups if not self.placer.pass_on(group, self.hostname)]
        out = []
        for first in range(0, len(groups), ADOPT_BATCH):
            batch = groups[first:first + ADOPT_BATCH]
            for group, adopted in zip(batch, self.registry.adopt_many(batch, self.hostname), strict=True):
                if adopted is None:
                    logger.info("group %s was placed elsewhere before this worker took it", group)
                    continue
                out.append((self._hosted(group, adopted), adopted))
        return out

    def _hosted(self, group: str, adopted: Adopted) -> Hosted:
        where = adopted.where
        h = Hosted(group=group, token=adopted.token, queue=where.queue, device=where.device, static=where.static,
                   timeout=where.timeout or self.default_timeout, ref=where.ref, size=where.size,
                   error_strategy=where.error_strategy, policy=CheckpointPolicy.decode(where.policy),
                   journaled=adopted.journaled, journaled_at=time.monotonic() if adopted.journaled else 0.0,
                   stopping=adopted.stopping)
        # Known (and renewed by this beat) from now on, before its queue is consumed.
        self.table.add(h)
        return h

    # -- adoption, release, hand-off ---------------------------------------------------

    def _activate(self, batch: list[tuple[Hosted, Adopted]]) -> None:
        """Start serving adopted groups (on the event loop)."""
        assert self.runner is not None
        self.metrics.incr("placements", len(batch))
        self.events.worker(self.hostname, "hosted",
                     groups=[{"group": h.group, "queue": h.queue, "static": h.static,
                              "recovered": len(adopted.unfinished)} for h, adopted in batch])
        for h, _ in batch:
            logger.info("hosting group %s (%s, queue %s)", h.group, "static" if h.static else "rolling", h.queue)
        # Requests accepted before this worker took over (crash, hand-off,
        # spawn) run first and in order within their group; their queue
        # messages then find them done and are skipped.  Groups take turns, so
        # that every adopted group resumes after one execution of each other,
        # not after the whole backlog of the groups before it.
        backlogs = [(h, deque(adopted.unfinished)) for h, adopted in batch]
        while any(records for _, records in backlogs):
            for h, records in backlogs:
                if records:
                    self.runner.run_record(h, records.popleft())
        if not self.queues.lazy:
            self.queues.consume(*[h.queue for h, _ in batch])  # they nap once idle for nap_after
            return
        # On kombu's Redis transport a group with nothing to run naps from the start (nap.lua
        # refuses one whose requests are accepted already: that one is consumed).
        self.queues.consume(*[h.queue for h, adopted in batch if adopted.unfinished])
        self.nap([h for h, adopted in batch if not adopted.unfinished])

    def release(self, h: Hosted, reason: str, force: bool = False) -> None:
        """End a group: timeout hook, unregister if idle, stop consuming.

        ``stop`` (``stop_worker``) and ``idle`` end it for good: ``on_idle``
        sees its final state first (unless a request is accepted meanwhile:
        then the group goes on), and a rolling group's checkpoint and journal
        are deleted with its registration.
        """
        final = self._final_state(h, reason)
        if final is not None and reason in ("idle", "stop") and self.registry.unfinished(h.group) == 0:
            self._on_idle(h, final)
        # A rolling group's state goes with it; requests handed on get the state itself.
        drop = h.ref if not h.static and final is not None else ""
        unhosted = self.registry.unhost(h.group, h.token, force=force, drop=drop)
        if unhosted.status is UnhostStatus.BUSY:
            # A request raced the timeout: it is accepted, so keep hosting and run it;
            # unless its message is gone (a purge): then it is answered, not awaited.
            h.releasing = False
            if not self._settle_lost(h):
                h.last = time.monotonic()
            return
        if unhosted.status is UnhostStatus.STALE:
            # Another owner has the group now, and consumes its queue: leave it be.
            self._lost(h.group, h.token)
            return
        unfinished = list(unhosted.unfinished)
        for alias, (token, _queue) in h.aliases.items():
            unfinished.extend(self.registry.unhost(alias, token, force=True).unfinished)
        self.table.forget(h)
        for queue in h.queues():
            self.queues.drop(queue)
        logger.info("released group %s (%s)", h.group, reason)
        self.events.worker(self.hostname, "released", group=h.group, reason=reason,
                     handed_on=len(unfinished))
        if unfinished:
            stored = h.as_ref() if h.msg1 is not None else Ref({REF_KEY: h.ref, "device": h.device})
            self.placer.hand_on(unfinished, dict(final) if drop and final is not None else stored)

    def _final_state(self, h: Hosted, reason: str) -> Mapping[str, Any] | None:
        """A group's last state as it ends (loaded again, checkpoint and journal, if it was evicted): read
        before its registration goes with its checkpoint.  None for a static group that is only dissolved,
        or if it cannot be read."""
        if reason not in ("idle", "stop") and h.static:
            return None
        try:
            return self.cache.get(h)
        except Exception:
            logger.exception("could not load the last state of group %s", h.group)
            return None

    def _on_idle(self, h: Hosted, final: Mapping[str, Any]) -> None:
        """The group ended for good (``idle``, ``stop``): the device's hook sees its final state."""
        try:
            self.devices.for_message({"device": h.device}).on_idle(final, {"worker_timeout": h.timeout})
        except Exception:
            logger.exception("on_idle of device %s failed for group %s", h.device, h.group)

    def _settle_lost(self, h: Hosted) -> bool:
        """Answer accepted requests whose message left the queue unrun; True while some are suspected."""
        return h.group in self._settle_lost_many([h])

    def _settle_lost_many(self, groups: list[Hosted]) -> set[str]:
        """``_settle_lost`` for many groups at once; the names of those with suspected requests.

        A request is lost when, on two looks a beat apart, it is accepted but
        its queue is empty and this worker holds no message of the group: an
        operator purged the queue.  Its caller and waiters get RequestLost,
        and it is withdrawn so that no later owner runs it.  A queue holding
        a message, or a group with one reserved here, clears its suspects.
        """
        reserved = self.reserved_groups()
        empty = self._empty_queues([h.queue for h in groups if h.group not in reserved])
        quiet = [h for h in groups if h.queue in empty and h.group not in reserved]
        for h in groups:
            if h.queue not in empty or h.group in reserved:
                h.suspects.clear()
        suspected: set[str] = set()
        for h, accepted in zip(quiet, self.registry.accepted_many([h.group for h in quiet]), strict=True):
            if not accepted:
                h.suspects.clear()
                continue
            ids = {record.id for record in accepted}
            confirmed = [record for record in accepted if record.id in h.suspects]
            h.suspects = ids
            for record in confirmed:
                error = RequestLost(f"request {record.id} of group {h.group} left queue {h.queue} without "
                                    "running (purged, or lost by the broker?): it will not run", h.group)
                if self.dispatcher.withdraw(h.group, record, error):
                    self.dispatcher.answer([record.waiter()], error)
                h.suspects.discard(record.id)
            suspected.add(h.group)
        return suspected

    def _empty_queues(self, names: list[str]) -> set[str]:
        """Those of ``names`` holding no message: one script on kombu's Redis transport, else passive
        declares on one connection (a queue the broker does not know counts as empty)."""
        if not names:
            return set()
        if self.queues.lazy:
            return set(names) - set(waiting(self.app, names))
        return {name for name, depth in queue_depths(self.app, names).items() if not depth}

    def shutdown(self) -> None:
        """Warm shutdown: hand every hosted group to another persistent worker."""
        self.bell.stop()
        self.registry.leave(self.hostname)
        self.hand_off_all()

    def hand_off_all(self) -> None:
        """Give every hosted group to another live persistent worker (else park or dissolve it)."""
        for h in self.table.all():
            if not self.hand_off(h, allow_self=False):
                self.let_go_of(h, reason="hand-off")

    def let_go_of(self, h: Hosted, reason: str) -> None:
        """No other worker takes the group: a rolling group is parked, a static one dissolved."""
        if h.static:
            self.release(h, reason=reason, force=True)
        else:
            self.park(h, reason)

    def park(self, h: Hosted, reason: str) -> bool:
        """Keep a rolling group (its state and its requests) in Redis for the next persistent worker.

        Its state is checkpointed first (if that fails, its journal still
        holds the requests since the last one); its queue is kept, with the
        requests in it; requests accepted under old names move to it.
        """
        self.flush(h)
        try:
            parked = self.registry.park(h.group, h.token)
        except PersistentError:
            logger.exception("could not park group %s; its lease lapses and the reaper parks it", h.group)
            self.let_go(h)
            return False
        if parked is ParkStatus.STALE:
            self._lost(h.group, h.token)
            return False
        for alias, (token, queue) in h.aliases.items():
            for record in self.registry.unhost(alias, token, force=True).unfinished:
                self.dispatcher.resubmit(record, h.group)
            if alias not in h.retired:
                self.queues.drop(queue)
        self.table.forget(h)
        self.queues.stop(h.queue)
        logger.warning("parked group %s (%s): no other persistent worker; its state and requests wait for one",
                       h.group, reason)
        self.events.worker(self.hostname, "parked", group=h.group, reason=reason)
        return True

    def hand_off(self, h: Hosted, allow_self: bool) -> bool:
        """Place the group (from its checkpoint, with its unfinished requests) on a worker."""
        if not h.static:
            self.flush(h)  # the new host starts from a checkpoint, not a replay
        where = Placement(h.group, self.hostname, h.queue, h.ref, h.static, h.timeout, h.device, h.size,
                          h.error_strategy, h.policy.encode())
        target = self.placer.move(where, h.token, exclude=self.hostname, allow_self=allow_self)
        if target is None:
            return False
        self.table.forget(h)
        for queue in h.queues():
            self.queues.stop(queue)
        logger.info("handed group %s to %s", h.group, target)
        self.events.worker(self.hostname, "handed-off", group=h.group, to=target)
        return True

    def give_up_queue(self, queue: str) -> None:
        """``cancel_consumer`` of a hosted group's queue (on the event loop): hand its group on."""
        h = next((h for h in self.table.all() if queue in h.queues()), None)
        if h is not None and not h.releasing:
            h.releasing = True
            self.give_up(h)

    def give_up(self, h: Hosted) -> None:
        """An operator stopped this worker consuming the group's queue (``cancel_consumer``):
        another persistent worker takes the group, or it is dissolved and its requests run as usual."""
        logger.warning("group %s: its queue %s is no longer consumed here; handing the group on", h.group, h.queue)
        if not self.hand_off(h, allow_self=False):
            self.let_go_of(h, reason="cancelled")

    def restart(self, h: Hosted) -> None:
        """error_strategy="throw": end this instance; a fresh one resumes from the checkpoint."""
        if not self.hand_off(h, allow_self=True):
            self.let_go_of(h, reason="error")

    # -- execution ------------------------------------------------------------------------

    def run(self, task: object, header: dict[str, object], msg2: object, opts: object) -> object:
        """Execute one request of a hosted group (the task's entry point).

        A napping group whose message arrives without a ring (its queue stays consumed while it naps on
        a broker that pushes, such as RabbitMQ; or a message taken just before its queue napped) is woken
        first, so that a death while it runs is recovered within one ordinary lease, not a napping one.
        """
        assert self.runner is not None
        h = self.table.lookup(str(header.get("group")))
        if h is not None and h.asleep:
            try:
                self._wake([h])
            except Exception:  # the request runs anyway; its own steps report an unreachable registry
                logger.warning("could not wake napping group %s before its request", h.group, exc_info=True)
        return self.runner.run(task, header, msg2, opts)
