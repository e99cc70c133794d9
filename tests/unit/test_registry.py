"""The registry's Lua scripts, through ``Registry``, against the real Redis."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import redis

from celery_persistent.keys import KeySpace
from celery_persistent.records import RequestRecord
from celery_persistent.protocol import ExpiredKind, Submitted, SubmitOutcome
from celery_persistent.registry import Registry, now_ms
from tests.conftest import LEASE_TTL, QUEUE_TTL

GROUP = "g-test"


def record(key: str, rid: str | None = None) -> RequestRecord:
    return RequestRecord(
        id=rid or uuid.uuid4().hex,
        key=key,
        task="persistent.resolve",
        options={"queue": "persistent.g-test", "root_id": "root-1"},
        args=[{"device": "d", "n": 1}, {"path": "p", "key": key}],
        kwargs={},
        stack=["outer-group"],
    )


def lease(client: redis.Redis, keys: KeySpace, group: str = GROUP) -> float | None:
    return client.zscore(keys.leases(), group)


def backdate(client: redis.Redis, keys: KeySpace, group: str = GROUP) -> None:
    """Move the group's lease deadline into the past, as if its holder stopped renewing."""
    assert client.zadd(keys.leases(), {group: now_ms() - 1_000}, xx=True, ch=True) == 1


def snapshot(client: redis.Redis, keys: KeySpace, group: str, key_list: list[str]) -> dict[str, Any]:
    return {
        "owner": client.hgetall(keys.owner(group)),
        "inflight": client.hgetall(keys.inflight(group)),
        "pending": client.lrange(keys.pending(group), 0, -1),
        "waiters": {k: client.lrange(keys.waiters(group, k), 0, -1) for k in key_list},
        "lease": lease(client, keys, group),
    }


def lead(registry: Registry, key: str = "k-a", group: str = GROUP) -> tuple[RequestRecord, Submitted]:
    rec = record(key)
    sub = registry.submit(group, rec)
    assert sub.outcome is SubmitOutcome.LEADER
    return rec, sub


# --- submit ------------------------------------------------------------------------


def test_first_submit_leads(registry: Registry, client: redis.Redis, keys: KeySpace) -> None:
    rec = record("k-a")
    before = now_ms()
    sub = registry.submit(GROUP, rec)
    after = now_ms()

    assert sub.outcome is SubmitOutcome.LEADER
    assert sub.other_id == rec.id
    assert registry.owner(GROUP) == {
        "mode": "leader", "token": sub.token, "task_id": rec.id, "key": "k-a", "state": "queued"
    }
    assert RequestRecord.loads(client.hget(keys.owner(GROUP), "request")) == rec
    assert client.hgetall(keys.inflight(GROUP)) == {b"k-a": rec.id.encode()}
    deadline = lease(client, keys)
    assert deadline is not None
    assert before + QUEUE_TTL * 1000 <= deadline <= after + QUEUE_TTL * 1000


def test_same_key_waits_on_the_leader(registry: Registry, client: redis.Redis, keys: KeySpace) -> None:
    leader, sub = lead(registry)
    w1, w2 = record("k-a"), record("k-a")

    first, second = registry.submit(GROUP, w1), registry.submit(GROUP, w2)

    assert (first.outcome, first.other_id) == (SubmitOutcome.WAIT, leader.id)
    assert (second.outcome, second.other_id) == (SubmitOutcome.WAIT, leader.id)
    waiting = [RequestRecord.loads(r) for r in client.lrange(keys.waiters(GROUP, "k-a"), 0, -1)]
    assert waiting == [w1.waiter(), w2.waiter()]
    assert all(w.args is None and w.kwargs is None for w in waiting)
    assert registry.owner(GROUP)["token"] == sub.token  # the leader is unchanged
    assert client.llen(keys.pending(GROUP)) == 0


