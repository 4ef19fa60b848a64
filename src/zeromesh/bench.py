"""The benchmark suite: ``zeromesh bench [join|converge|leave|discovery|data|churn|pyre|all]``.

Every benchmark is a library function returning a dict (``name``, ``params``,
``rows``: one dict per table row, ``summary``) and runs what it compares side
by side in the same run, since the machines it runs on are noisy: read the
ratios and medians. :func:`write_result` stores the JSON and a markdown table.

"classic" means the seed's behaviour (:meth:`Behaviour.classic` and
:meth:`SocketPolicy.classic`); "zeromesh" means the defaults.

Some benchmarks host peers in child processes (``python -m zeromesh.bench
host``): a full mesh of N in-process peers holds 2*N*N TCP file descriptors
(both ends of every data connection), beyond one process's limit near N = 100.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import json
import math
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import psutil
import zmq

from . import procs, timing, wire
from .directory import Directory
from .peer import Peer
from .protocol import Behaviour, PeerEvent, PeerProtocol, Send
from .proxy import Proxy, ProxyMode
from .sockets import NOBLOCK, RCVMORE, SNDMORE_NOBLOCK, SocketPolicy

Result = dict[str, Any]

WAIT_CAP = timing.BENCH_WAIT_CAP
POLL = timing.BENCH_POLL


# --- small helpers -------------------------------------------------------------


def percentiles(xs: Sequence[float]) -> dict[str, float]:
    """n, p50/p90/p99/max (nearest rank) and mean of *xs*, in its own unit."""
    if not xs:
        return {"n": 0}
    s = sorted(xs)

    def rank(p: float) -> float:
        return s[max(0, math.ceil(p / 100 * len(s)) - 1)]

    return {"n": len(s), "p50": rank(50), "p90": rank(90), "p99": rank(99), "max": s[-1],
            "mean": statistics.fmean(s)}


def ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000, 2)


def wait_until(cond: Callable[[], object], timeout: float, interval: float = POLL) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)  # noqa: sleep (polling interval of a bounded wait)
    return True


def classic_config() -> tuple[Behaviour, SocketPolicy]:
    return Behaviour.classic(), SocketPolicy.classic()


def observed(behaviour: Behaviour) -> Behaviour:
    """*behaviour* with the data-SUB monitor on (needed to see connections
    come up) but expiry in effect never: the protocol decisions are unchanged."""
    return dataclasses.replace(behaviour, expire=True, expire_grace=3600.0)


def fd_budget() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def fds_for_mesh(n: int) -> int:
    """File descriptors a full mesh of *n* in-process peers holds: both ends of
    n*n data connections (each peer subscribes to itself too), plus about 20
    per peer (context, sockets' mailboxes, monitor, wake pipe)."""
    return 2 * n * n + 20 * n


class Recorder:
    """An ``on_event`` callback that timestamps (perf_counter) ready/join/leave/exit."""

    def __init__(self) -> None:
        self.t: dict[tuple[str, str], float] = {}
        self.cond = threading.Condition()

    def __call__(self, ev: PeerEvent) -> None:
        now = time.perf_counter()
        with self.cond:
            self.t.setdefault((ev.kind, ev.uuid), now)
            self.cond.notify_all()

    def wait(self, keys: Sequence[tuple[str, str]], timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: all(k in self.t for k in keys), timeout)


@contextmanager
def mesh(n: int, mode: ProxyMode = "directory", classic: bool = False, recorder: Recorder | None = None,
         policy: SocketPolicy | None = None) -> Iterator[tuple[Proxy, list[Peer]]]:
    """A proxy and *n* started, converged peers; everything stopped on exit."""
    b, pol = classic_config() if classic else (Behaviour(), SocketPolicy())
    pol = policy or pol
    peers: list[Peer] = []
    with Proxy("tcp://127.0.0.1:0", mode=mode) as proxy:
        try:
            for _ in range(n):
                peers.append(Peer(proxy.endpoint, behaviour=b, policy=pol, on_event=recorder).start())
            if not all(p.wait_ready(WAIT_CAP) for p in peers):
                raise RuntimeError("mesh did not come up")
            want = {p.uuid for p in peers}
            if not wait_until(lambda: all(set(p.peers()) == want for p in peers), WAIT_CAP):
                raise RuntimeError("mesh did not converge")
            yield proxy, peers
        finally:
            stop_all(peers)


def stop_all(peers: Sequence[Peer]) -> None:
    """Leave all at once (in parallel), then collect each, bounded."""
    for p in peers:
        p.leave()
    for p in peers:
        if not p.stop(10.0):
            print(f"zeromesh bench: peer {p.uuid} did not stop in 10 s", file=sys.stderr)


# --- 1. join latency -------------------------------------------------------------


def _join_lane(n: int, classic: bool, existing: int, out: list[float]) -> None:
    b, pol = classic_config() if classic else (Behaviour(), SocketPolicy())
    with mesh(existing, mode="classic" if classic else "directory", classic=classic) as (proxy, _):
        for _ in range(n):
            rec = Recorder()
            t0 = time.perf_counter()
            p = Peer(proxy.endpoint, behaviour=b, policy=pol, on_event=rec).start()
            try:
                if rec.wait([("ready", p.uuid)], WAIT_CAP):
                    out.append(rec.t[("ready", p.uuid)] - t0)
            finally:
                p.stop(10.0)


def bench_join(joins: int = 100, classic_joins: int = 100, existing: int = 5, lanes: int = 5) -> Result:
    """``Peer`` construction+start to its ``ready`` event (own ``C`` heard),
    joining a mesh of *existing* peers. zeromesh joins run one at a time;
    classic joins (about 1 s each, a timer) run in *lanes* independent meshes
    at once, which costs them CPU, not latency."""
    zm: list[float] = []
    cl: list[float] = []
    _join_lane(joins, False, existing, zm)
    per_lane = math.ceil(classic_joins / lanes)
    threads = [threading.Thread(target=_join_lane, args=(per_lane, True, existing, cl)) for _ in range(lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(per_lane * 5.0 + WAIT_CAP)
    rows = []
    for name, xs in (("zeromesh", zm), ("classic", cl)):
        p = percentiles(xs)
        rows.append({"peer": name, "joins": p["n"], "p50 ms": ms(p.get("p50")), "p90 ms": ms(p.get("p90")),
                     "p99 ms": ms(p.get("p99")), "max ms": ms(p.get("max")),
                     "under 0.5 s %": round(100 * sum(1 for x in xs if x < 0.5) / len(xs)) if xs else None})
    z50, c50 = percentiles(zm).get("p50"), percentiles(cl).get("p50")
    return {
        "name": "join",
        "title": "Join latency: Peer start to ready (own C heard), in-process",
        "params": {"joins": joins, "classic_joins": classic_joins, "existing": existing, "lanes": lanes},
        "rows": rows,
        "summary": {
            "zeromesh_p50_ms": ms(z50), "zeromesh_p99_ms": ms(percentiles(zm).get("p99")),
            "classic_p50_ms": ms(c50), "speedup_p50": round(c50 / z50, 1) if z50 and c50 else None,
            "goal": "p50 <= 10 ms, p99 <= 50 ms",
        },
    }


# --- 2. convergence (peers hosted in child processes) ---------------------------


def host_main(argv: Sequence[str]) -> int:
    """A child process hosting *k* peers of a mesh of *n*: waits for ``go`` on
    stdin (unless --now), starts its peers, reports when each knows all *n*
    and (--connected) every data connection is up, then waits for ``stop``.
    Reports are JSON lines on stdout with wall-clock times."""
    ap = argparse.ArgumentParser(prog="zeromesh.bench host")
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

    def say(**kw: Any) -> None:
        sys.stdout.write(json.dumps(kw) + "\n")
        sys.stdout.flush()

    say(armed=True, t_main=t_main)
    if not a.now and sys.stdin.readline().strip() != "go":
        return 1
    t_go = time.time()
    peers = [Peer(a.proxy, behaviour=b, policy=pol).start() for _ in range(a.k)]
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
        time.sleep(POLL)  # noqa: sleep (polling interval of a bounded wait)
    frames = sum(p.protocol.counters.frames for p in peers if p.protocol is not None)
    say(t_main=t_main, t_go=t_go, t_started=t_started, t_known=t_known, t_connected=t_conn, frames=frames)
    sys.stdin.readline()  # "stop", or EOF when the parent is gone
    stop_all(peers)
    say(stopped=True)
    return 0


class Hosts:
    """Child processes running :func:`host_main`; stopped (bounded) on close."""

    def __init__(self, proxy: str, n: int, per_host: int, classic: bool = False, now: bool = False,
                 timeout: float = WAIT_CAP, heartbeats: bool = True) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        counts = [per_host] * (n // per_host) + ([n % per_host] if n % per_host else [])
        self.t_spawn = time.time()
        for k in counts:
            cmd = [sys.executable, "-m", "zeromesh.bench", "host", "--proxy", proxy, "--k", str(k),
                   "--n", str(n), "--timeout", str(timeout)] + (["--classic"] if classic else []) + (
                ["--now"] if now else []) + ([] if heartbeats else ["--no-heartbeats"])
            self.procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        self.armed = [self._line(p, timeout) for p in self.procs]

    @staticmethod
    def _line(p: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
        out: list[str] = []
        t = threading.Thread(target=lambda: out.append(p.stdout.readline() if p.stdout else ""), daemon=True)
        t.start()
        t.join(timeout)
        if not out or not out[0]:
            raise RuntimeError(f"host {p.pid} did not answer")
        d: dict[str, Any] = json.loads(out[0])
        return d

    def go(self) -> float:
        t0 = time.time()
        for p in self.procs:
            self._send(p, "go")
        return t0

    @staticmethod
    def _send(p: subprocess.Popen[str], line: str) -> None:
        if p.stdin is not None:
            try:
                p.stdin.write(line + "\n")
                p.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass

    def results(self, timeout: float) -> list[dict[str, Any]]:
        return [self._line(p, timeout) for p in self.procs]

    def close(self) -> None:
        for p in self.procs:
            self._send(p, "stop")
        deadline = time.monotonic() + 20.0
        for p in self.procs:
            procs.stop(p, None, max(0.1, deadline - time.monotonic()))


def _converge_once(n: int, per_host: int, classic: bool, now: bool, timeout: float,
                   heartbeats: bool = True) -> dict[str, Any]:
    with Proxy("tcp://127.0.0.1:0", mode="classic" if classic else "directory") as proxy:
        hosts = Hosts(proxy.endpoint, n, per_host, classic=classic, now=now, timeout=timeout,
                      heartbeats=heartbeats)
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
            ms(max(conn) - max(r["t_main"] for r in res)) if None not in conn else None)
    return row


def bench_converge(sizes: Sequence[int] = (2, 10, 50, 100), classic_sizes: Sequence[int] = (2, 10, 50),
                   per_host: int = 25, processes: int = 20, timeout: float = WAIT_CAP,
                   heartbeat_cost: bool = True) -> Result:
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
    n100 = [r for r in rows if r["peer"] == "zeromesh" and r["mode"] == "in-process" and r["peers"] == max(sizes)]
    return {
        "name": "converge",
        "title": "Full-mesh convergence: start to every peer knowing every other and every data connection up",
        "params": {"sizes": list(sizes), "classic_sizes": list(classic_sizes), "per_host": per_host,
                   "processes": processes},
        "rows": rows,
        "summary": {f"zeromesh_n{max(sizes)}_connected_ms": n100[0]["connected ms"] if n100 else None,
                    "goal": "N = 100 in under 1 s in-process"},
    }


# --- 3. leave and exit -------------------------------------------------------------


def _leave_lane(classic: bool, existing: int, leaves: int) -> tuple[list[float], list[float]]:
    """Per leaver: leave() to every other peer's leave event, and to its own exit."""
    rec = Recorder()
    b, pol = classic_config() if classic else (Behaviour(), SocketPolicy())
    dropped: list[float] = []
    done: list[float] = []
    with mesh(existing, mode="classic" if classic else "directory", classic=classic, recorder=rec) as (proxy, peers):

        def known_to_all(uuid: str, known: bool) -> bool:
            return all((uuid in q.peers()) is known for q in peers)

        for _ in range(leaves):
            p = Peer(proxy.endpoint, behaviour=b, policy=pol, on_event=rec).start()
            try:
                if not rec.wait([("join", p.uuid)], WAIT_CAP) or not wait_until(
                        functools.partial(known_to_all, p.uuid, True), WAIT_CAP):
                    continue
                with rec.cond:
                    rec.t.pop(("leave", p.uuid), None)
                t0 = time.perf_counter()
                p.leave()
                if p.wait_done(WAIT_CAP):
                    done.append(time.perf_counter() - t0)
                if wait_until(functools.partial(known_to_all, p.uuid, False), WAIT_CAP):
                    # The last drop is when the last peer's snapshot changed;
                    # the leave event of any peer marks the first. Poll is 2 ms.
                    dropped.append(time.perf_counter() - t0)
            finally:
                p.stop(10.0)
    return dropped, done


def _process_exit(proxy: str, lifetime: float, classic: bool, rec: Recorder, timeout: float) -> dict[str, Any] | None:
    """Run ``zeromesh peer --seconds`` and time its D (seen by an observer
    peer) to the process's exit (``waitpid`` returned)."""
    cmd = [sys.executable, "-m", "zeromesh", "peer", "--proxy", proxy, "--seconds", str(lifetime),
           "--events", "jsonl"] + (["--classic"] if classic else [])
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    exited: list[float] = []

    def wait_exit() -> None:  # a blocking waitpid: Popen.wait(timeout) would poll
        p.wait()
        exited.extend((time.perf_counter(), time.time()))

    waiter = threading.Thread(target=wait_exit, daemon=True)
    waiter.start()
    waiter.join(timeout)
    if waiter.is_alive():
        p.kill()
        waiter.join(5.0)
        if p.stdout:
            p.stdout.close()
        return None
    lines = [json.loads(x) for x in (p.stdout.read().splitlines() if p.stdout else []) if x.startswith("{")]
    if p.stdout:
        p.stdout.close()
    ready = [e for e in lines if e["event"] == "ready"]
    if not ready:
        return None
    t_d = rec.t.get(("leave", ready[0]["uuid"]))
    if t_d is None or not exited:
        return None
    done = [e for e in lines if e["event"] == "exit"]
    # The exit event is emitted after zmq_ctx_term: from it on, it is the interpreter's shutdown.
    shutdown = exited[1] - done[0]["t"] if done else None
    return {"d_to_exit": exited[0] - t_d, "shutdown": shutdown, "rc": p.returncode}


def bench_leave(leaves: int = 50, existing: int = 10, processes: int = 10, lifetime: float = 0.5,
                with_classic: bool = True) -> Result:
    """In-process: leave() to every other peer having dropped the leaver, and
    to the leaver's own loop end. Processes: ``zeromesh peer --seconds``, its
    D (seen by an observer) to the process's exit. zeromesh, then classic."""
    rows = []
    for classic in (False, True) if with_classic else (False,):
        dropped, done = _leave_lane(classic, existing, leaves)
        ex: list[float] = []
        shutdown: list[float] = []
        rcs: list[int] = []
        rec = Recorder()
        b, pol = classic_config() if classic else (Behaviour(), SocketPolicy())
        with Proxy("tcp://127.0.0.1:0", mode="classic" if classic else "directory") as proxy:
            observer = Peer(proxy.endpoint, behaviour=b, policy=pol, on_event=rec).start()
            try:
                observer.wait_ready(WAIT_CAP)
                for _ in range(processes):
                    # A classic peer needs a couple of its 1 s turns to get in before it leaves.
                    life = lifetime + (2 * timing.CLASSIC_TURN if classic else 0.0)
                    r = _process_exit(proxy.endpoint, life, classic, rec, life + 30.0)
                    if r is not None:
                        ex.append(r["d_to_exit"])
                        rcs.append(r["rc"])
                        if r["shutdown"] is not None:
                            shutdown.append(r["shutdown"])
            finally:
                observer.stop(10.0)
        d, e, x = percentiles(dropped), percentiles(done), percentiles(ex)
        rows.append({
            "peer": "classic" if classic else "zeromesh",
            "leaves": d["n"],
            "leave() to all dropped p50 ms": ms(d.get("p50")), "p99 ms": ms(d.get("p99")),
            "leave() to loop done p50 ms": ms(e.get("p50")),
            "process runs": x["n"],
            "D to process exit p50 ms": ms(x.get("p50")), "max ms": ms(x.get("max")),
            "of which interpreter exit p50 ms": ms(percentiles(shutdown).get("p50")),
            "nonzero rc": sum(1 for rc in rcs if rc != 0),
        })
    return {
        "name": "leave",
        "title": "Leave and exit: D to every other peer dropped it; D to process exit",
        "params": {"leaves": leaves, "existing": existing, "processes": processes, "lifetime": lifetime},
        "rows": rows,
        "summary": {"goal": "<= 20 ms each on loopback",
                    "zeromesh_drop_p50_ms": rows[0]["leave() to all dropped p50 ms"],
                    "zeromesh_exit_p50_ms": rows[0]["D to process exit p50 ms"]},
    }


# --- 4. discovery cost per join ----------------------------------------------------


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
            out = msg if classic else d.on_frame(msg, 0.0)
            assert out is not None
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
    for q in protos + [p]:
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
        time.sleep(0.01)  # noqa: sleep (polling interval of a bounded wait)


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
        new = Peer(proxy.endpoint, behaviour=b, policy=pol).start()
        try:
            everyone = peers + [new]
            wait_until(lambda: all(len(p.peers()) == n + 1 for p in everyone), WAIT_CAP)
            _quiet(proxy, everyone)
            assert new.protocol is not None
            received = sum(p.protocol.counters.frames for p in peers if p.protocol) - r0
            received += new.protocol.counters.frames - 1  # its welcome is not channel traffic
            sent = sum(p.protocol.counters.sent for p in peers if p.protocol) - s0 + new.protocol.counters.sent
            return {"sent": sent, "forwarded": proxy.forwarded - f0,
                    "delivered": (proxy.forwarded - f0) * (n + 1), "received": received}
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
                peers.append(Peer(proxy.endpoint, behaviour=b, policy=pol).start())
            want = {p.uuid for p in peers}
            ok = wait_until(lambda: all(set(p.peers()) == want for p in peers), WAIT_CAP)
            return {"peers": n, "classic peers": len(range(0, n, classic_every)), "converged": ok,
                    "ms": ms(time.perf_counter() - t0) if ok else None, "forwarded": proxy.forwarded}
        finally:
            stop_all(peers)


def bench_discovery(real_sizes: Sequence[int] = (10, 25, 50, 80),
                    sim_sizes: Sequence[int] = (10, 25, 50, 100, 150, 200),
                    png: Path | None = None) -> Result:
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
                row.update({"sent": real["sent"], "forwarded": real["forwarded"],
                            "deliveries (proxy)": real["delivered"], "received (peers)": real["received"]})
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
            ax.plot(*zip(*sim), "-", color=colour, label=f"{peer} (state machines)")
        if real:
            ax.plot(*zip(*real), "o", color=colour, label=f"{peer} (real mesh, received at peers)")
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


# --- 5. data plane -------------------------------------------------------------------


class _Counter:
    """Per-receiver count and time of the last message (one writer thread)."""

    def __init__(self) -> None:
        self.n = 0
        self.last = 0.0

    def __call__(self, _msg: object) -> None:
        self.n += 1
        self.last = time.perf_counter()


def _blast(send: Callable[[list[bytes]], None], frames: list[bytes], count: int,
           counters: Sequence[_Counter], receivers: int) -> dict[str, float]:
    for c in counters:
        c.n = 0
    t0 = time.perf_counter()
    for _ in range(count):
        send(frames)
    t_sent = time.perf_counter()
    total = count * receivers
    last = -1
    since = time.monotonic()
    while sum(c.n for c in counters) < total:  # until all arrived, or no progress for 0.5 s
        got = sum(c.n for c in counters)
        if got != last:
            last, since = got, time.monotonic()
        elif time.monotonic() - since > 0.5:
            break
        time.sleep(0.005)  # noqa: sleep (polling interval of a bounded wait)
    got = sum(c.n for c in counters)
    elapsed = max(c.last for c in counters) - t0
    return {"elapsed": elapsed, "delivered": got, "loss": 1 - got / total, "send_rate": count / (t_sent - t0)}


def _warm(send: Callable[[list[bytes]], None], counters: Sequence[_Counter]) -> None:
    """Publish until every receiver has one message: the subscriptions are in."""
    def probe() -> bool:
        send([b"w", b"w", b"w"])
        return all(c.n for c in counters)

    if not wait_until(probe, WAIT_CAP, 0.01):
        raise RuntimeError("receivers never got a message")
    last = -1
    while (now := sum(c.n for c in counters)) != last:  # the last warm-ups have landed
        last = now
        time.sleep(0.05)  # noqa: sleep (polling interval; ends when the count stops moving)


def _raw_run(receivers: int, payload: int, count: int) -> dict[str, float]:
    """Raw pyzmq: one PUB, *receivers* + 1 SUBs (a zeromesh publisher's data
    SUB gets its own messages too), one context and one blocking receive
    thread per SUB: as many sockets and threads doing data as zeromesh's.
    Sends and receives the 3 frames with the fastest plain pyzmq calls (int
    flags: ``send_multipart``'s enum arithmetic would make raw the slower)."""
    pctx: zmq.Context[Any] = zmq.Context()
    pub = pctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 0)  # no drops: the run measures the receivers' capacity
    pub.bind("tcp://127.0.0.1:0")
    ep = pub.last_endpoint.decode()
    counters = [_Counter() for _ in range(receivers + 1)]
    stop = threading.Event()
    ctxs: list[zmq.Context[Any]] = []

    def rx(c: _Counter, ctx: zmq.Context[Any]) -> None:
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SUBSCRIBE, b"")
        s.setsockopt(zmq.RCVTIMEO, 100)  # to see the stop flag
        s.connect(ep)
        recv, more = s.recv, s.getsockopt
        try:
            while not stop.is_set():
                try:
                    frames = [recv(0)]
                except zmq.Again:
                    continue
                while more(RCVMORE):
                    frames.append(recv(0))
                c(frames)
        finally:
            s.close()

    threads = []
    for c in counters:
        ctx: zmq.Context[Any] = zmq.Context()
        ctxs.append(ctx)
        threads.append(threading.Thread(target=rx, args=(c, ctx), daemon=True))
    for t in threads:
        t.start()
    try:
        def send(frames: list[bytes]) -> None:
            pub.send(frames[0], SNDMORE_NOBLOCK)
            pub.send(frames[1], SNDMORE_NOBLOCK)
            pub.send(frames[2], NOBLOCK)

        _warm(send, counters)
        frames = [b"bench", b"00000000-0000-4000-8000-000000000000", os.urandom(payload)]
        return _blast(send, frames, count, counters[:receivers], receivers)
    finally:
        stop.set()
        for t in threads:
            t.join(5.0)
        pub.close()
        pctx.term()
        for ctx in ctxs:
            ctx.term()


def _zeromesh_run(receivers: int, payload: int, count: int) -> dict[str, float]:
    counters = [_Counter() for _ in range(receivers)]
    with Proxy("tcp://127.0.0.1:0") as proxy:
        sender = Peer(proxy.endpoint, on_message=_Counter()).start()  # it gets its own, as raw's extra SUB
        rx = [Peer(proxy.endpoint, on_message=c).start() for c in counters]
        everyone = [sender] + rx
        try:
            want = {p.uuid for p in everyone}
            if not wait_until(lambda: all(set(p.peers()) == want for p in everyone), WAIT_CAP):
                raise RuntimeError("data mesh did not converge")
            _warm(lambda f: sender.publish(f[0], f[2]), counters)
            frames = [b"bench", b"", os.urandom(payload)]
            return _blast(lambda f: sender.publish(f[0], f[2]), frames, count, counters, receivers)
        finally:
            stop_all(everyone)


def bench_data(receivers: int = 4, rounds: int = 3, counts: dict[int, int] | None = None) -> Result:
    """One publisher, *receivers* subscribers: zeromesh (``Peer.publish`` to
    ``on_message``) against raw pyzmq, alternating, *rounds* each. The rate
    counts delivered messages (publish all, until the last arrives): what the
    receivers absorb. Raw's PUB has no HWM (no drops); zeromesh's keeps
    libzmq's default (its options are fixed at bind), so it drops when its
    receivers fall behind, which the loss column shows."""
    counts = counts or {64: 100_000, 4096: 20_000}
    rows = []
    ratios: dict[int, float] = {}
    for payload, count in counts.items():
        res: dict[str, list[dict[str, float]]] = {"raw pyzmq": [], "zeromesh": []}
        for _ in range(rounds):
            res["raw pyzmq"].append(_raw_run(receivers, payload, count))
            res["zeromesh"].append(_zeromesh_run(receivers, payload, count))
        rates = {}
        for name, runs in res.items():
            rate = statistics.median(r["delivered"] / r["elapsed"] for r in runs)
            rates[name] = rate
            rows.append({
                "payload B": payload, "impl": name, "msgs/s (delivered, all receivers)": round(rate),
                "MB/s": round(rate * payload / 1e6, 1),
                "publish msgs/s": round(statistics.median(r["send_rate"] for r in runs)),
                "loss %": round(100 * statistics.median(r["loss"] for r in runs), 2),
            })
        ratios[payload] = rates["zeromesh"] / rates["raw pyzmq"]
        rows[-1]["ratio vs raw"] = round(ratios[payload], 3)
    return {
        "name": "data",
        "title": f"Data plane: one publisher to {receivers} receivers, medians of {rounds} alternating runs",
        "params": {"receivers": receivers, "rounds": rounds, "counts": counts},
        "rows": rows,
        "summary": {f"ratio_{p}B": round(r, 3) for p, r in ratios.items()} | {"goal": ">= 0.9x raw"},
    }


# --- 6. churn capacity ------------------------------------------------------------


class _LongLived:
    """A ``zeromesh peer --long-lived`` child whose events are counted."""

    def __init__(self, proxy: str, classic: bool) -> None:
        cmd = [sys.executable, "-m", "zeromesh", "peer", "--proxy", proxy, "--long-lived", "--events", "jsonl"]
        self.proc = subprocess.Popen(cmd + (["--classic"] if classic else []), stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.ps = psutil.Process(self.proc.pid)
        self.counts: dict[str, int] = {}
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, f: IO[str] | None) -> None:
        for line in f or []:
            try:
                kind = json.loads(line)["event"]
            except (ValueError, KeyError):
                continue
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if kind == "ready":
                self.ready.set()

    def sample(self) -> tuple[float, int, int, int]:
        """CPU seconds, RSS bytes, leave and join events so far."""
        t = self.ps.cpu_times()
        return t.user + t.system, self.ps.memory_info().rss, self.counts.get("leave", 0), self.counts.get("join", 0)

    def close(self) -> None:
        procs.stop(self.proc, signal.SIGTERM, 10.0, self._reader)


def _churn_step(proxy: str, rate: float, seconds: float, life: float) -> int:
    """Start a short-lived peer every 1/*rate* s for *seconds*; collect them. Returns started."""
    live: list[Peer] = []
    started = 0
    t0 = time.monotonic()
    while (now := time.monotonic()) - t0 < seconds:
        live.append(Peer(proxy, lifetime=life).start())
        started += 1
        for p in [p for p in live if p.done]:
            p.stop(5.0)
            live.remove(p)
        nxt = t0 + started / rate
        if nxt > now:
            time.sleep(nxt - now)  # noqa: sleep (pacing the churn rate)
    stop_all(live)
    return started


def churner_main(argv: Sequence[str]) -> int:
    """A child process that churns: armed, then on ``go`` one short-lived
    peer every 1/rate s for the given seconds; prints how many it started."""
    ap = argparse.ArgumentParser(prog="zeromesh.bench churner")
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--life", type=float, required=True)
    a = ap.parse_args(argv)
    print(json.dumps({"armed": True}), flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    print(json.dumps({"started": _churn_step(a.proxy, a.rate, a.seconds, a.life)}), flush=True)
    return 0


def _churn(proxy: str, rate: float, seconds: float, life: float, drivers: int, at_go: Callable[[], None]) -> int:
    """Churn at *rate* from *drivers* child processes (one process cannot
    create and tear down peers fast enough on its own); *at_go* runs once
    they are all up, right before they start. Returns peers started."""
    cmd = [sys.executable, "-m", "zeromesh.bench", "churner", "--proxy", proxy, "--rate", str(rate / drivers),
           "--seconds", str(seconds), "--life", str(life)]
    children = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(drivers)]
    try:
        for p in children:
            Hosts._line(p, WAIT_CAP)
        at_go()
        for p in children:
            Hosts._send(p, "go")
        return sum(int(Hosts._line(p, seconds + WAIT_CAP)["started"]) for p in children)
    finally:
        for p in children:
            procs.stop(p, None, 10.0)


def bench_churn(rates: Sequence[float] = (0, 5, 10, 20, 40, 80), seconds: float = 10.0, life: float = 0.2,
                drivers: int = 2) -> Result:
    """Short-lived peers join and leave at each rate in turn while a zeromesh
    and a classic long-lived peer (child processes, side by side) watch:
    their CPU (psutil cpu_times) and RSS per step. The churn comes from
    *drivers* child processes, so the bench process is not the limit."""
    rows: list[dict[str, Any]] = []
    with Proxy("tcp://127.0.0.1:0") as proxy:
        lls = {"zeromesh": _LongLived(proxy.endpoint, False), "classic": _LongLived(proxy.endpoint, True)}
        try:
            for ll in lls.values():
                ll.ready.wait(WAIT_CAP)
            before: dict[str, tuple[float, int, int, int]] = {}
            t_go: list[float] = []

            def mark() -> None:  # the drivers' start-up stays out of the measured interval
                before.update({k: ll.sample() for k, ll in lls.items()})
                t_go[:] = [time.monotonic()]

            for rate in rates:
                if rate:
                    started = _churn(proxy.endpoint, rate, seconds, life, drivers, mark)
                else:
                    mark()
                    started = 0
                    time.sleep(seconds)  # noqa: sleep (the idle baseline is a measured interval)
                t0 = t_go[0]
                t_churn = time.monotonic() - t0
                # Let the last departures reach the long-lived peers (bounded). A
                # churner that left before it was heard is never seen to join or leave.
                wait_until(lambda: all(ll.sample()[2] - before[k][2] >= ll.sample()[3] - before[k][3]
                                       for k, ll in lls.items()), 5.0, 0.05)
                dt = time.monotonic() - t0
                for k, ll in lls.items():
                    cpu, rss, leaves, _ = ll.sample()
                    c0, r0, l0, _ = before[k]
                    dl = leaves - l0
                    rows.append({
                        "rate /s": rate, "long-lived": k, "departures seen": dl, "churned": started,
                        "achieved /s": round(started / t_churn, 1) if rate else 0.0,
                        "CPU % of a core": round(100 * (cpu - c0) / dt, 1),
                        "CPU ms per departure": round(1000 * (cpu - c0) / dl, 2) if dl else None,
                        "RSS MB": round(rss / 1e6, 1), "RSS delta KB": round((rss - r0) / 1e3),
                    })
        finally:
            for ll in lls.values():
                ll.close()
    ok = [r["achieved /s"] for r in rows if r["long-lived"] == "zeromesh" and r["rate /s"]
          and r["CPU % of a core"] < 50 and r["departures seen"] >= 0.9 * r["churned"]]
    return {
        "name": "churn",
        "title": "Churn capacity: long-lived peers (zeromesh and classic side by side) under join+leave churn",
        "params": {"rates": list(rates), "seconds": seconds, "life": life},
        "rows": rows,
        "summary": {"zeromesh_max_rate_under_50pct_cpu": max(ok) if ok else None,
                    "goal": "flat memory, < 50% of one core"},
    }


# --- 7. against zeromq-pyre (Zyre's Python port), across network namespaces --------


def node_main(argv: Sequence[str]) -> int:
    """One discovery node for the Pyre comparison: ``pyre`` (UDP beacons) or
    ``zeromesh`` (a peer of the given proxy). Prints ``START t`` right before
    start() and ``SEEN t`` for every other node discovered (wall clock), until
    its stdin closes (or *cap* seconds)."""
    ap = argparse.ArgumentParser(prog="zeromesh.bench node")
    ap.add_argument("kind", choices=["pyre", "zeromesh"])
    ap.add_argument("--cap", type=float, default=WAIT_CAP)
    ap.add_argument("--proxy")
    ap.add_argument("--bind")
    a = ap.parse_args(argv)
    closed = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()
        closed.set()

    threading.Thread(target=watch_stdin, daemon=True).start()

    def say(*words: object) -> None:
        print(*words, flush=True)

    if a.kind == "zeromesh":
        say("START", time.time())
        p = Peer(a.proxy, bind=a.bind or "tcp://127.0.0.1:0",
                 on_event=lambda ev: say("SEEN", time.time(), ev.uuid) if ev.kind == "join" else None).start()
        closed.wait(a.cap)
        p.stop(10.0)
        return 0
    from pyre import Pyre  # type: ignore[import-untyped,import-not-found,unused-ignore]

    node = Pyre()
    node.join("bench")
    say("START", time.time())
    node.start()
    poller = zmq.Poller()
    poller.register(node.socket(), zmq.POLLIN)
    end = time.monotonic() + a.cap
    try:
        while time.monotonic() < end and not closed.is_set():
            if dict(poller.poll(20)):
                msg = node.recv()
                if msg[0] == b"ENTER":
                    say("SEEN", time.time(), msg[1].hex())
    finally:
        node.stop()
    return 0


def _load_netns() -> Any:
    """The repository's namespace helper (tests/netns.py), when run from a checkout."""
    path = Path(__file__).resolve().parents[2] / "tests" / "netns.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("zeromesh_bench_netns", path)
    if spec is None or spec.loader is None:
        return None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses in it look their module up
    spec.loader.exec_module(mod)
    return mod


class _Lines:
    """Collect a child's stdout lines as they come (a thread per child)."""

    def __init__(self, p: subprocess.Popen[str]) -> None:
        self.p = p
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self) -> None:
        for line in self.p.stdout or []:
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()

    def count(self, word: str) -> int:
        with self.cond:
            return sum(1 for x in self.lines if x.startswith(word))

    def times(self, word: str) -> list[float]:
        with self.cond:
            return [float(x.split()[1]) for x in self.lines if x.startswith(word)]

    def wait(self, word: str, n: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: sum(1 for x in self.lines if x.startswith(word)) >= n, timeout)

    def close(self) -> None:
        if self.p.stdin:
            self.p.stdin.close()  # the node's signal to stop
        procs.stop(self.p, None, 15.0, self.t)


def _run_nodes(netns: Any, kind: str, n: int, stagger: float, timeout: float) -> list[dict[str, Any]]:
    """*n* nodes of *kind*, one per namespace on one bridge (plus a proxy's
    namespace for zeromesh), until each has seen the n-1 others (bounded).
    With *stagger*, node 0 is up (START printed) that long before the rest."""
    hosts = [f"h{i}" for i in range(n)] + (["px"] if kind == "zeromesh" else [])
    children: list[_Lines] = []
    with netns.Topology(hosts, prefix="zmb") as topo:
        try:
            extra: list[str] = []
            if kind == "zeromesh":
                ip = topo.addr("px")
                px = _Lines(topo.popen("px", [sys.executable, "-m", "zeromesh", "proxy", "--bind", f"tcp://{ip}:0",
                                              "--xsub-bind", f"tcp://{ip}:0", "--events", "jsonl"],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, text=True))
                children.append(px)
                if not px.wait("{", 1, timeout):
                    raise RuntimeError("proxy did not start")
                extra = ["--proxy", json.loads(px.lines[0])["endpoint"]]
            nodes: list[_Lines] = []
            for i in range(n):
                bind = ["--bind", f"tcp://{topo.addr(f'h{i}')}:0"] if kind == "zeromesh" else []
                node = _Lines(topo.popen(f"h{i}", [sys.executable, "-m", "zeromesh.bench", "node", kind] + extra + bind,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, text=True))
                nodes.append(node)
                children.append(node)
                if stagger and i == 0:
                    node.wait("START", 1, timeout)
                    time.sleep(stagger)  # noqa: sleep (node 0 is up this long before the others start)
            deadline = time.monotonic() + timeout
            for node in nodes:
                node.wait("SEEN", n - 1, max(0.0, deadline - time.monotonic()))
            return [{"start": next(iter(x.times("START")), None), "seen": x.times("SEEN")} for x in nodes]
        finally:
            for c in children:
                c.close()


def bench_pyre(trials: int = 5, n: int = 6, timeout: float = 20.0, kinds: Sequence[str] = ("pyre", "zeromesh"),
               converge_trials: int | None = None) -> Result:
    """Pyre and zeromesh side by side, each node in a network namespace of
    its own on one bridge (Pyre's UDP beacons need a broadcast-capable
    interface). Join: the second of two nodes, start() to the first node
    seen. Convergence: *n* nodes started together, last start() to every
    node having seen every other."""
    netns = _load_netns()
    why = "tests/netns.py not found (run from a checkout)" if netns is None else None
    if netns is not None:
        ok, reason = netns.available()
        why = None if ok else reason
    if importlib.util.find_spec("pyre") is None:
        why = why or "zeromq-pyre is not installed (pip install -e '.[bench]')"
    if why:
        return {"name": "pyre", "title": "Against zeromq-pyre", "params": {}, "rows": [],
                "summary": {"not run": why}}
    rows = []
    for kind in kinds:
        joins = []
        for _ in range(trials):
            b = _run_nodes(netns, kind, 2, 0.5, timeout)[1]
            if b["start"] is not None and b["seen"]:
                joins.append(min(b["seen"]) - b["start"])
        conv = []
        for _ in range(max(1, trials // 2) if converge_trials is None else converge_trials):
            nodes = _run_nodes(netns, kind, n, 0.0, timeout)
            if all(x["start"] is not None and len(x["seen"]) >= n - 1 for x in nodes):
                last_start = max(x["start"] for x in nodes)
                conv.append(max(sorted(x["seen"])[n - 2] for x in nodes) - last_start)
        j, c = percentiles(joins), percentiles(conv)
        rows.append({"impl": kind, "join trials": j["n"], "join p50 ms": ms(j.get("p50")),
                     "join max ms": ms(j.get("max")), f"converge N={n} trials": c["n"],
                     "converge p50 ms": ms(c.get("p50")), "converge max ms": ms(c.get("max"))})
    return {
        "name": "pyre",
        "title": "Against zeromq-pyre: one node per network namespace, one bridge",
        "params": {"trials": trials, "n": n},
        "rows": rows,
        "summary": {"note": "join: 2nd node's start() to its 1st SEEN (pyre ENTER / zeromesh join event); "
                            "converge: last node's start() to every node having seen all others"},
    }


# --- output ------------------------------------------------------------------------


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)\n"
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    def fmt(v: Any) -> str:
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_result(result: Result, outdir: Path) -> tuple[Path, Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    js = outdir / f"{result['name']}.json"
    md = outdir / f"{result['name']}.md"
    js.write_text(json.dumps(result, indent=1, default=str) + "\n")
    text = f"### {result.get('title', result['name'])}\n\n" + markdown_table(result["rows"])
    text += "\n" + ", ".join(f"{k}: {v}" for k, v in result.get("summary", {}).items()) + "\n"
    if "mixed" in result:
        text += f"\nMixed mesh: {result['mixed']}\n"
    text += f"\nCommand: `{result.get('command', '')}`\n"
    md.write_text(text)
    return js, md


def run(which: str, quick: bool, outdir: Path, command: str) -> list[Result]:
    q = quick
    suite: dict[str, Callable[[], Result]] = {
        "join": lambda: bench_join(joins=30 if q else 200, classic_joins=10 if q else 100,
                                   existing=2 if q else 5, lanes=5),
        "converge": lambda: bench_converge(sizes=(2, 10) if q else (2, 10, 50, 100),
                                           classic_sizes=(2,) if q else (2, 10, 50),
                                           processes=5 if q else 20),
        "leave": lambda: bench_leave(leaves=5 if q else 50, existing=3 if q else 10,
                                     processes=2 if q else 10, lifetime=0.3 if q else 0.5),
        "discovery": lambda: bench_discovery(real_sizes=(5, 10) if q else (10, 25, 50, 80),
                                             sim_sizes=(5, 10, 50) if q else (10, 25, 50, 80, 100, 150, 200),
                                             png=outdir / "discovery.png"),
        "data": lambda: bench_data(receivers=2 if q else 4, rounds=1 if q else 3,
                                   counts={64: 5000, 4096: 2000} if q else None),
        "churn": lambda: bench_churn(rates=(0, 5) if q else (0, 5, 10, 20, 40, 80), seconds=2.0 if q else 10.0),
        "pyre": lambda: bench_pyre(trials=2 if q else 5, n=3 if q else 6),
    }
    names = list(suite) if which == "all" else [which]
    results = []
    for name in names:
        t0 = time.monotonic()
        res = suite[name]()
        res["command"] = command
        res["seconds"] = round(time.monotonic() - t0, 1)
        res["machine"] = {"cpus": os.cpu_count(), "load1": os.getloadavg()[0], "pyzmq": zmq.__version__,
                          "libzmq": zmq.zmq_version(), "python": sys.version.split()[0]}
        _, md = write_result(res, outdir)
        print(md.read_text())
        results.append(res)
    return results


def cmd_bench(a: argparse.Namespace) -> int:
    command = "zeromesh bench " + a.which + (" --quick" if a.quick else "") + (
        f" --out {a.out}" if a.out != "docs/perf" else "")
    run(a.which, a.quick, Path(a.out), command)
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    pb = sub.add_parser("bench", help="run the benchmark suite (JSON + markdown tables)")
    pb.add_argument("which", nargs="?", default="all",
                    choices=["join", "converge", "leave", "discovery", "data", "churn", "pyre", "all"])
    pb.add_argument("--quick", action="store_true", help="tiny sizes: seconds, not minutes")
    pb.add_argument("--out", default="docs/perf", help="directory for the JSON, markdown and PNG (default %(default)s)")
    pb.set_defaults(func=cmd_bench)


if __name__ == "__main__":
    if sys.argv[1:2] == ["host"]:
        sys.exit(host_main(sys.argv[2:]))
    if sys.argv[1:2] == ["node"]:
        sys.exit(node_main(sys.argv[2:]))
    if sys.argv[1:2] == ["churner"]:
        sys.exit(churner_main(sys.argv[2:]))
    sys.exit("usage: python -m zeromesh.bench host --proxy EP --k K --n N [--classic] [--now]")
