"""A mesh started with no common start signal converges, and stays converged.

The issue 9 scenario: N peers started through the public API in P processes
of N/P, each process starting its peers as soon as it runs (no ``go`` line),
on this loaded 2-core machine. Before incarnations, suspicion and revival,
3 of 3 runs of 100 peers never converged (false expiries under load were
final). A run converges when every peer of every process lists all N; it
stays converged when no process reports fewer for ``--hold`` seconds after.

    python benchmarks/converge_nostart.py --runs 10 --n 100 --procs 4 --json docs/membership-converge.json
    python benchmarks/converge_nostart.py --runs 5 --hogs 2 --json docs/membership-converge-loaded.json

Each host process prints JSON lines: the fewest peers any of its peers lists,
whenever it changes, and its count of ``expired`` leave events (false
expiries: nobody dies here).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import threading
import time
from typing import Any

from zeromesh import Peer, PeerEvent, Proxy
from zeromesh.protocol import Behaviour
from zeromesh.sockets import SocketPolicy

POLL = 0.1
#: Protocol counters each host reports every 2 s (summed over its peers).
STATS = ("frames", "sent", "reannounced", "refuted", "revived", "unproven", "abandoned", "expired", "resyncs")


def host(proxy: str, k: int, timeout: float, prove: bool = False) -> int:
    expired = 0
    lock = threading.Lock()

    def on_event(ev: PeerEvent) -> None:
        nonlocal expired
        if ev.kind == "leave" and ev.reason == "expired":
            with lock:
                expired += 1

    t0 = time.time()
    # With --prove: every data PUB proves its uuid (docs/membership.md, opt-in).
    layers = (Behaviour(), SocketPolicy(prove_identity=True)) if prove else None
    peers = [Peer(proxy, on_event=on_event, layers=layers).start() for _ in range(k)]
    last: tuple[int, int] | None = None
    os.set_blocking(sys.stdin.fileno(), False)
    deadline = time.monotonic() + timeout
    next_stats = time.monotonic()
    try:
        while time.monotonic() < deadline:
            fewest = min(len(p.peers()) for p in peers)
            with lock:
                now = (fewest, expired)
            if now != last:
                print(json.dumps({"t": time.time(), "fewest": fewest, "expired": now[1], "t0": t0}), flush=True)
                last = now
            if time.monotonic() >= next_stats:  # the discovery traffic, for a run that goes wrong
                next_stats += 2.0
                cs = [p.protocol.counters for p in peers if p.protocol is not None]
                totals = {f: sum(getattr(c, f) for c in cs) for f in STATS}
                print(json.dumps({"t": time.time(), "stats": totals}), flush=True)
            ready, _, _ = select.select([sys.stdin], [], [], POLL)
            if ready and sys.stdin.read() is not None:
                break  # "stop" or EOF: the parent is done (or gone)
    finally:
        for p in peers:
            p.leave()  # all at once: each waits for its own D
        for p in peers:
            p.stop(10.0)
    return 0


def one_run(n: int, procs: int, hold: float, timeout: float, prove: bool = False) -> dict[str, Any]:
    with Proxy("tcp://127.0.0.1:0") as proxy:
        t_spawn = time.time()
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--host",
                    "--proxy",
                    proxy.endpoint,
                    "--k",
                    str(n // procs),
                    "--timeout",
                    str(timeout + hold + 10),
                    *(["--prove"] if prove else []),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(procs)
        ]
        fewest = [0] * procs
        expired = [0] * procs
        bufs = [""] * procs
        stats: list[dict[str, int]] = [{} for _ in range(procs)]
        t_conv: float | None = None
        low_after = n  # the fewest any peer listed after convergence
        expired_at_conv = 0
        end = time.monotonic() + timeout
        try:
            for c in children:
                assert c.stdout is not None
                os.set_blocking(c.stdout.fileno(), False)
            while time.monotonic() < end:
                outs = [c.stdout for c in children if c.stdout is not None]
                ready, _, _ = select.select(outs, [], [], POLL)
                for i, c in enumerate(children):
                    if c.stdout in ready:
                        chunk = c.stdout.read() or ""
                        *lines, bufs[i] = (bufs[i] + chunk).split("\n")
                        for line in lines:
                            if line.startswith("{"):
                                d = json.loads(line)
                                if "stats" in d:
                                    stats[i] = d["stats"]
                                    continue
                                fewest[i], expired[i] = d["fewest"], d["expired"]
                                if t_conv is not None:
                                    low_after = min(low_after, d["fewest"])
                if t_conv is None and min(fewest) == n:
                    t_conv = time.time() - t_spawn
                    expired_at_conv = sum(expired)
                    end = time.monotonic() + hold
        finally:
            for c in children:
                try:
                    assert c.stdin is not None
                    c.stdin.write("stop\n")
                    c.stdin.close()
                except (BrokenPipeError, OSError):
                    pass
            for c in children:
                try:
                    c.wait(30)
                except subprocess.TimeoutExpired:
                    c.kill()
                    c.wait()
                if c.stdout is not None:
                    c.stdout.close()
        return {
            "converged": t_conv is not None,
            "stayed": t_conv is not None and low_after == n,
            "seconds": t_conv,
            "fewest_at_end": min(fewest),
            "fewest_after_convergence": low_after if t_conv is not None else None,
            "false_expiries_before": expired_at_conv if t_conv is not None else sum(expired),
            "false_expiries_during_hold": sum(expired) - expired_at_conv if t_conv is not None else None,
            "host_exit_codes": [c.returncode for c in children],
            "discovery": {f: sum(h.get(f, 0) for h in stats) for f in STATS},
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--proxy", help=argparse.SUPPRESS)
    ap.add_argument("--k", type=int, default=25, help=argparse.SUPPRESS)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--hold", type=float, default=10.0, help="seconds it must stay converged")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds a run may take to converge")
    ap.add_argument("--prove", action="store_true", help="peers prove their uuid (SocketPolicy(prove_identity=True))")
    ap.add_argument("--hogs", type=int, default=0, help="busy-loop processes running meanwhile (a loaded box)")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    if a.host:
        return host(a.proxy, a.k, a.timeout, a.prove)
    runs = []
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.hogs)]
    try:
        for r in range(a.runs):
            res = one_run(a.n, a.procs, a.hold, a.timeout, a.prove)
            runs.append(res)
            print(f"run {r + 1}/{a.runs}: {json.dumps(res)}", flush=True)
    finally:
        for h in hogs:  # by PID, bounded
            h.terminate()
            try:
                h.wait(5)
            except subprocess.TimeoutExpired:
                h.kill()
                h.wait()
    secs = sorted(r["seconds"] for r in runs if r["seconds"] is not None)
    summary = {
        "n": a.n,
        "procs": a.procs,
        "hold": a.hold,
        "hogs": a.hogs,
        "prove": a.prove,
        "runs": len(runs),
        "converged": sum(r["converged"] for r in runs),
        "stayed": sum(r["stayed"] for r in runs),
        "seconds_p50": secs[len(secs) // 2] if secs else None,
        "seconds_max": secs[-1] if secs else None,
        "load_average": os.getloadavg(),
        "results": runs,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "results"}))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=1)
    return 0 if summary["stayed"] == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