def test_different_key_on_a_busy_group_is_queued(
    registry: Registry, client: redis.Redis, keys: KeySpace
) -> None:
    leader, sub = lead(registry)
    queued = record("k-b")

    result = registry.submit(GROUP, queued)

    assert (result.outcome, result.other_id) == (SubmitOutcome.QUEUED, leader.id)
    assert [RequestRecord.loads(r) for r in client.lrange(keys.pending(GROUP), 0, -1)] == [queued]
    assert client.hget(keys.inflight(GROUP), "k-b") == queued.id.encode()
    assert registry.owner(GROUP)["task_id"] == leader.id
    assert registry.owner(GROUP)["token"] == sub.token
    # A request with the queued request's key coalesces onto it, not onto the leader.
    same_as_queued = registry.submit(GROUP, record("k-b"))
    assert (same_as_queued.outcome, same_as_queued.other_id) == (SubmitOutcome.WAIT, queued.id)


def test_groups_are_independent(registry: Registry) -> None:
    lead(registry, "k-a", group="g-one")
    other = registry.submit("g-two", record("k-a"))
    assert other.outcome is SubmitOutcome.LEADER


# --- claim and renew ---------------------------------------------------------------


def test_claim_needs_the_owner_token(registry: Registry, client: redis.Redis, keys: KeySpace) -> None:
    _, sub = lead(registry)
    queued_deadline = lease(client, keys)

    assert registry.claim(GROUP, "not-the-token") is False
    assert registry.owner(GROUP)["state"] == "queued"
    assert lease(client, keys) == queued_deadline

    before = now_ms()
    assert registry.claim(GROUP, sub.token) is True
    assert registry.owner(GROUP)["state"] == "running"
    deadline = lease(client, keys)
    assert deadline is not None and deadline >= before + LEASE_TTL * 1000
    # A second copy of the same message (a redelivery) never runs beside the first.
    assert registry.claim(GROUP, sub.token) is False


def test_claim_on_an_unknown_group_fails(registry: Registry, client: redis.Redis, keys: KeySpace) -> None:
    assert registry.claim("g-nobody", "any-token") is False
    assert client.exists(keys.owner("g-nobody")) == 0
    assert lease(client, keys, "g-nobody") is None


def test_renew_only_by_the_token_holder(registry: Registry, client: redis.Redis, keys: KeySpace) -> None:
    _, sub = lead(registry)
    queued_deadline = lease(client, keys)

    assert registry.renew([(GROUP, "stale-token")]) == [False]
    assert lease(client, keys) == queued_deadline  # not moved

    before = now_ms()
    assert registry.renew([(GROUP, sub.token)]) == [True]
    deadline = lease(client, keys)
    assert deadline is not None and deadline >= before + LEASE_TTL * 1000


def test_renew_many_in_one_call(registry: Registry, client: redis.Redis, keys: KeySpace) -> None:
    _, one = lead(registry, group="g-one")
    _, two = lead(registry, group="g-two")
    two_deadline = lease(client, keys, "g-two")

    assert registry.renew([]) == []
    assert registry.renew([("g-one", one.token), ("g-two", one.token), ("g-none", two.token)]) == [
        True,
        False,
        False,
    ]
    assert lease(client, keys, "g-two") == two_deadline
    assert lease(client, keys, "g-none") is None  # a failed renew creates nothing


# --- finish ------------------------------------------------------------------------


