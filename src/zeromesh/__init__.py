"""zeromesh: a ZeroMQ discovery mesh, wire-compatible with the libzmq #3186
repro, correct by default, and the churn harness that proves it."""

from __future__ import annotations

from .peer import DataMessage, Peer
from .protocol import Behaviour, PeerEvent
from .proxy import Proxy
from .sockets import LingerWhen, SocketPolicy
from .wire import Command, Message, WireError

__version__ = "0.1.0"

__all__ = [
    "Behaviour",
    "Command",
    "DataMessage",
    "LingerWhen",
    "Message",
    "Peer",
    "PeerEvent",
    "Proxy",
    "SocketPolicy",
    "WireError",
    "__version__",
]
