"""Every scenario of the suite, in the order of the report."""

from __future__ import annotations

from chaos.scenarios.base import Context, Scenario
from chaos.scenarios.crashes import HOSTED_POINTS, ORDINARY_POINTS, crash_after_submit, crash_hosted, crash_ordinary
from chaos.scenarios.freeze import freeze_host, freeze_worker
from chaos.scenarios.kills import kill_host, kill_worker
from chaos.scenarios.outages import rabbit_restart, redis_restart
from chaos.scenarios.partition import partition_worker

__all__ = ["SCENARIOS", "Context", "Scenario"]

_ALL = [
    Scenario("kill-worker", "SIGKILL of an ordinary worker",
             "Two solo workers serve 3 ordinary groups (6 callers, 0.15 s executions, a fifth of the sends "
             "duplicated so they coalesce); one worker is SIGKILLed at a random moment. Its running request "
             "and waiters get `LeaderDied` or run again if never started; the rest moves to the survivor.",
             kill_worker, smoke=True),
    Scenario("kill-host", "SIGKILL of a persistent worker",
             "A persistent worker hosts 2 rolling counter groups (4 callers); it is SIGKILLed at a random "
             "moment. A second persistent worker must take the groups over from their last checkpoint: every "
             "answered update applied exactly once.",
             kill_host, smoke=True),
    *[Scenario(f"crash-{p}", f"death at `{p}`",
               f"A worker armed with `CELERY_PERSISTENT_CRASH={p}` exits the first time it reaches that point, "
               "beside an unarmed survivor (ordinary groups, as in kill-worker).",
               crash_ordinary(p), smoke=p in ("before-claim", "after-finish")) for p in ORDINARY_POINTS],
    Scenario("crash-after-submit", "death of a client at `after-submit`",
             "A client process exits between registering a request and publishing it; 3 callers then send "
             "the same Msg2 and coalesce onto it. The reaper must publish it again (its lease is short until "
             "published) so that they are answered.",
             crash_after_submit),
    *[Scenario(f"crash-{p}", f"death at `{p}`",
               f"The persistent worker hosting 2 rolling groups is armed with `CELERY_PERSISTENT_CRASH={p}`; "
               "a second persistent worker must resume the groups (as in kill-host).",
               crash_hosted(p), smoke=p == "after-finish-hosted") for p in HOSTED_POINTS],
    Scenario("redis-restart-aof", "Redis restart, AOF on",
             "The chaos Redis (registry, result backend, broker; `--appendonly yes`) gets SIGTERM under load "
             "(ordinary and rolling groups), stays down 1 s and starts again on the same port and data dir.",
             redis_restart, appendonly=True, smoke=True),
    Scenario("redis-restart-volatile", "Redis restart, no persistence",
             "As redis-restart-aof, but with `--save \"\" --appendonly no`: the restart loses every key "
             "(queued messages, registrations, results, checkpoints) by design. What matters is whether "
             "callers get answers or typed errors rather than hanging; lost state is reported, not hidden.",
             redis_restart, appendonly=False),
    Scenario("rabbit-restart", "RabbitMQ restart",
             "Broker is a RabbitMQ node of the suite's own (Redis stays registry and backend); a persistent "
             "worker hosts a rolling group and an ordinary worker serves 2 groups. The node is stopped with "
             "`rabbitmqctl stop` and started again on the same data.",
             rabbit_restart, broker="rabbit"),
    Scenario("freeze-worker", "SIGSTOP of an ordinary worker (frozen execution)",
             "An ordinary worker is SIGSTOPped in the middle of a 1 s execution for twice the lease TTL, then "
             "SIGCONTed. Its lease lapses and its group moves on, so its execution overlaps its successor's: "
             "the documented limit of leases, counted apart as *frozen* overlaps. Everything else must hold.",
             freeze_worker),
    Scenario("freeze-host", "SIGSTOP of a persistent worker (frozen execution)",
             "As freeze-worker, for the persistent worker hosting a rolling group (0.5 s updates): the "
             "frozen update overlaps its successor's, but the stale worker's late result must be fenced off "
             "(no update lost or applied twice).",
             freeze_host),
    Scenario("partition-worker", "network partition of one worker",
             "One persistent worker (which also serves ordinary requests) runs in a network namespace of its "
             "own; its veth link to Redis (registry and broker) is taken down for twice the lease TTL, then "
             "up again. A second link carries only the devices' evidence and stays up.",
             partition_worker, partition=True),
]

SCENARIOS: dict[str, Scenario] = {s.name: s for s in _ALL}
