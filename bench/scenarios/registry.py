"""Scenario 5: the registry's cost, in Redis round trips and operations per second.

One operation is ``persistent.find_or_register(msg1, msg2)`` (a new group:
the Leader path) followed by ``persistent.unregister_notify(leader, msg2,
msg3)``.  Round trips are counted on the client's own connections (a
counting ``redis.Connection`` in the plugin's client and the result
backend's), so other clients of the same Redis server do not pollute the
count; commands are counted on the server with MONITOR, restricted to the
bench's database and to commands sent by clients (not those run inside Lua).
The baseline is a Redis PING: the cost of one round trip from the same client.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import threading
import time
import uuid
from collections.abc import Callable
from importlib import resources
from typing import Any

import redis

from bench.scenarios import Context, Result
from bench.stats import TIMES, Row, cv

MSG1 = {"device": "echo", "id": "registry"}
MSG3 = {"n": 0}


class Counts:
    """Round trips and commands sent by the thread being measured."""

    def __init__(self) -> None:
        self.thread: int | None = None
        self.round_trips = 0
        self.unawaited = 0  # steps written without waiting for their reply (Registry's Unawaited)
        self.commands = 0
        self.names: dict[str, int] = {}

    def mine(self) -> bool:
        return self.thread is not None and threading.get_ident() == self.thread

    def add(self, commands: list[tuple[Any, ...]], round_trip: bool, unawaited: bool = False) -> None:
        if not self.mine():
            return
        self.round_trips += round_trip and not unawaited
        self.unawaited += unawaited
        self.commands += len(commands)
        for args in commands:
            name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
            self.names[name.upper()] = self.names.get(name.upper(), 0) + 1


COUNTS = Counts()


class CountingConnection(redis.Connection):
    """A redis-py connection that counts what the measured thread sends."""

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        from bench.app import persistent

        COUNTS.add([args], round_trip=True, unawaited=self is persistent.registry._unawaited._connection)
        super().send_command(*args, **kwargs)

    def pack_commands(self, commands: Any) -> Any:
        commands = list(commands)
        COUNTS.add([tuple(c) for c in commands], round_trip=True)
        return super().pack_commands(commands)


def count_connections() -> None:
    """Make the plugin's and the result backend's clients open counting connections from now on."""
    from bench.app import app, persistent

    for pool in (persistent.redis.connection_pool, app.backend.client.connection_pool):
        pool.connection_class = CountingConnection
        pool.reset()
    persistent.registry._unawaited._discard()  # its next step takes a counting connection too


def _script_names() -> dict[str, str]:
    """SHA1 -> name of the plugin's Lua scripts (to name EVALSHA calls)."""
    package = resources.files("celery_persistent") / "lua"
    return {hashlib.sha1(f.read_bytes()).hexdigest(): f.name.removesuffix(".lua")
            for f in package.iterdir() if f.name.endswith(".lua")}


SCRIPTS = _script_names()


def _name(command: str) -> str:
    parts = command.split(" ", 2)
    name = parts[0].upper()
    if name == "EVALSHA" and len(parts) > 1:
        return f"EVALSHA {SCRIPTS.get(parts[1], parts[1][:8])}"
    if name == "EVAL":  # a step sent without waiting: every script starts with "-- <name>:"
        found = re.search(r"--\s*(\w+):", command)
        return f"EVAL {found.group(1) if found else '?'}"
    return name


class Monitor:
    """Commands the server receives for the bench's database from clients (MONITOR), between two markers."""

    def __init__(self) -> None:
        from bench.app import REDIS_URL

        self.client = redis.Redis.from_url(REDIS_URL)
        self.db = self.client.connection_pool.connection_kwargs.get("db", 0)
        self.marker = f"cpbench-monitor-{uuid.uuid4().hex}"
        self.commands: list[str] = []
        self.started = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def _listen(self) -> None:
        with self.client.monitor() as monitor:
            recording = False
            for line in monitor.listen():
                command = str(line.get("command", ""))
                if self.marker in command:
                    if recording:
                        return
                    recording = True
                    self.started.set()
                elif recording and line.get("client_type") != "lua" and int(line.get("db", -1)) == self.db:
                    self.commands.append(_name(command))

    def __enter__(self) -> Monitor:
        self._thread.start()
        while not self.started.is_set():
            self.client.echo(self.marker)
            self.started.wait(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.echo(self.marker)
        self._thread.join(10)


def leader_cycle(n: int) -> None:
    from bench.app import persistent

    msg2 = {"path": "run", "n": n}
    leader = persistent.find_or_register(MSG1, msg2)
    persistent.unregister_notify(leader, msg2, MSG3)


def waiter_cycle(n: int) -> None:
    """A leader, one coalesced waiter (answered through the result backend), release."""
    from bench.app import persistent

    msg2 = {"path": "run", "n": n}
    leader = persistent.find_or_register(MSG1, msg2)
    persistent.find_or_register(MSG1, msg2)
    persistent.unregister_notify(leader, msg2, MSG3)


def ping(_n: int) -> None:
    from bench.app import persistent

    persistent.redis.ping()


def per_op(op: Callable[[int], None], ids: Any, repeat: int = 50) -> dict[str, Any]:
    """Average round trips and commands of one call of ``op``, in this thread."""
    for _ in range(5):
        op(next(ids))  # scripts loaded, connections open
    COUNTS.round_trips = COUNTS.commands = COUNTS.unawaited = 0
    COUNTS.names = {}
    with Monitor() as monitor:
        COUNTS.thread = threading.get_ident()
        try:
            for _ in range(repeat):
                op(next(ids))
        finally:
            COUNTS.thread = None
    server: dict[str, float] = {}
    for name in monitor.commands:
        server[name] = server.get(name, 0) + 1 / repeat
    return {"round_trips": COUNTS.round_trips / repeat, "unawaited": COUNTS.unawaited / repeat,
            "client_commands": COUNTS.commands / repeat,
            "by_client_command": {k: v / repeat for k, v in sorted(COUNTS.names.items())},
            "commands": len(monitor.commands) / repeat, "by_command": dict(sorted(server.items()))}


def rate(op: Callable[[int], None], ids: Any, threads: int, seconds: float) -> float:
    """Operations per second of ``op`` from ``threads`` threads for ``seconds``."""
    done = [0] * threads
    stop = time.perf_counter() + seconds
    lock = threading.Lock()

    def loop(slot: int) -> None:
        while time.perf_counter() < stop:
            with lock:
                n = next(ids)
            op(n)
            done[slot] += 1

    start = time.perf_counter()
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done) / (time.perf_counter() - start)


