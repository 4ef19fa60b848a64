"""``zeromesh peer``: one mesh peer.

It also accepts the seed's own single-dash flags verbatim (``-seconds 2 -send
-early``), with the seed's prefix matching; ``docs/seed-flags.md`` has the
mapping. Every value is checked before anything starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import Any

import zmq

from .. import ext, metadata, wire
from ..errors import SecurityError, WireError
from ..options import SeedBehaviour, Tuning
from ..sockets import LingerWhen
from . import common

log = logging.getLogger("zeromesh")


def _flag(p: argparse._ActionsContainer, name: str, *, seed: str | None = None, **kw: Any) -> None:
    """Add ``--name`` and, when the seed has it, its single-dash spelling."""
    names = [f"--{name}"] + ([f"-{seed}"] if seed else [])
    p.add_argument(*names, **kw)


def _uuid(text: str) -> str:
    try:
        return wire.validate_uuid(text)
    except WireError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_peer_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that describe a peer (also used by the harness's churn worker)."""
    g = p.add_argument_group("mesh")
    _flag(g, "proxy", type=common.connect_endpoint, action="append", metavar="ENDPOINT",
          help=f"a proxy's well-known XPUB endpoint (default {common.DEFAULT_PROXY}); repeat it for "
               "several proxies: the peer announces through all and stays in the mesh while any one is up")  # fmt: skip
    life = g.add_mutually_exclusive_group()
    _flag(life, "seconds", seed="seconds", type=common.seconds(0, strict=True), metavar="N",
          help="lifetime in seconds, then leave")  # fmt: skip
    _flag(life, "long-lived", seed="long-lived", action="store_true",
          help="never leave on its own (the default when --seconds is not given)")  # fmt: skip
    _flag(g, "port", seed="port", type=common.port, default=0, metavar="N",
          help="data PUB port on 127.0.0.1 (0: ephemeral)")  # fmt: skip
    _flag(g, "bind", type=common.bind_endpoint, metavar="ENDPOINT",
          help="data PUB bind endpoint (overrides --port), e.g. tcp://0.0.0.0:0")  # fmt: skip
    _flag(g, "advertise", type=common.host, metavar="HOST",
          help="host to announce instead of the bound one (needed with a wildcard bind)")  # fmt: skip
    _flag(g, "uuid", type=_uuid, help="this peer's uuid (default: random)")
    g.add_argument("-verbose", action="count", dest="verbose", help=argparse.SUPPRESS)  # the seed's spelling of -v

    s = p.add_argument_group("sockets (zeromesh defaults are the seed's fixes)")
    _flag(s, "linger", seed="linger", type=common.integer(-1, 3_600_000), default=0, metavar="MS",
          help="socket linger in ms, -1 infinite (default %(default)s)")  # fmt: skip
    _flag(s, "early-linger", seed="early-linger", action="store_true",
          help="set linger at socket creation (zeromesh's default; the seed's -early)")  # fmt: skip
    _flag(s, "late-linger", action="store_true",
          help="set linger just before close (the seed's default: ctx_term can hang)")  # fmt: skip
    _flag(s, "linger-after-bind", action="store_true", help="set linger right after bind/connect (still too late)")
    _flag(s, "no-kick", action="store_true", help="never make the data PUB process its commands (the memory growth)")
    _flag(s, "fix1256", seed="fix1256", action="store_true",
          help="getsockopt(EVENTS) on the data PUB every loop turn (zeromesh's default)")  # fmt: skip
    _flag(s, "poll-after-disconnect", seed="poll-after-disconnect", action="store_true",
          help="poll the data PUB once after each disconnect")  # fmt: skip
    _flag(s, "events-after-disconnect", action="store_true",
          help="getsockopt(EVENTS) on the data PUB once after each disconnect")  # fmt: skip
    _flag(s, "send-after-disconnect", seed="send-after-disconnect", action="store_true",
          help="send an empty message on the data PUB after another peer's disconnect")  # fmt: skip
    _flag(
        s, "disable-reconnect", seed="disable-reconnect", action="store_true", help="RECONNECT_IVL=-1 on the data SUB"
    )
    _flag(s, "monitor-sockets", seed="monitor-sockets", action="store_true", help="log every event of every socket")
    _flag(s, "no-heartbeats", action="store_true", help="no ZMTP heartbeats (no partition detection)")

    b = p.add_argument_group("protocol")
    _flag(b, "classic", action="store_true",
          help="every seed behaviour: 1 s loop, late linger, no kick, re-announce after D, no expiry")  # fmt: skip
    _flag(b, "immediate-exit", seed="immediate-exit", action="store_true", help="leave without waiting for our own D")
    _flag(b, "duplicate-disconnect", seed="duplicate-disconnect", action="store_true", help="call disconnect twice")
    _flag(b, "no-expire", action="store_true", help="never expire silent peers (crash detection off)")
    _flag(b, "expire-after", type=common.seconds(0, strict=True, maximum=3600), metavar="S",
          help="seconds a data connection may stay down before its peer expires")  # fmt: skip
    _flag(b, "sleep-at-exit", seed="sleep-at-exit", type=common.seconds(0, maximum=3600), default=0.0, metavar="S",
          help="sleep after closing the sockets, before terminating the context")  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_peer_arguments(p)
    p.add_argument("--events", choices=["jsonl"],
                   help="print ready/join/leave/exit/proxy_down/proxy_up events on stdout as JSON lines")  # fmt: skip
    o = p.add_argument_group("application")
    o.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                   help=f"metadata announced with this peer (repeatable; at most {metadata.MAX_PAIRS} pairs, "
                        f"{metadata.MAX_TOTAL_BYTES} bytes)")  # fmt: skip
    o.add_argument("--receive-own", action="store_true", help="also receive this peer's own published messages")
    o.add_argument("--publishes", action="append", metavar="TOPIC",
                   help="a topic prefix this peer publishes (repeatable; default: everything; "
                        f"at most {ext.MAX_TOPICS} of {ext.MAX_TOPIC_BYTES} bytes)")  # fmt: skip
    o.add_argument("--subscribes", action="append", metavar="TOPIC",
                   help="a topic prefix this peer subscribes to (repeatable; default: everything): it "
                        "connects only to peers publishing it, and still lists every member")  # fmt: skip
    common.add_metrics_argument(o)
    common.add_security_arguments(p)


