"""Scenario 1: a large base message, through a persistent worker or by value.

Ours: ``start_worker(ref(msg1), static_worker=True)`` on a persistent worker,
then ``persistent.resolve.delay(ref, small_msg2).get()`` sequentially.
Baseline: ``plain.delay(msg1, msg2).get()`` on an ordinary solo worker, and a
tiny plain round trip on the same worker.

Also (issue 12): the 10 MB Msg1 passed by value to its hosted group (the
client computes its digest at every request), and the seed's test device,
whose grouper calls ``default_grouper(msg1)`` on the stored Msg1 (which
carries its digest: no re-hash), 10 MB against a tiny Msg1 on the same worker.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from bench.scenarios import Context, Result
from bench.stats import TIMES, Row, Summary, interleave, ms, noise_of, p50_p99
from bench.workers import Fleet, wait_until

SIZES = {"10 KB": 10 * 1024, "1 MB": 1024 * 1024, "10 MB": 10 * 1024 * 1024}
ITEM = 1000  # characters per list item of Msg1["data"]
TINY1 = {"device": "blob", "id": "tiny", "data": ["x"]}
SEED_TINY = {"device": "seed", "id": "tiny", "data": ["x"]}
GET_TIMEOUT = 120


def make_msg1(label: str, size: int, device: str = "blob") -> dict[str, Any]:
    """A JSON-typical base message of about ``size`` bytes: a list of 1 KB strings."""
    blob = os.urandom(size // 2).hex()
    data = [blob[i: i + ITEM] for i in range(0, len(blob), ITEM)]
    return {"device": device, "id": label.replace(" ", ""), "data": data}


def _plain(msg1: Any) -> Any:
    from bench.app import plain

    counter = iter(range(10**9))
    return lambda: plain.delay(msg1, {"path": "peek", "n": next(counter)}).get(timeout=GET_TIMEOUT)


def _ours(msg1: Any, opts: Any = None) -> Any:
    from bench.app import persistent

    counter = iter(range(10**9))

    def call() -> Any:
        return persistent.resolve.delay(msg1, {"path": "peek", "n": next(counter)}, opts).get(timeout=GET_TIMEOUT)

    return call


def host(msg1: dict[str, Any]) -> Any:
    """Place Msg1 on the persistent worker (static) and wait until the worker adopted it."""
    from bench.app import persistent

    ref = persistent.ref(msg1)
    handle = persistent.start_worker(ref, {"static_worker": True, "worker_timeout": 3600})
    wait_until(lambda: persistent.registry.owner(handle.group).get("state") == "active", 60, 0.05,
               f"group {handle.group} to be adopted")
    return ref


def measure(ctx: Context) -> tuple[dict[str, Summary], dict[str, float]]:
    """Interleaved rounds over every size; returns the summaries and the cold first requests."""
    msgs = {label: make_msg1(label, size) for label, size in SIZES.items()}
    refs = {label: host(msg) for label, msg in msgs.items()}
    seed = {"seed 10 MB": make_msg1("10 MB", SIZES["10 MB"], "seed"), "seed tiny": SEED_TINY}
    seed_refs = {label: host(msg) for label, msg in seed.items()}
    cold = {}
    for label, ref in refs.items():
        start = time.perf_counter()
        answer = _ours(ref)()  # the worker loads Msg1 from the store once
        cold[label] = time.perf_counter() - start
        assert answer["items"] == len(msgs[label]["data"]), answer
        _plain(msgs[label])()
    for ref in seed_refs.values():
        _ours(ref)()  # the worker loads Msg1 once (cold)
    _plain(TINY1)()
    k = ctx.pick(10, 25)
    plain_k = {"10 KB": ctx.pick(10, 25), "1 MB": ctx.pick(3, 5), "10 MB": ctx.pick(1, 2)}
    variants: dict[str, tuple[Any, int]] = {"plain tiny": (_plain(TINY1), k)}
    for label in SIZES:
        variants[f"ours {label}"] = (_ours(refs[label]), k)
        variants[f"plain {label}"] = (_plain(msgs[label]), plain_k[label])
    # Passing the 10 MB Msg1 itself (not its ref) to the hosted group: the client hashes it each time.
    variants["ours 10 MB by value"] = (_ours(msgs["10 MB"]), k)
    # The seed's test device: its grouper hashes Msg1 (default_grouper) unless Msg1 carries its digest.
    for label, ref in seed_refs.items():
        variants[label] = (_ours(ref), k)
    variants["seed 10 MB by value"] = (_ours(seed["seed 10 MB"]), k)
    return {**interleave(variants, ctx.pick(3, 8)), **hashing(ctx, msgs["10 MB"])}, cold


def hashing(ctx: Context, msg1: dict[str, Any]) -> dict[str, Summary]:
    """In the runner (a client): the hash alone, and what a request by value pays for Msg1's digest, now and before.

    "before" is the encoder and hash of before issue 12: the whole canonical
    encoding built (``encode``, a join into one 10 MB buffer), then BLAKE2b.
    """
    from blake3 import blake3

    from celery_persistent.messages import encode, fingerprint, strip_private

    encoded = encode(strip_private(msg1))
    prefix = b"%d:" % len(encoded)

    def blake2b_before() -> str:
        h = hashlib.blake2b(prefix, digest_size=16)
        h.update(encode(strip_private(msg1)))
        return h.hexdigest()

    variants: dict[str, tuple[Any, int]] = {
        "hash blake3": (lambda: blake3(encoded).hexdigest(16), 10),
        "hash blake2b": (lambda: hashlib.blake2b(encoded, digest_size=16).hexdigest(), 10),
        "digest now": (lambda: fingerprint(msg1, "msg1", 1 << 30), 10),
        "digest before": (blake2b_before, 10),
    }
    return interleave(variants, ctx.pick(3, 8))


def faster(speedup: float) -> str:
    if speedup >= 1:
        return f"{speedup:.1f}{TIMES} faster"
    return f"{1 / speedup:.2f}{TIMES} slower"


def rows(s: dict[str, Summary]) -> list[Row]:
    out = []
    for label in SIZES:
        ours, base = s[f"ours {label}"], s[f"plain {label}"]
        speedup = base.median / ours.median
        is_target = label == "10 MB"
        out.append(Row(
            "1 large Msg1", f"p50 latency, Msg1 {label}: persistent (ref) vs plain by value",
            p50_p99(ours), p50_p99(base), speedup, faster(speedup),
            f"≥ 50{TIMES} faster" if is_target else "", (speedup >= 50) if is_target else None,
            noise_of(ours, base), {"ours": ours.as_dict(), "baseline": base.as_dict()}))
    ours, tiny = s["ours 10 MB"], s["plain tiny"]
    ratio = ours.median / tiny.median
    out.append(Row("1 large Msg1", "persistent 10 MB p50 vs a tiny plain Celery round trip",
                   p50_p99(ours), p50_p99(tiny), ratio, f"{ratio:.2f}{TIMES}", f"≤ 1.5{TIMES}", ratio <= 1.5,
                   noise_of(ours, tiny), {"ours": ours.as_dict(), "baseline": tiny.as_dict()}))
    by_value, plain10 = s["ours 10 MB by value"], s["plain 10 MB"]
    ratio = plain10.median / by_value.median
    out.append(Row("1 large Msg1", "10 MB Msg1 passed by value to the hosted group (no ref) vs plain",
                   p50_p99(by_value), p50_p99(plain10), ratio, faster(ratio), f"≥ 20{TIMES} faster", ratio >= 20,
                   noise_of(by_value, plain10), {"ours": by_value.as_dict(), "baseline": plain10.as_dict()}))
    seed10, seed_tiny = s["seed 10 MB"], s["seed tiny"]
    ratio = seed10.median / seed_tiny.median
    out.append(Row("1 large Msg1", "seed's test device (grouper: default_grouper(Msg1)), 10 MB Msg1 by ref vs a "
                   "tiny Msg1, same persistent worker", p50_p99(seed10), p50_p99(seed_tiny), ratio,
                   f"{ratio:.2f}{TIMES}", f"≤ 1.5{TIMES}", ratio <= 1.5, noise_of(seed10, seed_tiny),
                   {"ours": seed10.as_dict(), "baseline": seed_tiny.as_dict()}))
    seed_value = s["seed 10 MB by value"]
    ratio = plain10.median / seed_value.median
    out.append(Row("1 large Msg1", "… the seed's device, 10 MB Msg1 passed by value vs plain",
                   p50_p99(seed_value), p50_p99(plain10), ratio, faster(ratio), "", None,
                   noise_of(seed_value, plain10), {"ours": seed_value.as_dict(), "baseline": plain10.as_dict()}))
    for ours_name, base_name, measure in (
        ("hash blake3", "hash blake2b",
         "hash of a 10 MB buffer (in the client): BLAKE3 (`blake3`, used) vs hashlib BLAKE2b"),
        ("digest now", "digest before",
         "digest of the 10 MB Msg1 by value (check, encode, hash): one pass + BLAKE3 vs encode, join + BLAKE2b "
         "(before issue 12)"),
    ):
        ours, base = s[ours_name], s[base_name]
        ratio = base.median / ours.median
        out.append(Row("1 large Msg1", measure, p50_p99(ours), p50_p99(base), ratio, faster(ratio), "", None,
                       noise_of(ours, base), {"ours": ours.as_dict(), "baseline": base.as_dict()}))
    return out


def run(ctx: Context) -> Result:
    from bench.app import DEFAULT_QUEUE

    result = Result(
        "large_message", "Large base message",
        "1 persistent worker (`-P solo --persistent`, static groups) vs 1 ordinary solo worker; "
        "requests sent one at a time from one client; Msg1 is a list of 1 KB strings.")
    with Fleet(ctx.logdir) as fleet:
        fleet.start({"queues": [DEFAULT_QUEUE]},
                    {"queues": [f"{ctx.prefix}.unused"], "persistent": True})
        summaries, cold = measure(ctx)
    result.rows = rows(summaries)
    result.data = {"summaries": {k: v.as_dict() for k, v in summaries.items()},
                   "cold_first_request_s": cold, "sizes": SIZES}
    result.notes.append("The first request of each hosted group loads Msg1 from the store once (cold): "
                        + ", ".join(f"{k} {ms(v)}" for k, v in cold.items()) + "; it is not in the samples.")
    result.notes.append("By value, the client computes Msg1's digest at every request (one pass, BLAKE3); the "
                        "seed's test device (`seed` in bench/app.py) groups by `default_grouper(msg1)`, which "
                        "reads the digest a stored or loaded Msg1 carries instead of hashing it. The hash rows "
                        "are timed in the runner, 10 per round.")
    return result


def plot(result: Result, path: Any) -> None:
    import matplotlib.pyplot as plt

    s = result.data["summaries"]
    sizes = list(SIZES.values())
    labels = list(SIZES)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, style in (("ours", "o-"), ("plain", "s--")):
        med = [s[f"{name} {lb}"]["median"] * 1000 for lb in labels]
        p99 = [s[f"{name} {lb}"]["p99"] * 1000 for lb in labels]
        text = "persistent worker (ref)" if name == "ours" else "plain Celery, Msg1 by value"
        line = ax.plot(sizes, med, style, label=f"{text}, p50")[0]
        ax.plot(sizes, p99, style, alpha=0.4, color=line.get_color(), label=f"{text}, p99")
    ax.axhline(s["plain tiny"]["median"] * 1000, color="grey", linestyle=":", label="tiny plain round trip, p50")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sizes, labels)
    ax.set_xlabel("Msg1 size")
    ax.set_ylabel("latency per request (ms)")
    ax.set_title("Large base message: per-request latency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
