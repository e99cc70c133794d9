"""published.lua: a registered leader is on the broker now, and may wait there for a worker (the queue TTL)."""

from __future__ import annotations

import pytest

from tests.lua.support import record, server_clock

GROUP = "g"
TOKEN = "tok-1"
QUEUE_TTL = 600_000
LEASE = 5_000
SHORT = 1_234  # the short lease submit.lua gave the leader until this mark (an absolute score here)


def published(scripts, ks, token=TOKEN, wait=QUEUE_TTL):
    return scripts["published"](keys=[ks.owner(GROUP), ks.leases()], args=[GROUP, token, wait])


def leader(db, ks, state="queued"):
    db.hset(ks.owner(GROUP), mapping={
        "mode": "leader", "token": TOKEN, "task_id": "a", "key": "k", "state": state, "request": record("a", "k"),
    })
    db.zadd(ks.leases(), {GROUP: SHORT, "other": 99})


def test_a_queued_leader_becomes_published_with_the_queue_ttl(db, ks, scripts):
    leader(db, ks)

    with server_clock(db) as now:
        assert published(scripts, ks) == 1

    assert db.hgetall(ks.owner(GROUP)) == {
        "mode": "leader", "token": TOKEN, "task_id": "a", "key": "k", "state": "published",
        "request": record("a", "k"),
    }
    assert db.zscore(ks.leases(), GROUP) in now + QUEUE_TTL
    assert db.zscore(ks.leases(), "other") == 99


@pytest.mark.parametrize("current", ["published", "reserved", "running", "dead"])
def test_a_leader_past_queued_is_not_marked_again(db, ks, scripts, state, current):
    """A worker has it already (reserved, running), or the mark came twice: its lease stays as it is."""
    leader(db, ks, state=current)
    before = state()

    assert published(scripts, ks) == 0

    assert state() == before


def test_a_second_mark_keeps_the_first_deadline(db, ks, scripts, state):
    leader(db, ks)
    assert published(scripts, ks) == 1
    after_first = state()

    assert published(scripts, ks, wait=1) == 0

    assert state() == after_first


def test_a_stale_token_changes_nothing(db, ks, scripts, state):
    """The group moved on (finished, or the reaper re-registered it) before the sender marked it."""
    leader(db, ks)
    before = state()

    assert published(scripts, ks, token="tok-old") == 0

    assert state() == before


def test_a_group_without_owner_gets_nothing(ks, scripts, state):
    assert published(scripts, ks) == 0

    assert state() == {}


@pytest.mark.parametrize("before", ["published", "reserved"])
def test_a_requeued_leader_is_marked_published_again(db, ks, scripts, before):
    leader(db, ks, state=before)
    db.zadd(ks.leases(), {GROUP: 7})  # its lease ran out
    reply = scripts["expire"](keys=[ks.owner(GROUP), ks.leases(), ks.pulse()], args=[GROUP, TOKEN, "tok-2", LEASE, 0])
    assert reply == ["requeue", record("a", "k")]

    with server_clock(db) as now:
        assert published(scripts, ks, token="tok-2") == 1  # the reaper republished it

    assert db.hget(ks.owner(GROUP), "state") == "published"
    assert db.zscore(ks.leases(), GROUP) in now + QUEUE_TTL
