"""The proxy's directory: who is in the mesh, as seen from the discovery channel.

Pure logic (no sockets), fed by :class:`zeromesh.proxy.Proxy`. It serves:

* **O(N) joins.** Every ``C`` the proxy forwards is stamped with the
  announcer's directory sequence number, and the welcome carries the whole
  directory with its current sequence number (see :mod:`zeromesh.protocol`).
* **Bounded memory.** Entries leave on ``D``; a peer that crashed is found by
  the proxy's liveness probe (a SUB connected to every listed endpoint with
  ZMTP heartbeats), so the directory does not grow under crash churn.
* **Obituaries.** A peer the probe finds dead is announced with a classic
  ``D`` (extension ``o``), so the seed's C peers drop crashed peers too.
* **Membership a forged frame cannot rewrite** (docs/membership.md): ``D`` is
  final (tombstones); claims older than the incarnation known are dropped; a
  ``C`` for an endpoint a live peer holds is dropped (the successor on a reused
  port retries until the probe sees the old one gone); under CURVE each uuid
  belongs to the key that first spoke for it, and every forwarded frame carries
  that key (extension ``b``) for peers to check too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from . import ext, timing
from .wire import Command, Message

#: Upper bound on entries; beyond it the oldest unverified (else the oldest)
#: are dropped (a welcome frame of ~80 bytes per entry stays under a megabyte).
MAX_ENTRIES = 10_000
#: Remember this many departed uuids, so a classic peer that re-announces
#: after its own ``D`` (a seed behaviour) is not put back in the directory.
REMEMBER_DEPARTED = 4096
#: uuid -> CURVE key bindings remembered (a replayed ``C`` of a departed
#: member still comes from the wrong key long after its tombstone is gone).
MAX_BINDINGS = 65536
#: Extension keys only the proxy may set: stripped from what members send.
_PROXY_ONLY = (ext.OBITUARY, ext.BINDING)


@dataclass
class Entry:
    endpoint: str
    seq: int
    meta: Mapping[str, str] = field(default_factory=dict)
    #: When the entry was made (the clock of ``now``).
    since: float = 0.0
    #: None: a classic member.
    inc: int | None = None
    #: Its data PUB proves its uuid (``v``).
    proves: bool = False
    #: The liveness probe has reached its endpoint at least once (verified).
    probed: bool = False
    #: The topic prefixes it announced (None: everything), handed to newcomers.
    publishes: ext.Topics = None
    subscribes: ext.Topics = None


DropReason = Literal["left", "expired", "replaced", "evicted"]
#: alive: reachable; joining: not probed yet; suspect: unreachable, not expired yet.
MemberState = Literal["alive", "joining", "suspect"]


@dataclass(frozen=True)
class Change:
    """A join or a leave in the directory (the proxy logs them)."""

    kind: Literal["join", "leave"]
    uuid: str
    endpoint: str
    reason: DropReason | None = None


class Directory:
    def __init__(
        self,
        proxy_uuid: str,
        max_entries: int = MAX_ENTRIES,
        expire_grace: float = timing.EXPIRE_GRACE,
        proof_timeout: float = timing.PROOF_TIMEOUT,
        tombstone_ttl: float = timing.TOMBSTONE_TTL,
    ) -> None:
        self.proxy_uuid = proxy_uuid
        self.max_entries = max_entries
        self.expire_grace = expire_grace
        self.proof_timeout = proof_timeout
        self.entries: dict[str, Entry] = {}  # insertion order = age
        self.seq = 0
        #: Bumped on every change; the proxy re-arms its welcome when it moves.
        self.version = 0
        self.tombstones = ext.Tombstones(REMEMBER_DEPARTED, tombstone_ttl)
        self._bindings: dict[str, str] = {}
        #: endpoint -> when it counts as dead if no handshake comes first.
        self._due: dict[str, float] = {}
        self._at: dict[str, set[str]] = {}
        self.expired = 0
        #: Frames not forwarded, by reason (tombstoned, foreign-key, ...).
        self.dropped: Counter[str] = Counter()
        #: Metadata pairs dropped from announcements (wrong type, over the bound).
        self.bad_meta = 0
        #: Topic lists dropped from announcements (read as everything).
        self.bad_topics = 0
        #: Joins and leaves since the owner last drained them (bounded).
        self.changes: list[Change] = []
        self.joins = 0
        #: Leaves by reason (left, expired, replaced, evicted).
        self.leaves: Counter[str] = Counter()

    def endpoints(self) -> set[str]:
        return set(self._at)

    def on_frame(self, msg: Message, now: float, key: str | None = None) -> list[Message]:
        """Update from a frame arriving on the XSUB; return the frames to
        forward, in order (empty: dropped, counted in :attr:`dropped`). *key*
        is the sender's CURVE public key (Z85), when the proxy is secured."""
        if msg.command is Command.WELCOME:
            self.dropped["foreign-welcome"] += 1  # only the proxy welcomes
            return []
        if key is not None and not self._bind(msg.uuid, key):
            self.dropped["foreign-key"] += 1
            return []
        inc = ext.incarnation(msg.ext)
        entry = self.entries.get(msg.uuid)
        if msg.command is Command.DISCONNECT:
            if entry is not None:
                if entry.endpoint != msg.endpoint:
                    self.dropped["stale-disconnect"] += 1
                    return []
                if entry.inc is not None and not (inc is not None and inc >= entry.inc):
                    self.dropped["stale-incarnation"] += 1
                    return []
                self._drop(msg.uuid, "left")
                self.tombstones.add(msg.uuid, _top(inc, entry.inc), now)
            # Unknown uuids too: C peers may still list it, and a leaving peer
            # waits for its own D (its retries after the first).
            return [self._stamped(msg, None, key)]
        if self.tombstones.blocks(msg.uuid, inc, now):
            self.dropped["tombstoned"] += 1
            return []
        out: list[Message] = []
        if entry is not None:
            if entry.inc is not None and not (inc is not None and inc >= entry.inc):
                self.dropped["stale-incarnation"] += 1
                return []
            if entry.endpoint == msg.endpoint:
                if inc is not None:
                    entry.inc = inc
                return [self._stamped(msg, entry, key)]
            if self._up(entry.endpoint) and not (inc is not None and (entry.inc is None or inc > entry.inc)):
                self.dropped["competing-claim"] += 1  # a live member does not move
                return []
            self._drop(msg.uuid, "replaced")
        holders = self._at.get(msg.endpoint, set()) - {msg.uuid}
        if holders:
            if self._up(msg.endpoint):
                # Whoever is there is alive: a C claiming its endpoint is forged
                # (a successor on a reused port retries until the probe sees
                # the old one gone, a few ms after its death).
                self.dropped["endpoint-taken"] += 1
                return []
            out.extend(self._obituary(h, now) for h in sorted(holders))
        self.seq += 1
        meta, bad = ext.meta(msg.ext)
        self.bad_meta += bad
        pub, bad_pub = ext.read_topics(msg.ext, ext.PUBLISHES)
        sub, bad_sub = ext.read_topics(msg.ext, ext.SUBSCRIBES)
        self.bad_topics += bad_pub + bad_sub
        proves = inc is not None and ext.flag(msg.ext, ext.PROVES)
        entry = Entry(msg.endpoint, self.seq, meta, now, inc, proves, publishes=pub, subscribes=sub)
        self._change(Change("join", msg.uuid, msg.endpoint))
        self.entries[msg.uuid] = entry
        self._at.setdefault(msg.endpoint, set()).add(msg.uuid)
        self._due.setdefault(msg.endpoint, now + self._grace(msg.endpoint))
        self.version += 1
        while len(self.entries) > self.max_entries:
            victim = next((u for u, e in self.entries.items() if not e.probed), None)
            self._drop(victim if victim is not None else next(iter(self.entries)), "evicted")
        out.append(self._stamped(msg, entry, key))
        return out

    def state(self, entry: Entry) -> MemberState:
        if entry.endpoint not in self._due:
            return "alive"
        return "suspect" if entry.probed else "joining"

    def welcome_ext(self, wall_offset: float = 0.0) -> dict[str, Any]:
        """The directory for the welcome; *wall_offset* turns the clock of
        ``now`` into unix time (for the listing times)."""
        info: dict[str, dict[str, Any]] = {}
        for u, e in self.entries.items():
            d: dict[str, Any] = {"t": round(e.since + wall_offset, 3)}
            if e.meta:
                d["m"] = dict(e.meta)
            if e.publishes is not None:
                d[ext.PUBLISHES] = ext.encode_topics(e.publishes)
            if e.subscribes is not None:
                d[ext.SUBSCRIBES] = ext.encode_topics(e.subscribes)
            st = self.state(e)
            if st != "alive":
                d["st"] = st
            info[u] = d
        return {
            ext.PROXY: self.proxy_uuid,
            ext.SEQ: self.seq,
            ext.DIRECTORY: [ext.DirEntry(u, e.endpoint, e.inc, e.proves).as_ext() for u, e in self.entries.items()],
            ext.DIR_INFO: info,
        }

    def drain_changes(self) -> list[Change]:
        out, self.changes = self.changes, []
        return out

    def _change(self, change: Change) -> None:
        if change.kind == "join":
            self.joins += 1
        else:
            self.leaves[change.reason or "left"] += 1
        if len(self.changes) < MAX_ENTRIES:  # undrained (no owner reading): bounded
            self.changes.append(change)

    def _bind(self, uuid: str, key: str) -> bool:
        bound = self._bindings.get(uuid)
        if bound is None:
            self._bindings[uuid] = key
            if len(self._bindings) > MAX_BINDINGS:
                del self._bindings[next(iter(self._bindings))]
            return True
        return bound == key

    def _stamped(self, msg: Message, entry: Entry | None, key: str | None) -> Message:
        e = {k: v for k, v in msg.ext.items() if k not in _PROXY_ONLY}
        if entry is not None:
            e.update({ext.PROXY: self.proxy_uuid, ext.SEQ: entry.seq})
        if key is not None:
            e[ext.BINDING] = key
        return Message(msg.command, msg.uuid, msg.endpoint, e)

    def _obituary(self, uuid: str, now: float) -> Message:
        """Drop *uuid* as dead; the classic ``D`` that tells everyone (C peers included)."""
        entry = self.entries[uuid]
        self._drop(uuid, "expired")
        self.expired += 1
        self.tombstones.add(uuid, entry.inc, now, obituary=True)
        e: dict[str, Any] = {ext.PROXY: self.proxy_uuid, ext.OBITUARY: 1}
        if entry.inc is not None:
            e[ext.INCARNATION] = entry.inc
        key = self._bindings.get(uuid)
        if key is not None:
            e[ext.BINDING] = key
        return Message(Command.DISCONNECT, uuid, entry.endpoint, e)

    # --- liveness ------------------------------------------------------------

    def _up(self, endpoint: str) -> bool:
        return endpoint in self._at and endpoint not in self._due

    def _grace(self, endpoint: str) -> float:
        """An endpoint that never answered gets the proof timeout if only
        zeromesh members claim it (a first handshake under load takes long),
        the expiry grace otherwise."""
        here = [self.entries[u] for u in self._at.get(endpoint, ())]
        if here and all(e.inc is not None and not e.probed for e in here):
            return self.proof_timeout
        return self.expire_grace

    def on_up(self, endpoint: str) -> None:
        if self._due.pop(endpoint, None) is not None:
            self.version += 1  # the welcome lists each member's state
        for u in self._at.get(endpoint, ()):
            self.entries[u].probed = True

    def on_down(self, endpoint: str, now: float) -> None:
        if endpoint in self._at and endpoint not in self._due:
            self._due[endpoint] = now + self._grace(endpoint)
            self.version += 1

    def on_stall(self, excess: float) -> None:
        """The proxy's loop turned *excess* seconds late (its process starved):
        that time does not count against the members (Lifeguard's local health)."""
        if excess > 0:
            for ep in self._due:
                self._due[ep] += excess

    def next_deadline(self) -> float | None:
        return min(self._due.values()) if self._due else None

    def expire_due(self, now: float) -> list[Message]:
        """Drop entries whose endpoint stayed unreachable past its deadline;
        return their obituaries (classic ``D`` frames) to publish."""
        due = [ep for ep, t in self._due.items() if now >= t]
        out: list[Message] = []
        for ep in due:
            self._due.pop(ep, None)
            out.extend(self._obituary(u, now) for u in sorted(self._at.get(ep, ())))
        return out

    def _drop(self, uuid: str, reason: DropReason) -> None:
        entry = self.entries.pop(uuid)
        self._change(Change("leave", uuid, entry.endpoint, reason))
        here = self._at[entry.endpoint]
        here.discard(uuid)
        if not here:
            del self._at[entry.endpoint]
            self._due.pop(entry.endpoint, None)
        self.version += 1


def _top(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)
