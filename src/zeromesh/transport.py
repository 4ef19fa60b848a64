"""Shared socket helpers, used by the peer's sockets, the proxy and ``members``:
transport options (heartbeats, reconnect pacing), monitor events, the
discovery-frame reader, the kick; the resource limits of every socket that
reads remote input; the subscription filter of the sockets that publish; and
the connection table (one connection per resolved address).

Everything a remote party sends is hostile (issue 8); libzmq bounds what it
keeps only where told to:

* **message size** (``MAXMSGSIZE``): libzmq's decoder reads a frame's length
  before it allocates, and drops the connection when the length is over the
  limit, so an oversized frame costs nothing. Without it, one 200 MB frame
  was 0.8 GB in the proxy and in every peer it was forwarded to.
* **queue depth** (``SNDHWM``/``RCVHWM``): counted in messages, per
  connection; bytes per connection are bounded only by depth x size, which is
  why every size below is bounded too.
* **connections**: one per resolved address, whatever the spellings announced,
  and none to the proxy's own sockets or past an alias cap (:class:`ConnectionTable`).
* **subscriptions**: a publishing socket stores every distinct topic a
  subscriber sends, in a trie that costs about 90 bytes per topic byte
  (measured: 20,000 topics of 60 bytes = 105 MB), and libzmq has no cap and no
  way to drop one connection. So the sockets that publish are ``XPUB_MANUAL``
  (:class:`SubscriptionFilter`): only the topics the protocol uses are applied
  (and, on a data PUB, at most :data:`MAX_APPLIED_TOPICS` distinct application
  topics: interest-scoped subscribers), topics are kept short by
  ``MAXMSGSIZE``, and a socket whose stored junk
  passes :data:`MAX_JUNK_SUBSCRIPTIONS` is rebuilt (closing it is the only way
  libzmq frees the trie; honest subscribers reconnect on their own).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import zmq

from . import directory, ext, metadata, timing, wire
from .endpoints import MAX_ENDPOINT_LEN, WILDCARD_HOSTS, canonical, parse_tcp
from .errors import WireError

log = logging.getLogger(__name__)

# --- sizes --------------------------------------------------------------------

#: JSON bytes per byte of text at most, as ``json.dumps`` escapes it: a
#: control character (allowed in metadata) is ``\\u0001``, 6 bytes for 1;
#: endpoints have none, and their worst is a 2-byte character: 6 bytes for 2.
_JSON_PER_META_BYTE = 6
_JSON_PER_ENDPOINT_BYTE = 3
#: The metadata a peer may announce, as JSON: every pair quoted and separated.
MAX_META_JSON = _JSON_PER_META_BYTE * metadata.MAX_TOTAL_BYTES + 6 * metadata.MAX_PAIRS + 2
#: The largest discovery frame a peer sends: 295 bytes plus an extension with
#: its metadata (6.2 KB escaped at worst), a directory stamp, an incarnation,
#: flags, up to 256 missed sequence numbers (~2.3 KB) and its topic prefixes
#: (:data:`zeromesh.ext.MAX_TOPICS_JSON`, 2.9 KB): under 12 KB. The
#: proxy's XSUB refuses longer frames, so a slow subscriber queues at most
#: ``SNDHWM`` of these (1000 x 16 KB = 16 MB) and a 200 MB frame costs nothing.
MAX_DISCOVERY_FRAME = 16 * 1024
#: One directory entry in the welcome's JSON: ``["uuid","endpoint",inc,1],`` with
#: the endpoint escaped, and its listing info ``"uuid":{"t":..,"m":{..},"st":".."},``
#: with the metadata escaped and its topic prefixes, plus 64 bytes of room for per-entry fields.
MAX_ENTRY_JSON = (
    (8 + 36 + _JSON_PER_ENDPOINT_BYTE * MAX_ENDPOINT_LEN + 24) + (36 + 48 + MAX_META_JSON) + ext.MAX_TOPICS_JSON + 64
)
#: The largest welcome a zeromesh proxy sends: a classic frame, the extension
#: magic, the stamp and the directory at its cap (10,000 entries: 73 MB at
#: most, ~1 MB for 10,000 entries without metadata or topics). Peers' proxy SUBs accept
#: up to this and nothing larger: only the proxy they chose sends to them. A
#: welcome that would be larger goes out without its directory (see Proxy).
MAX_WELCOME = wire.FRAME_SIZE + len(wire.EXT_MAGIC) + 256 + directory.MAX_ENTRIES * MAX_ENTRY_JSON
#: Sockets that only ever receive subscriptions and ZMTP commands (the proxy's
#: XPUB, a peer's data PUB and proxy PUB). libzmq applies ``MAXMSGSIZE`` to the
#: handshake's commands too: a NULL-mechanism READY is ~30 bytes, CURVE's
#: HELLO 200 and INITIATE ~300. The limit caps a junk topic's size (and so its
#: trie cost); the empty topic the protocol uses is one byte, an application
#: topic prefix (interest-scoped subscribers) one plus at most 64.
SUBSCRIBER_MAX_MSG = 1 + ext.MAX_TOPIC_BYTES
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
#: Distinct application topic prefixes a data PUB applies for its
#: interest-scoped subscribers (each sends at most ``ext.MAX_TOPICS``): 512 x
#: 64 bytes x ~90 bytes of trie per byte = 2.9 MB at most. Honest meshes use a
#: few (10 in the benchmark); past the cap a new prefix counts as junk.
MAX_APPLIED_TOPICS = 512

#: The subscription every socket of the protocol sends: everything.
ALLOWED_TOPICS = frozenset({b""})


def subscriber_max_msg(curve: bool) -> int:
    return SUBSCRIBER_MAX_MSG_CURVE if curve else SUBSCRIBER_MAX_MSG


def limit(sock: zmq.Socket[Any], max_msg: int) -> None:
    """Bound the size of one message *sock* accepts (before bind/connect)."""
    sock.setsockopt(zmq.MAXMSGSIZE, max_msg)


#: Inbound queue of a publishing socket, per subscriber (messages): libzmq
#: stores every subscription that reaches the socket before we can read it,
#: so this bounds how much junk one read can find stored (honest subscribers
#: send one subscription).
SUBSCRIBER_RCVHWM = 64


def make_manual(sock: zmq.Socket[Any], curve: bool) -> None:
    """An XPUB that applies subscriptions only when :class:`SubscriptionFilter`
    says so, and accepts only short ones, few at a time (before bind/connect)."""
    sock.setsockopt(zmq.XPUB_MANUAL, 1)
    sock.setsockopt(zmq.RCVHWM, SUBSCRIBER_RCVHWM)
    limit(sock, subscriber_max_msg(curve))


class SubscriptionFilter:
    """Reads an ``XPUB_MANUAL`` socket's (un)subscriptions, applies the allowed
    topics to the connection that sent them, ignores the rest, and keeps count
    of the junk libzmq still stores (it keeps every received topic until the
    connection ends, when it reports the matching unsubscriptions)."""

    def __init__(
        self,
        allowed: frozenset[bytes] = ALLOWED_TOPICS,
        cap: int = MAX_JUNK_SUBSCRIPTIONS,
        topics: Callable[[bytes], bool] | None = None,
        max_topics: int = MAX_APPLIED_TOPICS,
    ) -> None:
        self.allowed = allowed
        self.cap = cap
        #: Which application topics may be applied too (a data PUB's: those
        #: within what it publishes), at most *max_topics* distinct ones.
        self.topics = topics
        self.max_topics = max_topics
        #: Applied application topic -> subscriptions to it now.
        self.applied: Counter[bytes] = Counter()
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
        self.applied.clear()

    def _apply_topic(self, subscribe: bool, topic: bytes) -> bool:
        """Count an application topic's (un)subscription; False: not one we apply."""
        if self.topics is None:
            return False
        if not subscribe:
            if topic not in self.applied:
                return False
            self.applied[topic] -= 1
            if self.applied[topic] <= 0:
                del self.applied[topic]
            return True
        if (topic in self.applied or len(self.applied) < self.max_topics) and self.topics(topic):
            self.applied[topic] += 1
            return True
        return False

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
            elif self._apply_topic(subscribe, topic):
                sock.setsockopt(zmq.SUBSCRIBE if subscribe else zmq.UNSUBSCRIBE, topic)
            elif subscribe:
                self.junk += 1
                self.refused += 1
                if self.over_cap:
                    break  # rebuild now: every read lets libzmq store more
            else:
                self.junk = max(0, self.junk - 1)
        return out


