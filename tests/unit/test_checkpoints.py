"""Rolling state: bounded checkpoints, the journal and its replay, and parked groups.

Real Redis, a Host as ``--persistent`` builds it with a fake consumer (see
test_hosting.py).  What Redis holds is counted after each step: one
checkpoint per rolling group at rest, its journal between checkpoints, and
nothing left behind when a group ends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from celery_persistent import Device, GroupParked, InvalidMessage, InvalidOptions
from celery_persistent.checkpoints import CheckpointPolicy, check_state, encode_state
from celery_persistent.config import resolve_options
from celery_persistent.groupview import GroupView
from celery_persistent.hosting import Host, Hosted
from celery_persistent.protocol import Placement, PlaceStatus
from celery_persistent.registry import delivery_member
from celery_persistent.store import REF_KEY, checkpoint_id, checkpoint_of, stored_key, writer_key
from tests.unit import test_coalescing as coalescing
from tests.unit.conftest import FakeTask, PersistentEnv
from tests.unit.test_hosting import Counter, Died, calls, deliver, die_at, make_host, run

STATE_BYTES = 50_000


class Ledger(Counter):
    """A large state; its callers get a small reply (``Device.reply``)."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "led-" + str(msg1["id"])

    def reply(self, msg1: Any, msg2: Any, msg3: Any, opts: Any) -> Any:
        return {"count": msg3["count"]}


class Dice(Counter):
    """Not deterministic (as far as the plugin knows): never journaled."""

    deterministic = False

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "dice-" + str(msg1["id"])


DEVICES: dict[str, type[Device]] = {"counter": Counter, "ledger": Ledger, "dice": Dice}


@pytest.fixture(autouse=True)
def _fresh_calls() -> Iterator[None]:
    calls.clear()
    yield
    calls.clear()


@pytest.fixture
def env(persistent_env: PersistentEnv) -> PersistentEnv:
    return persistent_env


def ledger(uid: str = "a", count: int = 0) -> dict[str, Any]:
    return {"device": "ledger", "id": uid, "count": count, "blob": "x" * STATE_BYTES}


def start(env: PersistentEnv, host: Host, msg1: dict[str, Any], **opts: Any) -> Hosted:
    """``start_worker(msg1, opts)`` (by value: the group's state is its own) on ``host``, adopted by one beat."""
    host.tick()  # ``host`` is live: start_worker places on it
    handle = env.persistent.start_worker(msg1, opts or None)
    assert handle.hostname == host.hostname
    host.tick()
    h = host.table.lookup(handle.group)
    assert h is not None
    return h


def group_keys(env: PersistentEnv, group: str) -> dict[str, str]:
    """Every key of ``group`` (its hash tag) -> its type."""
    return {k.decode(): env.client.type(k).decode() for k in env.client.scan_iter(match=f"{env.prefix}:{{{group}}}:*")}


def checkpoints(env: PersistentEnv, group: str) -> list[str]:
    return sorted(k for k in group_keys(env, group) if ":ckpt:" in k)


def journal(env: PersistentEnv, group: str) -> list[str]:
    return [r.id for r in env.registry.journal(group)]


def add(env: PersistentEnv, host: Host, h: Hosted, by: int, msg1: dict[str, Any] | None = None) -> Any:
    r = env.submit(msg1 or {"device": h.device, "id": h.group.split("-", 1)[1], "count": 0}, {"path": "add", "by": by})
    return deliver(env, host, h.group, r.id)


# -- ids, policy, checks --------------------------------------------------------------------------


def test_a_checkpoint_id_names_its_group_and_writer_and_keeps_the_digest() -> None:
    content = "a" * 32
    ident = checkpoint_id(content, "grp.1", "task-id with spaces")
    assert ident == f"{content}~grp.1~{writer_key('task-id with spaces')}"
    assert checkpoint_of(ident) == ("grp.1", writer_key("task-id with spaces"))
    assert checkpoint_of(content) is None and checkpoint_of(f"{content}-{'b' * 32}") is None
    from celery_persistent.keys import KeySpace
    from celery_persistent.store import as_ref

    assert as_ref({REF_KEY: ident}).digest == content
    assert stored_key(KeySpace("p"), ident) == f"p:{{grp.1}}:ckpt:{writer_key('task-id with spaces')}"
    assert stored_key(KeySpace("p"), content) == f"p:store:{content}"
    with pytest.raises(InvalidMessage):
        as_ref({REF_KEY: f"{content}~bad group~{'0' * 16}"})


