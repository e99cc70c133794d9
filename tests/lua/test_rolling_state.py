"""A rolling group's state in the scripts: checkpoints and their holders, the journal, parking.

checkpoint.lua and park.lua, and the rolling-state branches of finish_hosted,
deliver ("done"), unhost, place, adopt and rename.  A checkpoint is a HASH
``{state, current?, delivery?}``: the step that takes its last holder away
deletes it; a content-addressed entry (no checkpoint id) is never deleted.
"""

from __future__ import annotations

import pytest

from tests.lua.support import record, server_clock, waiter

GROUP = "g"
TOKEN = "host-tok"
OLD = "a" * 32 + "~g~" + "1" * 16
NEW = "b" * 32 + "~g~" + "2" * 16
CONTENT = "c" * 32
LEASE = 9_000


def ckpt(ks, ident):
    return ks.checkpoint(GROUP, ident[-16:])


def finish_hosted(scripts, ks, task_id="a", key="k", mode="", state="", new="", replaces=OLD, outcome=""):
    keys = [ks.owner(GROUP), ks.inflight(GROUP), ks.waiters(GROUP, key), ks.hosted_ids(GROUP),
            ks.hosted_records(GROUP), ks.metrics(), ks.delivery(GROUP, task_id),
            ks.delivery_waiters(GROUP, task_id), ks.deliveries(),
            ckpt(ks, new) if new else ks.journal(GROUP), ckpt(ks, replaces) if "~" in replaces else ks.journal(GROUP),
            ks.journal(GROUP)]
    args = [TOKEN, key, task_id, new, 20 if new else 0, outcome, LEASE, f"{GROUP} {task_id}", mode, state,
            replaces if "~" in replaces else ""]
    return scripts["finish_hosted"](keys=keys, args=args)


@pytest.fixture
def rolling(db, ks):
    """A hosted group whose state is checkpoint OLD; a (key k, one waiter) runs, b (key k2) waits."""
    db.hset(ks.owner(GROUP), mapping={"mode": "hosted", "token": TOKEN, "host": "w1", "queue": "q1", "ref": OLD,
                                      "bytes": "10", "device": "counter", "state": "active", "running": "a"})
    db.hset(ckpt(ks, OLD), mapping={"state": '{"count": 1}', "current": "1"})
    db.hset(ks.inflight(GROUP), mapping={"k": "a", "k2": "b"})
    db.rpush(ks.waiters(GROUP, "k"), waiter("w1", "k"))
    db.zadd(ks.hosted_ids(GROUP), {"a": 1, "b": 2})
    db.hset(ks.hosted_records(GROUP), mapping={"a": record("a", "k", 1), "b": record("b", "k2", 2)})


# -- finish_hosted ----------------------------------------------------------------------------------------


def test_a_checkpoint_replaces_the_old_one_which_is_deleted(db, ks, scripts, rolling):
    db.rpush(ks.journal(GROUP), record("x", "kx"))
    assert finish_hosted(scripts, ks, mode="c", state='{"count": 2}', new=NEW) == ["done", waiter("w1", "k")]

    assert db.hget(ks.owner(GROUP), "ref") == NEW
    # The delivery answers from the new checkpoint (outcome ""): it holds it too.
    assert db.hgetall(ckpt(ks, NEW)) == {"state": '{"count": 2}', "current": "1", "delivery": "1"}
    assert not db.exists(ckpt(ks, OLD))
    assert not db.exists(ks.journal(GROUP))  # the checkpoint covers the journal
    assert db.hget(ks.delivery(GROUP, "a"), "ref") == NEW


def test_a_checkpoint_with_its_own_outcome_is_not_held_by_the_delivery(db, ks, scripts, rolling):
    finish_hosted(scripts, ks, mode="c", state='{"count": 2}', new=NEW, outcome='{"value": 1}')
    assert db.hgetall(ckpt(ks, NEW)) == {"state": '{"count": 2}', "current": "1"}


