"""``zeromesh hang-demo``: the ``zmq_ctx_term`` hang, deterministically
(pyzmq only: no extra needed)."""

from __future__ import annotations

import argparse
import math
import sys
import threading

from ..harness import hangdemo


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (hangdemo.__doc__ or "").split("\n\n")[1].replace("``", "")  # --help shows no reST
    p.add_argument(
        "--seconds",
        "-seconds",
        type=float,
        default=0.0,
        metavar="N",
        help="live this long first, like a churned peer (so the soak watchdog can run it)",
    )
    p.add_argument(
        "--early-linger",
        "-early-linger",
        action="store_true",
        help="set linger at creation: term returns (the fix)",
    )
    p.add_argument(
        "--socket",
        choices=["pub", "push"],
        default="pub",
        help="pub: a PUB whose subscriber vanished (as in the seed); push: a PUSH to nobody",
    )


def run(a: argparse.Namespace) -> int:
    if not math.isfinite(a.seconds) or a.seconds < 0:
        print(f"zeromesh hang-demo: --seconds must be a finite number >= 0, got {a.seconds}", file=sys.stderr)
        return 2
    if a.seconds > 0:
        threading.Event().wait(a.seconds)  # the "lifetime" of this pretend peer
    try:
        hangdemo.run(early_linger=a.early_linger, kind=a.socket)
    except KeyboardInterrupt:
        print("hang-demo: interrupted while hung in term()", file=sys.stderr)
        return 130
    return 0
