"""deliver.lua: "done" forgets a settled delivery; "take" hands an overdue one to the reaper."""

from __future__ import annotations

import json

import pytest

from tests.lua.support import record, server_clock, server_ms, waiter

GROUP = "g"
TOKEN = "tok-1"
MEMBER = f"{GROUP} {TOKEN}"
LEASE = 6_000
PAST = 7  # a deadline long gone on the server's clock
OUTCOME = json.dumps({"value": {"x": 1}})
FIELDS = {"leader": "a", "self": record("a", "k"), "outcome": OUTCOME, "next": record("b", "k2"),
          "next_token": "tok-2"}
WAITERS = (waiter("w1", "k"), waiter("w2", "k"))


def deliver(scripts, ks, mode, member=MEMBER, token=TOKEN, lease=LEASE):
    keys = [ks.delivery(GROUP, token), ks.delivery_waiters(GROUP, token), ks.deliveries()]
    args = [member, mode] if mode == "done" else [member, mode, lease]
    return scripts["deliver"](keys=keys, args=args)


def pending(db, ks, deadline=PAST, fields=None, waiters=WAITERS, token=TOKEN):
    """A delivery as finish.lua leaves it (its deadline ``deadline``), and another one that is not this test's."""
    db.hset(ks.delivery(GROUP, token), mapping=FIELDS if fields is None else fields)
    if waiters:
        db.rpush(ks.delivery_waiters(GROUP, token), *waiters)
    db.zadd(ks.deliveries(), {f"{GROUP} {token}": deadline, "other tok-9": 5})


# -- done ----------------------------------------------------------------------------------------


def test_done_deletes_the_delivery_its_waiters_and_its_member(db, ks, scripts):
    pending(db, ks)

    assert deliver(scripts, ks, "done") == ["done"]

    assert not db.exists(ks.delivery(GROUP, TOKEN), ks.delivery_waiters(GROUP, TOKEN))
    assert db.zrange(ks.deliveries(), 0, -1, withscores=True) == [("other tok-9", 5.0)]


def test_done_deletes_a_delivery_that_is_not_due(db, ks, scripts):
    """The caller answered everyone in time: the normal case."""
    pending(db, ks, deadline=server_ms(db) + 3_600_000)

    assert deliver(scripts, ks, "done") == ["done"]

    assert not db.exists(ks.delivery(GROUP, TOKEN), ks.delivery_waiters(GROUP, TOKEN))
    assert db.zrange(ks.deliveries(), 0, -1) == ["other tok-9"]


def test_done_twice_is_harmless(db, ks, scripts, state):
    pending(db, ks)
    assert deliver(scripts, ks, "done") == ["done"]
    after_first = state()

    assert deliver(scripts, ks, "done") == ["done"]

    assert state() == after_first


def test_done_of_an_unknown_delivery_changes_nothing(ks, scripts, state):
    assert deliver(scripts, ks, "done") == ["done"]

    assert state() == {}


# -- take ----------------------------------------------------------------------------------------


def test_take_returns_an_overdue_delivery_and_leases_it_again(db, ks, scripts):
    pending(db, ks)

    with server_clock(db) as now:
        reply = deliver(scripts, ks, "take")

    assert reply == ["taken", "a", record("b", "k2"), "tok-2", record("a", "k"), OUTCOME, "", "",
                     waiter("w1", "k"), waiter("w2", "k")]
    assert db.zscore(ks.deliveries(), MEMBER) in now + LEASE
    assert db.zscore(ks.deliveries(), "other tok-9") == 5
    # Taken, not settled: its content stays until "done".
    assert db.hgetall(ks.delivery(GROUP, TOKEN)) == FIELDS
    assert db.lrange(ks.delivery_waiters(GROUP, TOKEN), 0, -1) == list(WAITERS)


def test_take_of_a_hosted_delivery_fills_the_missing_fields_with_empty_strings(db, ks, scripts):
    """finish_hosted.lua writes self, outcome, ref and device only."""
    pending(db, ks, fields={"self": record("a", "k"), "outcome": "", "ref": "ref-2", "device": "counter"},
            waiters=())

    assert deliver(scripts, ks, "take") == ["taken", "", "", "", record("a", "k"), "", "ref-2", "counter"]


def test_a_deadline_at_the_server_clock_is_due(db, ks, scripts):
    pending(db, ks, deadline=server_ms(db))

    assert deliver(scripts, ks, "take")[0] == "taken"


def test_take_before_the_deadline_is_gone_and_changes_nothing(db, ks, scripts, state):
    """Its writer may still be answering: the reaper leaves it alone."""
    pending(db, ks, deadline=server_ms(db) + 3_600_000)
    before = state()

    assert deliver(scripts, ks, "take") == ["gone"]

    assert state() == before


def test_a_second_take_finds_it_leased_again(db, ks, scripts, state):
    """Two reapers on the same beat: only the first takes it."""
    pending(db, ks)
    assert deliver(scripts, ks, "take")[0] == "taken"
    after_first = state()

    assert deliver(scripts, ks, "take") == ["gone"]

    assert state() == after_first


def test_take_of_a_settled_delivery_is_gone(db, ks, scripts, state):
    pending(db, ks)
    deliver(scripts, ks, "done")
    settled = state()

    assert deliver(scripts, ks, "take") == ["gone"]

    assert state() == settled


def test_take_of_a_due_member_without_its_delivery_removes_the_member(db, ks, scripts):
    """Its hash is gone (deleted by hand, or lost): the member would be due for ever."""
    db.zadd(ks.deliveries(), {MEMBER: PAST, "other tok-9": 5})

    assert deliver(scripts, ks, "take") == ["gone"]

    assert db.zrange(ks.deliveries(), 0, -1) == ["other tok-9"]


def test_take_of_an_unknown_member_changes_nothing(ks, scripts, state):
    assert deliver(scripts, ks, "take") == ["gone"]

    assert state() == {}


@pytest.mark.parametrize("lease", [1_000, 120_000])
def test_the_new_deadline_is_the_server_clock_plus_the_lease(db, ks, scripts, lease):
    pending(db, ks)

    with server_clock(db) as now:
        deliver(scripts, ks, "take", lease=lease)

    assert db.zscore(ks.deliveries(), MEMBER) in now + lease
