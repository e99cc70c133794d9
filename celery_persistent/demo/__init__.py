"""The demo: ``python -m celery_persistent.demo`` (``make demo``)."""
