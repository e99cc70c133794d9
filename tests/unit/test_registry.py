"""The registry's Lua scripts, through ``Registry``, against the real Redis."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from celery_persistent.keys import KeySpace
from celery_persistent.protocol import (
    Delivery,
    ExpiredKind,
    HostedStart,
    Placement,
    PlaceStatus,
    SubmitOutcome,
    Submitted,
)
from celery_persistent.records import RequestRecord
from celery_persistent.registry import Registry, delivery_member
from tests.conftest import LEASE_TTL, QUEUE_TTL

GROUP = "g-test"
OUTCOME = json.dumps({"value": {"msg3": 1}})
LEASE_MS = int(LEASE_TTL * 1000)
QUEUE_MS = int(QUEUE_TTL * 1000)


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
    assert client.zadd(keys.leases(), {group: 1}, xx=True, ch=True) == 1


class Window:
    """The server times (ms) a registry call inside ``clock`` may have read; ``window + ms`` for a deadline."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last

    def __add__(self, ms: int) -> Window:
        return Window(self.first + ms, self.last + ms)

    def __contains__(self, value: object) -> bool:
        return isinstance(value, (int, float)) and self.first <= value <= self.last


@contextmanager
def clock(registry: Registry) -> Iterator[Window]:
    """``with clock(registry) as now:`` one call; afterwards ``now`` spans the server's clock around it."""
    window = Window(registry.server_ms(), 0)
    yield window
    window.last = registry.server_ms()


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
    with clock(registry) as now:
        sub = registry.submit(GROUP, rec)

    assert sub.outcome is SubmitOutcome.LEADER
    assert sub.other_id == rec.id
    assert registry.owner(GROUP) == {
        "mode": "leader", "token": sub.token, "task_id": rec.id, "key": "k-a", "state": "queued"
    }
    assert RequestRecord.loads(client.hget(keys.owner(GROUP), "request")) == rec
    assert client.hgetall(keys.inflight(GROUP)) == {b"k-a": rec.id.encode()}
    # Not on the broker yet: a short lease, so that a sender that dies before publishing is noticed soon.
    assert lease(client, keys) in now + LEASE_MS


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

    with clock(registry) as now:
        assert registry.claim(GROUP, sub.token) is True
    assert registry.owner(GROUP)["state"] == "running"
    assert lease(client, keys) in now + LEASE_MS
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

    with clock(registry) as now:
        assert registry.renew([(GROUP, sub.token)]) == [True]
    assert lease(client, keys) in now + LEASE_MS


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


# --- published and reserve: the leader's lease until it runs ------------------------


def test_published_gives_a_queued_leader_the_queue_ttl(registry: Registry, client: redis.Redis,
                                                       keys: KeySpace) -> None:
    _, sub = lead(registry)
    assert registry.owner(GROUP)["state"] == "queued"

    with clock(registry) as now:
        assert registry.published(GROUP, sub.token) is True

    assert registry.owner(GROUP)["state"] == "published"
    assert lease(client, keys) in now + QUEUE_MS
    # Marked once: a second mark changes nothing.
    deadline = lease(client, keys)
    assert registry.published(GROUP, sub.token) is False
    assert registry.owner(GROUP)["state"] == "published" and lease(client, keys) == deadline


def test_published_with_a_stale_token_changes_nothing(registry: Registry, client: redis.Redis,
                                                      keys: KeySpace) -> None:
    _, sub = lead(registry)
    before = snapshot(client, keys, GROUP, ["k-a"])

    assert registry.published(GROUP, "stale-token") is False
    assert registry.published("g-nobody", sub.token) is False

    assert snapshot(client, keys, GROUP, ["k-a"]) == before
    assert client.exists(keys.owner("g-nobody")) == 0 and lease(client, keys, "g-nobody") is None