# --- connections to announced endpoints ------------------------------------------

#: Distinct loopback addresses (any of 127.0.0.0/8, which all reach a listener
#: bound on 0.0.0.0) or addresses of one IPv6 /64 dialled for one port. One
#: attacker PUB announced under 3,000 such spellings cost every peer 1,250
#: fds, 80 MB and 11% of a core, for good; past this cap a spelling is not
#: dialled, so its entry never comes up and expires. Honest peers on one host
#: differ by port, so two is plenty (a second address is a rare set-up).
MAX_ALIASES_PER_PORT = 2

#: Refusal reasons of :meth:`ConnectionTable.add` (counter keys).
ALIAS_CAP = "alias-cap"


def _host_class(key: str) -> tuple[str, int] | None:
    """(the address class an alias flood draws from, port) of a canonical tcp
    endpoint: 127/8 as one class, an IPv6 /64 as one; None for the rest."""
    try:
        addr = parse_tcp(key)
        ip = ipaddress.ip_address(addr.host.split("%", 1)[0])
    except (WireError, ValueError):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is None:
            return (str(ipaddress.IPv6Network((ip, 64), strict=False)), addr.port)
        ip = mapped
    if ip.is_loopback:
        return ("127.0.0.0/8", addr.port)
    return None


class ConnectionTable:
    """The data SUB's (or the proxy probe's) connections, one per resolved
    address: announced endpoints are *spellings*; spellings that resolve to
    one address share one connection (``localhost`` and ``127.0.0.1`` of a
    live peer were 2 connections and every message twice; 10 spellings, 10).

    It also refuses to dial what must never be dialled (:meth:`forbid`: the
    proxy's own sockets, this peer's own PUB) and floods of aliases
    (:data:`MAX_ALIASES_PER_PORT`). A refused spelling is never dialled, so
    its entry never comes up and the owner's expiry drops it.

    Monitor events name the resolved address; :meth:`on_event` maps one back
    to every spelling it stands for.
    """

    def __init__(
        self,
        connect: Callable[[str], object],
        disconnect: Callable[[str], object],
        aliases_per_port: int = MAX_ALIASES_PER_PORT,
    ) -> None:
        self._connect, self._disconnect = connect, disconnect
        self.aliases_per_port = aliases_per_port
        #: resolved address -> the spelling dialled, every spelling on it, up?
        self._conns: dict[str, _Conn] = {}
        self._key_of: dict[str, str] = {}
        self._refused: set[str] = set()
        #: forbidden resolved addresses and loopback ports -> reason
        self._forbidden: dict[str, str] = {}
        self._forbidden_ports: dict[int, str] = {}
        self._per_class: Counter[tuple[str, int]] = Counter()
        #: Spellings refused, by reason.
        self.refusals: Counter[str] = Counter()

    def __len__(self) -> int:
        """Connections open (one per resolved address)."""
        return len(self._conns)

    def __contains__(self, endpoint: object) -> bool:
        """Whether *endpoint* (a spelling) uses a connection."""
        return endpoint in self._key_of

    def forbid(self, endpoint: str, reason: str) -> None:
        """Never dial *endpoint* under any spelling. A wildcard or loopback
        host forbids every loopback spelling of its port (one listener)."""
        if endpoint.startswith("tcp://"):
            host, _, port = endpoint[len("tcp://") :].rpartition(":")
            if port.isdigit() and (host in WILDCARD_HOSTS or _is_loopback(host)):
                self._forbidden_ports[int(port)] = reason
        self._forbidden[canonical(endpoint)] = reason

    def refusal(self, endpoint: str) -> str | None:
        """Why *endpoint* would be refused as forbidden (None: it would not be)."""
        key = canonical(endpoint)
        reason = self._forbidden.get(key)
        if reason is None and self._forbidden_ports:
            cls = _host_class(key)
            if cls is not None and cls[0] == "127.0.0.0/8":
                reason = self._forbidden_ports.get(cls[1])
        return reason

    def add(self, endpoint: str) -> str:
        """Dial *endpoint* unless its address is dialled already. Returns
        ``"dialled"``, ``"shared"`` (another spelling's connection, not up
        yet), ``"up"`` (that connection is up: the caller treats *endpoint* as
        connected now), or the refusal reason (counted in :attr:`refusals`)."""
        if endpoint in self._key_of or endpoint in self._refused:
            return "shared"  # the protocol asks once per spelling; be idempotent anyway
        key = canonical(endpoint)
        conn = self._conns.get(key)
        if conn is not None:
            conn.spellings.add(endpoint)
            self._key_of[endpoint] = key
            return "up" if conn.up else "shared"
        reason = self.refusal(endpoint)
        cls = _host_class(key)
        if reason is None and cls is not None and self._per_class[cls] >= self.aliases_per_port:
            reason = ALIAS_CAP
        if reason is not None:
            self._refused.add(endpoint)
            self.refusals[reason] += 1
            return reason
        self._connect(endpoint)
        self._conns[key] = _Conn(endpoint, {endpoint})
        self._key_of[endpoint] = key
        if cls is not None:
            self._per_class[cls] += 1
        return "dialled"

    def remove(self, endpoint: str, times: int = 1) -> None:
        """Forget *endpoint*; the connection goes when its last spelling does
        (*times* disconnect calls: the seed's duplicate disconnect)."""
        if endpoint in self._refused:
            self._refused.discard(endpoint)
            return
        key = self._key_of.pop(endpoint, None)
        if key is None:
            return
        conn = self._conns[key]
        conn.spellings.discard(endpoint)
        if conn.spellings:
            return
        del self._conns[key]
        cls = _host_class(key)
        if cls is not None:
            self._per_class[cls] -= 1
            if self._per_class[cls] <= 0:
                del self._per_class[cls]
        for _ in range(times):
            self._disconnect(conn.dialled)

    def on_event(self, resolved: str, up: bool) -> list[str]:
        """A monitor event for *resolved*: the spellings it concerns."""
        conn = self._conns.get(canonical(resolved))
        if conn is None:
            return []
        conn.up = up
        return sorted(conn.spellings)


