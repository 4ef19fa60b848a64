"""Shared helpers of the benchmark suite.

Every benchmark is a library function returning a :data:`Result` dict
(``name``, ``title``, ``params``, ``rows``: one dict per table row,
``summary``) and runs what it compares side by side in the same run, since
the machines it runs on are noisy: read the ratios and medians.
:func:`write_result` stores the JSON and a markdown table.

"classic" means the seed's behaviour (:meth:`Behaviour.classic` and
:meth:`SocketPolicy.classic`); "zeromesh" means the defaults.
"""

from __future__ import annotations

import dataclasses
import json
import math
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import timing
from ..peer import Peer
from ..protocol import Behaviour, PeerEvent
from ..proxy import Proxy, ProxyMode
from ..sockets import SocketPolicy
from ..testing.waits import wait_for

Result = dict[str, Any]

WAIT_CAP = timing.BENCH_WAIT_CAP
POLL = timing.BENCH_POLL


def percentiles(xs: Sequence[float]) -> dict[str, float]:
    """n, p50/p90/p99/max (nearest rank) and mean of *xs*, in its own unit."""
    if not xs:
        return {"n": 0}
    s = sorted(xs)

    def rank(p: float) -> float:
        return s[max(0, math.ceil(p / 100 * len(s)) - 1)]

    return {
        "n": len(s),
        "p50": rank(50),
        "p90": rank(90),
        "p99": rank(99),
        "max": s[-1],
        "mean": statistics.fmean(s),
    }


def ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000, 2)


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
def mesh(
    n: int,
    mode: ProxyMode = "directory",
    classic: bool = False,
    recorder: Recorder | None = None,
    policy: SocketPolicy | None = None,
) -> Iterator[tuple[Proxy, list[Peer]]]:
    """A proxy and *n* started, converged peers; everything stopped on exit."""
    b, pol = classic_config() if classic else (Behaviour(), SocketPolicy())
    pol = policy or pol
    peers: list[Peer] = []
    with Proxy("tcp://127.0.0.1:0", mode=mode) as proxy:
        try:
            for _ in range(n):
                peers.append(Peer(proxy.endpoint, layers=(b, pol), on_event=recorder).start())
            if not all(p.wait_ready(WAIT_CAP) for p in peers):
                raise RuntimeError("mesh did not come up")
            want = {p.uuid for p in peers}
            if not wait_for(lambda: all(set(p.peers()) == want for p in peers), WAIT_CAP):
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


def send_line(p: subprocess.Popen[str], line: str) -> None:
    """Write one command line to a child's stdin (a child already gone is fine)."""
    if p.stdin is not None:
        try:
            p.stdin.write(line + "\n")
            p.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass


def say(**kw: Any) -> None:
    """A child's report: one JSON line on stdout, flushed."""
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()
