"""``celery -A proj persistent ...``: the plugin's sub-command (celery.commands entry point).

Celery's own command puts a ``CLIContext`` in ``ctx.obj``; its ``.app`` is the
app given with ``-A``, and ``find_plugin`` finds the ``Persistent`` on it.
Every failure is one line on stderr and a non-zero exit status.  Every
sub-command takes ``--json`` (``monitor``: one JSON object per line).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any

import click
from celery.bin.base import CeleryCommand
from celery.exceptions import TimeoutError as CeleryTimeout

from .errors import PersistentError
from .groupview import GroupView
from .monitor import Monitor, render, render_group, snapshot

if TYPE_CHECKING:
    from .plugin import Persistent


@click.group(name="persistent")
def persistent() -> None:
    """Inspect and steer celery_persistent groups and persistent workers."""


def plugin_of(ctx: click.Context) -> Persistent:
    from .discovery import find_plugin

    return find_plugin(ctx.obj.app)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or repr(exc)
    return f"{type(exc).__name__}: {text}"


@contextmanager
def clear_errors(what: str) -> Iterator[None]:
    """Turn whatever goes wrong into one line and exit status 1."""
    try:
        yield
    except click.ClickException:
        raise
    except CeleryTimeout as exc:
        raise click.ClickException(f"{what}: no answer in time ({exc})") from exc
    except PersistentError as exc:
        raise click.ClickException(f"{what}: {one_line(exc)}") from exc
    except Exception as exc:  # broker, Redis, device errors: still one line
        raise click.ClickException(f"{what}: {one_line(exc)}") from exc


def load_json(path: str) -> Any:
    """A message from a JSON file (``-`` reads stdin)."""
    try:
        if path == "-":
            return json.load(sys.stdin)
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise click.ClickException(f"{path} is not valid JSON: {one_line(exc)}") from exc


def as_json(value: Any) -> str:
    def fallback(item: Any) -> Any:
        return item.decode("utf-8", "replace") if isinstance(item, bytes) else repr(item)

    return json.dumps(value, sort_keys=True, default=fallback)


@persistent.command(cls=CeleryCommand)
@click.option("--json", "as_json_", is_flag=True, help="Print the same as JSON.")
@click.option("--group", default=None, help="Show only this group.")
@click.pass_context
def status(ctx: click.Context, as_json_: bool, group: str | None) -> None:
    """Hosted groups, ordinary groups in flight, parked groups, live persistent workers and the counters."""
    plugin = plugin_of(ctx)
    with clear_errors("cannot read the status"):
        snap = snapshot(plugin, group)
    if as_json_:
        click.echo(as_json(snap.as_json()))
    else:
        click.echo("\n".join(render(snap)))


@persistent.command(cls=CeleryCommand)
@click.option("--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Exit after this many refreshes.")
@click.option("--group", default=None, help="Watch only this group.")
@click.option("--json", "as_json_", is_flag=True, help="One JSON object (the full status) per refresh and line.")
@click.pass_context
def monitor(ctx: click.Context, interval: float, count: int | None, group: str | None, as_json_: bool) -> None:
    """The status, live: in full once, then what changes.

    Stop it with Ctrl-C, or let it exit after --count refreshes.
    """
    watcher = Monitor(plugin_of(ctx), group=group, interval=interval, stream=sys.stdout, as_json=as_json_)
    try:
        watcher.run(count)
    except KeyboardInterrupt:
        click.echo("")


@persistent.command(cls=CeleryCommand)
@click.argument("msg1_file", metavar="MSG1.json")
@click.option("--static", is_flag=True, help="Keep Msg1 (default: roll it forward with each Msg3).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Idle seconds before the group is let go (default: worker_timeout).")
@click.option("--group", default=None, help="Host under this group name (default: the device's grouper).")
@click.option("--json", "as_json_", is_flag=True, help="Print group, queue and hostname as JSON.")
@click.pass_context
def start(ctx: click.Context, msg1_file: str, static: bool, timeout: float | None, group: str | None,
          as_json_: bool) -> None:
    """Place a group holding MSG1 on the least loaded persistent worker."""
    msg1 = load_json(msg1_file)
    plugin = plugin_of(ctx)
    opts: dict[str, Any] = {"static_worker": static}
    if timeout is not None:
        opts["worker_timeout"] = timeout
    with clear_errors("cannot start a persistent worker"):
        handle = plugin.start_worker(msg1, opts, group=group)
    if as_json_:
        click.echo(as_json({"group": handle.group, "queue": handle.queue, "hostname": handle.hostname}))
    else:
        click.echo(f"group {handle.group} on {handle.hostname}, queue {handle.queue}")


@persistent.command(cls=CeleryCommand)
@click.argument("group")
@click.option("--json", "as_json_", is_flag=True, help="Print the group and that it stops as JSON.")
@click.pass_context
def stop(ctx: click.Context, group: str, as_json_: bool) -> None:
    """Let GROUP go once its queue is done."""
    plugin = plugin_of(ctx)
    with clear_errors(f"cannot stop group {group}"):
        stopped = plugin.stop_worker(group)
    if not stopped:
        raise click.ClickException(f"unknown group {group}: it is neither hosted nor parked")
    click.echo(as_json({"group": group, "stopping": True}) if as_json_ else f"stopping group {group}")


@persistent.command(cls=CeleryCommand)
@click.argument("msg1_file", metavar="MSG1.json")
@click.argument("msg2_file", metavar="MSG2.json")
@click.option("--opts", "opts_text", default=None, help='Options as JSON, e.g. \'{"spawn_worker": true}\'.')
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Seconds to wait for Msg3.")
@click.option("--json", "as_json_", is_flag=True, help='Print {"id": task id, "msg3": Msg3}.')
@click.pass_context
def resolve(ctx: click.Context, msg1_file: str, msg2_file: str, opts_text: str | None, timeout: float,
            as_json_: bool) -> None:
    """Resolve MSG2 against MSG1 on the workers; print Msg3 (as JSON)."""
    msg1, msg2 = load_json(msg1_file), load_json(msg2_file)
    opts = None
    if opts_text is not None:
        try:
            opts = json.loads(opts_text)
        except json.JSONDecodeError as exc:
            raise click.ClickException(f"--opts is not valid JSON: {one_line(exc)}") from exc
    plugin = plugin_of(ctx)
    with clear_errors("resolve failed"):
        sent = plugin.resolve.delay(msg1, msg2, opts=opts)
        result = sent.get(timeout=timeout)
    click.echo(as_json({"id": sent.id, "msg3": result} if as_json_ else result))


@persistent.command(cls=CeleryCommand)
@click.argument("worker")
@click.option("--json", "as_json_", is_flag=True, help="Print the worker and that it drains as JSON.")
@click.pass_context
def drain(ctx: click.Context, worker: str, as_json_: bool) -> None:
    """Hand the groups of persistent WORKER to the others.

    WORKER is a hostname, as `status` lists it; use it before restarting the worker.
    """
    plugin = plugin_of(ctx)
    with clear_errors(f"cannot drain {worker}"):
        asked = plugin.drain(worker)
        live = [info["hostname"] for info in plugin.workers()]
    if not asked and worker in live:
        raise click.ClickException(f"{worker} is already draining")
    if not asked:
        raise click.ClickException(f"no live persistent worker named {worker} (live: {', '.join(live) or 'none'})")
    click.echo(as_json({"worker": worker, "draining": True}) if as_json_
               else f"draining {worker}: its groups move to the other persistent workers")


@persistent.command(cls=CeleryCommand)
@click.argument("group")
@click.option("--json", "as_json_", is_flag=True, help="Print the same as JSON.")
@click.pass_context
def inspect(ctx: click.Context, group: str, as_json_: bool) -> None:
    """Everything the registry holds about GROUP: owner token, lease, leader, waiters, queue, host, checkpoint."""
    plugin = plugin_of(ctx)
    with clear_errors(f"cannot inspect group {group}"):
        detail = GroupView(plugin.registry).detail(group)
    if not detail.known:
        raise click.ClickException(f"unknown group {group}: the registry holds nothing for it")
    click.echo(as_json(detail.as_dict()) if as_json_ else "\n".join(render_group(detail)))


@persistent.command(cls=CeleryCommand)
@click.argument("group")
@click.option("--token", default=None,
              help="Release only if this owner token (from `inspect`) still owns GROUP (default: its token now).")
@click.option("--json", "as_json_", is_flag=True, help="Print what was released as JSON.")
@click.pass_context
def release(ctx: click.Context, group: str, token: str | None, as_json_: bool) -> None:
    """Unstick GROUP: its request and waiters get Released, and the group moves on.

    An ordinary group publishes its next queued request; a hosted static group
    is let go and its other accepted requests run as ordinary requests; a
    rolling group is parked with its state for the next persistent worker.
    Nothing changes if another token owns GROUP than --token.
    """
    from .releasing import Releaser

    wired = plugin_of(ctx).wiring
    releaser = Releaser(wired.runtime.registry, wired.answer, wired.dispatcher, wired.placer)
    with clear_errors(f"cannot release group {group}"):
        report = releaser.release(group, token)
    if as_json_:
        click.echo(as_json(report.as_dict()))
        return
    answered = f"{len(report.answered)} caller(s) answered Released"
    then = (f"next request {report.next_request} published" if report.next_request
            else f"{len(report.handed_on)} accepted request(s) handed on" if report.mode == "hosted"
            else "the group is parked with its state and other requests, for the next persistent worker"
            if report.mode == "parked" else "the group is free")
    click.echo(f"released group {group} (token {report.token}, {report.mode}): {answered}; {then}")


def prometheus_module() -> ModuleType:
    """``celery_persistent.prometheus``; without prometheus-client, one line naming the extra to install."""
    try:
        from . import prometheus
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "prometheus_client":
            raise
        raise click.ClickException("`celery persistent metrics` needs prometheus-client, which the `metrics` "
                                   "extra installs: pip install 'celery-persistent[metrics]'") from None
    return prometheus


def metric_values(registry: Any) -> dict[str, Any]:
    """The samples of a prometheus_client registry: ``name: value``, or a list of ``{labels..., "value"}``."""
    values: dict[str, Any] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.labels:
                values.setdefault(sample.name, []).append({**sample.labels, "value": sample.value})
            else:
                values[sample.name] = sample.value
    return values


@persistent.command(cls=CeleryCommand)
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Serve /metrics on this port instead of printing once (0: any free port).")
@click.option("--address", default=None,
              help="Address to serve on, with --port (default: persistent_metrics_address, else 127.0.0.1).")
@click.option("--per-group/--no-per-group", default=None,
              help="Add series labelled by group (default: persistent_metrics_per_group, off): "
                   "one series per group, for small deployments only.")
@click.option("--json", "as_json_", is_flag=True, help="Print the values once as JSON instead of the text format.")
@click.pass_context
def metrics(ctx: click.Context, port: int | None, address: str | None, per_group: bool | None,
            as_json_: bool) -> None:
    """The counters, histograms and gauges in Prometheus' text format (needs the `metrics` extra)."""
    prometheus = prometheus_module()
    plugin = plugin_of(ctx)
    if as_json_:
        with clear_errors("cannot read the metrics"):
            click.echo(as_json(metric_values(prometheus.registry_for(plugin, per_group))))
        return
    with clear_errors("cannot expose the metrics"):
        if port is None:
            click.echo(prometheus.exposition(plugin, per_group), nl=False)
            return
        server = prometheus.serve(plugin, port, address, per_group)
    host, bound = server.server_address[:2]
    click.echo(f"serving Prometheus metrics on http://{host}:{bound}/metrics (Ctrl-C stops)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
