"""A short Redis restart (with AOF: nothing lost from Redis) never takes a group from its healthy owner.

The registry, broker and result backend are one Redis server of this test's
own, on another port, so that restarting it harms nothing else.  Callers
during the outage get a typed error; every update that was answered is in
the rolling state exactly once, and the group stays on its worker.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from celery_persistent import Persistent, PersistentError
from tests.apps import devices
from tests.e2e.support import LEASE_TTL
from tests.support import Worker, wait_until


class OwnRedis:
    """A redis-server of this test (append-only file on), started and stopped by pid."""

    def __init__(self, binary: str, datadir: Path) -> None:
        self.binary = binary
        self.datadir = datadir
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.datadir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        wait_until(lambda: _pings(client), timeout=10, message="the test's Redis to start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: Redis flushes the append-only file and exits
            self.proc.wait(10)
        self.proc = None


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture
def own_redis(tmp_path) -> Iterator[OwnRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server binary here to restart (the embedded Valkey is shared)")
    server = OwnRedis(binary, tmp_path)
    server.start()
    yield server
    server.stop()


def client_app(url: str, prefix: str) -> Persistent:
    app = Celery(f"restart-{prefix}", broker=url, backend=url)
    app.conf.update(task_default_queue=prefix, persistent_key_prefix=prefix, persistent_redis_url=url,
                    persistent_lease_ttl=LEASE_TTL, broker_connection_retry_on_startup=True,
                    task_publish_retry=False, result_expires=600)
    plugin = Persistent(app)
    plugin.device("state")(devices.State)
    return plugin


def test_a_short_redis_restart_keeps_groups_and_every_answered_update(own_redis, uid, tmp_path) -> None:
    prefix = f"rr{uid}"
    env = {"CP_BROKER_URL": own_redis.url, "CP_BACKEND_URL": own_redis.url, "CP_REDIS_URL": own_redis.url,
           "CP_PREFIX": prefix, "CP_QUEUE": prefix}
    host = Worker(pool="solo", extra=["--persistent", "-Q", f"{prefix}-unused"], env=env, logdir=tmp_path)
    reaper = Worker(pool="solo", env=env, logdir=tmp_path)
    p = client_app(own_redis.url, prefix)
    try:
        host.wait_ready()
        reaper.wait_ready()
        wait_until(lambda: p.workers(), message="the persistent worker to report in")
        msg1 = {"device": "state", "id": uid, "count": 0}
        handle = p.start_worker(msg1)
        wait_until(lambda: any(g["state"] == "active" for g in p.groups()), message="adoption")

        answered: list[int] = []
        refused = 0

        def send(n: int) -> None:
            nonlocal refused
            try:
                answered.append(p.resolve.delay(msg1, {"path": "add", "by": 1, "n": n}).get(timeout=30)["count"])
            except (PersistentError, redis.RedisError, OSError):
                refused += 1  # typed while Redis is away: nothing was registered

        for n in range(10):
            send(n)
        own_redis.stop()
        outage_started = time.monotonic()
        for n in range(10, 13):
            send(n)
        time.sleep(max(0.0, 2.0 - (time.monotonic() - outage_started)))  # the fault: a 2 s outage
        own_redis.start()
        for n in range(13, 30):
            send(n)

        assert sorted(answered) == list(range(1, len(answered) + 1)), "an answered update was lost or repeated"
        assert len(answered) >= 25
        rows = p.groups()
        assert [row["hostname"] for row in rows if row["group"] == handle.group] == [handle.hostname], \
            "the healthy owner lost its group"
    finally:
        for worker in (host, reaper):
            worker.stop()
