"""The test app with short napping settings: idle group queues nap after 0.5 s, a sweep every second.

Only for the tests of napping (tests/e2e/test_naps.py); same broker, backend and prefix as ``basic``.
"""

from __future__ import annotations

from celery_persistent import Persistent
from tests.apps import devices
from tests.apps.basic import BROKER, make_app

NAP_AFTER = 0.5
SWEEP_INTERVAL = 1.0

app = make_app("napping", BROKER)
app.conf.update(persistent_nap_after=NAP_AFTER, persistent_sweep_interval=SWEEP_INTERVAL)
persistent = Persistent(app)
devices.install(persistent)
