"""The seed's sitrep: hosted groups, groups in flight, parked groups, persistent workers and counters, live.

One snapshot reads the registry (``groups()``, ``workers()``, the group view
of ``groupview.py``), the counters and each group queue's depth on the broker.  ``render`` turns a snapshot into
the status table; ``diff`` turns two snapshots into lines saying what
changed.  ``celery persistent status`` / ``monitor`` and
``Persistent.start_monitor`` all print through these two functions.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from .groupview import GroupDetail, GroupView
from .queues import queue_depths

if TYPE_CHECKING:
    from .plugin import Persistent

GROUP_COLUMNS = ("group", "worker", "queue", "depth", "msg1", "executions", "idle", "mode", "state")
WORKER_COLUMNS = ("worker", "groups", "executions", "cache", "draining")
INFLIGHT_COLUMNS = ("group", "leader", "state", "lease left", "lease age", "waiters", "queued")
PARKED_COLUMNS = ("group", "device", "checkpoint", "state")
INFLIGHT_WATCHED = ("leader", "state", "waiters", "queued")
"""In-flight group fields whose change ``diff`` reports (lease times change every second)."""
WATCHED = ("hostname", "state", "executions", "depth", "static")
"""Group fields whose change ``diff`` reports (idle only when it matters, see ``_idle_note``)."""


@dataclass(frozen=True)
class Snapshot:
    """What the plugin looks like at one moment."""

    groups: dict[str, dict[str, Any]] = field(default_factory=dict)  # hosted groups
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    taken: float = field(default_factory=time.time)
    inflight: dict[str, dict[str, Any]] = field(default_factory=dict)  # ordinary groups in flight (GroupRow)
    parked: dict[str, dict[str, Any]] = field(default_factory=dict)  # see groupview.PARKED_INDEX

    def as_json(self) -> dict[str, Any]:
        return {
            "groups": list(self.groups.values()),
            "inflight": list(self.inflight.values()),
            "parked": list(self.parked.values()),
            "workers": list(self.workers.values()),
            "counters": dict(self.counters),
            "taken": self.taken,
        }


def snapshot(persistent: Persistent, group: str | None = None, depths: bool = True) -> Snapshot:
    """Read the plugin's state: every group (or just ``group``) hosted, in flight or parked, workers, counters.

    A hosted group's row also says how many callers wait on its requests
    (``waiters``), how many accepted requests wait to run (``accepted``) and
    which one runs (``running``).
    """
    view = GroupView(persistent.registry)
    flying = {row.group: row for row in view.rows(group)}
    rows = [dict(row) for row in persistent.groups() if group is None or row["group"] == group]
    found = queue_depths(persistent.app, [row["queue"] for row in rows if row["queue"]]) if depths else {}
    for row in rows:
        row["depth"] = found.get(row["queue"])
        seen = flying.get(row["group"])
        row.update(waiters=seen.waiters if seen else 0, accepted=seen.queued if seen else 0,
                   running=seen.leader if seen else "")
    inflight = [row.as_dict() for row in flying.values() if row.mode not in ("hosted", "moved")]
    parked = [row for row in view.parked() if group is None or row["group"] == group]
    return Snapshot(
        groups={row["group"]: row for row in sorted(rows, key=lambda r: r["group"])},
        workers={info["hostname"]: info for info in sorted(persistent.workers(), key=lambda i: i["hostname"])},
        counters=persistent.metrics.read(),
        inflight={row["group"]: row for row in sorted(inflight, key=lambda r: r["group"])},
        parked={row["group"]: row for row in sorted(parked, key=lambda r: r["group"])},
    )


# -- rendering ----------------------------------------------------------------


def render(snap: Snapshot) -> list[str]:
    """The full sitrep: tables of hosted, in-flight and parked groups, one of workers, and the counters."""
    lines = _table(GROUP_COLUMNS, [_group_cells(row) for row in snap.groups.values()]) or ["no hosted groups"]
    lines.append("")
    lines += _table(INFLIGHT_COLUMNS, [_inflight_cells(row) for row in snap.inflight.values()]) or [
        "no ordinary groups in flight"
    ]
    lines.append("")
    lines += _table(PARKED_COLUMNS, [_parked_cells(row) for row in snap.parked.values()]) or ["no parked groups"]
    lines.append("")
    lines += _table(WORKER_COLUMNS, [_worker_cells(info) for info in snap.workers.values()]) or [
        "no live persistent workers"
    ]
    lines.append("")
    lines.append("counters: " + "  ".join(f"{name} {value}" for name, value in snap.counters.items()))
    return lines


def render_group(detail: GroupDetail) -> list[str]:
    """``inspect``: one group as the registry holds it, one line per part."""
    owner = detail.owner
    mode = owner.get("mode", "-")
    lines = [f"group {detail.group} ({mode}, {owner.get('state') or '-'})", f"owner token   {owner.get('token', '-')}"]
    if detail.leader:
        lines.append(f"leader        {detail.leader['id']} (key {detail.leader['key']}, task {detail.leader['task']})")
    if detail.lease:
        lease = detail.lease
        lines.append(f"lease         {_seconds(lease['remaining'])} left, set {_seconds(lease['age'])} ago "
                     f"(deadline {lease['deadline_ms']} ms on the Redis clock)")
    for key, request in detail.inflight.items():
        waiting = detail.waiters.get(key, [])
        lines.append(f"in flight     {request} (key {key}): {len(waiting)} waiting"
                     + (f": {', '.join(waiting)}" if waiting else ""))
    lines.append(f"queued        {len(detail.queued)}")
    lines += [f"  {r['id']} (key {r['key']})" for r in detail.queued]
    if detail.hosting:
        lines += _hosting_lines(detail.hosting, detail.accepted)
    if detail.checkpoint:
        cp = detail.checkpoint
        kept = f"stored, expires in {_seconds(cp['ttl'])}" if cp["stored"] else "NOT in the store"
        lines.append(f"checkpoint    {cp['ref']} ({cp['device']}, {_bytes(cp['bytes'])}, {kept})")
    if detail.moved_to:
        lines.append(f"moved to      {detail.moved_to}")
    counters = ", ".join(f"{name} {value}" for name, value in detail.counters.items())
    lines.append(f"counters      {counters or '-'}")
    lines.append(f"deliveries    {', '.join(detail.deliveries) or 'none pending'}")
    return lines


def _hosting_lines(hosting: Mapping[str, Any], accepted: Sequence[Mapping[str, Any]]) -> list[str]:
    live = "live" if hosting["worker_live"] else "NOT live"
    lines = [f"hosted on     {hosting['worker']} ({live}), queue {hosting['queue']}, "
             f"{'static' if hosting['static'] else 'rolling'}, idle {_seconds(hosting['idle'])}, "
             f"timeout {_seconds(hosting['timeout'] or None)}",
             f"accepted      {len(accepted)}"]
    lines += [f"  {r['id']} (key {r['key']}){' running' if r['running'] else ''}" for r in accepted]
    return lines


def diff(old: Snapshot, new: Snapshot) -> list[str]:
    """What changed from ``old`` to ``new``: groups and workers added, removed or changed, counter deltas."""
    lines = [f"+ group {row['group']} on {row['hostname']} ({_describe(row)})"
             for name, row in new.groups.items() if name not in old.groups]
    lines += [f"- group {row['group']} (was on {row['hostname']}, {row['executions']} executions)"
              for name, row in old.groups.items() if name not in new.groups]
    lines += [line for name, row in new.groups.items() if name in old.groups
              for line in _group_change(old.groups[name], row)]
    lines += _inflight_diff(old.inflight, new.inflight)
    lines += [f"+ parked {name}" for name in new.parked if name not in old.parked]
    lines += [f"- parked {name}" for name in old.parked if name not in new.parked]
    lines += [f"+ worker {name}" for name in new.workers if name not in old.workers]
    lines += [f"- worker {name}" for name in old.workers if name not in new.workers]
    lines += [line for name, info in new.workers.items() if name in old.workers
              for line in _worker_change(old.workers[name], info)]
    deltas = [f"{name} {value - old.counters.get(name, 0):+d}" for name, value in new.counters.items()
              if value != old.counters.get(name, 0)]
    if deltas:
        lines.append("counters: " + ", ".join(deltas))
    return lines


def _inflight_diff(old: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = [f"+ in flight {name}: leader {row['leader']} {row['state']}, {row['waiters']} waiting, "
             f"{row['queued']} queued" for name, row in new.items() if name not in old]
    lines += [f"- in flight {name} (done)" for name in old if name not in new]
    for name, row in new.items():
        before = old.get(name)
        changes = [f"{key} {before.get(key)} -> {row.get(key)}" for key in INFLIGHT_WATCHED
                   if before is not None and before.get(key) != row.get(key)]
        if changes:
            lines.append(f"~ in flight {name}: " + ", ".join(changes))
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


def _inflight_cells(row: Mapping[str, Any]) -> list[str]:
    return [row["group"], row["leader"] or "-", row["state"] or "-", _seconds(row.get("lease_remaining")),
            _seconds(row.get("lease_age")), str(row["waiters"]), str(row["queued"])]


def _parked_cells(row: Mapping[str, Any]) -> list[str]:
    return [row["group"], row.get("device") or "-", _bytes(row.get("bytes")), row.get("state") or "parked"]


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
    daemon thread and ``stop`` ends and joins it.  ``as_json``: one JSON
    object per refresh and line (the full snapshot, as ``status --json``),
    for tools that follow the stream.
    """

    def __init__(self, persistent: Persistent, group: str | None = None, interval: float = 1.0,
                 stream: IO[str] | None = None, as_json: bool = False) -> None:
        self.persistent = persistent
        self.group = group
        self.interval = interval
        self.stream = stream
        self.as_json = as_json
        self.last: Snapshot | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> list[str]:
        """Take a snapshot; the lines to print for it (the full sitrep the first time)."""
        try:
            snap = snapshot(self.persistent, self.group)
        except Exception as exc:  # a monitor outlives a broker or Redis hiccup
            error = f"cannot read the plugin's state: {type(exc).__name__}: {exc}"
            return [json.dumps({"error": error})] if self.as_json else [f"monitor: {error}"]
        if self.as_json:
            return [json.dumps(snap.as_json(), sort_keys=True, default=str)]
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
