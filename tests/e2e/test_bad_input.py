"""Bad input sent around the client checks gets a typed error from the worker; the worker stays up.

The client-side checks: tests/unit/test_bad_input.py.
"""

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
