"""The attack suite of issue 8, full size, against real processes.

One ``zeromesh proxy`` (the CLI) and three honest peers (each a process of its
own that publishes a counter every 20 ms and reports what it receives), then
one attack at a time from raw pyzmq sockets in this process. For each attack:
RSS of the proxy and of every peer (psutil, sampled every 50 ms; the peak over
baseline), whether every honest peer kept receiving from every other in every
half second of the attack, duplicates, and the join time of a newcomer right
after. Verdict per attack against the goal: proxy within +100 MB, each peer
within +50 MB (+100 MB for the 200 MB frame), data throughout, join < 1 s.

    python benchmarks/attacks.py                 # all attacks (about 3 minutes)
    python benchmarks/attacks.py --only ghost    # one
    python benchmarks/attacks.py --json docs/robustness.json

Exit 0 when every attack met the goal, 1 otherwise. Heavy (a 200 MB frame,
100,000 subscriptions): run by hand, not in the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil
import zmq

from zeromesh.harness.procs import stop
from zeromesh.testing.cpeer import C_STRUCT

MB = 1024 * 1024

#: An honest peer: publishes a counter every 20 ms, prints a JSON line every
#: 0.5 s with what it received since the last line (per sender), duplicates,
#: its table size and its counters. With "newcomer": prints its join time.
HONEST = r"""
import json, sys, time, threading
from zeromesh import Peer
proxy, mode = sys.argv[1], sys.argv[2]
t0 = time.monotonic()
p = Peer(proxy).start()
if mode == "newcomer":
    ok = p.wait_ready(5.0)
    ready = time.monotonic() - t0
    p.wait_for_peers(int(sys.argv[3]), 5.0)  # other peers
    out = {"ready": ok, "join_s": ready, "all_s": time.monotonic() - t0, "peers": len(p.peers())}
    print(json.dumps(out), flush=True)
    p.stop()
    sys.exit(0)
last, rx, dups, k = {}, {}, 0, 0
def reader():
    global dups
    while not p.done:
        m = p.recv(0.1)
        if m is None or m.topic != b"n":
            continue
        c = int(m.payload)
        if c <= last.get(m.sender, -1):
            dups += 1
        last[m.sender] = c
        rx[m.sender] = rx.get(m.sender, 0) + 1
threading.Thread(target=reader, daemon=True).start()
print(json.dumps({"uuid": p.uuid, "endpoint": p.endpoint}), flush=True)
next_line = time.monotonic() + 0.5
while True:
    p.publish(b"n", str(k).encode()); k += 1
    time.sleep(0.02)
    if time.monotonic() >= next_line:
        next_line += 0.5
        got, rx = rx, {}
        s = p.stats()
        print(json.dumps({"rx": got, "dups": dups, "peers": len(p.peers()), "bad": dict(p.bad),
                          "proxy_ep": p.protocol.proxy_endpoint if p.protocol else None,
                          "rejected": dict(s.rejected)}), flush=True)
