"""``zeromesh matrix``: several soak scenarios with one budget, one report;
each scenario's verdicts and exit code in it, the worst one as the exit code."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from ..harness import model
from ..harness.model import Exit
from . import common, soak


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = soak.wrap(
        "A soak per scenario (each beside its reference), then matrix.md + matrix.png + matrix.json with a row "
        "per scenario, its verdicts and exit code, and the conclusions in words. The exit code is the worst "
        "scenario's (the seed's scenarios are expected to give 1). " + soak.EXIT_HELP + "."
    )
    names = ", ".join(model.SCENARIOS)
    p.add_argument("--scenarios", default=",".join(model.MATRIX_DEFAULT), metavar="A,B,...",
                   help=f"comma-separated, from: {names} (default: %(default)s)")  # fmt: skip
    p.add_argument("--out", type=Path, help="output folder (default matrix-YYYYmmdd-HHMMSS)")
    soak.add_churn_arguments(p)


def run(a: argparse.Namespace) -> int:
    rc = soak.missing_extra("matrix")
    if rc is not None:
        return rc
    names = [n.strip() for n in a.scenarios.split(",") if n.strip()]
    out = a.out or Path(f"matrix-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    try:
        unknown = [n for n in names if n not in model.SCENARIOS]
        if unknown or not names:
            raise ValueError(f"unknown scenario(s) {unknown or names}; known: {', '.join(model.SCENARIOS)}")
        base = soak.config(a, scenario=names[0], out=out / names[0], command=soak.command_line())
    except ValueError as exc:
        return common.fail("matrix", exc, int(Exit.USAGE))
    soak.quiet_embedded_proxy(a)
    from ..harness.matrix import run_matrix

    doc, code = run_matrix(names, base, out)
    print(f"zeromesh matrix: report in {out}/matrix.md (exit code {int(code)})")
    for line in doc["conclusions"]:
        print(line)
    return int(code)
