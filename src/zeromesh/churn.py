"""In-process churner (``zeromesh churn-worker``): many peer lifetimes in one
process, each a fresh :class:`~zeromesh.peer.Peer` with a context of its own,
so it goes through the same libzmq paths as a fresh process (context creation,
bind, connect, close, ``zmq_ctx_term``) without an interpreter start per
lifetime. That is what lets 50 churners fit on 2 cores.

Protocol with the harness (one worker per churn slot):

* stdin: one line ``go`` per lifetime the harness allows; EOF ends the worker.
  The harness paces (pauses, lifetime budget), so both modes churn alike.
* stdout: one JSON object per line, ``{"event": "start", "n", "uuid", "t"}``
  when a lifetime starts and ``{"event": "end", "n", "uuid", "t", "reason"}``
  when its context has terminated. A lifetime stuck in ``term`` never prints
  its ``end``: the harness captures this process's stacks, kills it and
  starts a new worker.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid as uuidlib
from typing import Any

from . import hangdemo, timing
from .peer import Peer


def _line(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def run(a: argparse.Namespace) -> int:
    from .cli.peer import bind_of, peer_options

    tuning, seed = peer_options(a)
    lifetime = a.seconds if a.seconds is not None else 2.0
    bind = bind_of(a)
    n = 0
    for cmd in sys.stdin:
        if cmd.strip() != "go":
            print(f"churn-worker: ignored stdin line {cmd.strip()[:40]!r}", file=sys.stderr)
            continue
        n += 1
        uid = str(uuidlib.uuid4())
        _line({"event": "start", "n": n, "uuid": uid, "t": time.time()})
        if a.demo_hang:
            hangdemo.main(argparse.Namespace(seconds=lifetime, early_linger=False, socket="pub"))
            reason: str | None = "left"
        else:
            peer = Peer(a.proxy, bind=bind, advertise=a.advertise, tuning=tuning, seed=seed, uuid=uid, lifetime=lifetime)
            try:
                peer.start()
            except (ValueError, OSError, TimeoutError) as exc:
                _line({"event": "end", "n": n, "uuid": uid, "t": time.time(), "reason": f"start failed: {exc}"})
                continue
            # Unbounded on purpose: a context stuck in term must stay stuck, for
            # the harness's watchdog to see it and take its stacks.
            while not peer.wait_done(timing.LEAVE_TIMEOUT):
                pass
            peer.stop()
            reason = peer.exit_reason
        _line({"event": "end", "n": n, "uuid": uid, "t": time.time(), "reason": reason})
    return 0


def add_args(p: argparse.ArgumentParser) -> None:
    from .cli.peer import add_peer_arguments

    add_peer_arguments(p)
    p.add_argument("--demo-hang", action="store_true",
                   help="each lifetime ends in the deterministic ctx_term hang (tests the watchdog)")
