"""Scenario 4: serialized groups at scale.

Throughput (requests/s) of N requests spread round-robin over G hosted groups
(``start_worker`` per group, trivial ``tick`` device) on 1 and 2 persistent
worker processes, against plain Celery (the same trivial work as a plain task)
on the same number of ordinary solo worker processes.  Then the memory of one
persistent worker hosting many idle groups.
"""

from __future__ import annotations

import time
from typing import Any

from bench.scenarios import Context, Result
from bench.stats import MINUS, TIMES, Row, Summary, cv
from bench.workers import Fleet, cpu_seconds, rss_bytes, wait_until, wipe

GET_TIMEOUT = 120

def batch_size(hosted: int) -> int:
    """Groups placed before waiting for their adoption: fewer as the worker hosts more (see the notes)."""
    return 1000 if hosted < 4000 else 500

OPTS = {"static_worker": True, "worker_timeout": 3600}
MEMORY_TARGET_GROUPS = 10_000
MEMORY_TARGET_BYTES = 100 * 1024 * 1024


def msg1(tag: str, i: int) -> dict[str, Any]:
    return {"device": "tick", "id": f"{tag}-{i}"}


def hosted_counts() -> dict[str, int]:
    from bench.app import persistent

    return {w["hostname"]: int(w.get("groups", 0)) for w in persistent.workers()}


def place(tag: str, count: int, start: int = 0) -> float:
    """start_worker for groups ``start..count-1``; wait until the workers report them; seconds taken."""
    from bench.app import persistent

    began = time.perf_counter()
    first = start
    while first < count:
        last = min(count, first + batch_size(first))
        for i in range(first, last):
            persistent.start_worker(msg1(tag, i), OPTS)
        wait_until(lambda last=last: sum(hosted_counts().values()) >= last, 60, 0.05, f"{last} groups adopted")
        first = last
    return time.perf_counter() - began


def burst(send: Any, n: int) -> tuple[float, float]:
    """Throughput (requests/s) of ``n`` requests sent back to back, all answered.

    Returns (end to end, as the client sees it; worker side, from the first to
    the last ``date_done`` the workers stored).
    """
    start = time.perf_counter()
    pending = [send(i) for i in range(n)]
    for r in pending:
        r.get(timeout=GET_TIMEOUT)
    end_to_end = n / (time.perf_counter() - start)
    done = [r.date_done for r in pending]
    span = (max(done) - min(done)).total_seconds()
    return end_to_end, (n - 1) / span if span > 0 else float("nan")


TABLE_BUDGET = 180.0
"""Seconds a burst of the target-5 table may take: RabbitMQ answers a burst over 10,000 queues of one channel
at a few requests a second (see the analysis), so such a row reports what was answered in that time."""


def burst_within(send: Any, n: int, budget: float) -> dict[str, Any]:
    """``n`` requests sent back to back; requests/s over those answered within ``budget`` seconds of the
    start (all of them, normally)."""
    from celery.exceptions import TimeoutError as ResultTimeout

    start = time.perf_counter()
    pending = [send(i) for i in range(n)]
    for r in pending:
        left = start + budget - time.perf_counter()
        try:
            r.get(timeout=max(left, 0.01))
        except ResultTimeout:
            break
    elapsed = time.perf_counter() - start
    answered = n if elapsed < budget else sum(1 for r in pending if r.ready())
    return {"rate": answered / elapsed, "answered": answered, "n": n, "seconds": elapsed}


def _ours_sender(tag: str, groups: int) -> Any:
    from bench.app import persistent

    return lambda i: persistent.resolve.delay(msg1(tag, i % groups), {"path": "run", "n": i})


def _plain_sender(i: int) -> Any:
    from bench.app import plain

    return plain.delay({"device": "tick", "id": "plain"}, {"path": "run", "n": i})


