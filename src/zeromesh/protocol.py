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
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from . import metadata, timing
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
class Notify:
    event: PeerEvent


@dataclass(frozen=True)
class Exit:
    reason: Literal["left", "timeout", "immediate"]


Action = Union[Send, ConnectProxy, DisconnectProxy, ConnectData, DisconnectData, Notify, Exit]  # noqa: UP007 (py3.10 alias)


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
        )


#: Bound on :attr:`PeerProtocol._heard_seqs`; past it, a permanent gap is assumed.
MAX_HEARD_SEQS = 1024
#: A resync ``C`` names at most this many missed entries (it stays one small frame).
MAX_MISSING_NAMED = 256


class Phase(enum.Enum):
    WAITING = "waiting"  # no welcome yet
    ANNOUNCING = "announcing"  # sending C until we hear it
    READY = "ready"
    LEAVING = "leaving"  # sending D until we hear it
    DONE = "done"


@dataclass
class _Known:
    endpoint: str
    since: float
    meta: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Stamp:
    """A directory position: which proxy instance, and its sequence number."""

    proxy: str
    seq: int

    @classmethod
    def from_ext(cls, ext: Any, seq_key: str = "s") -> Stamp | None:
        if not isinstance(ext, dict):
            return None
        p, s = ext.get("p"), ext.get(seq_key)
        if isinstance(p, str) and isinstance(s, int) and not isinstance(s, bool):
            return cls(p, s)
        return None

    def as_ext(self) -> dict[str, Any]:
        return {"p": self.proxy, "s": self.seq}


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
    ignored: Counter[str] = field(default_factory=Counter)