def test_the_store_loads_a_checkpoint_and_never_sets_its_ttl(env: PersistentEnv) -> None:
    encoded = encode_state({"device": "counter", "id": "s", "count": 2}, 1 << 20, "ctr-s", "t1")
    key = stored_key(env.keys, encoded.storage_id)
    env.client.hset(key, mapping={"state": encoded.data, "current": "1"})
    assert env.store.get({REF_KEY: encoded.storage_id}) == {"device": "counter", "id": "s", "count": 2}
    env.store.touch([encoded.storage_id])
    assert env.client.ttl(key) == -1


def test_policy_options_are_checked_and_layered(env: PersistentEnv) -> None:
    assert CheckpointPolicy.from_options(resolve_options(None, {})) == CheckpointPolicy(1, 0.0)
    opts = resolve_options({"checkpoint_every": 0, "checkpoint_interval": 2.5}, {})
    policy = CheckpointPolicy.from_options(opts)
    assert CheckpointPolicy.decode(policy.encode()) == policy == CheckpointPolicy(0, 2.5)
    assert CheckpointPolicy.decode("") == CheckpointPolicy()  # an owner hash from before the field
    assert resolve_options(None, {"persistent_checkpoint_every": 50})["checkpoint_every"] == 50
    for bad in ({"checkpoint_every": -1}, {"checkpoint_every": True}, {"checkpoint_every": 1.5},
                {"checkpoint_interval": -1}, {"checkpoint_interval": float("inf")},
                {"checkpoint_every": 0}):  # never a checkpoint: refused
        with pytest.raises(InvalidOptions):
            resolve_options(bad, {})
    every3 = CheckpointPolicy(3, 0.0)
    assert [every3.due(n, 0.0) for n in (1, 2, 3)] == [False, False, True]
    timed = CheckpointPolicy(0, 5.0)
    assert (timed.due(100, 4.9), timed.due(1, 5.0)) == (False, True)
    assert CheckpointPolicy(1, 0.0).due(1, 0.0)


def test_check_state_walks_without_encoding_and_names_a_bad_value() -> None:
    state = {"device": "d", "items": ["x" * 100] * 10, "n": 1.5, "flag": True, "none": None, "raw": b"ab"}
    size = check_state(state, 1 << 20)
    assert 1000 < size < 1200
    with pytest.raises(InvalidMessage, match=r"msg3\.items\[1\]"):
        check_state({"items": [1, {1, 2}]}, 1 << 20)
    with pytest.raises(InvalidMessage, match="finite"):
        check_state({"n": float("nan")}, 1 << 20)
    with pytest.raises(InvalidMessage, match="keys must be str"):
        check_state({"m": {1: 2}}, 1 << 20)
    with pytest.raises(InvalidMessage, match="over persistent_max_message_bytes"):
        check_state(state, 500)
    with pytest.raises(InvalidMessage):
        check_state(["not", "a", "mapping"], 1 << 20)


# -- bounded storage -----------------------------------------------------------------------------------


def test_a_rolling_group_keeps_one_checkpoint_and_nothing_content_addressed(env: PersistentEnv) -> None:
    host, _ = make_host(env)
    stored_before = set(env.client.scan_iter(match=f"{env.prefix}:store:*"))
    h = start(env, host, ledger())
    first = h.ref
    assert checkpoint_of(first) is not None  # by value: the group's own first checkpoint
    assert checkpoints(env, h.group) == [stored_key(env.keys, first)]
    for n in range(1, 11):
        assert add(env, host, h, 1, ledger()) == {"count": n}
        assert checkpoints(env, h.group) == [stored_key(env.keys, h.ref)]
    assert h.ref != first and env.store.get({REF_KEY: h.ref}, cache=False)["count"] == 10
    assert set(group_keys(env, h.group)) == {env.keys.owner(h.group), stored_key(env.keys, h.ref)}
    assert set(env.client.scan_iter(match=f"{env.prefix}:store:*")) == stored_before
    assert env.deliveries() == []
    # Counted in Redis: the group's keys hold about one copy of its state.
    used = sum(int(env.client.memory_usage(k) or 0) for k in group_keys(env, h.group))
    assert used <= 2 * h.size, (used, h.size)


