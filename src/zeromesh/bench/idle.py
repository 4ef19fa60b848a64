"""Idle cost of a full mesh: CPU per peer once everything is connected.

A full mesh of N holds N*(N-1) data connections; with ZMTP heartbeats on each
of them (0.2.0's liveness) an idle mesh burns CPU in libzmq's I/O threads:
O(N^2) pings per interval. zeromesh now heartbeats only each peer's probes of
the members it watches (O(N)). This benchmark hosts the mesh as
:mod:`.converge` does (host processes of 25 peers), waits until it is fully
connected, then measures the CPU every host process (and the proxy: this
process, which only sleeps meanwhile) uses over a quiet interval. Raw pyzmq
with the same heartbeat settings (a ring of watched connections), with
heartbeats everywhere and without any run in the same run, alternating.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Sequence
from typing import Any

import psutil

from ..protocol import WATCHED_PEERS
from ..proxy import Proxy
from .common import WAIT_CAP, Result
from .converge import Hosts, Impl


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def idle_once(
    n: int,
    per_host: int,
    impl: Impl,
    heartbeats: bool,
    seconds: float,
    timeout: float = WAIT_CAP,
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    """Converge a mesh of *n*, then measure *seconds* of idle CPU: the host
    processes' (psutil) and the proxy's (this process: it only sleeps)."""
    proxy = Proxy("tcp://127.0.0.1:0").start() if impl != "raw" else None
    try:
        hosts = Hosts(
            proxy.endpoint if proxy else None, n, per_host, timeout=timeout, heartbeats=heartbeats, extra=extra
        )
        try:
            hosts.go()
            res = hosts.results(timeout + 10.0)
            if any(r["t_connected"] is None for r in res):
                return {"converged": False}
            ps = [psutil.Process(p.pid) for p in hosts.procs]

            def host_cpu() -> float:
                return sum(t.user + t.system for t in (q.cpu_times() for q in ps))

            h0, s0, t0 = host_cpu(), _self_cpu(), time.monotonic()
            time.sleep(seconds)  # sleep: the idle interval is what is measured
            h1, s1, dt = host_cpu(), _self_cpu(), time.monotonic() - t0
        finally:
            hosts.close()
    finally:
        if proxy is not None:
            proxy.stop()
    return {"converged": True, "hosts": (h1 - h0) / dt, "proxy": (s1 - s0) / dt if proxy else 0.0}


def bench_idle(sizes: Sequence[int] = (100,), per_host: int = 25, seconds: float = 10.0, rounds: int = 2) -> Result:
    """Idle full mesh of each size: zeromesh (heartbeats on, its default, and
    off) against raw pyzmq with zeromesh's heartbeat settings and without,
    alternating, *rounds* each; medians. CPU % is of one core."""
    rows = []
    summary: dict[str, Any] = {}
    watch = str(WATCHED_PEERS)
    lanes: list[tuple[str, Impl, bool, tuple[str, ...]]] = [
        ("zeromesh", "zeromesh", True, ()),
        (f"raw pyzmq, heartbeats on {watch} connections per peer", "raw", True, ("--watch", watch)),
        ("zeromesh, heartbeats on every data connection (0.2.0)", "zeromesh", True, ("--watch-all",)),
        ("raw pyzmq, heartbeats on every connection", "raw", True, ()),
        ("zeromesh, no heartbeats", "zeromesh", False, ()),
        ("raw pyzmq, no heartbeats", "raw", False, ()),
    ]
    for n in sizes:
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _, _ in lanes}
        for _ in range(rounds):
            for name, impl, hb, extra in lanes:
                runs[name].append(idle_once(n, per_host, impl, hb, seconds, extra=extra))
        for name, _, hb, _ in lanes:
            ok = [r for r in runs[name] if r["converged"]]
            hosts = statistics.median(r["hosts"] for r in ok) if ok else None
            proxy = statistics.median(r["proxy"] for r in ok) if ok else None
            total = hosts + proxy if hosts is not None and proxy is not None else None
            rows.append(
                {
                    "peers": n,
                    "impl": name,
                    "heartbeats": hb,
                    "runs": len(ok),
                    "hosts CPU % of a core": round(100 * hosts, 2) if hosts is not None else None,
                    "proxy CPU %": round(100 * proxy, 2) if proxy is not None else None,
                    "CPU % per peer": round(100 * total / n, 3) if total is not None else None,
                }
            )
            summary[f"n{n}_{name}_pct_per_peer"] = rows[-1]["CPU % per peer"]
    return {
        "name": "idle",
        "title": f"Idle full mesh: CPU once connected, over {seconds:g} s (medians of {rounds})",
        "params": {"sizes": list(sizes), "per_host": per_host, "seconds": seconds, "rounds": rounds},
        "rows": rows,
        "summary": summary | {"goal": "<= 0.1% of a core per peer at N = 100"},
    }
