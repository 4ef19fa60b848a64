"""``zeromesh matrix``: several soak scenarios with one budget, one report."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import common
from .soak import EXTRA_MODULES


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..harness import MATRIX_DEFAULT, SCENARIOS
    from ..harness_cli import _soak_args

    p.add_argument("--scenarios", default=",".join(MATRIX_DEFAULT), metavar="A,B,...",
                   help=f"comma-separated, from: {', '.join(SCENARIOS)} (default: %(default)s)")  # fmt: skip
    p.add_argument("--out", type=Path, help="output folder (default matrix-YYYYmmdd-HHMMSS)")
    _soak_args(p, duration=60.0, churners=10, lifetime=1.0, pause=0.2)
    p.set_defaults(default_duration=60.0)


def run(a: argparse.Namespace) -> int:
    rc = common.require_extra("matrix", "soak", EXTRA_MODULES)
    if rc is not None:
        return rc
    from ..harness_cli import cmd_matrix

    return cmd_matrix(a)
