"""MessageStore and Refs (``celery_persistent/store.py``), against the real Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from celery_persistent import InvalidMessage, LeaderDied, StateLost
from celery_persistent.store import REF_KEY, MessageStore, Ref, as_ref, is_ref

DAY_MS = 24 * 3600 * 1000


@pytest.fixture
def stored(persistent, rdb) -> Iterator[list[str]]:
    """Digests a test stored; their keys are deleted afterwards."""
    digests: list[str] = []
    yield digests
    if digests:
        rdb.delete(*(persistent.keys.store(d) for d in digests))


def put(persistent, stored: list[str], msg: Any) -> Ref:
    ref = persistent.ref(msg)
    stored.append(ref.storage_id)
    return ref


def fresh_store(persistent, cache_bytes: int = 64 << 20) -> MessageStore:
    """Another process's view of the same store: same Redis and keys, empty cache."""
    return MessageStore(
        persistent.redis,
        persistent.keys,
        persistent.settings.max_message_bytes,
        persistent.settings.store_ttl,
        cache_bytes=cache_bytes,
    )


def test_ref_is_a_small_json_dict(persistent, stored, uid) -> None:
    msg = {"device": "counter", "uid": uid, "blob": "x" * 10_000}
    ref = put(persistent, stored, msg)

    assert isinstance(ref, dict) and is_ref(ref)
    assert len(ref.digest) == 32 and int(ref.digest, 16) >= 0
    assert ref.size > 10_000
    assert ref["device"] == "counter"
    wire = json.loads(json.dumps(ref))
    assert wire == {REF_KEY: ref.digest, "device": "counter", "bytes": ref.size}
    assert len(json.dumps(ref)) < 200  # the message itself is not serialised
    # The message itself, kept as a copy that carries its digest (no re-hash when a grouper reads it).
    assert ref.value == msg and ref.value.known() == (ref.digest, ref.size)


def test_equal_messages_share_a_digest(persistent, stored, uid) -> None:
    one = put(persistent, stored, {"device": "d", "uid": uid, "a": 1, "b": [1, 2]})
    two = put(persistent, stored, {"b": [1, 2], "a": 1, "uid": uid, "device": "d"})
    other = put(persistent, stored, {"device": "d", "uid": uid, "a": 1.0, "b": [1, 2]})

    assert one.digest == two.digest
    assert other.digest != one.digest  # 1 and 1.0 are different messages
    assert persistent.ref(one) == one  # a Ref is accepted where a message is


def test_put_is_idempotent_and_renews_the_ttl(persistent, rdb, stored, uid) -> None:
    first = {"device": "d", "uid": uid, "n": 1}
    ref = put(persistent, stored, first)
    key = persistent.keys.store(ref.digest)
    raw = rdb.get(key)
    ttl_ms = persistent.settings.store_ttl * 1000
    assert raw is not None
    assert ttl_ms - 60_000 < rdb.pttl(key) <= ttl_ms

    rdb.pexpire(key, 5_000)
    again = put(persistent, stored, {"n": 1, "uid": uid, "device": "d"})

    assert again.digest == ref.digest
    assert rdb.get(key) == raw  # SET NX: the first copy is kept
    assert rdb.pttl(key) > DAY_MS  # but its TTL is renewed


def test_a_large_message_already_stored_is_not_sent_again(persistent, rdb, stored, uid, monkeypatch) -> None:
    """Above SEND_ALWAYS_BYTES a stored copy is only renewed (PEXPIRE first); a small one goes with its
    renewal in one round trip."""
    from celery_persistent import store as store_module

    big = {"device": "d", "uid": uid, "blob": "x" * (store_module.SEND_ALWAYS_BYTES + 1)}
    ref = put(persistent, stored, big)
    key = persistent.keys.store(ref.digest)
    rdb.pexpire(key, 5_000)
    sent: list[tuple[object, ...]] = []
    client = persistent.store._client
    real = client.execute_command
    monkeypatch.setattr(client, "execute_command", lambda *a, **k: sent.append(a) or real(*a, **k))

    fresh_store(persistent).put(dict(big))

    assert [a[0] for a in sent] == ["PEXPIRE"]
    assert rdb.pttl(key) > DAY_MS


