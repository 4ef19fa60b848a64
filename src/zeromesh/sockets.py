"""Socket lifecycle: how zeromesh creates, tends and closes libzmq sockets.

This is where the seed's three problems live, and so where each of its
behaviours can be switched back on to reproduce them (:class:`SocketPolicy`):

* **memory growth**: a socket frees a departed connection's pipe, session and
  buffers only when *it* processes its command queue (send, recv, poll,
  ``getsockopt(EVENTS)``...). A bound PUB that never sends keeps them all.
  zeromesh kicks the data PUB on every loop turn and at least every
  :data:`~zeromesh.timing.KICK_INTERVAL` (``kick=True``).
* **the ctx_term hang**: a socket that tears down a connection hands down the
  linger value in force *at that moment*; listeners and sessions copy options
  at bind/connect time. Linger set just before close (the seed's default,
  ``LingerWhen.BEFORE_CLOSE``) or even right after bind does not reach them, and
  a message queued for a vanished peer then waits forever in ``term``.
  zeromesh sets linger when each socket is created (``LingerWhen.CREATION``).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from . import ext, timing, transport
from .endpoints import advertised
from .security import Gate, Security

log = logging.getLogger(__name__)

#: Default data high-water mark, in messages per connection (libzmq's own
#: default): the data PUB's SNDHWM and the data SUB's RCVHWM. A subscriber
#: that falls this far behind loses what its publisher sends meanwhile
#: (a PUB drops, it never blocks); 0 means no bound (memory is then the bound).
DEFAULT_DATA_HWM = 1000
#: The proxy SUB's queue (frames): far above any burst the protocol makes (a
#: join costs each peer a few frames), as reaching it can abort (see PeerSockets).
PROXY_SUB_HWM = 100_000


class Role(enum.Enum):
    """The four sockets of a peer; the values are the seed's names (its logs)."""

    DATA_PUB = "dataPub"
    DATA_SUB = "dataSub"
    PROXY_PUB = "proxyPub"
    PROXY_SUB = "proxySub"
    #: Not the seed's: zeromesh's heartbeated watch on a few members.
    PROBE = "probeSub"


class LingerWhen(str, enum.Enum):
    CREATION = "creation"  # zeromesh default: before bind/connect
    AFTER_BIND = "after-bind"  # right after bind/connect: still too late
    BEFORE_CLOSE = "before-close"  # the seed's default: too late


@dataclass(frozen=True)
class SocketPolicy:
    """libzmq-level choices of one peer. Defaults are zeromesh's."""

    linger_ms: int = 0
    linger_when: LingerWhen = LingerWhen.CREATION
    #: getsockopt(EVENTS) on the data PUB every loop turn and on a timer.
    kick: bool = True
    #: Seed -poll-after-disconnect: poll the data PUB once after each disconnect.
    poll_after_disconnect: bool = False
    #: getsockopt(EVENTS) once after each disconnect (seed's #1256 attempt).
    events_after_disconnect: bool = False
    #: Seed -send-after-disconnect: send an empty message on the data PUB.
    send_after_disconnect: bool = False
    #: Seed -disable-reconnect: RECONNECT_IVL=-1 on the data SUB.
    disable_reconnect: bool = False
    #: Log every socket event of every socket (seed -monitor-sockets).
    monitor_sockets: bool = False
    #: ZMTP heartbeats on the proxy links and the probes (freeze, host loss
    #: and partition detection).
    heartbeats: bool = True
    #: ... and on every data connection too (``Tuning(watch=None)``): each
    #: link detects its own partition, at O(N^2) idle CPU for the mesh.
    data_heartbeats: bool = False
    #: A probe SUB for the members the protocol watches (:class:`~zeromesh.protocol.Probe`).
    probes: bool = True
    #: Proxy PUB as an XPUB (verbose): the peer sees the proxy subscribe, sends
    #: its C then, and needs no fast retries (the seed's PUB drops its first C).
    watch_subscription: bool = True
    #: The data PUB's welcome proves our uuid to every subscriber
    #: (docs/membership.md). Needs the XPUB data PUB (``kick``). Off by
    #: default: the welcome is inbound data on every heartbeated probe, and
    #: libzmq 4.3 aborts ("!_io_error") when a heartbeat fires on a connection
    #: whose inbound message was refused (a probe dropped while its welcome
    #: is in flight): seen twice in a 500-peer run at load 270, never in 10
    #: runs of 100 (docs/membership.md).
    prove_identity: bool = False

    @classmethod
    def classic(cls) -> SocketPolicy:
        return cls(
            linger_when=LingerWhen.BEFORE_CLOSE,
            kick=False,
            heartbeats=False,
            probes=False,
            watch_subscription=False,
            prove_identity=False,
        )


