"""The demo's Celery app and devices (importable by name in the worker processes)."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

from celery_persistent import Device, Persistent

BROKER = os.environ.get("CP_DEMO_BROKER", "redis://127.0.0.1:6379/0")

app = Celery("demo", broker=BROKER, backend=BROKER)
app.conf.update(
    task_default_queue="persistent-demo",
    persistent_key_prefix="persistent-demo",
    persistent_max_message_bytes=64 * 1024 * 1024,
    persistent_lease_ttl=3,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
persistent = Persistent(app)


@persistent.device("slow")
class Slow(Device):
    """An expensive computation: identical requests in flight share one run."""

    def square(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        persistent.redis.incr("persistent-demo:executions:" + str(msg1["run"]))
        time.sleep(1.0)
        return {"square": msg2["x"] ** 2, "pid": os.getpid()}


@persistent.device("model")
class Model(Device):
    """A large base message (weights) kept in a persistent worker's memory."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "model-" + str(msg1["name"])

    def score(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        weights = msg1["weights"]
        return {"score": sum(weights[i % len(weights)] for i in msg2["features"]), "pid": os.getpid(),
                "msg1_object": id(msg1)}


@persistent.device("account")
class Account(Device):
    """Rolling state: each deposit's result is the next base message."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "account-" + str(msg1["owner"])

    def deposit(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return {**msg1, "balance": msg1["balance"] + msg2["amount"], "pid": os.getpid()}


@app.task(name="demo.plain_score")
def plain_score(msg1: Any, msg2: Any) -> Any:
    """The same work as Model.score, as a plain Celery task that carries Msg1 every time."""
    weights = msg1["weights"]
    return {"score": sum(weights[i % len(weights)] for i in msg2["features"]), "pid": os.getpid()}
