"""How long ``zeromesh members`` takes against an N-peer mesh, process start
included (the issue's goal: under 300 ms at N = 100).

    python benchmarks/members_cli.py --peers 100 --runs 20

Starts a proxy in this process and N peers in child processes (25 each: a
full mesh of 100 in one process needs more file descriptors than a default
limit allows), waits until the proxy lists all of them, then runs ``zeromesh members --proxy EP --format json`` (and the
table) as child processes, timing each from spawn to exit. Also times a bare
``python -c pass`` and ``python -c "import zeromesh"`` as the floor.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import zmq

from zeromesh import Proxy, wire
from zeromesh.members import list_members

PER_CHILD = 25
#: A child: N peers with metadata until its stdin closes.
CHILD = """
import sys
from zeromesh import Peer
peers = [Peer(sys.argv[1], meta={"role": "bench", "i": str(i)}).start() for i in range(int(sys.argv[2]))]
sys.stdin.read()
for p in peers:
    p.leave()
for p in peers:
    p.stop()
"""


def _tend(sock: zmq.Socket[Any], stop: threading.Event) -> None:
    # A bound socket that never processes its commands drops new connections
    # (the proxy's probe saw each one go down within a second): poll it.
    while not stop.is_set():
        sock.poll(100)


def _stand_ins(ctx: zmq.Context[Any], proxy: Proxy, n: int, stop: threading.Event) -> threading.Thread:
    """*n* directory entries whose endpoints one socket binds (so the proxy's
    liveness probe finds them up), announced with metadata."""
    alive = ctx.socket(zmq.PUB)
    alive.setsockopt(zmq.LINGER, 0)
    endpoints = []
    for _ in range(n):
        alive.bind("tcp://127.0.0.1:0")
        endpoints.append(alive.getsockopt_string(zmq.LAST_ENDPOINT))
    tender = threading.Thread(target=_tend, args=(alive, stop), daemon=True)
    tender.start()
    # The proxy's XSUB subscribes upstream only once someone subscribes to its XPUB.
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(proxy.endpoint)
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.connect(proxy.xsub_endpoint)
    frames = [
        wire.encode(wire.Message(wire.Command.CONNECT, str(uuid.uuid4()), ep, {"meta": {"role": "bench", "i": str(i)}}))
        for i, ep in enumerate(endpoints)
    ]
    deadline = time.monotonic() + 30
    while len(_listed(proxy.endpoint)) < n and time.monotonic() < deadline:
        for f in frames:  # re-sent until listed: the first ones race the XSUB's subscription
            pub.send(f)
        time.sleep(0.05)  # sleep: pacing the re-sends of a bounded wait
    return tender


def _listed(endpoint: str) -> list[object]:
    try:
        return list(list_members(endpoint, 5.0).members)
    except TimeoutError:  # a proxy busy with 100 joins on a loaded machine
        return []


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """Wall time from spawn to exit, CPU time (user + system) of the child, its stdout."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), r.stdout


def summary(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"p50 {statistics.median(xs) * 1000:.0f} ms, max {xs[-1] * 1000:.0f} ms"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=100)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--stand-ins", action="store_true",
                    help="fill the directory with announcements for endpoints one socket binds (no peer "
                         "processes: the listing costs the same, the machine much less)")  # fmt: skip
    a = ap.parse_args()
    exe = shutil.which("zeromesh") or sys.executable
    base = [exe] if exe.endswith("zeromesh") else [sys.executable, "-m", "zeromesh"]
    with Proxy("tcp://127.0.0.1:0") as proxy:
        groups = [min(PER_CHILD, a.peers - i) for i in range(0, a.peers, PER_CHILD)]
        children = (
            []
            if a.stand_ins
            else [
                subprocess.Popen([sys.executable, "-c", CHILD, proxy.endpoint, str(n)], stdin=subprocess.PIPE)
                for n in groups
            ]
        )
        ctx = zmq.Context()
        stop = threading.Event()
        tender = None
        try:
            if a.stand_ins:
                tender = _stand_ins(ctx, proxy, a.peers, stop)
            deadline = time.monotonic() + 180
            while len(_listed(proxy.endpoint)) < a.peers:
                if time.monotonic() > deadline:
                    raise SystemExit("the proxy did not list every peer in 180 s")
                time.sleep(0.1)  # sleep: polling interval of a bounded wait
            results: dict[str, list[float]] = {}
            cpu: dict[str, list[float]] = {}
            cmds = {
                "python -c pass": [sys.executable, "-c", "pass"],
                "python -c 'import zeromesh'": [sys.executable, "-c", "import zeromesh"],
                "zeromesh members --format json": [*base, "members", "--proxy", proxy.endpoint, "--format", "json"],
                "zeromesh members (table)": [*base, "members", "--proxy", proxy.endpoint],
            }
            for name in cmds:
                results[name], cpu[name] = [], []
            for _ in range(a.runs):
                for name, cmd in cmds.items():
                    t, c, out = timed(cmd)
                    results[name].append(t)
                    cpu[name].append(c)
                    if name.endswith("json"):
                        got = len(json.loads(out))
                        assert got == a.peers, f"listed {got} of {a.peers}"
            print(f"N = {a.peers} peers, {a.runs} runs each; load average {os.getloadavg()[0]:.1f}")
            for name, xs in results.items():
                print(f"  {name:<32} wall {summary(xs)}; CPU {summary(cpu[name])}")
        finally:
            stop.set()
            if tender is not None:
                tender.join(2)
            ctx.destroy(linger=0)
            for child in children:
                assert child.stdin is not None
                child.stdin.close()  # the children leave on EOF
            for child in children:
                try:
                    child.wait(15)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()


if __name__ == "__main__":
    main()
