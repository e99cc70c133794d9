"""Group names: the default grouper and the normalisation of custom grouper output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from celery_persistent.grouping import SAFE_NAME, default_group, normalise
from celery_persistent.messages import message_digest, strip_private
from tests.support import ROOT
from tests.unit.test_messages import messages, same

# No per-example deadline: these tests share the machine with worker subprocesses.
relaxed = settings(deadline=None)

SAFE_FIRST = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
SAFE_REST = SAFE_FIRST + "_.-"

safe_names = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(SAFE_FIRST),
    st.text(alphabet=SAFE_REST, max_size=95),
)
# Any text, surrogates and control characters included, plus safe names with one
# awkward character appended, which probe the edge of the safe alphabet.
EDGE_SUFFIXES = ["\n", "\r\n", "\n\n", " ", "\t", "\x00", "/", ":", "*", "{", "é", "\ud800"]
any_text = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=()), max_size=120),
    st.text(max_size=120),
    st.builds(lambda safe, tail: safe + tail, safe_names, st.sampled_from(EDGE_SUFFIXES)),
)


def is_safe(name: str) -> bool:
    """Strict check: the whole string, with no trailing newline let through by ``$``."""
    return SAFE_NAME.fullmatch(name) is not None


# --- normalise ---------------------------------------------------------------


@relaxed
@given(safe_names)
def test_normalise_keeps_safe_names(name: str) -> None:
    assert is_safe(name)
    assert normalise(name) == name


@relaxed
@given(any_text)
def test_normalise_output_is_always_safe(text: str) -> None:
    out = normalise(text)
    assert is_safe(out), repr(out)
    assert len(out) <= 96


@relaxed
@given(any_text)
def test_normalise_is_idempotent(text: str) -> None:
    once = normalise(text)
    assert normalise(once) == once


@relaxed
@given(any_text, any_text)
def test_different_unsafe_names_never_collide(a: str, b: str) -> None:
    assume(a != b and not is_safe(a) and not is_safe(b))
    assert normalise(a) != normalise(b)


@pytest.mark.parametrize(
    "hostile",
    [
        "",
        "a b",
        "a  b",
        "a\tb",
        "../../etc/passwd",
        "{group}",
        "a:b*c?",
        "-leading-dash",
        "_underscore",
        "x" * 97,
        "é",
        "\x00",
        "abc\n",  # re's "$" matches before a trailing newline
        "abc\r\n",
        "\ud800",
        "celery.pidbox\nother",
    ],
)
def test_hostile_names_become_safe(hostile: str) -> None:
    out = normalise(hostile)
    assert is_safe(out), f"{hostile!r} -> {out!r}"
    assert "\n" not in out


def test_names_that_clean_up_alike_stay_apart() -> None:
    lookalikes = ["a b", "a  b", "a\tb", "a/b", "a:b", "a\nb", "a b "]
    outs = [normalise(n) for n in lookalikes]
    assert len(set(outs)) == len(outs)
    assert all(out.startswith("a_b-") for out in outs)


def test_long_safe_alphabet_names_are_shortened_apart() -> None:
    a, b = "x" * 96 + "a", "x" * 96 + "b"
    assert normalise("x" * 96) == "x" * 96
    assert normalise(a) != normalise(b)
    assert all(len(normalise(n)) <= 96 for n in (a, b))


@pytest.mark.parametrize("value", [123, ("a", 1), None, 1.5, b"raw"])
def test_non_str_grouper_output_is_normalised(value: Any) -> None:
    out = normalise(value)
    assert is_safe(out)
    assert normalise(out) == out


# --- default_group -------------------------------------------------------------

MSG1 = {"device": "counter", "id": "a", "count": 0, "blob": b"\x00\xff", "ratio": 0.5}


def group_of(msg1: dict[str, Any], msg2: dict[str, Any] | None) -> str:
    return default_group(message_digest(msg1), msg2)


def test_default_group_is_a_safe_128_bit_name() -> None:
    group = group_of(MSG1, {"path": "add", "by": 1})
    assert is_safe(group)
    assert group.startswith("g") and len(group) == 33
    int(group[1:], 16)


@relaxed
@given(messages, messages)
def test_default_group_differs_when_msg2_differs(m2a: dict[str, Any], m2b: dict[str, Any]) -> None:
    assume(not same(strip_private(m2a), strip_private(m2b)))
    assert group_of(MSG1, m2a) != group_of(MSG1, m2b)


@relaxed
@given(messages, messages)
def test_default_group_differs_when_msg1_differs(m1a: dict[str, Any], m1b: dict[str, Any]) -> None:
    assume(not same(strip_private(m1a), strip_private(m1b)))
    assert group_of(m1a, {"path": "p"}) != group_of(m1b, {"path": "p"})


def test_default_group_tells_lookalike_msg2_apart() -> None:
    variants: list[Any] = [1, 1.0, "1", True, b"1"]
    groups = {group_of(MSG1, {"path": "add", "by": v}) for v in variants}
    assert len(groups) == len(variants)


def test_default_group_none_msg2_differs_from_empty() -> None:
    assert group_of(MSG1, None) != group_of(MSG1, {})


def test_default_group_ignores_priv_and_key_order() -> None:
    base = group_of(MSG1, {"path": "add", "by": 1})
    assert group_of(MSG1, {"by": 1, "path": "add", "priv": {"trace": 7}}) == base
    assert group_of({**MSG1, "priv": "secret"}, {"path": "add", "by": 1}) == base


def test_default_group_has_no_msg1_msg2_boundary_ambiguity() -> None:
    # The same content split differently between msg1 and msg2 must not collide.
    assert default_group(message_digest({"a": 1}), {"b": 2}) != default_group(message_digest({"a": 1, "b": 2}), None)
    assert default_group(message_digest({"a": 1}), None) != default_group(message_digest({"a": 1}), {})


SCRIPT = """
import json, sys
from celery_persistent.grouping import default_group, normalise
from celery_persistent.messages import message_digest
msg1, msg2 = json.loads(sys.argv[1])
msg1["blob"] = bytes(msg1["blob"])
print(json.dumps([default_group(message_digest(msg1), msg2), normalise("a b/c")]))
"""


@pytest.mark.parametrize("seed", ["0", "1", "4242", "random"])
def test_default_group_is_stable_across_processes(seed: str) -> None:
    msg2 = {"path": "add", "by": 1, "nested": {"z": [1, 2.5, None, True], "a": "x"}}
    expected = [group_of(MSG1, msg2), normalise("a b/c")]
    payload = json.dumps([{**MSG1, "blob": list(MSG1["blob"])}, msg2])
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, payload],
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": seed},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == expected
