"""An optional bridge to OpenTelemetry: requests keep their caller's trace.

The spans themselves are made by ``opentelemetry-instrumentation-celery``
from Celery's signals; this module only moves trace context to where those
signals fire.  It uses the OpenTelemetry API when it is installed, and does
nothing otherwise (the plugin does not depend on it).  See docs/events.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

try:  # pragma: no cover - which branch runs depends on the environment
    from opentelemetry import context as _context
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover
    _context = _propagate = _trace = None  # type: ignore[assignment]

ATTRIBUTE_PREFIX = "celery_persistent."


def available() -> bool:
    return _propagate is not None


def capture() -> dict[str, str] | None:
    """The current trace context as propagation headers (``traceparent``, ...).

    ``{}`` when there is no current span (a later publish starts a new trace),
    None without OpenTelemetry (a later publish leaves the context alone).
    """
    if _propagate is None:
        return None
    carrier: dict[str, str] = {}
    _propagate.inject(carrier)
    return carrier


@contextmanager
def restored(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Make ``carrier``'s trace context the current one (an empty carrier: no parent at all)."""
    if _context is None or _propagate is None or carrier is None:
        yield
        return
    token = _context.attach(_propagate.extract(dict(carrier), context=_context.Context()))
    try:
        yield
    finally:
        _context.detach(token)


def current_span() -> Any:
    """The span context of the current span, or None (no OpenTelemetry, or no valid span)."""
    if _trace is None:
        return None
    span_context = _trace.get_current_span().get_span_context()
    return span_context if span_context.is_valid else None


def annotate(attributes: Mapping[str, Any], link_to: Any = None) -> None:
    """Set ``celery_persistent.*`` attributes on the current span, and link it to ``link_to`` (a span context).

    Links are added after the span started (``Span.add_link``, OpenTelemetry
    SDK 1.23+): the instrumentation starts its spans without links we could pass.
    """
    if _trace is None:
        return
    span = _trace.get_current_span()
    if not span.is_recording():
        return
    for name, value in attributes.items():
        if value is not None:
            span.set_attribute(ATTRIBUTE_PREFIX + name, value)
    if link_to is not None and hasattr(span, "add_link"):
        span.add_link(link_to, {ATTRIBUTE_PREFIX + "link": "answered-by"})
