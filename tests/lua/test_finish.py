"""finish.lua: the leader is done; take its waiters, hand the group on (or keep it), and keep a delivery.

The delivery holds everything the caller still has to do (answer the leader and
its waiters with the outcome, publish the next request) until deliver.lua
"done"; its member in the deliveries ZSET carries the deadline after which the
reaper completes it.
"""

from __future__ import annotations

import json

import pytest

from celery_persistent import metrics
from tests.lua.support import record, server_clock, waiter

GROUP = "g"
KEY = "k"
TOKEN = "tok-1"
NEXT = "tok-2"
NEXT_LEASE = 50_000  # how long the next owner may wait on the broker (ms)
DELIVERY_LEASE = 8_000
OUTCOME = json.dumps({"value": {"msg3": 1}})
MEMBER = f"{GROUP} {TOKEN}"


def finish(scripts, ks, token=TOKEN, keep="", count="1", outcome=OUTCOME, observed=()):
    keys = [ks.owner(GROUP), ks.inflight(GROUP), ks.waiters(GROUP, KEY), ks.pending(GROUP), ks.leases(),
            ks.metrics(), ks.delivery(GROUP, token), ks.delivery_waiters(GROUP, token), ks.deliveries()]
    args = [GROUP, KEY, token, NEXT, NEXT_LEASE, keep, count, DELIVERY_LEASE, f"{GROUP} {token}", outcome,
            *(part for pair in observed for part in pair)]
    return scripts["finish"](keys=keys, args=args)


def delivery(db, ks, token=TOKEN):
    return db.hgetall(ks.delivery(GROUP, token))


@pytest.fixture
def running(db, ks):
    """Leader "a" of key k runs; "w1" and "w2" wait for it; another group holds a lease too."""
    db.hset(ks.owner(GROUP), mapping={
        "mode": "leader", "token": TOKEN, "task_id": "a", "key": KEY, "state": "running",
        "request": record("a", KEY),
    })
    db.hset(ks.inflight(GROUP), mapping={KEY: "a"})
    db.rpush(ks.waiters(GROUP, KEY), waiter("w1", KEY), waiter("w2", KEY))
    db.zadd(ks.leases(), {GROUP: 1000, "other": 2000})


def test_the_last_leader_releases_the_group(db, ks, scripts, running):
    with server_clock(db) as now:
        assert finish(scripts, ks) == ["done", "", waiter("w1", KEY), waiter("w2", KEY)]

    assert not db.exists(ks.owner(GROUP), ks.inflight(GROUP), ks.waiters(GROUP, KEY))
    assert db.zrange(ks.leases(), 0, -1, withscores=True) == [("other", 2000.0)]
    assert db.hgetall(ks.metrics()) == {"executions": "1"}
    # Everything still owed is kept: the outcome, the leader's own request, its waiters (the list, renamed).
    assert delivery(db, ks) == {"leader": "a", "self": record("a", KEY), "outcome": OUTCOME, "next": "",
                                "next_token": NEXT}
    assert db.lrange(ks.delivery_waiters(GROUP, TOKEN), 0, -1) == [waiter("w1", KEY), waiter("w2", KEY)]
    assert db.zrange(ks.deliveries(), 0, -1) == [MEMBER]
    assert db.zscore(ks.deliveries(), MEMBER) in now + DELIVERY_LEASE


def test_the_next_queued_request_becomes_the_owner(db, ks, scripts, running):
    """b (key k2) and c (key k3) were queued behind a: b is handed the group, c stays queued."""
    db.rpush(ks.pending(GROUP), record("b", "k2", 1), record("c", "k3", 2))
    db.hset(ks.inflight(GROUP), mapping={"k2": "b", "k3": "c"})

    with server_clock(db) as now:
        assert finish(scripts, ks) == ["done", record("b", "k2", 1), waiter("w1", KEY), waiter("w2", KEY)]

    # Published by the caller (or by the reaper, from the delivery): it may wait on the broker.
    assert db.hgetall(ks.owner(GROUP)) == {
        "mode": "leader", "token": NEXT, "task_id": "b", "key": "k2", "state": "published",
        "request": record("b", "k2", 1),
    }
    assert db.lrange(ks.pending(GROUP), 0, -1) == [record("c", "k3", 2)]
    assert db.hgetall(ks.inflight(GROUP)) == {"k2": "b", "k3": "c"}
    assert db.zrange(ks.leases(), 0, -1) == ["other", GROUP]
    assert db.zscore(ks.leases(), "other") == 2000
    assert db.zscore(ks.leases(), GROUP) in now + NEXT_LEASE
    assert not db.exists(ks.waiters(GROUP, KEY))
    assert delivery(db, ks) == {"leader": "a", "self": record("a", KEY), "outcome": OUTCOME,
                                "next": record("b", "k2", 1), "next_token": NEXT}
    assert db.zscore(ks.deliveries(), MEMBER) in now + DELIVERY_LEASE


