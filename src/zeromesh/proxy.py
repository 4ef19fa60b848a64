"""The discovery proxy: XSUB on an ephemeral port, XPUB on the well-known address.

As in the seed, the XPUB's welcome message (``XPUB_WELCOME_MSG``) is a ``W``
frame whose endpoint is the XSUB's real endpoint, so peers learn where to
publish. Two modes:

* ``directory`` (default): a Python loop that forwards frame by frame, drops
  malformed frames (protecting C peers from garbage too), keeps a
  :class:`~zeromesh.directory.Directory` and re-arms the welcome with it.
* ``classic``: the seed's proxy, byte for byte (no decoding, no stamps, C
  peers see exactly what was sent), but a filtering loop instead of libzmq's
  ``zmq_proxy``: a ``W`` frame arriving on the XSUB is dropped (with
  ``zmq_proxy`` it reached every peer, which moved its proxy PUB to the
  attacker's endpoint), and so is any subscription but the protocol's.

Both modes bound what a remote party can make them hold (see
:mod:`zeromesh.transport`): frames on the XSUB are at most
:data:`~zeromesh.transport.MAX_DISCOVERY_FRAME`, the XPUB applies only the
empty subscription and is rebuilt if junk subscriptions pile up.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid as uuidlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import zmq

from . import ext, timing, transport, wire
from .directory import Directory
from .endpoints import DEFAULT_SCHEMES, advertised, validate_bind, validate_host
from .errors import ConfigError, WireError
from .logs import RateLimitedLog
from .security import Gate, Security
from .transport import (
    LIVENESS_EVENTS,
    last_endpoint,
    liveness,
    read_discovery_keyed,
    recv_monitor_event,
    set_transport_options,
)

log = logging.getLogger(__name__)

ProxyMode = Literal["directory", "classic"]


@dataclass(frozen=True)
class ProxyStats:
    """A snapshot of a proxy's counters (:meth:`Proxy.stats`)."""

    uuid: str
    mode: str
    #: Entries in the directory (0 in classic mode: it keeps none).
    members: int
    joins: int
    #: Directory leaves by reason (left, expired, replaced, evicted).
    leaves: dict[str, int]
    #: Frames dropped before forwarding, by reason (malformed, foreign welcome...).
    rejected: dict[str, int]
    #: Metadata pairs dropped from announcements (wrong type, over the bound).
    bad_meta: int
    forwarded: int
    subscriptions: int
    #: Classic D frames published for peers the probe found dead.
    obituaries: int = 0


