"""Session set-up: a real Redis (local, else embedded Valkey) and isolated names.

The environment is set before the test app is imported, so the tests and
every worker subprocess share one broker, backend and key prefix, unique to
this session.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis
from hypothesis import settings

from celery_persistent.embedded import local_or_embedded_redis
from celery_persistent.keys import KeySpace
from celery_persistent.registry import Registry

# `make test-fast` runs the property tests with fewer examples (--hypothesis-profile=fast);
# `make test` keeps Hypothesis' default of 100 per test.
settings.register_profile("fast", max_examples=20)

REDIS_URL = os.environ.get("CP_TEST_REDIS_URL") or local_or_embedded_redis(db=13)
SESSION = uuid.uuid4().hex[:8]
MAX_BYTES = 8 * 1024 * 1024  # persistent_max_message_bytes of the test apps
os.environ.update(
    CP_BROKER_URL=REDIS_URL,
    CP_BACKEND_URL=REDIS_URL,
    CP_REDIS_URL=REDIS_URL,
    CP_PREFIX=f"cpt{SESSION}",
    CP_QUEUE=f"cpt{SESSION}",
    CP_MAX_BYTES=str(MAX_BYTES),
)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture(scope="session")
def app():
    from tests.apps import basic

    return basic.app


@pytest.fixture(scope="session")
def persistent():
    from tests.apps import basic

    return basic.persistent


@pytest.fixture(scope="session")
def rdb(persistent):
    return persistent.redis


@pytest.fixture
def uid() -> str:
    """A fresh id so that each test's groups and evidence are its own."""
    return uuid.uuid4().hex[:10]


def evidence_key(*parts: str) -> str:
    from tests.apps.basic import ekey

    return ekey(*parts)


# -- a bare Registry on its own key prefix (Lua script and lease tests) ------------

LEASE_TTL = 30.0  # claim / renew deadline of the bare registry
QUEUE_TTL = 5.0  # deadline of a registered but not yet claimed request


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


@pytest.fixture
def keys(client: redis.Redis, uid: str) -> Iterator[KeySpace]:
    space = KeySpace(prefix=f"cptest-registry-{uid}")
    yield space
    stale = list(client.scan_iter(match=f"{space.prefix}:*"))
    if stale:
        client.delete(*stale)


@pytest.fixture
def registry(client: redis.Redis, keys: KeySpace) -> Registry:
    return Registry(client, keys, lease_ttl=LEASE_TTL, queue_ttl=QUEUE_TTL)
