"""nap.lua, keep.lua and the ring in submit.lua: a napping group queue is woken by its next request."""

from __future__ import annotations

import pytest

from tests.lua.conftest import lua_source
from tests.lua.support import record, server_clock, waiter

GROUP = "g"
HOST = "w1"
LEASE = 10_000
NAP_LEASE = 300_000


@pytest.fixture(scope="module")
def naps(db):
    return {name: db.register_script(lua_source(name)) for name in ("nap", "keep")}


@pytest.fixture
def hosted(db, ks):
    db.hset(ks.owner(GROUP), mapping={"mode": "hosted", "token": "host-tok", "host": HOST, "queue": "q-g",
                                      "ref": "ref-g", "state": "active"})
    db.zadd(ks.leases(), {GROUP: 1000})


def nap(naps, ks, token="host-tok"):
    return naps["nap"](keys=[ks.owner(GROUP), ks.leases(), ks.hosted_ids(GROUP)],
                       args=[GROUP, token, ks.bell(HOST), LEASE, NAP_LEASE])


def keep(naps, ks, token="host-tok", wake=""):
    return naps["keep"](keys=[ks.owner(GROUP), ks.leases()], args=[GROUP, token, LEASE, NAP_LEASE, wake])


def submit(scripts, ks, task_id, key="k"):
    args = [GROUP, key, task_id, "tok", waiter(task_id, key), record(task_id, key, "arg"), LEASE, ""]
    return scripts["submit"](keys=ks.group_keys(GROUP, key), args=args)


def test_an_idle_group_naps_with_a_long_lease(db, ks, naps, hosted):
    with server_clock(db) as now:
        assert nap(naps, ks) == 1
    owner = db.hgetall(ks.owner(GROUP))
    assert (owner["bell"], owner["bell_ms"]) == (ks.bell(HOST), str(LEASE))
    assert db.zscore(ks.leases(), GROUP) in now + NAP_LEASE


def test_a_group_with_an_accepted_request_does_not_nap(db, ks, naps, hosted):
    """The request's message may not be published yet: its queue must stay consumed."""
    db.zadd(ks.hosted_ids(GROUP), {"b": 1})
    assert nap(naps, ks) == 0
    assert "bell" not in db.hgetall(ks.owner(GROUP))
    assert db.zscore(ks.leases(), GROUP) == 1000


def test_only_the_owner_naps_its_group(db, ks, naps, hosted):
    assert nap(naps, ks, token="old-tok") == -1
    assert "bell" not in db.hgetall(ks.owner(GROUP))


def test_a_request_to_a_napping_group_rings_once_and_cuts_the_lease(db, ks, naps, scripts, hosted):
    nap(naps, ks)
    with server_clock(db) as now:
        assert submit(scripts, ks, "b") == ["hosted", "q-g", "ref-g", HOST, GROUP]
    assert db.lrange(ks.bell(HOST), 0, -1) == [GROUP]
    assert "bell" not in db.hgetall(ks.owner(GROUP)) and "bell_ms" not in db.hgetall(ks.owner(GROUP))
    # A dead host's group is recovered within one lease of the request, not its napping lease.
    assert db.zscore(ks.leases(), GROUP) in now + LEASE
    submit(scripts, ks, "c", key="k2")
    assert db.lrange(ks.bell(HOST), 0, -1) == [GROUP], "one ring per nap"


def test_a_ring_never_lengthens_a_lease(db, ks, naps, scripts, hosted):
    nap(naps, ks)
    db.zadd(ks.leases(), {GROUP: 5})  # the reaper may take it now: the ring leaves that so
    submit(scripts, ks, "b")
    assert db.zscore(ks.leases(), GROUP) == 5


def test_keep_gives_a_napping_group_its_long_lease_and_an_awake_one_an_ordinary_one(db, ks, naps, hosted):
    with server_clock(db) as now:
        assert keep(naps, ks) == 1
    assert db.zscore(ks.leases(), GROUP) in now + LEASE
    nap(naps, ks)
    with server_clock(db) as now:
        assert keep(naps, ks) == 1
    assert db.zscore(ks.leases(), GROUP) in now + NAP_LEASE
    # Woken by the host's sweep: the bell goes, the lease is an ordinary one again.
    with server_clock(db) as now:
        assert keep(naps, ks, wake="wake") == 1
    assert "bell" not in db.hgetall(ks.owner(GROUP))
    assert db.zscore(ks.leases(), GROUP) in now + LEASE


def test_keep_is_for_the_owner_only(db, ks, naps, hosted):
    assert keep(naps, ks, token="old-tok") == 0
    assert db.zscore(ks.leases(), GROUP) == 1000


def test_a_new_host_takes_the_bell_down(db, ks, naps, scripts, hosted):
    """adopt.lua: the adopting host consumes the queue at first; a stale bell would ring the old host."""
    nap(naps, ks)
    keys = [ks.owner(GROUP), ks.leases(), ks.hosted_ids(GROUP), ks.hosted_records(GROUP)]
    assert scripts["adopt"](keys=keys, args=[GROUP, HOST, LEASE])[0] == "ok"
    assert "bell" not in db.hgetall(ks.owner(GROUP))
    submit(scripts, ks, "b")
    assert db.llen(ks.bell(HOST)) == 0