def test_finish_returns_waiters_and_hands_on_in_fifo_order(
    registry: Registry, client: redis.Redis, keys: KeySpace
) -> None:
    _, sub = lead(registry, "k-a")
    assert registry.claim(GROUP, sub.token)
    a_waiters = [record("k-a"), record("k-a")]
    queued = [record("k-b"), record("k-c"), record("k-d")]
    for rec in a_waiters:
        assert registry.submit(GROUP, rec).outcome is SubmitOutcome.WAIT
    for rec in queued:
        assert registry.submit(GROUP, rec).outcome is SubmitOutcome.QUEUED
    b_waiter = record("k-b")
    assert registry.submit(GROUP, b_waiter).other_id == queued[0].id

    done = registry.finish(GROUP, "k-a", sub.token)

    assert done.stale is False
    assert done.waiters == [w.waiter() for w in a_waiters]
    assert done.next_request == queued[0]
    assert done.next_token and done.next_token != sub.token
    assert registry.owner(GROUP) == {
        "mode": "leader",
        "token": done.next_token,
        "task_id": queued[0].id,
        "key": "k-b",
        "state": "queued",
    }
    assert client.llen(keys.waiters(GROUP, "k-a")) == 0
    assert client.hget(keys.inflight(GROUP), "k-a") is None
    # The old leader is fenced off.
    assert registry.claim(GROUP, sub.token) is False
    assert registry.renew([(GROUP, sub.token)]) == [False]
    assert registry.finish(GROUP, "k-a", sub.token).stale is True
    # The new owner runs, and the hand-over goes on in submission order.
    assert registry.claim(GROUP, done.next_token) is True
    second = registry.finish(GROUP, "k-b", done.next_token)
    assert second.waiters == [b_waiter.waiter()]
    assert second.next_request == queued[1]
    third = registry.finish(GROUP, "k-c", second.next_token)
    assert third.waiters == []
    assert third.next_request == queued[2]
    assert len({sub.token, done.next_token, second.next_token, third.next_token}) == 4


def test_finish_with_a_stale_token_changes_nothing(
    registry: Registry, client: redis.Redis, keys: KeySpace
) -> None:
    _, sub = lead(registry, "k-a")
    registry.submit(GROUP, record("k-a"))
    registry.submit(GROUP, record("k-b"))
    before = snapshot(client, keys, GROUP, ["k-a", "k-b"])

    result = registry.finish(GROUP, "k-a", "stale-token")

    assert result.stale is True
    assert result.next_request is None and result.waiters == []
    assert snapshot(client, keys, GROUP, ["k-a", "k-b"]) == before
    assert registry.owner(GROUP)["token"] == sub.token


def test_finish_of_the_last_request_removes_owner_and_lease(
    registry: Registry, client: redis.Redis, keys: KeySpace
) -> None:
    _, sub = lead(registry, "k-a")
    assert registry.claim(GROUP, sub.token)

    done = registry.finish(GROUP, "k-a", sub.token)

    assert done.stale is False
    assert done.next_request is None and done.waiters == []
    assert client.exists(keys.owner(GROUP), keys.inflight(GROUP), keys.pending(GROUP)) == 0
    assert lease(client, keys) is None
    assert registry.owner(GROUP) == {}
    # The same key later starts a fresh execution instead of waiting on a finished one.
    again = registry.submit(GROUP, record("k-a"))
    assert again.outcome is SubmitOutcome.LEADER and again.token != sub.token


# --- expire ------------------------------------------------------------------------


def test_expire_requeues_a_request_that_never_started(
    registry: Registry, client: redis.Redis, keys: KeySpace
) -> None:
    leader, sub = lead(registry)
    backdate(client, keys)
    assert registry.expired() == [(GROUP, sub.token)]

    before = now_ms()
    exp = registry.expire(GROUP, sub.token)

    assert exp.kind is ExpiredKind.REQUEUE
    assert exp.request == leader
    assert exp.token != sub.token
    assert registry.owner(GROUP)["token"] == exp.token
    assert registry.owner(GROUP)["state"] == "queued"
    deadline = lease(client, keys)
    assert deadline is not None and deadline >= before + QUEUE_TTL * 1000
    assert registry.expired() == []
    # Only the re-dispatched copy may run now.
    assert registry.claim(GROUP, sub.token) is False
    assert registry.claim(GROUP, exp.token) is True


