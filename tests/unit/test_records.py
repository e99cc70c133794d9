"""RequestRecord and publish options (``celery_persistent/records.py``)."""

from __future__ import annotations

import json

from celery import Celery, signature
from celery.app.task import Context
from kombu import Queue

from celery_persistent.records import KEPT_OPTIONS, RequestRecord, keep_options, options_from_context

app = Celery("test-records", set_as_current=False)


def sig(name: str, *args: object) -> dict[str, object]:
    """A signature as it comes back from JSON: a plain dict."""
    return json.loads(json.dumps(app.signature(name, args=list(args))))


def full_record() -> RequestRecord:
    return RequestRecord(
        id="task-1",
        key="k" * 32,
        task="persistent.resolve",
        options={
            "link": [sig("cb.one", 1)],
            "link_error": [sig("eb.one")],
            "chain": [sig("next.two"), sig("next.one")],
            "chord": sig("chord.body"),
            "group_id": "grp-1",
            "group_index": 3,
            "root_id": "root-1",
            "parent_id": "parent-1",
            "queue": "persistent.g",
        },
        args=[{"device": "d", "raw": b"\x00\xff"}, {"path": "p", "b": b"text"}],
        kwargs={"extra": [1, 2.5, None, True]},
        stack=["outer", "inner"],
    )


def test_dumps_loads_round_trip() -> None:
    rec = full_record()
    back = RequestRecord.loads(rec.dumps())

    assert back == rec
    assert back.args is not None and isinstance(back.args[0]["raw"], bytes)
    assert back.args[1]["b"] == b"text"
    assert back.options["link"] == [sig("cb.one", 1)]
    assert signature(back.options["link"][0]).task == "cb.one"
    assert back.stack == ["outer", "inner"]
    assert RequestRecord.loads(rec.dumps().encode()) == rec  # bytes from Redis


def test_dumps_prefixes_id_and_key() -> None:
    rec = full_record()
    task_id, key, body = rec.dumps().split("\n", 2)

    assert (task_id, key) == ("task-1", "k" * 32)
    data = json.loads(body)
    assert set(data) == {"task", "options", "args", "kwargs", "stack", "sent"}
    assert data["task"] == "persistent.resolve"
    assert "\n" not in body  # one line, so Lua can split on the first two newlines


def test_defaults_round_trip() -> None:
    rec = RequestRecord(id="i", key="k", task="t")
    back = RequestRecord.loads(rec.dumps())
    assert back == rec
    assert (back.options, back.args, back.kwargs, back.stack, back.sent) == ({}, None, None, [], None)
    sent = RequestRecord(id="i", key="k", task="t", sent=1700000000.25)
    assert RequestRecord.loads(sent.dumps()).sent == 1700000000.25  # the queue wait's start survives Redis


def test_waiter_drops_args() -> None:
    rec = full_record()
    waiter = rec.waiter()

    assert waiter.args is None and waiter.kwargs is None
    assert (waiter.id, waiter.key, waiter.task, waiter.options, waiter.stack) == (
        rec.id, rec.key, rec.task, rec.options, rec.stack
    )
    assert rec.args is not None  # the original keeps its arguments
    assert RequestRecord.loads(waiter.dumps()) == waiter
    assert len(waiter.dumps()) < len(rec.dumps())


def test_context_maps_options() -> None:
    rec = full_record()
    ctx = rec.context()

    assert isinstance(ctx, Context)
    assert ctx.id == "task-1"
    assert ctx.task == "persistent.resolve"
    assert ctx.callbacks == [sig("cb.one", 1)]
    assert ctx.errbacks == [sig("eb.one")]
    assert ctx.chain == [sig("next.two"), sig("next.one")]
    assert ctx.chord == sig("chord.body")
    assert ctx.group == "grp-1"
    assert ctx.group_index == 3
    assert ctx.root_id == "root-1"
    assert ctx.parent_id == "parent-1"
    assert ctx.ignore_result is False
    assert ctx.args == rec.args and ctx.kwargs == rec.kwargs


def test_context_without_options() -> None:
    ctx = RequestRecord(id="solo", key="k", task="t", options={"ignore_result": True}).context()
    assert ctx.root_id == "solo"  # a request without a root is its own root
    assert ctx.callbacks is None and ctx.errbacks is None and ctx.chain is None
    assert ctx.group is None and ctx.group_index is None
    assert ctx.ignore_result is True


def test_keep_options_keeps_only_storable_ones() -> None:
    link = app.signature("cb.one")
    kept = keep_options(
        {
            "link": link,
            "link_error": (app.signature("eb.one"),),
            "producer": object(),
            "connection": object(),
            "result_cls": object(),
            "countdown": 5,
            "root_id": "root-1",
            "parent_id": None,
            "queue": Queue("persistent.q"),
            "priority": 0,
            "group_index": 0,
        }
    )

    assert set(kept) <= set(KEPT_OPTIONS)
    assert set(kept) == {"link", "link_error", "root_id", "queue", "priority", "group_index"}
    assert kept["link"] == [link]
    assert isinstance(kept["link"], list)
    assert list(kept["link_error"]) == [app.signature("eb.one")]
    assert kept["queue"] == "persistent.q"
    assert kept["priority"] == 0 and kept["group_index"] == 0  # falsy values are kept, None is not
    json.dumps(kept)  # storable


def test_keep_options_drops_a_queue_without_a_name() -> None:
    assert "queue" not in keep_options({"queue": object()})
    assert keep_options({"queue": "q"}) == {"queue": "q"}
    assert keep_options({}) == {}


def test_options_from_context() -> None:
    ctx = full_record().context()
    opts = options_from_context(ctx)
    assert opts["link"] == ctx.callbacks
    assert opts["group_id"] == "grp-1" and opts["group_index"] == 3
    assert opts["root_id"] == "root-1"
    assert "ignore_result" not in opts
