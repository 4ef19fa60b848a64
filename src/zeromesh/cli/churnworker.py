"""``zeromesh churn-worker`` (internal, used by ``soak --mode inproc``)."""

from __future__ import annotations

import argparse

from .. import churn


def add_arguments(p: argparse.ArgumentParser) -> None:
    churn.add_args(p)


def run(a: argparse.Namespace) -> int:
    return churn.run(a)
