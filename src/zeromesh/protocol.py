"""The discovery protocol as a pure state machine: no sockets, no clock, no threads.

:class:`PeerProtocol` is fed what happened (a frame arrived, time passed, a
data connection went up or down, the application wants to leave) with the
current time, and answers with a list of :data:`Action` for the socket layer
to carry out. Everything the seed's peer decides lives here, and so does every
way zeromesh decides differently (see :class:`Behaviour`).

Joining costs O(N) deliveries rather than the seed's O(N^2): a zeromesh proxy
stamps each ``C`` it forwards with the directory sequence number of the
announcing peer (extension ``p``/``s``) and hands newcomers the directory in
its welcome; a newcomer's ``C`` then says which directory it has seen
(extension ``k``), and an existing peer re-announces only when it is not in
that directory. Anything classic (a C proxy, a C peer, a frame without the
extension) falls back to the seed's rule: re-announce to every newcomer.

Membership that a forged frame cannot rewrite (docs/membership.md):

* **incarnations**: every ``C``/``D`` of a zeromesh member carries its
  incarnation (extension ``i``); a claim older than the one known is ignored,
  and a member that hears a ``D`` or a competing ``C`` for its own uuid
  re-asserts itself with a higher incarnation (refutation, as in SWIM).
* **proof**: a zeromesh member is listed only once the data PUB at its endpoint
  has proved it is that uuid (:meth:`PeerProtocol.on_proof`); until then it is
  *pending*. Classic members (no ``i``) keep the seed's trust.
* **tombstones**: a ``D`` is final: a later ``C`` at the same incarnation is
  dropped (the seed's C peer re-sends ``C`` after its own ``D``).
* **suspicion**: an expired peer is *suspect*, not forgotten: its endpoint keeps
  being dialled (libzmq's reconnect pace) until it proves itself again, a ``D``
  or the proxy's obituary ends it, or :data:`~zeromesh.timing.REVIVE_WINDOW`.

Interest-scoped connections (issue 13.4): membership stays full (every member
is listed), but the data connection is made only to members whose published
topic prefixes overlap ours subscribed (:func:`zeromesh.ext.overlaps`; None,
the default, is everything: the full mesh). A member we are not connected to
cannot prove itself nor be watched by our monitor: it is listed on the
proxy's word (the seed's trust), never expires here, and leaves on its ``D``
or the proxy's obituary.

Liveness at O(N) (docs/liveness.md): data connections carry no ZMTP heartbeats
(a full mesh's pings cost O(N^2) CPU). A crash resets every connection at once;
a freeze, a lost host or a partition is seen by the proxy's probe (its obituary
tells everyone) and by each peer's *watchers*: every peer keeps a heartbeated
*probe* connection to the :attr:`Behaviour.watch` next uuids on the ring of
listed members (:class:`Probe`), so each member is watched by that many others.
Cut off from every proxy, a peer probes everyone (nobody else can tell it).
"""

from __future__ import annotations

import bisect
import enum
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from . import ext, metadata, timing
from .ext import Stamp
from .wire import Command, Message

EventKind = Literal["ready", "join", "leave", "exit", "proxy_down", "proxy_up"]
LeaveReason = Literal["left", "expired", "replaced"]


@dataclass(frozen=True)
class PeerEvent:
    """What an application (or a test, or the harness) is told."""

    kind: EventKind
    uuid: str
    endpoint: str
    t: float
    reason: str | None = None
    #: The peer's metadata (join and ready events; empty for C peers).
    meta: Mapping[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"event": self.kind, "uuid": self.uuid, "endpoint": self.endpoint, "t": self.t}
        if self.reason is not None:
            d["reason"] = self.reason
        if self.kind in ("join", "ready"):
            d["meta"] = dict(self.meta)
        return d


# --- actions the socket layer carries out ----------------------------------


@dataclass(frozen=True)
class Send:
    """Send a discovery frame on the proxy PUB."""

    msg: Message


@dataclass(frozen=True)
class ConnectProxy:
    endpoint: str


@dataclass(frozen=True)
class DisconnectProxy:
    endpoint: str


@dataclass(frozen=True)
class ConnectData:
    endpoint: str


@dataclass(frozen=True)
class DisconnectData:
    endpoint: str
    #: True when the departed peer is this peer itself (the seed sends its
    #: dummy message only after *another* peer's disconnect).
    own: bool = False
    #: How many times to call disconnect (the seed's -duplicate-disconnect).
    times: int = 1


@dataclass(frozen=True)
class Probe:
    """Watch *endpoint* with a heartbeated probe connection (``on``), or stop."""

    endpoint: str
    on: bool


@dataclass(frozen=True)
class Notify:
    event: PeerEvent


@dataclass(frozen=True)
class Exit:
    reason: Literal["left", "timeout", "immediate"]


Action = Union[Send, ConnectProxy, DisconnectProxy, ConnectData, DisconnectData, Probe, Notify, Exit]  # noqa: UP007 (py3.10 alias)


#: Members each peer watches (probes with heartbeats): each member is then
#: watched by this many, so one overloaded or cut-off watcher cannot hide a
#: failure, and the mesh sends 3N pings per interval instead of N^2.
WATCHED_PEERS = 3
#: Bound on the watch count (a probe per watched member, each pinging).
MAX_WATCHED = 64
#: Members a peer cut off from every proxy watches (its ring successors):
#: enough for a host's worth of peers, bounded for a mesh of thousands.
CUT_OFF_WATCHED = 16


