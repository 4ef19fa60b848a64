"""zeromesh: a ZeroMQ discovery mesh, wire-compatible with the libzmq #3186
repro, correct by default, and the churn harness that proves it.

The library needs pyzmq only; ``zeromesh.asyncio`` adds an asyncio API, and
the harness and benchmarks (``zeromesh soak``, ``zeromesh bench``) come with
the ``soak`` and ``bench`` extras.
"""

from __future__ import annotations

from .errors import ConfigError, SecurityError, WireError, ZeromeshError
from .options import SeedBehaviour, Tuning
from .peer import DataMessage, Peer
from .protocol import PeerEvent
from .proxy import Proxy
from .security import Security
from .sockets import LingerWhen
from .wire import Command, Message

__version__ = "0.2.0"

__all__ = [
    "Command",
    "ConfigError",
    "DataMessage",
    "LingerWhen",
    "Message",
    "Peer",
    "PeerEvent",
    "Proxy",
    "Security",
    "SecurityError",
    "SeedBehaviour",
    "Tuning",
    "WireError",
    "ZeromeshError",
    "__version__",
]
