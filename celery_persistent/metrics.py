"""Cluster-wide counters and histograms, kept in one Redis hash.

Executions run in worker processes, and the Prometheus exporter
(``celery persistent metrics``) is another process that reads Redis when it
is scraped.  So every number lives in the hash ``<prefix>:metrics``:

- counters, one field each (``executions``, ``coalesced``, ...), written by
  the Lua scripts and by ``Metrics.incr``;
- histograms, as fields ``h:<histogram>:<mode>:<bucket index>`` (observations
  in that bucket, not cumulative; their total is the count) and ``...:sum``,
  written by ``Metrics.observe`` (``observe.lua``, sent without waiting for
  the reply) once per execution (a leader's by finish.lua, with its group's
  release: ``observation``).

The bucket bounds are fixed here: every process writes the same buckets.
Recording never fails a request: a Redis error is logged and dropped.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

import redis

logger = logging.getLogger(__name__)

T = TypeVar("T")

COUNTERS = ("executions", "coalesced", "queued", "placements", "recoveries", "evictions")

HISTOGRAM_PREFIX = "h:"
"""Hash fields of histograms start with this; counters never do."""


class Mode(str, Enum):
    """Which kind of execution an observation is about (the ``mode`` label)."""

    ORDINARY = "ordinary"  # a leader on an ordinary worker (or a request with no group)
    HOSTED = "hosted"  # a request of a group hosted by a persistent worker


@dataclass(frozen=True)
class Histogram:
    """A histogram's name in the hash and its fixed upper bounds (seconds), +Inf implied."""

    name: str
    bounds: tuple[float, ...]

    def bucket(self, value: float) -> int:
        """Index of the first bound >= value (``len(bounds)``: the +Inf bucket)."""
        return bisect_left(self.bounds, value)

    def field(self, mode: str, part: str | int) -> str:
        return f"{HISTOGRAM_PREFIX}{self.name}:{mode}:{part}"


EXECUTION = Histogram("execution", (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                                    300.0))
"""Seconds a device spent on one request (Msg2 in, Msg3 out)."""

QUEUE_WAIT = Histogram("wait", (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                                1800.0))
"""Seconds from a request's send (``apply_async``) to the start of its execution."""

HISTOGRAMS = (EXECUTION, QUEUE_WAIT)


@dataclass(frozen=True)
class HistogramReading:
    """One histogram of one mode, as Prometheus wants it: cumulative buckets, sum, count."""

    buckets: list[tuple[str, float]]  # (upper bound as text, cumulative count), +Inf last
    sum: float
    count: float


def waited(sent: Any, started: float) -> float | None:
    """Seconds from ``sent`` (a Unix time from a message header) to ``started``; None if unknown.

    Clocks of the client and the worker may differ: a negative wait counts as 0.
    """
    if isinstance(sent, bool) or not isinstance(sent, (int, float, str)):
        return None
    try:
        value = float(sent)
    except ValueError:
        return None
    if value != value or value <= 0:  # NaN, or not a time at all
        return None
    return max(0.0, started - value)


Send = Callable[[Sequence[tuple[str, int | float]]], None]
"""Writes hash fields and amounts without waiting for the reply (``Registry.observe_unawaited``)."""


class Metrics:
    def __init__(self, client: redis.Redis, key: str, send: Send | None = None) -> None:
        self._client = client
        self._key = key
        self._send = send

    def incr(self, name: str, amount: int = 1) -> None:
        try:
            self._client.hincrby(self._key, name, amount)
        except redis.RedisError:
            # Counting must never fail a request.
            logger.warning("could not count %s", name, exc_info=True)

    def observe(self, mode: Mode, seconds: float, wait: float | None = None, count: str | None = None) -> None:
        """Record one execution (and its queue wait, and a counter): sent without waiting when ``send`` is
        given, else in one pipelined round trip."""
        fields = observation(mode, seconds, wait)
        if count is not None:
            fields.append((count, 1))
        if self._send is not None:
            try:
                self._send(fields)
            except redis.RedisError:
                logger.warning("could not record an execution's timings", exc_info=True)
            return
        pipe = self._client.pipeline(transaction=False)
        for field, amount in fields:
            if isinstance(amount, float):
                pipe.hincrbyfloat(self._key, field, amount)
            else:
                pipe.hincrby(self._key, field, amount)
        try:
            pipe.execute()
        except redis.RedisError:
            logger.warning("could not record an execution's timings", exc_info=True)

    def timed(self, mode: Mode, sent: Any, run: Callable[[], T], count: str | None = None) -> T:
        """``run()``, observed: its duration, and its queue wait if ``sent`` is known (even if it raises)."""
        wait = waited(sent, time.time())
        started = time.perf_counter()
        try:
            return run()
        finally:
            self.observe(mode, time.perf_counter() - started, wait, count)

    def read(self) -> dict[str, int]:
        """The counters (``status --json``, the exporter)."""
        return counters_of(self.read_all())

    def read_all(self) -> dict[str, str]:
        """Every field of the hash, counters and histograms, in one read."""
        raw = self._client.hgetall(self._key)
        return {_text(k): _text(v) for k, v in raw.items()}


def observation(mode: Mode, seconds: float, wait: float | None = None) -> list[tuple[str, int | float]]:
    """The hash fields one execution adds to (bucket counts as int, sums as float).

    ``Metrics.observe`` writes them in a pipeline; a leader's are written by
    finish.lua instead, with the group's release (one round trip fewer).
    """
    out: list[tuple[str, int | float]] = []
    for histogram, value in ((EXECUTION, seconds), (QUEUE_WAIT, wait)):
        if value is not None:
            out.append((histogram.field(mode.value, histogram.bucket(value)), 1))
            out.append((histogram.field(mode.value, "sum"), float(value)))
    return out


def sent_of(request: Any) -> Any:
    """The ``sent`` time in a Celery request's ``persistent_request`` header (None if absent)."""
    from .dispatch import HEADER  # the header's owner; imported here, metrics sits below dispatch

    if request is None:
        return None
    header = (getattr(request, "headers", None) or {}).get(HEADER) or getattr(request, HEADER, None)
    return header.get("sent") if isinstance(header, Mapping) else None


def timed(metrics: Metrics | None, mode: Mode, sent: Any, run: Callable[[], T], count: str | None = None) -> T:
    """``metrics.timed``, or just ``run()`` for a component built without metrics."""
    return run() if metrics is None else metrics.timed(mode, sent, run, count)


def counters_of(fields: Mapping[str, str]) -> dict[str, int]:
    values = {name: int(value) for name, value in fields.items() if not name.startswith(HISTOGRAM_PREFIX)}
    return {name: values.get(name, 0) for name in COUNTERS} | values


def histograms_of(fields: Mapping[str, str]) -> dict[tuple[str, str], HistogramReading]:
    """(histogram name, mode) -> reading, for every mode of every histogram (zeros when unobserved)."""
    out = {}
    for histogram in HISTOGRAMS:
        for mode in Mode:
            running = 0.0
            buckets = []
            for index, bound in enumerate((*histogram.bounds, float("inf"))):
                running += float(fields.get(histogram.field(mode.value, index), 0))
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            out[(histogram.name, mode.value)] = HistogramReading(
                buckets=buckets,
                sum=float(fields.get(histogram.field(mode.value, "sum"), 0)),
                count=running,
            )
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
