"""The proxy's directory: who is in the mesh, as seen from the discovery channel.

Pure logic (no sockets), fed by :class:`zeromesh.proxy.Proxy`. It serves two
purposes:

* **O(N) joins.** Every ``C`` the proxy forwards is stamped with the
  announcer's directory sequence number, and the welcome carries the whole
  directory with its current sequence number (see :mod:`zeromesh.protocol`).
* **Bounded memory.** Entries leave on ``D``; a peer that crashed is found by
  the proxy's liveness probe (a SUB with no subscriptions, connected to every
  listed endpoint with ZMTP heartbeats), so the directory does not grow under
  crash churn, and newcomers are not handed dead endpoints for long.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from . import metadata, timing
from .wire import Command, Message

#: Upper bound on entries; beyond it the oldest are dropped (a welcome frame
#: of ~80 bytes per entry stays well under a megabyte).
MAX_ENTRIES = 10_000
#: Remember this many departed uuids, so a classic peer that re-announces
#: after its own ``D`` (a seed behaviour) is not put back in the directory.
REMEMBER_DEPARTED = 4096


@dataclass
class Entry:
    endpoint: str
    seq: int
    meta: Mapping[str, str] = field(default_factory=dict)
    #: When the entry was made (the clock of ``now``).
    since: float = 0.0
    #: The liveness probe has reached its endpoint at least once.
    probed: bool = False


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
    ) -> None:
        self.proxy_uuid = proxy_uuid
        self.max_entries = max_entries
        self.expire_grace = expire_grace
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.seq = 0
        #: Bumped on every change; the proxy re-arms its welcome when it moves.
        self.version = 0
        self._departed: OrderedDict[str, None] = OrderedDict()
        self._down_since: dict[str, float] = {}
        self._endpoints: Counter[str] = Counter()
        self.expired = 0
        #: Metadata pairs dropped from announcements (wrong type, over the bound).
        self.bad_meta = 0
        #: Joins and leaves since the owner last drained them (bounded).
        self.changes: list[Change] = []
        self.joins = 0
        #: Leaves by reason (left, expired, replaced, evicted).
        self.leaves: Counter[str] = Counter()

    def endpoints(self) -> set[str]:
        return set(self._endpoints)

    def on_frame(self, msg: Message, now: float) -> Message | None:
        """Update from a frame the proxy is forwarding; return the frame to
        forward (``C`` stamped with the announcer's position), or None to drop."""
        if msg.command is Command.WELCOME:
            return None  # only the proxy welcomes; a W from a peer could hijack others
        if msg.command is Command.DISCONNECT:
            entry = self.entries.get(msg.uuid)
            if entry is not None and entry.endpoint == msg.endpoint:
                self._drop(msg.uuid, "left")
                self._departed[msg.uuid] = None
                while len(self._departed) > REMEMBER_DEPARTED:
                    self._departed.popitem(last=False)
            return msg
        if msg.uuid in self._departed:
            return msg  # forwarded (C peers expect it), but not listed again
        entry = self.entries.get(msg.uuid)
        if entry is None or entry.endpoint != msg.endpoint:
            if entry is not None:
                self._drop(msg.uuid, "replaced")
            for other in [u for u, e in self.entries.items() if e.endpoint == msg.endpoint]:
                self._drop(other, "replaced")  # a new peer on a reused port: the old one is gone
            self.seq += 1
            meta, dropped = metadata.read(msg.ext.get(metadata.META))
            self.bad_meta += dropped
            entry = Entry(msg.endpoint, self.seq, meta, now)
            self._change(Change("join", msg.uuid, msg.endpoint))
            self.entries[msg.uuid] = entry
            self._endpoints[msg.endpoint] += 1
            self._down_since.setdefault(msg.endpoint, now)
            self.version += 1
            while len(self.entries) > self.max_entries:
                self._drop(next(iter(self.entries)), "evicted")
        ext = dict(msg.ext)
        ext.update(p=self.proxy_uuid, s=entry.seq)
        return Message(msg.command, msg.uuid, msg.endpoint, ext)

    def state(self, entry: Entry) -> MemberState:
        if entry.endpoint not in self._down_since:
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
            st = self.state(e)
            if st != "alive":
                d["st"] = st
            info[u] = d
        return {
            "p": self.proxy_uuid,
            "s": self.seq,
            "dir": [[u, e.endpoint] for u, e in self.entries.items()],
            metadata.DIR_INFO: info,
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

    # --- liveness ------------------------------------------------------------

    def on_up(self, endpoint: str) -> None:
        if self._down_since.pop(endpoint, None) is not None:
            self.version += 1  # the welcome lists each member's state
        for e in self.entries.values():
            if e.endpoint == endpoint:
                e.probed = True

    def on_down(self, endpoint: str, now: float) -> None:
        if endpoint in self._endpoints and endpoint not in self._down_since:
            self._down_since[endpoint] = now
            self.version += 1

    def next_deadline(self) -> float | None:
        if not self._down_since:
            return None
        return min(self._down_since.values()) + self.expire_grace

    def expire_due(self, now: float) -> list[str]:
        """Drop entries whose endpoint has been unreachable for the grace; return their uuids."""
        due = {ep for ep, t in self._down_since.items() if now - t >= self.expire_grace}
        gone = [u for u, e in self.entries.items() if e.endpoint in due]
        for u in gone:
            self._drop(u, "expired")
            self.expired += 1
        for ep in due:
            self._down_since.pop(ep, None)
        return gone

    def _drop(self, uuid: str, reason: DropReason) -> None:
        entry = self.entries.pop(uuid)
        self._change(Change("leave", uuid, entry.endpoint, reason))
        self._endpoints[entry.endpoint] -= 1
        if self._endpoints[entry.endpoint] <= 0:
            del self._endpoints[entry.endpoint]
            self._down_since.pop(entry.endpoint, None)
        self.version += 1
