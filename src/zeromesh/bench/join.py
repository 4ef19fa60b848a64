"""Join latency: ``Peer`` start to its ``ready`` event, zeromesh against classic."""

from __future__ import annotations

import math
import threading
import time

from ..peer import Peer
from ..protocol import Behaviour
from ..sockets import SocketPolicy
from .common import WAIT_CAP, Recorder, Result, classic_config, mesh, ms, percentiles


def _join_lane(n: int, classic: bool, existing: int, out: list[float]) -> None:
    b, pol = classic_config() if classic else (Behaviour(), SocketPolicy())
    with mesh(existing, mode="classic" if classic else "directory", classic=classic) as (proxy, _):
        for _ in range(n):
            rec = Recorder()
            t0 = time.perf_counter()
            p = Peer(proxy.endpoint, layers=(b, pol), on_event=rec).start()
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
        rows.append(
            {
                "peer": name,
                "joins": p["n"],
                "p50 ms": ms(p.get("p50")),
                "p90 ms": ms(p.get("p90")),
                "p99 ms": ms(p.get("p99")),
                "max ms": ms(p.get("max")),
                "under 0.5 s %": round(100 * sum(1 for x in xs if x < 0.5) / len(xs)) if xs else None,
            }
        )
    z50, c50 = percentiles(zm).get("p50"), percentiles(cl).get("p50")
    return {
        "name": "join",
        "title": "Join latency: Peer start to ready (own C heard), in-process",
        "params": {"joins": joins, "classic_joins": classic_joins, "existing": existing, "lanes": lanes},
        "rows": rows,
        "summary": {
            "zeromesh_p50_ms": ms(z50),
            "zeromesh_p99_ms": ms(percentiles(zm).get("p99")),
            "classic_p50_ms": ms(c50),
            "speedup_p50": round(c50 / z50, 1) if z50 and c50 else None,
            "goal": "p50 <= 10 ms, p99 <= 50 ms",
        },
    }
