"""Against zeromq-pyre (Zyre's Python port), one node per network namespace.

Child entry point: ``python -m zeromesh.bench.pyre {pyre,zeromesh} [--proxy EP]
[--bind EP]`` (one discovery node).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import zmq

from ..harness import procs
from ..lines import reader_of
from ..peer import Peer
from ..testing import netns
from .common import WAIT_CAP, Result, ms, percentiles


def node_main(argv: Sequence[str]) -> int:
    """One discovery node for the Pyre comparison: ``pyre`` (UDP beacons) or
    ``zeromesh`` (a peer of the given proxy). Prints ``START t`` right before
    start() and ``SEEN t`` for every other node discovered (wall clock), until
    its stdin closes (or *cap* seconds)."""
    ap = argparse.ArgumentParser(prog="python -m zeromesh.bench.pyre")
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
        p = Peer(
            a.proxy,
            bind=a.bind or "tcp://127.0.0.1:0",
            on_event=lambda ev: say("SEEN", time.time(), ev.uuid) if ev.kind == "join" else None,
        ).start()
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


class _Lines:
    """Collect a child's stdout lines as they come (a thread per child)."""

    def __init__(self, p: subprocess.Popen[str]) -> None:
        self.p = p
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self) -> None:
        reader = reader_of(self.p)
        while (line := reader.readline(1.0)) != "":  # None: nothing this second; "": EOF
            if line is None:
                continue
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


def _run_nodes(kind: str, n: int, stagger: float, timeout: float) -> list[dict[str, Any]]:
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
                px = _Lines(
                    topo.popen(
                        "px",
                        [
                            sys.executable,
                            "-m",
                            "zeromesh",
                            "proxy",
                            "--bind",
                            f"tcp://{ip}:0",
                            "--xsub-bind",
                            f"tcp://{ip}:0",
                            "--events",
                            "jsonl",
                        ],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                        text=True,
                    )
                )
                children.append(px)
                if not px.wait("{", 1, timeout):
                    raise RuntimeError("proxy did not start")
                extra = ["--proxy", json.loads(px.lines[0])["endpoint"]]
            nodes: list[_Lines] = []
            for i in range(n):
                bind = ["--bind", f"tcp://{topo.addr(f'h{i}')}:0"] if kind == "zeromesh" else []
                node = _Lines(
                    topo.popen(
                        f"h{i}",
                        [sys.executable, "-m", "zeromesh.bench.pyre", kind, *extra, *bind],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                        text=True,
                    )
                )
                nodes.append(node)
                children.append(node)
                if stagger and i == 0:
                    node.wait("START", 1, timeout)
                    time.sleep(stagger)  # sleep: node 0 is up this long before the others start
            deadline = time.monotonic() + timeout
            for node in nodes:
                node.wait("SEEN", n - 1, max(0.0, deadline - time.monotonic()))
            return [{"start": next(iter(x.times("START")), None), "seen": x.times("SEEN")} for x in nodes]
        finally:
            for c in children:
                c.close()


def bench_pyre(
    trials: int = 5,
    n: int = 6,
    timeout: float = 20.0,
    kinds: Sequence[str] = ("pyre", "zeromesh"),
    converge_trials: int | None = None,
) -> Result:
    """Pyre and zeromesh side by side, each node in a network namespace of
    its own on one bridge (Pyre's UDP beacons need a broadcast-capable
    interface). Join: the second of two nodes, start() to the first node
    seen. Convergence: *n* nodes started together, last start() to every
    node having seen every other."""
    ok, reason = netns.available()
    why = None if ok else reason
    if importlib.util.find_spec("pyre") is None:
        why = why or "zeromq-pyre is not installed (pip install -e '.[bench]')"
    if why:
        return {
            "name": "pyre",
            "title": "Against zeromq-pyre",
            "params": {},
            "rows": [],
            "summary": {"not run": why},
        }
    rows = []
    for kind in kinds:
        joins = []
        for _ in range(trials):
            b = _run_nodes(kind, 2, 0.5, timeout)[1]
            if b["start"] is not None and b["seen"]:
                joins.append(min(b["seen"]) - b["start"])
        conv = []
        for _ in range(max(1, trials // 2) if converge_trials is None else converge_trials):
            nodes = _run_nodes(kind, n, 0.0, timeout)
            if all(x["start"] is not None and len(x["seen"]) >= n - 1 for x in nodes):
                last_start = max(x["start"] for x in nodes)
                conv.append(max(sorted(x["seen"])[n - 2] for x in nodes) - last_start)
        j, c = percentiles(joins), percentiles(conv)
        rows.append(
            {
                "impl": kind,
                "join trials": j["n"],
                "join p50 ms": ms(j.get("p50")),
                "join max ms": ms(j.get("max")),
                f"converge N={n} trials": c["n"],
                "converge p50 ms": ms(c.get("p50")),
                "converge max ms": ms(c.get("max")),
            }
        )
    return {
        "name": "pyre",
        "title": "Against zeromq-pyre: one node per network namespace, one bridge",
        "params": {"trials": trials, "n": n},
        "rows": rows,
        "summary": {
            "note": "join: 2nd node's start() to its 1st SEEN (pyre ENTER / zeromesh join event); "
            "converge: last node's start() to every node having seen all others"
        },
    }


if __name__ == "__main__":
    sys.exit(node_main(sys.argv[1:]))
