"""The napping test app on RabbitMQ: idle groups nap after 0.5 s (their lease only: the queue stays consumed).

Only for tests/e2e/test_naps.py; same backend, registry and prefix as ``basic``.
"""

from __future__ import annotations

from celery_persistent import Persistent
from tests.apps import devices
from tests.apps.basic import make_app
from tests.apps.napping import NAP_AFTER, SWEEP_INTERVAL
from tests.apps.rabbit import AMQP_URL

app = make_app("napping_rabbit", AMQP_URL)
app.conf.update(persistent_nap_after=NAP_AFTER, persistent_sweep_interval=SWEEP_INTERVAL)
persistent = Persistent(app)
devices.install(persistent)
