"""Fixtures of the end-to-end tests: real `celery worker` subprocesses, alone or as a Cluster (Site)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import ModuleType

import pytest

from celery_persistent.embedded import reachable
from tests.e2e.support import Site
from tests.support import Worker


@pytest.fixture
def workers(tmp_path) -> Iterator[list[Worker]]:
    """Start workers with ``spawn(...)``; all are stopped at the end of the test."""
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


@pytest.fixture(scope="module")
def solo_worker(tmp_path_factory) -> Iterator[Worker]:
    worker = Worker(pool="solo", logdir=tmp_path_factory.mktemp("solo")).wait_ready()
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def prefork_worker(tmp_path_factory) -> Iterator[Worker]:
    worker = Worker(pool="prefork", concurrency=2, logdir=tmp_path_factory.mktemp("prefork")).wait_ready()
    yield worker
    worker.stop()


# -- clusters that host groups (tests/e2e/test_persistent.py) ------------------------------


@pytest.fixture(params=["basic", "rabbit"])
def broker(request) -> ModuleType:
    """The test app on Redis and on RabbitMQ (Redis stays result backend and registry)."""
    if request.param == "rabbit" and not reachable("127.0.0.1", 5672, timeout=1):
        pytest.skip("RabbitMQ is not reachable at 127.0.0.1:5672")
    return importlib.import_module(f"tests.apps.{request.param}")


@pytest.fixture
def redis_app() -> ModuleType:
    return importlib.import_module("tests.apps.basic")


@pytest.fixture
def cluster(broker, tmp_path) -> Iterator[Site]:
    """Workers of the ``broker`` app; none is started yet (``start`` / ``host``); all stop after the test."""
    c = Site(broker, tmp_path)
    yield c
    c.stop()


@pytest.fixture
def redis_cluster(redis_app, tmp_path) -> Iterator[Site]:
    """Workers of the Redis app; none is started yet (``start`` / ``host``); all stop after the test."""
    c = Site(redis_app, tmp_path)
    yield c
    c.stop()
