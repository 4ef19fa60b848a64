"""The ``zeromesh`` command: ``proxy``, ``peer``, ``soak``, ``matrix``, ``bench``.

``zeromesh peer`` also accepts the seed's own single-dash flags verbatim
(``-seconds 2 -send -early``), with the seed's prefix matching; see
``docs/seed-flags.md`` for the mapping.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import zmq

from . import __version__, logs, security
from .endpoints import validate_endpoint, validate_host
from .errors import SecurityError, WireError
from .protocol import Behaviour, PeerEvent
from .sockets import LingerWhen, SocketPolicy

log = logging.getLogger("zeromesh")

DEFAULT_PROXY = "tcp://127.0.0.1:5555"


def _connect_endpoint(text: str) -> str:
    """argparse type: an endpoint one can connect to (checked as the wire checks C frames)."""
    try:
        return validate_endpoint(text)
    except WireError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bind_endpoint(text: str) -> str:
    """argparse type: scheme://address, a tcp port 0-65535 or ``*`` (libzmq wraps bigger ones)."""
    scheme, sep, rest = text.partition("://")
    port = rest.rpartition(":")[2]
    if not sep or not rest or (scheme == "tcp" and not (port == "*" or (port.isdigit() and int(port) < 65536))):
        raise argparse.ArgumentTypeError(f"not a bind endpoint like tcp://127.0.0.1:0: {text!r}")
    return text


def _host(text: str) -> str:
    """argparse type: a host others can connect to (as the wire checks announced endpoints)."""
    try:
        validate_host(text, what="advertised host")
    except WireError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"not a port 0-65535: {text!r}")
    return int(text)


def _flag(p: argparse._ActionsContainer, name: str, *, seed: str | None = None, **kw: Any) -> None:
    """Add ``--name`` and, when the seed has it, its single-dash spelling."""
    names = [f"--{name}"] + ([f"-{seed}"] if seed else [])
    p.add_argument(*names, **kw)


def add_peer_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("mesh")
    _flag(g, "proxy", type=_connect_endpoint, default=DEFAULT_PROXY, help="the proxy's well-known XPUB endpoint (default %(default)s)")
    life = g.add_mutually_exclusive_group()
    _flag(life, "seconds", seed="seconds", type=float, metavar="N", help="lifetime in seconds, then leave")
    _flag(life, "long-lived", seed="long-lived", action="store_true", help="never leave on its own (the default when --seconds is not given)")
    _flag(g, "port", seed="port", type=_port, default=0, metavar="N", help="data PUB port on 127.0.0.1 (0: ephemeral)")
    _flag(g, "bind", type=_bind_endpoint, metavar="ENDPOINT", help="data PUB bind endpoint (overrides --port), e.g. tcp://0.0.0.0:0")
    _flag(g, "advertise", type=_host, metavar="HOST", help="host to announce instead of the bound one (needed with a wildcard bind)")
    _flag(g, "uuid", help="this peer's uuid (default: random)")
    _flag(g, "events", choices=["jsonl"], help="print ready/join/leave/exit events on stdout, one JSON object per line")
    _flag(g, "verbose", seed="verbose", action="count", default=0, help="more logging on stderr (repeat for debug)")

    s = p.add_argument_group("sockets (zeromesh defaults are the seed's fixes)")
    _flag(s, "linger", seed="linger", type=int, default=0, metavar="MS", help="socket linger in ms (default %(default)s)")
    _flag(s, "early-linger", seed="early-linger", action="store_true", help="set linger at socket creation (zeromesh's default; the seed's -early)")
    _flag(s, "late-linger", action="store_true", help="set linger just before close (the seed's default: ctx_term can hang)")
    _flag(s, "linger-after-bind", action="store_true", help="set linger right after bind/connect (still too late)")
    _flag(s, "no-kick", action="store_true", help="never make the data PUB process its commands (the memory growth)")
    _flag(s, "fix1256", seed="fix1256", action="store_true", help="getsockopt(EVENTS) on the data PUB every loop turn (zeromesh's default)")
    _flag(s, "poll-after-disconnect", seed="poll-after-disconnect", action="store_true", help="poll the data PUB once after each disconnect")
    _flag(s, "events-after-disconnect", action="store_true", help="getsockopt(EVENTS) on the data PUB once after each disconnect")
    _flag(s, "send-after-disconnect", seed="send-after-disconnect", action="store_true", help="send an empty message on the data PUB after another peer's disconnect")
    _flag(s, "disable-reconnect", seed="disable-reconnect", action="store_true", help="RECONNECT_IVL=-1 on the data SUB")
    _flag(s, "monitor-sockets", seed="monitor-sockets", action="store_true", help="log every event of every socket")
    _flag(s, "no-heartbeats", action="store_true", help="no ZMTP heartbeats (no partition detection)")

    b = p.add_argument_group("protocol")
    _flag(b, "classic", action="store_true", help="all seed behaviours at once: 1 s loop, late linger, no kick, re-announce after D, no expiry")
    _flag(b, "immediate-exit", seed="immediate-exit", action="store_true", help="leave without waiting for our own D")
    _flag(b, "duplicate-disconnect", seed="duplicate-disconnect", action="store_true", help="call disconnect twice")
    _flag(b, "no-expire", action="store_true", help="never expire silent peers (crash detection off)")
    _flag(b, "expire-after", type=float, metavar="S", help="seconds a data connection may stay down before its peer expires")
    _flag(b, "sleep-at-exit", seed="sleep-at-exit", type=float, default=0.0, metavar="S", help="sleep after closing the sockets, before terminating the context")