def throughput(ctx: Context, workers: int, groups: int) -> dict[str, Any]:
    """One configuration on fresh persistent workers (killed and wiped afterwards)."""
    tag = f"w{workers}g{groups}"
    n = max(ctx.pick(200, 500), groups)
    with Fleet(ctx.logdir) as fleet:
        fleet.start(*[{"queues": [f"{ctx.prefix}.unused"], "persistent": True} for _ in range(workers)])
        placed = place(tag, groups)
        spread = sorted(hosted_counts().values(), reverse=True)
        send = _ours_sender(tag, groups)
        burst(send, min(n, max(groups, 50)))  # warm up: every group loads its Msg1 once
        rates = [burst(send, n) for _ in range(ctx.pick(2, 3))]
        fleet.kill()
    wipe(ctx.prefix)
    return {"workers": workers, "groups": groups, "n": n, "rates": [r for r, _ in rates],
            "worker_rates": [w for _, w in rates], "place_s": placed, "spread": spread}


def plain_throughput(ctx: Context, workers: int) -> dict[str, Any]:
    from bench.app import DEFAULT_QUEUE

    n = ctx.pick(200, 500)
    with Fleet(ctx.logdir) as fleet:
        fleet.start(*[{"queues": [DEFAULT_QUEUE]} for _ in range(workers)])
        burst(_plain_sender, 50)
        rates = [burst(_plain_sender, n) for _ in range(ctx.pick(2, 3))]
    return {"workers": workers, "n": n, "rates": [r for r, _ in rates], "worker_rates": [w for _, w in rates]}


def memory(ctx: Context) -> dict[str, Any]:
    """RSS of one persistent worker hosting idle groups, minus its RSS with none."""
    count = ctx.pick(2000, MEMORY_TARGET_GROUPS)
    with Fleet(ctx.logdir) as fleet:
        [worker] = fleet.start({"queues": [f"{ctx.prefix}.unused"], "persistent": True})
        time.sleep(2)
        base = rss_bytes(worker.pid)
        curve = [(0, base, 0.0)]
        step = count // 5
        for upto in range(step, count + 1, step):
            seconds = place("mem", upto, upto - step)
            curve.append((upto, rss_bytes(worker.pid), seconds))
        time.sleep(2)
        final = rss_bytes(worker.pid)
        cpu0, t0 = cpu_seconds(worker.pid), time.perf_counter()
        time.sleep(5)
        idle_cpu = (cpu_seconds(worker.pid) - cpu0) / (time.perf_counter() - t0)
        lost = worker.logfile.read_text(errors="replace").count("lost group")
        hosted = sum(hosted_counts().values())
        fleet.kill()
    wipe(ctx.prefix)
    return {"groups": count, "hosted": hosted, "base_rss": base, "rss": final, "curve": curve,
            "idle_cpu": idle_cpu, "lost_groups_logged": lost}


def measure(ctx: Context) -> dict[str, Any]:
    sizes = ctx.pick([1, 10, 100], [1, 10, 100, 1000])
    data: dict[str, Any] = {"plain": [], "ours": []}
    for workers in (1, 2):
        data["plain"].append(plain_throughput(ctx, workers))
        for groups in sizes:
            data["ours"].append(throughput(ctx, workers, groups))
    data["memory"] = memory(ctx)
    data["scale"] = scale(ctx)
    return data


def _rate(config: dict[str, Any]) -> str:
    client = Summary([[r] for r in config["rates"]]).median
    workers = Summary([[r] for r in config["worker_rates"]]).median
    return f"{client:.0f} req/s (worker side {workers:.0f})"


def rows(data: dict[str, Any]) -> list[Row]:
    out = []
    plain = {p["workers"]: p for p in data["plain"]}
    for config in data["ours"]:
        base_config = plain[config["workers"]]
        ours, base = Summary([[r] for r in config["rates"]]), Summary([[r] for r in base_config["rates"]])
        ratio = ours.median / base.median
        groups, workers = config["groups"], config["workers"]
        out.append(Row("4 groups", f"throughput, {groups} group{'s' * (groups > 1)} on {workers} persistent "
                       f"worker{'s' * (workers > 1)} vs plain Celery on as many solo workers",
                       _rate(config), _rate(base_config), ratio, f"{ratio:.2f}{TIMES}", "", None,
                       max(cv(config["rates"]), cv(base_config["rates"])),
                       {"ours": ours.as_dict(), "baseline": base.as_dict(), "groups_per_worker": config["spread"],
                        "place_s": config["place_s"]}))
    out.append(memory_row(data["memory"]))
    out.extend(scale_rows(data.get("scale") or {}))
    out.extend(table_rows((data.get("scale") or {}).get("table") or {}))
    return out