@dataclass(frozen=True)
class Behaviour:
    """Protocol decisions. The defaults are zeromesh's; :meth:`classic` is the seed's."""

    #: Send ``C`` on every loop turn while unheard (seed) instead of a backoff.
    announce_every_turn: bool = False
    #: Re-announce to every newcomer (seed: O(N^2) per join) instead of only to
    #: newcomers whose directory lacks us.
    always_reannounce: bool = False
    #: Keep re-announcing while leaving (seed): others re-add a peer that said goodbye.
    reannounce_while_leaving: bool = False
    #: Re-announce after every welcome (a new or restarted proxy). The seed only
    #: announces until it first hears itself, so a restarted proxy loses it.
    reannounce_on_welcome: bool = True
    #: Use the directory in a zeromesh proxy's welcome.
    use_directory: bool = True
    #: Leave without waiting for our own ``D`` (seed: -immediate-exit).
    immediate_exit: bool = False
    #: Call disconnect twice (seed: -duplicate-disconnect).
    duplicate_disconnect: bool = False
    #: Expire peers whose data connection stays down (needs a socket monitor).
    expire: bool = True
    expire_grace: float = timing.EXPIRE_GRACE
    #: Members each peer watches with a heartbeated probe (its successors on
    #: the uuid ring). None: no probes, every data connection heartbeats
    #: instead (0.2.0: O(N^2) pings); 0: no watching at all.
    watch: int | None = WATCHED_PEERS
    watch_settle: float = timing.WATCH_SETTLE
    probe_first_up: float = timing.PROBE_FIRST_UP
    #: Carry an incarnation, keep the highest heard, refute false claims about us.
    incarnations: bool = True
    #: List a zeromesh member only once its data PUB proved its uuid.
    require_proof: bool = True
    #: A ``D`` is final: a later ``C`` at the same incarnation is dropped.
    tombstones: bool = True
    proof_timeout: float = timing.PROOF_TIMEOUT
    #: How long an expired peer stays watched (0: forgotten at once, as before).
    revive_window: float = timing.REVIVE_WINDOW
    #: Listed suspicion before an expiry is declared (0: declared at the grace).
    suspect_timeout: float = timing.SUSPECT_TIMEOUT
    tombstone_ttl: float = timing.TOMBSTONE_TTL
    refute_interval: float = timing.REFUTE_INTERVAL
    leave_timeout: float = timing.LEAVE_TIMEOUT
    retry_first: float = timing.ANNOUNCE_RETRY_FIRST
    retry_max: float = timing.ANNOUNCE_RETRY_MAX
    retry_subscribed: float = timing.ANNOUNCE_RETRY_SUBSCRIBED

    @classmethod
    def classic(cls) -> Behaviour:
        return cls(
            announce_every_turn=True,
            always_reannounce=True,
            reannounce_while_leaving=True,
            reannounce_on_welcome=False,
            use_directory=False,
            expire=False,
            watch=0,
            incarnations=False,
            require_proof=False,
            tombstones=False,
        )


#: Bound on :attr:`PeerProtocol._heard_seqs`; past it, a permanent gap is assumed.
MAX_HEARD_SEQS = 1024
#: A resync ``C`` names at most this many missed entries (it stays one small frame).
MAX_MISSING_NAMED = ext.MAX_MISSING
#: Departed uuids remembered (a later ``C`` for them is dropped).
MAX_TOMBSTONES = 4096
#: uuid -> CURVE key bindings remembered (stamped by a secured proxy).
MAX_BINDINGS = 65536


class Phase(enum.Enum):
    WAITING = "waiting"  # no welcome yet
    ANNOUNCING = "announcing"  # sending C until we hear it
    READY = "ready"
    LEAVING = "leaving"  # sending D until we hear it
    DONE = "done"


class State(enum.Enum):
    PENDING = "pending"  # announced, not proven yet: not listed
    LIVE = "live"  # listed
    SUSPECT = "suspect"  # expired: not listed, its endpoint still watched


@dataclass
class _Known:
    endpoint: str
    since: float
    #: None: a classic member (no incarnation; the seed's trust).
    inc: int | None = None
    state: State = State.LIVE
    meta: Mapping[str, str] = field(default_factory=dict)
    #: Its data PUB proves its uuid: listed (again) only on that proof.
    proves: bool = False
    #: The topic prefixes it publishes and subscribes to (None: everything).
    publishes: ext.Topics = None
    subscribes: ext.Topics = None


@dataclass
class Counters:
    frames: int = 0
    sent: int = 0
    joins: int = 0
    leaves: int = 0
    expired: int = 0
    replaced: int = 0
    reannounced: int = 0
    #: Our C re-sent with "r": we found a gap in the directory we heard.
    resyncs: int = 0
    #: We re-asserted ourselves against a D or a competing C for our uuid.
    refuted: int = 0
    #: Suspects that proved themselves alive again (a false expiry healed).
    revived: int = 0
    #: Suspicions cleared before they were declared (the connection came back).
    cleared: int = 0
    #: Claims dropped unproven, suspects given up after the window.
    unproven: int = 0
    abandoned: int = 0
    ignored: Counter[str] = field(default_factory=Counter)


