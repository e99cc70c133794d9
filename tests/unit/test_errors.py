"""Typed errors (``celery_persistent/errors.py``) through Celery's result backend."""

from __future__ import annotations

from typing import Any

import pytest
from celery.result import AsyncResult

from celery_persistent import (
    ConfigurationError,
    InfiniteRecursionError,
    InvalidMessage,
    InvalidOptions,
    LeaderDied,
    PersistentError,
    StateLost,
    UnknownDevice,
    UnknownKey,
)

CASES: list[tuple[PersistentError, str, dict[str, str]]] = [
    (InvalidMessage("msg1.a: bad value", "msg1.a"), "msg1.a: bad value", {"path": "msg1.a"}),
    (InvalidOptions("unknown option 'x'", "x"), "unknown option 'x'", {"option": "x"}),
    (UnknownDevice("unknown device 'd'", "d"), "unknown device 'd'", {"device": "d"}),
    (UnknownKey("device 'd' has no key 'k'", "d", "k"), "device 'd' has no key 'k'", {"device": "d", "key": "k"}),
    (LeaderDied("leader died", "g-1", "task-1"), "leader died", {"group": "g-1", "leader_id": "task-1"}),
    (StateLost("message gone", "g-2", "task-2"), "message gone", {"group": "g-2", "leader_id": "task-2"}),
    (InfiniteRecursionError("recursion on g-3", "g-3"), "recursion on g-3", {"group": "g-3"}),
    (ConfigurationError("needs a Redis backend"), "needs a Redis backend", {}),
    (PersistentError("base error"), "base error", {}),
]
IDS = [type(exc).__name__ for exc, _, _ in CASES]


def check(exc: BaseException, original: PersistentError, message: str, fields: dict[str, str]) -> None:
    assert type(exc) is type(original)
    assert str(exc) == message
    assert exc.message == message  # type: ignore[attr-defined]
    for name, value in fields.items():
        assert getattr(exc, name) == value, name
    assert exc.args == original.args


@pytest.mark.parametrize(("original", "message", "fields"), CASES, ids=IDS)
def test_prepare_and_rebuild(persistent, original: PersistentError, message: str, fields: dict[str, str]) -> None:
    backend = persistent.app.backend
    prepared = backend.prepare_exception(original)
    wire = backend.decode(backend.encode(prepared))  # as stored in Redis

    check(backend.exception_to_python(wire), original, message, fields)


@pytest.mark.parametrize(("original", "message", "fields"), CASES, ids=IDS)
def test_stored_result_round_trip(
    persistent, uid: str, original: PersistentError, message: str, fields: dict[str, str]
) -> None:
    backend = persistent.app.backend
    task_id = f"errors-{uid}"
    backend.store_result(task_id, original, "FAILURE")
    try:
        result = AsyncResult(task_id, app=persistent.app, backend=backend)
        assert result.state == "FAILURE"
        check(result.result, original, message, fields)
        with pytest.raises(type(original)) as info:
            result.get(timeout=5, propagate=True)
        check(info.value, original, message, fields)
    finally:
        backend.forget(task_id)


@pytest.mark.parametrize(("original", "message", "fields"), CASES, ids=IDS)
def test_str_is_the_message_only(original: PersistentError, message: str, fields: dict[str, Any]) -> None:
    assert str(original) == message
    assert str(original) != str(original.args) or len(original.args) == 1
    assert repr(original).startswith(type(original).__name__)


def test_hierarchy() -> None:
    assert issubclass(StateLost, LeaderDied)
    assert issubclass(InvalidMessage, ValueError) and issubclass(InvalidOptions, ValueError)
    assert issubclass(UnknownDevice, LookupError) and issubclass(UnknownKey, LookupError)
    for exc, _, _ in CASES:
        assert isinstance(exc, PersistentError)


def test_default_fields_are_empty() -> None:
    assert InvalidMessage("m").path == ""
    assert InvalidOptions("m").option == ""
    assert UnknownDevice("m").device == ""
    assert (UnknownKey("m").device, UnknownKey("m").key) == ("", "")
    assert (LeaderDied("m").group, LeaderDied("m").leader_id) == ("", "")
    assert InfiniteRecursionError("m").group == ""
    assert PersistentError("m").message == "m"
