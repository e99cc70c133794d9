"""An execution that requests its own group gets InfiniteRecursionError, not a deadlock.

The client-side check (find_or_register inside an execution): tests/unit/test_recursion.py.
"""

from __future__ import annotations

import pytest

from celery_persistent import InfiniteRecursionError


def test_request_for_own_group_inside_execution_fails_fast(prefork_worker, persistent, uid) -> None:
    result = persistent.resolve.delay({"device": "recursive", "id": uid}, {"path": "again"})
    with pytest.raises(InfiniteRecursionError) as info:
        result.get(timeout=20)
    assert info.value.group == f"rec-{uid}"


def test_allow_infinite_lets_the_request_through(prefork_worker, persistent, uid) -> None:
    msg2 = {"path": "again", "depth": 1, "opts": {"allow_infinite": True}}
    result = persistent.resolve.delay({"device": "recursive", "id": uid}, msg2)
    assert result.get(timeout=20) == {"unreachable": True}


def test_recursion_through_another_group_is_detected(prefork_worker, persistent, app, uid) -> None:
    first = persistent.resolve.delay({"device": "pingpong", "id": uid, "side": "a"}, {"path": "hit"})
    second = app.AsyncResult(first.get(timeout=20)["next"])
    # b runs with a on its stack; its own request for a is refused, not deadlocked.
    with pytest.raises(InfiniteRecursionError) as info:
        second.get(timeout=20)
    assert info.value.group == f"pp-{uid}-a"
