"""The six scenarios; each measures ours against its baseline in the same run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench.stats import Row

T = TypeVar("T")

SCENARIOS = ("large_message", "overhead", "coalescing", "groups", "registry", "rolling")
"""Module names under bench.scenarios, in the order they run and are numbered."""


@dataclass
class Context:
    """What a scenario needs from the runner."""

    quick: bool
    logdir: Path
    prefix: str

    def pick(self, quick: T, full: T) -> T:
        return quick if self.quick else full


@dataclass
class Result:
    """A scenario's rows for the table, its raw data (plots, JSON) and notes."""

    name: str
    title: str
    setup: str
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    loadavg: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "setup": self.setup, "seconds": self.seconds,
                "loadavg": self.loadavg, "rows": [r.as_dict() for r in self.rows], "data": self.data,
                "notes": self.notes}