def table_rows(table_data: dict[str, Any]) -> list[Row]:
    """Issue 12, target 5 (no target figure): round-robin throughput by groups, workers and broker."""
    out = []
    for broker, runs in table_data.items():
        on = "Redis" if broker == "redis" else "RabbitMQ"
        for run in runs:
            if "rows" not in run:
                continue
            plain = _median(run["plain"])
            w = run["workers"]
            for row in run["rows"]:
                ours = _median(row["rates"])
                out.append(Row("4 groups", f"throughput, {row['groups']:,} groups round-robin ({row['n']} requests "
                               f"a round) on {w} persistent worker{'s' * (w > 1)}, {on} broker, vs plain Celery "
                               f"on as many solo workers", f"{ours:.0f} req/s", f"{plain:.0f} req/s",
                               ours / plain, f"{ours / plain:.2f}{TIMES}", "", None,
                               max(cv(row["rates"]), cv(run["plain"])), row))
    return out


def _median(values: list[float]) -> float:
    return Summary([[v] for v in values]).median


def _pct(share: float) -> str:
    return f"{share * 100:.2f}% of a core"


def scale_rows(scale_data: dict[str, Any]) -> list[Row]:
    """Issue 12, target 1: one persistent worker hosting many groups, on Redis (targets) and RabbitMQ."""
    out = []
    for broker, run in scale_data.items():
        if broker == "table" or not isinstance(run, dict) or "many" not in run:
            continue
        on = "Redis" if broker == "redis" else "RabbitMQ"
        targeted = broker == "redis"
        g = run["groups"]
        for key, base_key, what in (("many", "base", "one active group"),
                                    ("many_ten", "base_ten", "10 active groups round-robin")):
            ours, base = _median(run[key]), _median(run[base_key])
            ratio = ours / base
            hosted_then = "1 group" if base_key == "base" else "10 groups"
            out.append(Row("4 groups", f"throughput to {what}, one persistent worker hosting {g:,} groups vs "
                           f"the same worker hosting {hosted_then} ({on} broker)",
                           f"{ours:.0f} req/s", f"{base:.0f} req/s", ratio, f"{ratio:.2f}{TIMES}",
                           f"{TIMES} {SCALE_RATIO_TARGET}" if targeted and key == "many" else "",
                           ratio >= SCALE_RATIO_TARGET if targeted and key == "many" else None,
                           max(cv(run[key]), cv(run[base_key])), {"ours": run[key], "baseline": run[base_key]}))
        worker_cpu = max(i["worker"] for i in run["idle"])
        redis_cpu = max(i["redis"] for i in run["idle"])
        for who, share, empty in (("the persistent worker", worker_cpu, run["idle_empty"]["worker"]),
                                  ("redis-server (registry" + (" and broker" if targeted else "") + ")",
                                   redis_cpu, run["idle_empty"]["redis"])):
            out.append(Row("4 groups", f"CPU of {who} with no traffic, {g:,} groups hosted ({on} broker; "
                           f"the larger of two 10 s looks)", _pct(share), f"{_pct(empty)} with no group",
                           share, _pct(share), "< 1% of a core" if targeted else "",
                           share < IDLE_CPU_TARGET if targeted else None, None, run["idle"]))
        out.append(Row("4 groups", f"placement of {g - 10:,} groups on one persistent worker: start_worker "
                       f"from {PLACING_PROCESSES} client processes x {PLACING_THREADS} threads until the worker "
                       f"reports them adopted ({on} broker)", f"{run['place_s']:.1f} s",
                       f"calls alone {run['place_calls_s']:.1f} s", run["place_s"], f"{run['place_s']:.1f} s",
                       "< 10 s" if targeted else "", run["place_s"] < 10 if targeted else None, None, {}))
    return out


