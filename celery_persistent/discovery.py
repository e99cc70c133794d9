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


def find_plugin(app: Celery) -> Persistent:
    try:
        return _installed[app]
    except KeyError:
        raise click.UsageError(
            "this app has no celery_persistent plugin: create Persistent(app) in the module given to -A"
        ) from None