def peer_config(a: argparse.Namespace) -> tuple[Behaviour, SocketPolicy]:
    """Translate peer flags into the protocol's and the socket layer's settings."""
    behaviour = Behaviour.classic() if a.classic else Behaviour()
    policy = SocketPolicy.classic() if a.classic else SocketPolicy()
    b: dict[str, Any] = {}
    if a.immediate_exit:
        b["immediate_exit"] = True
    if a.duplicate_disconnect:
        b["duplicate_disconnect"] = True
    if a.no_expire:
        b["expire"] = False
    if a.expire_after is not None:
        b["expire_grace"] = a.expire_after
    pol: dict[str, Any] = {"linger_ms": a.linger}
    chosen = [w for w, on in (
        (LingerWhen.CREATION, a.early_linger),
        (LingerWhen.BEFORE_CLOSE, a.late_linger),
        (LingerWhen.AFTER_BIND, a.linger_after_bind),
    ) if on]
    if len(chosen) > 1:
        raise SystemExit("zeromesh peer: choose one of --early-linger, --late-linger, --linger-after-bind")
    if chosen:
        pol["linger_when"] = chosen[0]
    if a.no_kick:
        pol["kick"] = False
    if a.fix1256:
        pol["kick"] = True
    for name in ("poll_after_disconnect", "events_after_disconnect", "send_after_disconnect",
                 "disable_reconnect", "monitor_sockets"):
        if getattr(a, name):
            pol[name] = True
    if a.no_heartbeats:
        pol["heartbeats"] = False
    from dataclasses import replace

    return replace(behaviour, **b), replace(policy, **pol)


def _print_event(ev: PeerEvent) -> None:
    sys.stdout.write(json.dumps(ev.as_dict()) + "\n")
    sys.stdout.flush()


def _stop_on_signals(on_first: Any) -> threading.Event:
    """First SIGINT/SIGTERM calls *on_first*; a second one exits at once."""
    hit = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if hit.is_set():
            raise SystemExit(128 + signum)
        hit.set()
        on_first()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return hit


