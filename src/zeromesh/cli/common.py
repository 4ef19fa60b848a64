"""What several subcommands share: argument types that check values before
anything starts, the security flags, signal handling, the extras check."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..endpoints import validate_bind, validate_endpoint, validate_host
from ..errors import SecurityError, WireError
from ..options import MAX_SECONDS
from ..protocol import PeerEvent
from ..security import MEMBER_CERT, MESH_CERT, Security

#: The well-known XPUB address of the seed (its C programs hard-wire it).
DEFAULT_PROXY = "tcp://127.0.0.1:5555"


def connect_endpoint(text: str) -> str:
    """argparse type: an endpoint one can connect to (the grammar the wire checks)."""
    try:
        return validate_endpoint(text)
    except WireError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def bind_endpoint(text: str) -> str:
    """argparse type: an endpoint a socket can bind."""
    try:
        return validate_bind(text)
    except WireError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def host(text: str) -> str:
    """argparse type: a host others can connect to."""
    try:
        validate_host(text, what="advertised host")
    except WireError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"not a port 0-65535: {text!r}")
    return int(text)


def metrics_address(text: str) -> tuple[str, int]:
    """argparse type: ``HOST:PORT`` for ``--metrics`` (``[v6]:PORT`` too; port 0: ephemeral)."""
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise argparse.ArgumentTypeError(f"want HOST:PORT (e.g. 127.0.0.1:9464), not {text!r}")
    return host, int(port_text)


def add_metrics_argument(p: argparse._ActionsContainer) -> None:
    p.add_argument("--metrics", type=metrics_address, metavar="HOST:PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (needs the metrics extra)")  # fmt: skip


def start_metrics(command: str, target: Any, address: tuple[str, int] | None) -> tuple[Any, int | None]:
    """(server or None, None) when ``--metrics`` is off or served; (None, exit
    code) when the extra is missing or the address cannot be bound."""
    if address is None:
        return None, None
    code = require_extra(command, "metrics", ["prometheus_client"])
    if code is not None:
        return None, code
    from ..metrics import serve

    try:
        server = serve(target, *address)
    except OSError as exc:
        return None, fail(command, f"cannot serve metrics on {address[0]}:{address[1]}: {exc}")
    logging.getLogger("zeromesh").info("metrics at %s", server.url)
    return server, None


def seconds(minimum: float = 0.0, *, strict: bool = False, maximum: float = MAX_SECONDS) -> Callable[[str], float]:
    """argparse type: a finite number of seconds in range (NaN, inf, negative refused)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(v) or v < minimum or (strict and v == minimum) or v > maximum:
            low = f"> {minimum:g}" if strict else f">= {minimum:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number {low} and <= {maximum:g}: {text!r}")
        return v

    return parse


def integer(minimum: int, maximum: int) -> Callable[[str], int]:
    """argparse type: a whole number in [minimum, maximum]."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not minimum <= v <= maximum:
            raise argparse.ArgumentTypeError(f"must be {minimum}..{maximum}: {text!r}")
        return v

    return parse


def add_security_arguments(p: argparse.ArgumentParser) -> None:
    """``--curve DIR`` and ``--allow DIR`` for ``zeromesh peer`` and ``zeromesh proxy``."""
    g = p.add_argument_group("security (CURVE; a secured mesh is zeromesh-only)")
    g.add_argument(
        "--curve",
        metavar="DIR",
        help=f"encrypt and authenticate with the keys in DIR ({MESH_CERT}, {MEMBER_CERT}; see zeromesh keygen)",
    )
    g.add_argument(
        "--allow", metavar="DIR", help="accept only clients whose public key is a *.key file in DIR (needs --curve)"
    )


def security_from_arguments(a: argparse.Namespace) -> Security | None:
    """The :class:`Security` the ``--curve``/``--allow`` flags ask for (None: off)."""
    if a.curve is None:
        if a.allow is not None:
            raise SecurityError("--allow needs --curve")
        return None
    return Security.from_dir(a.curve, a.allow)


def fail(command: str, message: object, code: int = 2) -> int:
    """One line on stderr, and the exit code to return."""
    print(f"zeromesh {command}: {message}", file=sys.stderr)
    return code


def print_event(ev: PeerEvent) -> None:
    sys.stdout.write(json.dumps(ev.as_dict()) + "\n")
    sys.stdout.flush()


def stop_on_signals(on_first: Callable[[], None]) -> threading.Event:
    """First SIGINT/SIGTERM calls *on_first*; a second one exits at once (130)."""
    hit = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if hit.is_set():
            raise SystemExit(130)
        hit.set()
        on_first()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return hit


def missing_modules(modules: Sequence[str]) -> list[str]:
    """The *modules* that cannot be imported here (an extra not installed)."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def require_extra(command: str, extra: str, modules: Sequence[str]) -> int | None:
    """None when *extra*'s *modules* import; else say how to install it (exit 2)."""
    missing = missing_modules(modules)
    if not missing:
        return None
    return fail(command, f"needs {', '.join(missing)}: install it with: pip install 'zeromesh[{extra}]'")
