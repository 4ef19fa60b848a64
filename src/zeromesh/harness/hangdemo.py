"""The ``zmq_ctx_term`` hang, deterministically (``zeromesh hang-demo``).

A PUB connects to a subscriber, the subscriber vanishes, the PUB sends once
more: the message is queued in the pipe of a session that has no connection
(it is reconnecting, and the subscription survives). ``disconnect`` then tears
that session down with the linger in force *at that moment*: -1, infinite,
unless it was set at creation. Setting ``LINGER=0`` just before ``close`` (the
seed's pattern, and pyzmq's ``Context.destroy(linger=0)``) does not reach it,
and ``term`` waits for that message forever. Every run hangs.

``--socket push`` does the same with a PUSH connected to a port nobody listens
on (it queues without any subscriber). ``--early-linger`` sets the linger at
creation and ``term`` returns at once: the program doubles as the proof of
the fix.
"""

from __future__ import annotations

import socket
import sys
import time
from typing import Any

import zmq

from .. import timing


def unused_endpoint() -> str:
    """A loopback TCP endpoint nobody listens on (the port was just free)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


def _vanished_subscriber(pub: zmq.Socket[Any]) -> str:
    """Connect *pub* to a subscriber (another context), make sure the
    subscription has arrived, then make the subscriber vanish."""
    peer: zmq.Context[Any] = zmq.Context()
    sub: zmq.Socket[Any] = peer.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.bind("tcp://127.0.0.1:0")
    ep = sub.getsockopt_string(zmq.LAST_ENDPOINT)
    pub.connect(ep)
    deadline = time.monotonic() + timing.STOP_GRACE
    while not sub.poll(10):  # PUB drops until the subscription reaches it
        if time.monotonic() > deadline:
            peer.destroy(linger=0)
            raise RuntimeError("hang-demo: the subscription never reached the PUB")
        pub.send(b"hello")
    sub.close()
    peer.term()
    return ep


def run(early_linger: bool = False, kind: str = "pub") -> None:
    """Queue, disconnect, close and terminate; hangs in ``term`` unless
    *early_linger*."""
    ctx: zmq.Context[Any] = zmq.Context()
    s: zmq.Socket[Any] = ctx.socket(zmq.PUB if kind == "pub" else zmq.PUSH)
    if early_linger:
        s.setsockopt(zmq.LINGER, 0)
    if kind == "pub":
        ep = _vanished_subscriber(s)
    else:
        ep = unused_endpoint()
        s.connect(ep)
    s.send(b"queued for nobody")  # waits in the pipe: the session has no engine
    s.disconnect(ep)  # session torn down with the linger in force now
    s.setsockopt(zmq.LINGER, 0)  # the seed's late linger: too late for that session
    s.close()
    print(
        f"hang-demo: term() ({kind}, {'early' if early_linger else 'late'} linger)",
        file=sys.stderr,
        flush=True,
    )
    ctx.term()
    print("hang-demo: term() returned", file=sys.stderr, flush=True)
