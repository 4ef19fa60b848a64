"""What an application may set on a peer: real tuning, and the seed's behaviours.

Two objects, kept apart on purpose:

* :class:`Tuning`: knobs a production user may want (heartbeats, how fast a
  silent peer expires, how long a leave may take, bounds on what arrives).
* :class:`SeedBehaviour`: each of the seed's behaviours, switchable back on to
  reproduce and measure its problems (memory growth, the ``zmq_ctx_term``
  hang, O(N^2) discovery). All off is zeromesh; :meth:`SeedBehaviour.classic`
  is the seed's peer.

Both are checked when made (:class:`~zeromesh.errors.ConfigError` naming the
field), so a bad value fails in the caller's thread before anything starts.
:func:`layer_settings` turns them into the per-layer settings the protocol
(:class:`~zeromesh.protocol.Behaviour`) and the socket layer
(:class:`~zeromesh.sockets.SocketPolicy`) take.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from . import timing
from .endpoints import DEFAULT_SCHEMES
from .errors import ConfigError
from .protocol import MAX_WATCHED, WATCHED_PEERS, Behaviour
from .sockets import LingerWhen, SocketPolicy


def check_number(
    name: str,
    value: object,
    *,
    minimum: float = 0.0,
    maximum: float = math.inf,
    strict: bool = False,
    integer: bool = False,
) -> None:
    """Raise :class:`ConfigError` (or ``TypeError``) unless *value* is a
    finite number in range; *strict* excludes the minimum itself."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        want = "an int" if integer else "a number"
        raise TypeError(f"{name} must be {want}, not {type(value).__name__}")
    v = float(value)
    if math.isnan(v) or math.isinf(v):
        raise ConfigError(f"{name} must be finite, not {value}")
    if v < minimum or (strict and v == minimum) or v > maximum:
        low = f"> {minimum:g}" if strict else f">= {minimum:g}"
        high = f" and <= {maximum:g}" if maximum != math.inf else ""
        raise ConfigError(f"{name} must be {low}{high}, not {value}")


#: Longest wait anything may be configured to: a day. Bigger values are
#: mistakes (a lifetime of 1e9 s) and overflow libzmq's int milliseconds.
MAX_SECONDS = 86_400.0


@dataclass(frozen=True)
class Tuning:
    """Production knobs of a peer. The defaults are zeromesh's."""

    #: ZMTP heartbeats (freeze, host loss and partition detection) on the
    #: proxy links and the probes of watched members.
    heartbeats: bool = True
    #: How many members each peer watches with a heartbeated probe (its
    #: successors on the uuid ring), so each is watched by that many: O(N)
    #: pings for the mesh. None: heartbeats on every data connection instead
    #: (every link detects its own partition, at O(N^2) idle CPU).
    watch: int | None = WATCHED_PEERS
    #: Seconds a known peer's data connection may stay down before it is
    #: declared expired; None: never expire (crash detection off).
    expire_after: float | None = timing.EXPIRE_GRACE
    #: Bound on waiting for our own ``D`` to come back when leaving.
    leave_timeout: float = timing.LEAVE_TIMEOUT
    #: Endpoint schemes accepted from the wire.
    schemes: frozenset[str] = field(default=DEFAULT_SCHEMES)

    def __post_init__(self) -> None:
        if not isinstance(self.heartbeats, bool):
            raise TypeError(f"heartbeats must be a bool, not {type(self.heartbeats).__name__}")
        if self.watch is not None:
            check_number("watch", self.watch, maximum=MAX_WATCHED, integer=True)
        if self.expire_after is not None:
            check_number("expire_after", self.expire_after, strict=True, maximum=MAX_SECONDS)
        check_number("leave_timeout", self.leave_timeout, maximum=MAX_SECONDS)
        if not isinstance(self.schemes, frozenset) or not self.schemes <= DEFAULT_SCHEMES or not self.schemes:
            raise ConfigError(f"schemes must be a non-empty frozenset of {sorted(DEFAULT_SCHEMES)}")


