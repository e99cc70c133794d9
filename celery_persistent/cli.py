"""``celery -A proj persistent ...``: the plugin's sub-command (celery.commands entry point)."""

from __future__ import annotations

import click
from celery.bin.base import CeleryCommand


@click.group(cls=click.Group, name="persistent")
@click.pass_context
def persistent(ctx: click.Context) -> None:
    """Inspect and steer celery_persistent groups and persistent workers."""


@persistent.command(cls=CeleryCommand)
@click.pass_context
def status(ctx: click.Context) -> None:
    """Print the plugin's counters."""
    from .discovery import find_plugin

    plugin = find_plugin(ctx.obj.app)
    for name, value in sorted(plugin.metrics.read().items()):
        click.echo(f"{name:<12} {value}")
