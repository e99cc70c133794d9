"""The test app: devices that leave evidence in Redis for the tests to check.

Configured from the environment so that the tests and their worker
subprocesses share one broker, backend and key prefix.
"""

from __future__ import annotations

import os

from celery import Celery

from celery_persistent import Persistent
from tests.apps import devices

BROKER = os.environ.get("CP_BROKER_URL", "redis://127.0.0.1:6379/13")
BACKEND = os.environ.get("CP_BACKEND_URL", BROKER)
PREFIX = os.environ.get("CP_PREFIX", "cptest")

def make_app(name: str, broker: str) -> Celery:
    """The test app, on ``broker``, with the shared backend, prefix and limits."""
    app = Celery(name, broker=broker, backend=BACKEND)
    app.conf.update(
        task_default_queue=os.environ.get("CP_QUEUE", "cptest"),
        persistent_key_prefix=PREFIX,
        persistent_redis_url=os.environ.get("CP_REDIS_URL", BACKEND),
        persistent_lease_ttl=float(os.environ.get("CP_LEASE_TTL", "3")),
        persistent_max_message_bytes=int(os.environ.get("CP_MAX_BYTES", str(1024 * 1024))),
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        result_expires=600,
    )
    app.conf.accept_content = os.environ.get("CP_ACCEPT", "json,msgpack").split(",")
    if os.environ.get("CP_ACCEPT_PICKLE"):
        # Only to prove that the plugin refuses pickle even where the app allows it.
        app.conf.accept_content = ["json", "msgpack", "pickle"]
    return app


app = make_app("basic", BROKER)
persistent = Persistent(app)
devices.install(persistent)
collect = app.tasks["tests.collect"]
mark = app.tasks["tests.mark"]
mark_error = app.tasks["tests.mark_error"]
ekey = devices.ekey
