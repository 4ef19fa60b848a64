"""Test infrastructure for processes and hosts: children that report JSON lines,
and Linux network-namespace topologies (stdlib only; shells out to ``ip``).

:class:`Child` follows a child process that prints one JSON object per line on
stdout (``zeromesh peer --events jsonl``, ``zeromesh proxy --events jsonl``),
without threads: lines are read non-blocking inside bounded waits.

A :class:`Topology` builds, entirely outside the root network namespace::

    <ns>-sw      "switch" namespace holding bridge ``br0`` and one port ``v<i>`` per host
    <ns>-<host>  one namespace per host, with ``lo`` up and ``eth0`` = 10.231.X.<i+1>/24

where ``<ns>`` = ``<prefix>-<ownerpid>-<random>``.  The veth pairs are created
*inside* the switch namespace with their peer moved straight into the host
namespace, so no interface ever appears in the root namespace and all
interface names are short, fixed and namespace-local (``br0``, ``v0``, ``eth0``)
-- well within the 15-character IFNAMSIZ limit regardless of the prefix.
Each topology is its own L2 domain, so parallel runs cannot collide even if
they picked the same subnet; the subnet octet X is still derived from the
random id so that captures/logs from parallel runs are distinguishable.

Requires root (CAP_SYS_ADMIN + CAP_NET_ADMIN) and iproute2.  Use
:func:`available` to skip tests cleanly when that is not the case.

Typical use::

    ok, why = available()
    with Topology(["a", "b"], prefix="zmt") as topo:
        p = topo.popen("a", [sys.executable, "pub.py", topo.addr("a")])
        ...
        topo.cut("a"); ...; topo.heal("a")
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ..lines import LineReader

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "Child",
    "CutMode",
    "HostMesh",
    "NetnsError",
    "Topology",
    "available",
    "cleanup_stale",
    "netns_names",
    "spawn_zeromesh",
    "zeromesh_argv",
]

IP_TIMEOUT = 10.0  # seconds for any single `ip` invocation
CutMode = Literal["bridge", "host", "detach"]

_HOST_RE = re.compile(r"^[a-z0-9_]{1,12}$")
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9_]{0,15}$")


class NetnsError(RuntimeError):
    """An `ip` command failed."""


JsonLine = dict[str, Any]


class Child:
    """A child process that prints one JSON object per line on stdout.

    Every line read is kept, in order, in :attr:`lines` (a line that is not a
    JSON object is kept as ``{"raw": text}``, so a failing test shows it).
    Reading is non-blocking and happens only inside bounded waits.
    """

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.stdout is None:
            raise ValueError("the child's stdout must be a pipe")
        self.proc = proc
        self._reader = LineReader(proc.stdout)
        self.lines: list[JsonLine] = []

    @property
    def _eof(self) -> bool:
        return self._reader.eof

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self, timeout: float) -> None:
        """Read the lines available, waiting up to *timeout* for the first."""
        obj = self._reader.read_json(timeout)
        while obj is not None:
            self.lines.append(obj)
            obj = self._reader.read_json(0.0)

    def wait(self, pred: Callable[[JsonLine], bool], timeout: float, start: int = 0) -> JsonLine | None:
        """The first line (from index *start* on) matching *pred*, reading for up
        to *timeout*; None if none came (or the child closed its stdout)."""
        deadline = time.monotonic() + timeout
        seen = start
        while True:
            for line in self.lines[seen:]:
                if pred(line):
                    return line
            seen = len(self.lines)
            left = deadline - time.monotonic()
            if left <= 0 or self._eof:
                return None
            self._read(min(left, 0.05))

    def drain(self) -> list[JsonLine]:
        """Read everything available now; return all lines so far."""
        before = -1
        while before != len(self.lines) and not self._eof:
            before = len(self.lines)
            self._read(0.0)
        return self.lines

    def members(self) -> set[str]:
        """Who a ``zeromesh peer --events jsonl`` child knows now, replayed
        from its ready/join/leave lines."""
        known: set[str] = set()
        for e in self.drain():
            if e.get("event") in ("ready", "join"):
                known.add(str(e["uuid"]))
            elif e.get("event") == "leave":
                known.discard(str(e["uuid"]))
        return known

    def wait_each(self, event: str, uuids: set[str], start: int, timeout: float) -> dict[str, JsonLine]:
        """The latest *event* line about each of *uuids* after line *start*,
        reading for up to *timeout* until all came (fewer if some did not)."""
        got: dict[str, JsonLine] = {}

        def match(e: JsonLine) -> bool:
            if e.get("event") == event and e.get("uuid") in uuids:
                got[str(e["uuid"])] = e
            return got.keys() == uuids

        self.wait(match, timeout, start)
        return got

    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL (a crash: no goodbye) and reap."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout)

    def close(self, grace: float = 3.0) -> None:
        """SIGTERM, at most *grace* seconds to exit, then SIGKILL; close the pipe.
        Idempotent."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *args]
    try:
        cp = subprocess.run(
            cmd, check=False, capture_output=True, text=True, timeout=IP_TIMEOUT, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as e:
        raise NetnsError(f"timeout: {' '.join(cmd)}") from e
    if check and cp.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)} -> rc={cp.returncode}: {cp.stderr.strip()}")
    return cp


