"""The plugin's Celery task class: ``apply_async`` registers, ``__call__`` leads.

``persistent.resolve`` is an instance of this class, so ``delay``, ``s()``,
chains, groups and chords all pass through the same two overrides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from celery import Task
from celery.result import AsyncResult

from . import lineage, tracing
from .chaining import BAD_INPUT, check_continuations, sent_by_tracer
from .dispatch import HEADER
from .errors import PersistentError
from .events import Execution, executing
from .execution import recursion_error
from .planning import Plan, unpack
from .registry import unavailable_as_typed
from .safety import choose_serializer
from .unsent import MARK, UnsentProducer, send_observed

if TYPE_CHECKING:
    from .plugin import Persistent


class PersistentTask(Task):
    """Base class of resolve tasks; ``persistent`` is set at registration."""

    persistent: ClassVar[Persistent]
    serializer = None  # the app's task_serializer when it is safe (see safety.choose_serializer)
    Strategy = "celery_persistent.safety:safe_strategy"
    track_started = False

    def apply_async(  # type: ignore[override]
        self,
        args: Any = None,
        kwargs: Any = None,
        task_id: str | None = None,
        producer: Any = None,
        link: Any = None,
        link_error: Any = None,
        shadow: str | None = None,
        **options: Any,
    ) -> AsyncResult:
        options["serializer"] = choose_serializer(options.get("serializer"), self.app.conf.task_serializer,
                                                  self.app.conf.accept_content)
        if self.app.conf.task_always_eager:
            # Celery round-trips the arguments through this serializer, then __call__ runs the request here.
            return super().apply_async(args, kwargs, task_id, producer, link, link_error, shadow, **options)
        try:
            msg1, msg2, opts = unpack(args, kwargs)
            check_continuations(self.app, self.name, options.get("chain"), link)
            with unavailable_as_typed():
                plan = self.persistent.plan(msg1, msg2, opts)
        except BAD_INPUT:
            if not sent_by_tracer(self.app, options):
                raise
            # A step after another task (chaining.py): it fails on its own, not the step that succeeded.
            return super().apply_async(args, kwargs, task_id, producer, link, link_error, shadow, **options)
        with unavailable_as_typed():
            options.update(producer=producer, link=link, link_error=link_error)
            if shadow is not None:
                options["shadow"] = shadow
            call_args = [msg1, msg2, opts] if opts is not None else [msg1, msg2]
            return self.persistent.dispatcher.submit(self, plan, call_args, task_id, options)

    def publish(self, args: list[Any], task_id: str, header: dict[str, Any], options: dict[str, Any]) -> AsyncResult:
        """Send the message itself: Celery's own ``apply_async``, plus our header."""
        options = dict(options)
        if not options.get("serializer"):
            # Requests published later (queued, recovered) go out as their caller's did, never pickled.
            options["serializer"] = choose_serializer(None, self.app.conf.task_serializer,
                                                      self.app.conf.accept_content)
        headers = dict(options.pop("headers", None) or {})
        headers[HEADER] = header
        # A request published later (queued, recovered) keeps its caller's origin and trace (lineage.py).
        with lineage.applied(self.app, task_id, options, headers):
            return super().apply_async(args, None, task_id=task_id, headers=headers, **options)

    def publish_unsent(self, args: list[Any], task_id: str, header: dict[str, Any],
                       options: dict[str, Any]) -> AsyncResult:
        """A coalesced caller: Celery's send path, signals and task-sent event included, without the message.

        See unsent.py.  The instrumentation's producer span gets
        ``celery_persistent.coalesced_onto``: the request whose execution answers it.
        """
        if not send_observed(self):
            return self._unsent_result(task_id, options)
        options = dict(options)
        options.pop(lineage.KEY, None)  # sent now, from the caller itself
        header = {**header, MARK: True}
        marks = {"coalesced": True, "coalesced_onto": header.get("onto"), "group": header.get("group")}
        with self.app.producer_or_acquire(options.pop("producer", None)) as producer:
            options["producer"] = UnsentProducer(producer, on_skip=lambda _headers: tracing.annotate(marks))
            return self.publish(args, task_id, header, options)

    def _unsent_result(self, task_id: str, options: dict[str, Any]) -> AsyncResult:
        """What Celery's send path leaves behind for an unobserved send: the result, subscribed, in its parent's trail.

        As ``Celery.send_task`` does, minus the message it would build and
        drop (about a third of a coalesced ``delay()`` on the benchmark's client).
        """
        ignore_result = bool(options.get("ignore_result", self.ignore_result))
        if not ignore_result:
            self.backend.on_task_call(None, task_id)  # subscribes now, as for a sent task: no answer is missed
        result = self.AsyncResult(task_id)
        result.ignored = ignore_result
        if options.get("add_to_parent", True):
            parent = self.app.current_worker_task
            if parent:
                parent.add_trail(result)
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if request.called_directly or request.is_eager:
            return self._call(*args, **kwargs)
        # Answers given during this execution are this worker's, onto this request (events.py).
        with executing(Execution.of(request)):
            return self._call(*args, **kwargs)

    def _call(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        header = None if request.called_directly else (request.headers or {}).get(HEADER)
        if header is None and not request.called_directly:
            header = getattr(request, HEADER, None)
        stack = tuple(header.get("stack") or ()) if header else None
        if header and header.get("hosted"):
            return self._run_hosted(header, args, kwargs)
        try:
            msg1, msg2, opts = unpack(args, kwargs)
            plan = self.persistent.plan(msg1, msg2, opts, stack=stack)
        except Exception as exc:
            if header and header.get("token"):
                # Registered by a client that saw the input differently (another
                # device version?): release the group so that it does not stall.
                finished = self.persistent.dispatcher.complete(header["group"], header["key"], header["token"], exc,
                                                               settle=False)
                request.persistent_delivery = finished.delivery  # settled once the tracer stored the error
            raise
        if request.called_directly:
            return self.persistent.coalescer.execute(plan)
        if request.is_eager:
            return self._run_eager(plan)
        return self.persistent.coalescer.run(self, plan, header, list(args))

    def _run_eager(self, plan: Plan) -> Any:
        """``task_always_eager``: execute here and now, alone, without registering (docs/testing.md).

        Eager mode sends no message, so nothing is in flight to coalesce with,
        and nothing a worker runs could be serialized against it; registering
        would only make the call wait on other processes.  The input checks,
        the grouper and the recursion check are those of a sent request.
        """
        if plan.recursive:
            assert plan.group is not None
            raise recursion_error(plan.group)
        return self.persistent.coalescer.execute(plan)

    def after_return(self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """The tracer has stored this request's own answer and run its links: its delivery is settled.

        Until then the registry keeps the execution's answers (see
        ``Dispatcher.complete``), so a worker that dies between the group's
        release and this point loses no caller.
        """
        delivery = getattr(self.request, "persistent_delivery", None)
        if delivery:
            self.persistent.dispatcher.settle(delivery)

    def _run_hosted(self, header: dict[str, Any], args: Any, kwargs: Any) -> Any:
        host = self.persistent.host
        if host is None:
            raise PersistentError(
                f"a request of hosted group {header.get('group')} reached {self.request.hostname}, which does "
                "not host groups: only `celery worker --persistent` workers should consume group queues"
            )
        _msg1, msg2, opts = unpack(args, kwargs)
        return host.run(self, header, msg2, opts)
