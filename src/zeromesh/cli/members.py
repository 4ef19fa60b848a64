"""``zeromesh members``: list the mesh from the proxy's directory without
joining it (nobody sees a join or a leave), and with ``--watch`` stream joins
and leaves as they happen."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import zmq

from ..errors import SecurityError
from . import common

if TYPE_CHECKING:
    from ..members import MemberInfo

log = logging.getLogger("zeromesh")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--proxy", type=common.connect_endpoint, default=common.DEFAULT_PROXY,
                   help="the proxy's well-known XPUB endpoint (default %(default)s)")  # fmt: skip
    p.add_argument("--format", choices=["table", "json"], default="table",
                   help="table (default), or json: a list of objects (with --watch: one object per line)")  # fmt: skip
    p.add_argument("--watch", action="store_true",
                   help="after the listing, print joins and leaves as they happen, until interrupted")  # fmt: skip
    p.add_argument("--timeout", type=common.seconds(0, strict=True, maximum=3600), default=2.0, metavar="S",
                   help="how long to wait for the proxy's welcome (default %(default)s s)")  # fmt: skip
    g = p.add_argument_group("security (CURVE)")
    g.add_argument("--curve", metavar="DIR", help="connect with the member keys in DIR (a secured proxy)")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _meta_text(meta: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in meta.items())


def table(members: list[MemberInfo], now: float) -> str:
    """The listing as aligned text columns."""
    head = ["UUID", "ENDPOINT", "STATE", "AGE", "META"]
    body = [
        [m.uuid, m.endpoint, m.state, _age(None if m.since is None else now - m.since), _meta_text(m.meta)]
        for m in members
    ]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [head, *body]]
    return "\n".join(lines)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run(a: argparse.Namespace) -> int:
    from ..members import Watcher
    from ..security import Security

    try:
        sec = Security.from_dir(a.curve) if a.curve else None
    except SecurityError as exc:
        return common.fail("members", exc)
    stop = common.stop_on_signals(lambda: None)
    try:
        w = Watcher(a.proxy, watch=a.watch, security=sec)
    except (ValueError, zmq.ZMQError) as exc:
        return common.fail("members", f"cannot connect: {exc}")
    with w:
        log.debug("waiting for the welcome of %s", a.proxy)
        deadline = time.monotonic() + a.timeout
        listing = None
        while listing is None and not stop.is_set():
            try:  # in short steps: an interruption ends the wait at once
                listing = w.listing(min(0.1, max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                if time.monotonic() >= deadline:
                    return common.fail("members", f"no welcome from {a.proxy} within {a.timeout:g} s "
                                       "(is a proxy running there?)", 1)  # fmt: skip
        if listing is None:
            return 130
        if not listing.has_directory:
            print(
                f"zeromesh members: the proxy at {a.proxy} is a classic proxy: its welcome carries no directory, "
                "so its members cannot be listed without joining"
                + ("; watching joins and leaves from now on" if a.watch else " (--watch shows joins and leaves)"),
                file=sys.stderr,
            )
            if not a.watch:
                return 1
        rows = [m.as_dict() for m in listing.members]
        if a.format == "json" and not a.watch:
            _out(json.dumps(rows, indent=2))
        elif a.format == "json":
            for r in rows:
                _out(json.dumps({"event": "member", **r}))
        elif listing.has_directory:
            _out(table(listing.members, listing.t))
        if not a.watch:
            return 0
        while not stop.is_set():
            for c in w.changes(0.2):
                if a.format == "json":
                    _out(json.dumps(c.as_dict()))
                else:
                    stamp = time.strftime("%H:%M:%S", time.localtime(c.t))
                    extra = f" ({c.reason})" if c.reason else ""
                    meta = _meta_text(c.meta) if c.kind == "join" else ""
                    _out(f"{stamp} {c.kind:<5} {c.uuid} {c.endpoint}{extra}{' ' + meta if meta else ''}".rstrip())
    return 130
