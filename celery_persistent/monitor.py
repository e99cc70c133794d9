"""The seed's sitrep: hosted groups, persistent workers and counters, live.

One snapshot reads the registry (``groups()``, ``workers()``), the counters
and each group queue's depth on the broker.  ``render`` turns a snapshot into
the status table; ``diff`` turns two snapshots into lines saying what
changed.  ``celery persistent status`` / ``monitor`` and
``Persistent.start_monitor`` all print through these two functions.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from .queues import queue_depths

if TYPE_CHECKING:
    from .plugin import Persistent

GROUP_COLUMNS = ("group", "worker", "queue", "depth", "msg1", "executions", "idle", "mode", "state")
WORKER_COLUMNS = ("worker", "groups", "executions", "cache", "draining")
WATCHED = ("hostname", "state", "executions", "depth", "static")
"""Group fields whose change ``diff`` reports (idle only when it matters, see ``_idle_note``)."""


@dataclass(frozen=True)
class Snapshot:
    """What the plugin looks like at one moment."""

    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    taken: float = field(default_factory=time.time)

    def as_json(self) -> dict[str, Any]:
        return {
            "groups": list(self.groups.values()),
            "workers": list(self.workers.values()),
            "counters": dict(self.counters),
            "taken": self.taken,
        }


def snapshot(persistent: Persistent, group: str | None = None, depths: bool = True) -> Snapshot:
    """Read the plugin's state: every hosted group (or just ``group``), workers, counters."""
    rows = [dict(row) for row in persistent.groups() if group is None or row["group"] == group]
    found = queue_depths(persistent.app, [row["queue"] for row in rows if row["queue"]]) if depths else {}
    for row in rows:
        row["depth"] = found.get(row["queue"])
    return Snapshot(
        groups={row["group"]: row for row in sorted(rows, key=lambda r: r["group"])},
        workers={info["hostname"]: info for info in sorted(persistent.workers(), key=lambda i: i["hostname"])},
        counters=persistent.metrics.read(),
    )


# -- rendering ----------------------------------------------------------------


def render(snap: Snapshot) -> list[str]:
    """The full sitrep: a table of groups, one of workers, and the counters."""
    lines = _table(GROUP_COLUMNS, [_group_cells(row) for row in snap.groups.values()]) or ["no hosted groups"]
    lines.append("")
    lines += _table(WORKER_COLUMNS, [_worker_cells(info) for info in snap.workers.values()]) or [
        "no live persistent workers"
    ]
    lines.append("")
    lines.append("counters: " + "  ".join(f"{name} {value}" for name, value in snap.counters.items()))
    return lines


def diff(old: Snapshot, new: Snapshot) -> list[str]:
    """What changed from ``old`` to ``new``: groups and workers added, removed or changed, counter deltas."""
    lines = [f"+ group {row['group']} on {row['hostname']} ({_describe(row)})"
             for name, row in new.groups.items() if name not in old.groups]
    lines += [f"- group {row['group']} (was on {row['hostname']}, {row['executions']} executions)"
              for name, row in old.groups.items() if name not in new.groups]
    lines += [line for name, row in new.groups.items() if name in old.groups
              for line in _group_change(old.groups[name], row)]
    lines += [f"+ worker {name}" for name in new.workers if name not in old.workers]
    lines += [f"- worker {name}" for name in old.workers if name not in new.workers]
    lines += [line for name, info in new.workers.items() if name in old.workers
              for line in _worker_change(old.workers[name], info)]
    deltas = [f"{name} {value - old.counters.get(name, 0):+d}" for name, value in new.counters.items()
              if value != old.counters.get(name, 0)]
    if deltas:
        lines.append("counters: " + ", ".join(deltas))
    return lines


def _group_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    changes = [f"{key} {_show(key, old.get(key))} -> {_show(key, new.get(key))}"
               for key in WATCHED if old.get(key) != new.get(key)]
    if changes:
        changes.append(f"idle {_seconds(new.get('idle'))}")
    elif note := _idle_note(old, new):
        changes.append(note)
    return [f"~ group {new['group']}: " + ", ".join(changes)] if changes else []


