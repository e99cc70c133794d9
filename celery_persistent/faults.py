"""Named crash points, for the chaos suite and the crash tests: a no-op unless asked for.

``CELERY_PERSISTENT_CRASH=after-finish`` makes a process die (``os._exit``,
as abruptly as SIGKILL) the first time it reaches ``point("after-finish")``;
several names may be given, separated by commas.  The points sit where a
death is the hardest to recover from: right after the device returns, and
between a registry step and the answers or publish that follow it.
"""

from __future__ import annotations

import os
import sys

ENV = "CELERY_PERSISTENT_CRASH"
EXIT_STATUS = 137  # what a shell reports for SIGKILL

_armed: set[str] | None = None


def _points() -> set[str]:
    global _armed
    if _armed is None:
        _armed = {name.strip() for name in os.environ.get(ENV, "").split(",") if name.strip()}
    return _armed


def point(name: str) -> None:
    """Die here if this point is armed in this process."""
    if name in _points():
        sys.stderr.write(f"celery_persistent: crash point {name} reached; exiting\n")
        sys.stderr.flush()
        os._exit(EXIT_STATUS)
