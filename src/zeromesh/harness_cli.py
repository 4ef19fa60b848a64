"""CLI entry points of the harness: ``soak``, ``matrix``, ``churn-worker``, ``hang-demo``."""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from . import churn, hangdemo, logs, timing
from .harness import MATRIX_DEFAULT, SCENARIOS, SoakConfig, run_matrix, run_soak


def _soak_args(p: argparse.ArgumentParser, *, duration: float, churners: int, lifetime: float, pause: float) -> None:
    g = p.add_argument_group("churn")
    g.add_argument("--churners", type=int, default=churners, help="churning peers at once (default %(default)s)")
    g.add_argument("--lifetime", type=float, default=lifetime, metavar="S", help="each churner's lifetime (default %(default)s)")
    g.add_argument("--pause", type=float, default=pause, metavar="S", help="pause between two lifetimes of a slot (default %(default)s)")
    g.add_argument("--mode", choices=["auto", "process", "inproc"], default="auto",
                   help="process: a fresh process per lifetime (the seed); inproc: one worker per slot, a fresh "
                        "context per lifetime; auto: process up to 10 churners, inproc above (default %(default)s)")
    g.add_argument("--peer-cmd", metavar="CMD",
                   help="churn this program instead of zeromesh's peer, one process per lifetime; placeholders "
                        "{seconds} {proxy} {uuid} {python}; '-seconds N' is appended when {seconds} is absent")
    g.add_argument("--peer-args", default="", metavar="ARGS",
                   help="extra arguments for every churner, one string (write --peer-args='--late-linger')")
    g.add_argument("--long-lived-cmd", metavar="CMD",
                   help="run this program as the long-lived peer (placeholders {proxy} {python}); departures are "
                        "then counted from churner exits")
    g.add_argument("--long-lived-args", default="", metavar="ARGS", help="extra arguments for the long-lived peer")
    g.add_argument("--proxy-bind", default="tcp://127.0.0.1:0",
                   help="the embedded proxy's XPUB endpoint (the seed's C peer needs tcp://127.0.0.1:5555)")
    g.add_argument("--proxy-mode", choices=["directory", "classic"], default="directory")
    g.add_argument("--hang-grace", type=float, default=timing.HANG_GRACE, metavar="S",
                   help="a churner is hung when not gone lifetime + %(metavar)s + "
                        f"{timing.LEAVE_TIMEOUT:g} s after it started (default %(default)s)")
    b = p.add_argument_group("budget and output")
    b.add_argument("--duration", type=float, metavar="S",
                   help=f"seconds of churn (default {duration:g}, or no limit when --lifetimes is given)")
    b.add_argument("--lifetimes", type=int, metavar="N", help="stop after this many lifetimes (with --duration: whichever first)")
    b.add_argument("--memray", action="store_true", help="profile the long-lived peer's native allocations with memray")
    b.add_argument("--no-live", dest="live", action="store_false", default=None,
                   help="plain progress lines instead of the live display (automatic when stdout is not a terminal)")


def _config(a: argparse.Namespace, out: Path | None, scenario: str) -> SoakConfig:
    return SoakConfig(
        duration=a.duration if a.duration is not None or a.lifetimes else a.default_duration, lifetimes=a.lifetimes, churners=a.churners, lifetime=a.lifetime, pause=a.pause,
        scenario=scenario, mode=a.mode, out=out, peer_cmd=a.peer_cmd, peer_args=shlex.split(a.peer_args),
        long_lived_cmd=a.long_lived_cmd, long_lived_args=shlex.split(a.long_lived_args),
        proxy_bind=a.proxy_bind, proxy_mode=a.proxy_mode, memray=a.memray, live=a.live,
        hang_grace=a.hang_grace, command="zeromesh " + shlex.join(sys.argv[1:]),
    )


def cmd_soak(a: argparse.Namespace) -> int:
    logs.setup(a.verbose)
    try:
        summary = run_soak(_config(a, a.out, a.scenario))
    except ValueError as exc:
        print(f"zeromesh soak: {exc}", file=sys.stderr)
        return 2
    return 1 if summary["errors"] else 0


def cmd_matrix(a: argparse.Namespace) -> int:
    logs.setup(a.verbose)
    names = [n.strip() for n in a.scenarios.split(",") if n.strip()]
    out = a.out or Path(f"matrix-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    try:
        doc = run_matrix(names, _config(a, None, names[0] if names else "default"), out)
    except ValueError as exc:
        print(f"zeromesh matrix: {exc}", file=sys.stderr)
        return 2
    print(f"zeromesh matrix: report in {out}/matrix.md")
    for line in doc["conclusions"]:
        print(line)
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    names = ", ".join(SCENARIOS)
    ps = sub.add_parser("soak", help="churn a mesh, measure memory and hangs, write a report",
                        description="One long-lived peer and N churning peers on an embedded proxy; samples the "
                                    "long-lived peer's memory, catches hung exits, and writes artefacts and a verdict.")
    ps.add_argument("--scenario", default="default", choices=list(SCENARIOS), metavar="NAME",
                    help=f"which seed behaviours to switch on: {names} (default %(default)s); see docs/soak.md")
    ps.add_argument("--out", type=Path, help="output folder (default soak-YYYYmmdd-HHMMSS)")
    _soak_args(ps, duration=60.0, churners=5, lifetime=2.0, pause=1.0)
    ps.set_defaults(func=cmd_soak, default_duration=60.0)

    pm = sub.add_parser("matrix", help="run several scenarios with the same budget, one report",
                        description="A soak per scenario, then matrix.md + matrix.png with a row per scenario and "
                                    "the conclusions in words.")
    pm.add_argument("--scenarios", default=",".join(MATRIX_DEFAULT), metavar="A,B,...",
                    help=f"comma-separated, from: {names} (default: %(default)s)")
    pm.add_argument("--out", type=Path, help="output folder (default matrix-YYYYmmdd-HHMMSS)")
    _soak_args(pm, duration=60.0, churners=10, lifetime=1.0, pause=0.2)
    pm.set_defaults(func=cmd_matrix, default_duration=60.0)

    pw = sub.add_parser("churn-worker", help="(used by soak --mode inproc) many peer lifetimes in one process")
    churn.add_args(pw)
    pw.set_defaults(func=_churn_worker)

    ph = sub.add_parser("hang-demo", help="hang in zmq_ctx_term deterministically (or not, with --early-linger)",
                        description=(hangdemo.__doc__ or "").split("\n\n")[1].replace("\n", " "))
    hangdemo.add_args(ph)
    ph.set_defaults(func=hangdemo.main)


def _churn_worker(a: argparse.Namespace) -> int:
    logs.setup(a.verbose)
    return churn.run(a)
