"""In-process churner (``python -m zeromesh churn-worker``): many peer lifetimes in one
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

import json
import sys
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import IO, Any

import zmq

from .. import timing
from ..options import SeedBehaviour, Tuning
from ..peer import Peer
from . import hangdemo


@dataclass(frozen=True)
class WorkerSettings:
    """One worker's peers, typed (``zeromesh churn-worker`` parses its flags into this)."""

    proxy: str | tuple[str, ...]
    lifetime: float
    bind: str = "tcp://127.0.0.1:0"
    advertise: str | None = None
    tuning: Tuning = field(default_factory=Tuning)
    seed: SeedBehaviour = field(default_factory=SeedBehaviour)
    #: Each lifetime ends in the deterministic ctx_term hang (tests the watchdog).
    demo_hang: bool = False


def _line(out: IO[str], obj: dict[str, Any]) -> None:
    out.write(json.dumps(obj) + "\n")
    out.flush()


def _one_lifetime(s: WorkerSettings, uid: str) -> str | None:
    """One peer lifetime; its exit reason."""
    if s.demo_hang:
        threading.Event().wait(s.lifetime)  # the pretend peer's lifetime
        hangdemo.run(early_linger=False, kind="pub")
        return "left"
    peer = Peer(
        s.proxy,
        bind=s.bind,
        advertise=s.advertise,
        tuning=s.tuning,
        seed=s.seed,
        uuid=uid,
        lifetime=s.lifetime,
    )
    try:
        peer.start()
    except (ValueError, OSError, TimeoutError, zmq.ZMQError) as exc:  # ZMQError is not an OSError
        return f"start failed: {exc}"
    # Unbounded on purpose: a context stuck in term must stay stuck, for the
    # harness's watchdog to see it and take its stacks.
    while not peer.wait_done(timing.LEAVE_TIMEOUT):
        pass
    peer.stop()
    return peer.exit_reason


def run(s: WorkerSettings, stdin: IO[str] = sys.stdin, stdout: IO[str] = sys.stdout) -> int:
    """One lifetime per ``go`` line on *stdin*, until EOF."""
    n = 0
    for cmd in stdin:
        if cmd.strip() != "go":
            print(f"churn-worker: ignored stdin line {cmd.strip()[:40]!r}", file=sys.stderr)
            continue
        n += 1
        uid = str(uuidlib.uuid4())
        _line(stdout, {"event": "start", "n": n, "uuid": uid, "t": time.time()})
        reason = _one_lifetime(s, uid)
        _line(stdout, {"event": "end", "n": n, "uuid": uid, "t": time.time(), "reason": reason})
    return 0
