"""What every subcommand shares: --version, -v/-q, one exit-code table, help
text without markup, the internal command hidden, 130 when interrupted."""

from __future__ import annotations

import argparse
import re
import signal
import time

import pytest
import zmq

import zeromesh
from test_cli import Children, children, run  # noqa: F401 (children: fixture)
from zeromesh.cli import COMMANDS, EXIT_CODES, build_parser

pytestmark = pytest.mark.timeout(60)

#: reST/Sphinx markup that must not reach a terminal.
MARKUP = re.compile(r"``|:(class|func|meth|data|mod|attr|param|exc):|^\.\. |\*\*\w", re.M)


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_version_names_zeromesh_pyzmq_and_libzmq(zeromesh_exe: list[str]) -> None:
    r = run(zeromesh_exe, "--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"zeromesh {zeromesh.__version__} (pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()})"


def test_one_exit_code_table_in_every_help() -> None:
    assert {0, 1, 2, 130} <= set(EXIT_CODES) and EXIT_CODES[130].startswith("interrupted")
    parser = build_parser(None)
    for name, p in {"zeromesh": parser, **subparsers(parser)}.items():
        text = p.format_help()
        for code, meaning in EXIT_CODES.items():
            assert f"{code:>3}  {meaning}" in text, (name, code)


def test_help_has_no_markup_and_every_subcommand_has_v_and_q() -> None:
    parser = build_parser(None)
    assert not MARKUP.search(parser.format_help())
    subs = subparsers(parser)
    assert set(subs) == set(COMMANDS)
    for name, p in subs.items():
        text = p.format_help()
        assert not MARKUP.search(text), (name, MARKUP.search(text))
        assert "-v, --verbose" in text and "-q, --quiet" in text, name


def test_the_internal_command_is_hidden(zeromesh_exe: list[str]) -> None:
    hidden = [n for n, c in COMMANDS.items() if c.hidden]
    assert hidden == ["churn-worker"]
    r = run(zeromesh_exe, "--help")
    assert r.returncode == 0 and "churn-worker" not in r.stdout and "members" in r.stdout


def test_usage_errors_are_one_line_with_exit_2(zeromesh_exe: list[str]) -> None:
    for args in (["members", "--format", "xml"], ["members", "--timeout", "nan"], ["peer", "--metrics", "x"]):
        r = run(zeromesh_exe, *args)
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, args


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_members_interrupted_while_waiting_exits_130(children: Children, sig: int) -> None:  # noqa: F811
    # A port nobody listens on: members waits for a welcome that never comes.
    p = children.start("members", "--proxy", "tcp://127.0.0.1:1", "--timeout", "30", "-vv")
    assert p.stderr is not None
    assert "waiting for the welcome" in p.stderr.readline()
    t0 = time.monotonic()
    p.send_signal(sig)
    assert p.wait(5.0) == 130
    assert time.monotonic() - t0 < 1.0