@dataclass(frozen=True)
class SeedBehaviour:
    """The seed's behaviours, each one switchable back on (all off: zeromesh).

    See ``docs/seed-flags.md`` for what each one does and why zeromesh's
    default differs.
    """

    #: When linger is set: at creation (zeromesh), right after bind/connect,
    #: or just before close (the seed: ``zmq_ctx_term`` can hang).
    linger_when: LingerWhen = LingerWhen.CREATION
    #: Linger in ms (the seed's ``-linger``; -1 is libzmq's infinite).
    linger_ms: int = 0
    #: Never make the data PUB process its commands (the memory growth).
    no_kick: bool = False
    #: Poll the data PUB once after each disconnect (seed -poll-after-disconnect).
    poll_after_disconnect: bool = False
    #: getsockopt(EVENTS) on the data PUB once after each disconnect.
    events_after_disconnect: bool = False
    #: Send an empty message on the data PUB after another peer's disconnect.
    send_after_disconnect: bool = False
    #: RECONNECT_IVL=-1 on the data SUB (seed -disable-reconnect).
    disable_reconnect: bool = False
    #: Log every event of every socket (seed -monitor-sockets).
    monitor_sockets: bool = False
    #: Leave without waiting for our own ``D`` (seed -immediate-exit).
    immediate_exit: bool = False
    #: Call disconnect twice (seed -duplicate-disconnect).
    duplicate_disconnect: bool = False
    #: Sleep this long after closing the sockets, before terminating the context.
    sleep_at_exit: float = 0.0
    #: The seed's discovery protocol: a 1 s loop with one ``C`` per turn,
    #: re-announce to every newcomer and while leaving, no directory, a plain
    #: PUB towards the proxy, no expiry and no heartbeats.
    classic_protocol: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.linger_when, LingerWhen):
            raise TypeError(f"linger_when must be a LingerWhen, not {type(self.linger_when).__name__}")
        check_number("linger_ms", self.linger_ms, minimum=-1, maximum=3_600_000, integer=True)
        check_number("sleep_at_exit", self.sleep_at_exit, maximum=MAX_SECONDS)
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type in ("bool", bool) and not isinstance(v, bool):
                raise TypeError(f"{f.name} must be a bool, not {type(v).__name__}")

    @classmethod
    def classic(cls) -> SeedBehaviour:
        """Every seed behaviour that the seed's peer has by default."""
        return cls(linger_when=LingerWhen.BEFORE_CLOSE, no_kick=True, classic_protocol=True)


def layer_settings(tuning: Tuning, seed: SeedBehaviour) -> tuple[Behaviour, SocketPolicy]:
    """The protocol's and the socket layer's settings for *tuning* and *seed*."""
    classic = seed.classic_protocol
    behaviour = Behaviour(
        announce_every_turn=classic,
        always_reannounce=classic,
        reannounce_while_leaving=classic,
        reannounce_on_welcome=not classic,
        use_directory=not classic,
        immediate_exit=seed.immediate_exit,
        duplicate_disconnect=seed.duplicate_disconnect,
        expire=tuning.expire_after is not None and not classic,
        expire_grace=tuning.expire_after if tuning.expire_after is not None else timing.EXPIRE_GRACE,
        watch=0 if classic or not tuning.heartbeats else tuning.watch,
        leave_timeout=tuning.leave_timeout,
        # The seed's trust: no incarnations, no proof, a C after a D re-adds (docs/membership.md).
        incarnations=not classic,
        require_proof=not classic,
        tombstones=not classic,
    )
    policy = SocketPolicy(
        linger_ms=seed.linger_ms,
        linger_when=seed.linger_when,
        kick=not seed.no_kick,
        poll_after_disconnect=seed.poll_after_disconnect,
        events_after_disconnect=seed.events_after_disconnect,
        send_after_disconnect=seed.send_after_disconnect,
        disable_reconnect=seed.disable_reconnect,
        monitor_sockets=seed.monitor_sockets,
        heartbeats=tuning.heartbeats and not classic,
        data_heartbeats=tuning.heartbeats and tuning.watch is None and not classic,
        probes=tuning.heartbeats and bool(tuning.watch) and not classic,
        watch_subscription=not classic,
    )
    return behaviour, policy
