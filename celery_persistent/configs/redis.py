"""Redis as broker, result backend and celery_persistent registry.

    app.config_from_object("celery_persistent.configs.redis")

The simplest set-up: one Redis server holds the task queues (the Redis
transport), the results (through which coalesced waiters are answered), and
the plugin's registry (group owners, leases, waiters, stored messages).
Environment variables:

    CELERY_BROKER_URL       broker        (default redis://127.0.0.1:6379/0)
    CELERY_RESULT_BACKEND   result store  (default: the broker URL)
    PERSISTENT_REDIS_URL    registry      (default: the result backend URL)

Celery itself also honours CELERY_BROKER_URL and CELERY_RESULT_BACKEND; the
values below are the same, so both agree.
"""

from os import environ as _environ

# -- Celery ------------------------------------------------------------------

broker_url = _environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
result_backend = _environ.get("CELERY_RESULT_BACKEND", broker_url)

# Only safe serializers: the plugin refuses anything else anyway (pickle never
# reaches a device), so do not advertise it.  msgpack needs the `msgpack` package.
accept_content = ["json", "msgpack"]
result_accept_content = ["json", "msgpack"]
task_serializer = "json"
result_serializer = "json"

# One message reserved at a time per process: a request reserved by a busy
# process would wait behind it while another worker sits idle.
worker_prefetch_multiplier = 1

# Retry the broker connection when a worker starts before Redis is up
# (docker compose starts services concurrently).
broker_connection_retry_on_startup = True

# Task events, so that Flower and `celery events` show requests, including
# the coalesced ones that the plugin answers without running them.
worker_send_task_events = True
task_send_sent_event = True

# -- celery_persistent -----------------------------------------------------------

# The registry; without this key the plugin uses the Redis result backend,
# else the Redis broker.  A separate Redis (or database number) is fine.
persistent_redis_url = _environ.get("PERSISTENT_REDIS_URL", result_backend)

# Prefix of every Redis key of the registry and of every group queue
# (queues are named "<persistent_queue_prefix>.<group>").
persistent_key_prefix = "persistent"
persistent_queue_prefix = "persistent"

# Seconds a group's owner lives without renewing its lease; a killed leader
# or persistent worker is recovered at most about this long after it died.
persistent_lease_ttl = 10.0
