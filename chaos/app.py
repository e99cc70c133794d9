"""The chaos app: ``Persistent(app)`` on the servers named by the environment (see ``chaos.settings``).

Imported by the scenario process (as client) and by every worker it starts,
each with the URLs it should use: a worker inside a network namespace
reaches the same servers at other addresses.  Redis is always the registry
and result backend; the broker is Redis or RabbitMQ.
"""

from __future__ import annotations

import os

from celery import Celery

from celery_persistent import Persistent
from chaos import devices
from chaos.settings import ENV_BROKER, ENV_PREFIX, ENV_REDIS, LEASE_TTL, PREFIX

REDIS_URL = os.environ.get(ENV_REDIS, "")
BROKER_URL = os.environ.get(ENV_BROKER, REDIS_URL)
if not REDIS_URL:
    raise RuntimeError(f"chaos.app needs {ENV_REDIS} (the chaos Redis); run it through python -m chaos")

app = Celery("chaos", broker=BROKER_URL, backend=REDIS_URL)
app.conf.update(
    task_default_queue=os.environ.get(ENV_PREFIX, PREFIX),
    persistent_key_prefix=os.environ.get(ENV_PREFIX, PREFIX),
    persistent_redis_url=REDIS_URL,
    persistent_lease_ttl=LEASE_TTL,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    result_expires=3600,
)
persistent = Persistent(app)
devices.install(persistent)
