"""A worker's event loop runs what is queued on it before it sleeps (the RabbitMQ stall, celery_persistent.hubwake).

kombu's hub ran a callback queued by another callback only after its next
poll, which waits up to 10 s; on RabbitMQ that delayed a solo worker's acks,
and with a prefetch of 1 the broker sent nothing meanwhile (gaps of 10 s in
docs/benchmarks.md, "RabbitMQ stalls").  Whether the ack and kombu's reader
meet in that order follows memory layout, so the tests queue the two
callbacks themselves: a real worker on RabbitMQ, and kombu's Hub in-process.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kombu.asynchronous import Hub
from kombu.asynchronous.timer import Timer

from celery_persistent.embedded import reachable
from celery_persistent.hubwake import guard
from tests.e2e.support import Site
from tests.support import wait_until

# Without the guard the second callback waits for the poll: the next timer, here 10 s (5 s in-process).
WITHIN_S = 2.0


@pytest.fixture
def rabbit_site(tmp_path) -> Iterator[Site]:
    if not reachable("127.0.0.1", 5672, timeout=1):
        pytest.skip("RabbitMQ is not reachable at 127.0.0.1:5672")
    from tests.apps import hubwake

    site = Site(hubwake, tmp_path)
    yield site
    site.stop()


def test_a_persistent_worker_on_rabbitmq_runs_a_queued_callback_before_it_sleeps(rabbit_site, rdb, uid) -> None:
    from tests.apps.hubwake import probe

    # --without-heartbeat: no 2 s event-heartbeat timer, so an idle hub's poll waits its full 10 s.
    [worker] = rabbit_site.start(options=["--without-heartbeat"])
    key = f"{os.environ.get('CP_PREFIX', 'cptest')}:hubwake:{uid}"
    assert probe.apply_async((key,), queue=f"{os.environ.get('CP_QUEUE', 'cptest')}-unused").get(timeout=30)
    first = float(wait_until(lambda: rdb.get(f"{key}:first"), 30, 0.05, "the first callback"))
    second = float(wait_until(lambda: rdb.get(f"{key}:second"), 30, 0.05, "the second callback"))
    assert second - first < WITHIN_S, f"the worker's loop slept {second - first:.2f} s with a callback queued"
    # A warm shutdown waits for the idle loop's poll (10 s here): nothing is left to finish, so kill it.
    worker.kill()


def _hub_run(guarded: bool) -> float:
    """Seconds until a callback queued by a callback runs, on kombu's Hub polling a socket with a timer 5 s away.

    The second callback writes to the socket, so that the poll after it returns at once.
    """
    hub = Hub(Timer(max_interval=10))
    if guarded:
        assert guard(hub)
    a, b = socket.socketpair()
    ran: list[float] = []

    def second() -> None:
        ran.append(time.monotonic())
        b.send(b"x")

    hub.add_reader(a, lambda: a.recv(16))  # something to poll, as the worker's broker socket
    hub.call_later(5.0, lambda: None)
    hub.call_soon(lambda: hub.call_soon(second))
    began = time.monotonic()
    try:
        while not ran and time.monotonic() - began < 10:
            hub.run_once()
    finally:
        hub.close()
        a.close()
        b.close()
    assert ran
    return ran[0] - began


def test_kombu_hub_runs_a_callback_queued_by_a_callback_before_it_polls() -> None:
    assert _hub_run(guarded=True) < WITHIN_S


def test_guard_is_idempotent_and_refuses_an_unknown_hub() -> None:
    hub = Hub()
    try:
        assert guard(hub) and guard(hub)
        fire: Any = hub.fire_timers
        assert guard(hub) and hub.fire_timers is fire
    finally:
        hub.close()
    assert guard(object()) is False
