"""zeromesh: a ZeroMQ discovery mesh, wire-compatible with the libzmq #3186
repro, correct by default, and the churn harness that proves it."""

from __future__ import annotations

from .errors import ConfigError, SecurityError, WireError, ZeromeshError
from .peer import DataMessage, Peer
from .protocol import Behaviour, PeerEvent
from .proxy import Proxy
from .security import Security
from .sockets import LingerWhen, SocketPolicy
from .wire import Command, Message

__version__ = "0.1.0"

__all__ = [
    "Behaviour",
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
    "SocketPolicy",
    "WireError",
    "ZeromeshError",
    "__version__",
]
