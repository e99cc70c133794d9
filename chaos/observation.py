"""What a scenario run saw: its calls, its fault, and the facts needed to judge them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chaos.calls import Call


@dataclass
class Observation:
    calls: list[Call]
    fault: str  # what was done, for the table
    fault_start: float
    fault_end: float
    serial_groups: list[str] = field(default_factory=list)
    tally_groups: list[str] = field(default_factory=list)
    final_states: dict[str, Any] = field(default_factory=dict)  # tally group -> state read at the end (or None)
    deaths: dict[int, float] = field(default_factory=dict)  # pid -> when it died (ends its open executions)
    frozen: dict[int, list[tuple[float, float]]] = field(default_factory=dict)  # pid -> SIGSTOP..SIGCONT windows
    answered_twice: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
