"""Chains and links of ``resolve`` written the Celery way, against a real worker.

In a Celery chain (and in a link) the previous result is prepended to the
next signature's arguments.  For ``resolve`` that is the hb_persistent model:
the previous Msg3 becomes the next step's Msg1, so a chained step is written
``resolve.s(msg2)``.  ``resolve.s(msg1, msg2)`` there would be called as
``resolve(msg3, msg1, msg2)``: it is refused before anything runs when the
chain starts with ``resolve``, and fails on its own (never the step before
it) when the chain starts with another task.
"""

from __future__ import annotations

from typing import Any

import pytest
from celery import chain

from celery_persistent import InvalidOptions
from tests.conftest import evidence_key
from tests.support import Worker, wait_until

ADD = {"path": "add", "by": 1}


def runs(rdb: Any, tag: str) -> int:
    return int(rdb.get(evidence_key("runs", tag)) or 0)


def test_each_chained_step_resolves_against_the_previous_result(solo_worker: Worker, persistent: Any,
                                                                uid: str) -> None:
    counter = {"device": "counter", "id": uid, "count": 0}
    steps = persistent.resolve.s(counter, ADD) | persistent.resolve.s(ADD) | persistent.resolve.s({"path": "add",
                                                                                                 "by": 10})
    result = steps.apply_async()
    assert result.get(timeout=30) == {"device": "counter", "id": uid, "count": 12}
    assert result.parent.get(timeout=5)["count"] == 2
    assert result.parent.parent.get(timeout=5)["count"] == 1
    assert [result.state, result.parent.state, result.parent.parent.state] == ["SUCCESS"] * 3


def test_an_immutable_step_ignores_the_previous_result(solo_worker: Worker, persistent: Any, uid: str) -> None:
    first = {"device": "counter", "id": uid, "count": 0}
    other = {"device": "counter", "id": f"{uid}-other", "count": 100}
    result = (persistent.resolve.s(first, ADD) | persistent.resolve.si(other, ADD)).apply_async()
    assert result.get(timeout=30)["count"] == 101
    assert result.parent.get(timeout=5)["count"] == 1


@pytest.mark.parametrize("form", ["chain", "link"])
def test_a_full_request_after_resolve_is_refused_before_anything_runs(solo_worker: Worker, persistent: Any,
                                                                      rdb: Any, uid: str, form: str) -> None:
    msg1 = {"device": "serial", "id": uid}
    first, second = {"path": "run", "n": 1}, {"path": "run", "n": 2}
    with pytest.raises(InvalidOptions) as refused:
        if form == "chain":
            (persistent.resolve.s(msg1, first) | persistent.resolve.s(msg1, second)).apply_async()
        else:
            persistent.resolve.apply_async((msg1, first), link=persistent.resolve.s(msg1, second))
    message = str(refused.value)
    assert "previous result" in message and "resolve.s(msg2" in message and "resolve.si(msg1, msg2)" in message
    # Nothing was registered for the refused head, and nothing was sent: the
    # worker runs requests in the order they were sent, so a request sent now
    # to the same group would run after the head had it been sent.
    assert persistent.registry.owner(persistent.group(msg1, first)) == {}
    assert persistent.resolve.delay(msg1, {"path": "run", "n": 3}).get(timeout=30)["n"] == 3
    assert runs(rdb, uid) == 1
    assert rdb.lrange(evidence_key("order", uid), 0, -1) == [b"3"]


def test_a_bad_step_after_another_task_fails_alone(solo_worker: Worker, app: Any, persistent: Any,
                                                   uid: str) -> None:
    """The chain starts with a plain task: the bad step fails itself; the step before it stays SUCCESS."""
    msg1 = {"device": "counter", "id": uid, "count": 0}
    collect = app.tasks["tests.collect"]
    result = chain(collect.s([uid]), persistent.resolve.s(msg1, ADD)).apply_async()
    with pytest.raises(InvalidOptions, match="previous result"):
        result.get(timeout=30)
    assert result.parent.get(timeout=5) == [uid]
    wait_until(lambda: result.parent.state == "SUCCESS", message="the first step to stay SUCCESS")
    assert result.state == "FAILURE"
