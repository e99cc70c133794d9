"""renew.lua: extend a lease, only for the holder of its token; the deadline is the server's now + the lease."""

from __future__ import annotations

import pytest

from tests.lua.support import server_clock, server_ms

GROUP = "g"
TOKEN = "tok-1"
LEASE = 7000


@pytest.fixture
def owned(db, ks):
    db.hset(ks.owner(GROUP), mapping={"mode": "leader", "token": TOKEN, "state": "running"})
    db.zadd(ks.leases(), {GROUP: 1000, "other": 1500})


def renew(scripts, ks, token, lease=LEASE):
    return scripts["renew"](keys=[ks.owner(GROUP), ks.leases()], args=[GROUP, token, lease])


def test_the_holder_renews_its_lease(db, ks, scripts, owned):
    with server_clock(db) as now:
        assert renew(scripts, ks, TOKEN) == 1

    assert db.zscore(ks.leases(), GROUP) in now + LEASE
    assert db.zscore(ks.leases(), "other") == 1500
    assert db.hgetall(ks.owner(GROUP)) == {"mode": "leader", "token": TOKEN, "state": "running"}


def test_the_deadline_is_set_not_maxed(db, ks, scripts, owned):
    """ZADD sets the score: a renewal earlier than the current deadline moves the lease back."""
    db.zadd(ks.leases(), {GROUP: server_ms(db) + 3_600_000})

    with server_clock(db) as now:
        assert renew(scripts, ks, TOKEN, lease=500) == 1

    assert db.zscore(ks.leases(), GROUP) in now + 500


def test_the_holder_puts_back_a_missing_lease(db, ks, scripts, owned):
    db.zrem(ks.leases(), GROUP)

    with server_clock(db) as now:
        assert renew(scripts, ks, TOKEN) == 1

    assert db.zscore(ks.leases(), GROUP) in now + LEASE


def test_a_stale_token_changes_nothing(ks, scripts, state, owned):
    before = state()

    assert renew(scripts, ks, "tok-old") == 0

    assert state() == before


def test_a_group_without_owner_gets_no_lease(ks, scripts, state):
    assert renew(scripts, ks, TOKEN) == 0

    assert state() == {}