def test_reserve_gives_a_received_leader_a_short_lease_until_it_runs(registry: Registry, client: redis.Redis,
                                                                     keys: KeySpace) -> None:
    _, sub = lead(registry)
    assert registry.published(GROUP, sub.token)

    with clock(registry) as now:
        assert registry.reserve(GROUP, sub.token) is True

    assert registry.owner(GROUP)["state"] == "reserved"
    assert lease(client, keys) in now + LEASE_MS
    # A late mark (its sender's, racing the worker's reception) does not lengthen it again.
    deadline = lease(client, keys)
    assert registry.published(GROUP, sub.token) is False
    assert registry.owner(GROUP)["state"] == "reserved" and lease(client, keys) == deadline
    # The worker that reserved it runs it.
    assert registry.claim(GROUP, sub.token) is True
    assert registry.owner(GROUP)["state"] == "running"


def test_reserve_of_a_queued_leader(registry: Registry, client: redis.Redis, keys: KeySpace) -> None:
    """Received before its sender marked it published: the sender's mark then changes nothing."""
    _, sub = lead(registry)

    assert registry.reserve(GROUP, sub.token) is True

    assert registry.owner(GROUP)["state"] == "reserved"
    deadline = lease(client, keys)
    assert registry.published(GROUP, sub.token) is False
    assert registry.owner(GROUP)["state"] == "reserved" and lease(client, keys) == deadline


def test_reserve_never_touches_a_running_or_dead_leader(registry: Registry, client: redis.Redis,
                                                        keys: KeySpace) -> None:
    _, sub = lead(registry)
    assert registry.claim(GROUP, sub.token)
    running = snapshot(client, keys, GROUP, ["k-a"])

    assert registry.reserve(GROUP, sub.token) is False  # a redelivered copy was received meanwhile
    assert snapshot(client, keys, GROUP, ["k-a"]) == running

    backdate(client, keys)
    exp = registry.expire(GROUP, sub.token)
    assert exp.kind is ExpiredKind.DEAD
    dead = snapshot(client, keys, GROUP, ["k-a"])
    assert registry.reserve(GROUP, exp.token) is False
    assert snapshot(client, keys, GROUP, ["k-a"]) == dead


def test_reserve_with_a_stale_token_changes_nothing(registry: Registry, client: redis.Redis,
                                                    keys: KeySpace) -> None:
    lead(registry)
    before = snapshot(client, keys, GROUP, ["k-a"])

    assert registry.reserve(GROUP, "stale-token") is False

    assert snapshot(client, keys, GROUP, ["k-a"]) == before


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

    with clock(registry) as now:
        done = registry.finish(GROUP, "k-a", sub.token, OUTCOME, executed=True)

    assert done.stale is False
    assert done.waiters == [w.waiter() for w in a_waiters]
    assert done.next_request == queued[0]
    assert done.next_token and done.next_token != sub.token
    assert done.delivery == delivery_member(GROUP, sub.token) == f"{GROUP} {sub.token}"
    # Handed on, and already counted as published: the caller (or the reaper) publishes it.
    assert registry.owner(GROUP) == {
        "mode": "leader",
        "token": done.next_token,
        "task_id": queued[0].id,
        "key": "k-b",
        "state": "published",
    }
    assert lease(client, keys) in now + QUEUE_MS
    assert client.llen(keys.waiters(GROUP, "k-a")) == 0
    assert client.hget(keys.inflight(GROUP), "k-a") is None
    assert client.hget(keys.metrics(), "executions") == b"1"
    # The old leader is fenced off.
    assert registry.claim(GROUP, sub.token) is False
    assert registry.renew([(GROUP, sub.token)]) == [False]
    assert registry.finish(GROUP, "k-a", sub.token, OUTCOME).stale is True
    # The new owner runs, and the hand-over goes on in submission order.
    assert registry.claim(GROUP, done.next_token) is True
    second = registry.finish(GROUP, "k-b", done.next_token, OUTCOME)
    assert second.waiters == [b_waiter.waiter()]
    assert second.next_request == queued[1]
    third = registry.finish(GROUP, "k-c", second.next_token, OUTCOME)
    assert third.waiters == []
    assert third.next_request == queued[2]
    assert len({sub.token, done.next_token, second.next_token, third.next_token}) == 4
    assert len({done.delivery, second.delivery, third.delivery}) == 3  # one delivery per execution


