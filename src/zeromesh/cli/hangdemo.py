"""``zeromesh hang-demo``: the ``zmq_ctx_term`` hang, deterministically."""

from __future__ import annotations

import argparse

from .. import hangdemo


def add_arguments(p: argparse.ArgumentParser) -> None:
    hangdemo.add_args(p)


def run(a: argparse.Namespace) -> int:
    return hangdemo.main(a)
