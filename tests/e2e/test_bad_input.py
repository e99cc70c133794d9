"""Bad input gets a typed error, on the client and on the worker; the worker stays up."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from celery_persistent import InvalidMessage, InvalidOptions, UnknownDevice, UnknownKey
from tests.support import Worker

GOOD1 = {"device": "counter", "id": "ok", "count": 1}
GOOD2 = {"path": "add", "by": 1}


@pytest.fixture(scope="module")
def worker(tmp_path_factory) -> Iterator[Worker]:
    w = Worker(pool="prefork", concurrency=2, env={"CP_ACCEPT_PICKLE": "1", "C_FORCE_ROOT": "1"},
               logdir=tmp_path_factory.mktemp("bad")).wait_ready()
    yield w
    w.stop()


def still_serving(persistent, worker: Worker) -> None:
    assert worker.proc.poll() is None, "the worker process died"
    assert persistent.resolve.delay(GOOD1, GOOD2).get(timeout=20)["count"] == 2


CLIENT_CASES = [
    ("not a mapping", ["not", "a", "message"], GOOD2, InvalidMessage, "msg1 must be a mapping"),
    ("non-str key", {"device": "counter", 1: "x"}, GOOD2, InvalidMessage, "message keys must be str"),
    ("nested non-str key", GOOD1, {"path": "add", "by": {2: 3}}, InvalidMessage, "keys must be str"),
    ("unserialisable", GOOD1, {"path": "add", "by": object()}, InvalidMessage, "cannot be part of a message"),
    ("set value", GOOD1, {"path": "add", "by": {1, 2}}, InvalidMessage, "type set"),
    ("oversize", {**GOOD1, "blob": "x" * (9 * 1024 * 1024)}, GOOD2, InvalidMessage, "over persistent_max"),
    ("unknown device", {"device": "nope"}, GOOD2, UnknownDevice, "unknown device 'nope'"),
    ("no device", {"id": "x"}, GOOD2, UnknownDevice, "no 'device' key"),
    ("unknown key", GOOD1, {"path": "subtract"}, UnknownKey, "device 'counter' has no key 'subtract'"),
    ("private key", GOOD1, {"path": "_secret"}, UnknownKey, "has no key '_secret'"),
    ("hook as key", GOOD1, {"path": "grouper"}, UnknownKey, "has no key 'grouper'"),
]


@pytest.mark.parametrize(("case", "msg1", "msg2", "error", "text"), CLIENT_CASES, ids=[c[0] for c in CLIENT_CASES])
def test_client_rejects_bad_input_before_sending(persistent, case, msg1, msg2, error, text) -> None:
    with pytest.raises(error, match=text):
        persistent.resolve.delay(msg1, msg2)


def test_bad_options_and_unsafe_serializer_on_the_client(persistent) -> None:
    with pytest.raises(InvalidOptions, match="unknown option"):
        persistent.resolve.delay(GOOD1, GOOD2, opts={"spawn": True})
    with pytest.raises(InvalidOptions, match="await_inprogress"):
        persistent.resolve.delay(GOOD1, GOOD2, opts={"await_inprogress": "sometimes"})
    with pytest.raises(InvalidMessage, match="serializer 'pickle'"):
        persistent.resolve.apply_async((GOOD1, GOOD2), serializer="pickle")


WORKER_CASES = [
    ("not a mapping", ["x", GOOD2], "json", InvalidMessage, "msg1 must be a mapping"),
    ("msgpack int key", [{"device": "counter", 7: 1}, GOOD2], "msgpack", InvalidMessage, "could not be decoded"),
    ("oversize", [{**GOOD1, "blob": "y" * (9 * 1024 * 1024)}, GOOD2], "json", InvalidMessage, "over persistent"),
    ("unknown device", [{"device": "nope"}, GOOD2], "json", UnknownDevice, "unknown device 'nope'"),
    ("unknown key", [GOOD1, {"path": "nope"}], "json", UnknownKey, "has no key 'nope'"),
    ("bad opts", [GOOD1, GOOD2, {"error_strategy": "panic"}], "json", InvalidOptions, "error_strategy"),
    ("pickle", [GOOD1, GOOD2], "pickle", InvalidMessage, "content type 'application/x-python-serialize'"),
]


@pytest.mark.parametrize(("case", "args", "serializer", "error", "text"), WORKER_CASES,
                         ids=[c[0] for c in WORKER_CASES])
def test_worker_answers_bad_input_with_typed_error(
    worker, app, persistent, case, args, serializer, error, text
) -> None:
    # send_task goes around the client-side checks, as any other producer could.
    result = app.send_task("persistent.resolve", args=args, serializer=serializer)
    with pytest.raises(error, match=text):
        result.get(timeout=20)
    still_serving(persistent, worker)


def test_unserialisable_msg3_is_a_typed_error(worker, persistent) -> None:
    result = persistent.resolve.delay({"device": "badout"}, {"path": "run"})
    with pytest.raises(InvalidMessage, match="msg3"):
        result.get(timeout=20)
    still_serving(persistent, worker)


def test_json_only_worker_answers_refused_content(app, persistent, workers, uid, tmp_path) -> None:
    queue = f"jsononly-{uid}"
    strict = Worker(pool="solo", extra=["-Q", queue], env={"CP_ACCEPT": "json"}, logdir=tmp_path)
    workers.append(strict)
    strict.wait_ready()
    for serializer in ("msgpack", "pickle"):
        result = app.send_task("persistent.resolve", args=[GOOD1, GOOD2], serializer=serializer, queue=queue)
        with pytest.raises(InvalidMessage, match="refused"):
            result.get(timeout=20)
    good = app.send_task("persistent.resolve", args=[GOOD1, GOOD2], queue=queue)
    assert good.get(timeout=20)["count"] == 2
    assert strict.proc.poll() is None
