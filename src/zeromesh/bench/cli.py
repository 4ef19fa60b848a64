"""The ``bench`` subcommand: ``zeromesh bench [join|converge|...|all]``.

Imports nothing heavy at module level: ``zeromesh --help`` and a missing
``bench`` extra must not pay for (or fail on) the benchmarks' dependencies.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from ..bench import NAMES

HELP = "run the benchmark suite (JSON + markdown tables)"

#: What the ``bench`` extra brings that the benchmarks import (module names).
EXTRA_MODULES = ("psutil", "matplotlib", "pyre")


def missing_extra() -> list[str]:
    """Modules of the ``bench`` extra that cannot be imported here."""
    missing = []
    for name in EXTRA_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("which", nargs="?", default="all", choices=[*NAMES, "all"])
    p.add_argument("--quick", action="store_true", help="tiny sizes: seconds, not minutes")
    p.add_argument(
        "--out", default="docs/perf", help="directory for the JSON, markdown and PNG (default %(default)s)"
    )


def run(a: argparse.Namespace) -> int:
    missing = missing_extra()
    if missing:
        print(
            f"zeromesh bench needs {', '.join(missing)}: install it with: pip install 'zeromesh[bench]'",
            file=sys.stderr,
        )
        return 2
    from ..bench import suite

    command = (
        "zeromesh bench "
        + a.which
        + (" --quick" if a.quick else "")
        + (f" --out {a.out}" if a.out != "docs/perf" else "")
    )
    suite.run(a.which, a.quick, Path(a.out), command)
    return 0
