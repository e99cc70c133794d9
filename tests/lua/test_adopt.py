"""adopt.lua: a persistent worker takes up a group placed on it."""

from __future__ import annotations

import pytest

from tests.lua.support import record, server_clock

GROUP = "g"
HOST = "w1"
LEASE = 30_000


def adopt(scripts, ks, host=HOST):
    keys = [ks.owner(GROUP), ks.leases(), ks.hosted_ids(GROUP), ks.hosted_records(GROUP)]
    return scripts["adopt"](keys=keys, args=[GROUP, host, LEASE])


def placed(db, ks, **fields):
    """An owner hash as place.lua writes it (state placing), with ``fields`` replaced."""
    owner = {
        "mode": "hosted", "token": "host-tok", "host": HOST, "queue": "q1", "ref": "ref-1", "static": "1",
        "timeout": "30", "state": "placing", "device": "dev", "last": "100", "bytes": "12", "errors": "stop",
        **fields,
    }
    db.hset(ks.owner(GROUP), mapping=owner)
    db.zadd(ks.leases(), {GROUP: 1000, "other": 500})
    return owner


def test_the_host_adopts_a_placed_group(db, ks, scripts):
    owner = placed(db, ks)

    with server_clock(db) as now:
        assert adopt(scripts, ks) == ["ok", "host-tok", "q1", "ref-1", "1", "30", "dev", "12", "stop"]

    assert db.hgetall(ks.owner(GROUP)) == {**owner, "state": "active"}
    assert db.zrange(ks.leases(), 0, -1) == ["other", GROUP]
    assert db.zscore(ks.leases(), "other") == 500
    assert db.zscore(ks.leases(), GROUP) in now + LEASE


def test_unfinished_requests_come_in_arrival_order(db, ks, scripts):
    """By their score in the hosted ids; an id without a record is skipped."""
    placed(db, ks)
    db.zadd(ks.hosted_ids(GROUP), {"c": 3, "a": 1, "lost": 2, "b": 4})
    db.hset(ks.hosted_records(GROUP), mapping={"a": record("a", "k1"), "b": record("b", "k2"),
                                                  "c": record("c", "k3")})

    reply = adopt(scripts, ks)

    assert reply[9:] == [record("a", "k1"), record("c", "k3"), record("b", "k2")]
    assert db.zcard(ks.hosted_ids(GROUP)) == 4
    assert db.hlen(ks.hosted_records(GROUP)) == 3


def test_missing_fields_have_defaults(db, ks, scripts):
    """Timeout "0" means none was set; static "0", no device, 0 bytes, errors "ignore"."""
    db.hset(ks.owner(GROUP), mapping={"mode": "hosted", "token": "host-tok", "host": HOST, "queue": "q1",
                                          "ref": "ref-1"})

    assert adopt(scripts, ks) == ["ok", "host-tok", "q1", "ref-1", "0", "0", "", "0", "ignore"]


def test_adopting_again_refreshes_the_lease(db, ks, scripts):
    placed(db, ks)
    assert adopt(scripts, ks)[0] == "ok"
    db.zadd(ks.leases(), {GROUP: 1})

    with server_clock(db) as now:
        assert adopt(scripts, ks)[0] == "ok"

    assert db.zscore(ks.leases(), GROUP) in now + LEASE


def test_a_group_placed_on_another_host_is_stale(db, ks, scripts, state):
    placed(db, ks, host="w2")
    before = state()

    assert adopt(scripts, ks) == ["stale"]

    assert state() == before


@pytest.mark.parametrize("mode", ["leader", "moved"])
def test_a_group_that_is_not_hosted_is_stale(db, ks, scripts, state, mode):
    placed(db, ks, mode=mode)
    before = state()

    assert adopt(scripts, ks) == ["stale"]

    assert state() == before


def test_a_group_without_owner_is_stale(ks, scripts, state):
    assert adopt(scripts, ks) == ["stale"]

    assert state() == {}
