"""Interest-scoped connections against the full mesh (issue 13.4).

N peers hosted in child processes (:class:`zeromesh.bench.converge.Hosts`, up
to *per_host* ``Peer`` objects per process, started on one ``go``), through
one directory proxy. Interest-scoped: *topics* topics, peer i publishes topic
i mod T and subscribes to topic i + 1 mod T, so each peer wants the N / T
publishers of one topic. Full mesh: the defaults (everything), N - 1 each.

Per row: data connections (counted by the peers themselves), the time from
``go`` until every peer knows all N members and until every connection it
wants is up (its data SUB's monitor), and the memory (RSS of the host
processes, psutil) and file descriptors it costs per peer.

A full mesh holds both ends of every data connection: 2 x (N - 1) file
descriptors per peer, so a host of K peers needs about K x (2 (N - 1) + 20)
of its ``ulimit -n``; a size that does not fit is reported as such, with the
count, instead of being run.

With heartbeats on every data connection (0.2.0: about 0.013% of a core per
connection), 500 peers with 10 topics held 25,000 heartbeated connections,
about 3.3 cores of pings: 19 of 20 hosts never converged in 180 s. Now only
each peer's 3 probes and the proxy links heartbeat (docs/liveness.md), so
every size runs with heartbeats and without, up to *heartbeats_up_to*
(above it without only; the ``heartbeats`` column says which).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..proxy import Proxy
from .common import Result, fd_budget, ms
from .converge import Hosts

#: File descriptors a host process holds besides its peers' (interpreter,
#: pipes to the parent, the proxy is in the parent).
HOST_BASE_FDS = 64
#: Per peer besides its data connections: context, sockets' mailboxes,
#: monitors, wake-up pair, the proxy connections (see common.fds_for_mesh).
PEER_BASE_FDS = 20


def full_mesh_fds(n: int, per_host: int) -> int:
    """File descriptors one host of *per_host* peers needs in a full mesh of *n*."""
    return HOST_BASE_FDS + per_host * (2 * (n - 1) + PEER_BASE_FDS)


def largest_full_mesh(per_host: int, limit: int) -> int:
    """The largest full mesh whose hosts of *per_host* peers fit *limit* fds each."""
    return (limit - HOST_BASE_FDS - per_host * PEER_BASE_FDS) // (2 * per_host) + 1


def _rss(pids: Sequence[int]) -> list[int]:
    import psutil

    out = []
    for pid in pids:
        try:
            out.append(psutil.Process(pid).memory_info().rss)
        except psutil.Error:
            out.append(0)
    return out


def _fds(pids: Sequence[int]) -> list[int]:
    import psutil

    out = []
    for pid in pids:
        try:
            out.append(psutil.Process(pid).num_fds())
        except psutil.Error:
            out.append(0)
    return out


def interest_once(n: int, per_host: int, topics: int, timeout: float, heartbeats: bool = True) -> dict[str, Any]:
    """One mesh of *n* (interest-scoped with *topics* > 0, else the full mesh)."""
    extra = ["--topics", str(topics)] if topics else []
    with Proxy("tcp://127.0.0.1:0", heartbeats=heartbeats) as proxy:
        hosts = Hosts(proxy.endpoint, n, per_host, timeout=timeout, heartbeats=heartbeats, extra=extra)
        try:
            pids = [p.pid for p in hosts.procs]
            rss0 = _rss(pids)
            t0 = hosts.go()
            res = hosts.results(timeout + 10.0)
            # Measured while every host still holds its converged peers.
            rss1, fds = _rss(pids), _fds(pids)
            load1 = os.getloadavg()[0]
        finally:
            hosts.close()
    known = [r["t_known"] for r in res]
    conn = [r["t_connected"] for r in res]
    wanted = n * (n // topics) if topics else n * (n - 1)
    row: dict[str, Any] = {
        "mesh": f"interest, {topics} topics" if topics else "full mesh",
        "heartbeats": heartbeats,
        "peers": n,
        "processes": len(res),
        "known ms": ms(max(known) - t0) if None not in known else None,
        "connected ms": ms(max(conn) - t0) if None not in conn else None,
        "data connections": sum(r.get("connections", 0) for r in res),
        "wanted": wanted,
        "RSS per peer MB": round(sum(rss1) / n / 2**20, 2),
        "RSS added per peer MB": round((sum(rss1) - sum(rss0)) / n / 2**20, 2),
        "fds per peer": round(sum(fds) / n, 1),
        "max fds in a host": max(fds) if fds else None,
        "host CPU s": round(sum(r["cpu"] for r in res), 2),
        "load1": round(load1, 2),
    }
    failed = sum(1 for r in res if r.get("failed"))
    if failed:
        row["failed hosts"] = failed
    return row


def bench_interest(
    sizes: Sequence[int] = (100, 500),
    topics: int = 10,
    per_host: int = 25,
    timeout: float = 180.0,
    heartbeats_up_to: int = 500,
) -> Result:
    """Interest-scoped meshes of each size against the full mesh of the same
    size where its hosts' file descriptors fit ``ulimit -n``; with and without
    heartbeats up to *heartbeats_up_to* peers, without above (module doc)."""
    limit = fd_budget()
    top = largest_full_mesh(per_host, limit)
    rows: list[dict[str, Any]] = []
    for n in sizes:
        for hb in (True, False) if n <= heartbeats_up_to else (False,):
            rows.append(interest_once(n, per_host, topics, timeout, hb))
            if n <= top:
                rows.append(interest_once(n, per_host, 0, timeout, hb))
            else:
                rows.append(
                    {
                        "mesh": "full mesh",
                        "heartbeats": hb,
                        "peers": n,
                        "wanted": n * (n - 1),
                        "note": f"not run: a host of {per_host} needs {full_mesh_fds(n, per_host)} fds, "
                        f"ulimit -n is {limit}",
                    }
                )
    summary: dict[str, Any] = {
        "ulimit -n": limit,
        "largest full mesh": f"N = {top} with {per_host} peers per host process (2 x (N - 1) + {PEER_BASE_FDS} "
        f"fds per peer); the whole mesh then holds 2 x N x N = {2 * top * top} fds",
    }
    for r in rows:
        if r["mesh"] == "full mesh" or "note" in r:
            continue
        n, hb = r["peers"], r["heartbeats"]
        full = next((f for f in rows if (f["peers"], f["heartbeats"], f["mesh"]) == (n, hb, "full mesh")), None)
        if full is None or "note" in full or not full["data connections"]:
            continue
        lane = f"n{n} {'hb' if hb else 'no hb'}"
        summary[f"{lane} connections ratio"] = round(r["data connections"] / full["data connections"], 3)
        if r["connected ms"] and full["connected ms"]:
            summary[f"{lane} convergence ratio"] = round(r["connected ms"] / full["connected ms"], 2)
        summary[f"{lane} RSS per peer ratio"] = round(r["RSS per peer MB"] / full["RSS per peer MB"], 2)
    return {
        "name": "interest",
        "title": f"Interest-scoped connections ({topics} topics) against the full mesh, peers in host processes",
        "params": {
            "sizes": list(sizes),
            "topics": topics,
            "per_host": per_host,
            "timeout": timeout,
            "heartbeats_up_to": heartbeats_up_to,
        },
        "rows": rows,
        "summary": summary,
    }
