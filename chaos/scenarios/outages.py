"""(d, e) The chaos Redis restarts with and without its data; (f) the chaos RabbitMQ node restarts.

Redis is the registry, the result backend and (d, e) the broker.  With
``--appendonly yes`` a restart keeps everything; without persistence
(``--save "" --appendonly no``) it loses everything by design, and the
question is only whether callers get answers or typed errors, not hangs.
"""

from __future__ import annotations

from chaos.observation import Observation
from chaos.scenarios.base import Context, Fault, drive, host_tallies, standard_load
from chaos.stage import Stage

SERIAL = ["a", "b", "c"]
TALLY = ["x"]
DOWN = 1.0  # seconds the server stays down


def redis_restart(stage: Stage, ctx: Context) -> Observation:
    host = stage.worker("p1", persistent=True, ordinary_queue=False)
    stage.ready(host)
    host_tallies(stage, host, TALLY)
    ordinary = [stage.worker("o1"), stage.worker("o2")]
    stage.ready(*ordinary)

    def fault() -> Fault:
        before = stage.redis.client().dbsize()
        stopped, up = stage.redis.restart(DOWN)
        after = stage.redis.client().dbsize()
        kind = "AOF" if stage.redis.appendonly else "no persistence"
        return Fault(f"Redis SIGTERM + start ({kind}), down {up - stopped:.1f}s", stopped, up,
                     notes=[f"keys in Redis: {before} before the restart, {after} after"])

    return drive(stage, ctx, standard_load(stage, ctx, SERIAL, TALLY), fault, SERIAL, TALLY)


def rabbit_restart(stage: Stage, ctx: Context) -> Observation:
    assert stage.rabbit is not None
    rabbit = stage.rabbit
    host = stage.worker("p1", persistent=True, ordinary_queue=False)
    stage.ready(host)
    host_tallies(stage, host, TALLY)
    ordinary = stage.worker("o1")
    stage.ready(ordinary)

    def fault() -> Fault:
        stopped, up = rabbit.restart(DOWN)
        return Fault(f"RabbitMQ node stop + start, down {up - stopped:.1f}s", stopped, up)

    return drive(stage, ctx, standard_load(stage, ctx, SERIAL[:2], TALLY), fault, SERIAL[:2], TALLY)
