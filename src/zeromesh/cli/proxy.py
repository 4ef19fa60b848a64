"""``zeromesh proxy``: the discovery proxy (XSUB on an ephemeral port, XPUB on a
well-known address, the welcome carrying the XSUB endpoint)."""

from __future__ import annotations

import argparse
import json
import sys
import time

import zmq

from ..errors import SecurityError
from . import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bind", type=common.bind_endpoint, default=common.DEFAULT_PROXY,
                   help="well-known XPUB endpoint (default %(default)s)")  # fmt: skip
    p.add_argument("--xsub-bind", type=common.bind_endpoint, default="tcp://127.0.0.1:0",
                   help="XSUB endpoint (default: an ephemeral port)")  # fmt: skip
    p.add_argument("--advertise", type=common.host, metavar="HOST",
                   help="host to put in the welcome instead of the bound one")  # fmt: skip
    p.add_argument("--mode", choices=["directory", "classic"], default="directory",
                   help="directory: zeromesh (O(N) joins, bad frames dropped); "
                        "classic: the seed's frames forwarded byte for byte, W frames from peers dropped")  # fmt: skip
    p.add_argument("--events", choices=["jsonl"], help="print a ready line (with the XSUB endpoint) on stdout")
    common.add_metrics_argument(p)
    common.add_security_arguments(p)


def run(a: argparse.Namespace) -> int:
    from ..proxy import Proxy

    try:
        sec = common.security_from_arguments(a)
    except SecurityError as exc:
        return common.fail("proxy", exc)
    try:
        proxy = Proxy(a.bind, xsub_bind=a.xsub_bind, advertise=a.advertise, mode=a.mode, security=sec)
    except (ValueError, OSError, zmq.ZMQError) as exc:
        return common.fail("proxy", f"cannot start: {exc}")
    metrics, code = common.start_metrics("proxy", proxy, a.metrics)
    if code is not None:
        proxy.stop()
        return code
    try:
        # Handlers before the ready line: a supervisor may signal as soon as it reads it.
        stop = common.stop_on_signals(lambda: None)
        proxy.start()
        if a.events == "jsonl":
            line = {
                "event": "ready",
                "role": "proxy",
                "uuid": proxy.uuid,
                "endpoint": proxy.endpoint,
                "xsub": proxy.xsub_endpoint,
                "t": time.time(),
            }
            if metrics is not None:
                line["metrics"] = metrics.url
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
        while not stop.wait(0.2):
            if proxy.wait_done(0):  # the loop died: it logged why; never linger half-alive
                return 1
        return 130 if proxy.stop(1.0) else 1
    finally:
        if metrics is not None:
            metrics.close()