def measure(ctx: Context) -> dict[str, Any]:
    ids = itertools.count()
    count_connections()
    data: dict[str, Any] = {"per_op": {name: per_op(op, ids) for name, op in
                                       (("leader", leader_cycle), ("waiter", waiter_cycle), ("ping", ping))}}
    seconds, rounds = ctx.pick(1.0, 2.0), ctx.pick(2, 3)
    rates: dict[str, list[float]] = {}
    for r in range(rounds):
        for threads in (1, 4):
            pairs = (("leader", leader_cycle), ("ping", ping))
            for name, op in pairs if r % 2 == 0 else pairs[::-1]:
                rates.setdefault(f"{name} x{threads}", []).append(rate(op, ids, threads, seconds))
    data["rates"] = rates
    return data


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def rows(data: dict[str, Any]) -> list[Row]:
    leader, waiter = data["per_op"]["leader"], data["per_op"]["waiter"]
    out = [Row("5 registry", "Redis round trips waited for (commands at the server) of find_or_register + "
               "unregister_notify, new group",
               f"{leader['round_trips']:.1f} + {leader.get('unawaited', 0):.1f} not waited for "
               f"({leader['commands']:.1f})", "1 (1) for PING",
               leader["round_trips"], f"{leader['round_trips']:.1f} round trips", "", None, None, leader),
           Row("5 registry", "… the same with one coalesced waiter (second find_or_register, answer via backend)",
               f"{waiter['round_trips']:.1f} + {waiter.get('unawaited', 0):.1f} not waited for "
               f"({waiter['commands']:.1f})", "1 (1) for PING",
               waiter["round_trips"], f"{waiter['round_trips']:.1f} round trips", "", None, None, waiter)]
    for threads in (1, 4):
        ours, base = data["rates"][f"leader x{threads}"], data["rates"][f"ping x{threads}"]
        ratio = _median(ours) / _median(base)
        out.append(Row("5 registry", f"operations/s, {threads} thread(s): find_or_register + unregister_notify "
                       "vs PING", f"{_median(ours):.0f} ops/s", f"{_median(base):.0f} PING/s", ratio,
                       f"{ratio:.3f}{TIMES} (1 op = {1 / ratio:.1f} PINGs)", "", None, max(cv(ours), cv(base)),
                       {"ours": ours, "baseline": base}))
    return out


def run(ctx: Context) -> Result:
    result = Result("registry", "Registry cost",
                    "In the runner process, no worker: a tiny Msg1 and a new Msg2 for each operation (so each "
                    "one leads a new group); threads share the plugin's Redis client.")
    data = measure(ctx)
    result.rows = rows(data)
    result.data = data
    by_command = data["per_op"]["leader"]["by_command"]
    result.notes.append("Commands the server received per leader operation: " +
                        ", ".join(f"{k} {v:g}" for k, v in by_command.items()) + "; with one waiter: " +
                        ", ".join(f"{k} {v:g}" for k, v in data["per_op"]["waiter"]["by_command"].items()) + ".")
    return result


def plot(result: Result, path: Any) -> None:
    import matplotlib.pyplot as plt

    rates = result.data["rates"]
    fig, ax = plt.subplots(figsize=(7, 4))
    x = [0, 1]
    for offset, name, label, color in ((-0.2, "leader", "find_or_register + unregister_notify", "tab:blue"),
                                       (0.2, "ping", "PING (one round trip)", "grey")):
        values = [_median(rates[f"{name} x{t}"]) for t in (1, 4)]
        ax.bar([i + offset for i in x], values, 0.4, label=label, color=color)
        for i, v in zip(x, values, strict=True):
            ax.text(i + offset, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, ["1 thread", "4 threads"])
    ax.set_ylabel("operations/s")
    ax.set_title("Registry operations per second (one client process)")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
