"""release.lua: an operator takes a group from its owner, only while the token it saw still owns it."""

from __future__ import annotations

import pytest

from tests.lua.conftest import lua_source
from tests.lua.support import record, server_clock, waiter

GROUP = "g"
TOKEN = "tok-1"
NEW = "tok-2"
LEASE = 40_000


@pytest.fixture(scope="module")
def release_script(db):
    return db.register_script(lua_source("release"))


@pytest.fixture
def release(release_script, ks):
    def call(token=TOKEN, running="", key=""):
        keys = [ks.owner(GROUP), ks.inflight(GROUP), ks.leases(), ks.hosts(), ks.hosted_ids(GROUP),
                ks.hosted_records(GROUP), ks.waiters(GROUP, key)]
        return release_script(keys=keys, args=[GROUP, token, NEW, LEASE, running, key])

    return call


def leader(db, ks, state):
    """An ordinary group: a running (or not yet started) a, with waiters w1 w2, and c queued behind it."""
    db.hset(ks.owner(GROUP), mapping={"mode": "leader", "token": TOKEN, "task_id": "a", "key": "k",
                                      "state": state, "request": record("a", "k", 1)})
    db.hset(ks.inflight(GROUP), mapping={"k": "a", "kc": "c"})
    db.rpush(ks.waiters(GROUP, "k"), waiter("w1", "k"), waiter("w2", "k"))
    db.rpush(ks.pending(GROUP), record("c", "kc", 2))
    db.zadd(ks.leases(), {GROUP: 5, "other": 7})


def hosted(db, ks, running=""):
    """A hosted group with b (waiters wb) and a accepted, b first; ``running`` runs."""
    owner = {"mode": "hosted", "token": TOKEN, "host": "w1@h", "queue": "persistent.g", "ref": "r1",
             "device": "state", "state": "active"}
    if running:
        owner["running"] = running
    db.hset(ks.owner(GROUP), mapping=owner)
    db.zadd(ks.hosted_ids(GROUP), {"b": 1, "a": 2})
    db.hset(ks.hosted_records(GROUP), mapping={"a": record("a", "ka"), "b": record("b", "kb")})
    db.hset(ks.inflight(GROUP), mapping={"ka": "a", "kb": "b"})
    db.rpush(ks.waiters(GROUP, "kb"), waiter("wb", "kb"))
    db.zadd(ks.leases(), {GROUP: 1000, "other": 2000})
    db.zadd(ks.hosts(), {GROUP: 10, "other": 20})


# -- refusals: nothing changes ----------------------------------------------------------


def test_an_unknown_group_is_refused(release, state):
    assert release() == ["unknown"]
    assert state() == {}


@pytest.mark.parametrize("kind", ["leader", "hosted"])
def test_another_token_is_refused_and_nothing_changes(db, ks, release, state, kind):
    leader(db, ks, "running") if kind == "leader" else hosted(db, ks, running="b")
    before = state()

    assert release(token="tok-old", running="b", key="kb") == ["stale"]

    assert state() == before


def test_a_moved_marker_names_the_group_it_moved_to(db, ks, release, state):
    db.hset(ks.owner(GROUP), mapping={"mode": "moved", "token": TOKEN, "target": "g2"})
    before = state()

    assert release() == ["moved", "g2"]

    assert state() == before


@pytest.mark.parametrize(("running", "key"), [("", ""), ("a", "ka"), ("b", "kx")])
def test_a_hosted_group_whose_running_request_changed_is_read_again(db, ks, release, state, running, key):
    """b runs: a caller that read nothing running, another request, or another key changes nothing."""
    hosted(db, ks, running="b")
    before = state()

    assert release(running=running, key=key) == ["changed"]

    assert state() == before


# -- an ordinary group: held by the caller under the new token ------------------------------------


