"""Full-mesh convergence, peers hosted in child processes.

Child entry point: ``python -m zeromesh.bench.converge --proxy EP --k K --n N``
(one host process of *K* peers of a mesh of *N*). A full mesh of N in-process
peers holds 2*N*N TCP file descriptors (both ends of every data connection),
beyond one process's limit near N = 100, hence the host processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any, Literal

import zmq
from zmq.utils.monitor import recv_monitor_message

from .. import timing
from ..harness import procs
from ..lines import read_json_line
from ..peer import Peer
from ..protocol import WATCHED_PEERS, Behaviour
from ..proxy import Proxy
from ..sockets import SocketPolicy
from ..transport import last_endpoint, set_transport_options
from .common import (
    POLL,
    WAIT_CAP,
    Result,
    classic_config,
    ms,
    observed,
    say,
    send_line,
    stop_all,
)

#: The report of a host that never answered.
FAILED: dict[str, Any] = {
    "failed": True,
    "t_main": None,
    "t_known": None,
    "t_connected": None,
    "frames": 0,
    "cpu": 0.0,
    "zmq_cpu": 0.0,
}

#: What a convergence run hosts: zeromesh peers, the seed's classic peers, or raw pyzmq (the limit).
Impl = Literal["zeromesh", "classic", "raw"]


def host_main(argv: Sequence[str]) -> int:
    """A child process hosting *k* peers of a mesh of *n*: waits for ``go`` on
    stdin (unless --now), starts its peers, reports when each knows all *n*
    and every data connection is up, then waits for ``stop``. With --raw, the
    limit: *k* raw pyzmq PUB/SUB pairs, bound before ``go``, that connect to
    the *n* endpoints handed over with ``go``. Reports are JSON lines on
    stdout with wall-clock times."""
    ap = argparse.ArgumentParser(prog="python -m zeromesh.bench.converge")
    ap.add_argument("--proxy", help="the proxy (not with --raw)")
    ap.add_argument("--k", type=int, required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--classic", action="store_true")
    ap.add_argument("--raw", action="store_true", help="raw pyzmq sockets, endpoints given with go")
    ap.add_argument("--now", action="store_true", help="start at once (measure process start too)")
    ap.add_argument("--no-heartbeats", action="store_true", help="no ZMTP heartbeats (their cost, measured)")
    ap.add_argument("--no-kick", action="store_true", help="zeromesh without the data PUB's kick timer")
    ap.add_argument(
        "--watch-all",
        action="store_true",
        help="zeromesh: heartbeats on every data connection, no probes (Tuning(watch=None), 0.2.0's liveness)",
    )
    ap.add_argument(
        "--watch",
        type=int,
        default=0,
        help="raw: heartbeats on the connections to the next WATCH endpoints (a ring) only, as "
        "zeromesh's watchers (default: on every connection)",
    )
    ap.add_argument(
        "--topics",
        type=int,
        default=0,
        help="interest-scoped: peer i (counted from --first) publishes topic i %% T and subscribes to (i + 1) %% T",
    )
    ap.add_argument("--first", type=int, default=0, help="the mesh-wide index of this host's first peer")
    ap.add_argument("--timeout", type=float, default=WAIT_CAP)
    a = ap.parse_args(argv)
    if a.raw:
        return _raw_host(a.k, a.n, not a.no_heartbeats, a.timeout, a.watch)
    if not a.proxy:
        ap.error("--proxy is required without --raw")
    t_main = time.time()
    b, pol = classic_config() if a.classic else (Behaviour(), SocketPolicy())
    b = observed(b)
    if a.no_heartbeats:
        pol = dataclasses.replace(pol, heartbeats=False, probes=False)
        b = dataclasses.replace(b, watch=0)
    elif a.watch_all:
        pol = dataclasses.replace(pol, data_heartbeats=True, probes=False)
        b = dataclasses.replace(b, watch=None)
    if a.no_kick:
        pol = dataclasses.replace(pol, kick=False)

    say(armed=True, t_main=t_main, rss=_rss())
    if not a.now and sys.stdin.readline().strip() != "go":
        return 1
    t_go, cpu0, threads0 = time.time(), _cpu(), _thread_cpu()
    ready: list[float] = []  # the ready events' times (wall clock), appended by the peers' threads
    peers = [
        Peer(
            a.proxy,
            layers=(b, pol),
            on_event=lambda ev: ready.append(ev.t) if ev.kind == "ready" else None,
            publishes=topic_roles(a.first + i, a.topics)[0],
            subscribes=topic_roles(a.first + i, a.topics)[1],
        ).start()
        for i in range(a.k)
    ]
    t_started = time.time()
    t_known, t_conn = _watch(peers, a.n, a.timeout)
    cpu = _cpu() - cpu0
    zmq_cpu = _zmq_cpu(threads0)
    counters = [p.protocol.counters for p in peers if p.protocol is not None]
    say(
        cpu=cpu,
        zmq_cpu=zmq_cpu,
        t_main=t_main,
        t_go=t_go,
        t_started=t_started,
        t_ready=max(ready) if len(ready) == a.k else None,
        t_known=t_known,
        t_connected=t_conn,
        frames=sum(c.frames for c in counters),
        sent=sum(c.sent for c in counters),
        resyncs=sum(c.resyncs for c in counters),
        reannounced=sum(c.reannounced for c in counters),
        connections=sum(p.stats().data_connections for p in peers),
        rss=_rss(),
        fds=len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None,
    )
    sys.stdin.readline()  # "stop", or EOF when the parent is gone
    stop_all(peers)
    say(stopped=True)
    return 0


def topic_roles(i: int, topics: int) -> tuple[list[bytes] | None, list[bytes] | None]:
    """Peer *i*'s (publishes, subscribes) in an interest-scoped mesh of
    *topics* topics (0: the full mesh, both None): it publishes one topic and
    subscribes to the next, round-robin, so each peer wants the N / *topics*
    publishers of one topic, itself not among them."""
    if topics <= 0:
        return None, None
    return [b"t%d" % (i % topics)], [b"t%d" % ((i + 1) % topics)]


def _rss() -> int | None:
    """This process's resident set in bytes (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _thread_cpu() -> dict[str, tuple[str, float]]:
    """CPU seconds of each thread of this process (id -> kind, seconds); the
    kind is ``zmq`` for libzmq's own threads (``ZMQbg/IO/*``, ``ZMQbg/Reaper``),
    ``python`` for the rest (the peers' loops, the watcher). Linux only
    (/proc); elsewhere empty."""
    out: dict[str, tuple[str, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    for t in tasks:
        try:
            with open(f"/proc/self/task/{t}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        out[t] = ("zmq" if name.startswith("ZMQbg") else "python", cpu)
    return out


def _zmq_cpu(before: dict[str, tuple[str, float]]) -> float:
    """CPU seconds libzmq's threads used since *before* (a :func:`_thread_cpu`)."""
    now = _thread_cpu()
    return sum(cpu - before.get(t, (kind, 0.0))[1] for t, (kind, cpu) in now.items() if kind == "zmq")


def _cpu() -> float:
    """CPU seconds this process has used (all threads, user + system)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _watch(peers: Sequence[Peer], n: int, timeout: float) -> tuple[float | None, float | None]:
    """When every peer knew all *n*, and when every data connection was up.

    Both only grow while nothing fails, so one peer is checked per poll, the
    next once it is done: the watcher costs the peers' loops (same GIL) as
    little as it can, one snapshot copy per poll rather than *k*."""
    t_known: float | None = None
    known = conn = 0
    deadline = time.monotonic() + timeout
    while conn < len(peers) and time.monotonic() < deadline:
        if known < len(peers):
            if len(peers[known].peers()) == n:
                known += 1
                if known == len(peers):
                    t_known = time.time()
                continue
        else:
            proto = peers[conn].protocol
            if proto is not None and proto.pending_connections() == 0:
                conn += 1
                continue
        time.sleep(POLL)  # sleep: polling interval of a bounded wait
    return t_known, time.time() if conn == len(peers) else None


def _raw_host(k: int, n: int, heartbeats: bool, timeout: float, watch: int = 0) -> int:
    """*k* raw pyzmq peers: a context each (as a ``Peer``), a PUB and a SUB
    with zeromesh's transport options, and a monitor that reports only
    handshakes. Nothing else: no proxy, no discovery, one thread."""
    t_main = time.time()
    ctxs: list[zmq.Context[Any]] = []
    socks: list[zmq.Socket[Any]] = []
    subs: list[zmq.Socket[Any]] = []
    mons: list[zmq.Socket[Any]] = []
    endpoints: list[str] = []
    try:
        for _ in range(k):
            ctx: zmq.Context[Any] = zmq.Context()
            ctxs.append(ctx)
            pub = ctx.socket(zmq.PUB)
            socks.append(pub)
            pub.setsockopt(zmq.LINGER, 0)
            pub_ivl = timing.SLOW_HEARTBEAT_IVL
            set_transport_options(pub, heartbeats, pub_ivl, 2 * pub_ivl)
            pub.bind("tcp://127.0.0.1:0")
            endpoints.append(last_endpoint(pub))
            sub = ctx.socket(zmq.SUB)
            socks.append(sub)
            sub.setsockopt(zmq.LINGER, 0)
            set_transport_options(sub, heartbeats)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            subs.append(sub)
            mon = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
            mon.setsockopt(zmq.LINGER, 0)
            mons.append(mon)
        say(armed=True, t_main=t_main, endpoints=endpoints)
        line = sys.stdin.readline()
        if not line.startswith("{"):
            return 1
        everyone: list[str] = json.loads(line)["go"]
        t_go, cpu0, threads0 = time.time(), _cpu(), _thread_cpu()
        for sub, own in zip(subs, endpoints, strict=True):
            at = everyone.index(own)
            ring = everyone[at + 1 :] + everyone[: at + 1]
            for i, ep in enumerate(ring):
                if watch:  # heartbeat settings are taken per connection, at connect()
                    sub.setsockopt(zmq.HEARTBEAT_IVL, int(timing.WATCH_HEARTBEAT_IVL * 1000) if i < watch else 0)
                sub.connect(ep)
        t_started = time.time()
        poller = zmq.Poller()
        for m in mons:
            poller.register(m, zmq.POLLIN)
        # Every socket polled, as an application polls its SUB for data and a
        # publisher sends: zmq_poll makes a socket process its commands (attach
        # each new pipe; the SUB sends it the subscription, the PUB reads it),
        # as zeromesh's loop does. Unpolled, that work would never be done (and
        # no publisher would ever learn of a subscription): a limit by omission.
        for sock in socks:
            poller.register(sock, zmq.POLLIN)
        up = dict.fromkeys(mons, 0)
        done = 0
        deadline = time.monotonic() + timeout
        while done < k and time.monotonic() < deadline:
            for m, _ in poller.poll(100):
                if m not in up:
                    continue
                while True:
                    try:
                        recv_monitor_message(m, zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    up[m] += 1
                    if up[m] == n:
                        done += 1
        t_conn = time.time() if done == k else None
        say(
            cpu=_cpu() - cpu0,
            zmq_cpu=_zmq_cpu(threads0),
            t_main=t_main,
            t_go=t_go,
            t_started=t_started,
            t_known=None,
            t_connected=t_conn,
            frames=0,
        )
        sys.stdin.readline()  # "stop", or EOF when the parent is gone
        return 0
    finally:
        for sock in mons + socks:
            sock.close(linger=0)
        for ctx in ctxs:
            ctx.term()
        say(stopped=True)


class Hosts:
    """Child processes running :func:`host_main`; stopped (bounded) on close."""

    def __init__(
        self,
        proxy: str | None,
        n: int,
        per_host: int,
        classic: bool = False,
        now: bool = False,
        timeout: float = WAIT_CAP,
        heartbeats: bool = True,
        extra: Sequence[str] = (),
    ) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        counts = [per_host] * (n // per_host) + ([n % per_host] if n % per_host else [])
        self.t_spawn = time.time()
        for first, k in zip(itertools.accumulate([0, *counts]), counts, strict=False):
            cmd = [sys.executable, "-m", "zeromesh.bench.converge", "--k", str(k), "--n", str(n)]
            cmd += ["--first", str(first)]
            cmd += ["--timeout", str(timeout)] + (["--proxy", proxy] if proxy else ["--raw"])
            cmd += (["--classic"] if classic else []) + (["--now"] if now else [])
            cmd += ([] if heartbeats else ["--no-heartbeats"]) + list(extra)
            self.procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        self.armed = [read_json_line(p, timeout) for p in self.procs]

    def go(self) -> float:
        """Start every host; raw hosts get every endpoint with their ``go``."""
        endpoints = [ep for a in self.armed for ep in a.get("endpoints", [])]
        line = json.dumps({"go": endpoints}) if endpoints else "go"
        t0 = time.time()
        for p in self.procs:
            send_line(p, line)
        return t0

    def results(self, timeout: float) -> list[dict[str, Any]]:
        """Each host's report; a host that died or never answered (a libzmq
        assertion has been seen to end one) reports nothing: the figures
        that need it are then missing, and the run goes on."""
        deadline = time.monotonic() + timeout
        out = []
        for p in self.procs:
            try:
                out.append(read_json_line(p, max(0.1, deadline - time.monotonic())))
            except (RuntimeError, ValueError):
                out.append(dict(FAILED))
        return out

    def close(self) -> None:
        for p in self.procs:
            send_line(p, "stop")
        deadline = time.monotonic() + 20.0
        for p in self.procs:
            procs.stop(p, None, max(0.1, deadline - time.monotonic()))


def _median(runs: Sequence[dict[str, Any]], key: str) -> float | None:
    xs = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(xs), 2) if xs else None


def _row(res: Sequence[dict[str, Any]], t0: float, n: int, now: bool) -> dict[str, Any]:
    known = [r["t_known"] for r in res]
    conn = [r["t_connected"] for r in res]
    up = [r["t_main"] for r in res if r["t_main"] is not None]
    row: dict[str, Any] = {
        "peers": n,
        "processes": len(res),
        "known ms": ms(max(known) - t0) if None not in known else None,
        "connected ms": ms(max(conn) - t0) if None not in conn else None,
        "discovery frames": sum(r["frames"] for r in res),
        "host CPU s": round(sum(r["cpu"] for r in res), 2),
        "of which libzmq threads s": round(sum(r["zmq_cpu"] for r in res), 2),
    }
    if now:
        row["last process up ms"] = ms(max(up) - t0) if up else None
        row["connected after last up ms"] = ms(max(conn) - max(up)) if None not in conn and up else None
    failed = sum(1 for r in res if r.get("failed"))
    if failed:
        row["failed hosts"] = failed
    return row


def converge_once(
    n: int,
    per_host: int,
    impl: Impl = "zeromesh",
    now: bool = False,
    timeout: float = WAIT_CAP,
    heartbeats: bool = True,
) -> dict[str, Any]:
    """One convergence of *n* peers hosted *per_host* to a process: ``go``
    (or, with *now*, process spawn) to the last peer knowing all and to the
    last data connection up."""
    if impl == "raw":
        # zeromesh's heartbeat settings: on the connections to the next
        # WATCHED_PEERS endpoints of a ring (its watchers' probes), not on all.
        watch = ("--watch", str(WATCHED_PEERS)) if heartbeats else ()
        hosts = Hosts(None, n, per_host, timeout=timeout, heartbeats=heartbeats, extra=watch)
        try:
            t0 = hosts.go()
            return _row(hosts.results(timeout + 10.0), t0, n, False)
        finally:
            hosts.close()
    classic = impl == "classic"
    with Proxy("tcp://127.0.0.1:0", mode="classic" if classic else "directory") as proxy:
        hosts = Hosts(proxy.endpoint, n, per_host, classic=classic, now=now, timeout=timeout, heartbeats=heartbeats)
        try:
            t0 = hosts.t_spawn if now else hosts.go()
            res = hosts.results(timeout + 10.0)
        finally:
            hosts.close()
    return _row(res, t0, n, now)


def bench_converge(
    sizes: Sequence[int] = (10, 50, 100),
    classic_sizes: Sequence[int] = (10, 50),
    per_host: int = 25,
    processes: int = 20,
    timeout: float = WAIT_CAP,
    rounds: int = 3,
    heartbeats: Sequence[bool] = (True, False),
) -> Result:
    """N peers started together until every peer knows every other and every
    data connection is up (the data SUB's monitor), against raw pyzmq's
    limit in the same run: the same hosting (up to *per_host* peers per host
    process, a context each, started on one ``go``; interpreter start
    excluded), the same transport options, every endpoint handed over in
    advance, no discovery. zeromesh and raw alternate, *rounds* times, with
    heartbeats and without; the medians and their ratio are the row. Classic
    (the seed's peer) runs once per size in *classic_sizes*. Then
    *processes* one-peer processes, spawn included."""
    rows: list[dict[str, Any]] = []
    ratios: dict[str, float | None] = {}
    for hb in heartbeats:
        for n in sizes:
            runs: dict[str, list[dict[str, Any]]] = {"zeromesh": [], "raw": []}
            for _ in range(rounds):
                for impl in ("zeromesh", "raw"):
                    runs[impl].append(converge_once(n, per_host, impl, timeout=timeout, heartbeats=hb))
            med = {impl: _median(r, "connected ms") for impl, r in runs.items()}
            ratio = round(med["zeromesh"] / med["raw"], 2) if med["zeromesh"] and med["raw"] else None
            # CPU seconds are steadier than wall time on a shared machine.
            cpu = {impl: _median(r, "host CPU s") for impl, r in runs.items()}
            cpu_ratio = round(cpu["zeromesh"] / cpu["raw"], 2) if cpu["zeromesh"] and cpu["raw"] else None
            ratios[f"n{n}_{'hb' if hb else 'nohb'}"] = ratio
            for impl in ("raw", "zeromesh"):
                rows.append(
                    {
                        "peer": "raw pyzmq" if impl == "raw" else "zeromesh",
                        "heartbeats": hb,
                        "mode": "in-process",
                        "peers": n,
                        "processes": runs[impl][0]["processes"],
                        "rounds": len(runs[impl]),
                        "known ms": _median(runs[impl], "known ms"),
                        "connected ms": med[impl],
                        "all connected ms": [r["connected ms"] for r in runs[impl]],
                        "discovery frames": _median(runs[impl], "discovery frames"),
                        "ratio vs raw": ratio if impl == "zeromesh" else None,
                        "host CPU s": cpu[impl],
                        "of which libzmq threads s": _median(runs[impl], "of which libzmq threads s"),
                        "CPU ratio vs raw": cpu_ratio if impl == "zeromesh" else None,
                    }
                )
            if hb and n in classic_sizes:
                row = converge_once(n, per_host, "classic", timeout=timeout)
                rows.append({"peer": "classic", "heartbeats": False, "mode": "in-process", **row})
    if processes:
        impls: tuple[Impl, ...] = ("zeromesh", "classic")
        for impl in impls:
            row = converge_once(processes, 1, impl, now=True, timeout=timeout)
            rows.append({"peer": impl, "heartbeats": impl == "zeromesh", "mode": "processes", **row})
    return {
        "name": "converge",
        "title": "Full-mesh convergence: start to every peer knowing every other and every data connection up",
        "params": {
            "sizes": list(sizes),
            "classic_sizes": list(classic_sizes),
            "per_host": per_host,
            "processes": processes,
            "rounds": rounds,
        },
        "rows": rows,
        "summary": {f"ratio_{k}": v for k, v in ratios.items()} | {"goal": "N = 100 within 1.15x of raw"},
    }


if __name__ == "__main__":
    sys.exit(host_main(sys.argv[1:]))
