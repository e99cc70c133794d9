"""``configs.rabbitmq`` is ``celery_persistent.configs.rabbitmq`` (it ships in the package): the same settings."""

from celery_persistent.configs.rabbitmq import *  # noqa: F403 - Celery reads the module's public names