def memory_row(mem: dict[str, Any]) -> Row:
    delta = mem["rss"] - mem["base_rss"]
    per_group = delta / max(1, mem["hosted"])
    at_target = per_group * MEMORY_TARGET_GROUPS
    measured = mem["hosted"] >= MEMORY_TARGET_GROUPS
    ours = f"{delta / 2**20:.1f} MB for {mem['hosted']} groups ({per_group / 1024:.1f} KB/group)"
    if not measured:
        ours += f"; extrapolated to {MEMORY_TARGET_GROUPS}: {at_target / 2**20:.0f} MB"
    return Row("4 groups", f"RSS of one persistent worker hosting {MEMORY_TARGET_GROUPS} idle groups, minus its "
               "RSS with none (tiny Msg1)", ours, f"{mem['base_rss'] / 2**20:.0f} MB with 0 groups",
               at_target / MEMORY_TARGET_BYTES, f"{at_target / 2**20:.0f} MB = {at_target / MEMORY_TARGET_BYTES:.2f}"
               " of the limit" + ("" if measured else " (extrapolated)"), "< 100 MB",
               at_target < MEMORY_TARGET_BYTES, None, mem)


def run(ctx: Context) -> Result:
    result = Result("groups", "Serialized groups at scale",
                    "Persistent workers are `-P solo --persistent` processes; each configuration starts fresh "
                    "workers, places G groups with `start_worker` (trivial `tick` device, tiny static Msg1), "
                    "then sends N requests round-robin over the groups from one client, back to back, and waits "
                    "for all. The baseline is the same trivial work as a plain task on as many ordinary solo "
                    "workers.")
    data = measure(ctx)
    result.rows = rows(data)
    result.data = data
    for config in data["ours"]:
        if config["workers"] == 2 and len(config["spread"]) == 2 and min(config["spread"]) == 0 < config["groups"] - 1:
            result.notes.append(f"{config['groups']} groups on 2 workers were all placed on one worker "
                                f"(groups per worker: {config['spread']}).")
    mem = data["memory"]
    result.notes.append(
        f"Memory: {mem['hosted']} of {mem['groups']} groups hosted; while hosting them the idle worker used "
        f"{mem['idle_cpu'] * 100:.1f}% of a CPU (idle group queues nap on Redis: see the many-groups rows); "
        f"'lost group' log lines: {mem['lost_groups_logged']}. Groups were placed 1000 (then, above 4000, "
        "500) at a time, waiting for their adoption (a limit from before napping, when adopting a group cost "
        "time proportional to the queues the worker consumed; kept so that the memory curve has its points).")
    for broker, run in (data.get("scale") or {}).items():
        if broker == "table":
            continue
        if isinstance(run, dict) and "many" in run:
            result.notes.append(
                f"Many groups ({broker}): {run['hosted']} groups hosted by one worker; queues it consumed once "
                f"idle: {run['consumed_idle']} (its own plus napping group queues woken); "
                f"'lost group' log lines: {run['lost_groups_logged']}; idle queues napped "
                f"{run['settle_s']:.1f} s after placement.")
        elif isinstance(run, dict):
            result.notes.append(f"Many groups ({broker}): not measured: {run.get('error') or run.get('skipped')}")
    result.notes.extend(table_notes((data.get("scale") or {}).get("table") or {}))
    placing = "; ".join(f"{c['groups']} on {c['workers']}: {c['place_s']:.1f} s" for c in data["ours"])
    result.notes.append(f"Placement time (start_worker until adopted): {placing}; memory run: "
                        + ", ".join(f"{g} groups {s:.1f} s" for g, _, s in mem["curve"][1:]) + ".")
    return result


