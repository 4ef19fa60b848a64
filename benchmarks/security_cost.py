"""What CURVE costs: join latency and data-plane throughput, plain against
CURVE (mesh key only) against CURVE with an allow-list (a ZAP round trip per
connection), side by side in one run, interleaved so that machine noise hits
all three alike.

* join: ``Peer.start()`` to ``ready`` (own ``C`` heard), and to a full view
  (every member listed), with *existing* members in the mesh;
* data: one publisher, *receivers* subscribers (``Peer.publish`` to
  ``on_message``), delivered messages/s, medians of *rounds* runs (the
  suite's warm-up, then batches of 500 each waited for: no loss).

``python benchmarks/security_cost.py [--joins 50] [--quick]`` prints a
markdown table and the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import zmq

from zeromesh import Peer, Proxy
from zeromesh.bench.common import WAIT_CAP, markdown_table, percentiles, stop_all
from zeromesh.bench.data import Counter, warm
from zeromesh.security import Security, keygen
from zeromesh.testing.waits import wait_for

MODES = ("plain", "curve", "curve+allow")


class Keys:
    """Security per mode and member (None for plain)."""

    def __init__(self, root: Path, members: int) -> None:
        keygen(root, members)
        self.root = root

    def get(self, mode: str, who: str) -> Security | None:
        if mode == "plain":
            return None
        return Security.from_dir(self.root / who, self.root / "allow" if mode == "curve+allow" else None)


@contextmanager
def mesh(keys: Keys, mode: str, n: int, **peer_kw: Any) -> Iterator[tuple[Proxy, list[Peer]]]:
    """A proxy and *n* converged members (member-1 .. member-n)."""
    with Proxy(security=keys.get(mode, "proxy")) as proxy:
        peers = [
            Peer(proxy.endpoint, security=keys.get(mode, f"member-{k}"), **peer_kw).start() for k in range(1, n + 1)
        ]
        try:
            want = {p.uuid for p in peers}
            if not wait_for(lambda: all(set(p.peers()) == want for p in peers), WAIT_CAP):
                raise RuntimeError(f"{mode} mesh of {n} did not converge")
            yield proxy, peers
        finally:
            stop_all(peers)


def bench_join(keys: Keys, joins: int, existing: int) -> list[dict[str, Any]]:
    ready: dict[str, list[float]] = {m: [] for m in MODES}
    view: dict[str, list[float]] = {m: [] for m in MODES}
    with ExitStack() as stack:
        proxies = {m: stack.enter_context(mesh(keys, m, existing))[0] for m in MODES}
        newcomer = f"member-{existing + 1}"
        secs = {m: keys.get(m, newcomer) for m in MODES}
        for _ in range(joins):
            for m in MODES:  # interleaved: the same noise for all three
                t0 = time.perf_counter()
                p = Peer(proxies[m].endpoint, security=secs[m]).start()
                try:
                    if not p.wait_ready(WAIT_CAP):
                        raise RuntimeError(f"{m}: a join did not complete")
                    ready[m].append(time.perf_counter() - t0)

                    def full_view(p: Peer = p) -> bool:
                        return len(p.peers()) == existing + 1

                    if not wait_for(full_view, WAIT_CAP, 0.0005):
                        raise RuntimeError(f"{m}: the newcomer never saw every member")
                    view[m].append(time.perf_counter() - t0)
                finally:
                    p.stop()
    rows = []
    for m in MODES:
        r, v = percentiles(ready[m]), percentiles(view[m])
        rows.append(
            {
                "mode": m,
                "joins": r["n"],
                "ready p50 ms": round(r["p50"] * 1000, 2),
                "ready p90 ms": round(r["p90"] * 1000, 2),
                "full view p50 ms": round(v["p50"] * 1000, 2),
                "full view p90 ms": round(v["p90"] * 1000, 2),
            }
        )
    return rows


#: Messages in flight per batch: below the PUB's send high-water mark (1000), so
#: nothing is dropped and the figure is what the path carries, not what survives.
BATCH = 500


class _Gauge(Counter):
    """A receiver's count that sets :attr:`reached` at :attr:`target`: the
    publisher waits on an event, not by polling (which would steal the GIL)."""

    def __init__(self) -> None:
        super().__init__()
        self.target = 0
        self.reached = threading.Event()

    def __call__(self, msg: object) -> None:
        super().__call__(msg)
        if self.n == self.target:
            self.reached.set()


def _paced(publish: Callable[[bytes], None], payload: bytes, count: int, gauges: list[_Gauge]) -> dict[str, float]:
    """Send *count* messages in batches of BATCH, each batch waited for by
    every receiver (bounded): a lossless, flow-controlled throughput."""
    for g in gauges:
        g.n = 0
    t0 = time.perf_counter()
    sent = 0
    while sent < count:
        n = min(BATCH, count - sent)
        for g in gauges:
            g.target = sent + n
            g.reached.clear()
        for _ in range(n):
            publish(payload)
        sent += n
        for g in gauges:
            if not g.reached.wait(WAIT_CAP):
                raise RuntimeError(f"a receiver stalled at {g.n} of {sent}")
    return {"elapsed": time.perf_counter() - t0, "delivered": sent * len(gauges)}


def _data_run(keys: Keys, mode: str, receivers: int, payload: int, count: int) -> dict[str, float]:
    counters = [_Gauge() for _ in range(receivers)]
    with Proxy(security=keys.get(mode, "proxy")) as proxy:
        # The sender gets its own messages too (a peer's data SUB connects to its own PUB).
        everyone = [Peer(proxy.endpoint, security=keys.get(mode, "member-1"), on_message=Counter()).start()]
        everyone += [
            Peer(proxy.endpoint, security=keys.get(mode, f"member-{k + 2}"), on_message=c).start()
            for k, c in enumerate(counters)
        ]
        try:
            want = {p.uuid for p in everyone}
            if not wait_for(lambda: all(set(p.peers()) == want for p in everyone), WAIT_CAP):
                raise RuntimeError(f"{mode}: data mesh did not converge")
            sender = everyone[0]
            warm(lambda f: sender.publish(f[0], f[2]), counters)
            return _paced(lambda b: sender.publish(b"bench", b), os.urandom(payload), count, counters)
        finally:
            stop_all(everyone)


def bench_data(keys: Keys, receivers: int, rounds: int, counts: dict[int, int]) -> list[dict[str, Any]]:
    rows = []
    for payload, count in counts.items():
        runs: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
        for _ in range(rounds):
            for m in MODES:
                runs[m].append(_data_run(keys, m, receivers, payload, count))
        plain = statistics.median(r["delivered"] / r["elapsed"] for r in runs["plain"])
        for m in MODES:
            rate = statistics.median(r["delivered"] / r["elapsed"] for r in runs[m])
            rows.append(
                {
                    "payload B": payload,
                    "mode": m,
                    "msgs/s delivered": round(rate),
                    "MB/s": round(rate * payload / 1e6, 1),
                    "vs plain": round(rate / plain, 3),
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--joins", type=int, default=50, help="joins per mode (default %(default)s)")
    ap.add_argument("--existing", type=int, default=5, help="members already in the mesh (default %(default)s)")
    ap.add_argument("--receivers", type=int, default=2, help="data receivers (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=3, help="data runs per mode and payload (default %(default)s)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    a = ap.parse_args()
    counts = {64: 2_000, 65536: 200} if a.quick else {64: 50_000, 65536: 5_000}
    joins, rounds = (5, 1) if a.quick else (a.joins, a.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        keys = Keys(Path(tmp) / "keys", max(a.existing, a.receivers) + 2)
        result: dict[str, Any] = {
            "join": bench_join(keys, joins, a.existing),
            "data": bench_data(keys, a.receivers, rounds, counts),
            "env": {
                "pyzmq": zmq.__version__,
                "libzmq": zmq.zmq_version(),
                "cpus": os.cpu_count(),
                "loadavg_1m": round(os.getloadavg()[0], 2),
            },
        }
    print(markdown_table(result["join"]))
    print()
    print(markdown_table(result["data"]))
    print()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
