"""submit.lua: register a request for a group, atomically (leader, wait, queued, hosted, moved, nothost)."""

from __future__ import annotations

import pytest

from tests.lua.support import record, server_clock, waiter

GROUP = "g"
HOST_GROUP = "g-msg1"
LEASE = 45_000


def submit(scripts, ks, task_id, key="k", flags="", token="tok-1", host_group=None):
    """Submit ``task_id``; with ``host_group``, KEYS[9..16] and ARGV[9] name the group of Msg1 alone."""
    keys = ks.group_keys(GROUP, key)
    args = [GROUP, key, task_id, token, waiter(task_id, key), record(task_id, key, "arg"), LEASE, flags]
    if host_group is not None:
        keys = keys + ks.group_keys(host_group, key)
        args.append(host_group)
    return scripts["submit"](keys=keys, args=args)


def lead(db, ks, group=GROUP, task_id="a", key="k"):
    """``task_id`` leads ``group`` (as submit registers a leader)."""
    db.hset(ks.owner(group), mapping={
        "mode": "leader", "token": "tok-0", "task_id": task_id, "key": key, "state": "running",
        "request": record(task_id, key, "arg"),
    })
    db.hset(ks.inflight(group), key, task_id)
    db.zadd(ks.leases(), {group: 1000})


def host(db, ks, group=GROUP, seq=None):
    owner = {"mode": "hosted", "token": "host-tok", "host": "w1", "queue": f"q-{group}", "ref": f"ref-{group}",
             "state": "active"}
    if seq is not None:
        owner["seq"] = str(seq)
    db.hset(ks.owner(group), mapping=owner)


def moved(db, ks, group=GROUP, target="g-new"):
    db.hset(ks.owner(group), mapping={"mode": "moved", "token": "host-tok", "host": "w1", "target": target})


# -- one group ---------------------------------------------------------------


def test_the_first_request_leads_a_free_group(db, ks, scripts):
    with server_clock(db) as now:
        assert submit(scripts, ks, "a") == ["leader", "a", GROUP]

    assert db.hgetall(ks.owner(GROUP)) == {
        "mode": "leader", "token": "tok-1", "task_id": "a", "key": "k", "state": "queued",
        "request": record("a", "k", "arg"),
    }
    assert db.hgetall(ks.inflight(GROUP)) == {"k": "a"}
    assert db.zrange(ks.leases(), 0, -1) == [GROUP]
    assert db.zscore(ks.leases(), GROUP) in now + LEASE
    assert not db.exists(ks.pending(GROUP), ks.waiters(GROUP, "k"), ks.metrics())


def test_the_same_key_waits_for_the_leader(db, ks, scripts, state):
    lead(db, ks)
    before = state()

    assert submit(scripts, ks, "b") == ["wait", "a", GROUP]
    assert submit(scripts, ks, "c") == ["wait", "a", GROUP]

    assert db.lrange(ks.waiters(GROUP, "k"), 0, -1) == [waiter("b", "k"), waiter("c", "k")]
    assert db.hgetall(ks.metrics()) == {"coalesced": "2"}
    after = state()
    del after[ks.waiters(GROUP, "k")], after[ks.metrics()]
    assert after == before


def test_another_key_is_queued_behind_the_leader(db, ks, scripts):
    lead(db, ks)
    owner = db.hgetall(ks.owner(GROUP))

    assert submit(scripts, ks, "b", key="k2") == ["queued", "a", GROUP]
    assert submit(scripts, ks, "c", key="k3") == ["queued", "a", GROUP]

    assert db.lrange(ks.pending(GROUP), 0, -1) == [record("b", "k2", "arg"), record("c", "k3", "arg")]
    assert db.hgetall(ks.inflight(GROUP)) == {"k": "a", "k2": "b", "k3": "c"}
    assert db.hgetall(ks.metrics()) == {"queued": "2"}
    assert db.hgetall(ks.owner(GROUP)) == owner
    assert db.zscore(ks.leases(), GROUP) == 1000


def test_the_same_key_as_a_queued_request_waits_for_it(db, ks, scripts):
    lead(db, ks)
    submit(scripts, ks, "b", key="k2")

    assert submit(scripts, ks, "c", key="k2") == ["wait", "b", GROUP]

    assert db.lrange(ks.waiters(GROUP, "k2"), 0, -1) == [waiter("c", "k2")]
    assert db.lrange(ks.pending(GROUP), 0, -1) == [record("b", "k2", "arg")]