def table_notes(table_data: dict[str, Any]) -> list[str]:
    """Target 5, as text: requests/s by number of groups, each broker and number of persistent workers."""
    notes = []
    for broker, runs in table_data.items():
        for run in runs:
            if "rows" not in run:
                notes.append(f"Throughput table ({broker}): not measured: {str(run.get('error'))[-300:]}")
                continue
            cells = []
            for row in run["rows"]:
                short = [f"{a} of {row['n']} answered in {TABLE_BUDGET:.0f} s"
                         for a in row.get("answered", []) if a < row["n"]]
                cells.append(f"{row['groups']:,} groups {_median(row['rates']):.0f} req/s"
                             + (f" ({'; '.join(short)})" if short else ""))
            notes.append(f"Throughput table ({broker}, {run['workers']} persistent worker(s), requests "
                         f"round-robin over all groups): " + ", ".join(cells)
                         + f"; plain Celery on as many solo workers {_median(run['plain']):.0f} req/s.")
    return notes


def _plot_table(ax: Any, table_data: dict[str, Any]) -> None:
    """Round-robin throughput by number of groups: each broker, 1 and 2 persistent workers."""
    for broker, runs in table_data.items():
        for run in runs:
            if "rows" not in run:
                continue
            xs = [r["groups"] for r in run["rows"]]
            ys = [_median(r["rates"]) for r in run["rows"]]
            style = ("o-" if run["workers"] == 1 else "s-") if broker == "redis" else \
                ("o--" if run["workers"] == 1 else "s--")
            line = ax.plot(xs, ys, style, label=f"{broker}, {run['workers']} persistent worker(s)")[0]
            ax.axhline(_median(run["plain"]), color=line.get_color(), linestyle=":", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("groups (requests round-robin over all)")
    ax.set_ylabel("requests/s")
    ax.set_title("Throughput by groups and broker (dotted: plain Celery)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def plot(result: Result, path: Any) -> None:
    import matplotlib.pyplot as plt

    data = result.data
    table_data = (data.get("scale") or {}).get("table") or {}
    fig, axes = plt.subplots(1, 3 if table_data else 2, figsize=(15 if table_data else 10, 4.2))
    left, right = axes[0], axes[1]
    if table_data:
        _plot_table(axes[2], table_data)
    for workers, style in ((1, "o-"), (2, "s-")):
        configs = [c for c in data["ours"] if c["workers"] == workers]
        xs = [c["groups"] for c in configs]
        medians = [Summary([[r] for r in c["rates"]]).median for c in configs]
        spread = [[m - min(c["rates"]) for m, c in zip(medians, configs, strict=True)],
                  [max(c["rates"]) - m for m, c in zip(medians, configs, strict=True)]]
        line = left.errorbar(xs, medians, yerr=spread, fmt=style, capsize=3,
                             label=f"ours, {workers} persistent worker(s) (median, min-max)")[0]
        base = next(p for p in data["plain"] if p["workers"] == workers)
        left.axhline(Summary([[r] for r in base["rates"]]).median, color=line.get_color(), linestyle=":",
                     label=f"plain Celery, {workers} solo worker(s)")
    left.set_xscale("log")
    left.set_xlabel("groups")
    left.set_ylabel("requests/s")
    left.set_title("Throughput vs number of groups")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    curve = data["memory"]["curve"]
    right.plot([g for g, _, _ in curve], [(rss - curve[0][1]) / 2**20 for _, rss, _ in curve], "o-",
               label=f"RSS {MINUS} RSS with 0 groups")
    right.axhline(100, color="red", linestyle=":", label="target at 10,000 groups")
    right.set_xlabel("idle hosted groups (one worker)")
    right.set_ylabel("MB")
    right.set_title("Memory of one persistent worker")
    right.grid(True, alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- many groups on one worker (issue 12, target 1): a subprocess per broker ------------------------

SCALE_GROUPS = 10_000
SCALE_RATIO_TARGET = 0.8
IDLE_CPU_TARGET = 0.01


def _redis_cpu(client: Any) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


PLACED_CALLS: list[float] = []
PLACING_PROCESSES = 2
PLACING_THREADS = 6


def _place_slice(tag: str, indexes: list[int]) -> int:
    """start_worker for ``indexes`` from PLACING_THREADS threads (in one client process)."""
    from concurrent.futures import ThreadPoolExecutor

    from bench.app import persistent

    with ThreadPoolExecutor(PLACING_THREADS) as pool:
        return len(list(pool.map(lambda i: persistent.start_worker(msg1(tag, i), OPTS), indexes, chunksize=64)))


def _place_many(tag: str, first: int, count: int) -> float:
    """start_worker for groups ``first..count-1`` from PLACING_PROCESSES client processes (the calls are
    CPU-bound in the client: one process's GIL was the limit); seconds until all adopted.  The seconds the
    calls alone took are appended to PLACED_CALLS."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    indexes = list(range(first, count))
    slices = [indexes[k::PLACING_PROCESSES] for k in range(PLACING_PROCESSES)]
    with ProcessPoolExecutor(PLACING_PROCESSES, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_place_slice, [tag] * PLACING_PROCESSES, [[] for _ in slices]))  # started and imported
        began = time.perf_counter()
        list(pool.map(_place_slice, [tag] * PLACING_PROCESSES, slices))
        PLACED_CALLS.append(time.perf_counter() - began)
    wait_until(lambda: sum(hosted_counts().values()) >= count, 120, 0.1, f"{count} groups adopted")
    return time.perf_counter() - began


def _consumed(hostname: str) -> int:
    from bench.app import app

    replies = app.control.inspect([hostname], timeout=5).active_queues() or {}
    return len(replies.get(hostname, []))


def _napping() -> int:
    """Groups whose lease naps (nap.lua gives a napping group a lease of minutes, not seconds)."""
    from bench.app import persistent

    registry = persistent.registry
    return int(registry.client.zcount(registry.keys.leases(), registry.server_ms() + 60_000, "+inf"))


def _idle(worker: Any, seconds: float) -> dict[str, float]:
    """CPU share of one core used by the worker process and by redis-server over ``seconds`` of no traffic."""
    from bench.app import counters

    client = counters()
    w0, r0, t0 = cpu_seconds(worker.pid), _redis_cpu(client), time.perf_counter()
    time.sleep(seconds)
    elapsed = time.perf_counter() - t0
    return {"worker": (cpu_seconds(worker.pid) - w0) / elapsed, "redis": (_redis_cpu(client) - r0) / elapsed,
            "seconds": elapsed}


def _drop_rabbit_queues(names: list[str]) -> None:
    from kombu.connection import Connection

    from bench.app import BROKER_URL

    with Connection(BROKER_URL) as conn:
        channel = conn.channel()
        for name in names:
            try:
                channel.queue_delete(name)
            except conn.channel_errors:
                channel = conn.channel()


def scale_run(logdir: Any, groups: int, rounds: int, n: int, n_ten: int) -> dict[str, Any]:
    """One persistent worker: throughput to one group with 1 group hosted, then with ``groups`` hosted
    (to that group, and round-robin over 10 active ones); placement time; idle CPU of the worker and Redis."""
    from bench.app import BROKER_URL, PREFIX, persistent

    tag = "s"
    one = lambda i: persistent.resolve.delay(msg1(tag, 0), {"path": "run", "n": i})  # noqa: E731
    ten = lambda i: persistent.resolve.delay(msg1(tag, i % 10), {"path": "run", "n": i})  # noqa: E731
    out: dict[str, Any] = {"broker": "rabbitmq" if BROKER_URL.startswith("amqp") else "redis", "groups": groups}
    with Fleet(logdir) as fleet:
        [worker] = fleet.start({"queues": [f"{PREFIX}.unused"], "persistent": True})
        out["idle_empty"] = _idle(worker, 5)
        _place_many(tag, 0, 1)
        burst(one, 50)
        out["base"] = [burst(one, n)[0] for _ in range(rounds)]
        _place_many(tag, 1, 10)
        burst(ten, 10)
        out["base_ten"] = [burst(ten, n_ten)[0] for _ in range(rounds)]
        out["place_s"] = _place_many(tag, 10, groups)
        out["place_calls_s"] = PLACED_CALLS[-1]
        # Idle: every group naps (its lease; on Redis its queue too, while on RabbitMQ all stay consumed).
        settle = time.perf_counter()
        if out["broker"] == "redis":
            wait_until(lambda: _consumed(worker.hostname) < 5, 120, 1.0, "idle group queues to nap")
        else:  # a queue at a time (declare, bind, consume: a few round trips each), after adoption
            wait_until(lambda: _consumed(worker.hostname) >= groups, 300, 2.0, "every group queue consumed")
        wait_until(lambda: _napping() >= groups - 10, 120, 1.0, "idle groups to nap")
        out["settle_s"] = time.perf_counter() - settle
        out["consumed_idle"] = _consumed(worker.hostname)
        out["idle"] = [_idle(worker, 10) for _ in range(2)]
        burst(one, 50)
        out["many"] = [burst(one, n)[0] for _ in range(rounds)]
        out["many_ten"] = [burst(ten, n_ten)[0] for _ in range(rounds)]
        out["lost_groups_logged"] = worker.logfile.read_text(errors="replace").count("lost group")
        out["hosted"] = sum(hosted_counts().values())
        fleet.kill()
    if out["broker"] == "rabbitmq":
        _drop_rabbit_queues([f"{PREFIX}.g.t-{tag}-{i}" for i in range(groups)] + [f"{PREFIX}.unused"])
    wipe(PREFIX)
    return out


TABLE_GROUPS = (1, 100, 1000, 10_000)


def table_run(logdir: Any, workers: int, sizes: list[int], rounds: int, cap: int) -> dict[str, Any]:
    """Issue 12, target 5: requests round-robin over G groups on ``workers`` persistent workers, G growing
    on the same workers (groups 0..G-1 hosted, each placed once); and plain Celery on as many solo workers.
    ``cap`` bounds the requests of a round (0: max(500, G), so that every group gets one)."""
    from bench.app import BROKER_URL, DEFAULT_QUEUE, PREFIX

    out: dict[str, Any] = {"broker": "rabbitmq" if BROKER_URL.startswith("amqp") else "redis",
                           "workers": workers, "rows": []}
    tag = f"w{workers}"
    with Fleet(logdir) as fleet:
        fleet.start(*[{"queues": [DEFAULT_QUEUE]} for _ in range(workers)])
        burst(_plain_sender, 50)
        n = cap or 500
        out["plain"] = [burst(_plain_sender, n)[0] for _ in range(rounds)]
        fleet.kill()
    with Fleet(logdir) as fleet:
        fleet.start(*[{"queues": [f"{PREFIX}.unused"], "persistent": True} for _ in range(workers)])
        placed = 0
        for groups in sizes:
            place_s = _place_many(tag, placed, groups) if groups > placed else 0.0
            placed = groups
            send = _ours_sender(tag, groups)
            n = min(cap, max(500, groups)) if cap else max(500, groups)
            burst(send, min(n, 50))
            bursts = [burst_within(send, n, TABLE_BUDGET) for _ in range(rounds)]
            out["rows"].append({"groups": groups, "n": n, "rates": [b["rate"] for b in bursts],
                                "answered": [b["answered"] for b in bursts], "place_s": place_s,
                                "spread": sorted(hosted_counts().values(), reverse=True)})
        fleet.kill()
    if out["broker"] == "rabbitmq":
        queues = [f"{PREFIX}.g.t-{tag}-{i}" for i in range(max(sizes))]
        _drop_rabbit_queues([*queues, f"{PREFIX}.unused", DEFAULT_QUEUE])
    wipe(PREFIX)
    return out


class PrivateRedis:
    """A redis-server of this scenario alone, so that its CPU figure is ours (the shared one serves others)."""

    def __init__(self, workdir: Any) -> None:
        import socket
        import subprocess

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}/12"
        import redis

        wait_until(lambda: self._ping(redis), 10, 0.1, "the private redis-server")

    def _ping(self, redis: Any) -> bool:
        try:
            return bool(redis.Redis(port=self.port).ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _subprocess(ctx: Context, url: str, redis_url: str, args: list[str]) -> dict[str, Any]:
    """One run of this module as a subprocess on broker ``url``; its JSON, or the error."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "BENCH_REDIS_URL": redis_url, "BENCH_BROKER_URL": url}
    done = subprocess.run([sys.executable, "-m", "bench.scenarios.groups", *args], env=env, capture_output=True,
                          text=True, timeout=3600)
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def table(ctx: Context, private: PrivateRedis, brokers: dict[str, str]) -> dict[str, Any]:
    """Issue 12, target 5: throughput over 1..10,000 groups, 1 and 2 persistent workers, each broker."""
    sizes = ctx.pick([1, 100, 1000], list(TABLE_GROUPS))
    out: dict[str, Any] = {}
    for name, url in brokers.items():
        rounds, cap = ctx.pick(1, 2), 0  # RabbitMQ as Redis since its 10 s stall was fixed (hubwake.py)
        out[name] = [_subprocess(ctx, url, private.url, ["table", str(ctx.logdir), str(workers), str(rounds),
                                                         str(cap), ",".join(map(str, sizes))])
                     for workers in (1, 2)]
    return out


def scale(ctx: Context) -> dict[str, Any]:
    """The many-groups run on each broker, each in a subprocess with its own broker settings.

    Both servers are the scenario's own (a redis-server, and a RabbitMQ node through chaos/rabbit_node.py),
    on ports of their own: their CPU is then ours alone, and a burst over 10,000 queues, which keeps a
    RabbitMQ node busy for minutes, never reaches the machine's shared brokers."""
    import shutil

    from chaos.ledger import Ledger
    from chaos.rabbit_node import RabbitNode, RabbitUnavailable

    groups = ctx.pick(2000, SCALE_GROUPS)
    runs: dict[str, Any] = {}
    if shutil.which("redis-server") is None:
        return {"skipped": "no redis-server on PATH (the scenario runs its own, to measure its CPU alone)"}
    private = PrivateRedis(ctx.logdir)
    rabbit: RabbitNode | None = None
    try:
        brokers = {"redis": private.url}
        try:
            rabbit = RabbitNode(ctx.logdir, Ledger(ctx.logdir / "rabbit-ledger.jsonl"))
            rabbit.start()
            brokers["rabbitmq"] = rabbit.url
        except (RabbitUnavailable, OSError) as exc:
            rabbit = None
            runs["rabbitmq"] = {"skipped": f"no RabbitMQ node of the scenario's own: {exc}"}
        for name, url in brokers.items():
            n = ctx.pick(300, 500)  # both brokers alike since RabbitMQ's 10 s stall was fixed (hubwake.py)
            runs[name] = _subprocess(ctx, url, private.url, [str(ctx.logdir), str(groups), str(ctx.pick(2, 3)),
                                                             str(n), str(n)])
        runs["table"] = table(ctx, private, brokers)
    finally:
        if rabbit is not None:
            rabbit.stop()
        private.stop()
    return runs


if __name__ == "__main__":
    import json
    import sys
    from pathlib import Path

    if sys.argv[1] == "table":
        logdir, (workers_, rounds_, cap_) = Path(sys.argv[2]), (int(a) for a in sys.argv[3:6])
        print(json.dumps(table_run(logdir, workers_, [int(g) for g in sys.argv[6].split(",")], rounds_, cap_)))
    else:
        logdir, count, rounds_, n_, n_ten_ = Path(sys.argv[1]), *(int(a) for a in sys.argv[2:6])
        print(json.dumps(scale_run(logdir, count, rounds_, n_, n_ten_)))
