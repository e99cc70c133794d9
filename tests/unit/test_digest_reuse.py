"""Digests are computed once per message (``messages.fingerprint``, ``KnownMessage``), against the real Redis.

A message the process stored or loaded carries its digest, so that a
grouper calling ``default_grouper(msg1)`` on it hashes nothing large; a
changed message, or a copy, is hashed anew.  Every hash goes through
``messages.new_hasher``: the tests count the bytes it is given.
"""

from __future__ import annotations

import copy
import pickle
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from blake3 import blake3
from hypothesis import given, settings

from celery_persistent import Device, messages
from celery_persistent.messages import (
    BIG,
    KnownMessage,
    encode,
    encoded_digest,
    fingerprint,
    message_digest,
    strip_private,
)
from celery_persistent.store import REF_KEY, MessageStore, Ref, checkpoint_id, known
from tests.unit.conftest import FakeTask, PersistentEnv, trace
from tests.unit.test_hosting import adopt, make_host, run
from tests.unit.test_messages import messages as message_strategy
from tests.unit.test_messages import values

LARGE = 1 << 20  # about 1 MB of canonical encoding: a large Msg1 that hashes in a millisecond
SMALL = 16 * 1024  # nothing but the large Msg1 hashes this much in one request


def large(uid: str, device: str = "seed") -> dict[str, Any]:
    """A JSON-typical large Msg1: a list of 1 KB strings (as bench/scenarios/large_message.py)."""
    return {"device": device, "id": uid, "data": [f"{uid}{i:06d}".ljust(1000, "x") for i in range(LARGE // 1007)]}


class Counted:
    """A BLAKE3 hasher that records the size of every piece it is given."""

    def __init__(self, sizes: list[int]) -> None:
        self._hasher = blake3()
        self._sizes = sizes

    def update(self, data: bytes) -> Counted:
        self._sizes.append(len(data))
        self._hasher.update(data)
        return self

    def hexdigest(self, length: int) -> str:
        return self._hasher.hexdigest(length)


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the pieces hashed since the test started (clear it to start counting again)."""
    sizes: list[int] = []
    monkeypatch.setattr(messages, "new_hasher", lambda: Counted(sizes))
    return sizes


def other_process(persistent: Any) -> MessageStore:
    """Another process's view of the same store: same Redis and keys, empty cache."""
    settings = persistent.settings
    return MessageStore(persistent.redis, persistent.keys, settings.max_message_bytes, settings.store_ttl)


# -- the one-pass digest is the reference encoding's ---------------------------------------------


@settings(deadline=None)
@given(message_strategy, values)
def test_fingerprint_is_the_digest_of_the_reference_encoding(msg: dict[str, Any], private: Any) -> None:
    public = strip_private(msg)
    encoded = encode(public)
    assert fingerprint({**msg, "priv": private}, "msg1", 1 << 30) == (encoded_digest(encoded), len(encoded))
    assert message_digest(msg) == encoded_digest(encoded)


@pytest.mark.parametrize("msg", [
    {"big": "é" * BIG, "raw": b"\x00" * (BIG + 1), "after": [1, 2.5, None, True]},  # hashed in place, not joined
    {"many": [f"{i}" for i in range(3 * messages.FLUSH_PARTS)], "nested": {"b": [{"c": ()}]}},  # several flushes
    {"sub": OrderedDict(b=1, a=2), "ba": bytearray(b"xy"), "mv": memoryview(b"z"), "t": (1, "2")},  # subclasses
    {"runs": ["é", "x" * 10, "中" * 3000, b"b", "a", ["in", "ner"], "", "z" * BIG, "end"]},  # strings joined in runs
])
def test_fingerprint_matches_the_reference_on_what_the_fast_walk_splits_or_hands_over(msg: dict[str, Any]) -> None:
    encoded = encode(msg)
    assert fingerprint(msg, "msg1", 1 << 30) == (encoded_digest(encoded), len(encoded))


def test_fingerprint_names_the_bad_value_and_checks_the_size() -> None:
    from celery_persistent.errors import InvalidMessage

    with pytest.raises(InvalidMessage) as bad:
        fingerprint({"a": ["ok", {"b": float("nan")}]}, "msg1", 1 << 20)
    assert bad.value.path == "msg1.a[1].b"
    with pytest.raises(InvalidMessage) as bad:
        fingerprint({"a": ["ok", "\ud800"]}, "msg1", 1 << 20)
    assert bad.value.path == "msg1.a[1]" and "UTF-8" in str(bad.value)
    with pytest.raises(InvalidMessage, match="over persistent_max_message_bytes=10"):
        fingerprint({"a": "x" * 10}, "msg1", 10)
    with pytest.raises(InvalidMessage, match="over persistent_max_message_bytes"):
        fingerprint({"a": 1, "priv": "x" * 100}, "msg1", 20)  # priv counts towards the limit


def test_a_large_message_is_hashed_once_in_large_pieces(hashed: list[int]) -> None:
    msg = large("once")
    found = fingerprint(msg, "msg1", 1 << 30)
    assert sum(hashed) == found.size == len(encode(msg))
    assert len(hashed) < found.size // (64 * 1024)  # pieces of ~128 KB, not one per value


# -- stored and loaded messages keep their digest ------------------------------------------------


def test_a_stored_message_is_not_hashed_again(persistent, rdb, uid, hashed: list[int]) -> None:
    msg = large(uid)
    ref = persistent.ref(msg)
    try:
        assert sum(hashed) >= ref.size  # stored: hashed once
        hashed.clear()
        value = persistent.store.get(ref)
        assert isinstance(value, KnownMessage) and value == msg
        assert persistent.default_grouper(value) == persistent.default_grouper(ref) == persistent.default_grouper(msg)
        hashed.clear()
        persistent.default_grouper(value)
        persistent.ref(value)  # stored again (its TTL renewed): not hashed either
        assert sum(hashed) < SMALL
    finally:
        rdb.delete(persistent.keys.store(ref.storage_id))


def test_a_loaded_message_is_not_hashed_again(persistent, rdb, uid, hashed: list[int]) -> None:
    msg = large(uid)
    ref = persistent.ref(msg)
    try:
        group = persistent.default_grouper(msg)
        hashed.clear()
        loaded = other_process(persistent).get(Ref(dict(ref)))
        assert loaded == msg and loaded is not msg
        assert message_digest(loaded) == ref.digest
        assert persistent.default_grouper(loaded) == group
        assert sum(hashed) < SMALL
    finally:
        rdb.delete(persistent.keys.store(ref.storage_id))


def test_a_changed_message_gets_its_own_digest(persistent, rdb, uid, hashed: list[int]) -> None:
    msg = large(uid)
    ref = persistent.ref(msg)
    try:
        loaded = other_process(persistent).get(Ref(dict(ref)))
        assert isinstance(loaded, KnownMessage)
        hashed.clear()

        grown = dict(loaded)  # a copy is a plain dict: hashed anew
        grown["extra"] = 1
        assert message_digest(grown) != ref.digest and sum(hashed) >= ref.size

        for copied in (copy.copy(loaded), copy.deepcopy(loaded), pickle.loads(pickle.dumps(loaded))):
            assert type(copied) is dict and copied == msg  # exactly a dict, carrying nothing
            hashed.clear()
            assert message_digest(copied) == ref.digest and sum(hashed) >= ref.size

        loaded["data"].append("one more")  # in place, below the top level: seen by its length
        hashed.clear()
        assert message_digest(loaded) == message_digest({**msg, "data": [*msg["data"], "one more"]}) != ref.digest
        assert sum(hashed) >= ref.size

        reloaded = other_process(persistent).get(Ref(dict(ref)))
        reloaded["id"] = "renamed"  # through the mapping itself
        assert message_digest(reloaded) == message_digest({**msg, "id": "renamed"})
        assert reloaded.known() is None  # dropped for good: hashed at every use, as a plain dict is
    finally:
        rdb.delete(persistent.keys.store(ref.storage_id))


def test_a_checkpoint_carries_no_digest() -> None:
    """A checkpoint's id need not start with its content's digest (a group named by its own grouper)."""
    content = encoded_digest(b"not this state")
    state = {"device": "d", "n": 1}
    assert known(state, checkpoint_id(content, "grp", "writer"), 10) is state
    assert isinstance(known(state, content, 10), KnownMessage)


# -- a request on the seed's test device ---------------------------------------------------------


class Seed(Device):
    """hb_persistent's test device: its grouper is ``default_grouper(Msg1)``, the group of Msg1 alone."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return PLUGIN[0].default_grouper(msg1)

    def peek(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return {"items": len(msg1["data"]), "n": msg2["n"]}


DEVICES = {"seed": Seed}
PLUGIN: list[Any] = []


@pytest.fixture
def env(persistent_env: PersistentEnv) -> Iterator[PersistentEnv]:
    PLUGIN[:] = [persistent_env.persistent]
    yield persistent_env
    PLUGIN.clear()


def test_a_hosted_request_with_a_large_stored_msg1_hashes_nothing_large(env: PersistentEnv,
                                                                        hashed: list[int]) -> None:
    """The 10 MB case of bench/scenarios/large_message.py, in process: client and worker of one request."""
    msg1 = large(env.uid)
    host, _ = make_host(env, cache_bytes=8 << 20)
    h = adopt(env, host, msg1, static=True)
    assert h.group == env.persistent.default_grouper(msg1)
    ref = env.persistent.ref(msg1)
    hashed.clear()

    sent = env.submit(ref, {"path": "peek", "n": 1})  # the client: plan (grouper), register, publish
    client = sum(hashed)
    hashed.clear()
    task = FakeTask(sent.id)
    answer = run(env, host, h.group, task)  # the worker: loads Msg1 (first request), plans, runs
    trace(env, task, answer)
    assert answer == {"items": len(msg1["data"]), "n": 1}
    assert isinstance(h.msg1, KnownMessage)
    assert (client, sum(hashed)) < (SMALL, SMALL)


def test_a_msg1_by_value_is_hashed_once_per_request(env: PersistentEnv, hashed: list[int]) -> None:
    msg1 = large(env.uid)
    plan = env.persistent.plan(msg1, {"path": "peek", "n": 1}, None)
    size = len(encode(msg1))
    assert size <= sum(hashed) < size + SMALL  # once by the planner; the grouper reads the digest it carries
    assert plan.msg1 is msg1 and plan.group == env.persistent.default_grouper(msg1)


def test_a_known_message_is_a_mapping_like_any_other() -> None:
    msg = KnownMessage({"a": [1], "b": "x"}, "0" * 32, 10)
    assert isinstance(msg, Mapping) and msg == {"a": [1], "b": "x"}
    assert encode(msg) == encode({"b": "x", "a": [1]})
    assert fingerprint(msg, "m", 100) == ("0" * 32, 10)  # what it carries, unchecked
    msg.setdefault("c", 1)
    assert fingerprint(msg, "m", 100).digest == message_digest({"a": [1], "b": "x", "c": 1})
    stored = Ref({REF_KEY: "0" * 32})
    assert stored.digest == "0" * 32
