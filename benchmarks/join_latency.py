"""Join latency: how long until a peer has heard its own ``C`` (it is in the mesh).

Two measures, each over *n* joins against an in-process directory proxy on loopback:

* ``inproc``: ``Peer.start()`` to the ``ready`` event, in this process;
* ``process``: ``zeromesh peer`` child process start (``Popen``) to the
  ``ready`` line on its stdout (interpreter start-up included);

and, for comparison, ``classic``: in-process joins with ``SeedBehaviour.classic()``
(one ``C`` per 1 s poll turn), and ``seed``: the byte-level emulation of the
seed's C peer (:mod:`zeromesh.testing.cpeer`).

``measure(n) -> dict`` is the entry point (``zeromesh bench`` may fold it in);
``python benchmarks/join_latency.py [-n 100]`` prints the dict as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

import zmq

from zeromesh import Peer, Proxy, SeedBehaviour
from zeromesh.testing.cpeer import CPeer


def _summary(seconds: list[float]) -> dict[str, Any]:
    ms = sorted(s * 1000 for s in seconds)
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {
        "n": len(ms),
        "p50_ms": round(q[49], 2),
        "p99_ms": round(q[98], 2),
        "min_ms": round(ms[0], 2),
        "max_ms": round(ms[-1], 2),
    }


def _inproc(proxy: Proxy, n: int, classic: bool = False) -> list[float]:
    out = []
    for _ in range(n):
        peer = Peer(proxy.endpoint, seed=SeedBehaviour.classic() if classic else None)
        t0 = time.perf_counter()
        peer.start()
        try:
            if not peer.wait_ready(5.0):
                raise RuntimeError("a peer did not become ready within 5 s")
            out.append(time.perf_counter() - t0)
        finally:
            peer.stop()
    return out


def _process(proxy: Proxy, n: int) -> list[float]:
    out = []
    cmd = [
        sys.executable,
        "-m",
        "zeromesh",
        "peer",
        "--proxy",
        proxy.endpoint,
        "--events",
        "jsonl",
        "--seconds",
        "0.05",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for _ in range(n):
        t0 = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        try:
            assert child.stdout is not None
            line = child.stdout.readline()  # bounded: the peer's lifetime ends it
            if json.loads(line or "{}").get("event") != "ready":
                raise RuntimeError(f"unexpected first line from zeromesh peer: {line!r}")
            out.append(time.perf_counter() - t0)
            child.wait(10.0)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(5.0)
            if child.stdout is not None:
                child.stdout.close()
    return out


def _seed(proxy: Proxy, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        c = CPeer(proxy.endpoint).start()
        try:
            if not c.ready.wait(5.0):
                raise RuntimeError("the C peer emulation did not become ready within 5 s")
            out.append(time.perf_counter() - t0)
        finally:
            c.stop()
    return out


def measure(n: int = 100, processes: int | None = None, classic: int = 5) -> dict[str, Any]:
    """Join latency over *n* in-process joins, *processes* (default *n*) CLI
    joins, and *classic* joins each of zeromesh's classic behaviour and of the
    seed's C peer emulation (each of those costs about 1 s)."""
    with Proxy("tcp://127.0.0.1:0") as proxy:
        result: dict[str, Any] = {
            "inproc": _summary(_inproc(proxy, n)),
            "process": _summary(_process(proxy, n if processes is None else processes)),
        }
        if classic:
            result["classic"] = _summary(_inproc(proxy, classic, classic=True))
            result["seed"] = _summary(_seed(proxy, classic))
    result["env"] = {
        "python": platform.python_version(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("-n", type=int, default=100, help="joins per measure (default %(default)s)")
    ap.add_argument("--processes", type=int, help="CLI joins (default: -n)")
    ap.add_argument("--classic", type=int, default=5, help="seed-behaviour joins, each kind (default %(default)s)")
    a = ap.parse_args()
    print(json.dumps(measure(a.n, a.processes, a.classic), indent=2))


if __name__ == "__main__":
    main()
