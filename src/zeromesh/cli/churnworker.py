"""``zeromesh churn-worker`` (hidden; run by ``soak --mode inproc`` as
``python -m zeromesh churn-worker ...``): many peer lifetimes in one process.
The peer flags are parsed here into typed settings for
:mod:`zeromesh.harness.churn`, which knows nothing of the command line."""

from __future__ import annotations

import argparse

from ..harness import churn
from . import common
from .peer import add_peer_arguments, bind_of, peer_options, proxies_of


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_peer_arguments(p)
    p.add_argument("--demo-hang", action="store_true",
                   help="each lifetime ends in the deterministic ctx_term hang (tests the watchdog)")  # fmt: skip


def run(a: argparse.Namespace) -> int:
    try:
        tuning, seed = peer_options(a)
    except ValueError as exc:
        return common.fail("churn-worker", exc)
    settings = churn.WorkerSettings(
        proxy=tuple(proxies_of(a)),
        lifetime=a.seconds if a.seconds is not None else 2.0,
        bind=bind_of(a),
        advertise=a.advertise,
        tuning=tuning,
        seed=seed,
        demo_hang=a.demo_hang,
    )
    return churn.run(settings)