def test_finish_with_a_stale_token_changes_nothing(
    registry: Registry, client: redis.Redis, keys: KeySpace
) -> None:
    _, sub = lead(registry, "k-a")
    registry.submit(GROUP, record("k-a"))
    registry.submit(GROUP, record("k-b"))
    before = snapshot(client, keys, GROUP, ["k-a", "k-b"])

    result = registry.finish(GROUP, "k-a", "stale-token", OUTCOME)

    assert result.stale is True
    assert result.next_request is None and result.waiters == [] and result.delivery == ""
    assert snapshot(client, keys, GROUP, ["k-a", "k-b"]) == before
    assert client.zcard(keys.deliveries()) == 0
    assert registry.owner(GROUP)["token"] == sub.token


def test_finish_of_the_last_request_removes_owner_and_lease(
    registry: Registry, client: redis.Redis, keys: KeySpace
) -> None:
    _, sub = lead(registry, "k-a")
    assert registry.claim(GROUP, sub.token)

    done = registry.finish(GROUP, "k-a", sub.token, OUTCOME)

    assert done.stale is False
    assert done.next_request is None and done.waiters == []
    assert client.exists(keys.owner(GROUP), keys.inflight(GROUP), keys.pending(GROUP)) == 0
    assert client.hget(keys.metrics(), "executions") is None  # not executed=True: not counted
    assert lease(client, keys) is None
    assert registry.owner(GROUP) == {}
    # The same key later starts a fresh execution instead of waiting on a finished one.
    again = registry.submit(GROUP, record("k-a"))
    assert again.outcome is SubmitOutcome.LEADER and again.token != sub.token


# --- deliveries: what an execution still owes, until delivered ------------------------


def overdue(client: redis.Redis, keys: KeySpace, member: str) -> None:
    """Its deadline long past, as if the process that was answering died."""
    assert client.zadd(keys.deliveries(), {member: 1}, xx=True, ch=True) == 1


def test_a_delivery_is_taken_only_when_overdue_and_forgotten_once_delivered(
    registry: Registry, client: redis.Redis, keys: KeySpace
) -> None:
    leader, sub = lead(registry, "k-a")
    assert registry.claim(GROUP, sub.token)
    waiter = record("k-a")
    queued = record("k-b")
    registry.submit(GROUP, waiter)
    registry.submit(GROUP, queued)
    with clock(registry) as now:
        done = registry.finish(GROUP, "k-a", sub.token, OUTCOME, executed=True)
    member = done.delivery

    assert client.zscore(keys.deliveries(), member) in now + LEASE_MS
    assert registry.due_deliveries() == []
    assert registry.take_delivery(member) is None  # its writer may still be answering

    overdue(client, keys, member)
    assert registry.due_deliveries() == [member]
    with clock(registry) as now:
        taken = registry.take_delivery(member)
    assert taken == Delivery(
        member=member, group=GROUP, leader=leader.id, next_request=queued, next_token=done.next_token,
        own=leader, outcome=OUTCOME, ref="", device="", waiters=[waiter.waiter()],
    )
    # Re-leased to this reaper: nobody else takes it meanwhile.
    assert client.zscore(keys.deliveries(), member) in now + LEASE_MS
    assert registry.due_deliveries() == []
    assert registry.take_delivery(member) is None

    registry.delivered(member)
    assert client.zcard(keys.deliveries()) == 0
    assert client.exists(keys.delivery(GROUP, sub.token), keys.delivery_waiters(GROUP, sub.token)) == 0
    assert registry.take_delivery(member) is None
    registry.delivered(member)  # harmless twice


def test_delivered_forgets_one_delivery_only(registry: Registry, client: redis.Redis, keys: KeySpace) -> None:
    _, one = lead(registry, group="g-one")
    _, two = lead(registry, group="g-two")
    first = registry.finish("g-one", "k-a", one.token, OUTCOME).delivery
    second = registry.finish("g-two", "k-a", two.token, OUTCOME).delivery

    registry.delivered(first)

    assert [m.decode() for m in client.zrange(keys.deliveries(), 0, -1)] == [second]
    assert client.exists(keys.delivery("g-two", two.token)) == 1


# --- finish_hosted -------------------------------------------------------------------


