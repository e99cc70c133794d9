"""What a scenario is, and the moves scenarios share: place groups, drive load around a fault, read states."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery_persistent.testing import wait_until
from chaos.load import Load, initial_tally
from chaos.observation import Observation
from chaos.settings import GRACE, SMOKE_GRACE
from chaos.stage import Stage
from chaos.watch import AnswerWatch
from chaos.workers import Worker

GROUP_TIMEOUT = 600.0
"""Idle timeout of the rolling groups: longer than any run, so only faults move them."""


@dataclass(frozen=True)
class Context:
    run: int
    smoke: bool
    rng: random.Random

    @property
    def before(self) -> float:
        """Load before the fault: a random moment, so a kill lands anywhere in an execution."""
        return self.rng.uniform(1.0, 2.5) if self.smoke else self.rng.uniform(1.5, 4.0)

    @property
    def grace(self) -> float:
        """How long after the fault's end a caller may still be answered before it counts as lost."""
        return SMOKE_GRACE if self.smoke else GRACE

    @property
    def after(self) -> float:
        """Load after the fault's end: new requests must work too."""
        return 2.0 if self.smoke else 3.0


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    what: str  # what it does and what it expects, for docs/reliability.md
    body: Callable[[Stage, Context], Observation]
    broker: str = "redis"
    appendonly: bool = False
    partition: bool = False
    smoke: bool = False
    budget: float = 300.0  # the runner ends a run that takes longer (and reports it)


@dataclass
class Fault:
    """What a scenario did, and when (epoch seconds)."""

    what: str
    start: float
    end: float
    deaths: dict[int, float] = field(default_factory=dict)
    frozen: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def host_tallies(stage: Stage, host: Worker, gids: list[str]) -> None:
    """Place each rolling group on ``host`` (the only persistent worker up at this point)."""
    for gid in gids:
        handle = stage.persistent.start_worker(initial_tally(gid), {"worker_timeout": GROUP_TIMEOUT})
        if handle.hostname != host.hostname:
            raise RuntimeError(f"t-{gid} was placed on {handle.hostname}, not {host.hostname}")
    wait_until(lambda: {f"t-{g}" for g in gids} <= {g["group"] for g in stage.persistent.groups()}, 30, 0.1,
               "the rolling groups to be hosted")


def drive(stage: Stage, ctx: Context, load: Load, fault: Callable[[], Fault], serial: list[str],
          tally: list[str]) -> Observation:
    """Load, then the fault at a random moment, then load again; wait for every caller; read the end state."""
    watch = AnswerWatch(stage.redis.url()).start()
    load.start()
    time.sleep(ctx.before)
    done = fault()
    load.fault_end = done.end
    load.probe("probe")
    time.sleep(ctx.after)
    load.stop()
    calls = load.wait()
    deaths = {**done.deaths, **{w.pid: w.died_at for w in stage.workers if w.died_at is not None}}
    states, notes = final_states(stage, tally)
    time.sleep(0.5)  # late duplicate answers, if any, arrive now
    watch.stop()
    return Observation(
        calls=calls, fault=done.what, fault_start=done.start, fault_end=done.end,
        serial_groups=[f"s-{g}" for g in serial], tally_groups=[f"t-{g}" for g in tally], final_states=states,
        deaths=deaths, frozen=done.frozen, answered_twice=watch.twice({c.task_id for c in calls}),
        notes=[*done.notes, *notes],
    )


def final_states(stage: Stage, gids: list[str], timeout: float = 30.0) -> tuple[dict[str, Any], list[str]]:
    """Each rolling group's state, read through the system itself (a ``peek`` on its worker)."""
    states: dict[str, Any] = {}
    notes: list[str] = []
    for gid in gids:
        msg2 = {"path": "peek", "rid": "peek-" + uuid.uuid4().hex[:6]}
        try:
            result = stage.persistent.resolve.apply_async((initial_tally(gid), msg2))
            states[f"t-{gid}"] = result.get(timeout=timeout)
        except Exception as exc:
            states[f"t-{gid}"] = None
            notes.append(f"peek of t-{gid} failed: {exc.__class__.__name__}: {exc}")
    return states, notes


def wait_death(worker: Worker, timeout: float) -> float:
    """When ``worker`` died by itself (a crash point), polled closely; raises if it did not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.died_at is not None:
            return worker.died_at
        time.sleep(0.02)
    raise RuntimeError(f"worker {worker.name} did not reach its crash point in {timeout}s")


def standard_load(stage: Stage, ctx: Context, serial: list[str], tally: list[str], sleep: float = 0.15) -> Load:
    load = Load(stage.persistent, stage.redis.url(), seed=ctx.rng.randrange(1 << 30), grace=ctx.grace)
    if serial:
        load.serial(serial, per_group=2, sleep=sleep)
    if tally:
        load.tally(tally, per_group=2, sleep=0.05)
    return load

