"""Summaries, interleaved rounds, noise, and the rows of the results table."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

TIMES = "\u00d7"  # the multiplication sign, for ratios in the report
MINUS = "\u2212"

NOISE_THRESHOLD = 0.10
"""Coefficient of variation of repeated runs above which a row is marked noisy."""


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (with fewer than 100 samples p99 is the maximum)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def cv(values: list[float]) -> float:
    """Coefficient of variation (stdev / mean); 0 with fewer than two values."""
    if len(values) < 2 or statistics.fmean(values) == 0:
        return 0.0
    return statistics.stdev(values) / statistics.fmean(values)


@dataclass
class Summary:
    """Samples of one measurement, taken in rounds (one list per round)."""

    rounds: list[list[float]]

    @property
    def samples(self) -> list[float]:
        return [x for r in self.rounds for x in r]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p99(self) -> float:
        return percentile(self.samples, 99)

    @property
    def round_medians(self) -> list[float]:
        return [statistics.median(r) for r in self.rounds if r]

    @property
    def noise(self) -> float:
        """Spread between repeated rounds: CV of the per-round medians."""
        return cv(self.round_medians)

    def as_dict(self) -> dict[str, Any]:
        return {"n": len(self.samples), "median": self.median, "p99": self.p99, "mean": statistics.fmean(self.samples),
                "min": min(self.samples), "max": max(self.samples), "round_medians": self.round_medians,
                "cv_rounds": self.noise}


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def schedule(counts: dict[str, int], rotation: int) -> list[str]:
    """Each name ``counts[name]`` times, spread evenly over one round (ABCABC..., not AAABBBCCC)."""
    names = list(counts)
    names = names[rotation % len(names):] + names[: rotation % len(names)]
    slots = [((i + 0.5) / counts[name], order, name) for order, name in enumerate(names) for i in range(counts[name])]
    return [name for _, _, name in sorted(slots)]


def interleave(variants: dict[str, tuple[Callable[[], Any], int]], rounds: int) -> dict[str, Summary]:
    """Run every variant ``iterations`` times per round, request by request, rotating the order each round.

    Interleaving in one run puts a variant and its baseline under the same
    load, so machine noise moves both instead of biasing the ratio; the
    per-round medians then show how much the load moved them (noise).
    """
    out = {name: Summary([]) for name in variants}
    for r in range(rounds):
        for summary in out.values():
            summary.rounds.append([])
        for name in schedule({name: n for name, (_, n) in variants.items()}, r):
            out[name].rounds[-1].append(timed(variants[name][0]))
    return out


@dataclass
class Row:
    """One line of the results table."""

    scenario: str
    measure: str
    ours: str
    baseline: str
    ratio: float | None
    ratio_text: str
    target: str = ""
    met: bool | None = None
    noise: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def noisy(self) -> bool:
        return self.noise is not None and self.noise > NOISE_THRESHOLD

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "noisy": self.noisy}


def ms(seconds: float) -> str:
    value = seconds * 1000
    return f"{value:.0f} ms" if value >= 100 else f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def p50_p99(summary: Summary) -> str:
    return f"{ms(summary.median)} / {ms(summary.p99)}"


def noise_of(*summaries: Summary) -> float:
    return max(s.noise for s in summaries)
