"""The executing-groups stack (``celery_persistent/context.py``)."""

from __future__ import annotations

import threading

import pytest

from celery_persistent.context import current_stack, executing


def test_empty_by_default() -> None:
    assert current_stack() == ()


def test_nesting_and_reset() -> None:
    with executing(["root"], "g-1"):
        assert current_stack() == ("root", "g-1")
        with executing(current_stack(), "g-2"):
            assert current_stack() == ("root", "g-1", "g-2")
        assert current_stack() == ("root", "g-1")
    assert current_stack() == ()


def test_no_group_keeps_the_inherited_stack() -> None:
    with executing(("a", "b"), None):
        assert current_stack() == ("a", "b")
    with executing([], ""):
        assert current_stack() == ()
    assert current_stack() == ()


def test_reset_after_an_exception() -> None:
    with pytest.raises(RuntimeError), executing([], "g-1"), executing(["g-1"], "g-2"):
        assert current_stack() == ("g-1", "g-2")
        raise RuntimeError("boom")
    assert current_stack() == ()


def test_stack_is_a_tuple_copy() -> None:
    inherited = ["a"]
    with executing(inherited, "b"):
        inherited.append("mutated")
        assert current_stack() == ("a", "b")
        assert isinstance(current_stack(), tuple)


def test_threads_are_isolated() -> None:
    inside = threading.Barrier(3, timeout=10)
    checked = threading.Barrier(3, timeout=10)
    seen: dict[str, tuple[str, ...]] = {}
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            seen[f"{name}-before"] = current_stack()
            with executing([f"{name}-root"], f"{name}-group"):
                inside.wait()  # both threads are inside their own execution
                seen[name] = current_stack()
                checked.wait()
            seen[f"{name}-after"] = current_stack()
        except BaseException as exc:
            errors.append(exc)

    with executing([], "main-group"):
        threads = [threading.Thread(target=run, args=(n,)) for n in ("t1", "t2")]
        for t in threads:
            t.start()
        inside.wait()
        assert current_stack() == ("main-group",)
        checked.wait()
        for t in threads:
            t.join(timeout=10)
        assert current_stack() == ("main-group",)

    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    assert seen["t1"] == ("t1-root", "t1-group")
    assert seen["t2"] == ("t2-root", "t2-group")
    for name in ("t1", "t2"):
        assert seen[f"{name}-before"] == ()  # a new thread does not inherit the main thread's stack
        assert seen[f"{name}-after"] == ()
