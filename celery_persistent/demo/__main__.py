"""Coalescing and persistent workers, shown on real `celery worker` processes.

Runs on the broker in $CELERY_BROKER_URL (a redis:// URL) or, when none is
configured, on an embedded Valkey started for the demo.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def main() -> int:
    broker = os.environ.get("CELERY_BROKER_URL")
    if broker:
        print(f"broker: {broker} (from CELERY_BROKER_URL)")
    else:
        from celery_persistent.embedded import start_embedded

        broker = start_embedded() + "/0"
        print(f"broker: embedded Valkey at {broker} (no CELERY_BROKER_URL configured)")
    os.environ["CP_DEMO_BROKER"] = broker
    from celery_persistent.demo.app import persistent

    run = uuid.uuid4().hex[:6]  # names of this run, so runs never see each other's state
    workers = [
        spawn("ordinary", ["-P", "prefork", "-c", "2"]),
        spawn("persistent", ["-P", "solo", "--persistent", "-Q", "persistent-demo-none"]),
    ]
    try:
        wait_for_workers(persistent)
        coalescing(persistent, run)
        serialization(persistent, run)
        persistent_worker(persistent, run)
        rolling_state(persistent, run)
        print_groups(persistent)
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for proc in workers:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    print("\ndone.")
    return 0


LOGDIR = tempfile.mkdtemp(prefix="celery-persistent-demo-")


def spawn(name: str, args: list[str]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "celery", "-A", "celery_persistent.demo.app", "worker", "-n", f"{name}@demo",
           "--without-gossip", "--without-mingle", "-l", "info", *args]
    log = open(os.path.join(LOGDIR, f"{name}.log"), "wb")  # noqa: SIM115 - lives as long as the worker
    return subprocess.Popen(cmd, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT)


def wait_for_workers(persistent: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replies = persistent.app.control.ping(timeout=0.5) or []
        if any("ordinary@demo" in r for r in replies) and persistent.workers():
            print("workers: ordinary@demo (prefork, 2 processes), persistent@demo (solo, --persistent); "
                  f"logs in {LOGDIR}\n")
            return
    raise SystemExit(f"the demo workers did not start; see their logs in {LOGDIR}")


def coalescing(persistent: Any, run: str) -> None:
    print("1. Coalescing: 20 identical requests for a 1 s computation, sent at once")
    msg1, msg2 = {"device": "slow", "run": run}, {"path": "square", "x": 12}
    started = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: persistent.resolve.delay(msg1, msg2), range(20)))
    answers = [r.get(timeout=30) for r in results]
    wall = time.monotonic() - started
    runs = int(persistent.redis.get(f"persistent-demo:executions:{run}") or 0)
    print(f"   {len(answers)} callers, {len({r.id for r in results})} task ids, {runs} execution(s), "
          f"all answered {answers[0]['square']} in {wall:.2f} s (one execution takes 1.00 s)\n")


def serialization(persistent: Any, run: str) -> None:
    print("2. Serialization: 5 different deposits to one account group, without a persistent worker")
    msg1 = {"device": "account", "owner": f"ann-{run}", "balance": 0}
    results = [persistent.resolve.delay(msg1, {"path": "deposit", "amount": a}) for a in (10, 20, 30, 40, 50)]
    print(f"   each ran alone, in the order sent: balances {[r.get(timeout=30)['balance'] for r in results]}"
          " (each against the Msg1 it was sent with)\n")


def persistent_worker(persistent: Any, run: str) -> None:
    from celery_persistent.demo.app import plain_score

    print("3. Persistent worker: a 400,000-weight model kept in memory, vs a plain task carrying it each time")
    weights = [float(i % 97) for i in range(400_000)]
    model = {"device": "model", "name": f"m-{run}", "weights": weights}
    ref = persistent.ref(model)
    handle = persistent.start_worker(ref, {"static_worker": True, "worker_timeout": 60})
    print(f"   placed group {handle.group} on {handle.hostname}, queue {handle.queue}; "
          f"Msg1 stored once as {ref.digest[:12]}... ({len(json.dumps(model)) / 1e6:.1f} MB of JSON)")
    persistent.resolve.delay(ref, {"path": "score", "features": [0]}).get(timeout=60)  # warm up
    timed, objects = [], set()
    for i in range(10):
        t = time.perf_counter()
        answer = persistent.resolve.delay(ref, {"path": "score", "features": [i, i + 1]}).get(timeout=30)
        timed.append(time.perf_counter() - t)
        objects.add(answer["msg1_object"])
    plain = []
    for i in range(3):
        t = time.perf_counter()
        plain_score.delay(model, {"features": [i, i + 1]}).get(timeout=60)
        plain.append(time.perf_counter() - t)
    p50, q50 = statistics.median(timed), statistics.median(plain)
    print(f"   persistent: {p50 * 1000:.1f} ms per request (median of 10), one in-memory Msg1 object: "
          f"{len(objects) == 1}")
    print(f"   plain task: {q50 * 1000:.1f} ms per request (median of 3), {q50 / p50:.0f}x slower\n")


def rolling_state(persistent: Any, run: str) -> None:
    print("4. Rolling state: a persistent worker for an account; each result becomes the next Msg1")
    msg1 = {"device": "account", "owner": f"bob-{run}", "balance": 100}
    persistent.start_worker(msg1, {"worker_timeout": 60})
    results = [persistent.resolve.delay(msg1, {"path": "deposit", "amount": 5, "n": n}) for n in range(10)]
    balances = [r.get(timeout=30)["balance"] for r in results]
    print(f"   10 deposits of 5: balances {balances}\n")


def print_groups(persistent: Any) -> None:
    print("5. `celery persistent status` would show these hosted groups:")
    for g in persistent.groups():
        kind = "static" if g["static"] else "rolling"
        print(f"   {g['group']:<20} on {g['hostname']:<16} {kind:<8} executions={g['executions']:<3} "
              f"Msg1={g['msg1_bytes'] / 1e6:.2f} MB idle={g['idle']}s")
    print("   counters:", persistent.metrics.read())


if __name__ == "__main__":
    sys.exit(main())