def test_an_old_checkpoint_a_delivery_still_answers_from_is_kept(db, ks, scripts, rolling):
    db.hset(ckpt(ks, OLD), "delivery", "1")
    finish_hosted(scripts, ks, mode="c", state='{"count": 2}', new=NEW)
    assert db.hgetall(ckpt(ks, OLD)) == {"state": '{"count": 1}', "delivery": "1"}


def test_a_content_addressed_state_is_never_deleted(db, ks, scripts, rolling):
    db.hset(ks.owner(GROUP), "ref", CONTENT)
    db.set(ks.store(CONTENT), "{}")
    finish_hosted(scripts, ks, mode="c", state='{"count": 2}', new=NEW, replaces=CONTENT)
    assert db.get(ks.store(CONTENT)) == "{}" and db.hget(ks.owner(GROUP), "ref") == NEW


def test_a_host_that_does_not_know_the_current_state_deletes_nothing(db, ks, scripts, rolling):
    """Its ``replaces`` is not the owner's ref (it reloaded late): the current checkpoint is not touched."""
    other = "d" * 32 + "~g~" + "3" * 16
    finish_hosted(scripts, ks, mode="c", state='{"count": 2}', new=NEW, replaces=other)
    assert db.hgetall(ckpt(ks, OLD)) == {"state": '{"count": 1}', "current": "1"}


def test_a_journaled_request_is_appended_and_the_state_ref_stays(db, ks, scripts, rolling):
    assert finish_hosted(scripts, ks, mode="j", outcome='{"value": 2}')[0] == "done"
    assert db.lrange(ks.journal(GROUP), 0, -1) == [record("a", "k", 1)]
    assert db.hget(ks.owner(GROUP), "ref") == OLD
    assert db.hgetall(ckpt(ks, OLD)) == {"state": '{"count": 1}', "current": "1"}
    assert db.hgetall(ks.delivery(GROUP, "a"))["outcome"] == '{"value": 2}'


def test_a_stale_host_writes_no_checkpoint_and_no_journal(db, ks, scripts, state, rolling):
    db.hset(ks.owner(GROUP), "token", "other")
    before = state()
    assert finish_hosted(scripts, ks, mode="c", state="{}", new=NEW) == ["stale"]
    assert finish_hosted(scripts, ks, mode="j") == ["stale"]
    assert state() == before


# -- deliver "done" ----------------------------------------------------------------------------------------


def deliver_done(scripts, ks, token):
    keys = [ks.delivery(GROUP, token), ks.delivery_waiters(GROUP, token), ks.deliveries(),
            ks.checkpoint(GROUP, "9" * 16)]
    return scripts["deliver"](keys=keys, args=[f"{GROUP} {token}", "done"])


@pytest.mark.parametrize(("holders", "left"), [
    ({"delivery": "1"}, None),  # superseded while the delivery was open: deleted now
    ({"delivery": "1", "current": "1"}, {"current": "1"}),  # still its group's state: kept
    ({"current": "1"}, {"current": "1"}),  # the delivery did not hold it: untouched
])
def test_done_releases_the_checkpoint_its_delivery_held(db, ks, scripts, holders, left):
    key = ks.checkpoint(GROUP, "9" * 16)
    db.hset(key, mapping={"state": "{}", **holders})
    db.hset(ks.delivery(GROUP, "t"), "outcome", "")
    assert deliver_done(scripts, ks, "t") == ["done"]
    if left is None:
        assert not db.exists(key)
    else:
        assert db.hgetall(key) == {"state": "{}", **left}


def test_done_without_a_checkpoint_creates_none(db, ks, scripts):
    assert deliver_done(scripts, ks, "t") == ["done"]
    assert not db.exists(ks.checkpoint(GROUP, "9" * 16))


# -- checkpoint.lua ---------------------------------------------------------------------------------------


