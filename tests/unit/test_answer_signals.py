"""signals.fire: an answered caller's task signals, only when someone listens."""

from __future__ import annotations

from typing import Any

import pytest
from celery import signals

from celery_persistent import signals as answer_signals
from celery_persistent.events import Answered
from celery_persistent.records import RequestRecord


def test_no_request_is_built_when_no_receiver_listens(persistent_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Per coalesced caller, the answering worker skips the signals' work when nothing is connected."""
    task = persistent_env.persistent.resolve
    built: list[str] = []
    real = answer_signals.request_of
    monkeypatch.setattr(answer_signals, "request_of", lambda record, by: built.append(record.id) or real(record, by))
    records = [(RequestRecord(f"w{i}", "k", task.name), {"ok": 1}) for i in range(3)]
    by = Answered("w@unit", "exec-id")
    assert not answer_signals.heard(task)

    answer_signals.fire(persistent_env.app, records, by)
    assert built == []

    seen: list[str] = []

    def on(sender: Any = None, **_: Any) -> None:
        seen.append(sender.request.id)

    signals.task_postrun.connect(on, sender=task, weak=False)
    try:
        assert answer_signals.heard(task)
        answer_signals.fire(persistent_env.app, records, by)
    finally:
        signals.task_postrun.disconnect(on, sender=task)
    assert built == seen == ["w0", "w1", "w2"]
