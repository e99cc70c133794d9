"""A request that no worker will run never holds its group (issue: refused messages, failed sends).

The client follows the app's serializer settings and refuses, before
registering anything, what the app's workers would refuse; a message that a
worker refuses anyway (workers configured more strictly than the client)
releases its group, and its waiters get the same refusal.
"""

from __future__ import annotations

import pytest

from celery_persistent import InvalidMessage
from tests.e2e.support import LEASE_TTL
from tests.support import Worker

BOUND = LEASE_TTL + 10


def test_a_serializer_the_workers_refuse_is_refused_before_registering(app, persistent, workers, uid, tmp_path):
    msg1 = {"device": "serial", "id": uid}
    saved = app.conf.accept_content
    app.conf.accept_content = ["json"]  # this app's workers take JSON only
    try:
        with pytest.raises(InvalidMessage, match="accept_content"):
            persistent.resolve.apply_async((msg1, {"path": "run", "n": 0}), serializer="msgpack")
    finally:
        app.conf.accept_content = saved
    # Nothing was registered: the group is free for the next caller.
    assert persistent.registry.owner(f"serial-{uid}") == {}
    worker = Worker(pool="solo", logdir=tmp_path)
    workers.append(worker)
    worker.wait_ready()
    assert persistent.resolve.delay(msg1, {"path": "run", "n": 1}).get(timeout=BOUND)["n"] == 1


def test_a_message_a_worker_refuses_releases_its_group(persistent, workers, rdb, uid, tmp_path):
    """The client accepts msgpack, the worker only JSON: the refused leader does not block the group."""
    from tests.conftest import evidence_key

    json_only = Worker(pool="solo", env={"CP_ACCEPT": "json"}, logdir=tmp_path)
    workers.append(json_only)
    json_only.wait_ready()
    msg1 = {"device": "serial", "id": uid}
    refused = persistent.resolve.apply_async((msg1, {"path": "run", "n": 0, "sleep": 0.5}), serializer="msgpack")
    twin = persistent.resolve.delay(msg1, {"path": "run", "n": 0, "sleep": 0.5})
    after = persistent.resolve.delay(msg1, {"path": "run", "n": 1})
    for result in (refused, twin):
        with pytest.raises(InvalidMessage, match="refused"):
            result.get(timeout=BOUND)
    assert after.get(timeout=BOUND)["n"] == 1
    assert [int(n) for n in rdb.lrange(evidence_key("order", uid), 0, -1)] == [1]
    assert json_only.proc.poll() is None