def _check_arguments(
    bind: object, xsub_bind: object, advertise: object, mode: object, heartbeats: object, security: object
) -> None:
    for name, value in (("bind", bind), ("xsub_bind", xsub_bind)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, not {type(value).__name__}")
        validate_bind(value)
    if advertise is not None:
        if not isinstance(advertise, str):
            raise TypeError(f"advertise must be a str, not {type(advertise).__name__}")
        validate_host(advertise)
    if mode not in ("directory", "classic"):
        raise ConfigError(f"mode must be 'directory' or 'classic', not {mode!r}")
    if not isinstance(heartbeats, bool):
        raise TypeError(f"heartbeats must be a bool, not {type(heartbeats).__name__}")
    if security is not None and not isinstance(security, Security):
        raise TypeError(f"security must be a Security, not {type(security).__name__}")


class Proxy:
    """A proxy on a thread of its own: :meth:`start`, then :meth:`stop`
    (idempotent, bounded), or use it as a context manager."""

    def __init__(
        self,
        bind: str = "tcp://127.0.0.1:0",
        *,
        xsub_bind: str = "tcp://127.0.0.1:0",
        advertise: str | None = None,
        mode: ProxyMode = "directory",
        uuid: str | None = None,
        heartbeats: bool = True,
        schemes: frozenset[str] = DEFAULT_SCHEMES,
        security: Security | None = None,
    ) -> None:
        """Bind both sockets (raises what binding raises); :meth:`start` runs
        the loop. Arguments are checked first (``TypeError``/``ValueError``
        naming the argument)."""
        _check_arguments(bind, xsub_bind, advertise, mode, heartbeats, security)
        self.mode = mode
        self.security = security
        self.gate: Gate | None = None
        self.uuid = wire.validate_uuid(uuid) if uuid else str(uuidlib.uuid4())
        self.schemes = schemes
        self.heartbeats = heartbeats
        self.bad: Counter[str] = Counter()
        self.forwarded = 0
        #: Classic D frames published for peers the probe found dead.
        self.obituaries = 0
        #: Subscriptions applied (the protocol's empty topic) on the XPUB.
        self.subscriptions = 0
        #: Subscribers of the empty topic now, by our count: the XSUB is
        #: subscribed upstream while this is positive.
        self._subscribers = 0
        #: Times the XPUB was rebuilt to free junk subscriptions.
        self.rebuilds = 0
        self.filter = transport.SubscriptionFilter()
        #: New members forwarded per second (directory mode): see timing.NEW_MEMBER_RATE.
        self._newcomers = transport.TokenBucket(timing.NEW_MEMBER_RATE, timing.NEW_MEMBER_BURST)
        self.directory = Directory(self.uuid)
        self._bad_log = RateLimitedLog(log, timing.BAD_FRAME_LOG_INTERVAL)
        self._stop = threading.Event()
        #: Wakes the loop's poll on a stop request (the loop sleeps up to PROXY_IDLE_TURN).
        self._wake_r, self._wake_w = transport.wake_pair()
        self._done = threading.Event()
        #: Set when the loop died of an exception (see :meth:`wait_done`).
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.ctx: zmq.Context[Any] = zmq.Context()
        try:
            # Before any bind. Always a ZAP handler when secured: its User-Id on
            # each frame is the key that binds a uuid (directory mode).
            self.gate = security.gate(self.ctx, always=mode == "directory") if security else None
            self.xsub = self._socket(zmq.XSUB)
            self.xsub.bind(xsub_bind)
            self.xsub_endpoint = advertised(last_endpoint(self.xsub), advertise)
            self.xpub = self._make_xpub()
            self.xpub.bind(bind)
            self._xpub_bound = last_endpoint(self.xpub)
            self.endpoint = advertised(self._xpub_bound, advertise)
            self.probe = self._socket(zmq.SUB)  # liveness of listed peers; no subscriptions
            # It never subscribes, so nothing but ZMTP commands should arrive.
            # It receives only the welcome of each peer's data PUB (the proof of
            # its uuid): a larger frame would drop the probe's connection.
            transport.limit(self.probe, max(transport.subscriber_max_msg(security is not None), ext.MAX_PROOF))
            self.probe_monitor: zmq.Socket[Any] = self.probe.get_monitor_socket(LIVENESS_EVENTS)
            self.probe_monitor.setsockopt(zmq.LINGER, 0)
            self._probed: set[str] = set()
            self._probe_version = -1
            #: The probe's connections: one per resolved address, none to our own sockets.
            probe = self.probe
            self.conns = transport.ConnectionTable(self._probe_call(probe.connect), self._probe_call(probe.disconnect))
            for ep in {self.endpoint, self._xpub_bound}:
                self.conns.forbid(ep, "proxy-endpoint")
            for ep in {self.xsub_endpoint, last_endpoint(self.xsub)}:
                self.conns.forbid(ep, "proxy-endpoint")
        except BaseException:
            if self.gate is not None:
                self.gate.stop()
            self.ctx.destroy(linger=0)
            self._wake_r.close()
            self._wake_w.close()
            raise

    def _socket(self, kind: int) -> zmq.Socket[Any]:
        s: zmq.Socket[Any] = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)  # at creation, before bind/connect
        if kind == zmq.SUB:  # the probe: it detects dead members (obituaries)
            set_transport_options(s, self.heartbeats)
        else:
            # The peers' proxy SUBs ping us (and their TTL drops them here); we
            # only bound how long a vanished peer's pipe lives.
            ivl = timing.SLOW_HEARTBEAT_IVL
            set_transport_options(s, self.heartbeats, ivl, 2 * ivl)
        if self.security is not None:  # CURVE role: the XSUB and XPUB bind, the probe connects
            sec = self.security
            (sec.apply_server if kind in (zmq.XSUB, zmq.XPUB) else sec.apply_client)(s)
        if kind == zmq.XSUB:
            transport.limit(s, transport.MAX_DISCOVERY_FRAME)
        return s

    def _make_xpub(self) -> zmq.Socket[Any]:
        """The XPUB, welcome armed, not yet bound: manual subscriptions (only
        the empty topic is applied, see :meth:`_read_subscriptions`)."""
        s = self._socket(zmq.XPUB)
        transport.make_manual(s, self.security is not None)
        self._welcome_version = -1
        self.xpub = s
        self._arm_welcome()
        return s

    def _arm_welcome(self) -> None:
        if self._welcome_version == self.directory.version:
            return
        wall = time.time() - time.monotonic()  # the directory's clock is monotonic
        ext = self.directory.welcome_ext(wall) if self.mode == "directory" else {}
        frame = wire.encode(wire.Message(wire.Command.WELCOME, self.uuid, self.xsub_endpoint, ext))
        if len(frame) > transport.MAX_WELCOME:
            # Peers' proxy SUBs refuse a larger frame (and libzmq never redials
            # after that). Without a directory a newcomer falls back to the
            # classic rule: every peer re-announces to it. Slower, never wrong.
            self.bad["welcome-without-directory"] += 1
            frame = wire.encode(wire.Message(wire.Command.WELCOME, self.uuid, self.xsub_endpoint))
        self.xpub.setsockopt(zmq.XPUB_WELCOME_MSG, frame)
        self._welcome_version = self.directory.version

    # --- lifecycle ----------------------------------------------------------

    def start(self) -> Proxy:
        if self._thread is not None:
            raise RuntimeError("proxy already started")
        self._thread = threading.Thread(target=self._run, name="zeromesh-proxy", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        log.info("proxy %s: XPUB %s, XSUB %s (%s mode)", self.uuid, self.endpoint, self.xsub_endpoint, self.mode)
        try:
            self._loop()
        except BaseException as exc:
            # Supervisor invariant: a dead loop is never left half-alive
            # (no welcome, nobody can join); it is logged and reported to
            # whoever waits on :meth:`wait_done` (the CLI then exits 1).
            self.error = exc
            log.exception("proxy %s: loop failed; closing", self.uuid)
        finally:
            self._close_sockets()
            self._done.set()

    def stats(self) -> ProxyStats:
        """A thread-safe snapshot of the counters (each read is atomic under
        the GIL; dict(Counter) copies in C)."""
        d = self.directory
        return ProxyStats(
            uuid=self.uuid,
            mode=self.mode,
            members=len(d.entries),
            joins=d.joins,
            leaves=dict(d.leaves),
            rejected=dict(self.bad) | dict(d.dropped),
            bad_meta=d.bad_meta,
            forwarded=self.forwarded,
            subscriptions=self.subscriptions,
            obituaries=self.obituaries,
        )

    def request_stop(self) -> None:
        """Ask the loop to stop and close; returns at once (see :meth:`wait_done`).
        Safe in a signal handler: it sets a flag and writes one byte."""
        self._stop.set()
        try:
            self._wake_w.send(b"\0")
        except OSError:  # full (a stop is pending anyway) or closed
            pass

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop and close; idempotent and bounded. True if the loop ended in time."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        self._close_sockets()
        return True

    close = stop

    def wait_done(self, timeout: float | None = None) -> bool:
        """True once the loop has ended (stopped, or failed: see :attr:`error`)."""
        return self._done.wait(timeout)

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _close_sockets(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.probe.disable_monitor()
        self._wake_r.close()
        self._wake_w.close()
        if self.gate is not None:
            self.gate.stop()  # its thread owns a socket: stopped before destroy closes it
        # Every socket had linger 0 from creation, so this term cannot hang.
        self.ctx.destroy(linger=0)

    # --- the loop -------------------------------------------------------------

    def _loop(self) -> None:
        self._poller = poller = zmq.Poller()
        poller.register(self.xsub, zmq.POLLIN)
        poller.register(self.xpub, zmq.POLLIN)
        poller.register(self.probe_monitor, zmq.POLLIN)
        # Never readable (no subscriptions), but polling makes the probe process
        # its commands: a disconnect completes only then. Unpolled, it kept
        # dialling every expired peer's endpoint forever (problem 1's cause).
        poller.register(self.probe, zmq.POLLIN)
        d = self.directory
        turned = time.monotonic()
        poller.register(self._wake_r, zmq.POLLIN)
        while not self._stop.is_set():
            now = time.monotonic()
            deadline = d.next_deadline()
            cap = timing.PROXY_IDLE_TURN
            timeout = cap if deadline is None else min(cap, max(0.0, deadline - now))
            ready = dict(poller.poll(int(timeout * 1000)))
            now = time.monotonic()
            # A starved proxy does not blame its members for the time it was not looking.
            d.on_stall(now - turned - timeout - timing.LOOP_LAG_ALLOWANCE)
            turned = now
            if self.xpub in ready:
                self._read_subscriptions()
            if self.xsub in ready:
                if self.mode == "classic":
                    self._forward_raw()
                else:
                    self._forward_frames(now)
            if self.probe_monitor in ready:
                self._read_probe(now)
            self._publish(d.expire_due(now))  # obituaries
            self._log_changes()
            self._sync_probe()
            self._arm_welcome()

    def _log_changes(self) -> None:
        for c in self.directory.drain_changes():
            if c.kind == "join":
                log.info("proxy: join %s %s", c.uuid, c.endpoint)
            else:
                log.info("proxy: leave %s %s (%s)", c.uuid, c.endpoint, c.reason)

    def _read_subscriptions(self) -> None:
        """Apply the empty topic, refuse the rest, and pass one subscription
        upstream (the XSUB keeps it for every peer that connects) while anyone
        subscribes: junk never reaches the peers' proxy PUBs."""
        for subscribe in self.filter.read(self.xpub):
            if subscribe:
                self.subscriptions += 1
                self._subscribers += 1
                if self._subscribers == 1:
                    self.xsub.send(b"\x01")
            elif self._subscribers > 0:
                self._subscribers -= 1
                if self._subscribers == 0:
                    self.xsub.send(b"\x00")
        if self.filter.over_cap:
            self._rebuild_xpub()

    def _rebuild_xpub(self) -> None:
        """Close the XPUB and bind a new one at the same address: the only way
        to free the subscriptions libzmq stored for a flooding subscriber.
        Honest subscribers reconnect (a reconnect interval), get a welcome and
        re-announce; their data connections are not touched."""
        self.rebuilds += 1
        self.bad["junk-subscriptions"] += self.filter.junk
        self._bad_log.warning("proxy: %d junk subscriptions stored; rebuilding the XPUB", self.filter.junk)
        self._poller.unregister(self.xpub)
        self.xpub.close(linger=0)
        self.filter.reset()
        if self._subscribers:
            self._subscribers = 0
            self.xsub.send(b"\x00")
        xpub = self._make_xpub()
        deadline = time.monotonic() + timing.REBIND_TIMEOUT
        while True:
            try:
                xpub.bind(self._xpub_bound)
                break
            except zmq.ZMQError as exc:
                # The old listener is closed by libzmq's I/O thread, shortly.
                if exc.errno != zmq.EADDRINUSE or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)  # sleep: polling for the old listener's close (bounded above)
        self._poller.register(xpub, zmq.POLLIN)

    def _forward_raw(self) -> None:
        """Classic mode: every message as it came, except a ``W`` (only the
        proxy welcomes) and what is too large (refused by ``MAXMSGSIZE``)."""
        for _ in range(1000):
            try:
                frames = self.xsub.recv_multipart(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return
            if frames[0][:1] == b"W":
                self._bad("foreign-welcome", "W frame on the XSUB side")
                continue
            if frames[0][:1] == b"C" and len(frames) == 1:
                try:
                    if self._own_endpoint(wire.decode(frames[0], self.schemes)):
                        continue
                except WireError:
                    pass  # forwarded as it came: classic peers drop it themselves
            try:
                self.xpub.send_multipart(frames, zmq.NOBLOCK)
                self.forwarded += 1
            except zmq.Again:
                self.bad["forward-again"] += 1

    def _forward_frames(self, now: float) -> None:
        keyed = self.security is not None
        for msg, key in read_discovery_keyed(self.xsub, 1000, self.schemes, self._bad, keyed):
            try:
                if self._own_endpoint(msg):
                    continue
                if (
                    msg.command is wire.Command.CONNECT
                    and msg.uuid not in self.directory.entries
                    and not self._newcomers.take(now)
                ):
                    self._bad("rate-limited", f"C from new member {msg.uuid}: over {timing.NEW_MEMBER_RATE:g}/s")
                    continue
                out = self.directory.on_frame(msg, now, key)
                if not out and msg.command is wire.Command.WELCOME:
                    self._bad("foreign-welcome", f"W frame from {msg.uuid} on the XSUB side")
                self._publish(out)
            except Exception:  # a frame that trips a bug is dropped, never the loop
                self._failed("frame-handler")

    def _own_endpoint(self, msg: wire.Message) -> bool:
        """A ``C`` announcing one of this proxy's own sockets is dropped: every
        data SUB would connect to the XPUB and receive the discovery stream."""
        reason = self.conns.refusal(msg.endpoint) if msg.command is wire.Command.CONNECT else None
        if reason is not None:
            self._bad(reason, f"C from {msg.uuid} announces this proxy's own socket {msg.endpoint}")
        return reason is not None

    def _publish(self, msgs: list[wire.Message]) -> None:
        """Send what the directory forwards, and its obituaries, on the XPUB."""
        for m in msgs:
            try:
                self.xpub.send(wire.encode(m), zmq.NOBLOCK)
            except zmq.Again:
                self.bad["forward-again"] += 1
                continue
            if m.command is wire.Command.DISCONNECT and m.ext.get(ext.OBITUARY):
                self.obituaries += 1
            else:
                self.forwarded += 1

    def _read_probe(self, now: float) -> None:
        for _ in range(1000):  # bounded: a flood of events must not starve the loop
            try:
                ev = recv_monitor_event(self.probe_monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                change = liveness(dict(ev))
                if change is None:
                    continue
                for endpoint in self.conns.on_event(*change):
                    if change[1]:
                        self.directory.on_up(endpoint)
                    else:
                        self.directory.on_down(endpoint, now)
            except Exception:
                self._failed("monitor-event")

    def _failed(self, what: str) -> None:
        """Handling one item raised: count it, log the first traceback of each kind."""
        self.bad[what] += 1
        if self.bad[what] == 1:
            log.exception("proxy: %s failed (dropped; later failures are counted, not logged)", what)

    def _sync_probe(self) -> None:
        if self._probe_version == self.directory.version:
            return
        self._probe_version = self.directory.version
        want = self.directory.endpoints()
        for ep in want - self._probed:
            # A refused endpoint (an alias past the cap) is never probed, so it
            # stays down and expires from the directory after the grace.
            if self.conns.add(ep) == "up":  # another spelling of a live connection
                self.directory.on_up(ep)
        for ep in self._probed - want:
            self.conns.remove(ep)
        self._probed = want

    def _probe_call(self, fn: Callable[[str], object]) -> Callable[[str], None]:
        def call(endpoint: str) -> None:
            try:
                fn(endpoint)
            except zmq.ZMQError as exc:
                self.bad["probe-connect"] += 1
                log.debug("probe %s: %s", endpoint, exc)

        return call

    def _bad(self, reason: str, detail: str) -> None:
        self.bad[reason] += 1
        self._bad_log.warning("proxy dropped a bad frame: %s", detail)
