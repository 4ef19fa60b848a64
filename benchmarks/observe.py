"""Figures of docs/observability.md (issue 12), one subcommand each:

    python benchmarks/observe.py health --rounds 10     # proxy_down / proxy_up latency
    python benchmarks/observe.py self-delivery -n 50000 # not connecting to itself vs dropping on receipt
    python benchmarks/observe.py scrape                  # cost of one /metrics scrape (needs the metrics extra)

Each prints a small table and the load average (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

from zeromesh import DataMessage, Peer, Proxy

WAIT = 10.0


def _proxy_child(bind: str) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "zeromesh", "proxy", "--bind", bind, "--events", "jsonl", "-q"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    return p, str(json.loads(p.stdout.readline())["endpoint"])


def _after(peer: Peer, kind: str, t0: float) -> float | None:
    """Seconds from *t0* to the peer's next *kind* event (None: not within WAIT)."""
    while (left := t0 + WAIT - time.monotonic()) > 0:
        ev = peer.next_event(left)
        if ev is not None and ev.kind == kind:
            return time.monotonic() - t0
    return None


def health(rounds: int) -> None:
    res: dict[str, list[float | None]] = {
        "SIGKILL -> proxy_down": [],
        "respawn -> proxy_up": [],
        "SIGSTOP -> proxy_down": [],
        "SIGCONT -> proxy_up": [],
    }
    px, ep = _proxy_child("tcp://127.0.0.1:0")
    peer = Peer(ep).start()
    try:
        assert peer.wait_ready(5)
        for _ in range(rounds):
            t0 = time.monotonic()
            px.kill()
            px.wait()
            res["SIGKILL -> proxy_down"].append(_after(peer, "proxy_down", t0))
            t0 = time.monotonic()
            px, _ = _proxy_child(ep)  # from spawn: the interpreter's start included
            res["respawn -> proxy_up"].append(_after(peer, "proxy_up", t0))
            t0 = time.monotonic()
            px.send_signal(signal.SIGSTOP)
            res["SIGSTOP -> proxy_down"].append(_after(peer, "proxy_down", t0))
            t0 = time.monotonic()
            px.send_signal(signal.SIGCONT)
            res["SIGCONT -> proxy_up"].append(_after(peer, "proxy_up", t0))
    finally:
        px.send_signal(signal.SIGCONT)
        px.terminate()
        px.wait(5)
        peer.stop()
    for name, xs in res.items():
        ok = [x for x in xs if x is not None]
        p50, top = statistics.median(ok), max(ok)
        print(f"{name:<24} n={len(xs)} missed={len(xs) - len(ok)} p50 {p50:.3f} s max {top:.3f} s")


def _self_run(mode: str, n: int) -> float:
    """CPU seconds of this process to publish *n* 64 B messages to one receiver."""
    got = [0]
    done = threading.Event()

    def on_rx(m: DataMessage) -> None:
        got[0] += 1
        if got[0] >= n - 1000:  # a few may be dropped at the HWM
            done.set()

    def on_own(m: DataMessage) -> None:
        pass

    with Proxy("tcp://127.0.0.1:0") as proxy:
        s = Peer(proxy.endpoint, on_message=on_own, receive_own=mode != "not connected").start()
        if mode == "connected, dropped on receipt":
            me = s.uuid
            s._on_message = lambda m: None if m.sender == me else on_own(m)
        r = Peer(proxy.endpoint, on_message=on_rx).start()
        try:
            while got[0] == 0:  # the receiver's data SUB is connected
                s.publish(b"t", b"x")
                time.sleep(0.01)  # sleep: pacing the probe of a bounded start-up
            got[0] = 0
            payload = os.urandom(64)
            c0 = time.process_time()
            for i in range(n):
                s.publish(b"t", payload)
                while got[0] < i - 500:  # stay under the HWM
                    time.sleep(0.0002)  # sleep: flow control of the benchmark
            assert done.wait(60), got[0]
            return time.process_time() - c0
        finally:
            r.stop()
            s.stop()


def self_delivery(n: int) -> None:
    modes = ["not connected", "connected, dropped on receipt", "connected, delivered"]
    res: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(3):  # interleaved: the load changes under us
        for m in modes:
            res[m].append(_self_run(m, n))
    base = statistics.median(res[modes[0]])
    for m in modes:
        cpu = statistics.median(res[m])
        print(f"{m:<30} CPU {cpu * 1e6 / n:6.2f} us/msg ({cpu / base:.2f}x)")


def scrape() -> None:
    from zeromesh.metrics import serve

    with Proxy("tcp://127.0.0.1:0") as proxy:
        peers = [Peer(proxy.endpoint, meta={"i": str(i)}).start() for i in range(20)]
        try:
            assert all(p.wait_for_peers(19, 30) for p in peers)
            with serve(peers[0]) as mpeer, serve(proxy) as mproxy:
                for name, url in (("peer", mpeer.url), ("proxy", mproxy.url)):
                    urllib.request.urlopen(url, timeout=5).read()
                    t0, c0 = time.perf_counter(), time.process_time()
                    for _ in range(200):
                        body = urllib.request.urlopen(url, timeout=5).read()
                    wall, cpu = (time.perf_counter() - t0) / 200, (time.process_time() - c0) / 200
                    print(f"{name:<6} {wall * 1000:.2f} ms wall, {cpu * 1000:.2f} ms CPU per scrape, {len(body)} bytes")
        finally:
            for p in peers:
                p.leave()
            for p in peers:
                p.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    sub.add_parser("health").add_argument("--rounds", type=int, default=10)
    sub.add_parser("self-delivery").add_argument("-n", type=int, default=50_000)
    sub.add_parser("scrape")
    a = ap.parse_args()
    if a.what == "health":
        health(a.rounds)
    elif a.what == "self-delivery":
        self_delivery(a.n)
    else:
        scrape()
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
