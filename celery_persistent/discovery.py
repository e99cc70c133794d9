"""Finding the ``Persistent`` installed on an app, for tools that only have the app."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import click
from celery import Celery

if TYPE_CHECKING:
    from .plugin import Persistent

_installed: weakref.WeakKeyDictionary[Celery, Persistent] = weakref.WeakKeyDictionary()


def remember(app: Celery, plugin: Persistent) -> None:
    _installed[app] = plugin


def installed(app: Celery) -> Persistent | None:
    """The plugin on ``app``, if ``Persistent(app)`` was made (bootsteps look it up here)."""
    return _installed.get(app)


def find_plugin(app: Celery) -> Persistent:
    """The plugin on ``app``, for the CLI: a usage error names the fix."""
    plugin = installed(app)
    if plugin is None:
        raise click.UsageError(
            "this app has no celery_persistent plugin: create Persistent(app) in the module given to -A"
        )
    return plugin
