"""Which groups the current thread is executing, for recursion detection.

The stack travels with requests (in the ``persistent`` message header), so
a request made from inside an execution, directly or through other resolve
tasks, still knows every group above it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_stack: ContextVar[tuple[str, ...]] = ContextVar("celery_persistent_stack", default=())


def current_stack() -> tuple[str, ...]:
    return _stack.get()


@contextmanager
def executing(stack: tuple[str, ...] | list[str], group: str | None) -> Iterator[None]:
    """Mark ``group`` (under its inherited ``stack``) as executing in this thread."""
    frames = tuple(stack) + ((group,) if group else ())
    token = _stack.set(frames)
    try:
        yield
    finally:
        _stack.reset(token)
