"""The ``zeromesh`` command: one module per subcommand, imported only when chosen.

Each subcommand module has ``add_arguments(parser)`` and ``run(args) -> int``;
:data:`COMMANDS` names them with their one-line help, so ``zeromesh --help``
and ``zeromesh peer`` import neither the harness nor the benchmarks (nor their
extras). Every subcommand gets ``-v``/``-q`` and the exit codes of
:data:`EXIT_CODES`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn, Protocol, cast

import zmq

from .. import __version__
from ..logs import setup as setup_logging

#: One table for every subcommand (README, ``--help``).
EXIT_CODES = {
    0: "success (soak/matrix: memory FLAT and nothing hung)",
    1: "failure: a verdict failed (GROWS, HANGS) or the process itself failed",
    2: "usage: a bad flag, argument or key file (one line on stderr)",
    3: "inconclusive (soak/matrix: the interval is too wide to decide)",
    130: "interrupted (SIGINT/SIGTERM) before the work was done",
}


@dataclass(frozen=True)
class Command:
    module: str
    help: str
    hidden: bool = False


COMMANDS: dict[str, Command] = {
    "proxy": Command("proxy", "run the discovery proxy"),
    "peer": Command("peer", "run one mesh peer"),
    "members": Command("members", "list the mesh from the proxy's directory without joining; --watch streams changes"),
    "keygen": Command("keygen", "create CURVE keys for a secured mesh"),
    "soak": Command("soak", "churn a mesh on an embedded proxy; verdict on memory and hangs"),
    "matrix": Command("matrix", "run several soak scenarios side by side, one report"),
    "hang-demo": Command("hangdemo", "hang in zmq_ctx_term on purpose (or not, with --early-linger)"),
    "bench": Command("bench", "run the benchmark suite"),
    "churn-worker": Command("churnworker", "internal: many peer lifetimes in one process", hidden=True),
}


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (exit 2), not argparse's usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


class _Module(Protocol):
    def add_arguments(self, p: argparse.ArgumentParser) -> None: ...

    def run(self, a: argparse.Namespace) -> int: ...


def _load(name: str) -> _Module:
    return cast(_Module, importlib.import_module(f"{__name__}.{COMMANDS[name].module}"))


def version_text() -> str:
    return f"zeromesh {__version__} (pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()})"


def _epilog() -> str:
    return "exit codes:\n" + "\n".join(f"  {k:>3}  {v}" for k, v in EXIT_CODES.items())


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The parser; only *chosen*'s module is imported to add its arguments
    (all of them when None, for tests and documentation)."""
    parser = _Parser(
        prog="zeromesh",
        description="A ZeroMQ discovery mesh and the churn harness that proves it neither leaks nor hangs.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=version_text())
    visible = [n for n, c in COMMANDS.items() if not c.hidden]
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{" + ",".join(visible) + "}", parser_class=_Parser
    )
    for name, cmd in COMMANDS.items():
        fmt = argparse.RawDescriptionHelpFormatter
        if cmd.hidden:  # a parser without help= is left out of the command list
            p = sub.add_parser(name, description=cmd.help, epilog=_epilog(), formatter_class=fmt)
        else:
            p = sub.add_parser(name, help=cmd.help, description=cmd.help, epilog=_epilog(), formatter_class=fmt)
        g = p.add_argument_group("output")
        g.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr (-vv: debug)")
        g.add_argument("-q", "--quiet", action="count", default=0, help="less logging on stderr (-qq: errors only)")
        if chosen is None or name == chosen:
            _load(name).add_arguments(p)
    return parser


def _chosen(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if arg in COMMANDS:
            return arg
        if not arg.startswith("-"):
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_chosen(args) or "")
    a = parser.parse_args(args)
    setup_logging(a.verbose - a.quiet)
    try:
        return _load(a.command).run(a)
    except KeyboardInterrupt:
        logging.getLogger("zeromesh").warning("interrupted")
        return 130
