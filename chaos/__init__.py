"""The chaos suite of celery_persistent: real faults against real workers, measured.

Each scenario runs in a child process of its own (``chaos.child``) with its
own Redis, RabbitMQ node and network namespace, so that nothing it starts
can outlive it or touch the servers other tests use.  ``python -m chaos``
runs them (``chaos.runner``) and writes ``docs/reliability.md``.
"""
