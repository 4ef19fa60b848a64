"""``zeromesh soak``: churn a mesh beside the seed's behaviour; a verdict on
memory and hangs, and an exit code CI can gate on.

The harness needs the ``soak`` extra (psutil, rich, matplotlib, scipy): this
module checks for it before importing the harness, so ``--help`` and the
one-line install hint work without it. The flags are converted here into a
typed :class:`~zeromesh.harness.model.SoakConfig`; the harness never sees them.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import textwrap
from pathlib import Path

from .. import timing
from ..harness import model
from ..harness.model import Exit
from . import common

#: What the ``soak`` extra brings that the harness imports (module names).
EXTRA_MODULES = ("psutil", "rich", "matplotlib", "scipy")

EXIT_HELP = (
    "exit codes: 0 the peer under test is FLAT and nothing hung; 1 GROWS or HANGS (or the soak failed); "
    "2 usage error; 3 INCONCLUSIVE (the interval straddles the threshold, or too few departures); "
    "130 interrupted"
)


def missing_extra(command: str) -> int | None:
    """None when the ``soak`` extra imports; else one line naming the install command, and 2."""
    return common.require_extra(command, "soak", EXTRA_MODULES)


def add_churn_arguments(p: argparse.ArgumentParser) -> None:
    """The flags soak and matrix share (checked by :meth:`SoakConfig.check`)."""
    g = p.add_argument_group("churn")
    g.add_argument(
        "--churners",
        type=int,
        default=model.DEFAULT_CHURNERS,
        help="churning peers at once (default %(default)s)",
    )
    g.add_argument(
        "--lifetime",
        type=float,
        default=model.DEFAULT_LIFETIME,
        metavar="S",
        help="each churner's lifetime (default %(default)s)",
    )
    g.add_argument(
        "--pause",
        type=float,
        default=model.DEFAULT_PAUSE,
        metavar="S",
        help="pause between two lifetimes of a slot (default %(default)s)",
    )
    g.add_argument(
        "--mode",
        choices=["auto", "process", "inproc"],
        default="auto",
        help="process: a fresh process per lifetime (the seed); inproc: one worker per slot, a fresh "
        f"context per lifetime; auto: process up to {model.AUTO_PROCESS_MAX_RATE:g} lifetimes a "
        "second, inproc above (default %(default)s)",
    )
    g.add_argument(
        "--peer-cmd",
        metavar="CMD",
        help="churn this program instead of zeromesh's peer, one process per lifetime; placeholders "
        "{seconds} {proxy} {uuid} {python}; '-seconds N' is appended when {seconds} is absent",
    )
    g.add_argument(
        "--peer-args",
        default="",
        metavar="ARGS",
        help="extra arguments for every churner, one string (write --peer-args='--late-linger')",
    )
    g.add_argument(
        "--proxy-bind",
        default="tcp://127.0.0.1:0",
        help="the embedded proxy's XPUB endpoint (the seed's C peer needs tcp://127.0.0.1:5555)",
    )
    g.add_argument("--proxy-mode", choices=["directory", "classic"], default="directory")
    g.add_argument(
        "--hang-grace",
        type=float,
        default=timing.HANG_GRACE,
        metavar="S",
        help="a churner is hung when not gone lifetime + "
        f"{timing.LEAVE_TIMEOUT:g} s + %(metavar)s after it started (default %(default)s)",
    )
    ll = p.add_argument_group("long-lived peers (side by side in the same churn)")
    ll.add_argument(
        "--long-lived-cmd",
        metavar="CMD",
        help="run this program as the long-lived peer under test (placeholders {proxy} {python})",
    )
    ll.add_argument(
        "--long-lived-args",
        default="",
        metavar="ARGS",
        help="extra arguments for the long-lived peer under test",
    )
    ll.add_argument(
        "--reference",
        default="seed",
        metavar="seed|none|CMD",
        help="the reference long-lived peer beside it: seed (zeromesh peer --no-kick, the seed's "
        "memory behaviour), none, or a command (placeholders {proxy} {python}); "
        "default %(default)s",
    )
    b = p.add_argument_group("budget and output")
    b.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help=f"seconds of churn, warm-up included (default {model.DEFAULT_DURATION:g}, "
        "or no limit when --lifetimes is given)",
    )
    b.add_argument(
        "--lifetimes",
        type=int,
        metavar="N",
        help="stop after this many lifetimes (with --duration: whichever first)",
    )
    b.add_argument(
        "--warmup",
        type=float,
        default=timing.SOAK_WARMUP,
        metavar="S",
        help="seconds of churn before measuring memory (default %(default)s)",
    )
    b.add_argument("--memray", action="store_true", help="profile the long-lived peer's native allocations with memray")
    b.add_argument(
        "--no-live",
        dest="live",
        action="store_false",
        default=None,
        help="plain progress lines instead of the live display (automatic when stdout is not a terminal)",
    )


def wrap(text: str) -> str:
    """A description for the registry's raw formatter: one paragraph, wrapped."""
    return textwrap.fill(text, 79)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = wrap(
        "One embedded proxy, N churning peers, and two long-lived peers side by side in the same churn: the "
        "peer under test and a reference with the seed's behaviour. Samples both peers' memory, catches hung "
        "exits with their stacks, and writes artefacts and verdicts. " + EXIT_HELP + "."
    )
    p.add_argument(
        "--scenario",
        default="default",
        choices=list(model.SCENARIOS),
        metavar="NAME",
        help=f"which seed behaviours to switch on: {', '.join(model.SCENARIOS)} (default %(default)s); "
        "see docs/soak.md",
    )
    p.add_argument("--out", type=Path, help="output folder (default soak-YYYYmmdd-HHMMSS)")
    add_churn_arguments(p)


