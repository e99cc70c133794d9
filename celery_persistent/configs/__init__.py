"""Ready-to-use Celery configuration modules for apps that use celery_persistent.

They ship in the package, so an installed app loads one with Celery's own
mechanism, in the module given to ``celery -A``::

    app = Celery("proj")
    app.config_from_object("celery_persistent.configs.redis")        # Redis broker and backend
    app.config_from_object("celery_persistent.configs.rabbitmq")     # RabbitMQ broker, Redis backend and registry
    app.config_from_object("celery_persistent.configs.production")   # hardened settings for production

Every module reads its URLs from environment variables (so one image runs
anywhere) and falls back to services on 127.0.0.1.  Each key is either a
Celery setting or a ``persistent_*`` setting that ``celery_persistent.config``
reads; ``tests/unit/test_packaging.py`` checks both.  The ``configs`` package
at the repository root re-exports them under their older names (``configs.redis``).
"""
