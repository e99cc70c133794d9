"""A send that raises leaves nothing registered and nothing executed (the broker is down for that client)."""

from __future__ import annotations

import pytest
from celery import Celery
from kombu.exceptions import OperationalError

from celery_persistent import BrokerUnavailable, Persistent
from tests.apps import devices
from tests.apps.devices import ekey
from tests.e2e.support import LEASE_TTL, hosted
from tests.support import wait_until

BOUND = LEASE_TTL + 10


def unreachable_client(app: Celery) -> Persistent:
    """The same registry and backend, but a broker nobody listens on (port 1)."""
    dead = Celery("dead", broker="redis://127.0.0.1:1/0", backend=app.conf.result_backend)
    dead.conf.update({key: app.conf[key] for key in app.conf if key.startswith("persistent_")})
    dead.conf.update(task_publish_retry=False, broker_connection_retry=False, broker_connection_timeout=1,
                     task_default_queue=app.conf.task_default_queue)
    plugin = Persistent(dead)
    plugin.device("state")(devices.State)
    plugin.device("serial")(devices.Serial)
    return plugin


def test_a_failed_send_to_a_hosted_group_is_withdrawn(redis_app, redis_cluster, rdb, uid) -> None:
    p = redis_app.persistent
    msg1 = {"device": "state", "id": uid, "count": 0}
    handle = redis_cluster.host(msg1)
    dead = unreachable_client(redis_app.app)
    # Adopted first: a request accepted before adoption is run from its record, whatever its send did.
    wait_until(lambda: (hosted(p, handle.group) or {}).get("state") == "active", message="adoption")
    for n in range(3):
        with pytest.raises(BrokerUnavailable) as raised:
            dead.resolve.delay(msg1, {"path": "add", "by": 1, "n": n})
        assert isinstance(raised.value.__cause__, OperationalError)  # typed, with kombu's error as its cause
    assert p.registry.accepted(handle.group) == [], "a request whose send raised stays accepted"
    # The group goes on, and only the requests that were sent change its state.
    assert p.resolve.delay(msg1, {"path": "add", "by": 1, "n": 9}).get(timeout=BOUND)["count"] == 1
    assert int(rdb.get(ekey("runs", uid))) == 1
    assert hosted(p, handle.group)["hostname"] == handle.hostname


def test_a_failed_send_of_a_leader_leaves_its_group_free(app, persistent, solo_worker, uid) -> None:
    msg1 = {"device": "serial", "id": uid}
    dead = unreachable_client(app)
    with pytest.raises(BrokerUnavailable, match="the broker could not take the request"):
        dead.resolve.delay(msg1, {"path": "run", "n": 0})
    assert persistent.registry.owner(f"serial-{uid}") == {}
    # An identical request sent through a live broker leads: it is not coalesced onto a ghost.
    assert persistent.resolve.delay(msg1, {"path": "run", "n": 0}).get(timeout=BOUND)["n"] == 0
    wait_until(lambda: persistent.registry.owner(f"serial-{uid}") == {}, message="the group to be free")
