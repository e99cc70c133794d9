"""Scenario 6: a rolling 10 MB state, each request changing one small field.

Ours: a rolling group on a persistent worker (``start_worker(state, opts)``,
the state by value), once with ``checkpoint_every=100`` and once with the
default (a checkpoint per request).  Requests carry only a small Msg1 that
names the group; the device's ``reply`` is the changed field.  Baseline:
plain Celery carrying the state in and out (``bench.plain_roll(state,
msg2)`` returns the new state, which the caller sends with its next request).

Also measured: the Redis memory of one rolling group after 1,000 requests
(its keys' ``MEMORY USAGE`` against its state's size), and recovery after a
SIGKILL of the host with a journal of 100 requests (the time from the kill to
the next answer, and the final state checked against every answer).
"""

from __future__ import annotations

import time
from typing import Any

from bench.scenarios import Context, Result
from bench.scenarios.large_message import make_msg1
from bench.stats import TIMES, Row, Summary, interleave, ms, noise_of, p50_p99
from bench.workers import Fleet, Worker, wait_until

SIZE = 10 * 1024 * 1024
EVERY_N = 100
GET_TIMEOUT = 180


def state(name: str) -> dict[str, Any]:
    """A 10 MB JSON-typical state (a list of 1 KB strings) with a small field the requests change."""
    return {**make_msg1("10 MB", SIZE), "device": "roll", "id": name, "version": 0}


def handle(name: str) -> dict[str, Any]:
    """The Msg1 callers send: it names the group; the state is the worker's."""
    return {"device": "roll", "id": name}


def host(name: str, opts: dict[str, Any]) -> str:
    """Place a rolling group holding a fresh 10 MB state; wait until a worker adopted it."""
    from bench.app import persistent

    group = persistent.start_worker(state(name), {"worker_timeout": 3600, **opts}).group
    wait_until(lambda: persistent.registry.owner(group).get("state") == "active", 120, 0.05,
               f"group {group} to be adopted")
    return group


def _ours(name: str) -> Any:
    from bench.app import persistent

    counter = iter(range(10**9))

    def call() -> Any:
        return persistent.resolve.delay(handle(name), {"path": "touch", "n": next(counter)}).get(timeout=GET_TIMEOUT)

    return call


def _plain() -> Any:
    from bench.app import plain_roll

    carried = {"state": state("plain")}
    counter = iter(range(10**9))

    def call() -> Any:
        carried["state"] = plain_roll.delay(carried["state"], {"n": next(counter)}).get(timeout=GET_TIMEOUT)
        return carried["state"]

    return call


def measure_latency(ctx: Context) -> dict[str, Summary]:
    ours_n, ours_1 = _ours("every-n"), _ours("every-1")
    plain = _plain()
    for call in (ours_n, ours_1, plain):
        call()  # warm: the worker has loaded nothing yet that the samples would pay for
    variants = {
        f"ours every-{EVERY_N}": (ours_n, ctx.pick(10, 40)),
        "ours every request": (ours_1, ctx.pick(3, 6)),
        "plain": (plain, ctx.pick(1, 2)),
    }
    return interleave(variants, ctx.pick(3, 8))


def group_memory(group: str) -> tuple[int, int]:
    """(bytes the group's keys use in Redis, bytes of its state as stored): counted, not timed."""
    from bench.app import persistent
    from celery_persistent.store import stored_key

    client, keys = persistent.redis, persistent.keys
    wait_until(lambda: not any(b":delivery:" in k for k in client.scan_iter(match=f"{keys.prefix}:{{{group}}}:*")),
               30, 0.05, f"the deliveries of {group} to be settled")
    names = list(client.scan_iter(match=f"{keys.prefix}:{{{group}}}:*", count=10_000))
    used = sum(int(client.memory_usage(k, samples=0) or 0) for k in names)
    state_bytes = int(client.hstrlen(stored_key(keys, persistent.registry.owner(group)["ref"]), "state"))
    return used, state_bytes


def measure_memory(ctx: Context, summaries: dict[str, Summary]) -> dict[str, dict[str, Any]]:
    """Each latency group brought to the same number of requests, then its Redis memory."""
    from bench.app import persistent

    total = ctx.pick(200, 1000)
    out = {}
    for name, label in (("every-n", f"ours every-{EVERY_N}"), ("every-1", "ours every request")):
        done = len(summaries[label].samples) + 1
        call = _ours(name)
        for _ in range(max(0, total - done)):
            call()
        group = persistent.group(handle(name))
        assert group is not None
        used, state_bytes = group_memory(group)
        journal = len(persistent.registry.journal(group))
        out[name] = {"requests": max(total, done), "used": used, "state": state_bytes, "journal": journal}
    return out


