"""Chains and links of ``resolve``: the previous result becomes Msg1, as in hb_persistent.

Celery calls the next step of a chain, and every link, with the previous
result prepended to the signature's arguments.  A ``resolve`` step there
therefore holds ``(msg2[, opts])`` and resolves Msg2 against the previous
Msg3.  A step written as a full request, ``resolve.s(msg1, msg2)``, would be
called as ``resolve(msg3, msg1, msg2)``: ``check_continuations`` refuses it
when the chain is sent, before anything is registered or runs.

A continuation that Celery's tracer sends after a task that is not
``resolve`` cannot be checked that early.  ``sent_by_tracer`` recognises it
so that ``PersistentTask`` publishes it as it is: the bad step then fails on
its own, and the step before it, which succeeded, stays a success.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from celery import Celery
from celery.canvas import Signature, maybe_signature

from .config import resolve_options
from .errors import InvalidMessage, InvalidOptions, UnknownDevice, UnknownKey
from .planning import unpack

BAD_INPUT = (InvalidOptions, InvalidMessage, UnknownDevice, UnknownKey)
"""Errors that say the request itself is wrong (as opposed to Redis or the broker being down)."""

PREVIOUS = object()
"""Stands for the previous result, which Celery prepends to a continuation's arguments."""


def continuations(app: Celery, task_name: str, chain: Any, link: Any) -> Iterator[Signature]:
    """The ``task_name`` signatures in ``chain`` and ``link`` that get a previous result prepended."""
    pending = [*(chain or ()), *(link if isinstance(link, (list, tuple)) else [link] if link else [])]
    while pending:
        sig = maybe_signature(pending.pop(), app=app)
        if sig is None:
            continue
        kind = sig.get("subtask_type")
        if kind in ("group", "chain", "chord"):
            # Every member of a group (and of a chord's header) gets the previous result;
            # in a chain every step gets the one before it.
            pending.extend(sig.tasks)
        elif sig.task == task_name and not sig.immutable:
            yield sig


def check_continuations(app: Celery, task_name: str, chain: Any, link: Any) -> None:
    """Refuse a chain or link whose ``resolve`` steps would get the previous result in the wrong place."""
    for sig in continuations(app, task_name, chain, link):
        _msg1, msg2, opts = unpack((PREVIOUS, *sig.args), sig.kwargs)
        if not isinstance(msg2, Mapping):
            raise InvalidMessage(f"a chained resolve step takes (msg2, opts=None); its msg2 is a "
                                 f"{type(msg2).__name__}", "msg2")
        resolve_options(opts, app.conf)


def sent_by_tracer(app: Celery, options: dict[str, Any]) -> bool:
    """True for the next step or a link of the task this worker runs: Celery's tracer gives its id as parent_id."""
    parent = app.current_worker_task
    parent_id = options.get("parent_id")
    return parent is not None and bool(parent_id) and parent_id == parent.request.id
