"""The persistent worker's inbox: typed commands, written as ``kind:argument``.

Placement, stop and drain reach a persistent worker through a Redis list
rather than remote control, because a solo worker cannot answer while it
executes.  Every entry names its kind; ``:`` is outside the group-name
alphabet (``grouping.SAFE_NAME``), so a command can never be read as a group.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .errors import PersistentError


class CommandKind(str, Enum):
    PLACE = "place"  # adopt the group placed on this worker
    STOP = "stop"  # let the group go once its accepted requests are done
    DRAIN = "drain"  # hand every group to other workers, take no new ones


@dataclass(frozen=True)
class Command:
    kind: CommandKind
    group: str = ""

    def encode(self) -> str:
        return f"{self.kind.value}:{self.group}"

    @classmethod
    def decode(cls, raw: str) -> Command:
        kind, sep, group = raw.partition(":")
        known = {k.value for k in CommandKind}
        if not sep or kind not in known:
            raise PersistentError(f"unknown inbox command {raw!r}")
        return cls(CommandKind(kind), group)


def place(group: str) -> Command:
    return Command(CommandKind.PLACE, group)


def stop(group: str) -> Command:
    return Command(CommandKind.STOP, group)


DRAIN = Command(CommandKind.DRAIN)
