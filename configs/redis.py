"""``configs.redis`` is ``celery_persistent.configs.redis`` (it ships in the package): the same settings."""

from celery_persistent.configs.redis import *  # noqa: F403 - Celery reads the module's public names
