"""Every timing constant zeromesh uses, in one place.

All values are seconds unless the name says otherwise. Each one is a decision;
the comment says why it has the value it has.
"""

from __future__ import annotations

# --- announcing and leaving -------------------------------------------------

#: First retry of our own ``C`` after the welcome. The first ``C`` usually
#: races the proxy's subscription forwarding and is dropped by our proxy PUB,
#: so the first retry must come quickly for a join in milliseconds.
ANNOUNCE_RETRY_FIRST = 0.002
#: Backoff cap for ``C`` (and ``D``) retries: bounds discovery traffic from a
#: peer that cannot hear itself (proxy gone) to a few frames a second.
ANNOUNCE_RETRY_MAX = 0.25
#: Retry of ``C`` (and ``D``) once the proxy's subscription is seen (an XPUB
#: proxy PUB): that frame cannot be dropped, so a retry is only a safety net,
#: and a fast one would cost N deliveries each time a loaded proxy is slow to
#: echo (a retry storm under load).
ANNOUNCE_RETRY_SUBSCRIBED = 1.0
#: The seed's loop: one ``zmq_poll`` of 1000 ms per turn, one ``C`` per turn.
CLASSIC_TURN = 1.0

#: How long a leaving peer waits for its own ``D`` to come back before it
#: closes anyway. The seed waits forever; a dead proxy must not hang an exit.
LEAVE_TIMEOUT = 2.0

# --- the data PUB's command queue (memory growth, problem 1) ----------------

#: Upper bound between two ``getsockopt(EVENTS)`` on the data PUB while the
#: loop is otherwise idle. Every loop turn kicks too (a departure wakes the
#: loop: its D, its monitor event), so this only bounds the time a departed
#: subscriber's pipe, session and buffers stay allocated when its teardown
#: reaches the PUB after that turn: a bounded backlog, never a growth. At
#: 0.1 s the idle wake-ups were most of an idle peer's CPU (docs/performance.md).
KICK_INTERVAL = 1.0

# --- liveness (crash detection) ---------------------------------------------

#: ZMTP heartbeat interval on the connections that watch a process: a peer's
#: proxy SUB (proxy_down) and the proxy's probe of every member (obituaries).
#: Data connections carry none (WATCH_HEARTBEAT_IVL). libzmq answers PINGs
#: natively, so classic C peers need no new code for it.
HEARTBEAT_IVL = 0.5
#: No traffic (heartbeats included) for this long and libzmq drops the
#: connection: catches hosts that vanish without a TCP reset. libzmq arms this
#: timer at the first PING after the last traffic, so a silent link is dropped
#: up to IVL + TIMEOUT after it went quiet: measured 2.00 s with 1.5 here, which
#: plus the grace put partition detection at 3.00 s, on the 3 s bound
#: (docs/liveness.md); 1.0 gives 1.5 + 1.0 = 2.5 s. Cost: a link silent for
#: more than about 0.5-1 s is dropped (and reconnected if it comes back).
HEARTBEAT_TIMEOUT = 1.0
#: The ping interval of a peer's probes of the members it watches (timeout:
#: HEARTBEAT_TIMEOUT). Freezes and lost hosts are the proxy's probe's to find
#: (its obituary tells everyone, 2.5 s); the watchers find partitions between
#: two members (IVL + TIMEOUT + grace + suspicion: 5 s) and vouch against a
#: false obituary. At 0.5 s the 3N probes were 45% of an idle mesh's CPU.
WATCH_HEARTBEAT_IVL = 1.0
#: The ping interval (its timeout and TTL are twice this) of the links whose
#: liveness nobody watches from this side: the data PUB, a peer's proxy PUB,
#: the proxy's XPUB and XSUB. Detection never depends on them (the proxy SUB,
#: the watchers' probes and the proxy's probe do that, each from the other
#: side); they only bound how long a vanished party's pipe (and its queue, at
#: most the HWM) lives without a reset: 3 minutes. The data PUB at 5 s sent
#: 2,000 PINGs/s in a full mesh of 100, about 0.1% of a core per peer.
SLOW_HEARTBEAT_IVL = 60.0
#: Watch-set changes (the ring successors a peer probes) are applied at most
#: this often: a burst of joins re-dials a handful of probes, not one per join;
#: a peer that lives less than this after its ready never probes anyone.
WATCH_SETTLE = 1.0
#: A loop stall (LOOP_LAG_ALLOWANCE exceeded) this recent makes a lost proxy
#: link look like our own starvation, not a cut: no probing of everyone, no
#: declaring (Lifeguard's local health).
LOCAL_HEALTH_WINDOW = 5.0
#: A new probe connection counts as down only if its first handshake has not
#: come this long after the dial (then the grace runs): under load a connect
#: plus handshake takes seconds, and the member's data connection is up.
PROBE_FIRST_UP = 2.0
#: A peer whose data connection has been down this long is declared expired.
#: Long enough for a reconnect after a blip (backoff 100, 200, 400 ms) and for
#: a first connect + handshake; crash detection (process gone, kernel alive:
#: a reset at once) takes this long, partitions IVL + TIMEOUT more.
EXPIRE_GRACE = 1.0

# --- membership (incarnations, tombstones, proof, suspicion) --------------------

