"""What a soak is made of: scenarios, its configuration, the records it keeps,
and the exit codes its verdicts map to.

Pure data (stdlib and core only), so that the CLI can build its ``--help`` and
check flags without the ``soak`` extra installed.
"""

from __future__ import annotations

import math
import shlex
import sys
from collections import Counter
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Literal

import zmq

from .. import __version__, timing
from ..proxy import ProxyMode

Mode = Literal["process", "inproc", "auto"]

#: Above this many lifetimes a second ``--mode auto`` picks ``inproc``: a
#: Python start per lifetime costs ~0.1 s of CPU, so a process per lifetime
#: would take a whole core of 2 at 10 a second.
AUTO_PROCESS_MAX_RATE = 4.0


class Exit(IntEnum):
    """The exit codes of ``zeromesh soak`` and ``zeromesh matrix`` (CI gates on them)."""

    OK = 0  # the peer under test is FLAT and nothing hung
    FAIL = 1  # GROWS or HANGS (or the soak itself failed)
    USAGE = 2  # bad flags, missing extra: one line on stderr
    INCONCLUSIVE = 3  # not enough data to say FLAT or GROWS
    INTERRUPTED = 130  # SIGINT/SIGTERM


@dataclass(frozen=True)
class Scenario:
    """Which peer gets which switches. Memory is measured on the long-lived
    peer, so memory switches go there; hangs happen in peers that exit, so
    linger and send switches go to the churners."""

    name: str
    long_lived: tuple[str, ...]
    churner: tuple[str, ...]
    about: str


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "default",
            (),
            (),
            "zeromesh defaults: data PUB kicked every turn and on a timer, linger set at creation",
        ),
        Scenario(
            "baseline",
            ("--no-kick",),
            (),
            "the seed's default for memory: the long-lived peer's data PUB is never kicked",
        ),
        Scenario(
            "poll-after-disconnect",
            ("--no-kick", "--poll-after-disconnect"),
            (),
            "seed -poll-after-disconnect on the long-lived peer: poll the data PUB once after each disconnect",
        ),
        Scenario(
            "events-after-disconnect",
            ("--no-kick", "--events-after-disconnect"),
            (),
            "getsockopt(EVENTS) once after each disconnect on the long-lived peer (the seed's #1256 attempt)",
        ),
        Scenario(
            "late-linger",
            (),
            ("--late-linger",),
            "control: churners set linger just before close but never send on the data PUB",
        ),
        Scenario(
            "send-late-linger",
            (),
            ("--send-after-disconnect", "--late-linger"),
            "the seed's -send: churners send on the data PUB after each disconnect, linger set just before close",
        ),
        Scenario(
            "send-early-linger",
            (),
            ("--send-after-disconnect", "--early-linger"),
            "the seed's -send -early: the same sends, linger set at socket creation",
        ),
        Scenario(
            "send-linger-after-bind",
            (),
            ("--send-after-disconnect", "--linger-after-bind"),
            "the same sends, linger set right after bind/connect",
        ),
        Scenario(
            "seed",
            ("--classic",),
            ("--classic", "--send-after-disconnect"),
            "every seed behaviour at once on every peer (1 s loop, no kick, late linger, -send)",
        ),
    )
}

#: What ``zeromesh matrix`` runs when no ``--scenarios`` are given.
MATRIX_DEFAULT = (
    "baseline",
    "poll-after-disconnect",
    "events-after-disconnect",
    "default",
    "late-linger",
    "send-late-linger",
    "send-early-linger",
    "send-linger-after-bind",
)

#: The reference long-lived peer's switches for ``--reference seed``: the
#: seed's memory behaviour (a data PUB never kicked), everything else as the
#: peer under test, so the pair differs in that one thing.
SEED_REFERENCE_ARGS = ("--no-kick",)


