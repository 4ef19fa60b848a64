"""The peer: a discovery-mesh member an application embeds.

A :class:`Peer` owns a context, four sockets (see :mod:`zeromesh.sockets`) and
one loop thread that carries out what :class:`~zeromesh.protocol.PeerProtocol`
decides. Applications talk to it from any thread: :meth:`Peer.publish`,
:meth:`Peer.peers`, :meth:`Peer.next_event`, :meth:`Peer.recv`.

Data messages are three frames: ``[topic, sender uuid, payload]``. Frames of
another shape (a C peer's empty dummy message, say) are dropped and counted.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
import uuid as uuidlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import zmq

from . import ext, metadata, timing, transport, wire
from .endpoints import validate_bind, validate_endpoint, validate_host
from .errors import ConfigError
from .logs import RateLimitedLog
from .options import MAX_SECONDS, SeedBehaviour, Tuning, check_number, layer_settings
from .protocol import (
    Action,
    Behaviour,
    ConnectData,
    ConnectProxy,
    DisconnectData,
    DisconnectProxy,
    EventKind,
    Exit,
    Notify,
    PeerEvent,
    PeerProtocol,
    Phase,
    Probe,
    Send,
)
from .security import Security
from .sockets import DEFAULT_DATA_HWM, PeerSockets, SocketPolicy
from .transport import NOBLOCK, liveness, read_discovery

log = logging.getLogger(__name__)

EventCallback = Callable[[PeerEvent], None]


class DataMessage(NamedTuple):
    """One data message. A named tuple, not a frozen dataclass: it is built
    once per message received, and a frozen dataclass's __init__ costs ~1 us."""

    topic: bytes
    sender: str
    payload: bytes


MessageCallback = Callable[[DataMessage], None]
_T = TypeVar("_T")


@dataclass(frozen=True)
class Member:
    """One peer as this peer knows it (:meth:`Peer.members`)."""

    endpoint: str
    #: Its metadata (empty for C peers).
    meta: Mapping[str, str]
    #: Unix time it joined this peer's view.
    since: float


@dataclass(frozen=True)
class PeerStats:
    """A snapshot of one peer's counters (:meth:`Peer.stats`)."""

    uuid: str
    endpoint: str | None
    phase: str
    #: Peers known now, this one not counted.
    peers: int
    joins: int
    leaves: int
    expired: int
    replaced: int
    #: Discovery frames handled and sent.
    frames: int
    frames_sent: int
    #: Valid frames the protocol ignored, by reason (stale, own uuid ...).
    ignored: dict[str, int]
    #: Input dropped before the protocol (malformed frames, foreign data,
    #: failed callbacks), by reason.
    rejected: dict[str, int]
    published: int
    received: int
    #: Messages and events dropped because their queue was full.
    dropped_messages: int
    dropped_events: int
    #: Times the connection to the proxy came back after a ``proxy_down``.
    proxy_reconnects: int
    #: Is the connection to a proxy (any of several) up (None: not connected yet)?
    proxy_up: bool | None
    #: Per proxy (its XPUB endpoint): is the connection up (None: not yet)?
    proxies_up: dict[str, bool | None] = field(default_factory=dict)
    #: Data connections to other peers' PUBs (all of them in a full mesh; with
    #: ``subscribes``, only to the publishers of those topics).
    data_connections: int = 0
    #: Members this peer watches (heartbeated probes: docs/liveness.md), and
    #: how many of those probes are up.
    watched: int = 0
    watched_up: int = 0


def _arg(name: str, value: _T | None, kind: type[_T]) -> _T | None:
    """*value* if it is None or a *kind*; else a TypeError naming the argument."""
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"{name} must be a {kind.__name__}, not {type(value).__name__}")
    return value


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    return value


