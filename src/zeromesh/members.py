"""The mesh seen from outside: list its members, and watch them come and go,
without joining.

A :class:`Watcher` is one SUB socket connected to the proxy's XPUB. The proxy
greets every new subscriber with its welcome (``W``), and a directory proxy's
welcome carries the whole directory (uuid, endpoint, metadata, when listed,
state): that is the listing. Nothing is announced (no ``C``), so no peer sees
a join or a leave. To watch, the SUB keeps reading what the proxy forwards
(every ``C`` and ``D``) and turns it into joins and leaves, like
``serf monitor``.

A classic proxy (the seed's ``zmq_proxy``) welcomes without a directory:
:attr:`Listing.has_directory` is then False, and only watching works (a member
shows up when it next announces itself).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import zmq

from . import directory, ext, metadata, transport, wire
from .endpoints import DEFAULT_SCHEMES, validate_endpoint
from .errors import WireError
from .security import Security
from .transport import set_transport_options

#: Default bound on waiting for the proxy's welcome.
WELCOME_TIMEOUT = 2.0

MemberState = Literal["alive", "joining", "suspect", "unknown"]


@dataclass(frozen=True)
class MemberInfo:
    """One member as the proxy lists it."""

    uuid: str
    endpoint: str
    meta: Mapping[str, str] = field(default_factory=dict)
    #: Unix time the proxy listed it (None: not known, e.g. seen by watching).
    since: float | None = None
    #: alive (reachable), joining (not probed yet), suspect (unreachable, not
    #: dropped yet); unknown when the proxy did not say.
    state: MemberState = "unknown"

    def as_dict(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "endpoint": self.endpoint,
            "meta": dict(self.meta),
            "state": self.state,
            "since": self.since,
        }


@dataclass(frozen=True)
class Listing:
    """What a proxy's welcome says about the mesh."""

    proxy_uuid: str
    #: The proxy's XSUB endpoint (where peers publish).
    xsub: str
    #: False for a classic proxy: its welcome carries no directory.
    has_directory: bool
    members: list[MemberInfo]
    #: Unix time the welcome was read.
    t: float
    #: Metadata pairs or entries dropped as malformed.
    dropped: int = 0


@dataclass(frozen=True)
class Change:
    """A join or a leave seen while watching (or ``proxy``: a new welcome)."""

    kind: Literal["join", "leave", "proxy"]
    uuid: str
    endpoint: str
    t: float
    meta: Mapping[str, str] = field(default_factory=dict)
    #: For leaves: left, failed (the proxy's obituary), replaced.
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"event": self.kind, "uuid": self.uuid, "endpoint": self.endpoint, "t": self.t}
        if self.kind == "join":
            d["meta"] = dict(self.meta)
        if self.reason is not None:
            d["reason"] = self.reason
        return d


_STATES: frozenset[str] = frozenset({"alive", "joining", "suspect"})


