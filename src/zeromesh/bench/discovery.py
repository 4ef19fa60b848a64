"""Discovery cost of one join: the pure state machines (exact) and a real mesh."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import wire
from ..directory import Directory
from ..peer import Peer
from ..protocol import Behaviour, PeerProtocol, Send
from ..proxy import Proxy
from ..sockets import SocketPolicy
from ..testing.waits import wait_for
from .common import WAIT_CAP, Result, classic_config, fd_budget, fds_for_mesh, mesh, ms, stop_all


def simulate_join(n: int, classic: bool) -> dict[str, int]:
    """Exact discovery traffic of one join into a converged mesh of *n*, on
    the pure state machines (no sockets, no clock): a FIFO proxy that stamps
    (zeromesh) or forwards as is (classic), every frame delivered to every
    peer. Returns frames sent by peers, forwarded, and delivered."""
    d = Directory("00000000-0000-4000-8000-000000000000")
    b = Behaviour.classic() if classic else Behaviour()
    protos: list[PeerProtocol] = []
    counts = {"sent": 0, "forwarded": 0, "delivered": 0}

    def welcome() -> wire.Message:
        return wire.Message(wire.Command.WELCOME, d.proxy_uuid, "tcp://127.0.0.1:1", {} if classic else d.welcome_ext())

    def run(queue: list[wire.Message], count: bool) -> None:
        while queue:
            msg = queue.pop(0)
            for out in [msg] if classic else d.on_frame(msg, 0.0):
                if count:
                    counts["forwarded"] += 1
                for p in protos:
                    if count:
                        counts["delivered"] += 1
                    for a in p.on_frame(out, 0.0):
                        if isinstance(a, Send):
                            queue.append(a.msg)
                            if count:
                                counts["sent"] += 1

    def join(i: int, count: bool) -> None:
        p = PeerProtocol(f"00000000-0000-4000-8000-{i:012d}", f"tcp://127.0.0.1:{10000 + i}", b)
        q = [a.msg for a in p.start(0.0) + p.on_frame(welcome(), 0.0) if isinstance(a, Send)]
        if classic:  # the classic peer's first loop turn sends its C
            q += [a.msg for a in p.tick(0.0) if isinstance(a, Send)]
        protos.append(p)
        if count:
            counts["sent"] += len(q)
        run(q, count)

    for i in range(n):
        if classic:  # building an all-classic mesh costs O(n^3) frames: skip to its end state
            _join_quiet(protos, i)
        else:
            join(i, False)
    for p in protos:
        p.behaviour = b
    join(n, True)
    assert all(len(p.peers) == n + 1 for p in protos), "simulated mesh did not converge"
    return counts


def _join_quiet(protos: list[PeerProtocol], i: int) -> None:
    """Add a peer that already knows the whole mesh, and tell the mesh (no traffic counted)."""
    p = PeerProtocol(f"00000000-0000-4000-8000-{i:012d}", f"tcp://127.0.0.1:{10000 + i}", Behaviour())
    me = wire.Message(wire.Command.CONNECT, p.uuid, p.endpoint)
    for q in [*protos, p]:
        q.on_frame(me, 0.0)
    for q in protos:
        p.on_frame(wire.Message(wire.Command.CONNECT, q.uuid, q.endpoint), 0.0)
    protos.append(p)


def _quiet(proxy: Proxy, peers: Sequence[Peer], settle: float = 0.2) -> None:
    """Wait until no discovery frame has moved for *settle* seconds (bounded)."""
    last = (-1, -1)
    since = time.monotonic()
    deadline = since + WAIT_CAP
    while time.monotonic() < deadline:
        now = (proxy.forwarded, sum(p.protocol.counters.frames for p in peers if p.protocol))
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= settle:
            return
        time.sleep(0.01)  # sleep: polling interval of a bounded wait


def measure_join_cost(n: int, classic: bool) -> dict[str, int]:
    """One join into a real in-process mesh of *n*, counted at the proxy
    (forwarded x subscribers) and at the peers (frames received, sent).
    The mesh is built with zeromesh's O(N) rule; for the classic count every
    existing peer then gets the seed's re-announce rule and the newcomer is a
    classic peer."""
    with mesh(n, policy=SocketPolicy(heartbeats=False)) as (proxy, peers):
        _quiet(proxy, peers)
        if classic:
            for p in peers:
                assert p.protocol is not None
                p.protocol.behaviour = dataclasses.replace(p.protocol.behaviour, always_reannounce=True)
        f0 = proxy.forwarded
        r0 = sum(p.protocol.counters.frames for p in peers if p.protocol)
        s0 = sum(p.protocol.counters.sent for p in peers if p.protocol)
        b, pol = classic_config() if classic else (Behaviour(), SocketPolicy(heartbeats=False))
        new = Peer(proxy.endpoint, layers=(b, pol)).start()
        try:
            everyone = [*peers, new]
            wait_for(lambda: all(len(p.peers()) == n + 1 for p in everyone), WAIT_CAP)
            _quiet(proxy, everyone)
            assert new.protocol is not None
            received = sum(p.protocol.counters.frames for p in peers if p.protocol) - r0
            received += new.protocol.counters.frames - 1  # its welcome is not channel traffic
            sent = sum(p.protocol.counters.sent for p in peers if p.protocol) - s0 + new.protocol.counters.sent
            return {
                "sent": sent,
                "forwarded": proxy.forwarded - f0,
                "delivered": (proxy.forwarded - f0) * (n + 1),
                "received": received,
            }
        finally:
            new.stop(10.0)


def _mixed_mesh(n: int, classic_every: int) -> dict[str, Any]:
    """*n* peers started together, every *classic_every*-th a classic peer,
    on a directory proxy: time until every peer knows every other."""
    with Proxy("tcp://127.0.0.1:0") as proxy:
        peers: list[Peer] = []
        try:
            t0 = time.perf_counter()
            for i in range(n):
                b, pol = classic_config() if i % classic_every == 0 else (Behaviour(), SocketPolicy())
                peers.append(Peer(proxy.endpoint, layers=(b, pol)).start())
            want = {p.uuid for p in peers}
            ok = wait_for(lambda: all(set(p.peers()) == want for p in peers), WAIT_CAP)
            return {
                "peers": n,
                "classic peers": len(range(0, n, classic_every)),
                "converged": ok,
                "ms": ms(time.perf_counter() - t0) if ok else None,
                "forwarded": proxy.forwarded,
            }
        finally:
            stop_all(peers)


def bench_discovery(
    real_sizes: Sequence[int] = (10, 25, 50, 80),
    sim_sizes: Sequence[int] = (10, 25, 50, 100, 150, 200),
    png: Path | None = None,
) -> Result:
    rows = []
    for n in sorted(set(real_sizes) | set(sim_sizes)):
        for classic in (False, True):
            row: dict[str, Any] = {"N": n, "peer": "classic" if classic else "zeromesh"}
            sim = simulate_join(n, classic) if n in sim_sizes else None
            if sim:
                row.update({"sim sent": sim["sent"], "sim deliveries": sim["delivered"]})
            if n in real_sizes and fds_for_mesh(n + 1) > fd_budget():
                row["sent"] = f"not run: needs ~{fds_for_mesh(n + 1)} fds, limit {fd_budget()}"
            elif n in real_sizes:
                real = measure_join_cost(n, classic)
                row.update(
                    {
                        "sent": real["sent"],
                        "forwarded": real["forwarded"],
                        "deliveries (proxy)": real["delivered"],
                        "received (peers)": real["received"],
                    }
                )
            rows.append(row)
    mixed = _mixed_mesh(20, 4)
    if png is not None:
        plot_discovery(rows, png)
    by = {(r["N"], r["peer"]): r for r in rows}
    big = max(sim_sizes)
    return {
        "name": "discovery",
        "title": "Discovery cost of one join into a mesh of N (frames on the discovery channel)",
        "params": {"real_sizes": list(real_sizes), "sim_sizes": list(sim_sizes)},
        "rows": rows,
        "mixed": mixed,
        "png": str(png) if png else None,
        "summary": {
            f"zeromesh_deliveries_n{big}": by[(big, "zeromesh")].get("sim deliveries"),
            f"classic_deliveries_n{big}": by[(big, "classic")].get("sim deliveries"),
            "mixed_mesh_converged": mixed["converged"],
            "goal": "O(N) deliveries per join; a mixed mesh still converges",
        },
    }


def plot_discovery(rows: Sequence[dict[str, Any]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for peer, colour in (("classic", "tab:red"), ("zeromesh", "tab:blue")):
        sim = [(r["N"], r["sim deliveries"]) for r in rows if r["peer"] == peer and "sim deliveries" in r]
        real = [(r["N"], r["received (peers)"]) for r in rows if r["peer"] == peer and "received (peers)" in r]
        if sim:
            ax.plot(*zip(*sim, strict=False), "-", color=colour, label=f"{peer} (state machines)")
        if real:
            ax.plot(*zip(*real, strict=False), "o", color=colour, label=f"{peer} (real mesh, received at peers)")
    ax.set_xlabel("N (peers already in the mesh)")
    ax.set_ylabel("discovery frames delivered for one join")
    ax.set_yscale("log")
    # Plain numbers on the axis (no mathtext: it would pull in more fonts).
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title("Deliveries per join: classic O(N²) vs zeromesh O(N)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