def test_get_of_a_wire_ref_loads_from_redis(persistent, rdb, stored, uid) -> None:
    msg = {"device": "d", "uid": uid, "raw": b"\x00\xff\x10", "text": b"abc", "nested": {"l": [b"\x01", None, True]}}
    ref = put(persistent, stored, msg)
    wire = json.loads(json.dumps(ref))
    assert not isinstance(wire, Ref)

    assert persistent.store.get(wire) == msg
    elsewhere = fresh_store(persistent)
    loaded = elsewhere.get(wire)
    assert loaded == msg
    assert isinstance(loaded["raw"], bytes)

    # Once loaded, a process serves it from its LRU, even if Redis lost it.
    rdb.delete(persistent.keys.store(ref.digest))
    assert elsewhere.get(wire) == msg
    with pytest.raises(StateLost):
        fresh_store(persistent).get(wire)


def test_get_without_cache_does_not_remember(persistent, rdb, stored, uid) -> None:
    msg = {"device": "d", "uid": uid}
    wire = dict(put(persistent, stored, msg))
    store = fresh_store(persistent)

    assert store.get(wire, cache=False) == msg
    rdb.delete(persistent.keys.store(wire[REF_KEY]))
    with pytest.raises(StateLost):
        store.get(wire)


def test_unknown_digest_is_state_lost(persistent) -> None:
    with pytest.raises(StateLost) as info:
        persistent.store.get({REF_KEY: "0" * 32, "device": "d", "bytes": 10})
    assert isinstance(info.value, LeaderDied)
    assert "0" * 32 in str(info.value)


@pytest.mark.parametrize(
    "bad",
    [
        {REF_KEY: "abc"},
        {REF_KEY: 12345678901234567890123456789012},
        {REF_KEY: None},
        {REF_KEY: "0" * 33},
        {"device": "d"},
    ],
)
def test_malformed_ref_is_invalid(persistent, bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidMessage) as info:
        persistent.store.get(bad)
    assert info.value.path == "ref"
    with pytest.raises(InvalidMessage):
        as_ref(bad)


def test_touch_renews_ttls(persistent, rdb, stored, uid) -> None:
    refs = [put(persistent, stored, {"device": "d", "uid": uid, "i": i}) for i in range(3)]
    keys = [persistent.keys.store(r.digest) for r in refs]
    for key in keys:
        rdb.pexpire(key, 5_000)

    persistent.store.touch([r.digest for r in refs[:2]])
    persistent.store.touch([])  # nothing to do, no error

    assert rdb.pttl(keys[0]) > DAY_MS
    assert rdb.pttl(keys[1]) > DAY_MS
    assert rdb.pttl(keys[2]) <= 5_000


def test_lru_skips_messages_over_a_quarter_of_its_bound(persistent, rdb, stored, uid) -> None:
    store = fresh_store(persistent, cache_bytes=4_000)
    small = store.put({"device": "d", "uid": uid, "blob": "s" * 200})
    large = store.put({"device": "d", "uid": uid, "blob": "L" * 1_500})
    stored.extend([small.digest, large.digest])
    assert small.size <= 1_000 < large.size

    rdb.delete(persistent.keys.store(small.digest), persistent.keys.store(large.digest))

    assert store.get(dict(small)) == small.value  # kept locally
    with pytest.raises(StateLost):
        store.get(dict(large))  # not kept: it must come from Redis, which lost it
    assert small.value is not None and large.value is not None


def test_lru_evicts_oldest_beyond_its_bound(persistent, rdb, stored, uid) -> None:
    store = fresh_store(persistent, cache_bytes=2_000)
    refs = [store.put({"device": "d", "uid": uid, "i": i, "blob": "x" * 400}) for i in range(6)]
    stored.extend(r.digest for r in refs)
    rdb.delete(*(persistent.keys.store(r.digest) for r in refs))

    assert store.get(dict(refs[-1])) == refs[-1].value
    with pytest.raises(StateLost):
        store.get(dict(refs[0]))


def test_messages_differing_only_in_priv_group_alike_but_are_stored_apart(persistent, stored, uid) -> None:
    a = put(persistent, stored, {"device": "d", "u": uid, "priv": {"who": "A"}})
    b = put(persistent, stored, {"device": "d", "u": uid, "priv": {"who": "B"}})
    plain = put(persistent, stored, {"device": "d", "u": uid})
    assert a.digest == b.digest == plain.digest, "priv takes no part in equality"
    assert len({a.storage_id, b.storage_id, plain.storage_id}) == 3
    other = fresh_store(persistent)
    assert other.get(json.loads(json.dumps(a)))["priv"] == {"who": "A"}
    assert other.get(json.loads(json.dumps(b)))["priv"] == {"who": "B"}
    assert "priv" not in other.get(json.loads(json.dumps(plain)))