def measure_recovery(ctx: Context, fleet: Fleet) -> dict[str, Any]:
    """SIGKILL of the host of a group with a journal of 100 requests; time to the next answer."""
    from bench.app import persistent

    journaled = ctx.pick(100, 100)
    group = host("recovery", {"checkpoint_every": 1000})
    call = _ours("recovery")
    answers = [call() for _ in range(journaled)]
    assert len(persistent.registry.journal(group)) == journaled
    victim: Worker = next(w for w in fleet.workers if w.hostname == persistent.registry.owner(group)["host"])
    victim.kill()
    killed = time.perf_counter()
    answers.append(call())
    first = time.perf_counter() - killed
    final = persistent.resolve.delay(handle("recovery"), {"path": "peek"}).get(timeout=GET_TIMEOUT)
    versions = [a["version"] for a in answers]
    once = versions == list(range(1, journaled + 2)) and final["version"] == journaled + 1
    return {"journaled": journaled, "first_answer_s": first, "final_version": final["version"],
            "answers_in_order_once": once, "lease_ttl_s": persistent.settings.lease_ttl,
            "new_host": persistent.registry.owner(group)["host"], "killed": victim.hostname}


def rows(summaries: dict[str, Summary], memory: dict[str, dict[str, Any]], recovery: dict[str, Any]) -> list[Row]:
    plain = summaries["plain"]
    out = []
    for label, target in ((f"ours every-{EVERY_N}", 20), ("ours every request", None)):
        ours = summaries[label]
        speedup = plain.median / ours.median
        out.append(Row(
            "6 rolling state", f"p50, 10 MB rolling state, one small field changed: persistent ({label[5:]}) "
            "vs plain Celery carrying the state in and out",
            p50_p99(ours), p50_p99(plain), speedup, f"{speedup:.1f}{TIMES} faster",
            f"≥ {target}{TIMES} faster" if target else "", (speedup >= target) if target else None,
            noise_of(ours, plain), {"ours": ours.as_dict(), "baseline": plain.as_dict()}))
    for name, label in (("every-n", f"every-{EVERY_N}"), ("every-1", "every request")):
        m = memory[name]
        ratio = m["used"] / m["state"]
        out.append(Row(
            "6 rolling state", f"Redis memory of one rolling group after {m['requests']} requests ({label})",
            f"{m['used'] / 1e6:.2f} MB", f"state {m['state'] / 1e6:.2f} MB", ratio, f"{ratio:.2f}{TIMES} its state",
            f"≤ 2{TIMES}", ratio <= 2, None, m))
    r = recovery
    out.append(Row(
        "6 rolling state", f"SIGKILL of the host with a journal of {r['journaled']} requests: "
        "time to the next answer (final state: every answered request applied once)",
        f"{r['first_answer_s']:.2f} s", f"lease TTL {r['lease_ttl_s']:g} s", None,
        "state correct" if r["answers_in_order_once"] else "STATE WRONG",
        "every answered request once", r["answers_in_order_once"], None, r))
    return out


def run(ctx: Context) -> Result:
    from bench.app import DEFAULT_QUEUE

    result = Result(
        "rolling", "Rolling state",
        f"1 ordinary solo worker (the baseline) and 2 persistent workers; a 10 MB rolling state (a list of 1 KB "
        f"strings); each request changes one small field. Persistent: the state lives on its worker and in Redis "
        f"(`checkpoint_every={EVERY_N}`, and every request), callers send a small Msg1 naming the group and get "
        "the changed field back (`Device.reply`). Plain: `plain_roll(state, change)` returns the new state, "
        "which the caller sends with its next request.")
    with Fleet(ctx.logdir) as fleet:
        unused = f"{ctx.prefix}.unused"
        fleet.start({"queues": [DEFAULT_QUEUE]}, {"queues": [unused], "persistent": True},
                    {"queues": [unused], "persistent": True})
        host("every-n", {"checkpoint_every": EVERY_N})
        host("every-1", {"checkpoint_every": 1})
        summaries = measure_latency(ctx)
        memory = measure_memory(ctx, summaries)
        recovery = measure_recovery(ctx, fleet)
    result.rows = rows(summaries, memory, recovery)
    result.data = {"summaries": {k: v.as_dict() for k, v in summaries.items()}, "memory": memory,
                   "recovery": recovery, "state_bytes": SIZE, "every_n": EVERY_N}
    result.notes += [
        f"Memory: the group's keys (`<prefix>:{{group}}:*`: owner, checkpoint, journal) by `MEMORY USAGE`, "
        f"after its deliveries were settled; journal at the end: every-{EVERY_N} "
        f"{memory['every-n']['journal']} records, every request {memory['every-1']['journal']}.",
        f"Recovery: the next request was sent right after the SIGKILL; it waited for the lease to lapse "
        f"(`persistent_lease_ttl` {recovery['lease_ttl_s']:g} s), the reaper, the adoption by the other worker, "
        f"the load of the checkpoint and the replay of {recovery['journaled']} journaled requests.",
        f"p50 every request {ms(summaries['ours every request'].median)}: one JSON encoding of the state per "
        "request, sent to Redis uncopied (see Guarantees §4).",
    ]
    return result


def plot(result: Result, path: Any) -> None:
    import matplotlib.pyplot as plt

    s = result.data["summaries"]
    labels = list(s)
    fig, ax = plt.subplots(figsize=(7, 4))
    med = [s[k]["median"] * 1000 for k in labels]
    p99 = [s[k]["p99"] * 1000 for k in labels]
    ax.bar([i - 0.2 for i in range(len(labels))], med, width=0.4, label="p50")
    ax.bar([i + 0.2 for i in range(len(labels))], p99, width=0.4, label="p99", alpha=0.6)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yscale("log")
    ax.set_ylabel("latency per request (ms)")
    ax.set_title("Rolling 10 MB state, one small field changed per request")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
