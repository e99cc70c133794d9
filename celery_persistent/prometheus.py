"""Prometheus exposition of the plugin's counters and hosted groups.

prometheus-client (optional extra ``metrics``) renders the text format and
serves it; the values come from the same snapshot as ``celery persistent
status``, read from Redis at scrape time, so any process can expose them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .plugin import Persistent


def registry_for(persistent: Persistent) -> Any:
    """A prometheus_client registry whose collector reads the plugin at each scrape."""
    try:
        from prometheus_client import CollectorRegistry
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    except ImportError as exc:
        raise RuntimeError("Prometheus metrics need prometheus-client: "
                           "pip install 'celery-persistent[metrics]'") from exc

    class PersistentCollector:
        def collect(self) -> Iterator[Any]:
            from .monitor import snapshot

            snap = snapshot(persistent)
            for name, value in sorted(snap.counters.items()):
                family = CounterMetricFamily(f"celery_persistent_{name}", f"celery_persistent {name}")
                family.add_metric([], value)
                yield family
            groups = GaugeMetricFamily("celery_persistent_hosted_groups", "Hosted groups per persistent worker",
                                       labels=["worker"])
            per_worker: dict[str, int] = {}
            for row in snap.groups.values():
                per_worker[row["hostname"]] = per_worker.get(row["hostname"], 0) + 1
            for worker, count in sorted(per_worker.items()):
                groups.add_metric([worker], count)
            yield groups
            depth = GaugeMetricFamily("celery_persistent_queue_depth", "Messages waiting in a group queue",
                                      labels=["group"])
            executions = CounterMetricFamily("celery_persistent_group_executions",
                                             "Executions of a hosted group", labels=["group"])
            for row in snap.groups.values():
                if row.get("depth") is not None:
                    depth.add_metric([row["group"]], row["depth"])
                executions.add_metric([row["group"]], row["executions"])
            yield depth
            yield executions

    registry = CollectorRegistry()
    registry.register(PersistentCollector())  # type: ignore[arg-type]
    return registry


def exposition(persistent: Persistent) -> str:
    from prometheus_client import generate_latest

    return str(generate_latest(registry_for(persistent)).decode("utf-8"))


def serve(persistent: Persistent, port: int, address: str = "127.0.0.1") -> None:
    from prometheus_client import start_http_server

    start_http_server(port, addr=address, registry=registry_for(persistent))