def test_expire_reports_a_running_leader_dead(
    registry: Registry, client: redis.Redis, keys: KeySpace
) -> None:
    leader, sub = lead(registry)
    assert registry.claim(GROUP, sub.token)
    waiter = record("k-a")
    registry.submit(GROUP, waiter)
    backdate(client, keys)

    exp = registry.expire(GROUP, sub.token)

    assert exp.kind is ExpiredKind.DEAD
    assert exp.request == leader
    assert registry.owner(GROUP) == {
        "mode": "leader", "token": exp.token, "task_id": leader.id, "key": "k-a", "state": "dead"
    }
    # The dead leader can no longer renew or release; the reaper's token can.
    assert registry.renew([(GROUP, sub.token)]) == [False]
    assert registry.finish(GROUP, "k-a", sub.token).stale is True
    cleanup = registry.finish(GROUP, "k-a", exp.token)
    assert cleanup.stale is False
    assert cleanup.waiters == [waiter.waiter()]
    assert client.exists(keys.owner(GROUP)) == 0


def test_expire_leaves_a_live_lease_alone(registry: Registry, client: redis.Redis, keys: KeySpace) -> None:
    _, sub = lead(registry)
    assert registry.claim(GROUP, sub.token)
    before = snapshot(client, keys, GROUP, ["k-a"])

    exp = registry.expire(GROUP, sub.token)

    assert exp.kind is ExpiredKind.ALIVE
    assert exp.request is None
    assert snapshot(client, keys, GROUP, ["k-a"]) == before
    assert registry.expired() == []


def test_expire_with_an_old_token_is_gone(registry: Registry, client: redis.Redis, keys: KeySpace) -> None:
    _, sub = lead(registry)
    backdate(client, keys)
    before = snapshot(client, keys, GROUP, ["k-a"])

    exp = registry.expire(GROUP, "token-the-reaper-saw-earlier")

    assert exp.kind is ExpiredKind.GONE
    assert exp.request is None
    assert snapshot(client, keys, GROUP, ["k-a"]) == before
    assert registry.owner(GROUP)["token"] == sub.token


def test_expire_of_a_finished_group_is_gone(registry: Registry, client: redis.Redis, keys: KeySpace) -> None:
    _, sub = lead(registry)
    registry.finish(GROUP, "k-a", sub.token)
    assert registry.expire(GROUP, sub.token).kind is ExpiredKind.GONE
    assert client.exists(keys.owner(GROUP)) == 0
    assert lease(client, keys) is None


# --- concurrency -----------------------------------------------------------------


def submit_concurrently(registry: Registry, records: list[RequestRecord]) -> list[Submitted]:
    barrier = threading.Barrier(len(records))
    results: list[Submitted | None] = [None] * len(records)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = registry.submit(GROUP, records[i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(records))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a submit thread hung"
    assert not errors, errors
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def test_fifty_concurrent_submits_of_one_key_elect_one_leader(
    registry: Registry, client: redis.Redis, keys: KeySpace
) -> None:
    records = [record("k-same") for _ in range(50)]

    results = submit_concurrently(registry, records)

    leaders = [rec for rec, res in zip(records, results, strict=True) if res.outcome is SubmitOutcome.LEADER]
    assert len(leaders) == 1
    leader = leaders[0]
    others = [res for res in results if res.outcome is not SubmitOutcome.LEADER]
    assert len(others) == 49
    assert all(res.outcome is SubmitOutcome.WAIT and res.other_id == leader.id for res in others)
    waiting = {RequestRecord.loads(r).id for r in client.lrange(keys.waiters(GROUP, "k-same"), 0, -1)}
    assert waiting == {rec.id for rec in records} - {leader.id}
    assert registry.owner(GROUP)["task_id"] == leader.id


def test_fifty_concurrent_submits_of_different_keys_queue_behind_one_leader(
    registry: Registry, client: redis.Redis, keys: KeySpace
) -> None:
    records = [record(f"k-{i}") for i in range(50)]

    results = submit_concurrently(registry, records)

    outcomes = [res.outcome for res in results]
    assert outcomes.count(SubmitOutcome.LEADER) == 1
    assert outcomes.count(SubmitOutcome.QUEUED) == 49
    leader_id = next(res.other_id for res in results if res.outcome is SubmitOutcome.LEADER)
    assert all(res.other_id == leader_id for res in results)
    assert client.llen(keys.pending(GROUP)) == 49
