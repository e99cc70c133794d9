"""Scenario 2: the overhead floor with tiny messages.

Ours: ``persistent.resolve.delay(msg1, msg2).get()`` on the ordinary leader
path (await_inprogress default True: register, publish, claim, finish), and
with ``await_inprogress=False`` (no registration: the task overhead alone).
Baseline: a bare ``noop.delay().get()`` on the same solo worker.
"""

from __future__ import annotations

from typing import Any

from bench.scenarios import Context, Result
from bench.stats import TIMES, Row, Summary, interleave, ms, noise_of, p50_p99
from bench.workers import Fleet

GET_TIMEOUT = 30
MSG1 = {"device": "echo", "id": "floor"}


def _ours(opts: Any) -> Any:
    from bench.app import persistent

    counter = iter(range(10**9))

    def call() -> Any:
        # A new Msg2 each time: a new group, so every request leads (no coalescing).
        return persistent.resolve.delay(MSG1, {"path": "run", "n": next(counter)}, opts).get(timeout=GET_TIMEOUT)

    return call


def _bare() -> Any:
    from bench.app import noop

    return noop.delay().get(timeout=GET_TIMEOUT)


def measure(ctx: Context) -> dict[str, Summary]:
    for fn in (_bare, _ours(None), _ours({"await_inprogress": False})):
        for _ in range(5):
            fn()
    k = ctx.pick(30, 100)
    variants = {
        "bare": (_bare, k),
        "ours": (_ours(None), k),
        "ours no await": (_ours({"await_inprogress": False}), k),
    }
    return interleave(variants, ctx.pick(4, 10))


def rows(s: dict[str, Summary]) -> list[Row]:
    bare, ours, no_await = s["bare"], s["ours"], s["ours no await"]
    ratio = ours.median / bare.median
    out = [Row("2 overhead", "p50 round trip, tiny messages: `resolve` (await_inprogress=True) vs bare task",
               p50_p99(ours), p50_p99(bare), ratio, f"{ratio:.2f}{TIMES}", f"≤ 1.2{TIMES}", ratio <= 1.2,
               noise_of(ours, bare), {"ours": ours.as_dict(), "baseline": bare.as_dict()})]
    ratio = no_await.median / bare.median
    out.append(Row("2 overhead", "p50 round trip: `resolve` with await_inprogress=False (no registry) vs bare task",
                   p50_p99(no_await), p50_p99(bare), ratio, f"{ratio:.2f}{TIMES}", "", None,
                   noise_of(no_await, bare), {"ours": no_await.as_dict(), "baseline": bare.as_dict()}))
    return out


def run(ctx: Context) -> Result:
    from bench.app import DEFAULT_QUEUE

    result = Result("overhead", "Overhead floor",
                    "1 ordinary solo worker runs all three variants, interleaved; one client sends one request "
                    "at a time; Msg1 and Msg2 are tiny.")
    with Fleet(ctx.logdir) as fleet:
        fleet.start({"queues": [DEFAULT_QUEUE]})
        summaries = measure(ctx)
    result.rows = rows(summaries)
    result.data = {"summaries": {k: v.as_dict() for k, v in summaries.items()}}
    bare, ours, no_await = (summaries[k].median for k in ("bare", "ours", "ours no await"))
    result.notes.append(
        f"Split of the p50 overhead over a bare task ({ms(ours - bare)}): plugin task path without the registry "
        f"{ms(no_await - bare)}, registry {ms(ours - no_await)} (round trips: submit and published on the client; "
        "claim, finish and deliver on the worker, and reserve sent there without waiting; see "
        "tests/unit/test_round_trips.py).")
    return result


def plot(result: Result, path: Any) -> None:
    import matplotlib.pyplot as plt

    s = result.data["summaries"]
    names = [("bare", "bare task"), ("ours no await", "resolve,\nawait_inprogress=False"),
             ("ours", "resolve (default)")]
    fig, ax = plt.subplots(figsize=(7, 4))
    x = range(len(names))
    ax.bar(x, [s[k]["median"] * 1000 for k, _ in names], color=["grey", "tab:orange", "tab:blue"], label="p50")
    ax.scatter(x, [s[k]["p99"] * 1000 for k, _ in names], color="black", marker="_", s=400, label="p99", zorder=3)
    ax.set_xticks(list(x), [label for _, label in names])
    ax.set_ylabel("round trip (ms)")
    ax.set_title("Overhead floor: tiny messages, one request at a time")
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
