"""(a) SIGKILL of an ordinary worker, (b) SIGKILL of a persistent worker hosting rolling groups."""

from __future__ import annotations

from chaos.observation import Observation
from chaos.scenarios.base import Context, Fault, drive, host_tallies, standard_load
from chaos.stage import Stage

SERIAL = ["a", "b", "c"]
TALLY = ["x", "y"]


def kill_worker(stage: Stage, ctx: Context) -> Observation:
    workers = [stage.worker("o1"), stage.worker("o2")]
    stage.ready(*workers)

    def fault() -> Fault:
        victim = ctx.rng.choice(workers)
        at = victim.kill()
        return Fault(f"SIGKILL of {victim.name}", at, at, deaths={victim.pid: at})

    return drive(stage, ctx, standard_load(stage, ctx, SERIAL, []), fault, SERIAL, [])


def kill_host(stage: Stage, ctx: Context) -> Observation:
    victim = stage.worker("p1", persistent=True, ordinary_queue=False)
    stage.ready(victim)
    host_tallies(stage, victim, TALLY)
    survivor = stage.worker("p2", persistent=True, ordinary_queue=False)
    stage.ready(survivor)

    def fault() -> Fault:
        at = victim.kill()
        return Fault(f"SIGKILL of {victim.name} (hosting {len(TALLY)} rolling groups)", at, at,
                     deaths={victim.pid: at})

    return drive(stage, ctx, standard_load(stage, ctx, [], TALLY), fault, [], TALLY)
