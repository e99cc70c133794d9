"""The app of the pytest fixtures' workers: ``celery -A celery_persistent.pytest_worker worker``.

The fixtures (pytest_plugin.py) start workers with the name of the app under
test and the session's settings in the environment; this module imports that
app by name and applies the settings, so a worker runs the user's own app
exactly as configured in the test process.  Only those workers import it.
"""

from __future__ import annotations

import json
import os

from .pytest_plugin import APP_ENV, CONF_ENV, configure_app

app = configure_app(os.environ[APP_ENV], json.loads(os.environ[CONF_ENV]))