@pytest.mark.parametrize("was", ["queued", "published", "reserved", "running"])
def test_an_ordinary_group_is_held_under_the_new_token_as_dead(db, ks, release, was):
    leader(db, ks, was)

    with server_clock(db) as now:
        assert release() == ["leader", was, record("a", "k", 1)]

    owner = db.hgetall(ks.owner(GROUP))
    assert (owner["token"], owner["state"], owner["task_id"], owner["key"]) == (NEW, "dead", "a", "k")
    assert db.zscore(ks.leases(), GROUP) in now + LEASE
    assert db.zscore(ks.leases(), "other") == 7
    # Waiters, queue and inflight entries stay: finish.lua with the new token answers and hands on.
    assert db.lrange(ks.waiters(GROUP, "k"), 0, -1) == [waiter("w1", "k"), waiter("w2", "k")]
    assert db.lrange(ks.pending(GROUP), 0, -1) == [record("c", "kc", 2)]
    assert db.hgetall(ks.inflight(GROUP)) == {"k": "a", "kc": "c"}


def test_the_old_token_is_fenced_after_a_release(db, ks, release, scripts):
    """The worker still running the released request can neither renew nor finish it."""
    leader(db, ks, "running")
    assert release()[0] == "leader"

    assert scripts["renew"](keys=[ks.owner(GROUP), ks.leases()], args=[GROUP, TOKEN, LEASE]) == 0
    assert scripts["claim"](keys=[ks.owner(GROUP), ks.leases()], args=[GROUP, TOKEN, LEASE]) == 0
    assert release() == ["stale"]


# -- a hosted group: let go, its requests returned ------------------------------------------------


def test_a_hosted_group_running_nothing_returns_its_accepted_requests_in_order(db, ks, release):
    hosted(db, ks)

    assert release() == ["hosted", "w1@h", "persistent.g", "r1", "state", "", 0, record("b", "kb"), record("a", "ka")]

    assert not db.exists(ks.owner(GROUP), ks.hosted_ids(GROUP), ks.hosted_records(GROUP))
    assert db.zrange(ks.leases(), 0, -1) == ["other"]
    assert db.zrange(ks.hosts(), 0, -1) == ["other"]
    # As unhost.lua: the inflight entries and waiters stay for the requests handed on.
    assert db.hgetall(ks.inflight(GROUP)) == {"ka": "a", "kb": "b"}
    assert db.lrange(ks.waiters(GROUP, "kb"), 0, -1) == [waiter("wb", "kb")]


def test_a_hosted_groups_running_request_and_its_waiters_are_taken_out(db, ks, release):
    hosted(db, ks, running="b")

    assert release(running="b", key="kb") == [
        "hosted", "w1@h", "persistent.g", "r1", "state", record("b", "kb"), 1, waiter("wb", "kb"), record("a", "ka"),
    ]

    assert not db.exists(ks.owner(GROUP), ks.hosted_ids(GROUP), ks.hosted_records(GROUP), ks.waiters(GROUP, "kb"))
    # b is answered by the caller: an identical request sent now does not wait for it.
    assert db.hgetall(ks.inflight(GROUP)) == {"ka": "a"}


def test_a_hosted_group_with_nothing_left_drops_its_inflight_entries(db, ks, release):
    db.hset(ks.owner(GROUP), mapping={"mode": "hosted", "token": TOKEN, "host": "w1@h", "queue": "q", "ref": "r",
                                      "device": "d", "running": "b"})
    db.zadd(ks.hosted_ids(GROUP), {"b": 1})
    db.hset(ks.hosted_records(GROUP), "b", record("b", "kb"))
    db.hset(ks.inflight(GROUP), mapping={"kb": "b", "stale": "x"})
    db.zadd(ks.leases(), {GROUP: 1000})

    assert release(running="b", key="kb") == ["hosted", "w1@h", "q", "r", "d", record("b", "kb"), 0]

    assert not db.exists(ks.inflight(GROUP), ks.owner(GROUP), ks.leases())
