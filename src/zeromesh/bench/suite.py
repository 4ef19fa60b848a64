"""``zeromesh bench``: run benchmarks by name, store their JSON and markdown.

Each benchmark module is imported only when it runs, so one benchmark does not
pay for the others' imports (matplotlib, psutil, pyre).
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import zmq

from . import NAMES
from .common import Result, write_result


def _suite(
    quick: bool, outdir: Path, sizes: Sequence[int] | None, rounds: int | None
) -> dict[str, Callable[[], Result]]:
    """The call (with its sizes: full, or tiny with *quick*; *sizes* and
    *rounds* override them where a benchmark has them) for each benchmark."""
    q = quick

    def mod(name: str) -> object:
        return importlib.import_module(f"zeromesh.bench.{name}")

    def call(name: str, fn: str, **kw: object) -> Callable[[], Result]:
        def go() -> Result:
            r: Result = getattr(mod(name), fn)(**kw)
            return r

        return go

    return {
        "join": call(
            "join",
            "bench_join",
            joins=30 if q else 200,
            classic_joins=10 if q else 100,
            existing=2 if q else 5,
            lanes=5,
        ),
        "converge": call(
            "converge",
            "bench_converge",
            sizes=tuple(sizes) if sizes else (2, 10) if q else (10, 50, 100),
            classic_sizes=(2,) if q else (10, 50),
            processes=5 if q else 20,
            rounds=rounds or (1 if q else 3),
        ),
        "leave": call(
            "leave",
            "bench_leave",
            leaves=5 if q else 50,
            existing=3 if q else 10,
            processes=2 if q else 10,
            lifetime=0.3 if q else 0.5,
        ),
        "discovery": call(
            "discovery",
            "bench_discovery",
            real_sizes=(5, 10) if q else (10, 25, 50, 80),
            sim_sizes=(5, 10, 50) if q else (10, 25, 50, 80, 100, 150, 200),
            png=outdir / "discovery.png",
        ),
        "data": call(
            "data",
            "bench_data",
            receivers=2 if q else 4,
            rounds=rounds or (1 if q else 3),
            counts={64: 5000, 4096: 2000} if q else None,
        ),
        "idle": call(
            "idle",
            "bench_idle",
            sizes=tuple(sizes) if sizes else (10,) if q else (100,),
            seconds=2.0 if q else 10.0,
            rounds=rounds or (1 if q else 2),
        ),
        "proxy": call(
            "proxy",
            "bench_proxy",
            subscribers=(1, 10) if q else (1, 10, 50, 100),
            seconds=1.0 if q else 3.0,
        ),
        "scaling": call("scaling", "bench_scaling", sizes=(100, 1_000) if q else (100, 1_000, 10_000)),
        "interest": call(
            "interest",
            "bench_interest",
            sizes=tuple(sizes) if sizes else (20,) if q else (100, 500),
            topics=5 if q else 10,
            per_host=10 if q else 25,
        ),
        "churn": call(
            "churn", "bench_churn", rates=(0, 5) if q else (0, 5, 10, 20, 40, 80), seconds=2.0 if q else 10.0
        ),
        "pyre": call("pyre", "bench_pyre", trials=2 if q else 5, n=3 if q else 6),
    }


def run(
    which: str,
    quick: bool,
    outdir: Path,
    command: str,
    sizes: Sequence[int] | None = None,
    rounds: int | None = None,
) -> list[Result]:
    """Run benchmark *which* (or ``all``), write each result to *outdir* and
    print its markdown table; *command* is recorded with the figures.
    *sizes* (mesh sizes) and *rounds* override the defaults of the benchmarks
    that have them (converge, idle, interest; data takes *rounds*)."""
    suite = _suite(quick, outdir, sizes, rounds)
    names = list(NAMES) if which == "all" else [which]
    results = []
    for name in names:
        t0 = time.monotonic()
        res = suite[name]()
        res["command"] = command
        res["seconds"] = round(time.monotonic() - t0, 1)
        res["machine"] = {
            "cpus": os.cpu_count(),
            "load1": os.getloadavg()[0],
            "pyzmq": zmq.__version__,
            "libzmq": zmq.zmq_version(),
            "python": sys.version.split()[0],
        }
        _, md = write_result(res, outdir)
        print(md.read_text())
        results.append(res)
    return results
