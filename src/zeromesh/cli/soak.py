"""``zeromesh soak``: churn a mesh on an embedded proxy; verdict on memory and hangs."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import common

#: What the ``soak`` extra brings that the harness imports (module names).
EXTRA_MODULES = ("psutil", "rich", "matplotlib", "scipy")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..harness_cli import _soak_args
    from ..harness import SCENARIOS

    p.add_argument("--scenario", default="default", choices=list(SCENARIOS), metavar="NAME",
                   help=f"which seed behaviours to switch on: {', '.join(SCENARIOS)} (default %(default)s)")  # fmt: skip
    p.add_argument("--out", type=Path, help="output folder (default soak-YYYYmmdd-HHMMSS)")
    _soak_args(p, duration=60.0, churners=5, lifetime=2.0, pause=1.0)
    p.set_defaults(default_duration=60.0)


def run(a: argparse.Namespace) -> int:
    rc = common.require_extra("soak", "soak", EXTRA_MODULES)
    if rc is not None:
        return rc
    from ..harness_cli import cmd_soak

    return cmd_soak(a)