def _idle_note(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """Idle grows every second: report it only when it passes half the timeout, or restarts."""
    before, now, timeout = old.get("idle") or 0.0, new.get("idle") or 0.0, new.get("timeout") or 0.0
    if timeout and before < timeout / 2 <= now:
        return f"idle {_seconds(now)} of {_seconds(timeout)}"
    if now + 0.5 < before:
        return f"idle {_seconds(before)} -> {_seconds(now)}"
    return ""


def _worker_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    changes = [f"{key} {old.get(key, 0)} -> {new.get(key, 0)}" for key in ("groups", "draining")
               if old.get(key, 0) != new.get(key, 0)]
    return [f"~ worker {new['hostname']}: " + ", ".join(changes)] if changes else []


def _describe(row: Mapping[str, Any]) -> str:
    return (f"queue {row['queue']}, depth {_show('depth', row.get('depth'))}, "
            f"{'static' if row['static'] else 'rolling'}, Msg1 {_bytes(row.get('msg1_bytes'))}")


def _group_cells(row: Mapping[str, Any]) -> list[str]:
    return [row["group"], row["hostname"], row["queue"], _show("depth", row.get("depth")),
            _bytes(row.get("msg1_bytes")), str(row["executions"]), _seconds(row.get("idle")),
            "static" if row["static"] else "rolling", row.get("state") or "-"]


def _worker_cells(info: Mapping[str, Any]) -> list[str]:
    return [info["hostname"], str(info.get("groups", 0)), str(info.get("executions", 0)),
            f"{_bytes(info.get('cache_bytes'))} / {_bytes(info.get('max_cache_bytes'))}",
            "yes" if info.get("draining") else "no"]


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    if not rows:
        return []
    header = [c.upper() for c in columns]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=False)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in (header, *rows)]


def _show(key: str, value: Any) -> str:
    if key == "depth":
        return "-" if value is None else str(value)
    if key == "static":
        return "static" if value else "rolling"
    return str(value)


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f}s"


def _bytes(value: Any) -> str:
    size = float(value or 0)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


# -- the live monitor ----------------------------------------------------------


class Monitor:
    """Prints the sitrep every ``interval`` seconds: in full first, then only what changed.

    ``run`` loops in the calling thread (the CLI); ``start`` runs it in a
    daemon thread and ``stop`` ends and joins it.
    """

    def __init__(self, persistent: Persistent, group: str | None = None, interval: float = 1.0,
                 stream: IO[str] | None = None) -> None:
        self.persistent = persistent
        self.group = group
        self.interval = interval
        self.stream = stream
        self.last: Snapshot | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> list[str]:
        """Take a snapshot; the lines to print for it (the full sitrep the first time)."""
        try:
            snap = snapshot(self.persistent, self.group)
        except Exception as exc:  # a monitor outlives a broker or Redis hiccup
            return [f"monitor: cannot read the plugin's state: {type(exc).__name__}: {exc}"]
        previous, self.last = self.last, snap
        if previous is None:
            return render(snap)
        stamp = time.strftime("%H:%M:%S", time.localtime(snap.taken))
        return [f"{stamp} {line}" for line in diff(previous, snap)]

    def run(self, count: int | None = None) -> None:
        """Refresh until ``stop()`` (or ``count`` refreshes), printing each time."""
        done = 0
        while not self._stopped.is_set():
            self._write(self.poll())
            done += 1
            if count is not None and done >= count:
                return
            self._stopped.wait(self.interval)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Monitor:
        if self._thread is None or not self._thread.is_alive():
            self._stopped.clear()
            self._thread = threading.Thread(target=self.run, name="persistent-monitor", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stopped.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout if timeout is not None else self.interval + 10)

    def _write(self, lines: list[str]) -> None:
        if not lines:
            return
        stream = self.stream if self.stream is not None else sys.stderr
        stream.write("\n".join(lines) + "\n")
        flush = getattr(stream, "flush", None)
        if flush is not None:
            flush()
