"""The Celery app the images run by default (``PROJ=example_app``).

Replace it with your own module: build with ``--build-arg PROJ=yourpkg.celery``
(or set PROJ in the environment of `docker compose`), and make sure your
module creates ``Persistent(app)`` and registers its devices at import time,
in every process (client, worker, Flower), as Celery tasks are.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from celery_persistent import Device, Persistent

app = Celery("example_app")
# celery_persistent.configs.redis by default; CELERY_CONFIG_MODULE=
# celery_persistent.configs.rabbitmq or ...production to switch (the older
# names configs.redis, configs.rabbitmq, configs.production still work).
app.config_from_object(os.environ.get("CELERY_CONFIG_MODULE", "celery_persistent.configs.redis"))
persistent = Persistent(app)


@persistent.device("counter")
class Counter(Device):
    """A counter per msg1["id"]: every request on one counter is serialized."""

    def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
        return "counter-" + str(msg1["id"])

    def add(self, msg1: Any, msg2: Any, opts: Any) -> Any:
        return {**msg1, "count": msg1["count"] + msg2.get("by", 1)}
