"""One caller's request and what became of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Call:
    task_id: str
    kind: str  # "serial" (ordinary group) or "tally" (rolling hosted group)
    group: str
    rid: str  # the request's own id, in Msg2: identical copies share it
    sent_at: float
    status: str = "pending"  # ok | error | lost
    done_at: float | None = None
    error: str = ""  # class name of the error
    typed: bool = False  # a celery_persistent error
    at_send: bool = False  # the send itself raised
    value: Any = field(default=None, repr=False)

    @property
    def final(self) -> bool:
        return self.status != "pending"