class PeerProtocol:
    """One peer's view of the mesh, and what it must do next."""

    def __init__(
        self,
        uuid: str,
        endpoint: str,
        behaviour: Behaviour | None = None,
        meta: Mapping[str, str] | None = None,
        *,
        publishes: ext.Topics = None,
        subscribes: ext.Topics = None,
    ) -> None:
        self.uuid = uuid
        self.endpoint = endpoint
        self.behaviour = behaviour or Behaviour()
        #: Our own metadata (checked by the caller), sent in every ``C``.
        self.meta: Mapping[str, str] = dict(meta or {})
        #: Our topic prefixes (checked by the caller; None: everything), sent in every ``C``.
        self.publishes = publishes
        self.subscribes = subscribes
        self._topics_ext: dict[str, list[str]] = {
            key: ext.encode_topics(t)
            for key, t in ((ext.PUBLISHES, publishes), (ext.SUBSCRIBES, subscribes))
            if t is not None
        }
        self.phase = Phase.WAITING
        #: Every entry, listed or not (see :class:`State`); :meth:`snapshot` lists the live ones.
        self.peers: dict[str, _Known] = {}
        self.counters = Counters()
        #: The latest welcome's proxy (uuid, XSUB endpoint), of any proxy.
        self.proxy_uuid: str | None = None
        self.proxy_endpoint: str | None = None
        #: Several proxies (docs/scaling.md "Several proxies"): the proxy a
        #: welcome came *via* (the XPUB the socket layer read it on, "" for
        #: one proxy) -> (its uuid, its XSUB endpoint). Our proxy PUB is
        #: connected to every XSUB listed here.
        self.proxies: dict[str, tuple[str, str]] = {}
        #: Proxies that welcomed us and have not echoed our C since: we keep
        #: announcing until each has (or is lost, :meth:`on_proxy_lost`).
        self._unechoed: set[str] = set()
        #: Our stamp per proxy instance (a C echoed by each proxy is stamped by it).
        self._own_stamps: dict[str, Stamp] = {}
        #: The resync check (:meth:`_missed_entries`) ran for :attr:`known_dir`.
        self._resync_checked = False
        #: Our incarnation: raised each time we refute a claim about us.
        self.incarnation = 0
        #: Our own directory position, from the proxy's stamp on our echoed ``C``.
        self.own_stamp: Stamp | None = None
        #: The directory position we were handed in the welcome.
        self.known_dir: Stamp | None = None
        #: Directory positions heard past :attr:`known_dir` (see :meth:`_note_seq`).
        self._heard_seqs: set[int] = set()
        #: Entries per endpoint (a reused port may have several).
        self._refs: Counter[str] = Counter()
        #: Endpoints our data SUB is connected to (ConnectData sent): those of
        #: entries we want data from (:meth:`_wants`), ours included.
        self._connected: set[str] = set()
        self._down_since: dict[str, float] = {}
        #: uuid -> when a pending claim or a suspect is given up.
        self._waiting: dict[str, float] = {}
        #: Listed peers suspected (connection down past the grace) -> when declared expired.
        self._suspected: dict[str, float] = {}
        #: Our connection to the proxy is up (the socket layer reports it): a
        #: suspicion can then be confirmed by its obituary; without it, at once.
        self.proxy_up = True
        #: Cut off from every proxy while not starved: we watch more (see _want_watched).
        self._cut_off = False
        #: When our loop last stalled (on_stall): a lost proxy link then is not a cut.
        self._last_stall = -math.inf
        #: Probed (watched) endpoints -> None while the probe is up, else the
        #: time from which it counts as down (in the future for a new probe,
        #: inf once acted upon).
        self._probes: dict[str, float | None] = {}
        #: Endpoints whose data connection the monitor reported up (and not down since).
        self._data_up: set[str] = set()
        #: Bumped whenever the set of listed members changes: the watch set is
        #: recomputed only then, and at most once per watch_settle.
        self._version = 0
        self._watched_version = -1
        self._watch_due = 0.0
        self._tombs = ext.Tombstones(MAX_TOMBSTONES, self.behaviour.tombstone_ttl)
        #: uuid -> the CURVE key a secured proxy stamped on its first frame.
        self._bindings: dict[str, str] = {}
        #: uuid -> the endpoint it was first listed at (its home): a claim back
        #: there at a newer incarnation always wins (the owner refuting a hijack).
        self._homes: dict[str, str] = {}
        self._next_send: float | None = None
        self._retry = self.behaviour.retry_first
        self._leave_deadline: float | None = None
        self._refute_at: float | None = None
        self._last_refute = -float("inf")
        self._welcomed = False
        #: The proxy's XSUB has subscribed to our proxy PUB (seen only with an
        #: XPUB there): what we send now reaches the proxy.
        self._subscribed = False
        #: The socket layer reports that subscription (:meth:`on_proxy_subscription`):
        #: then an unsubscribed send is not retried fast, the subscription triggers it.
        self.watch_subscription = False
        #: Our data PUB proves our uuid (set by the socket layer): our C says so.
        self.proves = False

    # --- views ----------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.uuid in self.peers

    def snapshot(self) -> dict[str, str]:
        """uuid -> endpoint of every listed (live) peer, this one included once heard."""
        return {u: k.endpoint for u, k in self.peers.items() if k.state is State.LIVE}

    def members(self) -> dict[str, tuple[str, Mapping[str, str], float]]:
        """uuid -> (endpoint, metadata, when it joined our view) of every listed peer."""
        return {u: (k.endpoint, k.meta, k.since) for u, k in self.peers.items() if k.state is State.LIVE}

    def entries(self) -> dict[str, tuple[str, State]]:
        """uuid -> (endpoint, state) of every entry, pending and suspect ones included."""
        return {u: (k.endpoint, k.state) for u, k in self.peers.items()}

    def connected_endpoints(self) -> dict[str, int]:
        """Endpoint -> entries there, of the endpoints our data SUB is connected to."""
        return {ep: n for ep, n in self._refs.items() if ep in self._connected}

    def data_connections(self) -> int:
        """Data connections to other peers (safe to read from another thread)."""
        return len(self._connected) - (self.endpoint in self._connected)

    def wants(self, uuid: str) -> bool:
        """Do we want *uuid*'s data (is it, or would it be, connected)?"""
        k = self.peers.get(uuid)
        return k is not None and self._wants(uuid, k.publishes)

    def pending_connections(self) -> int:
        """Listed peers' data connections not reported up yet, plus claims not
        proven yet (always 0 when expiry, and with it the monitor, is off)."""
        pending = sum(1 for k in self.peers.values() if k.state is State.PENDING)
        return len(self._down_since) + len(self._suspected) + pending

    @property
    def version(self) -> int:
        """Bumped whenever an entry is listed, unlisted or dropped (the peer
        table as :meth:`snapshot` and :meth:`members` show it may have changed)."""
        return self._version

    def watched(self) -> dict[str, bool]:
        """Probed endpoints -> whether their probe is up."""
        return {ep: t is None for ep, t in self._probes.items()}

    def watched_members(self, up: bool = False) -> set[str]:
        """The uuids of the members we watch (only those whose probe is up)."""
        return {
            u
            for u, k in self.peers.items()
            if k.endpoint in self._probes and (not up or self._probes[k.endpoint] is None)
        }

    def tombstoned(self, uuid: str, now: float) -> bool:
        return self._tombs.get(uuid, now) is not None

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do (None: nothing scheduled)."""
        times = [t for t in (self._next_send, self._leave_deadline, self._refute_at) if t is not None]
        if self.behaviour.expire and self._down_since:
            times.append(min(self._down_since.values()) + self.behaviour.expire_grace)
        if self._waiting:
            times.append(min(self._waiting.values()))
        if self._suspected:
            times.append(min(self._suspected.values()))
        if self._watch_pending():
            times.append(self._watch_due)
        if self.behaviour.expire:
            down = [t for t in self._probes.values() if t is not None and t != math.inf]
            if down:
                times.append(min(down) + self.behaviour.expire_grace)
        return min(times) if times else None

    # --- inputs -----------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        """Called once, before the loop. The classic peer sends C from its
        first turn on, welcome or not (the frames are dropped until connected)."""
        if self.behaviour.announce_every_turn:
            self.phase = Phase.ANNOUNCING
        return []

    def on_frame(self, msg: Message, now: float, via: str = "") -> list[Action]:
        """A discovery frame, read from the proxy *via* (its XPUB endpoint; ""
        with one proxy). With several proxies every frame comes once per
        proxy: each handler is idempotent (a duplicate is ignored, counted)."""
        self.counters.frames += 1
        if msg.command is Command.WELCOME:
            return self._on_welcome(msg, now, via)
        if msg.command is Command.CONNECT:
            self._note_seq(msg)
            return self._on_connect(msg, now, via)
        return self._on_disconnect(msg, now)

    def on_proxy_lost(self, via: str) -> None:
        """The connection to the proxy *via* went down: stop waiting for its
        echo (the survivors carry us; its next welcome re-announces us)."""
        self._unechoed.discard(via)
        if self.phase is Phase.READY and not self._unechoed:
            self._next_send = None

    def proxy_endpoints(self) -> list[str]:
        """Every proxy XSUB endpoint our proxy PUB is connected to."""
        return sorted({ep for _, ep in self.proxies.values()})

    def tick(self, now: float) -> list[Action]:
        """Called on every loop turn (the seed's ``while`` body)."""
        out: list[Action] = []
        b = self.behaviour
        if self.phase is Phase.DONE:
            return out
        if self.phase is Phase.LEAVING:
            if self._leave_deadline is not None and now >= self._leave_deadline:
                return self._finish("timeout", now)
            if b.announce_every_turn or (self._next_send is not None and now >= self._next_send):
                out.append(self._send(Command.DISCONNECT, now))
        elif (self.phase is Phase.ANNOUNCING or (self.phase is Phase.READY and self._unechoed)) and (
            # Not "while not self.ready": after a re-welcome we are still in our
            # own table, yet must retry until the new proxy (each of several) echoes our C.
            b.announce_every_turn or (self._next_send is not None and now >= self._next_send)
        ):
            out.append(self._send(Command.CONNECT, now))
        if self._refute_at is not None and now >= self._refute_at:
            out.extend(self._assert(now))
        if b.expire:
            out.extend(self._expire_due(now))
        if self._suspected:
            out.extend(self._declare_due(now))
        if self._waiting:
            out.extend(self._give_up_due(now))
        if self._watch_pending() and now >= self._watch_due:
            out.extend(self._rewatch(now))
        return out

    def on_proxy_health(self, up: bool, now: float) -> list[Action]:
        """Our connection to every proxy went down or came back. Down (and
        not starved ourselves): we are cut off, nobody can confirm a suspicion
        any more, so the suspected are declared now, and we watch more of the
        ring at once (see _want_watched); back, return to the ring."""
        self.proxy_up = up
        self._version += 1
        out: list[Action] = []
        # A starved peer losing its proxy link is most likely its own delay,
        # not a cut (Lifeguard's local health): probing the others then would
        # add load where there is none to spare (a 500-peer mesh on 2 cores
        # melted down that way), and declaring its suspicions would be unfair.
        starved = now - self._last_stall < timing.LOCAL_HEALTH_WINDOW
        self._cut_off = not up and not starved
        if self._cut_off and self.behaviour.watch:
            self._watch_due = now
            # Our probes may be up through the same cut for another ping cycle
            # (IVL + TIMEOUT): dial them afresh, down until their handshake
            # comes. Through a cut it never does, and the grace runs from now;
            # if only the proxy died, they are back in milliseconds.
            for ep in self._probes:
                self._probes[ep] = now
                out += [Probe(ep, False), Probe(ep, True)]
        if not self._cut_off or not self._suspected:
            return out
        return out + self._declare_due(now, everyone=True)

    def on_stall(self, excess: float, now: float | None = None) -> None:
        """The loop turned *excess* seconds later than it asked to (this process
        starved of CPU): that time does not count against the peers it watches
        (Lifeguard's local health), or an overloaded observer expires live peers.
        A stall at *now* also keeps a lost proxy from looking like a cut."""
        if excess > 0:
            if now is not None:
                self._last_stall = now
            for ep in self._down_since:
                self._down_since[ep] += excess
            for ep, t in self._probes.items():
                if t is not None:
                    self._probes[ep] = t + excess

    def on_proxy_subscription(self, subscribed: bool, now: float) -> list[Action]:
        """The proxy's XSUB (un)subscribed to our proxy PUB. Once subscribed,
        what we send is no longer dropped: send the pending C (or D) now."""
        self._subscribed = subscribed
        if not subscribed or self.behaviour.announce_every_turn:
            return []
        if self.phase is Phase.ANNOUNCING or (self.phase is Phase.READY and self._unechoed):
            return [self._send(Command.CONNECT, now)]
        if self.phase is Phase.LEAVING:
            return [self._send(Command.DISCONNECT, now)]
        return []

    def leave(self, now: float) -> list[Action]:
        """The application (or the lifetime) asks to leave."""
        if self.phase in (Phase.LEAVING, Phase.DONE):
            return []
        self.phase = Phase.LEAVING
        self._retry = self.behaviour.retry_first
        self._leave_deadline = now + self.behaviour.leave_timeout
        self._refute_at = None
        out: list[Action] = [self._send(Command.DISCONNECT, now)]
        if self.behaviour.immediate_exit:
            out.extend(self._finish("immediate", now))
        return out

    def on_data_connected(self, endpoint: str, now: float) -> list[Action]:
        """The data connection to *endpoint* completed its handshake. That is
        the proof a classic member can give: a classic suspect there is alive."""
        self._down_since.pop(endpoint, None)
        self._data_up.add(endpoint)
        self._clear_suspicion(endpoint)
        here = [(u, k) for u, k in self.peers.items() if k.endpoint == endpoint and u != self.uuid]
        if any(k.proves and k.state is not State.PENDING for _, k in here):
            return []  # a proving member's proof comes right after its handshake
        # A classic claim waiting on a classic holder: a new connection there
        # may be a new process (a reused port), the seed's trust goes to the claim.
        ranked = sorted(here, key=lambda uk: uk[1].state is not State.PENDING)
        for uuid, k in ranked:
            if not k.proves and k.state is not State.LIVE:
                return self._promote(uuid, now)
        return []

    def on_data_disconnected(self, endpoint: str, now: float) -> None:
        self._data_up.discard(endpoint)
        if endpoint != self.endpoint and endpoint in self._connected and self._live_at(endpoint):
            self._down_since.setdefault(endpoint, now)

    def on_probe_connected(self, endpoint: str, now: float) -> None:
        """The probe connection to *endpoint* completed its handshake (the
        process there answers): a suspicion raised through it is cleared."""
        if endpoint in self._probes:
            self._probes[endpoint] = None
            if endpoint in self._data_up:  # else the data connection is what is down
                self._clear_suspicion(endpoint)

    def on_probe_disconnected(self, endpoint: str, now: float) -> None:
        """The probe connection to *endpoint* went down (its heartbeats went
        unanswered, or a reset): down from now, expired after the grace."""
        if endpoint in self._probes and self._probes[endpoint] is None:
            self._probes[endpoint] = now

    def on_proof(self, uuid: str, endpoint: str, now: float) -> list[Action]:
        """The data PUB at *endpoint* said it is *uuid* (its welcome message).
        A pending claim or a suspect that matches is listed (again)."""
        k = self.peers.get(uuid)
        if uuid == self.uuid or k is None or k.endpoint != endpoint:
            self.counters.ignored["unclaimed-proof"] += 1
            return []
        self._down_since.pop(endpoint, None)  # its welcome just came over that connection
        self._clear_suspicion(endpoint)
        if k.state is State.LIVE:
            return []
        return self._promote(uuid, now)

    # --- handlers ------------------------------------------------------------

    def _on_welcome(self, msg: Message, now: float, via: str = "") -> list[Action]:
        out: list[Action] = []
        b = self.behaviour
        before = self.proxies.get(via)
        if before is None or before[1] != msg.endpoint:
            # Per proxy: a second proxy's welcome adds its XSUB, never replaces
            # the first one's (one shared state would flip-flop between them).
            others = {ep for v, (_, ep) in self.proxies.items() if v != via}
            if before is not None and before[1] not in others:
                out.append(DisconnectProxy(before[1]))
            if msg.endpoint not in others:
                out.append(ConnectProxy(msg.endpoint))
                self._subscribed = False
        self.proxies[via] = (msg.uuid, msg.endpoint)
        self.proxy_uuid, self.proxy_endpoint = msg.uuid, msg.endpoint
        # Every welcome, not only a new proxy's: after a partition heals the
        # same proxy welcomes us again, and its directory is the only way back
        # to the peers we expired meanwhile (they see no reason to re-announce).
        if b.use_directory:
            out.extend(self._import_directory(msg, now))
        if self.phase is Phase.LEAVING:
            out.append(self._send(Command.DISCONNECT, now))
        elif self.phase is Phase.WAITING or (b.reannounce_on_welcome and self.phase is not Phase.DONE):
            if self.phase is Phase.READY:
                self.counters.reannounced += 1
            if before is not None and b.incarnations:
                # We were away from this proxy: it may have declared us dead
                # (an obituary we never heard), so come back as a new incarnation.
                self._bump(None)
            self.phase = Phase.ANNOUNCING
            # The first echo (through any proxy) makes us READY again; the
            # retry goes on until this proxy has echoed us too.
            self._unechoed.add(via)
            self._retry = b.retry_first
            # Send at once: the first C may be lost while the proxy's
            # subscription is in flight; the backoff retry covers that.
            out.append(self._send(Command.CONNECT, now))
        self._welcomed = True
        return out

    def _import_directory(self, msg: Message, now: float) -> list[Action]:
        stamp = ext.stamp(msg.ext)
        entries = ext.directory(msg.ext)
        if stamp is None or entries is None:
            self.known_dir = None
            return []
        self.known_dir = stamp
        self._heard_seqs.clear()
        self._resync_checked = False
        info = ext.dir_info(msg.ext)
        out: list[Action] = []
        for e in entries:
            inc = e.incarnation if self.behaviour.incarnations else None
            if e.uuid == self.uuid or e.uuid in self.peers or e.endpoint == self.endpoint:
                continue
            if self.behaviour.tombstones and self._tombs.blocks(e.uuid, inc, now):
                continue
            details = info.get(e.uuid, {})
            meta = self._read_meta(details.get("m"))
            out.extend(self._add(e.uuid, e.endpoint, inc, now, meta, e.proves, self._read_topics(details)))
        return out

    def _note_seq(self, msg: Message) -> None:
        """Advance :attr:`known_dir` past the entries we have since heard of.

        The proxy numbers entries in order and forwards each new entry's ``C``
        at once, so with k+1..m all heard we know every entry up to m. Our
        retries then say so, and peers that joined after our welcome but were
        heard by us do not re-announce (under concurrent joins most would).
        A gap (an entry forwarded before our subscription was in) stops the
        advance: the fallback is the conservative rule, never a missed peer.
        """
        k = self.known_dir
        stamp = ext.stamp(msg.ext)
        if k is None or stamp is None or stamp.proxy != k.proxy or stamp.seq <= k.seq:
            return
        self._heard_seqs.add(stamp.seq)
        seq = k.seq
        while seq + 1 in self._heard_seqs:
            seq += 1
            self._heard_seqs.discard(seq)
        self.known_dir = Stamp(k.proxy, seq)
        if len(self._heard_seqs) > MAX_HEARD_SEQS:
            self._heard_seqs.clear()  # a gap that never fills: stop tracking (bounded memory)

    def _incarnation(self, msg: Message) -> int | None:
        return ext.incarnation(msg.ext) if self.behaviour.incarnations else None

    def _stale(self, inc: int | None, known: _Known) -> bool:
        """Is a claim at *inc* older than what we know of a zeromesh member
        (a classic frame counts as older: it can only be forged)?"""
        return self.behaviour.incarnations and known.inc is not None and (inc is None or inc < known.inc)

    def _key_ok(self, uuid: str, msg: Message) -> bool:
        """Under CURVE the proxy stamps each frame with its sender's key: the
        first key seen for a uuid is the only one that may speak for it."""
        key = ext.binding(msg.ext)
        if key is None:
            return True
        bound = self._bindings.get(uuid)
        if bound is None:
            self._bindings[uuid] = key
            if len(self._bindings) > MAX_BINDINGS:
                del self._bindings[next(iter(self._bindings))]
            return True
        return bound == key

    def _on_connect(self, msg: Message, now: float, via: str = "") -> list[Action]:
        inc = self._incarnation(msg)
        if msg.uuid == self.uuid:
            return self._on_own_connect(msg, inc, now, via)
        out: list[Action] = []
        if not self._key_ok(msg.uuid, msg):
            self.counters.ignored["foreign-key"] += 1
            return out
        if self.behaviour.tombstones and self._tombs.blocks(msg.uuid, inc, now):
            self.counters.ignored["tombstoned"] += 1
            return out
        if msg.endpoint == self.endpoint:
            # Only we are reachable at our endpoint (a hostile frame, or a host
            # advertising 127.0.0.1): never let another uuid evict us.
            self.counters.ignored["other-uuid-own-endpoint"] += 1
            return out
        known = self.peers.get(msg.uuid)
        if known is not None:
            if self._stale(inc, known):
                # An older incarnation, or a classic frame about a zeromesh member: stale or forged.
                self.counters.ignored["stale-incarnation"] += 1
                return out
            if known.endpoint != msg.endpoint:
                home = self._homes.get(msg.uuid) == msg.endpoint and inc is not None and inc > (known.inc or -1)
                if not home and known.state is State.LIVE and self._up_here(msg.uuid, known):
                    # A live member does not move: a competing claim (if it is
                    # about a zeromesh member, the member itself refutes it).
                    self.counters.ignored["competing-claim"] += 1
                    return out
                # Same peer, new endpoint, the old one down or unproven: follow it.
                out.extend(self._remove(msg.uuid, now, "replaced", notify=True))
                out.extend(self._add_announced(msg, inc, now))
                return out
            if inc is not None:
                known.inc = inc
            if ext.flag(msg.ext, ext.RESYNC) and self._should_reannounce(msg):
                self.counters.reannounced += 1
                out.append(self._send(Command.CONNECT, now, schedule=False))
            return out
        out.extend(self._add_announced(msg, inc, now))
        if self._should_reannounce(msg):
            self.counters.reannounced += 1
            # A one-off reply: it must not arm the retry timer (in READY nothing
            # would ever clear it, and the loop would spin on a past deadline).
            out.append(self._send(Command.CONNECT, now, schedule=False))
        return out

    def _on_own_connect(self, msg: Message, inc: int | None, now: float, via: str = "") -> list[Action]:
        out: list[Action] = []
        if msg.endpoint != self.endpoint:
            # Somebody claims our uuid elsewhere: re-assert ourselves.
            self.counters.ignored["own-uuid-other-endpoint"] += 1
            return self._refute(inc, now) if self.behaviour.incarnations else out
        if inc is not None and inc > self.incarnation:
            # Asserted at an incarnation we never had (a forgery or a replay of
            # an earlier life): outbid it, or our own D would then count as stale.
            return self._refute(inc, now)
        stamp = ext.stamp(msg.ext)
        if stamp is not None:
            self.own_stamp = stamp
            self._own_stamps[stamp.proxy] = stamp
            if len(self._own_stamps) > MAX_HEARD_SEQS:
                del self._own_stamps[next(iter(self._own_stamps))]
        self._unechoed.discard(via)
        if self.phase is Phase.ANNOUNCING:
            self.phase = Phase.READY
        if self.phase is Phase.READY and not self._unechoed:
            self._next_send = None
        k = self.known_dir
        if k is not None and stamp is not None and stamp.proxy == k.proxy and not self._resync_checked:
            # Once per welcome, on the echo from the proxy that handed us the
            # directory (with several, the first echo may come from another).
            self._resync_checked = True
            if self._missed_entries():
                # Ask the peers we may have missed to re-announce (see _should_reannounce).
                self.counters.resyncs += 1
                out.append(self._send(Command.CONNECT, now, schedule=False, resync=True))
        if msg.uuid not in self.peers:
            # A peer that lives less than this never probes anyone.
            self._watch_due = max(self._watch_due, now + self.behaviour.watch_settle)
            out.extend(self._add(msg.uuid, msg.endpoint, self.incarnation, now, self.meta))
            out.append(Notify(PeerEvent("ready", self.uuid, self.endpoint, now, meta=self.meta)))
        return out

    def _should_reannounce(self, newcomer: Message) -> bool:
        b = self.behaviour
        if self.phase is Phase.LEAVING:
            return b.reannounce_while_leaving
        if self.phase is Phase.DONE:
            return False
        if b.always_reannounce:
            return True
        if self.phase is not Phase.READY:
            return False  # our retry loop is announcing us anyway
        known = ext.known(newcomer.ext)
        # Our stamp from the proxy its directory came from; none (it used
        # another proxy than any that echoed us): the conservative rule.
        mine = None if known is None else self._own_stamps.get(known.proxy)
        if known is None or mine is None:
            return True
        if not ext.flag(newcomer.ext, ext.RESYNC):
            # Its welcome listed every entry up to k, and it hears every C
            # forwarded after it; if it finds a gap, it asks again ("r"). Its
            # k is its own word: believed only if it lies before the entry
            # number the proxy stamped on this very frame (an honest newcomer's
            # welcome always does), so a forged k cannot silence us.
            own = ext.stamp(newcomer.ext)
            return own is None or own.proxy != known.proxy or known.seq >= own.seq
        missing = ext.missing(newcomer.ext)
        if missing is not None:
            return mine.seq in missing  # it named the entries it missed
        return mine.seq > known.seq

    def _missing_seqs(self) -> list[int] | None:
        """The entries numbered between what we know and our own that we never
        heard (None when too many to name: then every later one re-announces)."""
        k = self.known_dir
        mine = None if k is None else self._own_stamps.get(k.proxy)
        if k is None or mine is None or mine.seq - k.seq > MAX_MISSING_NAMED:
            return None
        return [s for s in range(k.seq + 1, mine.seq) if s not in self._heard_seqs]

    def _missed_entries(self) -> bool:
        """On hearing our own stamped C: did we miss an entry numbered below
        ours? Every such entry's C was forwarded before ours, so a gap means
        it went out between our welcome and our subscription."""
        k = self.known_dir
        mine = None if k is None else self._own_stamps.get(k.proxy)
        return k is not None and mine is not None and k.proxy == mine.proxy and k.seq < mine.seq - 1

    def _on_disconnect(self, msg: Message, now: float) -> list[Action]:
        inc = self._incarnation(msg)
        known = self.peers.get(msg.uuid)
        own = msg.uuid == self.uuid
        if own and self.phase is not Phase.LEAVING:
            self.counters.ignored["own-disconnect-not-leaving"] += 1
            # A D (or an obituary) for us while we live: re-assert ourselves.
            return self._refute(inc, now) if self.behaviour.incarnations else []
        if known is None:
            self.counters.ignored["unknown-disconnect"] += 1
            return []
        if known.endpoint != msg.endpoint:
            # A D for a uuid we know at another endpoint: stale, never drop the live one.
            self.counters.ignored["stale-disconnect"] += 1
            return []
        if not own:
            if not self._key_ok(msg.uuid, msg):
                self.counters.ignored["foreign-key"] += 1
                return []
            if self._stale(inc, known):
                self.counters.ignored["stale-incarnation"] += 1
                return []
        obituary = ext.flag(msg.ext, ext.OBITUARY)
        if obituary and known.state is State.LIVE and self._vouch(msg.uuid, known):
            # The proxy's probe lost it, our own connection to it is up: one
            # overloaded observer's suspicion, not a verdict (Lifeguard). It
            # refutes anyway; dropping it here would cost a reconnection each.
            self.counters.ignored["obituary-alive-here"] += 1
            return []
        out = self._remove(msg.uuid, now, "expired" if obituary else "left", notify=not own)
        if self.behaviour.tombstones and not own:
            top = known.inc if inc is None else inc if known.inc is None else max(inc, known.inc)
            self._tombs.add(msg.uuid, top, now, obituary=obituary)
        if own:
            out.extend(self._finish("left", now))
        return out

    # --- helpers ---------------------------------------------------------------

    def _bump(self, seen: int | None) -> None:
        self.incarnation = min(ext.MAX_INCARNATION, max(self.incarnation, seen or 0) + 1)
        me = self.peers.get(self.uuid)
        if me is not None:
            me.inc = self.incarnation

    def _refute(self, seen: int | None, now: float) -> list[Action]:
        """Re-assert ourselves with a higher incarnation than *seen*."""
        self._bump(seen)
        return self._assert(now)

    def _assert(self, now: float) -> list[Action]:
        """Send our C with the current incarnation, at most once per refute_interval."""
        if self.phase not in (Phase.ANNOUNCING, Phase.READY):
            self._refute_at = None
            return []
        due = self._last_refute + self.behaviour.refute_interval
        if now < due:
            self._refute_at = due  # the incarnation is raised; one C carries it
            return []
        self._refute_at = None
        self._last_refute = now
        self.counters.refuted += 1
        return [self._send(Command.CONNECT, now, schedule=False)]

    def _send(self, command: Command, now: float, schedule: bool = True, resync: bool = False) -> Send:
        e: dict[str, Any] = {}
        if command is Command.CONNECT and self.meta:
            e[ext.META] = dict(self.meta)
        if command is Command.CONNECT:
            e.update(self._topics_ext)
        if self.behaviour.incarnations:
            e[ext.INCARNATION] = self.incarnation
            if command is Command.CONNECT and self.proves:
                e[ext.PROVES] = 1
        if command is Command.CONNECT and self.known_dir is not None:
            e[ext.KNOWN] = self.known_dir.as_ext()
            if resync:
                e[ext.RESYNC] = 1
                missing = self._missing_seqs()
                if missing is not None:
                    e[ext.MISSING] = missing
        if schedule and not self.behaviour.announce_every_turn:
            if self._subscribed or self.watch_subscription:
                self._next_send = now + self.behaviour.retry_subscribed
            else:  # may be dropped by our PUB: retry fast (dropped retries cost nothing)
                self._next_send = now + self._retry
                self._retry = min(self._retry * 2, self.behaviour.retry_max)
        self.counters.sent += 1
        return Send(Message(command, self.uuid, self.endpoint, e))

    def _up_here(self, uuid: str, k: _Known) -> bool:
        """Our own connection to this listed member is up (not down, not
        suspected). Never for a member we are not connected to: we cannot tell."""
        return k.endpoint in self._connected and k.endpoint not in self._down_since and uuid not in self._suspected

    def _vouch(self, uuid: str, k: _Known) -> bool:
        """Our own *heartbeated* link to this listed member is up: evidence
        that it lives. An unwatched data connection carries no heartbeats, so
        it stays up through a freeze or a partition and proves nothing."""
        if not self._up_here(uuid, k):
            return False
        return self.behaviour.watch is None or self._probes.get(k.endpoint, math.inf) is None

    def _watch_pending(self) -> bool:
        return (
            bool(self.behaviour.watch)
            and self.behaviour.expire
            and self._version != self._watched_version
            and self.phase in (Phase.ANNOUNCING, Phase.READY)
            and self.ready
            and (len(self.peers) > 1 or bool(self._probes))
        )

    def _want_watched(self) -> set[str]:
        """The endpoints to probe: the next ``watch`` uuids after ours on the
        ring of listed members we take data from (in a full mesh each member
        is then watched by that many others; the others' failures do not
        concern our data, and the proxy's obituary removes them), or all of
        those while no proxy can tell us who died."""
        mine = self.endpoint
        live = sorted(
            u
            for u, k in self.peers.items()
            if k.state is State.LIVE and u != self.uuid and k.endpoint in self._connected and k.endpoint != mine
        )
        i = bisect.bisect_right(live, self.uuid)
        # Cut off: up to CUT_OFF_WATCHED of them (bounded effort: after a proxy
        # restart every peer of a large mesh would otherwise dial everyone).
        k = CUT_OFF_WATCHED if self._cut_off else self.behaviour.watch or 0
        return {self.peers[u].endpoint for u in (live[i:] + live[:i])[:k]}

    def _rewatch(self, now: float) -> list[Action]:
        """Probe the members we should watch and stop probing the others; at
        most once per watch_settle, so that a burst of joins re-dials little."""
        self._watched_version = self._version
        self._watch_due = now + self.behaviour.watch_settle
        want = self._want_watched()
        out: list[Action] = []
        for ep in [ep for ep in self._probes if ep not in want]:
            del self._probes[ep]
            out.append(Probe(ep, False))
        # A new probe is down only if its first handshake has not come by then
        # (a new connection under load is slow; the data connection is up).
        # Cut off from the proxies, no allowance: a partition must show within
        # the grace, as on a watched link.
        first_up = self.behaviour.probe_first_up if not self._cut_off else 0.0
        for ep in sorted(want - self._probes.keys()):
            self._probes[ep] = now + first_up
            out.append(Probe(ep, True))
        return out

    def _unprobe(self, endpoint: str) -> list[Action]:
        """Stop probing *endpoint* now (its member left or is declared): a
        probe must not keep dialling a dead endpoint until the next rewatch."""
        if endpoint not in self._probes:
            return []
        del self._probes[endpoint]
        return [Probe(endpoint, False)]

    def _clear_suspicion(self, endpoint: str) -> None:
        for u in [u for u in self._suspected if self.peers.get(u) is None or self.peers[u].endpoint == endpoint]:
            del self._suspected[u]
            self.counters.cleared += 1

    def _declare_due(self, now: float, everyone: bool = False) -> list[Action]:
        """Declare expired the suspected whose time is up (or all of them)."""
        out: list[Action] = []
        for uuid in [u for u, t in self._suspected.items() if everyone or t <= now]:
            del self._suspected[uuid]
            k = self.peers.get(uuid)
            if k is not None and k.state is State.LIVE:
                out.extend(self._declare(uuid, k, now))
        return out

    def _declare(self, uuid: str, k: _Known, now: float) -> list[Action]:
        """A suspicion confirmed: unlisted (a leave event), still watched."""
        window = self.behaviour.revive_window
        if window <= 0:
            return self._remove(uuid, now, "expired", notify=True)
        k.state, k.since = State.SUSPECT, now
        self._version += 1
        self._waiting[uuid] = now + window
        self.counters.leaves += 1
        self.counters.expired += 1
        out: list[Action] = [Notify(PeerEvent("leave", uuid, k.endpoint, now, "expired"))]
        out.extend(self._unprobe(k.endpoint))
        if self.behaviour.watch is not None and k.endpoint in self._data_up and self._refs[k.endpoint] == 1:
            # Declared through its probe while its data connection, which has
            # no heartbeats, looks up: a zombie across a partition. Dial afresh,
            # so that its handshake (or proof) after the path returns revives it.
            self._data_up.discard(k.endpoint)
            out += [DisconnectData(k.endpoint), ConnectData(k.endpoint)]
        return out

    def _live_at(self, endpoint: str) -> bool:
        return any(k.endpoint == endpoint and k.state is State.LIVE for k in self.peers.values())

    def _read_meta(self, value: object) -> dict[str, str]:
        """A remote peer's metadata; what does not fit the bound is dropped and counted."""
        meta, dropped = metadata.read(value)
        if dropped:
            self.counters.ignored["bad-meta"] += dropped
        return meta

    def _read_topics(self, value: Mapping[str, Any]) -> tuple[ext.Topics, ext.Topics]:
        """A remote member's (publishes, subscribes); a malformed list reads as
        everything (see :func:`zeromesh.ext.read_topics`), dropped and counted."""
        pub, bad_pub = ext.read_topics(value, ext.PUBLISHES)
        sub, bad_sub = ext.read_topics(value, ext.SUBSCRIBES)
        if bad_pub or bad_sub:
            self.counters.ignored["bad-topics"] += bad_pub + bad_sub
        return pub, sub

    def _wants(self, uuid: str, publishes: ext.Topics) -> bool:
        """Is a member publishing *publishes* one we connect to? Always
        ourselves (the socket layer decides about our own PUB)."""
        return uuid == self.uuid or ext.overlaps(publishes, self.subscribes)

    def _add_announced(self, msg: Message, inc: int | None, now: float) -> list[Action]:
        proves = inc is not None and ext.flag(msg.ext, ext.PROVES)
        meta = self._read_meta(msg.ext.get(ext.META))
        return self._add(msg.uuid, msg.endpoint, inc, now, meta, proves, self._read_topics(msg.ext))

    def _add(
        self,
        uuid: str,
        endpoint: str,
        inc: int | None,
        now: float,
        meta: Mapping[str, str] = metadata.EMPTY,
        proves: bool = False,
        topics: tuple[ext.Topics, ext.Topics] = (None, None),
    ) -> list[Action]:
        """A new entry. A member whose data PUB proves its uuid is listed once
        it has (:meth:`on_proof`); others at once (the seed's trust). Only the
        members we want data from are connected to; the proof comes over that
        connection, so the others are listed at once too (the proxy's word)."""
        out: list[Action] = []
        b = self.behaviour
        wanted = self._wants(uuid, topics[0])
        proves = proves and b.require_proof and uuid != self.uuid and wanted
        held = self._refs[endpoint] > 0
        connected = endpoint in self._connected
        live_up = held and endpoint not in self._down_since and self._live_at(endpoint)
        self.peers[uuid] = _Known(endpoint, now, inc, State.PENDING, meta, proves, *topics)
        self._refs[endpoint] += 1
        if wanted and (not held or not connected):
            self._connected.add(endpoint)
            out.append(ConnectData(endpoint))
        elif wanted and not live_up:
            # Ports are reused: whoever held this endpoint is down or unproven.
            # Dial afresh so the newcomer's proof (or handshake) comes now,
            # not after the dead one's reconnect backoff.
            out.append(DisconnectData(endpoint))
            out.append(ConnectData(endpoint))
        if not proves and not live_up:
            out.extend(self._promote(uuid, now))
            if endpoint != self.endpoint and b.expire and held and endpoint in self._connected:
                self._down_since[endpoint] = now  # its own grace, not the dead one's
        else:
            # Unproven, or a classic claim on an endpoint a live peer holds:
            # waits for a proof, or (classic) for the holder to go.
            self._waiting[uuid] = now + b.proof_timeout
        return out

    def _promote(self, uuid: str, now: float) -> list[Action]:
        """List *uuid*: it proved itself at its endpoint. Whoever else claimed
        that endpoint is gone (a reused port) or never was there."""
        k = self.peers[uuid]
        was = k.state
        out: list[Action] = []
        # _refs counts the entries on an endpoint: scan the table only when
        # another one is there (3,000 ghosts at 3,000 endpoints: O(N^2) otherwise).
        if self._refs[k.endpoint] > 1:
            for other, o in list(self.peers.items()):
                if o.endpoint == k.endpoint and other not in (uuid, self.uuid):
                    out.extend(self._remove(other, now, "replaced", notify=True, keep_connection=True))
        k.state, k.since = State.LIVE, now
        self._version += 1
        self._waiting.pop(uuid, None)
        if uuid == self.uuid:
            return out
        if uuid not in self._homes:
            self._homes[uuid] = k.endpoint
            if len(self._homes) > MAX_BINDINGS:
                del self._homes[next(iter(self._homes))]
        if (
            was is State.PENDING
            and self.behaviour.expire
            and not k.proves
            and k.endpoint not in self._down_since
            and self._refs[k.endpoint] == 1
            and k.endpoint in self._connected
        ):
            # A classic member counts as down until the monitor reports it connected
            # (one we are not connected to is never watched: it leaves on D or obituary).
            self._down_since[k.endpoint] = now
        if was is State.SUSPECT:
            self.counters.revived += 1
        self.counters.joins += 1
        out.append(Notify(PeerEvent("join", uuid, k.endpoint, now, meta=k.meta)))
        return out

    def _remove(
        self,
        uuid: str,
        now: float,
        reason: LeaveReason,
        notify: bool,
        keep_connection: bool = False,
    ) -> list[Action]:
        known = self.peers.pop(uuid)
        self._version += 1
        self._waiting.pop(uuid, None)
        self._suspected.pop(uuid, None)
        out: list[Action] = []
        ep = known.endpoint
        self._refs[ep] -= 1
        # keep_connection: the count stays (possibly 0) for the successor to take.
        if self._refs[ep] <= 0 and not keep_connection:
            del self._refs[ep]
            self._down_since.pop(ep, None)
            self._data_up.discard(ep)
            if ep in self._connected:
                self._connected.discard(ep)
                times = 2 if self.behaviour.duplicate_disconnect else 1
                out.append(DisconnectData(ep, own=uuid == self.uuid, times=times))
            out.extend(self._unprobe(ep))
        listed = known.state is State.LIVE and uuid != self.uuid
        if listed:
            self.counters.leaves += 1
            if reason == "expired":
                self.counters.expired += 1
            elif reason == "replaced":
                self.counters.replaced += 1
            if notify:
                out.append(Notify(PeerEvent("leave", uuid, ep, now, reason)))
            if not keep_connection and self._refs.get(ep):
                # A classic claim waited for this holder to go: it is its turn.
                for other, o in list(self.peers.items()):
                    if o.endpoint == ep and not o.proves and o.state is State.PENDING:
                        out.extend(self._promote(other, now))
                        break
        return out

    def _expire_due(self, now: float) -> list[Action]:
        grace = self.behaviour.expire_grace
        due = [ep for ep, since in self._down_since.items() if now - since >= grace]
        for ep, since in self._probes.items():
            if since is not None and now - since >= grace:
                self._probes[ep] = math.inf  # acted upon; its next handshake clears it
                if ep not in self._down_since:
                    due.append(ep)
        out: list[Action] = []
        # One pass over the table, not one per endpoint: 3,000 ghosts expiring
        # together cost seconds of loop time the other way (no data read meanwhile).
        due_set = set(due)
        on_due: dict[str, list[str]] = {}
        for u, k in self.peers.items():
            if k.endpoint in due_set and k.state is State.LIVE:
                on_due.setdefault(k.endpoint, []).append(u)
        for ep in due:
            self._down_since.pop(ep, None)
            for uuid in on_due.get(ep, []):
                # A suspicion, not a verdict: still listed while its reconnect
                # may clear it; the proxy's obituary confirms it, else the
                # suspicion timeout. Declared, it stays watched: its proof (or
                # handshake, if classic) lists it again; a D or an obituary ends it.
                if self.behaviour.suspect_timeout > 0 and not self._cut_off:
                    self._suspected[uuid] = now + self.behaviour.suspect_timeout
                else:
                    out.extend(self._declare(uuid, self.peers[uuid], now))
        return out

    def _give_up_due(self, now: float) -> list[Action]:
        out: list[Action] = []
        for uuid in [u for u, t in self._waiting.items() if t <= now]:
            k = self.peers.get(uuid)
            self._waiting.pop(uuid, None)
            if k is None or k.state is State.LIVE:
                continue
            if k.state is State.PENDING:
                self.counters.unproven += 1
            else:
                self.counters.abandoned += 1
            out.extend(self._remove(uuid, now, "expired", notify=False))
        return out

    def _finish(self, reason: Literal["left", "timeout", "immediate"], now: float) -> list[Action]:
        self.phase = Phase.DONE
        self._next_send = None
        self._leave_deadline = None
        self._refute_at = None
        return [Exit(reason)]
