"""(g) SIGSTOP of a worker in the middle of an execution, for twice the lease TTL, then SIGCONT.

This is the documented limit of leases: the frozen process's lease runs
out, its group moves on, and when it resumes its execution overlaps its
successor's.  Such overlaps are counted apart (``frozen``); the plugin must
still fence everything the stale process writes to the registry afterwards.
"""

from __future__ import annotations

import time

from chaos import evidence
from chaos.observation import Observation
from chaos.scenarios.base import Context, Fault, drive, host_tallies, standard_load
from chaos.settings import LEASE_TTL
from chaos.stage import Stage
from chaos.workers import Worker

SERIAL = ["a", "b", "c"]
TALLY = ["x"]
FROZEN_FOR = 2 * LEASE_TTL


def _executing(stage: Stage, candidates: list[Worker], groups: list[str], timeout: float = 20.0) -> Worker:
    """A candidate that has an execution open right now (started, not ended)."""
    ev = stage.evidence.client()
    by_pid = {w.pid: w for w in candidates}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for group in groups:
            for e in evidence.executions(ev, group):
                if e.end is None and e.pid in by_pid:
                    return by_pid[e.pid]
        time.sleep(0.02)
    raise RuntimeError("no candidate worker was executing")


def _freeze(victim: Worker) -> Fault:
    t0 = victim.freeze()
    time.sleep(FROZEN_FOR)
    t1 = victim.thaw(t0)
    return Fault(f"SIGSTOP of {victim.name} mid-execution for {t1 - t0:.1f}s", t0, t1, frozen={victim.pid: [(t0, t1)]})


def freeze_worker(stage: Stage, ctx: Context) -> Observation:
    workers = [stage.worker("o1"), stage.worker("o2")]
    stage.ready(*workers)
    groups = [f"s-{g}" for g in SERIAL]
    load = standard_load(stage, ctx, SERIAL, [], sleep=1.0)
    return drive(stage, ctx, load, lambda: _freeze(_executing(stage, workers, groups)), SERIAL, [])


def freeze_host(stage: Stage, ctx: Context) -> Observation:
    victim = stage.worker("p1", persistent=True, ordinary_queue=False)
    stage.ready(victim)
    host_tallies(stage, victim, TALLY)
    survivor = stage.worker("p2", persistent=True, ordinary_queue=False)
    stage.ready(survivor)
    load = standard_load(stage, ctx, [], [])
    load.tally(TALLY, per_group=2, sleep=0.5)
    return drive(stage, ctx, load, lambda: _freeze(_executing(stage, [victim], [f"t-{g}" for g in TALLY])), [],
                 TALLY)
