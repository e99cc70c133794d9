"""start_hosted.lua: fence one hosted request before it runs."""

from __future__ import annotations

import pytest

from tests.lua.support import record, server_clock

GROUP = "g"
TOKEN = "host-tok"


def start(scripts, ks, task_id, token=TOKEN):
    return scripts["start_hosted"](keys=[ks.owner(GROUP), ks.hosted_records(GROUP)], args=[token, task_id])


@pytest.fixture
def hosted(db, ks):
    db.hset(ks.owner(GROUP), mapping={"mode": "hosted", "token": TOKEN, "host": "w1", "last": "100"})
    db.hset(ks.hosted_records(GROUP), mapping={"a": record("a", "k"), "b": record("b", "k2")})


def test_the_host_starts_an_accepted_request(db, ks, scripts, hosted):
    with server_clock(db) as now:
        assert start(scripts, ks, "a") == 1

    owner = db.hgetall(ks.owner(GROUP))
    assert owner.pop("last") in now
    assert owner == {"mode": "hosted", "token": TOKEN, "host": "w1", "running": "a"}
    assert db.hgetall(ks.hosted_records(GROUP)) == {"a": record("a", "k"), "b": record("b", "k2")}


def test_the_next_request_replaces_the_running_one(db, ks, scripts, hosted):
    assert start(scripts, ks, "a") == 1
    with server_clock(db) as now:
        assert start(scripts, ks, "b") == 1

    assert db.hget(ks.owner(GROUP), "running") == "b"
    assert db.hget(ks.owner(GROUP), "last") in now


def test_an_unknown_task_id_is_not_started(ks, scripts, state, hosted):
    """Finished already (its record is gone), or taken to another group."""
    before = state()

    assert start(scripts, ks, "zzz") == 0

    assert state() == before


def test_a_stale_token_changes_nothing_and_says_the_request_is_still_to_run(ks, scripts, state, hosted):
    """A host that lost the group must hand the message back, not drop it."""
    before = state()

    assert start(scripts, ks, "a", token="old-host-tok") == -1

    assert state() == before


def test_a_group_without_owner_is_not_started(db, ks, scripts):
    db.hset(ks.hosted_records(GROUP), "a", record("a", "k"))

    assert start(scripts, ks, "a") == -1

    assert not db.exists(ks.owner(GROUP))


def test_a_stale_token_with_a_finished_request_is_done(ks, scripts, state, hosted):
    before = state()

    assert start(scripts, ks, "zzz", token="old-host-tok") == 0

    assert state() == before