def checkpoint(scripts, ks, token=TOKEN, replaces=OLD, covered=2, new=NEW):
    keys = [ks.owner(GROUP), ckpt(ks, new), ckpt(ks, replaces) if "~" in replaces else ks.journal(GROUP),
            ks.journal(GROUP)]
    args = [token, new, 30, '{"count": 5}', replaces, "1" if "~" in replaces else "", covered]
    return scripts["checkpoint"](keys=keys, args=args)


def test_checkpoint_writes_the_state_and_drops_the_journal_it_covers(db, ks, scripts, rolling):
    db.rpush(ks.journal(GROUP), "r1", "r2", "r3")
    assert checkpoint(scripts, ks, covered=2) == ["ok"]
    assert db.hmget(ks.owner(GROUP), "ref", "bytes") == [NEW, "30"]
    assert db.hgetall(ckpt(ks, NEW)) == {"state": '{"count": 5}', "current": "1"}
    assert not db.exists(ckpt(ks, OLD))
    assert db.lrange(ks.journal(GROUP), 0, -1) == ["r3"]  # applied after the state was taken: kept


def test_checkpoint_keeps_an_old_state_a_delivery_holds(db, ks, scripts, rolling):
    db.hset(ckpt(ks, OLD), "delivery", "1")
    assert checkpoint(scripts, ks) == ["ok"]
    assert db.hgetall(ckpt(ks, OLD)) == {"state": '{"count": 1}', "delivery": "1"}


def test_checkpoint_by_a_stale_host_or_from_another_state_writes_nothing(db, ks, scripts, state, rolling):
    db.rpush(ks.journal(GROUP), "r1")
    before = state()
    assert checkpoint(scripts, ks, token="other") == ["stale"]
    assert checkpoint(scripts, ks, replaces="e" * 32 + "~g~" + "4" * 16) == ["changed"]
    assert state() == before


def test_checkpoint_over_a_content_addressed_state_keeps_it(db, ks, scripts, rolling):
    db.hset(ks.owner(GROUP), "ref", CONTENT)
    db.set(ks.store(CONTENT), "{}")
    assert checkpoint(scripts, ks, replaces=CONTENT) == ["ok"]
    assert db.get(ks.store(CONTENT)) == "{}"


# -- park.lua ---------------------------------------------------------------------------------------------


def park(scripts, ks, token=TOKEN):
    keys = [ks.owner(GROUP), ks.leases(), ks.hosts(), ks.parked()]
    return scripts["park"](keys=keys, args=[GROUP, token, "new-tok"])


def test_park_keeps_the_group_its_state_and_requests_without_a_host_or_lease(db, ks, scripts, rolling):
    db.zadd(ks.leases(), {GROUP: 1000, "other": 5})
    db.zadd(ks.hosts(), {GROUP: 10})
    db.rpush(ks.journal(GROUP), "r1")
    with server_clock(db) as now:
        assert park(scripts, ks) == ["parked"]
    owner = db.hgetall(ks.owner(GROUP))
    assert (owner["mode"], owner["state"], owner["host"], owner["token"], owner["ref"]) == \
        ("hosted", "parked", "", "new-tok", OLD)
    assert "running" not in owner and owner["parked"] in now
    assert db.zrange(ks.leases(), 0, -1) == ["other"] and db.zrange(ks.hosts(), 0, -1) == []
    assert db.zscore(ks.parked(), GROUP) in now
    assert db.exists(ckpt(ks, OLD), ks.journal(GROUP), ks.hosted_ids(GROUP), ks.waiters(GROUP, "k")) == 4


def test_park_by_a_stale_owner_changes_nothing(db, ks, scripts, state, rolling):
    before = state()
    assert park(scripts, ks, token="other") == ["stale"]
    assert state() == before


# -- place, adopt, unhost, rename -----------------------------------------------------------------------


