"""The test app (tests.apps.basic) with opentelemetry-instrumentation-celery in its workers.

Used by tests/e2e/test_events_table.py as the worker app (``-A tests.apps.traced``).
When ``CP_SPANS_KEY`` is set, importing it instruments Celery in this
process (a worker's main process: the reaper fires signals there; a prefork
child inherits it) with a span exporter that pushes every finished span, as
JSON, to that Redis list, so that the test process reads the workers' spans
back.  Task and publish signals are recorded in ``<CP_SPANS_KEY>:signals``.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from typing import Any

import redis
from celery import signals
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from tests.apps.basic import BACKEND, app, persistent  # noqa: F401 - `celery -A tests.apps.traced` finds `app`

KEY = os.environ.get("CP_SPANS_KEY")


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as plain data: ids in hex, kind, attributes and links."""
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "attributes": dict(span.attributes or {}),
        "links": [{"trace_id": f"{link.context.trace_id:032x}", "span_id": f"{link.context.span_id:016x}"}
                  for link in span.links],
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


class RedisSpanExporter(SpanExporter):
    """Pushes finished spans to a Redis list (SimpleSpanProcessor: no thread, safe across a fork)."""

    def __init__(self, url: str, key: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.key = key

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.client.rpush(self.key, *[json.dumps(span_record(span), default=str) for span in spans])
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.client.close()


def record_signal(name: str, client: redis.Redis, key: str) -> Any:
    """A receiver that records which task signal fired for which task id, with the request it saw."""

    def receiver(sender: Any = None, **kwargs: Any) -> None:
        task = kwargs.get("task") or sender
        task_id = kwargs.get("task_id") or getattr(getattr(task, "request", None), "id", None)
        request = getattr(task, "request", None)
        client.rpush(key, json.dumps({
            "signal": name, "task_id": task_id,
            "hostname": getattr(request, "hostname", None),
            "coalesced": getattr(request, "coalesced", None),
            "coalesced_onto": getattr(request, "coalesced_onto", None),
        }))

    return receiver


def record_publish(name: str, client: redis.Redis, key: str) -> Any:
    """A receiver that records a publish signal, with the lineage headers it saw and where it fired."""

    def receiver(sender: Any = None, headers: Any = None, **kwargs: Any) -> None:
        headers = headers or {}
        client.rpush(key, json.dumps({
            "signal": name, "task_id": headers.get("id"), "pid": os.getpid(),
            "parent_id": headers.get("parent_id"), "root_id": headers.get("root_id"),
            "origin": headers.get("origin"), "routing_key": kwargs.get("routing_key"),
        }))

    return receiver


_receivers: list[Any] = []

if KEY:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RedisSpanExporter(BACKEND, KEY)))
    CeleryInstrumentor().instrument(tracer_provider=provider)
    _client = redis.Redis.from_url(BACKEND)
    for _name in ("task_prerun", "task_postrun", "task_success", "task_failure"):
        _receivers.append(record_signal(_name, _client, KEY + ":signals"))
        getattr(signals, _name).connect(_receivers[-1], weak=False)
    for _name in ("before_task_publish", "after_task_publish"):
        _receivers.append(record_publish(_name, _client, KEY + ":signals"))
        getattr(signals, _name).connect(_receivers[-1], weak=False)
    # Queued requests are published by a worker: its task-sent event is part of the table.
    app.conf.task_send_sent_event = True
