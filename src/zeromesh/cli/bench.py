"""The ``bench`` subcommand: ``zeromesh bench [join|converge|...|all]``.

Imports nothing heavy at module level: ``zeromesh --help`` and a missing
``bench`` extra must not pay for (or fail on) the benchmarks' dependencies.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..bench import NAMES
from . import common

#: What the ``bench`` extra brings that the benchmarks import (module names).
EXTRA_MODULES = ("psutil", "matplotlib", "pyre")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("which", nargs="?", default="all", choices=[*NAMES, "all"])
    p.add_argument("--quick", action="store_true", help="tiny sizes: seconds, not minutes")
    p.add_argument("--out", default="docs/perf", help="directory for the JSON, markdown and PNG (default %(default)s)")
    p.add_argument(
        "--sizes", type=_sizes, help="mesh sizes for converge, idle and interest, comma-separated (e.g. 10,50,100)"
    )
    p.add_argument("--rounds", type=_positive, help="alternating rounds per figure (converge, idle, data)")


def _sizes(text: str) -> list[int]:
    """argparse type: comma-separated mesh sizes, each >= 2."""
    try:
        sizes = [int(x) for x in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 2:
        raise argparse.ArgumentTypeError(f"not a list of mesh sizes >= 2 like 10,50,100: {text!r}")
    return sizes


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(text)


def run(a: argparse.Namespace) -> int:
    rc = common.require_extra("bench", "bench", EXTRA_MODULES)
    if rc is not None:
        return rc
    from ..bench import suite

    command = (
        "zeromesh bench "
        + a.which
        + (" --quick" if a.quick else "")
        + (f" --sizes {','.join(map(str, a.sizes))}" if a.sizes else "")
        + (f" --rounds {a.rounds}" if a.rounds else "")
        + (f" --out {a.out}" if a.out != "docs/perf" else "")
    )
    suite.run(a.which, a.quick, Path(a.out), command, sizes=a.sizes, rounds=a.rounds)
    return 0
