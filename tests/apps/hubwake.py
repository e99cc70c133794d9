"""The test app on RabbitMQ with a probe of the worker's event loop (tests/e2e/test_hub_wake.py).

``probe`` queues a callback on the worker's hub; that callback queues a
second one from the loop's own thread, as kombu's reader and Celery's ack
do.  Each records when it ran, in Redis.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from kombu.asynchronous import get_event_loop

from celery_persistent import Persistent
from tests.apps.basic import make_app
from tests.apps.rabbit import AMQP_URL

app = make_app("hubwake", AMQP_URL)
persistent = Persistent(app)


@app.task(name="tests.hubwake.probe")
def probe(key: str) -> bool:
    hub: Any = get_event_loop()
    if hub is None:
        return False
    r = redis.Redis.from_url(app.conf.persistent_redis_url)

    def second() -> None:
        r.set(f"{key}:second", repr(time.time()), ex=600)

    def first() -> None:
        r.set(f"{key}:first", repr(time.time()), ex=600)
        hub.call_soon(second)

    hub.call_soon(first)
    return True