def hosted_group(registry: Registry, host: str = "host-1") -> str:
    """A group placed on ``host`` and adopted by it; returns the host's token."""
    where = Placement(GROUP, host, "q-1", "ref-1", False, 30.0, "dev", 10)
    assert registry.place(where).status is PlaceStatus.PLACED
    adopted = registry.adopt(GROUP, host)
    assert adopted is not None
    return adopted.token


def test_finish_hosted_keeps_a_delivery_and_is_gone_when_repeated(
    registry: Registry, client: redis.Redis, keys: KeySpace
) -> None:
    token = hosted_group(registry)
    rec, waiter = record("k-a"), record("k-a")
    assert registry.submit(GROUP, rec).outcome is SubmitOutcome.HOSTED
    assert registry.submit(GROUP, waiter).outcome is SubmitOutcome.WAIT
    assert registry.start_hosted(GROUP, token, rec.id) is HostedStart.RUN

    with clock(registry) as now:
        done = registry.finish_hosted(GROUP, token, "k-a", rec.id, "", new_ref="ref-2", size=20)

    assert (done.stale, done.gone) == (False, False)
    assert done.waiters == [waiter.waiter()]
    assert done.delivery == delivery_member(GROUP, rec.id)
    assert client.zscore(keys.deliveries(), done.delivery) in now + LEASE_MS
    owner = registry.owner(GROUP)
    assert (owner["ref"], owner["bytes"], owner["executions"]) == ("ref-2", "20", "1")
    assert registry.unfinished(GROUP) == 0
    overdue(client, keys, done.delivery)
    taken = registry.take_delivery(done.delivery)
    assert taken is not None
    assert (taken.own, taken.outcome, taken.ref, taken.device, taken.waiters) == (
        rec, "", "ref-2", "dev", [waiter.waiter()])
    assert (taken.leader, taken.next_request, taken.next_token) == ("", None, "")

    # A repeat (its reply was lost in an outage) finds it finished: nothing changes, nothing is answered.
    again = registry.finish_hosted(GROUP, token, "k-a", rec.id, "", new_ref="ref-3", size=30)
    assert (again.stale, again.gone, again.waiters, again.delivery) == (False, True, [], "")
    assert registry.owner(GROUP)["ref"] == "ref-2" and registry.owner(GROUP)["executions"] == "1"


def test_finish_hosted_by_a_host_that_lost_the_group_is_stale(
    registry: Registry, client: redis.Redis, keys: KeySpace
) -> None:
    token = hosted_group(registry)
    rec = record("k-a")
    registry.submit(GROUP, rec)
    assert registry.start_hosted(GROUP, token, rec.id) is HostedStart.RUN
    client.hset(keys.owner(GROUP), "token", "new-owner")

    done = registry.finish_hosted(GROUP, token, "k-a", rec.id, OUTCOME)

    assert (done.stale, done.gone, done.waiters, done.delivery) == (True, False, [], "")
    assert registry.unfinished(GROUP) == 1  # still accepted: the new owner runs it
    assert client.zcard(keys.deliveries()) == 0


# --- expire ------------------------------------------------------------------------


def test_expire_requeues_a_request_that_never_started(
    registry: Registry, client: redis.Redis, keys: KeySpace
) -> None:
    leader, sub = lead(registry)
    backdate(client, keys)
    assert registry.expired() == [(GROUP, sub.token)]

    with clock(registry) as now:
        exp = registry.expire(GROUP, sub.token)

    assert exp.kind is ExpiredKind.REQUEUE
    assert exp.request == leader
    assert exp.token != sub.token
    assert registry.owner(GROUP)["token"] == exp.token
    assert registry.owner(GROUP)["state"] == "queued"
    # A lease, until the reaper has published it again and marked it (published.lua).
    assert lease(client, keys) in now + LEASE_MS
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
    assert registry.finish(GROUP, "k-a", sub.token, OUTCOME).stale is True
    cleanup = registry.finish(GROUP, "k-a", exp.token, OUTCOME)
    assert cleanup.stale is False
    assert cleanup.waiters == [waiter.waiter()]
    assert cleanup.delivery == delivery_member(GROUP, exp.token)
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
    registry.finish(GROUP, "k-a", sub.token, OUTCOME)
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
