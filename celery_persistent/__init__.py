"""celery_persistent: coalesced, serialized executions and persistent workers for Celery.

The ``hb_persistent`` model (HyperBEAM) on Celery: see ``docs/concepts.md`` and
``docs/architecture.md``.
"""

from .device import Device
from .errors import (
    ConfigurationError,
    InfiniteRecursionError,
    InvalidMessage,
    InvalidOptions,
    LeaderDied,
    PersistentError,
    RegistryUnavailable,
    RequestLost,
    StateLost,
    UnknownDevice,
    UnknownKey,
)
from .outcomes import InfiniteRecursion, Leader, Wait
from .placement import WorkerHandle
from .plugin import Persistent

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
    "RegistryUnavailable",
    "RequestLost",
    "StateLost",
    "UnknownDevice",
    "UnknownKey",
    "Wait",
    "WorkerHandle",
]

__version__ = "0.1.0"