def place(scripts, ks, expect="", initial="", ref=NEW, policy="5:0"):
    keys = [ks.owner(GROUP), ks.leases(), ks.hosts(), ks.inbox("w2"), ks.pending(GROUP), ks.hosted_ids(GROUP),
            ks.hosted_records(GROUP), ks.worker("w2"), ks.parked(), ckpt(ks, ref)]
    args = [GROUP, "tok-2", "w2", "q1", ref, "0", "30", LEASE, expect, "counter", "12", "ignore", "place:g",
            initial, policy]
    return scripts["place"](keys=keys, args=args)


def test_place_writes_a_new_groups_first_checkpoint_and_policy(db, ks, scripts):
    assert place(scripts, ks, initial='{"count": 0}') == ["placed"]
    assert db.hgetall(ckpt(ks, NEW)) == {"state": '{"count": 0}', "current": "1"}
    assert db.hmget(ks.owner(GROUP), "ref", "ckpt") == [NEW, "5:0"]


def test_place_that_is_refused_writes_no_checkpoint(db, ks, scripts, rolling):
    assert place(scripts, ks, initial='{"count": 0}')[0] == "exists"
    assert not db.exists(ckpt(ks, NEW))


def test_placing_a_parked_group_takes_it_out_of_the_parked_index(db, ks, scripts, rolling):
    assert park(scripts, ks) == ["parked"]
    assert place(scripts, ks, expect="new-tok", ref=OLD) == ["placed"]
    assert db.zrange(ks.parked(), 0, -1) == []
    owner = db.hgetall(ks.owner(GROUP))
    assert (owner["host"], owner["state"], owner["ref"]) == ("w2", "placing", OLD)
    assert db.hgetall(ckpt(ks, OLD)) == {"state": '{"count": 1}', "current": "1"}  # not rewritten


def test_adopt_reports_the_policy_and_the_journal_length(db, ks, scripts, rolling):
    db.hset(ks.owner(GROUP), mapping={"host": "w2", "ckpt": "10:2.5"})
    db.rpush(ks.journal(GROUP), "r1", "r2")
    keys = [ks.owner(GROUP), ks.leases(), ks.hosted_ids(GROUP), ks.hosted_records(GROUP), ks.journal(GROUP)]
    reply = scripts["adopt"](keys=keys, args=[GROUP, "w2", LEASE])
    assert reply[:4] == ["ok", TOKEN, "q1", OLD]
    assert reply[9:12] == ["10:2.5", 2, ""]  # not stopping
    assert reply[12:] == [record("a", "k", 1), record("b", "k2", 2)]


def unhost(scripts, ks, drop=OLD, force="1"):
    keys = [ks.owner(GROUP), ks.inflight(GROUP), ks.leases(), ks.hosts(), ks.hosted_ids(GROUP),
            ks.hosted_records(GROUP), ckpt(ks, OLD), ks.journal(GROUP), ks.parked()]
    return scripts["unhost"](keys=keys, args=[GROUP, TOKEN, force, drop])


def test_unhost_of_an_ended_group_deletes_its_state_and_journal(db, ks, scripts, rolling):
    db.rpush(ks.journal(GROUP), "r1")
    db.zadd(ks.parked(), {GROUP: 1})
    assert unhost(scripts, ks)[0] == "ok"
    assert not db.exists(ckpt(ks, OLD), ks.journal(GROUP), ks.owner(GROUP))
    assert db.zrange(ks.parked(), 0, -1) == []


def test_unhost_keeps_a_state_a_delivery_holds_or_that_is_not_dropped(db, ks, scripts, rolling):
    db.hset(ckpt(ks, OLD), "delivery", "1")
    unhost(scripts, ks)
    assert db.hgetall(ckpt(ks, OLD)) == {"state": '{"count": 1}', "delivery": "1"}


def test_unhost_that_keeps_the_state_leaves_it_current(db, ks, scripts, rolling):
    unhost(scripts, ks, drop="")
    assert db.hgetall(ckpt(ks, OLD)) == {"state": '{"count": 1}', "current": "1"}