def cmd_peer(a: argparse.Namespace) -> int:
    from .peer import Peer

    logs.setup(a.verbose)
    behaviour, policy = peer_config(a)
    try:
        sec = security.from_args(a)
    except SecurityError as exc:
        print(f"zeromesh peer: {exc}", file=sys.stderr)
        return 2
    bind = a.bind or f"tcp://127.0.0.1:{a.port}"
    peer = Peer(
        a.proxy,
        bind=bind,
        advertise=a.advertise,
        behaviour=behaviour,
        policy=policy,
        uuid=a.uuid,
        lifetime=None if a.long_lived else a.seconds,
        on_event=_print_event if a.events == "jsonl" else None,
        sleep_before_term=a.sleep_at_exit,
        security=sec,
    )
    # Handlers first: a supervisor may signal as soon as it reads our ready line.
    _stop_on_signals(peer.leave)
    try:
        peer.start()
    except (ValueError, OSError, zmq.ZMQError) as exc:  # ZMQError is not an OSError
        print(f"zeromesh peer: cannot start: {exc}", file=sys.stderr)
        return 2
    log.info("peer %s: data PUB %s, proxy %s", peer.uuid, peer.endpoint, a.proxy)
    while not peer.wait_done(0.2):
        pass
    return 1 if peer.exit_reason == "error" else 0


def cmd_proxy(a: argparse.Namespace) -> int:
    from .proxy import Proxy

    logs.setup(a.verbose + 1)
    try:
        sec = security.from_args(a)
    except SecurityError as exc:
        print(f"zeromesh proxy: {exc}", file=sys.stderr)
        return 2
    try:
        proxy = Proxy(a.bind, xsub_bind=a.xsub_bind, advertise=a.advertise, mode=a.mode, security=sec)
    except (ValueError, OSError, zmq.ZMQError) as exc:
        print(f"zeromesh proxy: cannot start: {exc}", file=sys.stderr)
        return 2
    # Handlers before the ready line: a supervisor may signal as soon as it reads it.
    stop = _stop_on_signals(lambda: None)
    proxy.start()
    if a.events == "jsonl":
        line = {"event": "ready", "role": "proxy", "uuid": proxy.uuid, "endpoint": proxy.endpoint,
                "xsub": proxy.xsub_endpoint, "t": time.time()}
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
    while not stop.wait(0.2):
        if proxy.wait_done(0):  # the loop died: say so (logged) and exit non-zero
            return 1
    return 0 if proxy.stop(1.0) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zeromesh", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"zeromesh {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    pp = sub.add_parser("peer", help="run one mesh peer")
    add_peer_args(pp)
    security.add_args(pp)
    pp.set_defaults(func=cmd_peer)

    px = sub.add_parser("proxy", help="run the discovery proxy")
    px.add_argument("--bind", type=_bind_endpoint, default=DEFAULT_PROXY, help="well-known XPUB endpoint (default %(default)s)")
    px.add_argument("--xsub-bind", type=_bind_endpoint, default="tcp://127.0.0.1:0", help="XSUB endpoint (default: ephemeral port)")
    px.add_argument("--advertise", type=_host, metavar="HOST", help="host to put in the welcome instead of the bound one")
    px.add_argument("--mode", choices=["directory", "classic"], default="directory",
                    help="directory: zeromesh (O(N) joins, bad frames dropped); classic: libzmq's zmq_proxy, as the seed")
    px.add_argument("--events", choices=["jsonl"], help="print a ready line (with the XSUB endpoint) on stdout")
    px.add_argument("-v", "--verbose", action="count", default=0)
    security.add_args(px)
    px.set_defaults(func=cmd_proxy)

    from . import harness_cli  # soak, matrix, churn-worker, hang-demo
    from .bench import cli as bench_cli

    harness_cli.register(sub)
    pb = sub.add_parser("bench", help=bench_cli.HELP)
    bench_cli.add_arguments(pb)
    pb.set_defaults(func=bench_cli.run)
    security.register(sub)  # keygen
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    rc: int = a.func(a)
    return rc


if __name__ == "__main__":
    sys.exit(main())