def test_a_hosted_group_accepts_the_request(db, ks, scripts):
    host(db, ks, seq=4)

    assert submit(scripts, ks, "b") == ["hosted", f"q-{GROUP}", f"ref-{GROUP}", "w1", GROUP]

    assert db.hgetall(ks.inflight(GROUP)) == {"k": "b"}
    assert db.zrange(ks.hosted_ids(GROUP), 0, -1, withscores=True) == [("b", 5.0)]
    assert db.hgetall(ks.hosted_records(GROUP)) == {"b": record("b", "k", "arg")}
    assert db.hget(ks.owner(GROUP), "seq") == "5"
    assert not db.exists(ks.leases(), ks.pending(GROUP), ks.metrics())


def test_hosted_requests_are_numbered_in_arrival_order(db, ks, scripts):
    host(db, ks)

    submit(scripts, ks, "b", key="k1")
    submit(scripts, ks, "c", key="k2")

    assert db.zrange(ks.hosted_ids(GROUP), 0, -1, withscores=True) == [("b", 1.0), ("c", 2.0)]


def test_the_same_key_waits_on_a_hosted_group(db, ks, scripts):
    host(db, ks)
    submit(scripts, ks, "b")

    assert submit(scripts, ks, "c") == ["wait", "b", GROUP]

    assert db.lrange(ks.waiters(GROUP, "k"), 0, -1) == [waiter("c", "k")]
    assert db.zrange(ks.hosted_ids(GROUP), 0, -1) == ["b"]
    assert db.hgetall(ks.metrics()) == {"coalesced": "1"}


@pytest.mark.parametrize("flags", ["", "h"])
def test_a_moved_group_names_its_new_name(db, ks, scripts, state, flags):
    moved(db, ks)
    db.hset(ks.inflight(GROUP), "k", "z")
    before = state()

    assert submit(scripts, ks, "b", flags=flags) == ["moved", "g-new", GROUP]

    assert state() == before


def test_flag_h_on_a_free_group_is_nothost(ks, scripts, state):
    assert submit(scripts, ks, "a", flags="h") == ["nothost", GROUP]

    assert state() == {}


def test_flag_h_on_a_leader_group_is_nothost(db, ks, scripts, state):
    lead(db, ks)
    before = state()

    assert submit(scripts, ks, "b", key="k2", flags="h") == ["nothost", GROUP]

    assert state() == before


def test_flag_h_on_a_hosted_group_registers(db, ks, scripts):
    host(db, ks)

    assert submit(scripts, ks, "b", flags="h")[0] == "hosted"

    assert db.zrange(ks.hosted_ids(GROUP), 0, -1) == ["b"]


# -- resubmission (flag "r") ---------------------------------------------------


def test_a_resubmitted_id_is_not_its_own_waiter(db, ks, scripts):
    """unhost --force left the inflight entry naming b; b is resubmitted to the group hosted again."""
    host(db, ks)
    db.hset(ks.inflight(GROUP), "k", "b")

    assert submit(scripts, ks, "b", flags="r")[0] == "hosted"

    assert db.zrange(ks.hosted_ids(GROUP), 0, -1) == ["b"]
    assert not db.exists(ks.waiters(GROUP, "k"))


def test_a_resubmitted_id_leads_a_free_group(db, ks, scripts):
    db.hset(ks.inflight(GROUP), "k", "b")

    with server_clock(db) as now:
        assert submit(scripts, ks, "b", flags="r") == ["leader", "b", GROUP]

    assert db.hget(ks.owner(GROUP), "task_id") == "b"
    assert db.zscore(ks.leases(), GROUP) in now + LEASE


def test_without_r_the_same_id_waits_on_itself(db, ks, scripts):
    host(db, ks)
    db.hset(ks.inflight(GROUP), "k", "b")

    assert submit(scripts, ks, "b") == ["wait", "b", GROUP]

    assert db.lrange(ks.waiters(GROUP, "k"), 0, -1) == [waiter("b", "k")]


def test_a_resubmission_waits_for_another_id(db, ks, scripts):
    host(db, ks)
    db.hset(ks.inflight(GROUP), "k", "z")

    assert submit(scripts, ks, "b", flags="r") == ["wait", "z", GROUP]


# -- the group of Msg1 alone (KEYS[9..16]) -------------------------------------


def test_a_hosted_msg1_group_takes_the_request(db, ks, scripts):
    host(db, ks, group=HOST_GROUP)

    reply = submit(scripts, ks, "b", host_group=HOST_GROUP)

    assert reply == ["hosted", f"q-{HOST_GROUP}", f"ref-{HOST_GROUP}", "w1", HOST_GROUP]
    assert db.hgetall(ks.inflight(HOST_GROUP)) == {"k": "b"}
    assert db.hgetall(ks.hosted_records(HOST_GROUP)) == {"b": record("b", "k", "arg")}
    assert not db.exists(ks.owner(GROUP), ks.inflight(GROUP), ks.leases())


