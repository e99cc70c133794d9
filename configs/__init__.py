"""Older names of the configuration modules, for apps run from the repository root.

The modules ship in the package as ``celery_persistent.configs``; use
``app.config_from_object("celery_persistent.configs.redis")`` in new code.
``configs.redis``, ``configs.rabbitmq`` and ``configs.production`` re-export
them, so ``CELERY_CONFIG_MODULE=configs.redis`` keeps working.
"""
