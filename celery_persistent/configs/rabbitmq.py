"""RabbitMQ as broker; Redis as result backend and celery_persistent registry.

    app.config_from_object("celery_persistent.configs.rabbitmq")

The registry (group ownership, leases, waiters, stored messages) is Redis
and Lua, whatever the broker: RabbitMQ only carries the task messages.
Environment variables:

    CELERY_BROKER_URL       broker        (default amqp://guest:guest@127.0.0.1:5672//)
    CELERY_RESULT_BACKEND   result store  (default redis://127.0.0.1:6379/0)
    PERSISTENT_REDIS_URL    registry      (default: the result backend URL)

Group queues and x-single-active-consumer
-----------------------------------------
Each group hosted by a persistent worker has its own queue,
"<persistent_queue_prefix>.<group>", bound to a direct exchange of the same
name with the same routing key, durable, and declared with the queue argument
``x-single-active-consumer: true`` (``celery_persistent.queues.group_queue``).
RabbitMQ then delivers a group's messages to one consumer at a time even if
two workers consume the queue, in order.

RabbitMQ refuses to re-declare a queue with different arguments
(PRECONDITION_FAILED, and the channel is closed).  Producers and workers
both build group queues with ``group_queue``, so they agree; do not list
group queues in ``task_queues`` yourself, and do not declare them by hand
(with `rabbitmqadmin`, a policy that changes them, or another app) with other
arguments.  If you change ``persistent_queue_prefix``, change it in every
process at once.

The ordinary queue (``task_default_queue``) is declared by Celery as usual;
its type (classic or quorum) is set by ``task_default_queue_type``.  Group
queues are classic durable queues with the argument above.
"""

from os import environ as _environ

# -- Celery ------------------------------------------------------------------

broker_url = _environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
result_backend = _environ.get("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/0")

accept_content = ["json", "msgpack"]
result_accept_content = ["json", "msgpack"]
task_serializer = "json"
result_serializer = "json"

# Publisher confirms: a publish that the broker did not take raises in the
# producer.  The plugin relies on that to release a group whose leader could
# not be published (no lock orphaned by a failed publish).
broker_transport_options = {"confirm_publish": True}

# AMQP heartbeats (seconds) detect dead connections; RabbitMQ then
# redelivers the unacknowledged messages of the lost consumer.
broker_heartbeat = 60

# One unacknowledged message per process (basic.qos prefetch_count = 1).
worker_prefetch_multiplier = 1

broker_connection_retry_on_startup = True

# The default queue's type.  "classic" is Celery's default; "quorum" is also
# possible (group queues stay classic with x-single-active-consumer).
task_default_queue_type = "classic"

worker_send_task_events = True
task_send_sent_event = True

# -- celery_persistent -----------------------------------------------------------

persistent_redis_url = _environ.get("PERSISTENT_REDIS_URL", result_backend)
persistent_key_prefix = "persistent"
persistent_queue_prefix = "persistent"
persistent_lease_ttl = 10.0
