"""The measured row of one scenario run, the target it is held to, and the sum over runs."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from chaos.settings import ANSWER_BOUND


@dataclass
class RunResult:
    scenario: str
    run: int
    skipped: str = ""  # why the scenario could not run here
    failed: str = ""  # the harness itself failed (not a measurement)
    fault: str = ""
    sent: int = 0
    answered: int = 0
    typed: dict[str, int] = field(default_factory=dict)
    untyped: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    executed_twice: int = 0
    run_after_error: int = 0
    answered_twice: int = 0
    overlaps: int = 0
    frozen_overlaps: int = 0
    updates_lost: int = 0
    applied_twice: int = 0
    recovery: float | None = None  # seconds from the fault's end to the last answer
    late: int = 0  # answered, but later than ANSWER_BOUND after the fault's end
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # other ways the run missed the target
    misses: list[str] = field(default_factory=list)
    seconds: float = 0.0
    seed: int = 0  # of the run's random choices (victim, moment)
    workdir: str = ""  # logs, ledger, calls.jsonl
    fault_window: tuple[float, float] = (0.0, 0.0)  # epoch seconds

    def judge(self) -> RunResult:
        """Fill ``misses``: each way this run falls short of the target."""
        checks = [
            (self.lost, "lost callers"),
            (self.executed_twice, "requests executed twice"),
            (self.run_after_error, "requests executed after their caller got an error"),
            (self.answered_twice, "callers answered twice"),
            (self.overlaps, "overlapping executions"),
            (self.updates_lost, "answered updates not applied"),
            (self.applied_twice, "updates applied twice"),
            (self.late, f"callers answered later than {ANSWER_BOUND:g}s after the fault's end"),
        ]
        self.misses = [f"{n} {what}" for n, what in checks if n] + self.problems
        return self

    @property
    def met(self) -> bool:
        return not (self.skipped or self.failed or self.misses)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        return cls(**data)


@dataclass
class Summary:
    """All runs of one scenario."""

    scenario: str
    runs: list[RunResult]

    def total(self, name: str) -> int:
        return sum(int(getattr(r, name)) for r in self.measured)

    def classes(self, name: str) -> Counter[str]:
        out: Counter[str] = Counter()
        for r in self.measured:
            out.update(getattr(r, name))
        return out

    @property
    def measured(self) -> list[RunResult]:
        return [r for r in self.runs if not (r.skipped or r.failed)]

    @property
    def recovery(self) -> float | None:
        values = [r.recovery for r in self.measured if r.recovery is not None]
        return max(values) if values else None

    @property
    def met(self) -> bool:
        return bool(self.measured) and all(r.met for r in self.runs)
