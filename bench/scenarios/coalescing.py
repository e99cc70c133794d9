"""Scenario 3: 100 concurrent identical requests for a 0.5 s execution.

Ours (``nap`` device, default grouper: identical requests coalesce), celery-
singleton (a ``base=Singleton`` task: duplicates get the running task's
AsyncResult) and plain Celery, all on one prefork worker with 2 processes.
Executions are counted in Redis from inside the task.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from bench.scenarios import Context, Result
from bench.stats import MINUS, TIMES, Row, Summary, ms, noise_of
from bench.workers import Fleet

SLEEP = 0.5
GET_TIMEOUT = 120
SYSTEMS = ("persistent", "singleton", "plain")


def _sender(system: str) -> Callable[[str], Any]:
    from bench.app import nap, persistent, singleton_nap

    if system == "persistent":
        return lambda tag: persistent.resolve.delay({"device": "nap", "tag": tag}, {"path": "run", "sleep": SLEEP})
    task = singleton_nap if system == "singleton" else nap
    return lambda tag: task.delay(tag, SLEEP)


def burst(system: str, n: int) -> dict[str, Any]:
    """Send ``n`` identical requests, then wait for all; wall time and executions."""
    from bench.app import counters, runs_key

    send = _sender(system)
    tag = uuid.uuid4().hex[:12]
    start = time.perf_counter()
    pending = [send(tag) for _ in range(n)]
    sent = time.perf_counter()
    answers = [pending[0].get(timeout=GET_TIMEOUT)]
    first = time.perf_counter()
    answers += [r.get(timeout=GET_TIMEOUT) for r in pending[1:]]
    wall = time.perf_counter() - start
    assert all(a == {"ok": True} for a in answers), answers[:3]
    executions = int(counters().get(runs_key(system, tag)) or 0)
    return {"n": n, "wall": wall, "send": sent - start, "first": first - start, "executions": executions,
            "distinct_ids": len({r.id for r in pending})}


def measure(ctx: Context) -> dict[str, Any]:
    n = 100
    plain_n = ctx.pick(20, 100)
    rounds = ctx.pick(3, 5)
    single: dict[str, list[float]] = {s: [] for s in SYSTEMS}
    bursts: dict[str, list[dict[str, Any]]] = {s: [] for s in SYSTEMS}
    for system in SYSTEMS:
        burst(system, 1)  # warm up (connections, script loading, pool processes)
    for r in range(rounds):
        order = SYSTEMS[r % 3:] + SYSTEMS[: r % 3]
        for system in order:
            single[system].append(burst(system, 1)["wall"])
            if system != "plain":
                bursts[system].append(burst(system, n))
            elif r == 0:
                bursts[system].append(burst(system, plain_n))  # 100 x 0.5 s on 2 processes: once is enough
    return {"single": single, "bursts": bursts, "n": n, "plain_n": plain_n}


def measure_without_events(ctx: Context) -> dict[str, Any]:
    """Ours again, on a worker with persistent_send_events=False (diagnostic: what the waiters' events cost)."""
    burst("persistent", 1)
    single, bursts = [], []
    for _ in range(ctx.pick(2, 3)):
        single.append(burst("persistent", 1)["wall"])
        bursts.append(burst("persistent", 100))
    return {"single": single, "bursts": bursts}


def _walls(data: dict[str, Any], system: str) -> Summary:
    return Summary([[b["wall"]] for b in data["bursts"][system]])


def _per_waiter(data: dict[str, Any], system: str) -> Summary:
    """(wall of the burst - median single request) / n, per round."""
    one = Summary([[x] for x in data["single"][system]]).median
    return Summary([[(b["wall"] - one) / b["n"]] for b in data["bursts"][system]])


def rows(data: dict[str, Any]) -> list[Row]:
    n = data["n"]
    execs = {s: [b["executions"] for b in data["bursts"][s]] for s in SYSTEMS}
    single = {s: Summary([[x] for x in data["single"][s]]) for s in SYSTEMS}
    walls = {s: _walls(data, s) for s in SYSTEMS}
    out = [Row("3 coalescing", f"executions for {n} identical requests (each round): ours vs celery-singleton",
               str(execs["persistent"]), str(execs["singleton"]), None,
               f"{max(execs['persistent'])} vs {max(execs['singleton'])} (plain Celery: "
               f"{execs['plain'][0]} of {data['plain_n']})", "1", set(execs["persistent"]) == {1})]
    for system, label in (("persistent", "ours"), ("singleton", "celery-singleton")):
        ratio = walls[system].median / single[system].median
        target = f"≤ 1.1{TIMES}" if system == "persistent" else ""
        out.append(Row("3 coalescing", f"{label}: wall time of {n} identical requests vs one request",
                       ms(walls[system].median), ms(single[system].median), ratio, f"{ratio:.2f}{TIMES}", target,
                       ratio <= 1.1 if target else None, noise_of(walls[system], single[system]),
                       {"ours": walls[system].as_dict(), "baseline": single[system].as_dict()}))
    plain_ratio = walls["plain"].median / single["plain"].median
    out.append(Row("3 coalescing", f"plain Celery: wall time of {data['plain_n']} identical requests vs one request",
                   ms(walls["plain"].median), ms(single["plain"].median), plain_ratio, f"{plain_ratio:.2f}{TIMES}",
                   "", None, None, {"ours": walls["plain"].as_dict(), "baseline": single["plain"].as_dict()}))
    ours, theirs = _per_waiter(data, "persistent"), _per_waiter(data, "singleton")
    ratio = ours.median / theirs.median
    out.append(Row("3 coalescing", f"per-waiter overhead ((wall {MINUS} one request) / 100): ours vs celery-singleton",
                   ms(ours.median), ms(theirs.median), ratio, f"{ratio:.2f}{TIMES}", f"≤ 1{TIMES} (no worse)",
                   ours.median <= theirs.median, noise_of(walls["persistent"], walls["singleton"]),
                   {"ours": ours.as_dict(), "baseline": theirs.as_dict()}))
    sends = {s: Summary([[b["send"] / b["n"]] for b in data["bursts"][s]]) for s in ("persistent", "singleton")}
    ratio = sends["persistent"].median / sends["singleton"].median
    out.append(Row("3 coalescing", f"client time per `delay()` while sending {n} identical requests (1 leader, "
                   f"{n - 1} coalesced): ours vs celery-singleton", ms(sends["persistent"].median),
                   ms(sends["singleton"].median), ratio, f"{ratio:.2f}{TIMES}", "", None,
                   noise_of(sends["persistent"], sends["singleton"]),
                   {"ours": sends["persistent"].as_dict(), "baseline": sends["singleton"].as_dict()}))
    quiet = data["no_events"]
    no_events = Summary([[(b["wall"] - Summary([[x] for x in quiet["single"]]).median) / b["n"]]
                         for b in quiet["bursts"]])
    ratio = no_events.median / theirs.median
    out.append(Row("3 coalescing", "… the same, ours on a worker with persistent_send_events=False (separate "
                   "worker, after the others)", ms(no_events.median), ms(theirs.median), ratio,
                   f"{ratio:.2f}{TIMES}", "", None, None, {"ours": no_events.as_dict(), "bursts": quiet["bursts"]}))
    return out


def run(ctx: Context) -> Result:
    from bench.app import DEFAULT_QUEUE

    result = Result("coalescing", "Coalescing identical requests",
                    "One prefork worker with 2 processes (`-P prefork -c 2`) serves all three systems, for "
                    "fairness; one client sends the identical requests back to back, then waits for all of them; "
                    "rounds rotate the order of the systems.")
    with Fleet(ctx.logdir) as fleet:
        fleet.start({"queues": [DEFAULT_QUEUE], "pool": "prefork", "concurrency": 2})
        data = measure(ctx)
    with Fleet(ctx.logdir) as fleet:
        fleet.start({"queues": [DEFAULT_QUEUE], "pool": "prefork", "concurrency": 2,
                     "env": {"BENCH_SEND_EVENTS": "0"}})
        data["no_events"] = measure_without_events(ctx)
    result.rows = rows(data)
    result.data = data
    result.notes.append(f"Execution time is {SLEEP} s. Where a burst's time goes (ms, per round: sending the "
                        "requests / first answer / all answers collected): " + "; ".join(
                            f"{s}: " + ", ".join(f"{b['send'] * 1000:.0f}/{b['first'] * 1000:.0f}/"
                                                 f"{b['wall'] * 1000:.0f}" for b in data["bursts"][s])
                            for s in SYSTEMS) + ".")
    result.notes.append(f"Plain Celery runs every request: {data['plain_n']} {TIMES} {SLEEP} s on 2 processes "
                        f"(one burst{'; quick run: 20 requests' if ctx.quick else ''}).")
    return result


def plot(result: Result, path: Any) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    data = result.data
    labels = {"persistent": "ours", "singleton": "celery-singleton", "plain": "plain Celery"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    x = list(range(3))
    single = [Summary([[v] for v in data["single"][s]]).median for s in SYSTEMS]
    walls = [_walls(data, s).median for s in SYSTEMS]
    left.bar([i - 0.2 for i in x], single, 0.4, label="one request", color="grey")
    left.bar([i + 0.2 for i in x], walls, 0.4, label="burst of identical requests", color="tab:blue")
    left.set_yscale("log")
    left.yaxis.set_major_formatter(ScalarFormatter())
    left.yaxis.set_minor_formatter(NullFormatter())
    for i, (one, many) in enumerate(zip(single, walls, strict=True)):
        left.text(i - 0.2, one, f"{one:.2f}", ha="center", va="bottom", fontsize=8)
        left.text(i + 0.2, many, f"{many:.2f}", ha="center", va="bottom", fontsize=8)
    left.set_xticks(x, [f"{labels[s]}\n(burst {data['plain_n'] if s == 'plain' else data['n']})" for s in SYSTEMS])
    left.set_ylabel("wall time (s)")
    left.set_title(f"wall time, {SLEEP} s execution")
    left.legend(fontsize=8)
    execs = [max(b["executions"] for b in data["bursts"][s]) for s in SYSTEMS]
    right.bar(x, execs, color=["tab:blue", "tab:orange", "grey"])
    right.set_xticks(x, [labels[s] for s in SYSTEMS])
    right.set_title("executions per burst")
    for i, v in enumerate(execs):
        right.text(i, v, str(v), ha="center", va="bottom")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