# The default run: decisive, and done in under 90 s. The interval on KB per
# departure narrows with the number of departures measured, so the default
# churn is fast: 10 churners with 0.5 s lifetimes and 0.1 s pauses, in-process
# (a fresh context per lifetime), about 15 departures a second on 2 cores;
# 60 s of churn, the first SOAK_WARMUP (20 s) not measured, leave 500-600
# measured departures, and the whole run ends in 65-90 s even on a loaded
# machine. The seed's own churn (5 churners, 2 s lifetimes, 1 s pauses)
# gives under 2 departures a second: --churners 5 --lifetime 2 --pause 1.
DEFAULT_DURATION = 60.0
DEFAULT_CHURNERS = 10
DEFAULT_LIFETIME = 0.5
DEFAULT_PAUSE = 0.1


@dataclass
class SoakConfig:
    """One soak's settings, typed (the CLI converts its flags to this)."""

    duration: float | None = DEFAULT_DURATION
    lifetimes: int | None = None
    churners: int = DEFAULT_CHURNERS
    lifetime: float = DEFAULT_LIFETIME
    pause: float = DEFAULT_PAUSE
    #: Churn before measuring starts (seconds of churn, not counted in the slope).
    warmup: float = timing.SOAK_WARMUP
    scenario: str = "default"
    mode: Mode = "auto"
    out: Path | None = None
    peer_cmd: str | None = None
    peer_args: list[str] = field(default_factory=list)
    long_lived_cmd: str | None = None
    long_lived_args: list[str] = field(default_factory=list)
    #: ``seed`` (a zeromesh peer with the seed's no-kick), ``none``, or a
    #: command template (placeholders ``{proxy}``, ``{python}``).
    reference: str = "seed"
    proxy_bind: str = "tcp://127.0.0.1:0"
    proxy_mode: ProxyMode = "directory"
    memray: bool = False
    live: bool | None = None  # None: when stdout is a terminal
    hang_grace: float = timing.HANG_GRACE
    command: str = ""

    def resolved_mode(self) -> Literal["process", "inproc"]:
        if self.mode != "auto":
            return self.mode
        if self.peer_cmd or self.churners / (self.lifetime + self.pause) <= AUTO_PROCESS_MAX_RATE:
            return "process"
        return "inproc"

    def check(self) -> None:
        """Clear errors (ValueError, one line) for impossible settings, before anything starts."""
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; known: {', '.join(SCENARIOS)}")
        _positive("--churners", self.churners, at_least=1)
        _positive("--lifetime", self.lifetime)
        _positive("--pause", self.pause, zero_ok=True)
        _positive("--warmup", self.warmup, zero_ok=True)
        _positive("--hang-grace", self.hang_grace)
        if self.duration is not None:
            _positive("--duration", self.duration)
            if self.warmup >= self.duration:
                raise ValueError(f"--warmup ({self.warmup:g} s) must be shorter than --duration ({self.duration:g} s)")
        if self.duration is None and self.lifetimes is None:
            raise ValueError("give a --duration or a number of --lifetimes")
        if self.lifetimes is not None:
            _positive("--lifetimes", self.lifetimes, at_least=1)
        if self.peer_cmd and self.mode == "inproc":
            raise ValueError("--peer-cmd churns a program, one process per lifetime: use --mode process")
        _template("--peer-cmd", self.peer_cmd, ("seconds", "proxy", "uuid", "python"))
        _template("--long-lived-cmd", self.long_lived_cmd, ("proxy", "python"))
        if self.reference not in ("seed", "none"):
            _template("--reference", self.reference, ("proxy", "python"))
        if self.out is not None:
            _writable_dir(self.out)


def _positive(opt: str, v: float, *, zero_ok: bool = False, at_least: float | None = None) -> None:
    if not math.isfinite(v):
        raise ValueError(f"{opt} must be a finite number, got {v}")
    if at_least is not None and v < at_least:
        raise ValueError(f"{opt} must be at least {at_least:g}, got {v:g}")
    if v < 0 or (v == 0 and not zero_ok):
        raise ValueError(f"{opt} must be {'>= 0' if zero_ok else '> 0'}, got {v:g}")


