"""Production settings: safe serializers, bounded recovery, explicit limits.

    app.config_from_object("celery_persistent.configs.production")

Redis is the default broker here; for RabbitMQ set CELERY_BROKER_URL to an
amqp:// URL (and read celery_persistent/configs/rabbitmq.py for its notes).  Environment
variables:

    CELERY_BROKER_URL       broker        (default redis://127.0.0.1:6379/0)
    CELERY_RESULT_BACKEND   result store  (default: the broker URL if it is Redis,
                                           else redis://127.0.0.1:6379/0)
    PERSISTENT_REDIS_URL    registry      (default: the result backend URL)

Two more knobs are worker options rather than settings here:
``celery worker --persistent --persistent-cache-bytes N`` bounds the in-memory
Msg1 cache of a persistent worker (the setting ``persistent_cache_bytes`` is
its default, 512 MiB), and ``persistent_send_events = False`` turns off the
task events the plugin sends for coalesced requests.
"""

from os import environ as _environ

# -- connections ----------------------------------------------------------------

broker_url = _environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
result_backend = _environ.get(
    "CELERY_RESULT_BACKEND",
    broker_url if broker_url.startswith(("redis://", "rediss://")) else "redis://127.0.0.1:6379/0",
)
broker_connection_retry_on_startup = True
broker_connection_timeout = 10
# Retry storing results (and therefore answers to coalesced waiters) through
# short Redis outages instead of failing the task.
result_backend_always_retry = True
result_backend_max_retries = 10
redis_socket_keepalive = True
redis_socket_connect_timeout = 5

# -- serialization: JSON only ---------------------------------------------------------

# The plugin never runs a pickled request, whatever accept_content says; with
# JSON only, a msgpack or pickle message is answered InvalidMessage too.
accept_content = ["json"]
result_accept_content = ["json"]
task_serializer = "json"
result_serializer = "json"
event_serializer = "json"

# -- results ----------------------------------------------------------------------

# How long results (and the Msg3s given to coalesced waiters) stay readable.
result_expires = 24 * 3600

# -- delivery -----------------------------------------------------------------------

# One reserved message per worker process.
worker_prefetch_multiplier = 1

# Acknowledge a message when its execution starts (Celery's default, stated
# here on purpose).  Recovery of grouped requests does not rely on broker
# redelivery: the request is recorded in the registry, and a leader that dies
# is found by its expired lease (persistent_lease_ttl) and answered LeaderDied,
# or re-run by a new owner for hosted groups.  With late acks a redelivered
# copy of a request that is still running elsewhere carries the same owner
# token, so it could start a second execution of the group.
task_acks_late = False

# Redis transport: an unacknowledged (reserved, not yet started) message of a
# lost worker comes back after this many seconds.  Leases bound the recovery of
# grouped requests well below it; this only matters for prefetched messages.
broker_transport_options = {"visibility_timeout": 3600}

# -- limits -----------------------------------------------------------------------------

# Time limits of ordinary (prefork) workers.  A soft limit raises inside the
# execution, so the group's waiters get SoftTimeLimitExceeded; a hard limit
# kills the process, and the waiters get LeaderDied once the lease expires.
# The solo pool of persistent workers does not enforce time limits.
task_soft_time_limit = 300
task_time_limit = 330

# Recycle prefork children that grow past ~1 GiB resident (kB); the solo pool
# of persistent workers ignores it (bound their cache with
# --persistent-cache-bytes instead).
worker_max_memory_per_child = 1_000_000

# -- monitoring -----------------------------------------------------------------------

worker_send_task_events = True
task_send_sent_event = True

# -- celery_persistent -------------------------------------------------------------------

persistent_redis_url = _environ.get("PERSISTENT_REDIS_URL", result_backend)
persistent_key_prefix = "persistent"
persistent_queue_prefix = "persistent"

# Lease of a group owner, renewed by its process every lease_ttl / 3 seconds at
# most: a dead owner is recovered about lease_ttl (+ one reaper pass) after it
# stopped renewing.  Longer survives longer stalls (GC, swap); shorter recovers
# sooner.
persistent_lease_ttl = 15.0
# How often every worker's reaper looks for expired leases (seconds).
persistent_reap_interval = 1.0
# How long a registered request may wait in the broker before it is
# re-published (seconds): a leader that was sent but never started.
persistent_queue_ttl = 600.0
# Largest Msg1, Msg2 or Msg3 accepted (canonical encoding, bytes).
persistent_max_message_bytes = 16 * 1024 * 1024
# A Msg1 larger than this is stored once in Redis and sent by reference.
persistent_inline_bytes = 64 * 1024
# How long stored messages (refs, checkpoints of hosted groups) live unless used.
persistent_store_ttl = 7 * 24 * 3600

# Defaults of the per-call options (a call's opts still win).
persistent_worker_timeout = 60.0
persistent_error_strategy = "ignore"
