"""A written record of everything a run starts, so that nothing it started can outlive it.

A run tears its own things down (``try/finally``, ``atexit``).  If it is
killed before it can, the parent reads this ledger and ends exactly what is
still listed: a process group by its leader's pid (only if that pid still
runs the command we started, in case the pid was reused), a RabbitMQ node
by its name, a network namespace or link by its name.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any


def cmdline(pid: int) -> str:
    """The command line of ``pid`` ("" if it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def running(pid: int, mark: str) -> bool:
    """``pid`` is alive (not a zombie) and still runs a command containing ``mark``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return mark in cmdline(pid)


def kill_group(pid: int, mark: str, sig: int = signal.SIGKILL) -> bool:
    """Signal the process group led by ``pid`` if it is still ours; True if signalled."""
    if not running(pid, mark):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
        return True
    return False


class Ledger:
    """Append-only JSON lines: ``start`` entries and the ``release`` of each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def add(self, kind: str, **fields: Any) -> str:
        entry_id = uuid.uuid4().hex[:8]
        self._write({"op": "start", "id": entry_id, "kind": kind, **fields})
        return entry_id

    def release(self, entry_id: str) -> None:
        self._write({"op": "release", "id": entry_id})

    def _write(self, entry: dict[str, Any]) -> None:
        with self._lock, self.path.open("a") as out:
            out.write(json.dumps(entry) + "\n")
            out.flush()


def leftovers(path: Path) -> list[dict[str, Any]]:
    """Entries started and never released, newest first (so workers go before their servers)."""
    if not path.exists():
        return []
    started: dict[str, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("op") == "start":
                started[entry["id"]] = entry
            else:
                started.pop(entry.get("id", ""), None)
    return list(reversed(started.values()))


def clean_up(path: Path) -> list[str]:
    """End whatever a dead run left behind; returns what was done, for the log."""
    done = []
    for entry in leftovers(path):
        kind = entry["kind"]
        if kind == "rabbit":
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run([entry["ctl"], "-n", entry["node"], "stop"], env=entry["env"],
                               capture_output=True, timeout=30, check=False)
            done.append(f"stopped rabbit node {entry['node']}")
        if kind in ("process", "rabbit") and kill_group(int(entry["pid"]), entry["mark"]):
            done.append(f"killed process group {entry['pid']} ({entry['mark']})")
        if kind == "netns":
            subprocess.run(["ip", "netns", "del", entry["name"]], capture_output=True, check=False)
            done.append(f"deleted netns {entry['name']}")
        if kind == "link":
            subprocess.run(["ip", "link", "del", entry["name"]], capture_output=True, check=False)
        with contextlib.suppress(OSError), path.open("a") as out:
            out.write(json.dumps({"op": "release", "id": entry["id"]}) + "\n")
    return done
