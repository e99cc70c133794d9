"""expire.lua: the reaper takes a group whose lease ran out (score <= the server's now) away from its owner."""

from __future__ import annotations

import pytest

from tests.lua.support import record, server_clock, server_ms

GROUP = "g"
TOKEN = "tok-1"
NEW = "tok-2"
LEASE = 40_000
PAST = 7  # a deadline long gone on the server's clock
OTHER = 5  # another group's expired lease, which expire never touches


GRACE = 3_000


def expire(scripts, ks, token, client=None):
    return scripts["expire"](keys=[ks.owner(GROUP), ks.leases(), ks.pulse()], args=[GROUP, token, NEW, LEASE, GRACE],
                             client=client)


def own(db, ks, lease=PAST, **fields):
    db.hset(ks.owner(GROUP), mapping={"token": TOKEN, **fields})
    if lease is not None:
        db.zadd(ks.leases(), {GROUP: lease})
    db.zadd(ks.leases(), {"other": OTHER})


def leader(db, ks, state, lease=PAST):
    own(db, ks, lease, mode="leader", task_id="a", key="k", state=state, request=record("a", "k"))


def test_a_leader_that_never_started_is_requeued_under_the_new_token(db, ks, scripts):
    leader(db, ks, "queued")

    with server_clock(db) as now:
        assert expire(scripts, ks, TOKEN) == ["requeue", record("a", "k")]

    assert db.hgetall(ks.owner(GROUP)) == {
        "mode": "leader", "token": NEW, "task_id": "a", "key": "k", "state": "queued", "request": record("a", "k"),
    }
    assert db.zrange(ks.leases(), 0, -1) == ["other", GROUP]
    assert db.zscore(ks.leases(), "other") == OTHER
    assert db.zscore(ks.leases(), GROUP) in now + LEASE


def test_a_leader_that_died_while_running_is_dead(db, ks, scripts):
    leader(db, ks, "running")

    with server_clock(db) as now:
        assert expire(scripts, ks, TOKEN) == ["dead", record("a", "k")]

    owner = db.hgetall(ks.owner(GROUP))
    assert (owner["token"], owner["state"], owner["task_id"]) == (NEW, "dead", "a")
    assert db.zscore(ks.leases(), GROUP) in now + LEASE


def test_a_lease_just_behind_the_server_clock_has_run_out(db, ks, scripts):
    """A deadline 1 ms before the server time read just before the call."""
    leader(db, ks, "running", lease=server_ms(db) - 1)

    assert expire(scripts, ks, TOKEN)[0] == "dead"


# A helper (not a script under test): the lease runs out at the server's now, in ms as the scripts compute it.
LEASE_AT_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
return now
"""


def test_a_lease_at_exactly_now_has_run_out(db, ks, scripts):
    """Expired means score <= now.

    In one MULTI: the lease is set to the server's ms, expire runs, TIME is read. When that TIME is
    still the lease's ms, expire's clock read exactly the deadline; the rare attempt that crossed a
    ms boundary is repeated (state reset). Every attempt must find the lease run out.
    """
    exact = False
    for _ in range(20):
        leader(db, ks, "running")
        pipe = db.pipeline(transaction=True)
        pipe.eval(LEASE_AT_NOW, 1, ks.leases(), GROUP)
        expire(scripts, ks, TOKEN, client=pipe)
        pipe.time()
        deadline, reply, (seconds, micros) = pipe.execute()

        assert reply[0] == "dead"
        if seconds * 1000 + micros // 1000 == deadline:
            exact = True
            break
    assert exact, "no attempt ran within one ms"


def test_an_owner_without_lease_is_taken(db, ks, scripts):
    leader(db, ks, "running", lease=None)

    with server_clock(db) as now:
        assert expire(scripts, ks, TOKEN)[0] == "dead"

    assert db.zscore(ks.leases(), GROUP) in now + LEASE


@pytest.mark.parametrize("mode", ["hosted", "moved"])
def test_a_dead_persistent_worker_orphans_its_group(db, ks, scripts, mode):
    own(db, ks, mode=mode, host="w1", queue="q1", state="active", target="g2")

    with server_clock(db) as now:
        assert expire(scripts, ks, TOKEN) == ["orphan", "w1", mode]

    assert db.hgetall(ks.owner(GROUP)) == {
        "mode": mode, "token": NEW, "host": "w1", "queue": "q1", "state": "orphaned", "target": "g2",
    }
    assert db.zscore(ks.leases(), GROUP) in now + LEASE


@pytest.mark.parametrize("ahead", [1_000, 3_600_000])
def test_a_lease_renewed_meanwhile_is_alive(db, ks, scripts, state, ahead):
    """A deadline still ahead of the server's clock (a client clock behind it would not matter)."""
    leader(db, ks, "running", lease=server_ms(db) + ahead)
    before = state()

    assert expire(scripts, ks, TOKEN) == ["alive"]

    assert state() == before


def test_an_owner_changed_meanwhile_is_gone(db, ks, scripts, state):
    """The reaper saw tok-old; the group has been handed on since."""
    leader(db, ks, "running")
    before = state()

    assert expire(scripts, ks, "tok-old") == ["gone"]

    assert state() == before


def test_the_second_of_two_reapers_finds_it_gone(db, ks, scripts, state):
    """Even once the new lease has run out too, the token the second reaper saw is not the owner's any more."""
    leader(db, ks, "running")
    assert expire(scripts, ks, TOKEN)[0] == "dead"
    db.zadd(ks.leases(), {GROUP: PAST})
    after_first = state()

    assert expire(scripts, ks, TOKEN) == ["gone"]

    assert state() == after_first


def test_a_lease_without_owner_hash_is_removed(db, ks, scripts):
    """What ``expired()`` reports with an empty token when the owner hash is gone."""
    db.zadd(ks.leases(), {GROUP: PAST, "other": OTHER})

    assert expire(scripts, ks, "") == ["gone"]

    assert db.zrange(ks.leases(), 0, -1, withscores=True) == [("other", float(OTHER))]
    assert not db.exists(ks.owner(GROUP))


def test_a_live_lease_without_owner_hash_is_removed_too(db, ks, scripts):
    """The missing owner is checked before the clock: a deadline still ahead does not keep the lease."""
    db.zadd(ks.leases(), {GROUP: server_ms(db) + 3_600_000, "other": OTHER})

    assert expire(scripts, ks, TOKEN) == ["gone"]

    assert db.zrange(ks.leases(), 0, -1) == ["other"]


@pytest.mark.parametrize("state_name", ["queued", "published", "reserved"])
def test_every_state_before_running_is_requeued(db, ks, scripts, state_name):
    leader(db, ks, state_name)
    assert expire(scripts, ks, TOKEN)[0] == "requeue"
    # Unpublished again: the reaper marks it published once it has sent it.
    assert db.hget(ks.owner(GROUP), "state") == "queued"


def test_nothing_is_taken_within_a_grace_after_the_registry_resumed(db, ks, scripts, state):
    """A Redis restart: owners could not renew during the gap; they get one grace to do it."""
    leader(db, ks, "running")
    db.hset(ks.pulse(), mapping={"resumed": server_ms(db) - GRACE + 1_000, "last": server_ms(db)})
    before = state()
    assert expire(scripts, ks, TOKEN) == ["alive"]
    assert state() == before


def test_after_the_grace_an_expired_lease_is_taken(db, ks, scripts):
    leader(db, ks, "running")
    db.hset(ks.pulse(), mapping={"resumed": server_ms(db) - GRACE - 1_000, "last": server_ms(db)})
    assert expire(scripts, ks, TOKEN)[0] == "dead"