def test_busy_unhost_deletes_nothing(db, ks, scripts, state, rolling):
    before = state()
    assert unhost(scripts, ks, force="") == ["busy"]
    assert state() == before


def test_rename_carries_the_checkpoint_policy(db, ks, scripts, rolling):
    db.hset(ks.owner(GROUP), mapping={"ckpt": "7:0", "static": "0", "timeout": "30"})
    keys = [ks.owner(GROUP), ks.owner("g2"), ks.leases(), ks.hosts()]
    assert scripts["rename"](keys=keys, args=[GROUP, "g2", TOKEN, "tok-3", "q2", LEASE]) == ["ok"]
    assert db.hmget(ks.owner("g2"), "ref", "ckpt") == [OLD, "7:0"]


# -- release.lua (an operator's last resort) parks a rolling group ---------------------------------------------


def test_release_parks_a_rolling_group_with_its_state_and_other_requests(db, ks, scripts, rolling):
    from tests.lua.conftest import lua_source

    db.zadd(ks.leases(), {GROUP: 1000})
    db.zadd(ks.hosts(), {GROUP: 10})
    db.rpush(ks.journal(GROUP), "r1")
    script = db.register_script(lua_source("release"))
    keys = [ks.owner(GROUP), ks.inflight(GROUP), ks.leases(), ks.hosts(), ks.hosted_ids(GROUP),
            ks.hosted_records(GROUP), ks.waiters(GROUP, "k"), ks.parked()]
    with server_clock(db) as now:
        reply = script(keys=keys, args=[GROUP, TOKEN, "tok-9", LEASE, "a", "k"])
    # The running request and its waiter are taken out, for the operator to answer; b stays accepted.
    assert reply == ["parked", "w1", "q1", OLD, "counter", record("a", "k", 1), 1, waiter("w1", "k")]
    owner = db.hgetall(ks.owner(GROUP))
    assert (owner["state"], owner["host"], owner["token"], owner["ref"]) == ("parked", "", "tok-9", OLD)
    assert owner["parked"] in now and "running" not in owner
    assert db.zrange(ks.hosted_ids(GROUP), 0, -1) == ["b"] and db.hgetall(ks.inflight(GROUP)) == {"k2": "b"}
    assert db.zscore(ks.parked(), GROUP) in now and not db.zrange(ks.leases(), 0, -1)
    assert db.exists(ckpt(ks, OLD), ks.journal(GROUP)) == 2


def test_release_still_dissolves_a_static_group(db, ks, scripts, rolling):
    from tests.lua.conftest import lua_source

    db.hset(ks.owner(GROUP), "static", "1")
    script = db.register_script(lua_source("release"))
    keys = [ks.owner(GROUP), ks.inflight(GROUP), ks.leases(), ks.hosts(), ks.hosted_ids(GROUP),
            ks.hosted_records(GROUP), ks.waiters(GROUP, "k"), ks.parked()]
    reply = script(keys=keys, args=[GROUP, TOKEN, "tok-9", LEASE, "a", "k"])
    assert reply[0] == "hosted" and reply[-1] == record("b", "k2", 2)
    assert not db.exists(ks.owner(GROUP)) and not db.zrange(ks.parked(), 0, -1)


def test_adopt_hands_on_a_stop_marked_while_parked(db, ks, scripts, rolling):
    """stop_parked.lua's mark goes to the next host with the group (it ends the group once its requests ran)."""
    db.hset(ks.owner(GROUP), mapping={"host": "w2", "stopping": "1"})
    keys = [ks.owner(GROUP), ks.leases(), ks.hosted_ids(GROUP), ks.hosted_records(GROUP), ks.journal(GROUP)]
    reply = scripts["adopt"](keys=keys, args=[GROUP, "w2", LEASE])
    assert reply[0] == "ok" and reply[11] == "1"
    assert db.hget(ks.owner(GROUP), "stopping") == "1"  # kept: a host that dies before the end hands it on