def config(a: argparse.Namespace, *, scenario: str, out: Path | None, command: str) -> model.SoakConfig:
    """The typed settings for *a* (ValueError, one line, for a bad value)."""
    try:
        peer_args, long_lived_args = shlex.split(a.peer_args), shlex.split(a.long_lived_args)
    except ValueError as exc:
        raise ValueError(f"--peer-args/--long-lived-args: {exc}") from None
    no_limit = a.duration is None and a.lifetimes is not None
    cfg = model.SoakConfig(
        duration=None if no_limit else (a.duration if a.duration is not None else model.DEFAULT_DURATION),
        lifetimes=a.lifetimes, churners=a.churners, lifetime=a.lifetime, pause=a.pause, warmup=a.warmup,
        scenario=scenario, mode=a.mode, out=out, peer_cmd=a.peer_cmd, peer_args=peer_args,
        long_lived_cmd=a.long_lived_cmd, long_lived_args=long_lived_args, reference=a.reference,
        proxy_bind=a.proxy_bind, proxy_mode=a.proxy_mode, memray=a.memray, live=a.live,
        hang_grace=a.hang_grace, command=command,
    )  # fmt: skip
    cfg.check()
    return cfg


def quiet_embedded_proxy(a: argparse.Namespace) -> None:
    """The embedded proxy logs every join and leave at INFO: dozens of lines a
    second under churn, over the progress lines. Its warnings still show;
    ``-v`` shows everything."""
    if getattr(a, "verbose", 0) <= 0:
        logging.getLogger("zeromesh.proxy").setLevel(logging.WARNING)


def command_line() -> str:
    return "zeromesh " + shlex.join(sys.argv[1:])


def run(a: argparse.Namespace) -> int:
    rc = missing_extra("soak")
    if rc is not None:
        return rc
    try:
        cfg = config(a, scenario=a.scenario, out=a.out, command=command_line())
    except ValueError as exc:
        return common.fail("soak", exc, int(Exit.USAGE))
    quiet_embedded_proxy(a)
    from ..harness.soak import run_soak

    summary = run_soak(cfg)
    return int(summary["exit_code"])
