"""rename.lua: a rolling worker re-registers its group under a new name; the old one becomes a marker."""

from __future__ import annotations

import pytest
import redis

from tests.lua.support import server_clock

OLD = "g1"
NEW = "g2"
TOKEN = "host-tok"
FRESH = "tok-new"
LEASE = 60_000

HOSTED = {
    "mode": "hosted", "token": TOKEN, "host": "w1", "queue": "q1", "ref": "ref-1", "static": "0", "timeout": "30",
    "state": "active", "device": "dev", "last": "100", "bytes": "12", "executions": "5", "errors": "stop",
    "seq": "9",
}


def rename(scripts, ks, token=TOKEN):
    keys = [ks.owner(OLD), ks.owner(NEW), ks.leases(), ks.hosts()]
    return scripts["rename"](keys=keys, args=[OLD, NEW, token, FRESH, "q2", LEASE])


@pytest.fixture
def hosted(db, ks):
    db.hset(ks.owner(OLD), mapping=HOSTED)
    db.zadd(ks.leases(), {OLD: 1000})
    db.zadd(ks.hosts(), {OLD: 50, "other": 60})


def test_the_group_moves_to_its_new_name(db, ks, scripts, hosted):
    with server_clock(db) as now:
        assert rename(scripts, ks) == ["ok"]

    new = db.hgetall(ks.owner(NEW))
    assert new.pop("last") in now
    assert new == {
        "mode": "hosted", "token": FRESH, "host": "w1", "queue": "q2", "ref": "ref-1", "static": "0",
        "timeout": "30", "state": "active", "device": "dev", "bytes": "12", "executions": "5",
        "errors": "stop",
    }
    assert db.hgetall(ks.owner(OLD)) == {**HOSTED, "mode": "moved", "target": NEW}
    assert db.zrange(ks.hosts(), 0, -1) == ["other", NEW]
    assert db.zscore(ks.hosts(), "other") == 60
    assert db.zscore(ks.hosts(), NEW) in now
    # The old name's lease stays (the marker keeps its token until it expires).
    assert db.zrange(ks.leases(), 0, -1) == [OLD, NEW]
    assert db.zscore(ks.leases(), OLD) == 1000
    assert db.zscore(ks.leases(), NEW) in now + LEASE


def test_missing_counters_have_defaults(db, ks, scripts, hosted):
    db.hdel(ks.owner(OLD), "bytes", "executions", "errors")

    assert rename(scripts, ks) == ["ok"]

    new = db.hgetall(ks.owner(NEW))
    assert (new["bytes"], new["executions"], new["errors"]) == ("0", "0", "ignore")


def test_an_old_hash_without_static_fails_and_changes_nothing(db, ks, scripts, state, hosted):
    """Current behaviour: host, ref, static, timeout and device have no default; a missing one is a Lua error."""
    db.hdel(ks.owner(OLD), "static")
    before = state()

    with pytest.raises(redis.ResponseError):
        rename(scripts, ks)

    assert state() == before


def test_a_taken_name_is_busy(db, ks, scripts, state, hosted):
    db.hset(ks.owner(NEW), mapping={"mode": "leader", "token": "someone"})
    before = state()

    assert rename(scripts, ks) == ["busy"]

    assert state() == before


def test_a_stale_token_changes_nothing(ks, scripts, state, hosted):
    before = state()

    assert rename(scripts, ks, token="old-host-tok") == ["stale"]

    assert state() == before


def test_renaming_twice_the_second_is_busy(db, ks, scripts, state, hosted):
    """The marker still holds the host's token, but the new name is taken now (by the group itself)."""
    assert rename(scripts, ks) == ["ok"]
    before = state()

    assert rename(scripts, ks) == ["busy"]

    assert state() == before