def _template(opt: str, template: str | None, keys: tuple[str, ...]) -> None:
    if template is None:
        return
    try:
        parts = shlex.split(template)
        for part in parts:
            part.format(**dict.fromkeys(keys, "x"))
    except (ValueError, KeyError, IndexError) as exc:
        names = " ".join(f"{{{k}}}" for k in keys)
        raise ValueError(f"{opt}: bad template {template!r} ({exc}); placeholders: {names}") from None
    if not parts:
        raise ValueError(f"{opt} is empty")


def _writable_dir(out: Path) -> None:
    """The output folder exists and is writable, or can be created (checked
    up front: a soak must not run a minute and then fail to write its report)."""
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"--out {out}: {probe} is not a folder")
    import os

    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: {probe} is not writable")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".zeromesh-write-test").touch()
        (out / ".zeromesh-write-test").unlink()
    except OSError as exc:
        raise ValueError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None


@dataclass
class Lifetime:
    """One churner lifetime, as the harness saw it."""

    slot: int
    n: int
    pid: int
    peer_id: str
    start: float
    end: float | None = None
    exit_code: int | None = None
    hung: bool = False
    #: left / timeout / error from the peer; interrupted; worker-died; ...
    reason: str = ""
    stacks: str = ""
    #: Hung with ``zmq_ctx_term`` in its stacks.
    in_ctx_term: bool = False

    @property
    def counted(self) -> bool:
        """In the hang-rate denominator: it ran to its end or hung (a lifetime
        cut short by Ctrl+C proves nothing either way)."""
        return self.reason != "interrupted"

    @property
    def departed(self) -> bool:
        """A departure as the long-lived peers live it: the churner ran and its
        process (or context) is gone, so its connections to them are torn down.
        Counted from the churners themselves, whatever their program; a hung
        one departs when the watchdog kills it."""
        return self.end is not None and self.counted and not self.reason.startswith("start failed")


@dataclass
class Sample:
    """One sample of one long-lived peer (per :data:`timing.SAMPLE_INTERVAL`)."""

    t: float
    elapsed: float
    rss_kb: int
    vms_kb: int
    fds: int
    threads: int
    cpu_percent: float
    departures: int
    lifetimes: int
    hangs: int


@dataclass
class LongLivedRecord:
    """What a soak learnt about one long-lived peer (``peer`` or ``reference``)."""

    role: str
    command: list[str]
    #: It prints zeromesh's JSON event lines (a foreign program does not).
    events: bool
    pid: int | None = None
    uuid: str = ""
    samples: list[Sample] = field(default_factory=list)
    joins: int = 0
    #: Its own ``leave`` events: a cross-check only (C churners re-announce
    #: after ``D`` and are seen leaving twice); departures come from the churn.
    leave_events: int = 0
    leave_reasons: Counter[str] = field(default_factory=Counter)
    bad_lines: int = 0
    exit_code: int | None = None
    #: Not gone a bounded time after SIGINT (a ctx_term hang in a long-lived peer).
    exit_hung: bool = False
    exit_stacks: str = ""


@dataclass
class SoakResult:
    """Everything one soak run produced, for the report (no live objects)."""

    cfg: SoakConfig
    scenario: Scenario
    mode: str
    out: Path
    #: Wall time the churn started (the samples' elapsed 0).
    started: float
    lifetimes: list[Lifetime]
    peer: LongLivedRecord | None
    reference: LongLivedRecord | None
    worker_pids: list[int]
    pids: list[int]
    stack_tools: dict[str, int]
    proxy_endpoint: str | None
    notes: list[str]
    errors: list[str]
    interrupted: bool


def versions() -> dict[str, str]:
    return {
        "libzmq_version": zmq.zmq_version(),
        "pyzmq_version": zmq.pyzmq_version(),
        "zeromesh_version": __version__,
        "python_version": sys.version.split()[0],
    }
