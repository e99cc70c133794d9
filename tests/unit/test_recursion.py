"""find_or_register inside an execution of the same group reports recursion (the worker side: tests/e2e)."""

from __future__ import annotations

from celery_persistent import InfiniteRecursion, Leader
from celery_persistent.context import executing


def test_find_or_register_reports_recursion(persistent, uid) -> None:
    msg1 = {"device": "recursive", "id": uid}
    msg2 = {"path": "again"}
    group = persistent.group(msg1, msg2)
    with executing((), group):
        assert persistent.find_or_register(msg1, msg2) == InfiniteRecursion(group)
        outcome = persistent.find_or_register(msg1, msg2, {"allow_infinite": True})
    assert isinstance(outcome, Leader)
    assert persistent.unregister_notify(outcome, msg2, {"done": True}) == 0
