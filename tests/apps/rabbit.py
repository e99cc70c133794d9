"""The test app with RabbitMQ as the broker; Redis stays backend and registry."""

from __future__ import annotations

import os

from celery_persistent import Persistent
from tests.apps import devices
from tests.apps.basic import make_app

AMQP_URL = os.environ.get("CP_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")

app = make_app("rabbit", AMQP_URL)
persistent = Persistent(app)
devices.install(persistent)