@dataclass
class _Conn:
    dialled: str
    spellings: set[str]
    up: bool = False


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0]).is_loopback
    except ValueError:
        return host == "localhost"


class TokenBucket:
    """*rate* tokens a second, at most *burst* saved; the clock is passed in."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = float(burst)
        self._last: float | None = None

    def take(self, now: float) -> bool:
        if self._last is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


# --- socket options, monitor events and discovery frames (shared by peer, proxy, members) ---

#: Flags as plain ints for the data hot path: pyzmq's enum arithmetic
#: (``flags | SNDMORE`` in send_multipart) costs more than the send itself.
NOBLOCK = int(zmq.NOBLOCK)
#: libzmq's send as pyzmq's backend has it, without the sugar layer's checks
#: for routing ids and groups (half the CPU of a small frame's send): the data
#: hot path, where the frames are always plain bytes.
backend_send = zmq.backend.Socket.send
SNDMORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
RCVMORE = int(zmq.RCVMORE)


def wake_pair() -> tuple[socket.socket, socket.socket]:
    """A non-blocking socketpair (read end, write end): one byte written wakes
    a loop polling the read end (a peer's, the proxy's, an asyncio bridge's)."""
    r, w = socket.socketpair()
    r.setblocking(False)
    w.setblocking(False)
    return r, w


def last_endpoint(sock: zmq.Socket[Any]) -> str:
    """The endpoint a socket actually bound (the port chosen for ``:0``)."""
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def set_transport_options(
    s: zmq.Socket[Any],
    heartbeats: bool,
    ivl: float = timing.HEARTBEAT_IVL,
    timeout: float = timing.HEARTBEAT_TIMEOUT,
) -> None:
    """Heartbeats and reconnect pacing for every TCP connection (see timing.py)."""
    if heartbeats:
        s.setsockopt(zmq.HEARTBEAT_IVL, int(ivl * 1000))
        s.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(timeout * 1000))
        # TTL tells the remote side to drop us too if our pings stop: one
        # interval plus the timeout (a TTL at the interval itself flaps the
        # link on every late ping).
        s.setsockopt(zmq.HEARTBEAT_TTL, int((ivl + timeout) * 1000))
    s.setsockopt(zmq.RECONNECT_IVL, timing.RECONNECT_IVL_MS)
    s.setsockopt(zmq.RECONNECT_IVL_MAX, timing.RECONNECT_IVL_MAX_MS)
    s.setsockopt(zmq.CONNECT_TIMEOUT, timing.CONNECT_TIMEOUT_MS)
    s.setsockopt(zmq.HANDSHAKE_IVL, timing.HANDSHAKE_IVL_MS)


