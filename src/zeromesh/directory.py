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
from dataclasses import dataclass
from typing import Any

from . import timing
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
                self._drop(msg.uuid)
                self._departed[msg.uuid] = None
                while len(self._departed) > REMEMBER_DEPARTED:
                    self._departed.popitem(last=False)
            return msg
        if msg.uuid in self._departed:
            return msg  # forwarded (C peers expect it), but not listed again
        entry = self.entries.get(msg.uuid)
        if entry is None or entry.endpoint != msg.endpoint:
            if entry is not None:
                self._drop(msg.uuid)
            for other in [u for u, e in self.entries.items() if e.endpoint == msg.endpoint]:
                self._drop(other)  # a new peer on a reused port: the old one is gone
            self.seq += 1
            entry = Entry(msg.endpoint, self.seq)
            self.entries[msg.uuid] = entry
            self._endpoints[msg.endpoint] += 1
            self._down_since.setdefault(msg.endpoint, now)
            self.version += 1
            while len(self.entries) > self.max_entries:
                self._drop(next(iter(self.entries)))
        ext = dict(msg.ext)
        ext.update(p=self.proxy_uuid, s=entry.seq)
        return Message(msg.command, msg.uuid, msg.endpoint, ext)

    def welcome_ext(self) -> dict[str, Any]:
        return {
            "p": self.proxy_uuid,
            "s": self.seq,
            "dir": [[u, e.endpoint] for u, e in self.entries.items()],
        }

    # --- liveness ------------------------------------------------------------

    def on_up(self, endpoint: str) -> None:
        self._down_since.pop(endpoint, None)

    def on_down(self, endpoint: str, now: float) -> None:
        if endpoint in self._endpoints:
            self._down_since.setdefault(endpoint, now)

    def next_deadline(self) -> float | None:
        if not self._down_since:
            return None
        return min(self._down_since.values()) + self.expire_grace

    def expire_due(self, now: float) -> list[str]:
        """Drop entries whose endpoint has been unreachable for the grace; return their uuids."""
        due = {ep for ep, t in self._down_since.items() if now - t >= self.expire_grace}
        gone = [u for u, e in self.entries.items() if e.endpoint in due]
        for u in gone:
            self._drop(u)
            self.expired += 1
        for ep in due:
            self._down_since.pop(ep, None)
        return gone

    def _drop(self, uuid: str) -> None:
        entry = self.entries.pop(uuid)
        self._endpoints[entry.endpoint] -= 1
        if self._endpoints[entry.endpoint] <= 0:
            del self._endpoints[entry.endpoint]
            self._down_since.pop(entry.endpoint, None)
        self.version += 1