def test_the_msg1_group_coalesces_first(db, ks, scripts):
    host(db, ks, group=HOST_GROUP)
    db.hset(ks.inflight(HOST_GROUP), "k", "z")

    assert submit(scripts, ks, "b", host_group=HOST_GROUP) == ["wait", "z", HOST_GROUP]

    assert db.lrange(ks.waiters(HOST_GROUP, "k"), 0, -1) == [waiter("b", "k")]
    assert not db.exists(ks.waiters(GROUP, "k"))


def test_a_moved_msg1_group_names_its_new_name(db, ks, scripts):
    moved(db, ks, group=HOST_GROUP, target="g-rolled")

    assert submit(scripts, ks, "b", host_group=HOST_GROUP) == ["moved", "g-rolled", HOST_GROUP]

    assert not db.exists(ks.owner(GROUP))


def test_a_resubmission_reaches_the_msg1_group(db, ks, scripts):
    """Flag "r" is passed on to the Msg1 group (with "h" added)."""
    host(db, ks, group=HOST_GROUP)
    db.hset(ks.inflight(HOST_GROUP), "k", "b")

    assert submit(scripts, ks, "b", flags="r", host_group=HOST_GROUP)[0] == "hosted"

    assert db.zrange(ks.hosted_ids(HOST_GROUP), 0, -1) == ["b"]


def test_a_free_msg1_group_falls_back_to_the_group(db, ks, scripts):
    """The Msg1 group is only tried as hosted: nothing is registered there."""
    with server_clock(db) as now:
        assert submit(scripts, ks, "b", host_group=HOST_GROUP) == ["leader", "b", GROUP]

    assert db.hget(ks.owner(GROUP), "task_id") == "b"
    assert db.zrange(ks.leases(), 0, -1) == [GROUP]
    assert db.zscore(ks.leases(), GROUP) in now + LEASE
    assert not db.exists(ks.owner(HOST_GROUP), ks.inflight(HOST_GROUP))


def test_a_msg1_group_with_a_leader_falls_back_to_the_group(db, ks, scripts):
    lead(db, ks, group=HOST_GROUP, task_id="z")
    host(db, ks)

    assert submit(scripts, ks, "b", host_group=HOST_GROUP) == ["hosted", f"q-{GROUP}", f"ref-{GROUP}", "w1", GROUP]

    assert db.hgetall(ks.inflight(HOST_GROUP)) == {"k": "z"}
    assert not db.exists(ks.waiters(HOST_GROUP, "k"))


def test_flag_h_with_neither_group_hosted_is_nothost(ks, scripts, state):
    assert submit(scripts, ks, "b", flags="h", host_group=HOST_GROUP) == ["nothost", GROUP]

    assert state() == {}


def test_fewer_than_16_keys_ignore_the_msg1_group(db, ks, scripts):
    host(db, ks, group=HOST_GROUP)
    keys = ks.group_keys(GROUP, "k") + ks.group_keys(HOST_GROUP, "k")[:7]
    args = [GROUP, "k", "b", "tok-1", waiter("b", "k"), record("b", "k", "arg"), LEASE, "", HOST_GROUP]

    assert scripts["submit"](keys=keys, args=args) == ["leader", "b", GROUP]

    assert not db.exists(ks.inflight(HOST_GROUP))


# -- "a": a repeat of a submit whose reply was lost --------------------------------


@pytest.mark.parametrize("first", ["leader", "wait", "queued", "hosted"])
def test_a_repeat_finds_the_earlier_registration_and_changes_nothing(db, ks, scripts, state, first):
    """The first submit was applied but its caller never saw the reply (an outage): the repeat
    answers as the first did, so the request is registered once and runs once."""
    if first == "wait":
        lead(db, ks, task_id="x", key="k")
    elif first == "queued":
        lead(db, ks, task_id="x", key="other")
    elif first == "hosted":
        host(db, ks)
    reply = submit(scripts, ks, "a", token="tok-1")
    before = state()

    again = submit(scripts, ks, "a", flags="a", token="tok-2")

    assert state() == before
    assert again[0] == first
    if first == "leader":
        assert again == ["leader", "a", "tok-1", GROUP]  # the token of the registration that counts
    else:
        assert again == reply


def test_a_repeat_of_a_submit_that_was_not_applied_registers_it(db, ks, scripts):
    assert submit(scripts, ks, "a", flags="a", token="tok-2") == ["leader", "a", GROUP]
    assert db.hget(ks.owner(GROUP), "token") == "tok-2"