def data_subscriptions(subscribes: ext.Topics) -> list[bytes]:
    """What the data SUB subscribes to: everything, or the prefixes the peer
    subscribes to plus a data PUB's proof (its welcome; the SUB filters what
    it receives too, and would drop the proof)."""
    return [b""] if subscribes is None else [*subscribes, ext.PROOF_MAGIC]


class PeerSockets:
    """The four sockets of a peer, on a context of their own.

    Thread use: everything here belongs to the peer's loop thread, except the
    data PUB, which :meth:`publish` may use from any thread under
    :attr:`pub_lock` (the loop's kicks take the same lock).
    """

    def __init__(
        self,
        policy: SocketPolicy,
        bind: str,
        advertise: str | None,
        proxy: str | Sequence[str],
        monitor_data: bool,
        security: Security | None = None,
        data_hwm: int = DEFAULT_DATA_HWM,
        monitor_proxy: bool = False,
        max_message_size: int = transport.DEFAULT_MAX_MESSAGE_SIZE,
        publishes: ext.Topics = None,
        subscribes: ext.Topics = None,
    ) -> None:
        self.policy = policy
        self.data_hwm = data_hwm
        self.security = security
        self.max_message_size = max_message_size
        #: The data PUB's subscriptions (it is an XPUB_MANUAL: see zeromesh.transport):
        #: everything, the proof's prefix, and the application topics within what we publish.
        self.data_filter = transport.SubscriptionFilter(
            transport.ALLOWED_TOPICS | {ext.PROOF_MAGIC}, topics=lambda t: ext.overlaps(publishes, (t,))
        )
        #: The data PUB's welcome (see :meth:`prove`), once armed.
        self._proof: bytes | None = None
        self.proxy_filter = transport.SubscriptionFilter()
        #: Times the data PUB was rebuilt to free junk subscriptions.
        self.rebuilds = 0
        self.gate: Gate | None = None
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.pub_lock = threading.Lock()
        self._closed = False
        #: monitor PAIR socket -> (monitored socket, its role)
        self.monitors: dict[zmq.Socket[Any], tuple[zmq.Socket[Any], Role]] = {}
        self.data_monitor: zmq.Socket[Any] | None = None
        #: Liveness of the connection to the proxy's XPUB (proxy_down/proxy_up):
        #: the first proxy's monitor; :attr:`proxy_monitors` has every proxy's.
        self.proxy_monitor: zmq.Socket[Any] | None = None
        #: One proxy SUB per proxy, so that a welcome says which proxy sent it:
        #: SUB -> the proxy's XPUB endpoint (one SUB on two XPUBs cannot tell).
        self.proxy_subs: dict[zmq.Socket[Any], str] = {}
        #: proxy SUB monitor -> the proxy's XPUB endpoint.
        self.proxy_monitors: dict[zmq.Socket[Any], str] = {}
        #: The probe SUB (heartbeated connections to watched members' data
        #: PUBs, subscribed to nothing: they carry pings only) and its monitor.
        self.probe_sub: zmq.Socket[Any] | None = None
        self.probe_monitor: zmq.Socket[Any] | None = None
        proxies = [proxy] if isinstance(proxy, str) else list(proxy)
        try:
            # The allow-list's ZAP handler, up before the data PUB binds.
            self.gate = security.gate(self.ctx) if security else None
            self.data_pub = self._data_pub()
            self.data_pub.bind(bind)
            self._after_bind(self.data_pub)
            self._data_bound = transport.last_endpoint(self.data_pub)
            self.endpoint = advertised(self._data_bound, advertise)
            self.proxy_pub = self._socket(zmq.XPUB if policy.watch_subscription else zmq.PUB, Role.PROXY_PUB)
            if policy.watch_subscription:
                # Every subscribe is passed up (manual mode passes them all), so
                # a new XSUB connection is seen even while the old one is still
                # attached; only the protocol's empty topic is applied.
                transport.make_manual(self.proxy_pub, security is not None)
            for via in proxies:
                sub = self._socket(zmq.SUB, Role.PROXY_SUB)
                self.proxy_subs[sub] = via
                # Only the chosen proxy sends here; its largest frame is a welcome.
                transport.limit(sub, transport.MAX_WELCOME)
                # A full inbound pipe plus ZMTP heartbeats aborts the process in
                # libzmq 4.3 (stream_engine_base.cpp "!_io_error": zeromq/libzmq
                # #4364, #4767): a starved peer's proxy SUB hit the default 1000
                # frames while 100 peers joined, and 1-3 of 4 host processes died.
                sub.setsockopt(zmq.RCVHWM, PROXY_SUB_HWM)
                # Subscribe before connecting, or the welcome is lost.
                sub.setsockopt(zmq.SUBSCRIBE, b"")
                if monitor_proxy:  # before connecting, or its first handshake is missed
                    self.proxy_monitors[self._monitor(sub, Role.PROXY_SUB)] = via
                sub.connect(via)
                self._after_bind(sub)
            self.proxy_sub = next(iter(self.proxy_subs))
            self.proxy_monitor = next(iter(self.proxy_monitors), None)
            self.data_sub = self._socket(zmq.SUB, Role.DATA_SUB)
            # Anyone may announce a PUB: bound what one message can cost.
            # Never below a proof (a data PUB's welcome): it would drop every connection.
            transport.limit(self.data_sub, max(max_message_size, ext.MAX_PROOF))
            if policy.disable_reconnect:
                self.data_sub.setsockopt(zmq.RECONNECT_IVL, -1)
            for topic in data_subscriptions(subscribes):
                self.data_sub.setsockopt(zmq.SUBSCRIBE, topic)
            self._after_bind(self.data_sub)
            self._after_bind(self.proxy_pub)
            if monitor_data:
                self.data_monitor = self._monitor(self.data_sub, Role.DATA_SUB)
                if policy.probes and policy.heartbeats:
                    self.probe_sub = self._socket(zmq.SUB, Role.PROBE)
                    # Nothing is subscribed, so nothing but a proof-sized welcome may arrive.
                    transport.limit(self.probe_sub, ext.MAX_PROOF)
                    self.probe_sub.setsockopt(zmq.RCVHWM, 16)
                    self.probe_monitor = self._monitor(self.probe_sub, Role.PROBE)

        except BaseException:
            self.close(term=True)
            raise

    # --- creation -------------------------------------------------------------

    def _socket(self, kind: int, role: Role) -> zmq.Socket[Any]:
        p = self.policy
        s: zmq.Socket[Any] = self.ctx.socket(kind)
        if p.linger_when is LingerWhen.CREATION:
            s.setsockopt(zmq.LINGER, p.linger_ms)
        if role is Role.DATA_PUB:
            ivl = timing.SLOW_HEARTBEAT_IVL
            transport.set_transport_options(s, p.heartbeats, ivl, 2 * ivl)
            s.setsockopt(zmq.SNDHWM, self.data_hwm)
        elif role is Role.DATA_SUB:
            transport.set_transport_options(s, p.heartbeats and p.data_heartbeats)
        elif role is Role.PROBE:
            transport.set_transport_options(s, p.heartbeats, timing.WATCH_HEARTBEAT_IVL)
        elif role is Role.PROXY_PUB:
            # The proxy SUB detects a lost proxy; this link only needs its pipe bounded.
            ivl = timing.SLOW_HEARTBEAT_IVL
            transport.set_transport_options(s, p.heartbeats, ivl, 2 * ivl)
        else:
            transport.set_transport_options(s, p.heartbeats)
        if role is Role.DATA_SUB:
            s.setsockopt(zmq.RCVHWM, self.data_hwm)
        if self.security is not None:  # CURVE role: only the data PUB binds
            (self.security.apply_server if role is Role.DATA_PUB else self.security.apply_client)(s)
        if p.monitor_sockets:
            self._monitor(s, role)
        return s

    def _data_pub(self) -> zmq.Socket[Any]:
        """The data PUB, not yet bound: an XPUB_MANUAL (PUB semantics for
        sending) so that a subscriber cannot make it store junk topics."""
        if not self.policy.kick:
            # The seed's data PUB (no_kick): a plain PUB that the loop never
            # polls, so only a send processes its commands and a departed
            # subscriber's pipe stays allocated: the growth, on purpose.
            return self._socket(zmq.PUB, Role.DATA_PUB)
        s = self._socket(zmq.XPUB, Role.DATA_PUB)
        transport.make_manual(s, self.security is not None)
        if self._proof is not None:  # a rebuilt PUB proves us too
            s.setsockopt(zmq.XPUB_WELCOME_MSG, self._proof)
        return s

    @property
    def proves(self) -> bool:
        """Our data PUB's welcome proves our uuid (see :meth:`prove`)."""
        return self._proof is not None

    def prove(self, uuid: str, incarnation: int = 0) -> None:
        """Arm the data PUB's welcome: every subscriber that connects from now
        on first receives the proof that this endpoint is *uuid* (a one-frame
        message; C peers read and drop it). Call before announcing: no
        subscriber can have connected yet. A plain PUB (no_kick) cannot."""
        if not (self.policy.prove_identity and self.policy.kick):
            return
        with self.pub_lock:
            self._proof = ext.encode_proof(uuid, self.endpoint, incarnation)
            self.data_pub.setsockopt(zmq.XPUB_WELCOME_MSG, self._proof)

    def _after_bind(self, s: zmq.Socket[Any]) -> None:
        if self.policy.linger_when is LingerWhen.AFTER_BIND:
            s.setsockopt(zmq.LINGER, self.policy.linger_ms)

    def _monitor(self, s: zmq.Socket[Any], role: Role) -> zmq.Socket[Any]:
        for existing, (owner, _) in self.monitors.items():
            if owner is s:
                return existing
        # Only the liveness events unless logging all: a full mesh's connects
        # otherwise cost the loop ~3 monitor messages each (the data SUB's).
        m: zmq.Socket[Any] = s.get_monitor_socket(None if self.policy.monitor_sockets else transport.LIVENESS_EVENTS)
        m.setsockopt(zmq.LINGER, 0)
        self.monitors[m] = (s, role)
        return m

    # --- the data PUB -------------------------------------------------------

    def kick_pub(self) -> None:
        with self.pub_lock:
            if not self._closed:
                transport.kick(self.data_pub)
                # The proxy PUB too (loop thread only, like this call): a stale
                # XSUB connection dropped after a re-welcome is torn down only
                # when it processes its commands, and a ready peer sends nothing.
                transport.kick(self.proxy_pub)

    def proxy_subscriptions(self) -> list[bool]:
        """Drain the proxy XPUB's (un)subscribe messages: True = subscribed.
        Junk topics are not applied (only the seed's C proxy forwards any)."""
        return self.proxy_filter.read(self.proxy_pub)

    def rebuild_flooded_proxy_pub(self) -> zmq.Socket[Any] | None:
        """Past the junk cap (behind a seed C proxy, whose ``zmq_proxy``
        forwards every subscription), replace the proxy PUB by a new one, not
        yet connected: returns the old one (closed), else None."""
        if not self.proxy_filter.over_cap:
            return None
        log.warning("%d junk subscriptions on the proxy PUB; rebuilding it", self.proxy_filter.junk)
        old = self.proxy_pub
        old.close(linger=0)
        self.proxy_filter.reset()
        self.proxy_pub = self._socket(zmq.XPUB, Role.PROXY_PUB)
        transport.make_manual(self.proxy_pub, self.security is not None)
        self._after_bind(self.proxy_pub)
        return old

    def read_data_subscriptions(self) -> zmq.Socket[Any] | None:
        """Apply the data PUB's pending subscriptions (see
        :class:`~zeromesh.transport.SubscriptionFilter`). Returns the old
        socket when junk passed the cap and the PUB was rebuilt at the same
        address (the caller re-registers the new one), else None."""
        with self.pub_lock:
            if self._closed:
                return None
            self.data_filter.read(self.data_pub)
            if not self.data_filter.over_cap:
                return None
            old = self.data_pub
            log.warning("%d junk subscriptions on the data PUB; rebuilding it", self.data_filter.junk)
            self.rebuilds += 1
            old.close(linger=0)
            self.data_filter.reset()
            self.data_pub = self._data_pub()
            deadline = time.monotonic() + timing.REBIND_TIMEOUT
            while True:
                try:
                    self.data_pub.bind(self._data_bound)
                    break
                except zmq.ZMQError as exc:
                    # libzmq's I/O thread closes the old listener shortly after close().
                    if exc.errno != zmq.EADDRINUSE or time.monotonic() >= deadline:
                        raise
                    time.sleep(0.01)  # sleep: polling for the old listener's close (bounded above)
            self._after_bind(self.data_pub)
            return old

    def publish(self, topic: bytes, sender: bytes, payload: bytes) -> None:
        """One data message, the three frames in one go (the hot path)."""
        send, more = transport.backend_send, transport.SNDMORE_NOBLOCK
        with self.pub_lock:
            if self._closed:
                raise RuntimeError("peer is closed")
            sock = self.data_pub
            send(sock, topic, more)
            send(sock, sender, more)
            send(sock, payload, transport.NOBLOCK)

    def after_disconnect(self, own: bool) -> None:
        """The seed's after-disconnect workarounds, when switched on."""
        p = self.policy
        with self.pub_lock:
            if p.poll_after_disconnect:
                self.data_pub.poll(1, zmq.POLLIN | zmq.POLLOUT)
            if p.events_after_disconnect:
                transport.kick(self.data_pub)
            if p.send_after_disconnect and not own:
                try:
                    self.data_pub.send(b"", zmq.NOBLOCK)
                except zmq.Again:
                    pass

    # --- monitor events -----------------------------------------------------

    def read_monitor(self, m: zmq.Socket[Any]) -> dict[str, Any] | None:
        try:
            ev = transport.recv_monitor_event(m, transport.NOBLOCK)
        except zmq.Again:
            return None
        if self.policy.monitor_sockets:
            log.info("socket %s: %s %s", self.monitors[m][1].value, ev["event"], ev.get("endpoint"))
        return dict(ev)

    # --- closing ------------------------------------------------------------

    def close(self, term: bool = True) -> None:
        """Close in the seed's order (data PUB, data SUB, proxy PUB, proxy SUB),
        setting linger just before each close when the policy says so, then
        terminate the context. Idempotent. With a late linger this may hang in
        ``term``: that is the seed's bug, reproduced on purpose."""
        with self.pub_lock:
            if self._closed:
                return
            self._closed = True
        monitored = {id(owner) for owner, _ in self.monitors.values()}
        socks: list[zmq.Socket[Any] | None] = [
            getattr(self, n, None) for n in ("data_pub", "data_sub", "proxy_pub", "probe_sub")
        ]
        for s in [*socks, *self.proxy_subs]:
            if s is None or s.closed:
                continue
            if self.policy.linger_when is LingerWhen.BEFORE_CLOSE:
                s.setsockopt(zmq.LINGER, self.policy.linger_ms)
            if id(s) in monitored:
                s.disable_monitor()
            s.close()
        for m in self.monitors:
            m.close(linger=0)
        if self.gate is not None:
            self.gate.stop()  # its ZAP socket would keep term waiting
        if term:
            self.ctx.term()
