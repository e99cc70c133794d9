"""The message model: canonical encoding, digests, ``priv`` and validation."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from celery_persistent.errors import InvalidMessage, PersistentError
from celery_persistent.messages import (
    PRIVATE_KEY,
    digest,
    encode,
    message_digest,
    strip_private,
    validate,
)

# No per-example deadline: these tests share the machine with worker subprocesses.
relaxed = settings(deadline=None)

# --- strategies -------------------------------------------------------------

# Values that Python equality merges (0 == 0.0 == False == -0.0, 1 == 1.0 == True)
# or that look alike on the wire; mixing them in makes near-miss pairs common.
TRICKY = [0, 1, 0.0, -0.0, 1.0, True, False, "", "0", "1", b"", b"0", b"1", None, [], {}]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.binary(max_size=12),
    st.sampled_from(TRICKY),
)
keys = st.one_of(st.text(max_size=6), st.sampled_from(["a", "b", "ab", "1", PRIVATE_KEY]))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=16,
)
messages = st.dictionaries(keys, values, max_size=5)


def same(a: Any, b: Any) -> bool:
    """Type-and-value equality: unlike ``==``, 1, 1.0, True, "1" and b"1" all differ.

    Floats compare by their exact bits (``hex``), so 0.0 and -0.0 differ too.
    """
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a.hex() == b.hex()
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def reordered(value: Any) -> Any:
    """A deep copy whose mappings have their items in reverse insertion order."""
    if isinstance(value, dict):
        return {k: reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reordered(v) for v in value]
    return value


def test_same_helper_is_type_aware() -> None:
    assert not same(1, 1.0)
    assert not same(1, True)
    assert not same(0.0, -0.0)
    assert not same({"a": [1]}, {"a": [True]})
    assert same({"a": [1, {"b": b"x"}]}, {"a": [1, {"b": b"x"}]})


# --- (a) equal messages, equal encodings -------------------------------------


@relaxed
@given(messages)
def test_equal_messages_encode_equally_whatever_the_key_order(msg: dict[str, Any]) -> None:
    other = reordered(msg)
    assert same(msg, other)
    assert encode(other) == encode(msg)
    assert message_digest(other) == message_digest(msg)


def test_key_order_does_not_matter_explicit() -> None:
    first = {"a": 1, "b": {"x": [1, 2], "y": None}, "c": b"z"}
    second = {"c": b"z", "b": {"y": None, "x": [1, 2]}, "a": 1}
    assert list(first) != list(second)
    assert encode(first) == encode(second)
    assert message_digest(first) == message_digest(second)


@relaxed
@given(messages)
def test_encoding_is_deterministic(msg: dict[str, Any]) -> None:
    assert encode(msg) == encode(msg)
    assert message_digest(msg) == message_digest(msg)


# --- (b) different messages, different encodings ------------------------------


@relaxed
@given(messages, messages)
def test_different_messages_encode_differently(m1: dict[str, Any], m2: dict[str, Any]) -> None:
    assume(not same(strip_private(m1), strip_private(m2)))
    assert encode(m1) != encode(m2)
    assert message_digest(m1) != message_digest(m2)


@relaxed
@given(values, values)
def test_different_values_encode_differently(v1: Any, v2: Any) -> None:
    assume(not same(v1, v2))
    assert encode(v1) != encode(v2)


@relaxed
@given(messages, st.text(max_size=6), values, values)
def test_changing_one_value_changes_the_digest(
    msg: dict[str, Any], key: str, v1: Any, v2: Any
) -> None:
    assume(key != PRIVATE_KEY and not same(v1, v2))
    assert message_digest({**msg, key: v1}) != message_digest({**msg, key: v2})


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ({"a": "bc"}, {"ab": "c"}),
        ({"a": ["b", "c"]}, {"a": ["bc"]}),
        ({"a": [[], []]}, {"a": [[[]]]}),
        ({"a": {"b": 1}, "c": 2}, {"a": {"b": 1, "c": 2}}),
        ({"a": b"1"}, {"a": "1"}),
        ({"a": 0.0}, {"a": 0}),
        ({"a": None}, {}),
        ({"a": []}, {"a": {}}),
        ({"a": 10}, {"a": 1, "0": None}),
    ],
)
def test_boundary_lookalikes_encode_differently(left: dict[str, Any], right: dict[str, Any]) -> None:
    assert encode(left) != encode(right)
    assert message_digest(left) != message_digest(right)


def test_digest_parts_are_length_prefixed() -> None:
    assert digest(b"ab", b"c") != digest(b"a", b"bc")
    assert digest(b"abc") != digest(b"ab", b"c")
    assert len(digest(b"x")) == 32  # 128 bits of hex


# --- (c) 1, 1.0, "1", True and b"1" are all different -------------------------


def test_lookalike_scalars_have_distinct_digests() -> None:
    lookalikes: list[Any] = [1, 1.0, "1", True, b"1"]
    encodings = {encode(v) for v in lookalikes}
    assert len(encodings) == len(lookalikes)
    digests = {message_digest({"v": v}) for v in lookalikes}
    assert len(digests) == len(lookalikes)


def test_zero_lookalikes_and_none_are_distinct() -> None:
    lookalikes: list[Any] = [0, 0.0, False, "", "0", b"", b"0", None, [], {}]
    assert len({message_digest({"v": v}) for v in lookalikes}) == len(lookalikes)


def test_none_message_has_its_own_digest() -> None:
    assert message_digest(None) != message_digest({})
    assert message_digest(None) == message_digest(None)


# --- (d) the private key -------------------------------------------------------


@relaxed
@given(messages, values)
def test_priv_does_not_change_the_digest(msg: dict[str, Any], private: Any) -> None:
    public = strip_private(msg)
    assert PRIVATE_KEY not in public
    assert message_digest({**msg, PRIVATE_KEY: private}) == message_digest(public)


def test_priv_is_private_only_at_the_top_level() -> None:
    assert message_digest({"a": 1, "priv": {"trace": "x"}}) == message_digest({"a": 1})
    assert message_digest({"a": {"priv": 1}}) != message_digest({"a": {}})


def test_validate_returns_the_encoding_without_priv() -> None:
    msg = {"a": [1, 2.5], "priv": {"note": b"anything"}}
    assert validate(msg, "msg1", 10_000) == encode({"a": [1, 2.5]})
    assert strip_private(msg) == {"a": [1, 2.5]}
    assert "priv" in msg  # strip_private copies, it does not mutate


# --- (e) validation errors -----------------------------------------------------


def invalid(msg: Any, max_bytes: int = 10_000, name: str = "msg1") -> InvalidMessage:
    with pytest.raises(InvalidMessage) as info:
        validate(msg, name, max_bytes)
    return info.value


@pytest.mark.parametrize("msg", [None, [("a", 1)], "a=1", 42, b"{}"])
def test_non_mapping_is_rejected(msg: Any) -> None:
    err = invalid(msg, name="msg2")
    assert err.path == "msg2"
    assert "mapping" in str(err)
    assert type(msg).__name__ in str(err)


def test_top_level_non_str_key_is_rejected() -> None:
    err = invalid({1: "a"})
    assert err.path == "msg1"
    assert "key 1" in str(err) and "str" in str(err)


@pytest.mark.parametrize(
    ("msg", "path"),
    [
        ({"a": {"b": {2: "x"}}}, "msg1.a.b"),
        ({"a": [0, {b"k": 1}]}, "msg1.a[1]"),
        ({"a": {(1, 2): 1}}, "msg1.a"),
        ({"priv": {None: 1}}, "msg1.priv"),
    ],
)
def test_nested_non_str_key_is_rejected(msg: dict[str, Any], path: str) -> None:
    err = invalid(msg)
    assert err.path == path
    assert "message keys must be str" in str(err)
    assert str(err).startswith(path + ":")


@pytest.mark.parametrize(
    ("msg", "path", "words"),
    [
        ({"a": object()}, "msg1.a", "object"),
        ({"a": [0, 1, object()]}, "msg1.a[2]", "object"),
        ({"s": {1, 2}}, "msg1.s", "set"),
        ({"x": {"y": frozenset()}}, "msg1.x.y", "frozenset"),
        ({"f": float("nan")}, "msg1.f", "finite"),
        ({"f": [float("inf")]}, "msg1.f[0]", "finite"),
        ({"f": {"g": -math.inf}}, "msg1.f.g", "finite"),
        ({"t": "\ud800"}, "msg1.t", "UTF-8"),
        ({"priv": object()}, "msg1.priv", "object"),
    ],
)
def test_unserialisable_values_are_rejected(msg: dict[str, Any], path: str, words: str) -> None:
    err = invalid(msg)
    assert err.path == path
    assert words in str(err)


def test_oversize_message_is_rejected() -> None:
    msg = {"blob": b"x" * 100}
    size = len(encode(msg))
    assert validate(msg, "msg1", size) == encode(msg)  # exactly at the limit is fine
    err = invalid(msg, max_bytes=size - 1)
    assert err.path == "msg1"
    assert f"{size} bytes" in str(err)
    assert f"persistent_max_message_bytes={size - 1}" in str(err)


def test_priv_counts_towards_the_size_limit() -> None:
    public = {"a": 1}
    limit = len(encode(public)) + 10
    validate(public, "msg1", limit)
    err = invalid({**public, "priv": "x" * 100}, max_bytes=limit)
    assert err.path == "msg1"


def test_invalid_message_is_typed_and_survives_celery_style_rebuild() -> None:
    err = invalid({"a": {"b": object()}})
    assert isinstance(err, PersistentError) and isinstance(err, ValueError)
    rebuilt = type(err)(*err.args)  # what Celery's result backend does
    assert rebuilt.path == err.path == "msg1.a.b"
    assert str(rebuilt) == str(err)


@relaxed
@given(messages)
def test_generated_messages_validate(msg: dict[str, Any]) -> None:
    assert validate(msg, "msg1", 10**9) == encode(strip_private(msg), "msg1")