class PeerProtocol:
    """One peer's view of the mesh, and what it must do next."""

    def __init__(
        self, uuid: str, endpoint: str, behaviour: Behaviour | None = None, meta: Mapping[str, str] | None = None
    ) -> None:
        self.uuid = uuid
        self.endpoint = endpoint
        self.behaviour = behaviour or Behaviour()
        #: Our own metadata (checked by the caller), sent in every ``C``.
        self.meta: Mapping[str, str] = dict(meta or {})
        self.phase = Phase.WAITING
        self.peers: dict[str, _Known] = {}
        self.counters = Counters()
        self.proxy_uuid: str | None = None
        self.proxy_endpoint: str | None = None
        #: Our own directory position, from the proxy's stamp on our echoed ``C``.
        self.own_stamp: Stamp | None = None
        #: The directory position we were handed in the welcome.
        self.known_dir: Stamp | None = None
        #: Directory positions heard past :attr:`known_dir` (see :meth:`_note_seq`).
        self._heard_seqs: set[int] = set()
        self._refs: Counter[str] = Counter()
        self._down_since: dict[str, float] = {}
        self._next_send: float | None = None
        self._retry = self.behaviour.retry_first
        self._leave_deadline: float | None = None
        #: The proxy's XSUB has subscribed to our proxy PUB (seen only with an
        #: XPUB there): what we send now reaches the proxy.
        self._subscribed = False
        #: The socket layer reports that subscription (:meth:`on_proxy_subscription`):
        #: then an unsubscribed send is not retried fast, the subscription triggers it.
        self.watch_subscription = False

    # --- views ----------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.uuid in self.peers

    def snapshot(self) -> dict[str, str]:
        """uuid -> endpoint of every known peer, this one included once heard."""
        return {u: k.endpoint for u, k in self.peers.items()}

    def members(self) -> dict[str, tuple[str, Mapping[str, str], float]]:
        """uuid -> (endpoint, metadata, when it joined our view) of every known peer."""
        return {u: (k.endpoint, k.meta, k.since) for u, k in self.peers.items()}

    def connected_endpoints(self) -> dict[str, int]:
        return dict(self._refs)

    def pending_connections(self) -> int:
        """Known peers' data connections not reported up by the monitor yet
        (always 0 when expiry, and with it the monitor, is off)."""
        return len(self._down_since)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do (None: nothing scheduled)."""
        times = [t for t in (self._next_send, self._leave_deadline) if t is not None]
        if self.behaviour.expire and self._down_since:
            times.append(min(self._down_since.values()) + self.behaviour.expire_grace)
        return min(times) if times else None

    # --- inputs -----------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        """Called once, before the loop. The classic peer sends C from its
        first turn on, welcome or not (the frames are dropped until connected)."""
        if self.behaviour.announce_every_turn:
            self.phase = Phase.ANNOUNCING
        return []

    def on_frame(self, msg: Message, now: float) -> list[Action]:
        self.counters.frames += 1
        if msg.command is Command.WELCOME:
            return self._on_welcome(msg, now)
        if msg.command is Command.CONNECT:
            self._note_seq(msg)
            return self._on_connect(msg, now)
        return self._on_disconnect(msg, now)

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
        elif self.phase is Phase.ANNOUNCING:
            # Not "while not self.ready": after a re-welcome we are still in our
            # own table, yet must retry until the new proxy echoes our C.
            if b.announce_every_turn or (self._next_send is not None and now >= self._next_send):
                out.append(self._send(Command.CONNECT, now))
        if b.expire:
            out.extend(self._expire_due(now))
        return out

    def on_proxy_subscription(self, subscribed: bool, now: float) -> list[Action]:
        """The proxy's XSUB (un)subscribed to our proxy PUB. Once subscribed,
        what we send is no longer dropped: send the pending C (or D) now."""
        self._subscribed = subscribed
        if not subscribed or self.behaviour.announce_every_turn:
            return []
        if self.phase is Phase.ANNOUNCING:
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
        out: list[Action] = [self._send(Command.DISCONNECT, now)]
        if self.behaviour.immediate_exit:
            out.extend(self._finish("immediate", now))
        return out

    def on_data_connected(self, endpoint: str, now: float) -> None:
        self._down_since.pop(endpoint, None)

    def on_data_disconnected(self, endpoint: str, now: float) -> None:
        if self._refs.get(endpoint) and endpoint != self.endpoint:
            self._down_since.setdefault(endpoint, now)

    # --- handlers ------------------------------------------------------------

    def _on_welcome(self, msg: Message, now: float) -> list[Action]:
        out: list[Action] = []
        b = self.behaviour
        if msg.endpoint != self.proxy_endpoint:
            if self.proxy_endpoint is not None:
                out.append(DisconnectProxy(self.proxy_endpoint))
            out.append(ConnectProxy(msg.endpoint))
            self._subscribed = False
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
            self.phase = Phase.ANNOUNCING
            self._retry = b.retry_first
            # Send at once: the first C may be lost while the proxy's
            # subscription is in flight; the backoff retry covers that.
            out.append(self._send(Command.CONNECT, now))
        return out

    def _import_directory(self, msg: Message, now: float) -> list[Action]:
        stamp = Stamp.from_ext(msg.ext)
        entries = msg.ext.get("dir")
        if stamp is None or not isinstance(entries, list):
            self.known_dir = None
            return []
        self.known_dir = stamp
        self._heard_seqs.clear()
        info = metadata.dir_info(msg.ext)
        out: list[Action] = []
        for entry in entries:
            if not (isinstance(entry, list) and len(entry) >= 2):
                continue
            uuid, endpoint = entry[0], entry[1]
            if not (isinstance(uuid, str) and isinstance(endpoint, str)) or uuid == self.uuid:
                continue
            if uuid not in self.peers and endpoint != self.endpoint:
                out.extend(self._add(uuid, endpoint, now, self._read_meta(info.get(uuid, {}).get("m"))))
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
        stamp = Stamp.from_ext(msg.ext)
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

    def _on_connect(self, msg: Message, now: float) -> list[Action]:
        out: list[Action] = []
        if msg.uuid == self.uuid:
            if msg.endpoint != self.endpoint:
                self.counters.ignored["own-uuid-other-endpoint"] += 1
                return out
            stamp = Stamp.from_ext(msg.ext)
            if stamp is not None:
                self.own_stamp = stamp
            if self.phase is Phase.ANNOUNCING:
                self.phase = Phase.READY
                self._next_send = None
                if self._missed_entries():
                    # Ask the peers we may have missed to re-announce (see _should_reannounce).
                    self.counters.resyncs += 1
                    out.append(self._send(Command.CONNECT, now, schedule=False, resync=True))
            if msg.uuid not in self.peers:
                out.extend(self._add(msg.uuid, msg.endpoint, now, self.meta))
                out.append(Notify(PeerEvent("ready", self.uuid, self.endpoint, now, meta=self.meta)))
            return out
        if msg.endpoint == self.endpoint:
            # Only we are reachable at our endpoint (a hostile frame, or a host
            # advertising 127.0.0.1): never let another uuid evict us.
            self.counters.ignored["other-uuid-own-endpoint"] += 1
            return out
        known = self.peers.get(msg.uuid)
        if known is not None:
            if known.endpoint != msg.endpoint:  # same peer, new endpoint: follow it (leave + join)
                out.extend(self._remove(msg.uuid, now, "replaced", notify=True))
                out.extend(self._add(msg.uuid, msg.endpoint, now, self._read_meta(msg.ext.get(metadata.META))))
            elif msg.ext.get("r") and self._should_reannounce(msg):
                self.counters.reannounced += 1
                out.append(self._send(Command.CONNECT, now, schedule=False))
            return out
        out.extend(self._add(msg.uuid, msg.endpoint, now, self._read_meta(msg.ext.get(metadata.META))))
        if self._should_reannounce(msg):
            self.counters.reannounced += 1
            # A one-off reply: it must not arm the retry timer (in READY nothing
            # would ever clear it, and the loop would spin on a past deadline).
            out.append(self._send(Command.CONNECT, now, schedule=False))
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
        known = Stamp.from_ext(newcomer.ext.get("k"))
        mine = self.own_stamp
        if known is None or mine is None or known.proxy != mine.proxy:
            return True
        if not newcomer.ext.get("r"):
            # Its welcome listed every entry up to k, and it hears every C
            # forwarded after it; if it finds a gap, it asks again ("r").
            return False
        missing = newcomer.ext.get("m")
        if isinstance(missing, list):
            return mine.seq in missing  # it named the entries it missed
        return mine.seq > known.seq

    def _missing_seqs(self) -> list[int] | None:
        """The entries numbered between what we know and our own that we never
        heard (None when too many to name: then every later one re-announces)."""
        k, mine = self.known_dir, self.own_stamp
        if k is None or mine is None or mine.seq - k.seq > MAX_MISSING_NAMED:
            return None
        return [s for s in range(k.seq + 1, mine.seq) if s not in self._heard_seqs]

    def _missed_entries(self) -> bool:
        """On hearing our own stamped C: did we miss an entry numbered below
        ours? Every such entry's C was forwarded before ours, so a gap means
        it went out between our welcome and our subscription."""
        k, mine = self.known_dir, self.own_stamp
        return k is not None and mine is not None and k.proxy == mine.proxy and k.seq < mine.seq - 1

    def _on_disconnect(self, msg: Message, now: float) -> list[Action]:
        if msg.uuid not in self.peers:
            self.counters.ignored["unknown-disconnect"] += 1
            return []
        if self.peers[msg.uuid].endpoint != msg.endpoint:
            # A D for a uuid we know at another endpoint: stale, never drop the live one.
            self.counters.ignored["stale-disconnect"] += 1
            return []
        own = msg.uuid == self.uuid
        if own and self.phase is not Phase.LEAVING:
            self.counters.ignored["own-disconnect-not-leaving"] += 1
            return []
        out = self._remove(msg.uuid, now, "left", notify=not own)
        if own:
            out.extend(self._finish("left", now))
        return out

    # --- helpers ---------------------------------------------------------------

    def _send(self, command: Command, now: float, schedule: bool = True, resync: bool = False) -> Send:
        ext: dict[str, Any] = {}
        if command is Command.CONNECT and self.meta:
            ext[metadata.META] = dict(self.meta)
        if command is Command.CONNECT and self.known_dir is not None:
            ext["k"] = self.known_dir.as_ext()
            if resync:
                ext["r"] = 1
                missing = self._missing_seqs()
                if missing is not None:
                    ext["m"] = missing
        if schedule and not self.behaviour.announce_every_turn:
            if self._subscribed or self.watch_subscription:
                self._next_send = now + self.behaviour.retry_subscribed
            else:  # may be dropped by our PUB: retry fast (dropped retries cost nothing)
                self._next_send = now + self._retry
                self._retry = min(self._retry * 2, self.behaviour.retry_max)
        self.counters.sent += 1
        return Send(Message(command, self.uuid, self.endpoint, ext))

    def _read_meta(self, value: object) -> dict[str, str]:
        """A remote peer's metadata; what does not fit the bound is dropped and counted."""
        meta, dropped = metadata.read(value)
        if dropped:
            self.counters.ignored["bad-meta"] += dropped
        return meta

    def _add(self, uuid: str, endpoint: str, now: float, meta: Mapping[str, str] = metadata.EMPTY) -> list[Action]:
        out: list[Action] = []
        inherited = False
        for other, k in list(self.peers.items()):
            if k.endpoint == endpoint and other != uuid:
                # Ports are reused: a new peer on a dead peer's endpoint means
                # the old one is gone. Keep the connection, hand it over.
                out.extend(self._remove(other, now, "replaced", notify=True, keep_connection=True))
                inherited = True
        self.peers[uuid] = _Known(endpoint, now, meta)
        self._refs[endpoint] += 1
        if self._refs[endpoint] == 1 and not inherited:
            out.append(ConnectData(endpoint))
            if self.behaviour.expire and endpoint != self.endpoint:
                # Until the monitor reports it connected, it is "down".
                self._down_since.setdefault(endpoint, now)
        elif inherited and endpoint in self._down_since:
            # The predecessor died: its connection is down and libzmq's
            # reconnect backoff has grown. Dial the successor now and give it a
            # grace of its own, or it expires on the dead one's account.
            out.append(DisconnectData(endpoint))
            out.append(ConnectData(endpoint))
            self._down_since[endpoint] = now
        if uuid != self.uuid:
            self.counters.joins += 1
            out.append(Notify(PeerEvent("join", uuid, endpoint, now, meta=meta)))
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
        out: list[Action] = []
        ep = known.endpoint
        self._refs[ep] -= 1
        # keep_connection: the count stays (possibly 0) for the successor to take.
        if self._refs[ep] <= 0 and not keep_connection:
            del self._refs[ep]
            self._down_since.pop(ep, None)
            times = 2 if self.behaviour.duplicate_disconnect else 1
            out.append(DisconnectData(ep, own=uuid == self.uuid, times=times))
        if uuid != self.uuid:
            self.counters.leaves += 1
            if reason == "expired":
                self.counters.expired += 1
            elif reason == "replaced":
                self.counters.replaced += 1
        if notify:
            out.append(Notify(PeerEvent("leave", uuid, ep, now, reason)))
        return out

    def _expire_due(self, now: float) -> list[Action]:
        grace = self.behaviour.expire_grace
        due = [ep for ep, since in self._down_since.items() if now - since >= grace]
        out: list[Action] = []
        for ep in due:
            for uuid in [u for u, k in self.peers.items() if k.endpoint == ep]:
                out.extend(self._remove(uuid, now, "expired", notify=True))
            self._down_since.pop(ep, None)
        return out

    def _finish(self, reason: Literal["left", "timeout", "immediate"], now: float) -> list[Action]:
        self.phase = Phase.DONE
        self._next_send = None
        self._leave_deadline = None
        return [Exit(reason)]


