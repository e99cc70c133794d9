"""celery_persistent: coalesced, serialized executions and persistent workers for Celery.

The model of HyperBEAM's Erlang module ``hb_persistent`` (*the seed*) on Celery.
Documentation: ``README.md`` (also the long description in this package's
metadata) and the ``docs/`` directory of the source distribution and the
repository: ``docs/index.md`` to start,
``docs/concepts.md`` for the vocabulary and the seed, ``docs/api.md`` for
every public name, ``docs/architecture.md`` for the modules.
"""

from typing import TYPE_CHECKING, Any

from .device import Device
from .errors import (
    BrokerUnavailable,
    ConfigurationError,
    GroupParked,
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

if TYPE_CHECKING:
    from .placement import WorkerHandle
    from .plugin import Persistent


def __getattr__(name: str) -> Any:
    """``Persistent`` and ``WorkerHandle`` load Celery and redis: imported on first use.

    So importing a light module of the package stays cheap: pytest imports
    ``celery_persistent.pytest_plugin`` in every session of a virtualenv that has it.
    """
    if name == "Persistent":
        from .plugin import Persistent

        return Persistent
    if name == "WorkerHandle":
        from .placement import WorkerHandle

        return WorkerHandle
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BrokerUnavailable",
    "ConfigurationError",
    "Device",
    "GroupParked",
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