def test_a_delivery_keeps_the_checkpoint_it_answers_from_until_it_is_settled(
        env: PersistentEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    host, _ = make_host(env)
    msg1 = {"device": "counter", "id": "p", "count": 0}
    h = start(env, host, msg1)
    r = env.submit(msg1, {"path": "add", "by": 2})
    die_at(monkeypatch, "after-finish-hosted")
    with pytest.raises(Died):
        run(env, host, h.group, FakeTask(r.id))
    monkeypatch.undo()
    pinned = env.registry.owner(h.group)["ref"]
    assert env.delivery(delivery_member(h.group, r.id))["ref"] == pinned
    # The host goes on (it reloads the recorded state): the next checkpoint replaces the pinned one.
    h.msg1, h.ref = None, pinned
    assert add(env, host, h, 5, msg1)["count"] == 7
    assert checkpoints(env, h.group) == sorted([stored_key(env.keys, pinned), stored_key(env.keys, h.ref)])
    assert env.client.hgetall(stored_key(env.keys, pinned)).keys() == {b"state", b"delivery"}
    # The reaper answers from it, then it goes.
    env.client.zadd(env.keys.deliveries(), {delivery_member(h.group, r.id): 1}, xx=True)
    assert env.reap() == 1
    assert env.result(r.id).get(timeout=5)["count"] == 2
    assert checkpoints(env, h.group) == [stored_key(env.keys, h.ref)]


def test_stop_ends_the_group_and_deletes_its_state(env: PersistentEnv) -> None:
    host, _ = make_host(env)
    msg1 = {"device": "counter", "id": "e", "count": 0}
    h = start(env, host, msg1, checkpoint_every=5)
    add(env, host, h, 1, msg1)
    add(env, host, h, 2, msg1)
    assert len(journal(env, h.group)) == 2
    assert env.persistent.stop_worker(h.group) is True
    host.tick()
    assert not host.table.knows(h.group)
    assert calls[-1] == ("idle", {**msg1, "count": 3})  # on_idle saw the journaled state
    assert group_keys(env, h.group) == {}


# -- the journal --------------------------------------------------------------------------------------


def test_every_n_journals_requests_then_checkpoints(env: PersistentEnv) -> None:
    host, _ = make_host(env)
    h = start(env, host, ledger(), checkpoint_every=3)
    first = h.ref
    assert [add(env, host, h, 1, ledger())["count"] for _ in range(2)] == [1, 2]
    assert h.ref == first and len(journal(env, h.group)) == 2 and h.journaled == 2
    assert env.registry.owner(h.group)["ref"] == first
    assert add(env, host, h, 1, ledger())["count"] == 3  # the third: a checkpoint
    assert h.ref != first and journal(env, h.group) == [] and h.journaled == 0
    assert env.store.get({REF_KEY: h.ref}, cache=False)["count"] == 3
    assert checkpoints(env, h.group) == [stored_key(env.keys, h.ref)]


def test_a_journaled_requests_delivery_holds_its_small_reply(
        env: PersistentEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    host, _ = make_host(env)
    h = start(env, host, ledger(), checkpoint_every=10)
    r = env.submit(ledger(), {"path": "add", "by": 4})
    task = FakeTask(r.id)
    assert run(env, host, h.group, task) == {"count": 4}
    kept = env.delivery(task.request.persistent_delivery)
    assert kept["ref"] == "" and env.wiring.answer.decode_outcome(kept["outcome"]) == {"count": 4}


def test_a_new_owner_replays_the_journal_on_the_checkpoint(env: PersistentEnv) -> None:
    a, _ = make_host(env, "a")
    msg1 = {"device": "counter", "id": "j", "count": 0}
    h = start(env, a, msg1, checkpoint_every=100)
    for by in (1, 10, 100):
        add(env, a, h, by, msg1)
    assert len(journal(env, h.group)) == 3
    # a dies: its lease lapses, b takes the group from the checkpoint and the journal.
    b, _ = make_host(env, "b")
    b.tick()
    a.table.forget(h)
    env.client.zrem(env.keys.workers(), a.hostname)
    coalescing.expire_lease(env, h.group)
    assert env.reap() == 1
    b.tick()
    hb = b.table.lookup(h.group)
    assert hb is not None and hb.journaled == 3 and hb.policy == CheckpointPolicy(100, 0.0)
    calls.clear()
    assert add(env, b, hb, 1000, msg1)["count"] == 1111
    assert calls == [("add", 1), ("add", 10), ("add", 100), ("add", 1000)]  # replayed once, then the new one
    assert len(journal(env, h.group)) == 4


def test_the_beat_checkpoints_a_journal_older_than_the_interval(env: PersistentEnv) -> None:
    host, consumer = make_host(env, hub=True)
    msg1 = {"device": "counter", "id": "t", "count": 0}
    host.tick()
    group = env.persistent.start_worker(msg1, {"checkpoint_every": 0, "checkpoint_interval": 60}).group
    host.tick()
    assert consumer.hub is not None
    consumer.hub.run()
    h = host.table.lookup(group)
    assert h is not None
    add(env, host, h, 3, msg1)
    first = h.ref
    host.tick()
    assert len(journal(env, group)) == 1 and not consumer.hub.pending  # not due yet
    h.journaled_at -= 61
    host.tick()
    assert consumer.hub.run() == 1  # the checkpoint runs on the event loop, between requests
    assert journal(env, group) == [] and h.ref != first
    assert env.store.get({REF_KEY: h.ref}, cache=False)["count"] == 3


def test_a_device_that_is_not_deterministic_is_never_journaled(env: PersistentEnv) -> None:
    host, _ = make_host(env)
    msg1 = {"device": "dice", "id": "d", "count": 0}
    h = start(env, host, msg1, checkpoint_every=10)
    refs = set()
    for _ in range(3):
        add(env, host, h, 1, msg1)
        refs.add(h.ref)
    assert len(refs) == 3 and journal(env, h.group) == []


# -- parked groups -------------------------------------------------------------------------------


def test_shutdown_parks_a_rolling_group_and_the_next_worker_continues_it(env: PersistentEnv) -> None:
    a, consumer = make_host(env, "a")
    msg1 = {"device": "counter", "id": "k", "count": 0}
    h = start(env, a, msg1, checkpoint_every=10)
    add(env, a, h, 3, msg1)
    a.shutdown()
    owner = env.registry.owner(h.group)
    assert (owner["mode"], owner["state"], owner["host"]) == ("hosted", "parked", "")
    assert journal(env, h.group) == []  # checkpointed as it went
    assert env.store.get({REF_KEY: owner["ref"]}, cache=False)["count"] == 3
    assert consumer.cancelled == [h.queue] and env.client.exists(f"_kombu.binding.{h.queue}")
    assert [row["group"] for row in GroupView(env.registry).parked()] == [h.group]
    assert env.persistent.groups() == []
    # Sent while no persistent worker runs: accepted, in the group's queue.
    waiting = env.submit(msg1, {"path": "add", "by": 1})
    assert [m.id for m in env.messages(h.queue)][-1] == waiting.id
    assert not env.result(waiting.id).ready()

    b, _ = make_host(env, "b")
    b.tick()  # the next persistent worker takes it up on its first beat
    hb = b.table.lookup(h.group)
    assert hb is not None and GroupView(env.registry).parked() == []
    assert env.result(waiting.id).get(timeout=5)["count"] == 4  # the state went on
    assert env.registry.owner(h.group)["host"] == b.hostname


def test_stop_worker_on_a_parked_group_ends_it_once_a_worker_takes_it_up(env: PersistentEnv) -> None:
    a, _ = make_host(env, "a")
    msg1 = {"device": "counter", "id": "s", "count": 0}
    h = start(env, a, msg1)
    add(env, a, h, 2, msg1)
    a.shutdown()
    waiting = env.submit(msg1, {"path": "add", "by": 5})  # accepted while parked
    assert env.persistent.stop_worker(h.group) is True
    owner = env.registry.owner(h.group)
    assert (owner["state"], owner["stopping"]) == ("parked", "1")  # kept: the state and the request wait
    assert not env.result(waiting.id).ready()
    calls.clear()

    b, _ = make_host(env, "b")
    b.tick()  # takes it up, with the stop behind the placement in its inbox
    assert env.result(waiting.id).get(timeout=5)["count"] == 7  # what it accepted runs first
    hb = b.table.lookup(h.group)
    assert hb is not None and hb.stopping
    assert wait_for_end(env, b, h.group)  # then it ends, and on_idle sees the final state
    assert ("idle", {**msg1, "count": 7}) in calls
    assert env.registry.owner(h.group) == {} and GroupView(env.registry).parked() == []


def test_a_parked_group_marked_to_stop_carries_the_mark_to_its_next_host(env: PersistentEnv) -> None:
    """The mark travels with the adoption (adopt.lua), not as a later inbox message: a process that placed the
    group and died before saying anything else still has it ended."""
    a, _ = make_host(env, "a")
    msg1 = {"device": "counter", "id": "m", "count": 0}
    h = start(env, a, msg1)
    add(env, a, h, 1, msg1)
    a.shutdown()
    assert env.persistent.stop_worker(h.group) is True
    b, _ = make_host(env, "b")
    owner = env.registry.owner(h.group)
    where = Placement.from_owner(h.group, b.hostname, owner)
    assert env.registry.place(where, expect=owner["token"]).status is PlaceStatus.PLACED  # and nothing else
    calls.clear()

    b.tick()
    hb = b.table.lookup(h.group)
    assert hb is not None and hb.stopping
    assert wait_for_end(env, b, h.group)
    assert ("idle", {**msg1, "count": 1}) in calls


def wait_for_end(env: PersistentEnv, host: Host, group: str) -> bool:
    """Beat ``host`` until ``group`` is no longer registered (each beat queues the release on the loop)."""
    for _ in range(20):
        if not env.registry.owner(group):
            return True
        host.tick()
    return not env.registry.owner(group)


def test_stop_worker_on_a_group_that_is_not_hosted_or_parked_is_false(env: PersistentEnv) -> None:
    assert env.persistent.stop_worker("no-such-group") is False
    env.submit({"device": "counter", "id": "o", "count": 0}, {"path": "add", "by": 1})
    assert env.registry.owner("ctr-o")["mode"] != "hosted"
    assert env.persistent.stop_worker("ctr-o") is False  # an ordinary group has no worker to stop


def test_the_reaper_parks_a_rolling_group_whose_only_worker_died(env: PersistentEnv) -> None:
    a, _ = make_host(env, "a")
    msg1 = {"device": "counter", "id": "r", "count": 0}
    h = start(env, a, msg1)
    add(env, a, h, 2, msg1)
    env.client.zrem(env.keys.workers(), a.hostname)
    coalescing.expire_lease(env, h.group)
    assert env.reap() == 1
    owner = env.registry.owner(h.group)
    assert owner["state"] == "parked" and owner["ref"] == h.ref
    assert env.client.zscore(env.keys.leases(), h.group) is None  # nobody renews it: no lease to expire


def test_a_request_waiting_on_a_parked_group_too_long_gets_group_parked(env: PersistentEnv) -> None:
    a, _ = make_host(env, "a")
    msg1 = {"device": "counter", "id": "w", "count": 0}
    h = start(env, a, msg1)
    a.shutdown()
    late = env.submit(msg1, {"path": "add", "by": 1})
    twin = env.submit(msg1, {"path": "add", "by": 1})
    env.app.conf.persistent_parked_timeout = 0.2
    assert env.wiring.placer.expire_parked(now=time.time()) == 0  # not waited long enough yet
    assert env.wiring.placer.expire_parked(now=time.time() + 1) == 1
    for r in (late, twin):
        with pytest.raises(GroupParked):
            env.result(r.id).get(timeout=5)
    assert env.registry.unfinished(h.group) == 0
    # The group itself stays parked, with its state, for the next worker.
    assert env.registry.owner(h.group)["state"] == "parked"


# -- one encoding per checkpoint ------------------------------------------------------------------------


def test_a_checkpoint_of_a_named_group_is_walked_and_encoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import celery_persistent.checkpoints as checkpoints

    canonical: list[str] = []
    real = checkpoints.validate
    monkeypatch.setattr(checkpoints, "validate", lambda *a, **k: canonical.append("validate") or real(*a, **k))
    state = {"device": "counter", "id": "x", "count": 3, "items": ["a" * 100] * 50}
    fast = encode_state(state, 1 << 20, "ctr-x", "t1", exact=False)
    assert canonical == []  # no canonical encoding: the group is named by its grouper, not a digest
    assert json.loads(fast.data) == state and fast.size == len(fast.data)
    assert checkpoint_of(fast.storage_id) == ("ctr-x", writer_key("t1"))
    exact = encode_state(state, 1 << 20, "ctr-x", "t1")
    assert canonical == ["validate"]
    from celery_persistent.messages import message_digest
    assert exact.storage_id.startswith(message_digest(state))  # a group named by digest gets the real one
    with pytest.raises(InvalidMessage, match="over persistent_max_message_bytes"):
        encode_state(state, 1000, "ctr-x", "t1", exact=False)  # the walk's estimate is over already
    quoted = {"q": "\x01" * 1000}  # 1,000 characters the walk counts once, JSON writes as \u0001 each
    with pytest.raises(InvalidMessage, match="bytes of JSON"):
        encode_state(quoted, 4000, "ctr-x", "t1", exact=False)
    with pytest.raises(InvalidMessage, match=r"msg3\.bad"):
        encode_state({"bad": {1, 2}}, 1 << 20, "ctr-x", "t1", exact=False)


def test_a_state_orjson_cannot_encode_goes_through_kombu_and_loads_back(env: PersistentEnv) -> None:
    state = {"device": "counter", "id": "b", "count": 1, "raw": b"\x00\x01", "big": 2**70}
    encoded = encode_state(state, 1 << 20, "ctr-b", "t1", exact=False)
    env.client.hset(stored_key(env.keys, encoded.storage_id), mapping={"state": encoded.data, "current": "1"})
    assert env.store.get({REF_KEY: encoded.storage_id}, cache=False) == state


def test_large_states_are_sent_without_copying_them_into_one_command_buffer(env: PersistentEnv) -> None:
    """The steps that carry a state use a client with redis-py's own packer (see registry.bulk_client)."""
    from redis.connection import PythonRespSerializer

    bulk = env.registry._bulk
    assert isinstance(bulk.connection_pool.connection_kwargs["command_packer"], PythonRespSerializer)
    assert bulk.ping()
    host, _ = make_host(env)
    h = start(env, host, ledger())
    assert add(env, host, h, 1, ledger()) == {"count": 1}  # finish_hosted with a checkpoint, through it
    assert env.store.get({REF_KEY: h.ref}, cache=False)["count"] == 1


def test_a_beat_whose_unpark_fails_still_renews_and_adopts(env: PersistentEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    host, _ = make_host(env)
    host.tick()
    group = env.persistent.start_worker({"device": "counter", "id": "u", "count": 0}).group

    def broken(*_: Any, **__: Any) -> int:
        raise RuntimeError("the parked index could not be read")

    monkeypatch.setattr(env.wiring.placer, "unpark", broken)
    host.tick()
    assert host.table.lookup(group) is not None  # adopted on the same beat