def _finite(value: object) -> float | None:
    """A number from the wire, or None (JSON may carry Infinity and NaN)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def listing_of(msg: wire.Message, t: float) -> Listing:
    """The :class:`Listing` in a welcome frame (hostile input: what does not
    decode is left out and counted in :attr:`Listing.dropped`)."""
    entries = msg.ext.get(ext.DIRECTORY)
    if not isinstance(entries, list):
        return Listing(msg.uuid, msg.endpoint, False, [], t)
    info = ext.dir_info(msg.ext)
    members: list[MemberInfo] = []
    dropped = 0
    for e in entries:
        if not (isinstance(e, list) and len(e) >= 2 and isinstance(e[0], str) and isinstance(e[1], str)):
            dropped += 1
            continue
        try:
            uuid, endpoint = wire.validate_uuid(e[0]), validate_endpoint(e[1], DEFAULT_SCHEMES)
        except WireError:
            dropped += 1
            continue
        d = info.get(uuid, {})
        meta, bad = metadata.read(d.get("m"))
        dropped += bad
        since = d.get("t")
        st = d.get("st", "alive")
        members.append(
            MemberInfo(
                uuid,
                endpoint,
                meta,
                _finite(since),
                st if isinstance(st, str) and st in _STATES else "unknown",  # type: ignore[arg-type]
            )
        )
    return Listing(msg.uuid, msg.endpoint, True, members, t, dropped)


class Watcher:
    """A silent observer of one proxy: :meth:`listing`, then :meth:`changes`.

    Not thread-safe (one socket); :meth:`close` is idempotent and bounded.
    """

    def __init__(
        self,
        proxy: str,
        *,
        watch: bool = False,
        security: Security | None = None,
        heartbeats: bool = True,
    ) -> None:
        """:param watch: receive what the proxy forwards too (C and D frames);
        without it the SUB subscribes to welcomes only, and the proxy sends
        it nothing else."""
        self.proxy = validate_endpoint(proxy)
        self.ctx: zmq.Context[Any] = zmq.Context()
        try:
            self.sub: zmq.Socket[Any] = self.ctx.socket(zmq.SUB)
            self.sub.setsockopt(zmq.LINGER, 0)
            set_transport_options(self.sub, heartbeats)
            transport.limit(self.sub, transport.MAX_WELCOME)  # what a proxy may send; a flood costs nothing
            if security is not None:
                security.apply_client(self.sub)
            # Subscribe before connecting, or the welcome is lost.
            self.sub.setsockopt(zmq.SUBSCRIBE, b"" if watch else wire.Command.WELCOME.value.encode())
            self.sub.connect(self.proxy)
        except BaseException:
            self.ctx.destroy(linger=0)
            raise
        #: What the watcher believes the mesh is: uuid -> member.
        self.view: dict[str, MemberInfo] = {}
        #: Frames that did not decode, by reason.
        self.bad: dict[str, int] = {}
        self.last: Listing | None = None

    def close(self) -> None:
        if not self.ctx.closed:
            self.ctx.destroy(linger=0)

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _recv(self, timeout: float | None) -> wire.Message | None:
        """The next frame that decodes, or None after *timeout*."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self.sub.poll(None if left is None else int(left * 1000)):
                return None
            frames = self.sub.recv_multipart()
            if len(frames) != 1:
                self.bad["multipart"] = self.bad.get("multipart", 0) + 1
                continue
            try:
                return wire.decode(frames[0])
            except WireError as exc:
                self.bad[exc.reason] = self.bad.get(exc.reason, 0) + 1

    def listing(self, timeout: float = WELCOME_TIMEOUT) -> Listing:
        """The proxy's welcome, decoded; ``TimeoutError`` if none came in time
        (no proxy there, or a CURVE mismatch)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self._recv(max(0.0, deadline - time.monotonic()))
            if msg is None:
                raise TimeoutError(f"no welcome from {self.proxy} within {timeout:g} s")
            if msg.command is wire.Command.WELCOME:
                self.last = listing_of(msg, time.time())
                self.view = {m.uuid: m for m in self.last.members}
                return self.last

    def changes(self, timeout: float | None = None) -> list[Change]:
        """Joins and leaves from the next frame (empty after *timeout*, or for
        a frame that changes nothing). A new welcome (the proxy restarted, or
        our connection came back) is compared with the view."""
        msg = self._recv(timeout)
        if msg is None:
            return []
        now = time.time()
        if msg.command is wire.Command.WELCOME:
            return self._rewelcome(msg, now)
        known = self.view.get(msg.uuid)
        if msg.command is wire.Command.CONNECT:
            out: list[Change] = []
            if known is not None and known.endpoint == msg.endpoint:
                return out
            if known is not None:
                out.append(Change("leave", known.uuid, known.endpoint, now, known.meta, "replaced"))
            for other in [m for m in self.view.values() if m.endpoint == msg.endpoint and m.uuid != msg.uuid]:
                del self.view[other.uuid]  # a new peer on a reused port: the old one is gone
                out.append(Change("leave", other.uuid, other.endpoint, now, other.meta, "replaced"))
            meta, _ = ext.meta(msg.ext)
            self.view[msg.uuid] = MemberInfo(msg.uuid, msg.endpoint, meta, now, "alive")
            while len(self.view) > directory.MAX_ENTRIES:  # a flood of made-up uuids stays bounded
                del self.view[next(iter(self.view))]
            out.append(Change("join", msg.uuid, msg.endpoint, now, meta))
            return out
        if known is None or known.endpoint != msg.endpoint:
            return []
        del self.view[msg.uuid]
        reason = "failed" if ext.flag(msg.ext, ext.OBITUARY) else "left"
        return [Change("leave", msg.uuid, msg.endpoint, now, known.meta, reason)]

    def _rewelcome(self, msg: wire.Message, now: float) -> list[Change]:
        """A welcome after the first: our connection came back, or a new proxy
        (restarted) is there. The same proxy's directory is compared with the
        view (members missing from it are ``gone``); a new proxy's directory
        starts empty and fills as the members re-announce, so its absences
        mean nothing yet: only its new members are joins."""
        listing = listing_of(msg, now)
        out = [Change("proxy", listing.proxy_uuid, listing.xsub, now)]
        same_proxy = self.last is not None and self.last.proxy_uuid == listing.proxy_uuid
        self.last = listing
        if not listing.has_directory:
            return out
        new = {m.uuid: m for m in listing.members}
        if same_proxy:
            for u, m in list(self.view.items()):
                if u not in new or new[u].endpoint != m.endpoint:
                    del self.view[u]
                    out.append(Change("leave", u, m.endpoint, now, m.meta, "gone"))
        for u, m in new.items():
            if u not in self.view or self.view[u].endpoint != m.endpoint:
                out.append(Change("join", u, m.endpoint, now, m.meta))
            self.view[u] = m
        return out


def list_members(proxy: str, timeout: float = WELCOME_TIMEOUT, *, security: Security | None = None) -> Listing:
    """The mesh as the proxy at *proxy* lists it, read from its welcome,
    without joining (no peer sees anything). ``TimeoutError`` if no welcome
    came within *timeout*; :attr:`Listing.has_directory` is False for a
    classic proxy, whose welcome lists nobody."""
    with Watcher(proxy, security=security) as w:
        return w.listing(timeout)
