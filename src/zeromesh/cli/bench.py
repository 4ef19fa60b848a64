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


def run(a: argparse.Namespace) -> int:
    rc = common.require_extra("bench", "bench", EXTRA_MODULES)
    if rc is not None:
        return rc
    from ..bench import suite

    command = (
        "zeromesh bench "
        + a.which
        + (" --quick" if a.quick else "")
        + (f" --out {a.out}" if a.out != "docs/perf" else "")
    )
    suite.run(a.which, a.quick, Path(a.out), command)
    return 0