#: A uuid that said ``D`` stays tombstoned this long (a later ``C`` for it is
#: dropped). The seed's C peer re-sends ``C`` within a 1 s poll turn or two of
#: its ``D``; a replay later than this must still prove itself on the data
#: connection (and under CURVE comes from the wrong key), so the bound only
#: costs memory, which the count limit caps too.
TOMBSTONE_TTL = 60.0
#: At most one refutation per this interval: a flood of forged ``D`` frames for
#: our uuid must not become a flood of our ``C`` frames (each costs N deliveries);
#: well under the 1 s goal for being back everywhere.
REFUTE_INTERVAL = 0.05
#: A zeromesh member announced at an endpoint must prove it (its data PUB's
#: welcome names it) within this long, or the claim is dropped. Generous: under
#: load (100 peers on 2 cores) a first connect + handshake took seconds, and a
#: claim merely waiting costs nothing; a dead endpoint's claim goes earlier, on
#: the proxy's obituary.
PROOF_TIMEOUT = 10.0
#: An expired (suspect) peer's data connection keeps dialling for this long
#: (libzmq's reconnect pace: at most one attempt per RECONNECT_IVL_MAX +
#: CONNECT_TIMEOUT), so a false expiry or a partial partition heals when the
#: path returns; the proxy's obituary ends the watch at once for real deaths.
REVIVE_WINDOW = 60.0
#: A listed peer whose connection stayed down for the expiry grace is first
#: *suspected*: still listed, no event, while its own reconnect may clear it.
#: The proxy's obituary (a second observer) confirms a real death at once
#: (crash: 1.0 s); without one (a partial partition, a C proxy) it is declared
#: expired this much later. A peer whose own proxy link is down has nobody to
#: confirm with and declares at the grace. Under load (100 peers on 2 cores),
#: heartbeat timeouts flapped live connections by the thousand.
SUSPECT_TIMEOUT = 2.0
#: Lifeguard's local health: a loop turn later than this (the observer itself
#: starved of CPU) does not count against the peers it watches; their down
#: time is extended by the excess.
LOOP_LAG_ALLOWANCE = 0.25

# --- sockets ----------------------------------------------------------------

#: libzmq's reconnect interval for every connecting socket (ms). libzmq's own
#: default; named here so the expiry arithmetic above has it in view.
RECONNECT_IVL_MS = 100
#: Reconnect backoff cap (ms): a proxy that is down for long is retried at
#: this pace, so a restarted proxy is found within about this long.
RECONNECT_IVL_MAX_MS = 500

#: Bound on one TCP connect attempt (ms). With libzmq's default (0: the
#: kernel's SYN retries, backing off to many seconds) a peer reconnected
#: 7.5 s after a 12 s partition healed; with this bound, about 0.5 s.
CONNECT_TIMEOUT_MS = 1000

#: Bound on the ZMTP handshake (ms; libzmq's default is 30 s). A stopped
#: process's kernel still completes TCP, so only the handshake proves life.
HANDSHAKE_IVL_MS = 2000

# --- processes --------------------------------------------------------------

#: Bounded stop of a child process: SIGTERM/SIGINT, wait this long, SIGKILL.
STOP_GRACE = 3.0
#: How often a waiting loop looks at a stop flag or a child's end (the
#: harness, an asyncio close waiting on a thread).
STOP_POLL = 0.1
#: Longest turn of an idle proxy's loop: a stop request wakes it at once (a
#: wake pipe) and the directory's deadlines are asked for, so this only caps
#: a turn; at 0.1 s the idle wake-ups were most of an idle proxy's CPU.
PROXY_IDLE_TURN = 1.0

#: Bound on re-binding a publishing socket rebuilt to free junk subscriptions
#: (zeromesh.transport): libzmq closes the old listener on its I/O thread, a
#: few milliseconds after close() returns.
REBIND_TIMEOUT = 1.0

#: New members a directory proxy forwards per second (a token bucket; known
#: members' frames are not counted). A flood of valid ``C`` frames with fresh
#: uuids is bounded in memory by the caps, but each one is a join in every
#: peer: 20,000 of them kept 3 peers busy for seconds on a loaded 2-core box
#: (docs/robustness.md). Honest joins come far slower; a dropped ``C`` is
#: retried by its peer (ANNOUNCE_RETRY_SUBSCRIBED).
NEW_MEMBER_RATE = 500.0
#: ... with bursts up to this many (a mesh of this many starting at once).
NEW_MEMBER_BURST = 1000

# --- logging ----------------------------------------------------------------

#: At most one log line per this interval for malformed frames (they are
#: always counted); a flood of garbage must not become a flood of logs.
BAD_FRAME_LOG_INTERVAL = 5.0

# --- the soak harness ---------------------------------------------------------

#: A churner is hung when it has not exited this long after its lifetime plus
#: LEAVE_TIMEOUT: covers interpreter start and a loaded 2-core machine with 50
#: churners, while a real ctx_term hang never ends.
HANG_GRACE = 5.0
#: One psutil sample of the long-lived peer per second, as the seed's ``top``.
SAMPLE_INTERVAL = 1.0
#: Bound on one stack capture (py-spy or gdb attaching to a hung process).
STACK_CAPTURE_TIMEOUT = 30.0
#: Progress line interval when the live display is off (logs, CI).
SOAK_LOG_INTERVAL = 10.0
#: Churn before a soak starts measuring (seconds): the mesh fills and the
#: long-lived peers' allocators reach their working set (measured: their RSS
#: jumps by ~25 MB in the first seconds, then creeps by 0.2-0.3 KB per
#: departure; a leaked connection is ~12 KB). At the default churn (about 15
#: departures a second) that is ~300 departures, several times the churners'
#: concurrency; the slope is measured over the rest of the run.
SOAK_WARMUP = 20.0
#: Extra time a long-lived peer under memray gets to exit (it writes its capture).
MEMRAY_EXIT_GRACE = 30.0

# --- benchmarks ---------------------------------------------------------------

#: Bound on every wait in the benchmark suite: a benchmark that stalls reports
#: it (a missing figure), never hangs the run.
BENCH_WAIT_CAP = 60.0
#: Polling interval of the suite's bounded waits on mesh state: well under the
#: millisecond-scale figures it measures, yet no busy loop.
BENCH_POLL = 0.002