"""


@dataclass
class Proc:
    popen: subprocess.Popen[str]
    lines: list[dict[str, Any]] = field(default_factory=list)
    first: dict[str, Any] = field(default_factory=dict)

    def start_reader(self) -> None:
        def read() -> None:
            assert self.popen.stdout is not None
            for line in self.popen.stdout:
                try:
                    self.lines.append(json.loads(line))
                except ValueError:
                    pass

        threading.Thread(target=read, daemon=True).start()

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.popen.pid)


def spawn(args: list[str]) -> Proc:
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert p.stdout is not None
    line = p.stdout.readline()
    proc = Proc(p, first=json.loads(line) if line else {})
    proc.start_reader()
    return proc


@dataclass
class Mesh:
    proxy: Proc
    peers: list[Proc]
    endpoint: str
    xsub: str
    ctx: zmq.Context[Any]

    def procs(self) -> dict[str, Proc]:
        return {"proxy": self.proxy, **{f"peer{k}": p for k, p in enumerate(self.peers)}}


@contextmanager
def mesh(mode: str = "directory") -> Iterator[Mesh]:
    proxy = spawn([sys.executable, "-m", "zeromesh", "proxy", "--bind", "tcp://127.0.0.1:0", "--mode", mode,
                   "--events", "jsonl"])  # fmt: skip
    peers: list[Proc] = []
    ctx: zmq.Context[Any] = zmq.Context()
    ctx.linger = 0
    try:
        ep, xsub = proxy.first["endpoint"], proxy.first["xsub"]
        peers = [spawn([sys.executable, "-c", HONEST, ep, "honest"]) for _ in range(3)]
        m = Mesh(proxy, peers, ep, xsub, ctx)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(p.lines and p.lines[-1]["peers"] == 3 for p in peers):
            time.sleep(0.1)  # sleep: polling the children's reports
        time.sleep(1.0)  # sleep: settle allocator arenas before the baseline
        yield m
    finally:
        ctx.destroy(linger=0)
        for p in peers:
            stop(p.popen, 15)
        stop(proxy.popen, 15)


@dataclass
class Result:
    attack: str
    baseline_mb: dict[str, float]
    peak_mb: dict[str, float]
    after_mb: dict[str, float]
    data_windows_ok: int
    data_windows: int
    duplicates: int
    join_s: float | None
    notes: dict[str, Any]
    limits: dict[str, float]
    ok: bool = False

    def judge(self) -> None:
        grew = {k: self.peak_mb[k] - self.baseline_mb[k] for k in self.peak_mb}
        within = all(v <= self.limits["proxy" if k == "proxy" else "peer"] for k, v in grew.items())
        self.ok = (within and self.data_windows_ok == self.data_windows and self.duplicates == 0
                   and self.join_s is not None and self.join_s < 1.0)  # fmt: skip


def rss_mb(proc: Proc) -> float:
    try:
        return proc.ps.memory_info().rss / MB
    except psutil.NoSuchProcess:
        return float("nan")


def run_attack(
    name: str,
    m: Mesh,
    attack: Callable[[Mesh], dict[str, Any]],
    duration: float,
    limits: dict[str, float] | None = None,
) -> Result:
    procs = m.procs()
    base = {k: rss_mb(p) for k, p in procs.items()}
    peak = dict(base)
    marks = [len(p.lines) for p in m.peers]
    dup0 = sum(p.lines[-1]["dups"] for p in m.peers)
    notes: dict[str, Any] = {}
    done = threading.Event()

    def attacker() -> None:
        try:
            notes.update(attack(m))
        finally:
            done.set()

    threading.Thread(target=attacker, daemon=True).start()
    end = time.monotonic() + duration
    while time.monotonic() < end or not done.is_set():
        for k, p in procs.items():
            peak[k] = max(peak[k], rss_mb(p))
        time.sleep(0.05)  # sleep: RSS sampling interval
        if time.monotonic() > end + 120:
            notes["attacker"] = "did not finish in time"
            break
    # Data throughout: in every second of the attack (two half-second
    # reports), every peer heard from both others.
    windows = ok = 0
    for p, mark in zip(m.peers, marks, strict=True):
        lines = p.lines[mark + 1 :]
        for a, b in zip(lines[::2], lines[1::2], strict=False):
            windows += 1
            ok += len(a["rx"].keys() | b["rx"].keys()) >= 2
    dups = sum(p.lines[-1]["dups"] for p in m.peers) - dup0
    after = {k: rss_mb(p) for k, p in procs.items()}
    notes["peers_table"] = [p.lines[-1]["peers"] for p in m.peers]
    notes["peers_bad"] = [p.lines[-1]["bad"] for p in m.peers]
    # A newcomer right after.
    newcomer = subprocess.run([sys.executable, "-c", HONEST, m.endpoint, "newcomer", "3"],
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    try:
        j = json.loads(newcomer.stdout.splitlines()[-1])
        join_s = j["all_s"] if j["ready"] and j["peers"] >= 4 else None
        notes["newcomer"] = j
    except (IndexError, ValueError):
        join_s = None
    r = Result(name, base, peak, after, ok, windows, dups, join_s, notes,
               limits or {"proxy": 100.0, "peer": 50.0})  # fmt: skip
    r.judge()
    return r


# --- the attacks ---------------------------------------------------------------


def c_frame(endpoint: str, uuid: str | None = None, tail: bytes = b"", cmd: bytes = b"C") -> bytes:
    return C_STRUCT.pack(cmd, (uuid or str(uuidlib.uuid4())).encode(), endpoint.encode()) + tail


def pub_to(m: Mesh, endpoint: str) -> zmq.Socket[Any]:
    pub: zmq.Socket[Any] = m.ctx.socket(zmq.PUB)
    pub.sndhwm = 0
    pub.connect(endpoint)
    time.sleep(0.3)  # sleep: let the XSUB's subscription reach this PUB (it drops until then)
    return pub


def subscription_flood(endpoint: str, n: int, size: int) -> Callable[[Mesh], dict[str, Any]]:
    def attack(m: Mesh) -> dict[str, Any]:
        x = m.ctx.socket(zmq.XSUB)
        x.sndhwm = 0
        x.connect(endpoint if endpoint != "proxy" else m.endpoint)
        t0 = time.monotonic()
        for _ in range(n):
            x.send(b"\x01" + os.urandom(size))
        time.sleep(3.0)  # sleep: the flooder stays connected (it re-sends on every reconnect)
        x.close()
        return {"sent": n, "size": size, "send_s": round(time.monotonic() - t0, 2)}

    return attack


def data_pub_flood(n: int, size: int) -> Callable[[Mesh], dict[str, Any]]:
    def attack(m: Mesh) -> dict[str, Any]:
        return subscription_flood(m.peers[0].first["endpoint"], n, size)(m)

    return attack


def slow_consumer(n: int, size: int) -> Callable[[Mesh], dict[str, Any]]:
    def attack(m: Mesh) -> dict[str, Any]:
        sub = m.ctx.socket(zmq.SUB)
        sub.rcvhwm = 1  # and never reads: everything queues in the proxy (or its kernel buffers)
        sub.setsockopt(zmq.RCVBUF, 4096)
        sub.subscribe(b"")
        sub.connect(m.endpoint)
        pub = pub_to(m, m.xsub)
        tail = b"ZMX1" + json.dumps({"pad": "x" * (size - 330)}).encode()
        for _ in range(n):
            pub.send(c_frame("tcp://127.0.0.1:9", tail=tail))
        time.sleep(3.0)  # sleep: the slow subscriber stays, holding what was queued for it
        sub.close()
        pub.close()
        return {"frames": n, "bytes": size}

    return attack


def huge_frame(target: str, size_mb: int) -> Callable[[Mesh], dict[str, Any]]:
    def attack(m: Mesh) -> dict[str, Any]:
        big = c_frame("tcp://127.0.0.1:9", tail=b"ZMX1" + b" " * (size_mb * MB))
        if target == "proxy":
            pub = pub_to(m, m.xsub)
            pub.send(big, copy=False)
            time.sleep(2.0)  # sleep: the proxy reads the header and drops the connection
            pub.close()
            return {"to": "proxy XSUB", "mb": size_mb}
        # To every peer's data SUB: an attacker PUB announced as a peer.
        data = m.ctx.socket(zmq.PUB)
        data.bind("tcp://127.0.0.1:0")
        pub = pub_to(m, m.xsub)
        pub.send(c_frame(data.getsockopt_string(zmq.LAST_ENDPOINT)))
        time.sleep(1.0)  # sleep: the peers connect their data SUBs
        data.send_multipart([b"n", str(uuidlib.uuid4()).encode(), b" " * (size_mb * MB)], copy=False)
        time.sleep(2.0)  # sleep: each peer reads the header and drops the connection
        data.close()
        pub.close()
        return {"to": "peers' data SUB", "mb": size_mb}

    return attack


def ghost_flood(n: int) -> Callable[[Mesh], dict[str, Any]]:
    def attack(m: Mesh) -> dict[str, Any]:
        attacker = m.ctx.socket(zmq.PUB)
        attacker.bind("tcp://0.0.0.0:0")
        port = int(attacker.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])
        pub = pub_to(m, m.xsub)
        for k in range(n):
            pub.send(c_frame(f"tcp://127.{k // 62500}.{k // 250 % 250}.{1 + k % 250}:{port}"))
        time.sleep(3.0)  # sleep: past the expiry grace of the entries that never come up
        me = psutil.Process()
        conns = sum(1 for c in me.net_connections("tcp")
                    if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)  # fmt: skip
        fds = {k: p.ps.num_fds() for k, p in m.procs().items()}
        cpu = {k: p.ps.cpu_percent(None) for k, p in m.procs().items()}
        time.sleep(2.0)  # sleep: CPU measured over 2 s after the flood
        cpu = {k: round(p.ps.cpu_percent(None), 1) for k, p in m.procs().items()}
        attacker.close()
        pub.close()
        return {"fakes": n, "attacker_connections": conns, "fds": fds, "cpu_percent_after": cpu}

    return attack


def aliases(m: Mesh) -> dict[str, Any]:
    victim = m.peers[1].first["endpoint"]
    port = victim.rsplit(":", 1)[1]
    spellings = ["localhost", "LOCALHOST", "Localhost", "localHost", "LocalHost", "lOcAlHoSt", "LOCALhost",
                 "localhosT", "LoCaLhOsT", "loCALhost"]  # fmt: skip
    pub = pub_to(m, m.xsub)
    for h in spellings:
        pub.send(c_frame(f"tcp://{h}:{port}"))
    time.sleep(3.0)  # sleep: duplicates, if any, are counted by the honest peers meanwhile
    pub.close()
    return {"spellings": len(spellings)}


def proxy_own_endpoint(m: Mesh) -> dict[str, Any]:
    pub = pub_to(m, m.xsub)
    port = m.endpoint.rsplit(":", 1)[1]
    for ep in (m.endpoint, f"tcp://localhost:{port}"):
        pub.send(c_frame(ep))
    time.sleep(2.0)  # sleep: a data SUB connected to the XPUB would receive frames meanwhile
    pub.close()
    return {}


def foreign_welcome(m: Mesh) -> dict[str, Any]:
    evil = m.ctx.socket(zmq.XSUB)
    evil.bind("tcp://127.0.0.1:0")
    pub = pub_to(m, m.xsub)
    pub.send(c_frame(evil.getsockopt_string(zmq.LAST_ENDPOINT), cmd=b"W"))
    time.sleep(2.0)  # sleep: peers would move their proxy PUB to the attacker meanwhile
    moved = sum(1 for p in m.peers if p.lines[-1]["proxy_ep"] != m.xsub)
    pub.close()
    evil.close()
    return {"peers_moved": moved}


ATTACKS: dict[str, tuple[str, Callable[[Mesh], dict[str, Any]], dict[str, float] | None]] = {
    "subs-1k": ("directory", subscription_flood("proxy", 20_000, 1024), None),
    "subs-60b": ("directory", subscription_flood("proxy", 20_000, 60), None),
    "data-pub-subs": ("directory", data_pub_flood(20_000, 60), None),
    "slow-consumer-1mb": ("directory", slow_consumer(800, 1024 * 1024), None),
    "slow-consumer-16kb": ("directory", slow_consumer(2_000, 16_000), None),
    "c-flood-8kb": ("directory", slow_consumer(20_000, 8000), None),
    "huge-proxy": ("directory", huge_frame("proxy", 200), {"proxy": 100.0, "peer": 100.0}),
    "huge-data": ("directory", huge_frame("data", 200), {"proxy": 100.0, "peer": 100.0}),
    "ghost": ("directory", ghost_flood(3000), None),
    "aliases": ("directory", aliases, None),
    "proxy-own": ("directory", proxy_own_endpoint, None),
    "classic-w": ("classic", foreign_welcome, None),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=sorted(ATTACKS), help="run only these (repeatable)")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    ap.add_argument("--duration", type=float, default=6.0, help="seconds of sampling per attack (default 6)")
    a = ap.parse_args()
    results = []
    for name in a.only or list(ATTACKS):
        mode, attack, limits = ATTACKS[name]
        with mesh(mode) as m:
            r = run_attack(name, m, attack, a.duration, limits)
        results.append(r)
        grew = {k: round(r.peak_mb[k] - r.baseline_mb[k], 1) for k in r.peak_mb}
        print(f"{name:18} {'OK  ' if r.ok else 'FAIL'} peak +MB {grew} data {r.data_windows_ok}/{r.data_windows} "
              f"dups {r.duplicates} join {r.join_s if r.join_s is None else round(r.join_s, 3)} s "
              f"{json.dumps({k: v for k, v in r.notes.items() if k not in ('newcomer', 'peers_bad')})}",
              flush=True)  # fmt: skip
    if a.json:
        with open(a.json, "w") as f:
            json.dump([asdict(r) for r in results], f, indent=1)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