def proxies_of(a: argparse.Namespace) -> list[str]:
    """Every ``--proxy`` given, in order (the default proxy when none was)."""
    return list(a.proxy or [common.DEFAULT_PROXY])


def peer_options(a: argparse.Namespace) -> tuple[Tuning, SeedBehaviour]:
    """The typed settings the peer flags ask for. Raises ``ValueError`` for a
    contradiction between flags."""
    seed = SeedBehaviour.classic() if a.classic else SeedBehaviour()
    chosen = [
        w
        for w, on in (
            (LingerWhen.CREATION, a.early_linger),
            (LingerWhen.BEFORE_CLOSE, a.late_linger),
            (LingerWhen.AFTER_BIND, a.linger_after_bind),
        )
        if on
    ]
    if len(chosen) > 1:
        raise ValueError("choose one of --early-linger, --late-linger, --linger-after-bind")
    s: dict[str, Any] = {"linger_ms": a.linger, "sleep_at_exit": a.sleep_at_exit}
    if chosen:
        s["linger_when"] = chosen[0]
    if a.no_kick:
        s["no_kick"] = True
    if a.fix1256:
        s["no_kick"] = False
    for name in (
        "poll_after_disconnect",
        "events_after_disconnect",
        "send_after_disconnect",
        "disable_reconnect",
        "monitor_sockets",
        "immediate_exit",
        "duplicate_disconnect",
    ):
        if getattr(a, name):
            s[name] = True
    tuning = Tuning(
        heartbeats=not a.no_heartbeats,
        expire_after=None if a.no_expire else (a.expire_after if a.expire_after is not None else Tuning().expire_after),
    )
    return tuning, dataclasses.replace(seed, **s)


def topics_of(values: list[str] | None, name: str) -> ext.Topics:
    """A repeatable topic flag as checked prefixes (None when not given). The
    text's bytes as given on the command line (undecodable ones round-trip)."""
    if values is None:
        return None
    return ext.validate_topics([v.encode("utf-8", "surrogateescape") for v in values], name)


def bind_of(a: argparse.Namespace) -> str:
    return str(a.bind or f"tcp://127.0.0.1:{a.port}")


def run(a: argparse.Namespace) -> int:
    from ..peer import Peer

    try:
        tuning, seed = peer_options(a)
        sec = common.security_from_arguments(a)
        meta = metadata.parse_pairs(a.meta)
        publishes = topics_of(a.publishes, "--publishes")
        subscribes = topics_of(a.subscribes, "--subscribes")
    except (ValueError, SecurityError) as exc:
        return common.fail("peer", exc)
    peer = Peer(
        proxies_of(a),
        bind=bind_of(a),
        advertise=a.advertise,
        uuid=a.uuid,
        lifetime=None if a.long_lived else a.seconds,
        on_event=common.print_event if a.events == "jsonl" else None,
        security=sec,
        tuning=tuning,
        seed=seed,
        meta=meta,
        receive_own=a.receive_own,
        publishes=publishes,
        subscribes=subscribes,
    )
    # Before the peer joins: a metrics address that cannot be served is a usage error.
    metrics, code = common.start_metrics("peer", peer, a.metrics)
    if code is not None:
        return code
    try:
        # Handlers first: a supervisor may signal as soon as it reads our ready line.
        hit = common.stop_on_signals(peer.leave)
        try:
            peer.start()
        except (ValueError, OSError, TimeoutError, zmq.ZMQError) as exc:  # ZMQError is not an OSError
            return common.fail("peer", f"cannot start: {exc}")
        log.info("peer %s: data PUB %s, proxy %s", peer.uuid, peer.endpoint, " ".join(peer.proxies))
        while not peer.wait_done(0.2):
            pass
    finally:
        if metrics is not None:
            metrics.close()
    if peer.exit_reason == "error":
        return 1
    return 130 if hit.is_set() else 0
