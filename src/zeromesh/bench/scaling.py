"""Scaling beyond this machine: one join into a mesh of 1,000 or 10,000 peers,
on the pure state machines (:class:`~zeromesh.protocol.PeerProtocol`,
:class:`~zeromesh.directory.Directory`), no sockets.

A mesh of 10,000 full peer tables (10^8 entries) does not fit in memory, so
the directory hears everyone's ``C`` but only a *sample* of peers (the last to
join) join for real and hold full tables; all existing peers are in the same
state with respect to a join, so the sample's decisions, multiplied out, are
the mesh's. Only the public API is used (``on_frame``, ``welcome_ext``). What is counted is
the protocol's own output (frames it sends, frames the directory forwards);
what is timed is the real code on this machine (a directory handling a ``C``,
a welcome encoded, a peer handling a newcomer's ``C``).

Interest-scoped connections are counted on the state machines too
(:func:`simulate_interest`): a directory of N members announcing their topics,
and a newcomer whose welcome import decides which data connections it makes.
Rows for what is not built (redundant proxies, watching a few peers instead
of heartbeating all) are arithmetic on the same counts, marked as such.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from .. import ext, timing, wire
from ..directory import Directory
from ..protocol import Behaviour, ConnectData, PeerProtocol, Send
from .common import Result

PROXY = "00000000-0000-4000-8000-0000000000ff"
PROXY_XSUB = "tcp://10.0.0.1:5556"


def _uuid(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


def _endpoint(i: int) -> str:
    return f"tcp://10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}:5000"


def _timed(fn: Any, repeat: int) -> float:
    """Median seconds of *repeat* calls of *fn*."""
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]


def _welcome(d: Directory) -> wire.Message:
    return wire.Message(wire.Command.WELCOME, PROXY, PROXY_XSUB, d.welcome_ext())


def _join(d: Directory, p: PeerProtocol, peers: list[PeerProtocol]) -> None:
    """*p* joins through the public API: the welcome, then its frames through
    the directory, each delivered to *peers* and *p* (FIFO, no counting)."""
    queue = [a.msg for a in p.on_frame(_welcome(d), 0.0) if isinstance(a, Send)]
    peers.append(p)
    while queue:
        for out in d.on_frame(queue.pop(0), 0.0):
            for q in peers:
                queue += [a.msg for a in q.on_frame(out, 0.0) if isinstance(a, Send)]


def simulate_join(n: int, sample: int = 10) -> dict[str, Any]:
    """One zeromesh join into a converged mesh of *n* (directory proxy).

    The directory hears the first *n* - *sample* peers' ``C``; the last
    *sample* peers join for real (welcome, ``C``, echoes among them), so they
    hold full tables and their own stamps; the newcomer then joins and its
    frames reach the sample, standing for all *n* (every existing peer is in
    the same state with respect to it)."""
    k = min(sample, n)
    d = Directory(PROXY, max_entries=n + 1)
    for i in range(n - k):
        d.on_frame(wire.Message(wire.Command.CONNECT, _uuid(i), _endpoint(i)), 0.0)
    existing: list[PeerProtocol] = []
    for i in range(n - k, n):
        _join(d, PeerProtocol(_uuid(i), _endpoint(i), Behaviour(expire=False)), existing)
    welcome = _welcome(d)
    welcome_bytes = len(wire.encode(welcome))
    encode_s = _timed(lambda: wire.encode(_welcome(d)), 5)
    new = PeerProtocol(_uuid(n), _endpoint(n), Behaviour(expire=False))
    t0 = time.perf_counter()
    queue = [a.msg for a in new.on_frame(welcome, 0.0) if isinstance(a, Send)]
    import_s = time.perf_counter() - t0
    sent = len(queue)
    forwarded = 0
    replies = 0
    dir_s: list[float] = []
    handle_s: list[float] = []
    while queue:
        msg = queue.pop(0)
        t0 = time.perf_counter()
        outs = d.on_frame(msg, 0.0)
        dir_s.append(time.perf_counter() - t0)
        for out in outs:
            forwarded += 1
            for p in existing:
                t0 = time.perf_counter()
                acts = p.on_frame(out, 0.0)
                handle_s.append(time.perf_counter() - t0)
                replies += sum(1 for a in acts if isinstance(a, Send))
            for a in new.on_frame(out, 0.0):
                if isinstance(a, Send):
                    queue.append(a.msg)
                    sent += 1
    # The sample's replies, multiplied out to the n existing peers.
    replies_all = round(replies * n / len(existing)) if existing else 0
    forwarded_all = forwarded + replies_all
    return {
        "n": n,
        "sent": sent + replies_all,
        "forwarded": forwarded_all,
        "deliveries": forwarded_all * (n + 1),
        "welcome bytes": welcome_bytes,
        "welcome encode ms": round(encode_s * 1000, 2),
        "welcome import ms": round(import_s * 1000, 2),
        "directory C us": round(max(dir_s) * 1e6, 1) if dir_s else None,
        "peer handles C us": round(sorted(handle_s)[len(handle_s) // 2] * 1e6, 1) if handle_s else None,
        "ready": new.ready,
        "knows all": len(new.peers) == n + 1,
    }


def simulate_interest(n: int, topics: int) -> dict[str, Any]:
    """A newcomer joining a mesh of *n* whose members announce their topics
    (member i publishes topic i mod *topics* and subscribes to the next, as in
    ``zeromesh bench interest``): how many data connections its welcome import
    makes (each peer of the mesh is in the same position: times *n* + 1 for the
    mesh), how large the welcome is, and what the import costs."""
    d = Directory(PROXY, max_entries=n + 1)

    def roles(i: int) -> dict[str, Any]:
        pub, sub = b"t%d" % (i % topics), b"t%d" % ((i + 1) % topics)
        return {"i": 0, ext.PUBLISHES: ext.encode_topics((pub,)), ext.SUBSCRIBES: ext.encode_topics((sub,))}

    for i in range(n):
        d.on_frame(wire.Message(wire.Command.CONNECT, _uuid(i), _endpoint(i), roles(i)), 0.0)
    welcome = _welcome(d)
    new = PeerProtocol(
        _uuid(n),
        _endpoint(n),
        Behaviour(expire=False),
        publishes=(b"t%d" % (n % topics),),
        subscribes=(b"t%d" % ((n + 1) % topics),),
    )
    t0 = time.perf_counter()
    acts = new.on_frame(welcome, 0.0)
    import_s = time.perf_counter() - t0
    return {
        "connections": sum(1 for a in acts if isinstance(a, ConnectData)),
        "listed": len(new.snapshot()),
        "welcome bytes": len(wire.encode(welcome)),
        "import ms": round(import_s * 1000, 2),
    }


def bench_scaling(
    sizes: Sequence[int] = (100, 1_000, 10_000),
    topics: int = 10,
    proxies: int = 2,
    us_per_ping: float = 45.0,
    deliveries_per_s: float = 800_000.0,
    proxy_frames_per_s: float = 29_000.0,
) -> Result:
    """Discovery traffic of one join and the standing costs of a mesh of each
    size: full mesh against interest-scoped connections (each peer
    publishing one of *topics* topics and subscribing to one, counted on the
    state machines: :func:`simulate_interest`),
    one proxy (built) against *proxies* redundant ones (not built: every
    frame through each), heartbeats on every connection (0.2.0) against
    watching 3 peers each (built). *us_per_ping*, *deliveries_per_s* and
    *proxy_frames_per_s* are this machine's measured costs (``zeromesh bench
    idle``, ``proxy``) that turn counts into CPU and rates."""
    rows = []
    for n in sizes:
        # Each sample peer imports a welcome of n entries, which is O(n^2) today
        # (docs/scaling.md): one sample peer beyond 1,000 keeps the run in minutes.
        j = simulate_join(n, sample=10 if n <= 1_000 else 1)
        full = n * (n - 1)
        interest = simulate_interest(n, topics)
        scoped = interest["connections"] * n  # every peer is in the newcomer's position
        # Pings per second: 0.2.0 pinged every data connection (0.5 s from the
        # subscriber, 5 s from the publisher); the watch pings 3 probes per peer
        # (1 s) plus the proxy links (each peer's proxy SUB and the proxy's
        # probe, 0.5 s) plus every data PUB's slow pings (60 s).
        pings_scoped = scoped / 0.5 + scoped / 5.0
        pings_today = full / 0.5 + full / 5.0
        slow = 1 / timing.SLOW_HEARTBEAT_IVL
        pings_watch = 3 * n / timing.WATCH_HEARTBEAT_IVL + 2 * n / timing.HEARTBEAT_IVL + full * slow
        pings_watch_scoped = 3 * n / timing.WATCH_HEARTBEAT_IVL + 2 * n / timing.HEARTBEAT_IVL + scoped * slow
        rows.append(
            {
                "peers": n,
                "join: frames sent": j["sent"],
                "join: frames forwarded": j["forwarded"],
                "join: deliveries (1 proxy)": j["deliveries"],
                f"join: deliveries ({proxies} proxies, not built)": j["deliveries"] * proxies,
                "welcome KB": round(j["welcome bytes"] / 1024, 1),
                "welcome encode ms": j["welcome encode ms"],
                "welcome import ms (newcomer)": j["welcome import ms"],
                "directory per C us": j["directory C us"],
                "peer per C us": j["peer handles C us"],
                "joins/s one proxy fans out": round(min(deliveries_per_s / (n + 1), proxy_frames_per_s), 1),
                "data connections full mesh": full,
                f"data connections, {topics} topics": scoped,
                f"newcomer: listed / connected, {topics} topics": f"{interest['listed']} / {interest['connections']}",
                f"welcome KB, {topics} topics": round(interest["welcome bytes"] / 1024, 1),
                f"welcome import ms, {topics} topics": interest["import ms"],
                "fds per peer full mesh": 2 * (n - 1) + 20,
                f"fds per peer, {topics} topics": 2 * interest["connections"] + 20,
                "heartbeat CPU cores, every data connection (0.2.0)": round(pings_today * us_per_ping / 1e6, 2),
                f"heartbeat CPU cores, every connection, {topics} topics": round(pings_scoped * us_per_ping / 1e6, 2),
                "heartbeat CPU cores, watch 3 (built)": round(pings_watch * us_per_ping / 1e6, 3),
                f"heartbeat CPU cores, watch 3, {topics} topics": round(pings_watch_scoped * us_per_ping / 1e6, 3),
            }
        )
    return {
        "name": "scaling",
        "title": "One join into a mesh of N, and its standing costs (state machines; measured unit costs)",
        "params": {
            "sizes": list(sizes),
            "topics": topics,
            "proxies": proxies,
            "us_per_ping": us_per_ping,
            "deliveries_per_s": deliveries_per_s,
            "proxy_frames_per_s": proxy_frames_per_s,
        },
        "rows": rows,
        "summary": {"note": "'not built' columns are arithmetic on the built protocol's counts"},
    }
