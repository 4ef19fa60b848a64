"""Shared socket helpers: the resource limits of every socket that reads remote
input, and the subscription filter of the sockets that publish.

Everything a remote party sends is hostile (issue 8); libzmq bounds what it
keeps only where told to:

* **message size** (``MAXMSGSIZE``): libzmq's decoder reads a frame's length
  before it allocates, and drops the connection when the length is over the
  limit, so an oversized frame costs nothing. Without it, one 200 MB frame
  was 0.8 GB in the proxy and in every peer it was forwarded to.
* **queue depth** (``SNDHWM``/``RCVHWM``): counted in messages, per
  connection; bytes per connection are bounded only by depth x size, which is
  why every size below is bounded too.
* **subscriptions**: a publishing socket stores every distinct topic a
  subscriber sends, in a trie that costs about 90 bytes per topic byte
  (measured: 20,000 topics of 60 bytes = 105 MB), and libzmq has no cap and no
  way to drop one connection. So the sockets that publish are ``XPUB_MANUAL``
  (:class:`SubscriptionFilter`): only the topics the protocol uses are applied,
  topics are kept short by ``MAXMSGSIZE``, and a socket whose stored junk
  passes :data:`MAX_JUNK_SUBSCRIPTIONS` is rebuilt (closing it is the only way
  libzmq frees the trie; honest subscribers reconnect on their own).
"""

from __future__ import annotations

import logging
from typing import Any

import zmq

from . import directory, metadata, wire
from .endpoints import MAX_ENDPOINT_LEN

log = logging.getLogger(__name__)

# --- sizes --------------------------------------------------------------------

#: JSON bytes per byte of UTF-8 text at most (``json.dumps`` escapes a 2-byte
#: character as ``\\uXXXX``: 6 bytes for 2; a 4-byte one as two: 12 for 4).
_JSON_PER_BYTE = 3
#: The metadata a peer may announce, as JSON: every pair quoted and separated.
MAX_META_JSON = _JSON_PER_BYTE * metadata.MAX_TOTAL_BYTES + 6 * metadata.MAX_PAIRS + 2
#: The largest discovery frame a peer sends: 295 bytes plus an extension with
#: its metadata (~3.2 KB), a directory stamp, a resync flag and up to 256
#: missed sequence numbers (~2.3 KB): about 6 KB, with room for the membership
#: fields. The proxy's XSUB refuses longer frames, so a slow subscriber queues
#: at most ``SNDHWM`` of these (1000 x 8 KB = 8 MB) and a 200 MB frame costs nothing.
MAX_DISCOVERY_FRAME = 8192
#: One directory entry in the welcome's JSON: ``["uuid","endpoint"],`` with the
#: endpoint escaped, and its listing info ``"uuid":{"t":..,"m":{..},"st":".."},``
#: with the metadata escaped, plus 64 bytes of room for per-entry fields.
MAX_ENTRY_JSON = (8 + 36 + _JSON_PER_BYTE * MAX_ENDPOINT_LEN) + (36 + 48 + MAX_META_JSON) + 64
#: The largest welcome a zeromesh proxy sends: a classic frame, the extension
#: magic, the stamp and the directory at its cap (10,000 entries: 41 MB at
#: most, ~1 MB for 10,000 entries without metadata). Peers' proxy SUBs accept
#: up to this and nothing larger: only the proxy they chose sends to them. A
#: welcome that would be larger goes out without its directory (see Proxy).
MAX_WELCOME = wire.FRAME_SIZE + len(wire.EXT_MAGIC) + 256 + directory.MAX_ENTRIES * MAX_ENTRY_JSON
#: Sockets that only ever receive subscriptions and ZMTP commands (the proxy's
#: XPUB, a peer's data PUB and proxy PUB). libzmq applies ``MAXMSGSIZE`` to the
#: handshake's commands too: a NULL-mechanism READY is ~30 bytes, CURVE's
#: HELLO 200 and INITIATE ~300. The limit caps a junk topic's size (and so its
#: trie cost); the empty topic the protocol uses is one byte.
SUBSCRIBER_MAX_MSG = 64
SUBSCRIBER_MAX_MSG_CURVE = 512
#: Default bound on one data message a peer accepts (``Peer(max_message_size=)``).
#: A larger message drops the connection to its publisher (libzmq reconnects).
DEFAULT_MAX_MESSAGE_SIZE = 8 * 1024 * 1024
#: Bound on the bytes of data messages waiting for the application in
#: ``Peer.recv`` (with ``max_queued`` messages at most): past it, new messages
#: are dropped and counted, as a PUB drops at its HWM.
MAX_QUEUED_BYTES = 32 * 1024 * 1024
#: Stored subscriptions to topics the protocol does not use, past which a
#: publishing socket is rebuilt (see module doc): 256 x 64 bytes x ~90 bytes of
#: trie per byte = 1.5 MB at most (12 MB with CURVE's larger limit). Honest
#: subscribers send none.
MAX_JUNK_SUBSCRIPTIONS = 256

#: The subscription every socket of the protocol sends: everything.
ALLOWED_TOPICS = frozenset({b""})


def subscriber_max_msg(curve: bool) -> int:
    return SUBSCRIBER_MAX_MSG_CURVE if curve else SUBSCRIBER_MAX_MSG


def limit(sock: zmq.Socket[Any], max_msg: int) -> None:
    """Bound the size of one message *sock* accepts (before bind/connect)."""
    sock.setsockopt(zmq.MAXMSGSIZE, max_msg)


def make_manual(sock: zmq.Socket[Any], curve: bool) -> None:
    """An XPUB that applies subscriptions only when :class:`SubscriptionFilter`
    says so, and accepts only short ones (before bind/connect)."""
    sock.setsockopt(zmq.XPUB_MANUAL, 1)
    limit(sock, subscriber_max_msg(curve))


class SubscriptionFilter:
    """Reads an ``XPUB_MANUAL`` socket's (un)subscriptions, applies the allowed
    topics to the connection that sent them, ignores the rest, and keeps count
    of the junk libzmq still stores (it keeps every received topic until the
    connection ends, when it reports the matching unsubscriptions)."""

    def __init__(self, allowed: frozenset[bytes] = ALLOWED_TOPICS, cap: int = MAX_JUNK_SUBSCRIPTIONS) -> None:
        self.allowed = allowed
        self.cap = cap
        #: Junk topics stored now (received minus released), by our count.
        self.junk = 0
        #: Junk subscriptions seen in all (a counter for stats).
        self.refused = 0

    @property
    def over_cap(self) -> bool:
        return self.junk > self.cap

    def reset(self) -> None:
        """The socket was rebuilt: libzmq's stored topics went with it."""
        self.junk = 0

    def read(self, sock: zmq.Socket[Any], budget: int = 1000) -> list[bool]:
        """Drain up to *budget* messages; return one entry per allowed
        (un)subscription applied: True subscribe, False unsubscribe."""
        out: list[bool] = []
        for _ in range(budget):
            try:
                msg = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if not msg or msg[0] not in (0, 1):
                continue  # not a subscription (an XSUB may send data upstream): dropped
            subscribe, topic = msg[0] == 1, msg[1:]
            if topic in self.allowed:
                sock.setsockopt(zmq.SUBSCRIBE if subscribe else zmq.UNSUBSCRIBE, topic)
                out.append(subscribe)
            elif subscribe:
                self.junk += 1
                self.refused += 1
            else:
                self.junk = max(0, self.junk - 1)
        return out