def test_keep_releases_the_key_but_not_the_group(db, ks, scripts, running):
    db.rpush(ks.pending(GROUP), record("b", "k2"))
    owner = db.hgetall(ks.owner(GROUP))

    with server_clock(db) as now:
        assert finish(scripts, ks, keep="keep") == ["done", "", waiter("w1", KEY), waiter("w2", KEY)]

    assert db.hgetall(ks.owner(GROUP)) == owner
    assert db.lrange(ks.pending(GROUP), 0, -1) == [record("b", "k2")]
    assert db.zscore(ks.leases(), GROUP) == 1000
    assert not db.exists(ks.inflight(GROUP), ks.waiters(GROUP, KEY))
    assert db.hgetall(ks.metrics()) == {"executions": "1"}
    # Nothing is handed on, but the answers are kept as a delivery all the same.
    assert delivery(db, ks) == {"leader": "a", "self": record("a", KEY), "outcome": OUTCOME, "next": "",
                                "next_token": NEXT}
    assert db.lrange(ks.delivery_waiters(GROUP, TOKEN), 0, -1) == [waiter("w1", KEY), waiter("w2", KEY)]
    assert db.zscore(ks.deliveries(), MEMBER) in now + DELIVERY_LEASE


@pytest.mark.parametrize("count", ["", "0", "yes"])
def test_an_execution_is_counted_only_with_1(db, ks, scripts, running, count):
    assert finish(scripts, ks, count=count)[0] == "done"

    assert not db.exists(ks.metrics())
    assert db.zrange(ks.deliveries(), 0, -1) == [MEMBER]  # a lost leader's answers are delivered too


def test_executions_add_up(db, ks, scripts, running):
    db.hset(ks.metrics(), mapping={"executions": "41", "coalesced": "3"})

    finish(scripts, ks)

    assert db.hgetall(ks.metrics()) == {"executions": "42", "coalesced": "3"}


def test_the_executions_histograms_are_recorded_with_the_release(db, ks, scripts, running):
    """The leader's metrics.observation goes with finish: no round trip of its own."""
    db.hset(ks.metrics(), mapping={"h:execution:ordinary:3": "2", "h:execution:ordinary:sum": "0.5"})
    observed = metrics.observation(metrics.Mode.ORDINARY, 0.03, wait=0.25)

    finish(scripts, ks, observed=observed)

    assert [field for field, _ in observed] == ["h:execution:ordinary:3", "h:execution:ordinary:sum",
                                                "h:wait:ordinary:5", "h:wait:ordinary:sum"]
    found = db.hgetall(ks.metrics())
    assert found["h:execution:ordinary:3"] == "3" and found["h:wait:ordinary:5"] == "1"
    assert float(found["h:execution:ordinary:sum"]) == pytest.approx(0.53)
    assert float(found["h:wait:ordinary:sum"]) == pytest.approx(0.25)
    assert found["executions"] == "1"


def test_a_stale_finish_records_no_metrics(db, ks, scripts, running):
    """A repeat of a finish whose reply was lost is stale: it must not count the execution twice."""
    assert finish(scripts, ks, token="other", observed=metrics.observation(metrics.Mode.ORDINARY, 0.1)) == ["stale"]

    assert not db.exists(ks.metrics())


def test_an_inflight_entry_of_another_request_stays(db, ks, scripts, running):
    """The key's entry names z (registered after a's ran): it is not a's to remove."""
    db.hset(ks.inflight(GROUP), mapping={KEY: "z"})

    finish(scripts, ks)

    assert db.hgetall(ks.inflight(GROUP)) == {KEY: "z"}


def test_no_waiters(db, ks, scripts, running):
    db.delete(ks.waiters(GROUP, KEY))

    with server_clock(db) as now:
        assert finish(scripts, ks) == ["done", ""]

    # A delivery all the same: the leader's own answer is owed.
    assert delivery(db, ks)["self"] == record("a", KEY)
    assert not db.exists(ks.delivery_waiters(GROUP, TOKEN))
    assert db.zscore(ks.deliveries(), MEMBER) in now + DELIVERY_LEASE


def test_the_outcome_is_kept_verbatim(db, ks, scripts, running):
    """An error, encoded as the result backend would record it, with newlines and non-ASCII text."""
    error = json.dumps({"error": {"exc_type": "ValueError", "exc_message": ["line 1\nligne 2 é"]}})

    finish(scripts, ks, outcome=error)

    assert delivery(db, ks)["outcome"] == error


def test_an_owner_without_a_stored_request_leaves_empty_fields(db, ks, scripts, running):
    db.hdel(ks.owner(GROUP), "task_id", "request")

    assert finish(scripts, ks)[0] == "done"

    assert delivery(db, ks) == {"leader": "", "self": "", "outcome": OUTCOME, "next": "", "next_token": NEXT}


def test_deliveries_of_other_executions_stay(db, ks, scripts, running):
    db.zadd(ks.deliveries(), {"other tok-9": 123})

    finish(scripts, ks)

    assert db.zrange(ks.deliveries(), 0, -1) == ["other tok-9", MEMBER]
    assert db.zscore(ks.deliveries(), "other tok-9") == 123


def test_a_stale_token_changes_nothing(db, ks, scripts, state, running):
    db.rpush(ks.pending(GROUP), record("b", "k2"))
    before = state()

    assert finish(scripts, ks, token="tok-old") == ["stale"]

    assert state() == before  # in particular, no delivery


def test_a_second_finish_of_the_same_token_is_stale(db, ks, scripts, state, running):
    db.rpush(ks.pending(GROUP), record("b", "k2"))
    assert finish(scripts, ks)[1] == record("b", "k2")
    after_first = state()

    assert finish(scripts, ks, outcome=json.dumps({"value": "late"})) == ["stale"]

    assert state() == after_first  # the first delivery, its outcome and deadline unchanged
