"""An execution that requests its own group gets InfiniteRecursionError, not a deadlock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from celery_persistent import InfiniteRecursion, InfiniteRecursionError, Leader
from celery_persistent.context import executing
from tests.support import Worker


@pytest.fixture(scope="module")
def worker(tmp_path_factory) -> Iterator[Worker]:
    w = Worker(pool="prefork", concurrency=2, logdir=tmp_path_factory.mktemp("rec")).wait_ready()
    yield w
    w.stop()


def test_request_for_own_group_inside_execution_fails_fast(worker, persistent, uid) -> None:
    result = persistent.resolve.delay({"device": "recursive", "id": uid}, {"path": "again"})
    with pytest.raises(InfiniteRecursionError) as info:
        result.get(timeout=20)
    assert info.value.group == f"rec-{uid}"


def test_allow_infinite_lets_the_request_through(worker, persistent, uid) -> None:
    msg2 = {"path": "again", "depth": 1, "opts": {"allow_infinite": True}}
    result = persistent.resolve.delay({"device": "recursive", "id": uid}, msg2)
    assert result.get(timeout=20) == {"unreachable": True}


def test_find_or_register_reports_recursion(persistent, uid) -> None:
    msg1 = {"device": "recursive", "id": uid}
    msg2 = {"path": "again"}
    group = persistent.group(msg1, msg2)
    with executing((), group):
        assert persistent.find_or_register(msg1, msg2) == InfiniteRecursion(group)
        outcome = persistent.find_or_register(msg1, msg2, {"allow_infinite": True})
    assert isinstance(outcome, Leader)
    assert persistent.unregister_notify(outcome, msg2, {"done": True}) == 0


def test_recursion_through_another_group_is_detected(worker, persistent, app, uid) -> None:
    first = persistent.resolve.delay({"device": "pingpong", "id": uid, "side": "a"}, {"path": "hit"})
    second = app.AsyncResult(first.get(timeout=20)["next"])
    # b runs with a on its stack; its own request for a is refused, not deadlocked.
    with pytest.raises(InfiniteRecursionError) as info:
        second.get(timeout=20)
    assert info.value.group == f"pp-{uid}-a"
