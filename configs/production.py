"""``configs.production`` is ``celery_persistent.configs.production`` (it ships in the package): the same settings."""

from celery_persistent.configs.production import *  # noqa: F403 - Celery reads the module's public names