class Peer:
    """One member of a zeromesh discovery mesh.

    >>> with Peer("tcp://127.0.0.1:5555") as p:   # doctest: +SKIP
    ...     p.wait_ready(1.0)
    ...     p.publish(b"topic", b"hello")
    """

    def __init__(
        self,
        proxy: str | Sequence[str],
        *,
        bind: str = "tcp://127.0.0.1:0",
        advertise: str | None = None,
        uuid: str | None = None,
        lifetime: float | None = None,
        on_event: EventCallback | None = None,
        on_message: MessageCallback | None = None,
        max_queued: int = 10_000,
        data_hwm: int = DEFAULT_DATA_HWM,
        security: Security | None = None,
        tuning: Tuning | None = None,
        seed: SeedBehaviour | None = None,
        layers: tuple[Behaviour, SocketPolicy] | None = None,
        meta: Mapping[str, str] | None = None,
        receive_own: bool = False,
        max_message_size: int = transport.DEFAULT_MAX_MESSAGE_SIZE,
        publishes: Sequence[bytes] | None = None,
        subscribes: Sequence[bytes] | None = None,
    ) -> None:
        """Check every argument (``TypeError``/:class:`~zeromesh.errors.ConfigError`
        naming it); nothing starts until :meth:`start`.

        :param proxy: the proxy's well-known XPUB endpoint (``tcp://`` or
            ``ipc://``), or a list of several proxies' (no single proxy: the
            peer announces through all and stays in the mesh while any one
            is up; see docs/scaling.md "Several proxies").
        :param bind: where the data PUB binds (port 0: ephemeral).
        :param advertise: host to announce instead of the bound one (needed
            with a wildcard bind, e.g. ``tcp://0.0.0.0:0``).
        :param uuid: this peer's 36-character text UUID (default: random).
        :param lifetime: seconds until the peer leaves on its own (None: never).
        :param on_event: called on the loop thread for each :class:`PeerEvent`
            (otherwise they queue for :meth:`next_event`); exceptions are
            logged once, counted in :attr:`bad` and never end the loop.
        :param on_message: called on the loop thread for each
            :class:`DataMessage` (otherwise they queue for :meth:`recv`).
        :param max_queued: bound on queued messages and events (>= 1); past it
            new ones are dropped and counted.
        :param data_hwm: high-water mark of the data connections, in messages
            per connection (the data PUB's ``SNDHWM``, the data SUB's
            ``RCVHWM``; 0: unbounded). A subscriber that falls this far behind
            loses what is published meanwhile: a PUB drops, it never blocks.
            libzmq does not count those drops; what this peer drops itself
            (a full ``max_queued``) is counted in :meth:`stats`.
        :param security: CURVE keys and allow-list (:class:`~zeromesh.security.Security`).
        :param tuning: production knobs (:class:`~zeromesh.options.Tuning`).
        :param seed: the seed's behaviours to switch back on, to reproduce its
            problems (:class:`~zeromesh.options.SeedBehaviour`).
        :param layers: the protocol's and socket layer's settings themselves,
            for experiments and tests; overrides *tuning* and *seed*.
        :param meta: a few ``str -> str`` pairs announced with this peer
            (bound: :mod:`zeromesh.metadata`), seen by every peer in its
            ``join`` event and :meth:`members`, and by ``zeromesh members``.
        :param receive_own: also receive this peer's own published messages
            (off by default: its data SUB does not connect to its own PUB).
        :param max_message_size: bound in bytes on one data message received;
            a larger one drops the connection to its publisher unread (libzmq's
            ``MAXMSGSIZE``), so an attacker's huge frame costs nothing.
        :param publishes: the topic prefixes this peer publishes (None:
            everything). Announced; :meth:`publish` refuses a topic outside
            them (``ConfigError``). At most ``ext.MAX_TOPICS`` prefixes of
            ``ext.MAX_TOPIC_BYTES`` bytes each.
        :param subscribes: the topic prefixes this peer receives (None:
            everything). Its data SUB connects only to the peers whose
            ``publishes`` overlap them (interest-scoped connections); every
            member is still listed (:meth:`peers`, events). Same bound.
        """
        if isinstance(proxy, str):
            proxy = [proxy]
        if not isinstance(proxy, Sequence) or not proxy:
            raise TypeError(f"proxy must be a str or a non-empty list of str, not {proxy!r}")
        #: Every proxy's XPUB endpoint, in the order given, once each.
        self.proxies: tuple[str, ...] = tuple(dict.fromkeys(validate_endpoint(_text("proxy", p)) for p in proxy))
        #: The first proxy (the only one, usually).
        self.proxy = self.proxies[0]
        self.bind = validate_bind(_text("bind", bind))
        self.advertise = None if advertise is None else validate_host(_text("advertise", advertise))
        self.uuid = wire.validate_uuid(_text("uuid", uuid)) if uuid is not None else str(uuidlib.uuid4())
        if lifetime is not None:
            check_number("lifetime", lifetime, maximum=MAX_SECONDS)
        for name, cb in (("on_event", on_event), ("on_message", on_message)):
            if cb is not None and not callable(cb):
                raise TypeError(f"{name} must be callable, not {type(cb).__name__}")
        check_number("max_queued", max_queued, minimum=1, integer=True)
        check_number("data_hwm", data_hwm, integer=True, maximum=2**31 - 1)
        self.data_hwm = data_hwm
        check_number("max_message_size", max_message_size, minimum=1, maximum=2**31 - 1, integer=True)
        self.max_message_size = max_message_size
        if security is not None and not isinstance(security, Security):
            raise TypeError(f"security must be a Security, not {type(security).__name__}")
        self.tuning = _arg("tuning", tuning, Tuning) or Tuning()
        self.seed = _arg("seed", seed, SeedBehaviour) or SeedBehaviour()
        self.behaviour, self.policy = layers or layer_settings(self.tuning, self.seed)
        self.meta = metadata.validate(meta, "meta")
        self.publishes = ext.validate_topics(publishes, "publishes")
        self.subscribes = ext.validate_topics(subscribes, "subscribes")
        if not isinstance(receive_own, bool):
            raise TypeError(f"receive_own must be a bool, not {type(receive_own).__name__}")
        self.receive_own = receive_own
        self._uuid_bytes = self.uuid.encode("ascii")
        self.lifetime = lifetime
        self.schemes = self.tuning.schemes
        self.sleep_before_term = self.seed.sleep_at_exit
        self.security = security
        self._on_event = on_event
        self._on_message = on_message
        self._events: queue.Queue[PeerEvent] = queue.Queue(max_queued)
        self._messages: queue.Queue[DataMessage] = queue.Queue(max_queued)
        #: Payload bytes waiting in _messages (bounded by transport.MAX_QUEUED_BYTES).
        self._queued_bytes = 0
        self._queued_lock = threading.Lock()
        self._lock = threading.Lock()
        #: Notified (under _lock) whenever the peer table changes: wait_for_peers().
        self._changed = threading.Condition(self._lock)
        self._snapshot: dict[str, str] = {}
        #: The protocol's table version last published to the snapshot.
        self._published_version = -1
        self._members: dict[str, tuple[str, Mapping[str, str], float]] = {}
        #: The connection to each proxy's XPUB: None until first up, then up/down.
        self._proxies_up: dict[str, bool | None] = dict.fromkeys(self.proxies)
        #: Times the connection to the proxy came back after it was lost.
        self.proxy_reconnects = 0
        self._ready = threading.Event()
        self._started = threading.Event()
        self._done = threading.Event()
        self._leave_requested = False
        self._start_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._sockets: PeerSockets | None = None
        self._wake_r, self._wake_w = transport.wake_pair()
        self.endpoint: str | None = None
        self.exit_reason: str | None = None
        #: Problems seen on the wire, by reason; never fatal.
        self.bad: Counter[str] = Counter()
        self.dropped_messages = 0
        self.dropped_events = 0
        self.received = 0
        self.published = 0
        self.protocol: PeerProtocol | None = None
        #: The data SUB's connections: one per resolved address (set up in _run).
        self._conns: transport.ConnectionTable | None = None
        self._probe_conns: transport.ConnectionTable | None = None
        self._bad_log = RateLimitedLog(log, timing.BAD_FRAME_LOG_INTERVAL)

    # --- lifecycle ----------------------------------------------------------

    def start(self, timeout: float = 5.0) -> Peer:
        """Bind, connect and start the loop thread. Raises what binding raised
        (a bad endpoint, a port in use) in the caller's thread."""
        if self._thread is not None:
            raise RuntimeError("peer already started")
        self._thread = threading.Thread(target=self._run, name=f"zeromesh-peer-{self.uuid[:8]}", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("peer did not bind in time")
        if self._start_error is not None:
            self._thread.join(timeout)
            self._close_wake()
            raise self._start_error
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        """True once this peer has heard its own ``C`` (it is in the mesh)."""
        return self._ready.wait(timeout)

    def leave(self) -> None:
        """Start leaving (send ``D``); returns at once. See :meth:`stop`."""
        with self._lock:
            self._leave_requested = True
        self._wake()

    def stop(self, timeout: float = timing.LEAVE_TIMEOUT + 3.0) -> bool:
        """Leave, wait for the loop to close everything, and return True if it
        did within *timeout*. Idempotent. False means the context is stuck in
        ``term`` (only possible with a seed-reproducing socket policy)."""
        if self._thread is None:
            self._close_wake()
            return True
        self.leave()
        self._thread.join(timeout)
        finished = not self._thread.is_alive()
        if finished:
            self._close_wake()
        return finished

    close = stop

    def __enter__(self) -> Peer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def done(self) -> bool:
        """True once the loop has ended and the context is terminated."""
        return self._done.is_set()

    def wait_done(self, timeout: float | None = None) -> bool:
        """Wait for :attr:`done`; False if *timeout* passed first."""
        return self._done.wait(timeout)

    # --- application API ---------------------------------------------------

    def peers(self) -> dict[str, str]:
        """uuid -> endpoint of every peer known now (this one included once ready)."""
        with self._lock:
            return dict(self._snapshot)

    def wait_for_peers(self, n: int, timeout: float | None = None) -> bool:
        """Wait until this peer knows at least *n* other peers; False if
        *timeout* passed first (or the peer ended). An event, not a poll."""
        check_number("n", n, integer=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while len(self._snapshot.keys() - {self.uuid}) < n:
                left = None if deadline is None else deadline - time.monotonic()
                if (left is not None and left <= 0) or self._done.is_set():
                    return False
                # Bounded waits so that the end of the loop is noticed too.
                self._changed.wait(0.1 if left is None else min(left, 0.1))
            return True

    def stats(self) -> PeerStats:
        """A consistent, thread-safe snapshot of this peer's counters."""
        proto = self.protocol
        c = proto.counters if proto is not None else None
        with self._lock:
            known = len(self._snapshot.keys() - {self.uuid})
        watched = proto.watched() if proto is not None else {}
        return PeerStats(
            uuid=self.uuid,
            endpoint=self.endpoint,
            phase=proto.phase.value if proto is not None else "not started",
            peers=known,
            joins=c.joins if c else 0,
            leaves=c.leaves if c else 0,
            expired=c.expired if c else 0,
            replaced=c.replaced if c else 0,
            frames=c.frames if c else 0,
            frames_sent=c.sent if c else 0,
            ignored=dict(c.ignored) if c else {},
            rejected=dict(self.bad),  # dict(Counter) copies in C, atomically under the GIL
            published=self.published,
            received=self.received,
            dropped_messages=self.dropped_messages,
            dropped_events=self.dropped_events,
            proxy_reconnects=self.proxy_reconnects,
            proxy_up=self._proxy_up,
            proxies_up=dict(self._proxies_up),
            data_connections=proto.data_connections() if proto is not None else 0,
            watched=len(watched),
            watched_up=sum(watched.values()),
        )

    @property
    def _proxy_up(self) -> bool | None:
        """Up while any proxy is; None until one has been."""
        states = list(self._proxies_up.values())
        return None if all(v is None for v in states) else any(states)

    def members(self) -> dict[str, Member]:
        """uuid -> :class:`Member` (endpoint, metadata, since) of every peer
        known now, this one included once ready."""
        with self._lock:
            members = dict(self._members)
        wall = time.time() - time.monotonic()  # the protocol's clock is monotonic
        return {u: Member(ep, meta, since + wall) for u, (ep, meta, since) in members.items()}

    def next_event(self, timeout: float | None = None) -> PeerEvent | None:
        """The next event (when no ``on_event`` callback was given), or None
        after *timeout*. The queue holds at most ``max_queued`` events; the
        newest are dropped past that (counted in :meth:`stats`)."""
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    def publish(self, topic: bytes, payload: bytes) -> None:
        """Send to every peer subscribed to *topic*'s prefix (all, by default).
        Thread-safe; never blocks (PUB drops for slow subscribers at the HWM).
        With ``publishes``, a topic outside those prefixes is a ``ConfigError``
        (its subscribers are not connected to this peer: it would be lost)."""
        if self._sockets is None:
            raise RuntimeError("peer not started")
        if self.publishes is not None and not ext.covers(self.publishes, topic):
            raise ConfigError(f"topic {topic[:32]!r} is outside publishes={list(self.publishes)!r}")
        self._sockets.publish(topic, self._uuid_bytes, payload)
        self.published += 1

    def recv(self, timeout: float | None = None) -> DataMessage | None:
        """The next data message (when no ``on_message`` callback was given)."""
        try:
            msg = self._messages.get(timeout=timeout)
        except queue.Empty:
            return None
        with self._queued_lock:
            self._queued_bytes -= len(msg.payload)
        return msg

    # --- the loop -------------------------------------------------------------

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass  # already woken, or closed

    def _close_wake(self) -> None:
        self._wake_r.close()
        self._wake_w.close()

    def _run(self) -> None:
        try:
            sockets = PeerSockets(
                self.policy,
                self.bind,
                self.advertise,
                self.proxies,
                monitor_data=self.behaviour.expire,
                security=self.security,
                data_hwm=self.data_hwm,
                monitor_proxy=True,
                max_message_size=self.max_message_size,
                publishes=self.publishes,
                subscribes=self.subscribes,
            )
        except BaseException as exc:  # reported to start()'s caller
            self._start_error = exc
            self._started.set()
            self._done.set()
            return
        self._sockets = sockets
        self.endpoint = sockets.endpoint
        self._conns = self._connection_table(sockets, sockets.data_sub, "data", forbid_own=not self.receive_own)
        self._probe_conns = (
            None if sockets.probe_sub is None else self._connection_table(sockets, sockets.probe_sub, "probe")
        )
        proto = PeerProtocol(
            self.uuid,
            sockets.endpoint,
            self.behaviour,
            self.meta,
            publishes=self.publishes,
            subscribes=self.subscribes,
        )
        proto.watch_subscription = self.policy.watch_subscription
        try:
            sockets.prove(self.uuid, proto.incarnation)
        except BaseException as exc:  # reported to start()'s caller
            sockets.close(term=True)
            self._start_error = exc
            self._started.set()
            self._done.set()
            return
        proto.proves = sockets.proves
        self.protocol = proto
        self._started.set()
        try:
            self._loop(sockets, proto)
        except Exception:
            log.exception("peer %s loop failed; closing", self.uuid)
            self.exit_reason = "error"
        finally:
            sockets.close(term=False)
            if self.sleep_before_term > 0:  # the seed's -sleep-at-exit
                time.sleep(self.sleep_before_term)
            sockets.ctx.term()
            self._emit(PeerEvent("exit", self.uuid, sockets.endpoint, time.time(), self.exit_reason))
            self._done.set()

    def _loop(self, s: PeerSockets, proto: PeerProtocol) -> None:
        b = self.behaviour
        poller = zmq.Poller()
        for sub in s.proxy_subs:
            poller.register(sub, zmq.POLLIN)
        poller.register(s.data_sub, zmq.POLLIN)
        if self.policy.kick:  # no_kick: the seed's plain PUB, never polled (sockets._data_pub)
            poller.register(s.data_pub, zmq.POLLIN)  # subscriptions (XPUB_MANUAL)
        for m in s.monitors:
            poller.register(m, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        if self.policy.watch_subscription:
            poller.register(s.proxy_pub, zmq.POLLIN)
        if s.probe_sub is not None:
            # Nothing is subscribed there, but polling makes it process its
            # commands (a dropped probe's pipe is freed, as the kick does).
            poller.register(s.probe_sub, zmq.POLLIN)
        start = time.monotonic()
        end = start + self.lifetime if self.lifetime is not None else None
        if self._apply(proto.start(start), s, proto):
            return
        turned = start
        while True:
            now = time.monotonic()
            if b.announce_every_turn:
                timeout = timing.CLASSIC_TURN
            else:
                deadlines = [d for d in (proto.next_deadline(), end) if d is not None]
                timeout = max(0.0, min(deadlines) - now) if deadlines else 1.0
                if self.policy.kick:
                    timeout = min(timeout, timing.KICK_INTERVAL)
            ready = dict(poller.poll(int(timeout * 1000) if timeout > 0 else 0))
            if self.policy.kick:
                s.kick_pub()
            now = time.monotonic()
            # A turn much later than asked for: this process was starved, and
            # that time must not count against the peers it watches.
            proto.on_stall(now - turned - timeout - timing.LOOP_LAG_ALLOWANCE, now)
            turned = now
            actions: list[Action] = []
            if self._wake_r in ready:
                self._drain_wake()
            with self._lock:
                leave_now = self._leave_requested
            if (leave_now or (end is not None and now >= end)) and proto.phase not in (Phase.LEAVING, Phase.DONE):
                actions += proto.leave(now)
            if s.proxy_pub in ready:
                for subscribed in s.proxy_subscriptions():
                    actions += proto.on_proxy_subscription(subscribed, now)
                self._rebuild_proxy_pub(s, proto, poller)
            for sub, via in s.proxy_subs.items():
                if sub in ready:
                    actions += self._read_discovery(sub, via, proto, now)
            if s.data_sub in ready:
                for uuid, endpoint in self._read_data(s):
                    actions += proto.on_proof(uuid, endpoint, now)
            if s.data_pub in ready:
                self._read_subscriptions(s, poller)
            if s.probe_sub is not None and s.probe_sub in ready:
                self._drain_probe(s.probe_sub)
            for m in s.monitors:
                if m in ready:
                    actions += self._read_monitor(s, m, proto, now)
            actions += proto.tick(now)
            if self._apply(actions, s, proto):
                return

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _read_discovery(self, sub: zmq.Socket[Any], via: str, proto: PeerProtocol, now: float) -> list[Action]:
        actions: list[Action] = []
        # The classic loop reads one frame per turn (and so sends one C per frame).
        budget = 1 if self.behaviour.announce_every_turn else 1000
        # With one proxy the protocol's key for it is "" (as for any one proxy).
        key = via if len(self.proxies) > 1 else ""
        for msg in read_discovery(sub, budget, self.schemes, self._bad):
            try:
                actions += proto.on_frame(msg, now, key)
            except Exception:  # a frame that trips a bug is dropped, never the loop
                self._failed("frame-handler")
        return actions

    def _read_data(self, s: PeerSockets) -> list[tuple[str, str]]:
        """Deliver waiting data messages; return the identity proofs (uuid,
        endpoint) that data PUBs sent as their welcome."""
        proofs: list[tuple[str, str]] = []
        # The data hot path: a bound method and int flags (see transport.NOBLOCK).
        # Frames (copy=False) say whether more follow: getsockopt(RCVMORE)
        # converts its option to an enum on every call (24% of a 3-frame read).
        recv = s.data_sub.recv
        got = 0
        try:
            for _ in range(1000):
                try:
                    frame = recv(NOBLOCK, copy=False)
                except zmq.Again:
                    return proofs
                frames = [frame.bytes]
                while frame.more:
                    frame = recv(NOBLOCK, copy=False)
                    frames.append(frame.bytes)
                if len(frames) != 3:
                    proof = ext.decode_proof(frames[0]) if len(frames) == 1 else None
                    if proof is not None:
                        proofs.append(proof)
                    else:
                        self.bad["foreign-data"] += 1  # e.g. a C peer's empty dummy message
                    continue
                try:
                    msg = DataMessage(frames[0], frames[1].decode("ascii"), frames[2])
                except UnicodeDecodeError:
                    self.bad["foreign-data"] += 1
                    continue
                got += 1
                if self._on_message is not None:
                    try:
                        self._on_message(msg)
                    except Exception:
                        self._failed("on_message-callback")
                else:
                    size = len(msg.payload)
                    with self._queued_lock:
                        room = self._queued_bytes + size <= transport.MAX_QUEUED_BYTES
                        if room:
                            self._queued_bytes += size
                    if not room:
                        self.dropped_messages += 1
                        continue
                    try:
                        self._messages.put_nowait(msg)
                    except queue.Full:
                        self.dropped_messages += 1
                        with self._queued_lock:
                            self._queued_bytes -= size
        finally:
            self.received += got  # once per batch: the counter costs nothing per message
        return proofs

    def _rebuild_proxy_pub(self, s: PeerSockets, proto: PeerProtocol, poller: zmq.Poller) -> None:
        try:
            old = s.rebuild_flooded_proxy_pub()
            if old is None:
                return
            self.bad["junk-subscriptions"] += 1
            poller.unregister(old)
            poller.register(s.proxy_pub, zmq.POLLIN)
            for ep in proto.proxy_endpoints():  # the XSUBs subscribe again: nothing is resent
                self._zmq_call("connect-proxy", s.proxy_pub.connect, ep)
        except Exception:
            self._failed("proxy-subscriptions")

    def _read_subscriptions(self, s: PeerSockets, poller: zmq.Poller) -> None:
        try:
            old = s.read_data_subscriptions()
        except Exception:
            self._failed("data-subscriptions")
            return
        if old is not None:
            self.bad["junk-subscriptions"] += 1
            poller.unregister(old)
            poller.register(s.data_pub, zmq.POLLIN)

    def _drain_probe(self, probe: zmq.Socket[Any]) -> None:
        """Discard what a probe receives (a data PUB's proof welcome slips
        past SUB filtering on some versions): bounded, never blocking."""
        for _ in range(100):
            try:
                probe.recv(NOBLOCK)
            except zmq.Again:
                return

    def _connection_table(
        self, s: PeerSockets, sub: zmq.Socket[Any], what: str, forbid_own: bool = True
    ) -> transport.ConnectionTable:
        """The connections of *sub* (the data SUB, or the probe SUB: *what*)."""
        conns = transport.ConnectionTable(
            lambda ep: self._zmq_call(f"connect-{what}", sub.connect, ep),
            lambda ep: self._zmq_call(f"disconnect-{what}", sub.disconnect, ep),
        )
        # A SUB connected to the proxy's XPUB received the whole discovery
        # stream; to our own PUB (another uuid, another spelling), our own data.
        for proxy in self.proxies:
            conns.forbid(proxy, "proxy-endpoint")
        if forbid_own:
            conns.forbid(s.endpoint, "own-endpoint")
        return conns

    def _read_monitor(self, s: PeerSockets, m: zmq.Socket[Any], proto: PeerProtocol, now: float) -> list[Action]:
        actions: list[Action] = []
        for _ in range(1000):  # bounded: a flood of events must not starve the loop
            try:
                ev = s.read_monitor(m)
                if ev is None:
                    break
                via = s.proxy_monitors.get(m)
                if via is not None and m is not s.data_monitor:
                    actions += self._proxy_health(ev, via, proto, now)
                if m is s.probe_monitor and self._probe_conns is not None and (change := liveness(ev)) is not None:
                    for endpoint in self._probe_conns.on_event(*change):
                        if change[1]:
                            proto.on_probe_connected(endpoint, now)
                        else:
                            proto.on_probe_disconnected(endpoint, now)
                    continue
                if m is not s.data_monitor or (change := liveness(ev)) is None:
                    continue
                assert self._conns is not None
                for endpoint in self._conns.on_event(*change):
                    if change[1]:
                        actions += proto.on_data_connected(endpoint, now)
                    else:
                        proto.on_data_disconnected(endpoint, now)
            except Exception:
                self._failed("monitor-event")
        return actions

    def _proxy_health(self, ev: dict[str, Any], via: str, proto: PeerProtocol, now: float) -> list[Action]:
        """``proxy_down``/``proxy_up`` as the connection to the proxy's XPUB at
        *via* goes down (a reset, or ZMTP heartbeats unanswered) and comes back;
        the event's endpoint says which proxy, its uuid is that proxy's. The
        first connection is not an event (a peer starts before it is ready)."""
        change = liveness(ev)
        if change is None or change[1] == self._proxies_up.get(via):
            return []
        any_before = self._proxy_up
        was, self._proxies_up[via] = self._proxies_up.get(via), change[1]
        key = via if len(self.proxies) > 1 else ""
        if not change[1]:
            proto.on_proxy_lost(key)
        actions: list[Action] = []
        if self._proxy_up != any_before:
            # Cut off from every proxy, nobody confirms a suspicion: the protocol declares at once.
            actions = proto.on_proxy_health(bool(self._proxy_up), now)
        if was is None:
            return actions
        if change[1]:
            self.proxy_reconnects += 1
        kind: EventKind = "proxy_up" if change[1] else "proxy_down"
        log.info("peer %s: %s (%s)", self.uuid[:8], kind, via)
        known = proto.proxies.get(key)
        self._emit(PeerEvent(kind, known[0] if known else "", via, time.time()))
        return actions

    def _failed(self, what: str) -> None:
        """Something raised while handling one item (a frame, an event, a user
        callback): count it, log the first traceback of each kind, go on."""
        self.bad[what] += 1
        if self.bad[what] == 1:
            log.exception("peer %s: %s failed (dropped; later failures are counted, not logged)", self.uuid[:8], what)

    def _bad(self, reason: str, detail: str) -> None:
        self.bad[reason] += 1
        self._bad_log.warning("peer %s dropped a bad discovery frame: %s", self.uuid[:8], detail)

    def _apply(self, actions: list[Action], s: PeerSockets, proto: PeerProtocol) -> bool:
        """Carry out *actions*; True when the loop must end."""
        for a in actions:
            try:
                if self._apply_one(a, s):
                    return True
            except Exception:
                self._failed("action")
        if proto.version == self._published_version:
            # The table did not change: nothing to publish (the data hot path
            # turns the loop for every batch of messages).
            return False
        self._published_version = proto.version
        snapshot, members = proto.snapshot(), proto.members()
        with self._changed:
            self._snapshot, self._members = snapshot, members
            self._changed.notify_all()
        return False

    def _apply_one(self, a: Action, s: PeerSockets) -> bool:
        """Carry out one action; True when the loop must end."""
        if isinstance(a, Send):
            try:
                s.proxy_pub.send(wire.encode(a.msg), zmq.NOBLOCK)
            except zmq.Again:
                self.bad["send-again"] += 1
        elif isinstance(a, (ConnectData, DisconnectData)) and a.endpoint == s.endpoint and not self.receive_own:
            # Not connected to our own PUB: we do not receive what we publish,
            # and the PUB sends one copy less (cheaper than dropping on receipt).
            if isinstance(a, DisconnectData):
                s.after_disconnect(a.own)
        elif isinstance(a, ConnectData):
            assert self._conns is not None and self.protocol is not None
            result = self._conns.add(a.endpoint)
            if result == "up":  # another spelling of a connection that is up
                self.protocol.on_data_connected(a.endpoint, time.monotonic())
            elif result not in ("dialled", "shared"):
                # Never dialled: the entry never comes up, and expires.
                self.bad[f"refused-{result}"] += 1
                self._bad_log.warning("peer %s: not connecting to %s (%s)", self.uuid[:8], a.endpoint, result)
        elif isinstance(a, DisconnectData):
            assert self._conns is not None
            self._conns.remove(a.endpoint, a.times)
            s.after_disconnect(a.own)
        elif isinstance(a, Probe):
            if self._probe_conns is None:
                return False
            if not a.on:
                self._probe_conns.remove(a.endpoint)
            elif self._probe_conns.add(a.endpoint) == "up" and self.protocol is not None:
                self.protocol.on_probe_connected(a.endpoint, time.monotonic())
        elif isinstance(a, ConnectProxy):
            assert self._conns is not None
            self._conns.forbid(a.endpoint, "proxy-endpoint")
            self._zmq_call("connect-proxy", s.proxy_pub.connect, a.endpoint)
        elif isinstance(a, DisconnectProxy):
            self._zmq_call("disconnect-proxy", s.proxy_pub.disconnect, a.endpoint)
        elif isinstance(a, Notify):
            self._emit(a.event)
        elif isinstance(a, Exit):
            self.exit_reason = a.reason
            return True
        return False

    def _zmq_call(self, what: str, fn: Callable[[str], object], endpoint: str) -> None:
        try:
            fn(endpoint)
        except zmq.ZMQError as exc:
            # A disconnect of an endpoint already gone (duplicate disconnect,
            # say) or a connect to something libzmq rejects: count, go on.
            self.bad[f"{what}-{exc.errno}"] += 1
            log.debug("%s %s failed: %s", what, endpoint, exc)

    def _emit(self, ev: PeerEvent) -> None:
        ev = dataclasses.replace(ev, t=time.time())
        if ev.kind == "ready":
            self._ready.set()
        if self._on_event is None:
            # Queued for next_event() only without a callback: whoever takes
            # events by callback never reads the queue, which then grew by two
            # events per peer that came and went (~1 KB per departure, found
            # by the soak on the CLI's long-lived peer). Bounded: remote
            # joins and leaves must not grow memory when nobody reads.
            try:
                self._events.put_nowait(ev)
            except queue.Full:
                self.dropped_events += 1
        else:
            try:
                self._on_event(ev)
            except Exception:
                self._failed("on_event-callback")