#: A connection is usable only once the ZMTP handshake succeeded: a stopped
#: (SIGSTOP) process's kernel still accepts TCP, so CONNECTED proves nothing.
_UP = zmq.EVENT_HANDSHAKE_SUCCEEDED
_DOWN = (
    zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
LIVENESS_EVENTS = _UP | _DOWN


def liveness(ev: dict[str, Any]) -> tuple[str, bool] | None:
    """(endpoint, up) for a monitor event that says a connection came up or
    went down; None for the others (retries, delays, closes)."""
    kind = ev["event"]
    if not kind & LIVENESS_EVENTS:
        return None
    raw = ev["endpoint"]
    endpoint = raw.decode() if isinstance(raw, bytes) else str(raw)
    return endpoint, bool(kind & _UP)


def read_discovery(
    sock: zmq.Socket[Any],
    budget: int,
    schemes: frozenset[str],
    on_bad: Callable[[str, str], None],
) -> Iterator[wire.Message]:
    """Decode up to *budget* waiting discovery frames without blocking. Anything
    that does not decode is reported to *on_bad* (reason, detail) and skipped."""
    for msg, _ in read_discovery_keyed(sock, budget, schemes, on_bad, keyed=False):
        yield msg


def read_discovery_keyed(
    sock: zmq.Socket[Any],
    budget: int,
    schemes: frozenset[str],
    on_bad: Callable[[str, str], None],
    keyed: bool = True,
) -> Iterator[tuple[wire.Message, str | None]]:
    """:func:`read_discovery`, each frame with the CURVE public key (Z85) of
    the connection it came on: the ZAP ``User-Id`` (None without ZAP)."""
    for _ in range(budget):
        try:
            frames = sock.recv_multipart(zmq.NOBLOCK, copy=not keyed)
        except zmq.Again:
            return
        if len(frames) != 1:
            on_bad("multipart", f"{len(frames)}-part discovery message")
            continue
        frame = frames[0]
        key: str | None = None
        if isinstance(frame, zmq.Frame):
            try:
                user = frame.get("User-Id")
            except zmq.ZMQError:
                user = None
            key = user if isinstance(user, str) and user else None
            frame = frame.bytes
        try:
            yield wire.decode(frame, schemes), key
        except WireError as exc:
            on_bad(exc.reason, str(exc))


def recv_monitor_event(sock: zmq.Socket[Any], flags: int = 0) -> dict[str, Any]:
    """One socket-monitor event: ``{"event", "value", "endpoint"}``. pyzmq's
    ``zmq.utils.monitor`` does the same but imports asyncio (~40 ms of start-up
    for every command); the format is libzmq's: a 6-byte frame (uint16 event,
    uint32 value, native order) and the endpoint."""
    frames = sock.recv_multipart(flags)
    if len(frames) != 2 or len(frames[0]) != 6:
        return {"event": 0, "value": 0, "endpoint": b""}  # never from libzmq; no event bit: ignored
    event, value = struct.unpack("=HI", frames[0])
    return {"event": event, "value": value, "endpoint": frames[1]}


def kick(sock: zmq.Socket[Any]) -> None:
    """Make *sock* process its command queue (frees departed connections)."""
    sock.getsockopt(zmq.EVENTS)
