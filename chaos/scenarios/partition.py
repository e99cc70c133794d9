"""(h) One worker is cut off from Redis (registry and broker) for twice the lease TTL, then healed.

The partitioned worker runs inside a network namespace of the suite's own
and hosts a rolling group besides consuming ordinary requests; its data link
is taken down (``ip link set down``), so its sockets hang rather than fail,
as in a real partition.  The devices' evidence goes over a second link that
stays up.  Outside, an ordinary and a persistent worker take over.
"""

from __future__ import annotations

import time

from chaos.observation import Observation
from chaos.scenarios.base import Context, Fault, drive, host_tallies, standard_load
from chaos.settings import LEASE_TTL
from chaos.stage import Stage

SERIAL = ["a", "b", "c"]
TALLY = ["x"]
CUT_FOR = 2 * LEASE_TTL


def partition_worker(stage: Stage, ctx: Context) -> Observation:
    assert stage.partition is not None
    partition = stage.partition
    inside = stage.worker("n1", persistent=True, inside=True)
    stage.ready(inside)
    host_tallies(stage, inside, TALLY)
    outside = [stage.worker("o1"), stage.worker("p2", persistent=True, ordinary_queue=False)]
    stage.ready(*outside)

    def fault() -> Fault:
        t0 = time.time()
        partition.cut()
        time.sleep(CUT_FOR)
        partition.heal()
        t1 = time.time()
        return Fault(f"link of {inside.name} to Redis cut for {t1 - t0:.1f}s", t0, t1)

    return drive(stage, ctx, standard_load(stage, ctx, SERIAL, TALLY), fault, SERIAL, TALLY)
