"""The persistent worker: hosts groups, keeps their Msg1 in memory, runs their queues.

A worker started with ``--persistent`` (solo pool) hosts groups placed on
it.  The parts, one job each:

- ``hosted``: the table of hosted groups (shared by the lease thread and the
  worker's main thread);
- ``lifecycle``: ``Host``, adoption from the inbox, lease beat, idle release,
  hand-off and warm shutdown;
- ``runner``: one request at a time against the cached Msg1, rolling state;
- ``cache``: the Msg1s in memory, bounded in bytes;
- ``state``: a rolling group's state in Redis (checkpoint and journal): load, replay, flush;
- ``consumer``: the Celery consumer's group queues and event loop;
- ``naps``: on the Redis broker, idle group queues nap (not consumed) until a request rings.
"""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery

from ..answers import Answerer
from ..device import DeviceRegistry
from ..dispatch import Dispatcher
from ..placement import Placer
from ..planning import Planner
from ..runtime import Runtime
from .cache import Msg1Cache
from .consumer import GroupQueues
from .hosted import Hosted, HostedTable
from .lifecycle import Host
from .naps import NapRegistry
from .runner import Runner
from .state import GroupState

__all__ = ["GroupQueues", "GroupState", "Host", "Hosted", "HostedTable", "Msg1Cache", "Runner", "build_host"]


def build_host(app: Celery, hostname: str, runtime: Runtime, planner: Planner, placer: Placer,
               devices: DeviceRegistry, answer: Answerer, dispatcher: Dispatcher, cache_bytes: int,
               default_timeout: float, reserved_groups: Callable[[], set[str]] = set) -> Host:
    """Wire a Host from the process's runtime."""
    settings = runtime.settings
    table = HostedTable()
    state = GroupState(runtime.registry, runtime.store, planner, settings.max_message_bytes)
    cache = Msg1Cache(table, runtime.store, runtime.metrics, cache_bytes, load=state.load)
    queues = GroupQueues(app, nudge_queue=f"{settings.queue_prefix}:nudge:{hostname}")
    host = Host(answer.events, hostname, runtime.registry, runtime.store, placer, devices, runtime.metrics,
                table, cache, queues, default_timeout, dispatcher, reserved_groups, state=state,
                naps=NapRegistry(runtime.registry, hostname), nap_after=settings.nap_after,
                sweep_interval=settings.sweep_interval, gap=settings.outage_gap)
    host.attach(Runner(answer, runtime.registry, runtime.store, planner, table, cache, queues,
                       settings.queue_prefix, settings.max_message_bytes, host.restart, host.let_go,
                       dispatcher.settle, runtime.metrics, inline_bytes=settings.inline_bytes))
    return host