def netns_names() -> list[str]:
    cp = _ip("netns", "list", check=False)
    # lines look like "name" or "name (id: 3)"
    return [ln.split()[0] for ln in cp.stdout.splitlines() if ln.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_pids(pids: Sequence[int], grace: float) -> None:
    """SIGTERM the given pids, wait up to `grace` s, then SIGKILL survivors."""
    live = [p for p in pids if p > 1 and p != os.getpid()]
    for p in live:
        try:
            os.kill(p, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        live = [p for p in live if _pid_alive(p) and not _is_zombie(p)]
        if live:
            time.sleep(0.02)  # sleep: polling interval of a bounded wait
    for p in live:
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return data[data.rindex(b")") + 2 : data.rindex(b")") + 3] == b"Z"
    except (OSError, ValueError):
        return True


def _ns_pids(ns: str) -> list[int]:
    cp = _ip("netns", "pids", ns, check=False)
    return [int(x) for x in cp.stdout.split() if x.isdigit()]


def _delete_ns(ns: str, grace: float = 1.0) -> None:
    """Kill whatever still runs in `ns`, then remove it (links inside go with it)."""
    pids = _ns_pids(ns)
    if pids:
        _kill_pids(pids, grace)
    _ip("netns", "delete", ns, check=False)


def available() -> tuple[bool, str]:
    """(True, "") if we can create network namespaces, else (False, reason)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False, "not root (network namespaces need CAP_SYS_ADMIN/CAP_NET_ADMIN)"
    if shutil.which("ip") is None:
        return False, "iproute2 `ip` not found in PATH"
    probe = f"nsprobe-{os.getpid()}-{secrets.token_hex(2)}"
    try:
        _ip("netns", "add", probe)
        try:
            _ip("-n", probe, "link", "set", "lo", "up")
            _ip("-n", probe, "link", "add", "br0", "type", "bridge")
            _ip("-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        finally:
            _delete_ns(probe)
    except (NetnsError, OSError) as e:
        return False, f"ip netns/veth/bridge not usable: {e}"
    return True, ""


def cleanup_stale(prefix: str, *, only_dead_owners: bool = True) -> list[str]:
    """Delete namespaces left by crashed runs created with `prefix`.

    Names encode the creating pid (``<prefix>-<pid>-<rand>-...``); with
    `only_dead_owners` (default) namespaces whose creator is still alive are
    kept (including this process's own), so parallel runs sharing a prefix
    don't destroy each other.  (A recycled pid can make a dead run's leftovers
    look alive; pass only_dead_owners=False when you know nothing else runs.)
    Returns the deleted namespace names.
    """
    pat = re.compile(rf"^{re.escape(prefix)}-(\d+)-[0-9a-f]+-[a-z0-9_]+$")
    gone: list[str] = []
    for ns in netns_names():
        m = pat.match(ns)
        if not m:
            continue
        if only_dead_owners and _pid_alive(int(m.group(1))):
            continue
        _delete_ns(ns)
        gone.append(ns)
    return gone


class Topology:
    """N hosts on one Linux bridge, every piece in namespaces we own.

    `cut_mode` selects how :meth:`cut` partitions a host (see FINDINGS.md):
      - "bridge": set the switch-side veth ``v<i>`` down (both ends lose carrier).
      - "host":   set the host's ``eth0`` down (its connected route disappears, so
                  the cut host itself gets immediate ENETUNREACH on sends).
      - "detach": remove ``v<i>`` from the bridge; carrier stays up everywhere and
                  frames are silently dropped -- the closest to a cable cut
                  somewhere in the middle of the network.
    """

    SUBNET_FIRST = "10.231"

    def __init__(
        self,
        hosts: Sequence[str],
        prefix: str = "zmt",
        *,
        cut_mode: CutMode = "detach",
        kill_grace: float = 2.0,
    ) -> None:
        if not _PREFIX_RE.match(prefix):
            raise ValueError(f"bad prefix {prefix!r} (want [a-z][a-z0-9_]{{0,15}})")
        if len(set(hosts)) != len(hosts) or not hosts or len(hosts) > 250:
            raise ValueError("hosts must be 1..250 unique names")
        for h in hosts:
            if not _HOST_RE.match(h) or h == "sw":
                raise ValueError(f"bad host name {h!r} (want [a-z0-9_]{{1,12}}, not 'sw')")
        self.prefix = prefix
        self.hosts = list(hosts)
        self.cut_mode: CutMode = cut_mode
        self.kill_grace = kill_grace
        rnd = secrets.token_hex(3)
        self.id = f"{prefix}-{os.getpid()}-{rnd}"
        self.switch_ns = f"{self.id}-sw"
        self._octet = int(rnd, 16) % 254 + 1  # 10.231.<1..254>.0/24
        self.subnet = f"{self.SUBNET_FIRST}.{self._octet}.0/24"
        self._idx = {h: i for i, h in enumerate(self.hosts)}
        self._procs: list[subprocess.Popen[Any]] = []
        self._created: list[str] = []
        self._closed = False
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # ---- construction -------------------------------------------------
    def ns(self, host: str) -> str:
        """Namespace name of `host`."""
        self._check(host)
        return f"{self.id}-{host}"

    def addr(self, host: str) -> str:
        """IPv4 address (no mask) of `host`'s eth0."""
        self._check(host)
        return f"{self.SUBNET_FIRST}.{self._octet}.{self._idx[host] + 1}"

    def _check(self, host: str) -> None:
        if host not in self._idx:
            raise KeyError(host)

    def _build(self) -> None:
        sw = self.switch_ns
        _ip("netns", "add", sw)
        self._created.append(sw)
        _ip("-n", sw, "link", "set", "lo", "up")
        _ip("-n", sw, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")
        _ip("-n", sw, "link", "set", "br0", "up")
        for h in self.hosts:
            hn = self.ns(h)
            i = self._idx[h]
            _ip("netns", "add", hn)
            self._created.append(hn)
            _ip("-n", hn, "link", "set", "lo", "up")
            # veth created in the switch ns, peer lands directly in the host ns
            _ip("-n", sw, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0", "netns", hn)
            _ip("-n", sw, "link", "set", f"v{i}", "master", "br0")
            _ip("-n", sw, "link", "set", f"v{i}", "up")
            _ip("-n", hn, "addr", "add", f"{self.addr(h)}/24", "brd", "+", "dev", "eth0")
            _ip("-n", hn, "link", "set", "eth0", "up")

    # ---- processes ----------------------------------------------------
    def popen(self, host: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start `argv` inside `host`'s namespace (``ip netns exec``; ip execs argv,
        so ``Popen.pid`` is the program's own pid).  By default the child gets its
        own session so close() can also reap its descendants by process group."""
        if self._closed:
            raise RuntimeError("topology closed")
        kw.setdefault("start_new_session", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        p: subprocess.Popen[Any] = subprocess.Popen(["ip", "netns", "exec", self.ns(host), *argv], **kw)
        self._procs.append(p)
        return p

    def run(self, host: str, argv: Sequence[str], timeout: float = 30.0, **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run to completion inside `host` (text mode, captured output)."""
        self._check(host)
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(
            ["ip", "netns", "exec", self.ns(host), *argv],
            check=False,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            **kw,
        )

    def ping(self, src: str, dst: str, count: int = 3, timeout: float = 1.0) -> int:
        """ICMP-echo `dst` from inside `src` (no ping binary needed; raw socket,
        run via the current interpreter).  Returns the number of replies."""
        code = (
            "import socket,struct,sys,time,os\n"
            "d,n,to=sys.argv[1],int(sys.argv[2]),float(sys.argv[3])\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_ICMP)\n"
            "def ck(b):\n"
            " b+=b'\\0'*(len(b)%2); t=sum(struct.unpack('!%dH'%(len(b)//2),b))\n"
            " t=(t>>16)+(t&0xffff); t+=t>>16; return ~t&0xffff\n"
            "ok=0; ident=os.getpid()&0xffff\n"
            "for q in range(n):\n"
            " h=struct.pack('!BBHHH',8,0,0,ident,q); p=b'zeromesh'\n"
            " s.sendto(struct.pack('!BBHHH',8,0,ck(h+p),ident,q)+p,(d,0))\n"
            " end=time.monotonic()+to\n"
            " while time.monotonic()<end:\n"
            "  s.settimeout(max(0.001,end-time.monotonic()))\n"
            "  try: r,a=s.recvfrom(2048)\n"
            "  except socket.timeout: break\n"
            "  ih=(r[0]&15)*4; t,_,_,i,sq=struct.unpack('!BBHHH',r[ih:ih+8])\n"
            "  if t==0 and i==ident and sq==q and a[0]==d: ok+=1; break\n"
            "print(ok)\n"
        )
        r = self.run(
            src,
            [sys.executable, "-c", code, self.addr(dst), str(count), str(timeout)],
            timeout=count * timeout + 10,
        )
        if r.returncode != 0:
            raise NetnsError(f"ping helper failed: {r.stderr.strip()}")
        return int(r.stdout.strip() or 0)

    # ---- partitions ---------------------------------------------------
    def cut(self, host: str, mode: CutMode | None = None) -> None:
        """Partition `host` from the bridge (see class doc for modes)."""
        self._link(host, mode or self.cut_mode, up=False)

    def heal(self, host: str, mode: CutMode | None = None) -> None:
        """Undo :meth:`cut` (use the same mode)."""
        self._link(host, mode or self.cut_mode, up=True)

    def _link(self, host: str, mode: CutMode, up: bool) -> None:
        self._check(host)
        i = self._idx[host]
        state = "up" if up else "down"
        if mode == "bridge":
            _ip("-n", self.switch_ns, "link", "set", f"v{i}", state)
        elif mode == "host":
            _ip("-n", self.ns(host), "link", "set", "eth0", state)
        elif mode == "detach":
            if up:
                _ip("-n", self.switch_ns, "link", "set", f"v{i}", "master", "br0")
            else:
                _ip("-n", self.switch_ns, "link", "set", f"v{i}", "nomaster")
        else:
            raise ValueError(f"unknown cut mode {mode!r}")

    # ---- teardown -----------------------------------------------------
    def close(self) -> None:
        """Idempotent, bounded teardown: our processes, then namespaces."""
        if self._closed:
            return
        self._closed = True
        try:
            live = [p for p in self._procs if p.poll() is None]
            for p in live:
                try:
                    if os.getpgid(p.pid) == p.pid:  # we made it a group leader
                        os.killpg(p.pid, signal.SIGTERM)
                    else:
                        p.terminate()
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.monotonic() + self.kill_grace
            for p in live:
                try:
                    p.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    try:
                        if os.getpgid(p.pid) == p.pid:
                            os.killpg(p.pid, signal.SIGKILL)
                        else:
                            p.kill()
                    except (ProcessLookupError, PermissionError):
                        pass
                    try:
                        p.wait(timeout=2.0)
                    except subprocess.TimeoutExpired:
                        pass
        finally:
            # anything else still inside our namespaces (e.g. daemonised grandchildren)
            for ns in reversed(self._created):
                try:
                    _delete_ns(ns, grace=0.5)
                except NetnsError:
                    pass
            self._created.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # last resort; close() is the real API
        with contextlib.suppress(NetnsError, OSError, subprocess.SubprocessError):
            self.close()


def zeromesh_argv(*args: str) -> list[str]:
    """``zeromesh ARGS --events jsonl`` with this interpreter."""
    return [sys.executable, "-m", "zeromesh", *args, "--events", "jsonl"]


def spawn_zeromesh(*args: str) -> Child:
    """``zeromesh ARGS --events jsonl`` as a child process in this namespace."""
    return Child(subprocess.Popen(zeromesh_argv(*args), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL))


class HostMesh:
    """A ``zeromesh proxy`` on host ``px`` and *per_host* ``zeromesh peer`` processes
    on each of the other hosts of *topo*, bound on the wildcard address and
    advertising their host's address. :meth:`close` stops peers, then the proxy."""

    def __init__(self, topo: Topology, per_host: int = 2, start_timeout: float = 10.0) -> None:
        self.topo = topo
        self.children: list[Child] = []
        try:
            self.proxy = self._spawn(
                "px",
                "proxy",
                "--bind",
                "tcp://0.0.0.0:0",
                "--xsub-bind",
                "tcp://0.0.0.0:0",
                "--advertise",
                topo.addr("px"),
            )
            ready = self.proxy.wait(lambda e: e.get("event") == "ready", start_timeout)
            if ready is None:
                raise RuntimeError(f"proxy did not start: {self.proxy.drain()}")
            self.proxy_endpoint = str(ready["endpoint"])
            self.peers: dict[str, list[Child]] = {
                h: [
                    self._spawn(
                        h,
                        "peer",
                        "--proxy",
                        self.proxy_endpoint,
                        "--bind",
                        "tcp://0.0.0.0:0",
                        "--advertise",
                        topo.addr(h),
                    )
                    for _ in range(per_host)
                ]
                for h in topo.hosts
                if h != "px"
            }
            self.uuid: dict[Child, str] = {}
            self.endpoint: dict[Child, str] = {}
            for c in self.all_peers():
                line = c.wait(lambda e: e.get("event") == "ready", start_timeout)
                if line is None:
                    raise RuntimeError(f"peer did not get ready: {c.drain()}")
                self.uuid[c], self.endpoint[c] = str(line["uuid"]), str(line["endpoint"])
        except BaseException:
            self.close()
            raise

    def _spawn(self, host: str, *args: str) -> Child:
        c = Child(self.topo.popen(host, zeromesh_argv(*args), stdout=subprocess.PIPE))
        self.children.append(c)
        return c

    def all_peers(self) -> list[Child]:
        return [c for cs in self.peers.values() for c in cs]

    def everyone(self) -> set[str]:
        return set(self.uuid.values())

    def uuids(self, host: str) -> set[str]:
        return {self.uuid[c] for c in self.peers[host]}

    def full(self) -> bool:
        """Every peer knows every peer."""
        return all(c.members() == self.everyone() for c in self.all_peers())

    def marks(self) -> dict[Child, int]:
        """Where each peer's event lines stand now (to wait for what comes next)."""
        return {c: len(c.drain()) for c in self.all_peers()}

    def across(self, event: str, marks: dict[Child, int], timeout: float) -> list[dict[str, JsonLine]]:
        """For each peer, its *event* lines (after *marks*) about every peer on
        the other hosts; a dict shorter than expected means some did not come."""
        deadline = time.monotonic() + timeout
        out = []
        for host, cs in self.peers.items():
            others = self.everyone() - self.uuids(host)
            for c in cs:
                out.append(c.wait_each(event, others, marks[c], max(0.0, deadline - time.monotonic())))
        return out

    def close(self) -> None:
        for c in reversed(self.children):  # peers leave while the proxy still runs
            c.close()
