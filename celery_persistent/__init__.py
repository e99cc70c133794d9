"""celery_persistent: coalesced, serialized executions and persistent workers for Celery.

The ``hb_persistent`` model (HyperBEAM) on Celery: see ``DESIGN.md``.
"""

from .device import Device
from .errors import (
    ConfigurationError,
    InfiniteRecursionError,
    InvalidMessage,
    InvalidOptions,
    LeaderDied,
    PersistentError,
    StateLost,
    UnknownDevice,
    UnknownKey,
)
from .outcomes import InfiniteRecursion, Leader, Wait
from .plugin import Persistent, WorkerHandle

__all__ = [
    "ConfigurationError",
    "Device",
    "InfiniteRecursion",
    "InfiniteRecursionError",
    "InvalidMessage",
    "InvalidOptions",
    "Leader",
    "LeaderDied",
    "Persistent",
    "PersistentError",
    "StateLost",
    "UnknownDevice",
    "UnknownKey",
    "Wait",
    "WorkerHandle",
]

__version__ = "0.1.0"
