"""Prometheus exposition of the plugin: counters, histograms and gauges, read from Redis at scrape time.

Executions run in worker processes and the exporter is another process:
everything comes from the registry (``metrics.py``'s hash, the groups in
flight of ``groupview.py``, the persistent workers' heartbeats), so any
process of the app can serve it (``celery persistent metrics --port 9808``).

No series has a ``group`` label unless ``persistent_metrics_per_group`` (or
``--per-group``) asks for it: group names are unbounded, and a label per
group would make Prometheus keep a series per group ever seen.  Labels are
bounded: ``mode`` (ordinary, hosted) and ``worker`` (persistent workers).

When Redis cannot be read the scrape still succeeds (HTTP 200) with
``celery_persistent_up 0`` and nothing else, so an alert fires on ``up``
rather than on a failed scrape.  prometheus-client (the ``metrics`` extra)
renders and serves the text format.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from .groupview import GroupRow, GroupView
from .metrics import COUNTERS, EXECUTION, QUEUE_WAIT, Mode, counters_of, histograms_of
from .queues import queue_depths

if TYPE_CHECKING:
    from .plugin import Persistent

logger = logging.getLogger(__name__)

PREFIX = "celery_persistent_"

COUNTER_HELP = {
    "executions": "Executions of a device key that ran to an end (ordinary leaders and hosted requests, "
                  "failed ones included).",
    "coalesced": "Requests that did not run: they waited on an identical request in flight and got its answer.",
    "queued": "Requests queued behind a running request of their group (another Msg2), to run after it.",
    "placements": "Groups adopted by a persistent worker (placed, moved, recovered or restarted there).",
    "recoveries": "Expired leases the reaper acted on: requests published again, answered LeaderDied, "
                  "or groups moved off a dead persistent worker.",
    "evictions": "Msg1s dropped from a persistent worker's in-memory cache to stay under its byte bound.",
}

HISTOGRAM_HELP = {
    EXECUTION.name: ("execution_seconds", "Seconds a request's execution took on its worker "
                     "(the device from Msg2 in to Msg3 out; hosted: with loading Msg1 on a cache miss)."),
    QUEUE_WAIT.name: ("queue_wait_seconds", "Seconds from a request's send (apply_async) to the start of its "
                      "execution: broker queue, waiting behind its group, recovery (client and worker clocks)."),
}

MODES = (Mode.ORDINARY.value, Mode.HOSTED.value)
ROW_MODES = {"leader": Mode.ORDINARY.value, "hosted": Mode.HOSTED.value}
"""GroupRow.mode -> the ``mode`` label; "moved" rows (a rolling group's old name) are no group of their own."""


@dataclass(frozen=True)
class Reading:
    """Everything one scrape reads from Redis (and, per group, from the broker)."""

    fields: dict[str, str]  # the metrics hash: counters and histograms
    rows: list[GroupRow]  # every group in flight
    parked: int
    workers: list[dict[str, Any]]  # live persistent workers and their last heartbeat
    executions: dict[str, int] = field(default_factory=dict)  # per group: hosted groups' executions
    depths: dict[str, int | None] = field(default_factory=dict)  # per group: messages in its group queue


def read(persistent: Persistent, per_group: bool) -> Reading:
    """One scrape's reads: a few pipelined round trips, and one broker call per hosted group with ``per_group``."""
    view = GroupView(persistent.registry)
    reading = Reading(
        fields=persistent.metrics.read_all(),
        rows=view.rows(),
        parked=parked_groups(view),
        workers=persistent.registry.worker_info(),
    )
    if per_group:
        hosted = persistent.registry.hosted_groups()
        found = _depths(persistent, [row.queue for row in hosted if row.queue])
        reading.executions.update({row.group: row.executions for row in hosted})
        reading.depths.update({row.group: found.get(row.queue) for row in hosted})
    return reading


def parked_groups(view: GroupView) -> int:
    """Rolling groups kept with their checkpoint while no persistent worker runs them (none exist yet)."""
    return len(view.parked())


def _depths(persistent: Persistent, queues: Sequence[str]) -> dict[str, int | None]:
    try:
        return queue_depths(persistent.app, queues)
    except Exception:  # the broker is not the registry: its outage leaves the depths out, not the scrape
        logger.warning("could not read the group queues' depths", exc_info=True)
        return {}


def families(reading: Reading, per_group: bool) -> Iterator[Metric]:
    """The series of one reading (``celery_persistent_up`` aside)."""
    yield from _counters(reading.fields)
    yield from _histograms(reading.fields)
    yield from _groups(reading)
    yield from _workers(reading.workers)
    if per_group:
        yield from _per_group(reading)


def _counters(fields: Mapping[str, str]) -> Iterator[Metric]:
    values = counters_of(fields)
    for name in COUNTERS:
        family = CounterMetricFamily(PREFIX + name, COUNTER_HELP[name])
        family.add_metric([], values.get(name, 0))
        yield family


def _histograms(fields: Mapping[str, str]) -> Iterator[Metric]:
    readings = histograms_of(fields)
    for histogram in (EXECUTION, QUEUE_WAIT):
        name, text = HISTOGRAM_HELP[histogram.name]
        family = HistogramMetricFamily(PREFIX + name, text, labels=["mode"])
        for mode in MODES:
            found = readings[(histogram.name, mode)]
            family.add_metric([mode], found.buckets, found.sum)
        yield family


def _gauge(name: str, text: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, text, labels=list(labels))


def _groups(reading: Reading) -> Iterator[Metric]:
    groups: Counter[str] = Counter()
    waiters: Counter[str] = Counter()
    queued: Counter[str] = Counter()
    per_worker: Counter[str] = Counter()
    for row in reading.rows:
        mode = ROW_MODES.get(row.mode)
        if mode is None:
            continue
        groups[mode] += 1
        waiters[mode] += row.waiters
        queued[mode] += row.queued
        if mode == Mode.HOSTED.value:
            per_worker[row.host] += 1
    inflight = _gauge("inflight_groups", "Groups in flight: ordinary groups with a leader registered (queued, "
                      "published, running), hosted groups on a persistent worker.", ["mode"])
    waiting = _gauge("waiters", "Callers coalesced onto a request in flight, waiting for its answer.", ["mode"])
    behind = _gauge("queued_requests", "Requests registered and not started: ordinary, queued behind their "
                    "group's leader; hosted, accepted by the group's worker and not running yet.", ["mode"])
    for mode in MODES:
        inflight.add_metric([mode], groups[mode])
        waiting.add_metric([mode], waiters[mode])
        behind.add_metric([mode], queued[mode])
    yield from (inflight, waiting, behind)
    hosted = _gauge("hosted_groups", "Groups hosted by each persistent worker.", ["worker"])
    for info in reading.workers:
        per_worker.setdefault(info["hostname"], 0)
    for worker, count in sorted(per_worker.items()):
        hosted.add_metric([worker], count)
    yield hosted
    parked = _gauge("parked_groups", "Rolling groups kept with their checkpoint while no persistent worker runs "
                    "them (until the next persistent worker takes them up).")
    parked.add_metric([], reading.parked)
    yield parked


def _workers(workers: Sequence[Mapping[str, Any]]) -> Iterator[Metric]:
    live = _gauge("workers", "Live persistent workers (heartbeat current).")
    live.add_metric([], len(workers))
    draining = _gauge("draining_workers", "Live persistent workers draining: they take no new groups.")
    draining.add_metric([], sum(1 for info in workers if info.get("draining")))
    cache = _gauge("cache_bytes", "Bytes of Msg1 held in each persistent worker's memory cache.", ["worker"])
    bound = _gauge("cache_limit_bytes", "The byte bound of each persistent worker's Msg1 cache.", ["worker"])
    for info in workers:
        cache.add_metric([info["hostname"]], info.get("cache_bytes", 0))
        bound.add_metric([info["hostname"]], info.get("max_cache_bytes", 0))
    yield from (live, draining, cache, bound)


def _per_group(reading: Reading) -> Iterator[Metric]:
    """Opt-in series with a ``group`` label (small deployments only)."""
    waiters = _gauge("group_waiters", "Callers coalesced onto the group's request in flight.", ["group"])
    queued = _gauge("group_queued_requests", "The group's requests registered and not started.", ["group"])
    for row in reading.rows:
        if row.mode in ROW_MODES:
            waiters.add_metric([row.group], row.waiters)
            queued.add_metric([row.group], row.queued)
    executions = CounterMetricFamily(PREFIX + "group_executions", "Executions of a hosted group on its "
                                     "persistent workers.", labels=["group"])
    depth = _gauge("group_queue_depth", "Messages waiting in a hosted group's queue on the broker.", ["group"])
    for group, count in sorted(reading.executions.items()):
        executions.add_metric([group], count)
        messages = reading.depths.get(group)
        if messages is not None:  # unknown when the broker could not be read
            depth.add_metric([group], messages)
    yield from (waiters, queued, executions, depth)


def _up(value: int) -> GaugeMetricFamily:
    up = _gauge("up", "1 if the exporter read the registry (Redis) at this scrape, 0 if it could not.")
    up.add_metric([], value)
    return up


class PersistentCollector:
    """Reads the registry at each scrape (``collect``); Redis down gives ``celery_persistent_up 0``."""

    def __init__(self, persistent: Persistent, per_group: bool) -> None:
        self.persistent = persistent
        self.per_group = per_group

    def collect(self) -> Iterator[Metric]:
        try:
            reading = read(self.persistent, self.per_group)
        except Exception as exc:  # Redis down or unreadable: still a scrape, that says so
            logger.warning("cannot read the registry for the metrics: %s: %s", type(exc).__name__, exc)
            yield _up(0)
            return
        yield _up(1)
        yield from families(reading, self.per_group)

    def describe(self) -> list[Metric]:
        """Nothing at registration: describing would read Redis (prometheus-client's auto-describe)."""
        return []


def registry_for(persistent: Persistent, per_group: bool | None = None) -> CollectorRegistry:
    """A prometheus-client registry with one collector; ``per_group`` defaults to the setting."""
    chosen = persistent.settings.metrics_per_group if per_group is None else per_group
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PersistentCollector(persistent, chosen))
    return registry


def exposition(persistent: Persistent, per_group: bool | None = None) -> str:
    """The text format, once."""
    return generate_latest(registry_for(persistent, per_group)).decode("utf-8")


def serve(persistent: Persistent, port: int, address: str | None = None, per_group: bool | None = None) -> Any:
    """Serve /metrics on ``address:port`` (``persistent_metrics_address`` by default) from a daemon thread.

    Returns prometheus-client's server (``.server_port``; ``.shutdown()`` stops it).
    """
    bind = persistent.settings.metrics_address if address is None else address
    server, _thread = start_http_server(port, addr=bind, registry=registry_for(persistent, per_group))
    return server
