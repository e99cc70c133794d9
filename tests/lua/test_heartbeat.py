"""heartbeat.lua: a persistent worker says it is alive (server's now + freshness) and reports its load."""

from __future__ import annotations

import pytest
import redis

from tests.lua.support import server_clock, server_ms

HOST = "w1"
FRESH = 3000
LIFETIME = 90_000


def beat(scripts, ks, *fields, host=HOST, fresh=FRESH, lifetime=LIFETIME):
    """``fields``: field, value, ... of the load (ARGV[4..])."""
    return scripts["heartbeat"](keys=[ks.workers(), ks.worker(host)], args=[host, fresh, lifetime, *fields])


def test_a_beat_marks_the_worker_live_and_reports_its_load(db, ks, scripts):
    db.zadd(ks.workers(), {"w2": 5})

    with server_clock(db) as now:
        assert beat(scripts, ks, "groups", 3, "limit", 10, "memory", 2048) == 1

    assert db.zrange(ks.workers(), 0, -1) == ["w2", HOST]
    assert db.zscore(ks.workers(), "w2") == 5
    assert db.zscore(ks.workers(), HOST) in now + FRESH
    assert db.hgetall(ks.worker(HOST)) == {"groups": "3", "limit": "10", "memory": "2048"}
    assert 0 < db.pttl(ks.worker(HOST)) <= LIFETIME
    assert not db.exists(ks.worker("w2"))


def test_the_deadline_is_set_not_maxed(db, ks, scripts):
    """ZADD sets the score: a deadline further ahead (an earlier, longer freshness) is replaced."""
    db.zadd(ks.workers(), {HOST: server_ms(db) + 3_600_000})

    with server_clock(db) as now:
        assert beat(scripts, ks, "groups", 1) == 1

    assert db.zscore(ks.workers(), HOST) in now + FRESH


def test_a_beat_refreshes_a_stale_worker(db, ks, scripts):
    """A worker whose deadline has passed on the server's clock is live again after its next beat."""
    db.zadd(ks.workers(), {HOST: server_ms(db) - 10_000})

    with server_clock(db) as now:
        assert beat(scripts, ks, "groups", 0) == 1

    assert db.zscore(ks.workers(), HOST) in now + FRESH


def test_reported_fields_overwrite_and_others_stay(db, ks, scripts):
    """HSET: a field not reported this time (say, one place.lua counted up) keeps its value."""
    db.hset(ks.worker(HOST), mapping={"groups": "7", "placed_by_hand": "x"})

    assert beat(scripts, ks, "groups", 2, "limit", 4) == 1

    assert db.hgetall(ks.worker(HOST)) == {"groups": "2", "placed_by_hand": "x", "limit": "4"}


def test_every_beat_sets_the_load_lifetime(db, ks, scripts):
    """The lifetime is set again on each beat (here shortened from a long one, and added to a persistent one)."""
    db.hset(ks.worker(HOST), "groups", "1")
    assert db.ttl(ks.worker(HOST)) == -1

    assert beat(scripts, ks, "groups", 1, lifetime=3_600_000) == 1
    assert db.pttl(ks.worker(HOST)) > LIFETIME

    assert beat(scripts, ks, "groups", 1) == 1
    assert 0 < db.pttl(ks.worker(HOST)) <= LIFETIME


def test_a_beat_without_fields_keeps_the_load_and_its_lifetime_is_renewed(db, ks, scripts):
    db.hset(ks.worker(HOST), mapping={"groups": "2"})

    with server_clock(db) as now:
        assert beat(scripts, ks) == 1

    assert db.zscore(ks.workers(), HOST) in now + FRESH
    assert db.hgetall(ks.worker(HOST)) == {"groups": "2"}
    assert 0 < db.pttl(ks.worker(HOST)) <= LIFETIME


def test_a_beat_without_fields_and_without_load_creates_no_hash(db, ks, scripts):
    """PEXPIRE of a missing key does nothing: only the workers ZSET is written."""
    with server_clock(db) as now:
        assert beat(scripts, ks) == 1

    assert db.zrange(ks.workers(), 0, -1) == [HOST]
    assert db.zscore(ks.workers(), HOST) in now + FRESH
    assert not db.exists(ks.worker(HOST))


def test_workers_beat_independently(db, ks, scripts):
    with server_clock(db) as first:
        assert beat(scripts, ks, "groups", 1) == 1
    with server_clock(db) as second:
        assert beat(scripts, ks, "groups", 5, host="w2", fresh=10_000) == 1

    assert db.zscore(ks.workers(), HOST) in first + FRESH
    assert db.zscore(ks.workers(), "w2") in second + 10_000
    assert db.hgetall(ks.worker(HOST)) == {"groups": "1"}
    assert db.hgetall(ks.worker("w2")) == {"groups": "5"}


def test_an_odd_field_list_fails_after_the_liveness_is_written(db, ks, scripts):
    """Current behaviour: HSET rejects a field without value, and a script error undoes nothing,
    so the worker counts as live while its load (and its lifetime) is not updated."""
    db.hset(ks.worker(HOST), "groups", "4")

    with server_clock(db) as now, pytest.raises(redis.ResponseError):
        beat(scripts, ks, "groups", 1, "limit")

    assert db.zscore(ks.workers(), HOST) in now + FRESH
    assert db.hgetall(ks.worker(HOST)) == {"groups": "4"}
    assert db.ttl(ks.worker(HOST)) == -1
