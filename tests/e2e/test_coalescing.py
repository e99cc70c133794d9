"""Coalescing and serialization end to end: real Redis, real `celery worker`s.

Every test here runs against both a solo worker and a prefork worker.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from celery import chord

from tests.conftest import evidence_key
from tests.support import Worker, wait_until

EXEC = 1.0  # seconds one test execution sleeps


@pytest.fixture(scope="module", params=["solo", "prefork"])
def worker(request, tmp_path_factory) -> Iterator[Worker]:
    concurrency = 4 if request.param == "prefork" else 1
    w = Worker(pool=request.param, concurrency=concurrency,
               logdir=tmp_path_factory.mktemp(request.param)).wait_ready()
    yield w
    w.stop()


def runs(rdb, tag: str) -> int:
    return int(rdb.get(evidence_key("runs", tag)) or 0)


def intervals(rdb, tag: str) -> list[tuple[float, float]]:
    raw = rdb.lrange(evidence_key("intervals", tag), 0, -1)
    return [tuple(map(float, item.split()[:2])) for item in raw]


def test_deduplicated_execution(worker, persistent, rdb, uid) -> None:
    """The seed's deduplicated_execution_test: two identical calls 100 ms apart."""
    msg1 = {"device": "work", "id": uid}
    msg2 = {"path": "run", "sleep": EXEC, "n": 1}
    started = time.monotonic()
    first = persistent.resolve.delay(msg1, msg2)
    wait_until(lambda: runs(rdb, uid) == 1, message="the first execution to start")
    time.sleep(0.1)  # the seed's 100 ms gap between the two calls
    second = persistent.resolve.delay(msg1, msg2)
    assert first.id != second.id
    assert first.get(timeout=20) == second.get(timeout=20)
    elapsed = time.monotonic() - started
    assert runs(rdb, uid) == 1
    # Two executions would take at least 2 * EXEC; one shared execution does not.
    assert elapsed < 2 * EXEC


def test_fifty_concurrent_identical_requests_execute_once(worker, persistent, rdb, uid) -> None:
    msg1 = {"device": "work", "id": uid}
    msg2 = {"path": "run", "sleep": 0.5, "echo": uid}
    before = persistent.metrics.read()
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda _: persistent.resolve.delay(msg1, msg2), range(50)))
    assert len({r.id for r in results}) == 50
    answers = [r.get(timeout=30) for r in results]
    assert all(a == answers[0] for a in answers)
    assert answers[0]["echo"] == uid
    assert runs(rdb, uid) == 1
    after = persistent.metrics.read()
    assert after["coalesced"] - before["coalesced"] == 49
    assert after["executions"] - before["executions"] == 1


def test_same_group_never_overlaps_and_keeps_order(worker, persistent, rdb, uid) -> None:
    msg1 = {"device": "serial", "id": uid}
    results = [persistent.resolve.delay(msg1, {"path": "run", "sleep": 0.05, "n": n}) for n in range(12)]
    assert [r.get(timeout=30)["n"] for r in results] == list(range(12))
    spans = sorted(intervals(rdb, uid))
    assert len(spans) == 12
    for (_, end), (next_start, _) in itertools.pairwise(spans):
        assert end <= next_start, "two executions of one group overlapped"
    order = [int(x) for x in rdb.lrange(evidence_key("order", uid), 0, -1)]
    assert order == list(range(12))


def test_waiter_with_other_msg2_runs_after_leader(worker, persistent, rdb, uid) -> None:
    msg1 = {"device": "serial", "id": uid}
    lead = persistent.resolve.delay(msg1, {"path": "run", "sleep": 0.5, "n": 1})
    same = persistent.resolve.delay(msg1, {"path": "run", "sleep": 0.5, "n": 1})
    other = persistent.resolve.delay(msg1, {"path": "run", "sleep": 0.0, "n": 2})
    assert other.get(timeout=20)["n"] == 2
    assert lead.get(timeout=20) == same.get(timeout=20)
    assert runs(rdb, uid) == 2


def test_chord_with_duplicate_members_completes_once(worker, app, persistent, rdb, uid) -> None:
    from tests.apps.basic import collect

    msg1 = {"device": "work", "id": uid}
    x = {"path": "run", "sleep": 0.5, "echo": "x"}
    y = {"path": "run", "sleep": 0.0, "echo": "y"}
    header = [persistent.resolve.s(msg1, x), persistent.resolve.s(msg1, x), persistent.resolve.s(msg1, y)]
    result = chord(header)(collect.s())
    gathered = result.get(timeout=30)
    assert [item["echo"] for item in gathered] == ["x", "x", "y"]
    assert gathered[0] == gathered[1]
    assert runs(rdb, uid) == 2


def test_links_and_errbacks_fire_for_coalesced_requests(worker, persistent, rdb, uid) -> None:
    from tests.apps.basic import mark, mark_error

    ok1 = {"device": "work", "id": uid}
    ok2 = {"path": "run", "sleep": 0.5}
    for label in "abc":  # two waiters: their results are stored together, their links still fire
        persistent.resolve.apply_async((ok1, ok2), link=mark.s(f"{uid}-{label}"))
    bad1 = {"device": "serial", "id": uid + "f"}
    bad2 = {"path": "fail", "sleep": 0.5, "why": "test"}
    failures = [persistent.resolve.apply_async((bad1, bad2), link_error=mark_error.s(f"{uid}-e{i}"))
                for i in range(2)]
    for failure in failures:
        with pytest.raises(ValueError, match="failed on purpose"):
            failure.get(timeout=20)
    wait_until(lambda: all(rdb.llen(evidence_key("marks", f"{uid}-{label}")) == 1 for label in "abc"),
               message="every link to fire")
    wait_until(lambda: all(rdb.lrange(evidence_key("errors", f"{uid}-e{i}"), 0, -1) == [b"ValueError"]
                           for i in range(2)), message="both errbacks to fire")
    assert runs(rdb, uid) == 1
    assert runs(rdb, uid + "f") == 1


def test_requests_sent_around_apply_async_still_coalesce(worker, app, persistent, rdb, uid) -> None:
    if worker.concurrency == 1:
        pytest.skip("one solo worker runs raw sends one after the other: they never overlap")
    msg1 = {"device": "work", "id": uid}
    msg2 = {"path": "run", "sleep": 0.5, "echo": "raw"}
    direct = [app.send_task("persistent.resolve", args=[msg1, msg2]) for _ in range(2)]
    answers = [r.get(timeout=20) for r in direct]
    assert answers[0] == answers[1]
    assert runs(rdb, uid) == 1


def test_chain_after_coalesced_request(worker, persistent, uid) -> None:
    counter = {"device": "counter", "id": uid, "count": 0}
    add = {"path": "add", "by": 1}
    # Two identical chain heads: the second coalesces, and its chain still runs.
    first = (persistent.resolve.s(counter, add) | persistent.resolve.s(add)).apply_async()
    second = (persistent.resolve.s(counter, add) | persistent.resolve.s(add)).apply_async()
    assert first.get(timeout=20)["count"] == 2
    assert second.get(timeout=20)["count"] == 2
