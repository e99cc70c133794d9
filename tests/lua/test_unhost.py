"""unhost.lua: a persistent worker lets a group go (idle timeout, stop, error, dissolve)."""

from __future__ import annotations

import pytest

from tests.lua.support import record

GROUP = "g"
TOKEN = "host-tok"


def unhost(scripts, ks, token=TOKEN, force=""):
    keys = [ks.owner(GROUP), ks.inflight(GROUP), ks.leases(), ks.hosts(), ks.hosted_ids(GROUP),
            ks.hosted_records(GROUP)]
    return scripts["unhost"](keys=keys, args=[GROUP, token, force])


@pytest.fixture
def hosted(db, ks):
    db.hset(ks.owner(GROUP), mapping={"mode": "hosted", "token": TOKEN, "host": "w1", "state": "active"})
    db.zadd(ks.leases(), {GROUP: 1000, "other": 2000})
    db.zadd(ks.hosts(), {GROUP: 10, "other": 20})


def accepted(db, ks):
    """b and a accepted, b first; each the inflight request of its key."""
    db.zadd(ks.hosted_ids(GROUP), {"b": 1, "a": 2})
    db.hset(ks.hosted_records(GROUP), mapping={"a": record("a", "ka"), "b": record("b", "kb")})
    db.hset(ks.inflight(GROUP), mapping={"ka": "a", "kb": "b"})


def test_an_idle_group_is_let_go(db, ks, scripts, hosted):
    db.hset(ks.inflight(GROUP), "stale-key", "x")

    assert unhost(scripts, ks) == ["ok"]

    assert not db.exists(ks.owner(GROUP), ks.inflight(GROUP))
    assert db.zrange(ks.leases(), 0, -1) == ["other"]
    assert db.zrange(ks.hosts(), 0, -1) == ["other"]


def test_unfinished_requests_keep_it_busy(db, ks, scripts, state, hosted):
    """A request raced the idle timeout: the worker keeps hosting."""
    accepted(db, ks)
    before = state()

    assert unhost(scripts, ks) == ["busy"]

    assert state() == before


def test_force_returns_the_unfinished_requests_in_order(db, ks, scripts, hosted):
    accepted(db, ks)

    assert unhost(scripts, ks, force="1") == ["ok", record("b", "kb"), record("a", "ka")]

    assert not db.exists(ks.owner(GROUP), ks.hosted_ids(GROUP), ks.hosted_records(GROUP))
    # The inflight entries stay: the caller resubmits these very ids (flag "r").
    assert db.hgetall(ks.inflight(GROUP)) == {"ka": "a", "kb": "b"}
    assert db.zrange(ks.leases(), 0, -1) == ["other"]
    assert db.zrange(ks.hosts(), 0, -1) == ["other"]


def test_force_without_records_clears_inflight(db, ks, scripts, hosted):
    """An accepted id whose record is gone returns nothing, so inflight is cleared as for an idle group."""
    db.zadd(ks.hosted_ids(GROUP), {"a": 1})
    db.hset(ks.inflight(GROUP), "ka", "a")

    assert unhost(scripts, ks, force="1") == ["ok"]

    assert not db.exists(ks.owner(GROUP), ks.inflight(GROUP), ks.hosted_ids(GROUP))


def test_a_stale_token_changes_nothing(db, ks, scripts, state, hosted):
    accepted(db, ks)
    before = state()

    assert unhost(scripts, ks, token="old-host-tok", force="1") == ["stale"]

    assert state() == before


def test_a_second_unhost_is_stale(db, ks, scripts, state, hosted):
    assert unhost(scripts, ks) == ["ok"]
    before = state()

    assert unhost(scripts, ks) == ["stale"]

    assert state() == before
