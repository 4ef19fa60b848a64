"""Full-mesh convergence, peers hosted in child processes.

Child entry point: ``python -m zeromesh.bench.converge --proxy EP --k K --n N``
(one host process of *K* peers of a mesh of *N*). A full mesh of N in-process
peers holds 2*N*N TCP file descriptors (both ends of every data connection),
beyond one process's limit near N = 100, hence the host processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from ..harness import procs
from ..peer import Peer
from ..protocol import Behaviour
from ..proxy import Proxy
from ..sockets import SocketPolicy
from .common import (
    POLL,
    WAIT_CAP,
    Result,
    classic_config,
    ms,
    observed,
    read_json_line,
    say,
    send_line,
    stop_all,
)


def host_main(argv: Sequence[str]) -> int:
    """A child process hosting *k* peers of a mesh of *n*: waits for ``go`` on
    stdin (unless --now), starts its peers, reports when each knows all *n*
    and (--connected) every data connection is up, then waits for ``stop``.
    Reports are JSON lines on stdout with wall-clock times."""
    ap = argparse.ArgumentParser(prog="python -m zeromesh.bench.converge")
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--k", type=int, required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--classic", action="store_true")
    ap.add_argument("--now", action="store_true", help="start at once (measure process start too)")
    ap.add_argument("--no-heartbeats", action="store_true", help="no ZMTP heartbeats (their cost, measured)")
    ap.add_argument("--timeout", type=float, default=WAIT_CAP)
    a = ap.parse_args(argv)
    t_main = time.time()
    b, pol = classic_config() if a.classic else (Behaviour(), SocketPolicy())
    b = observed(b)
    if a.no_heartbeats:
        pol = dataclasses.replace(pol, heartbeats=False)

    say(armed=True, t_main=t_main)
    if not a.now and sys.stdin.readline().strip() != "go":
        return 1
    t_go = time.time()
    peers = [Peer(a.proxy, layers=(b, pol)).start() for _ in range(a.k)]
    t_started = time.time()
    t_known: float | None = None
    t_conn: float | None = None
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        known = all(len(p.peers()) == a.n for p in peers)
        if known and t_known is None:
            t_known = time.time()
        if known and all(p.protocol is not None and p.protocol.pending_connections() == 0 for p in peers):
            t_conn = time.time()
            break
        time.sleep(POLL)  # sleep: polling interval of a bounded wait
    frames = sum(p.protocol.counters.frames for p in peers if p.protocol is not None)
    say(t_main=t_main, t_go=t_go, t_started=t_started, t_known=t_known, t_connected=t_conn, frames=frames)
    sys.stdin.readline()  # "stop", or EOF when the parent is gone
    stop_all(peers)
    say(stopped=True)
    return 0


class Hosts:
    """Child processes running :func:`host_main`; stopped (bounded) on close."""

    def __init__(
        self,
        proxy: str,
        n: int,
        per_host: int,
        classic: bool = False,
        now: bool = False,
        timeout: float = WAIT_CAP,
        heartbeats: bool = True,
    ) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        counts = [per_host] * (n // per_host) + ([n % per_host] if n % per_host else [])
        self.t_spawn = time.time()
        for k in counts:
            cmd = (
                [
                    sys.executable,
                    "-m",
                    "zeromesh.bench.converge",
                    "--proxy",
                    proxy,
                    "--k",
                    str(k),
                    "--n",
                    str(n),
                    "--timeout",
                    str(timeout),
                ]
                + (["--classic"] if classic else [])
                + (["--now"] if now else [])
                + ([] if heartbeats else ["--no-heartbeats"])
            )
            self.procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        self.armed = [read_json_line(p, timeout) for p in self.procs]

    def go(self) -> float:
        t0 = time.time()
        for p in self.procs:
            send_line(p, "go")
        return t0

    def results(self, timeout: float) -> list[dict[str, Any]]:
        return [read_json_line(p, timeout) for p in self.procs]

    def close(self) -> None:
        for p in self.procs:
            send_line(p, "stop")
        deadline = time.monotonic() + 20.0
        for p in self.procs:
            procs.stop(p, None, max(0.1, deadline - time.monotonic()))


def _converge_once(
    n: int, per_host: int, classic: bool, now: bool, timeout: float, heartbeats: bool = True
) -> dict[str, Any]:
    with Proxy("tcp://127.0.0.1:0", mode="classic" if classic else "directory") as proxy:
        hosts = Hosts(
            proxy.endpoint, n, per_host, classic=classic, now=now, timeout=timeout, heartbeats=heartbeats
        )
        try:
            t0 = hosts.t_spawn if now else hosts.go()
            res = hosts.results(timeout + 10.0)
        finally:
            hosts.close()
    known = [r["t_known"] for r in res]
    conn = [r["t_connected"] for r in res]
    row: dict[str, Any] = {
        "peers": n,
        "processes": len(res),
        "known ms": ms(max(known) - t0) if None not in known else None,
        "connected ms": ms(max(conn) - t0) if None not in conn else None,
        "discovery frames": sum(r["frames"] for r in res),
    }
    if now:
        row["last process up ms"] = ms(max(r["t_main"] for r in res) - t0)
        row["connected after last up ms"] = (
            ms(max(conn) - max(r["t_main"] for r in res)) if None not in conn else None
        )
    return row


def bench_converge(
    sizes: Sequence[int] = (2, 10, 50, 100),
    classic_sizes: Sequence[int] = (2, 10, 50),
    per_host: int = 25,
    processes: int = 20,
    timeout: float = WAIT_CAP,
    heartbeat_cost: bool = True,
) -> Result:
    """N peers started together until every peer knows every other and every
    data connection is up (the data SUB's monitor). In-process peers: up to
    *per_host* ``Peer`` objects per host process, started on one ``go``; the
    time excludes interpreter start. Then *processes* one-peer processes,
    spawn included."""
    rows = []
    for n in sizes:
        for classic in (False, True):
            if classic and n not in classic_sizes:
                continue
            row = _converge_once(n, per_host, classic, False, timeout)
            rows.append({"peer": "classic" if classic else "zeromesh", "mode": "in-process", **row})
    if heartbeat_cost:  # what the ZMTP heartbeats on N^2 connections cost the largest mesh
        row = _converge_once(max(sizes), per_host, False, False, timeout, heartbeats=False)
        rows.append({"peer": "zeromesh, no heartbeats", "mode": "in-process", **row})
    if processes:
        for classic in (False, True):
            row = _converge_once(processes, 1, classic, True, timeout)
            rows.append({"peer": "classic" if classic else "zeromesh", "mode": "processes", **row})
    n100 = [
        r for r in rows if r["peer"] == "zeromesh" and r["mode"] == "in-process" and r["peers"] == max(sizes)
    ]
    return {
        "name": "converge",
        "title": "Full-mesh convergence: start to every peer knowing every other and every data connection up",
        "params": {
            "sizes": list(sizes),
            "classic_sizes": list(classic_sizes),
            "per_host": per_host,
            "processes": processes,
        },
        "rows": rows,
        "summary": {
            f"zeromesh_n{max(sizes)}_connected_ms": n100[0]["connected ms"] if n100 else None,
            "goal": "N = 100 in under 1 s in-process",
        },
    }


if __name__ == "__main__":
    sys.exit(host_main(sys.argv[1:]))
