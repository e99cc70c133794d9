"""renew.lua: extend a lease, only for the holder of its token."""

from __future__ import annotations

import pytest

GROUP = "g"
TOKEN = "tok-1"


@pytest.fixture
def owned(db, ks):
    db.hset(ks.owner(GROUP), mapping={"mode": "leader", "token": TOKEN, "state": "running"})
    db.zadd(ks.leases(), {GROUP: 1000, "other": 1500})


def renew(scripts, ks, token, deadline):
    return scripts["renew"](keys=[ks.owner(GROUP), ks.leases()], args=[GROUP, token, deadline])


def test_the_holder_renews_its_lease(db, ks, scripts, owned):
    assert renew(scripts, ks, TOKEN, 7000) == 1

    assert db.zrange(ks.leases(), 0, -1, withscores=True) == [("other", 1500.0), (GROUP, 7000.0)]
    assert db.hgetall(ks.owner(GROUP)) == {"mode": "leader", "token": TOKEN, "state": "running"}


def test_the_deadline_is_set_not_maxed(db, ks, scripts, owned):
    """ZADD sets the score: a renewal with an earlier deadline moves the lease back."""
    assert renew(scripts, ks, TOKEN, 500) == 1

    assert db.zscore(ks.leases(), GROUP) == 500


def test_the_holder_puts_back_a_missing_lease(db, ks, scripts, owned):
    db.zrem(ks.leases(), GROUP)

    assert renew(scripts, ks, TOKEN, 7000) == 1

    assert db.zscore(ks.leases(), GROUP) == 7000


def test_a_stale_token_changes_nothing(ks, scripts, state, owned):
    before = state()

    assert renew(scripts, ks, "tok-old", 7000) == 0

    assert state() == before


def test_a_group_without_owner_gets_no_lease(ks, scripts, state):
    assert renew(scripts, ks, TOKEN, 7000) == 0

    assert state() == {}
