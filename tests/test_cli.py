"""The ``zeromesh`` command in child processes, and its flag mapping."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from zeromesh import Proxy
from zeromesh.cli import build_parser
from zeromesh.cli.peer import peer_options
from zeromesh.lines import reader_of
from zeromesh.options import layer_settings
from zeromesh.protocol import Behaviour
from zeromesh.sockets import LingerWhen, SocketPolicy

pytestmark = pytest.mark.timeout(60)

#: Lifetime of each of the 20 peers: every one must have started and joined
#: before the first leaves (20 interpreters on a shared 2-core box).
MESH_SECONDS = 5.0


class Children:
    """Child processes of a test: started with pipes, always stopped (by PID,
    bounded wait, then kill) and reaped."""

    def __init__(self, exe: list[str]) -> None:
        self.exe = exe
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            [*self.exe, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(2.0)
            for f in (p.stdout, p.stderr):
                if f is not None:
                    f.close()


@pytest.fixture
def children(zeromesh_exe: list[str]) -> Iterator[Children]:
    c = Children(zeromesh_exe)
    yield c
    c.stop_all()


def read_line(p: subprocess.Popen[str], timeout: float) -> str:
    line = reader_of(p).readline(timeout)
    if line is None:
        raise AssertionError(f"no line from {p.args!r} within {timeout} s")
    return line


def run(exe: list[str], *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*exe, *args], capture_output=True, text=True, timeout=timeout, check=False)


# --- the proxy ------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_proxy_prints_ready_and_stops_on_signal_within_a_second(children: Children, sig: int) -> None:
    p = children.start("proxy", "--bind", "tcp://127.0.0.1:0", "--events", "jsonl")
    ready = json.loads(read_line(p, 10.0))
    assert ready["event"] == "ready" and ready["role"] == "proxy"
    assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", ready["endpoint"]) and not ready["endpoint"].endswith(":0")
    assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", ready["xsub"])
    t0 = time.monotonic()
    p.send_signal(sig)
    rc = p.wait(5.0)
    assert time.monotonic() - t0 < 1.0
    assert rc == 130  # stopped by a signal: "interrupted", as every subcommand says


# --- a mesh of processes ------------------------------------------------------------


def test_twenty_peer_processes_form_a_full_mesh_and_all_leave(children: Children) -> None:
    proxy = children.start("proxy", "--bind", "tcp://127.0.0.1:0", "--events", "jsonl")
    endpoint = json.loads(read_line(proxy, 10.0))["endpoint"]
    peers = [
        children.start("peer", "--proxy", endpoint, "--events", "jsonl", "--seconds", str(MESH_SECONDS))
        for _ in range(20)
    ]
    events: dict[int, list[dict[str, Any]]] = {p.pid: [] for p in peers}
    sel = selectors.DefaultSelector()
    for p in peers:
        assert p.stdout is not None
        sel.register(p.stdout, selectors.EVENT_READ, p)
    deadline = time.monotonic() + MESH_SECONDS + 25.0
    open_pipes = len(peers)
    while open_pipes and time.monotonic() < deadline:
        for key, _ in sel.select(1.0):
            p = key.data
            while (line := reader_of(p).readline(0)) is not None:  # every complete line read so far
                if not line:
                    sel.unregister(p.stdout)
                    open_pipes -= 1
                    break
                events[p.pid].append(json.loads(line))
    sel.close()
    assert open_pipes == 0, "some peers did not exit in time"
    rcs = [p.wait(5.0) for p in peers]
    assert rcs == [0] * 20, [p.stderr.read() if p.stderr else "" for p in peers if p.returncode]

    ready = {pid: [e for e in evs if e["event"] == "ready"] for pid, evs in events.items()}
    assert all(len(r) == 1 for r in ready.values()), ready
    uuids = {pid: r[0]["uuid"] for pid, r in ready.items()}
    everyone = set(uuids.values())
    assert len(everyone) == 20
    for pid, evs in events.items():
        for e in evs:
            assert {"event", "uuid", "endpoint", "t"} <= set(e) and isinstance(e["t"], float)
        joined = {e["uuid"] for e in evs if e["event"] == "join"}
        assert joined == everyone - {uuids[pid]}, f"peer {pid} saw {len(joined)} of 19 joins"
        assert evs[-1]["event"] == "exit" and evs[-1].get("reason") == "left", evs[-1]
    # The last peer to start was ready before the first one's lifetime ended.
    first_exit = min(e["t"] for evs in events.values() for e in evs if e["event"] == "exit")
    last_ready = max(r[0]["t"] for r in ready.values())
    first_ready = min(r[0]["t"] for r in ready.values())
    print(f"20 peers ready within {last_ready - first_ready:.2f} s of each other")
    assert last_ready < first_exit
    proxy.send_signal(signal.SIGINT)
    assert proxy.wait(5.0) == 130


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_makes_a_peer_leave_cleanly(children: Children, proxy: Proxy, sig: int) -> None:
    p = children.start("peer", "--proxy", proxy.endpoint, "--long-lived", "--events", "jsonl")
    assert json.loads(read_line(p, 10.0))["event"] == "ready"
    t0 = time.monotonic()
    p.send_signal(sig)
    last = json.loads(read_line(p, 5.0))
    assert (last["event"], last.get("reason")) == ("exit", "left")
    assert p.wait(5.0) == 130
    assert time.monotonic() - t0 < 1.0


def test_advertise_replaces_the_wildcard_host(children: Children, proxy: Proxy) -> None:
    p = children.start(
        "peer",
        "--proxy",
        proxy.endpoint,
        "--bind",
        "tcp://0.0.0.0:0",
        "--advertise",
        "127.0.0.1",
        "--seconds",
        "0.3",
        "--events",
        "jsonl",
    )
    ready = json.loads(read_line(p, 10.0))
    assert ready["event"] == "ready"
    m = re.fullmatch(r"tcp://127\.0\.0\.1:(\d+)", ready["endpoint"])
    assert m and int(m[1]) > 0
    assert p.wait(10.0) == 0


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["peer", "--proxy", "bogus"], "--proxy"),
        (["peer", "--proxy", "tcp://127.0.0.1:99999"], "--proxy"),
        (["peer", "--proxy", "tcp://*:40999"], "--proxy"),
        (["peer", "--proxy", "inproc://x"], "--proxy"),
        (["peer", "--bind", "tcp://127.0.0.1:x"], "--bind"),
        (["peer", "--bind", "ipc:///nonexistent-dir/zm.sock"], "cannot start"),
        (["peer", "--port", "99999"], "port"),
        (["peer", "--bind", "tcp://0.0.0.0:0"], "advertise"),
        (["proxy", "--bind", "bogus"], "--bind"),
        (["proxy", "--bind", "tcp://192.0.2.1:0"], "cannot start"),  # TEST-NET: not ours to bind
        (["proxy", "--bind", "tcp://0.0.0.0:0"], "advertise"),
        (["peer", "--advertise", "[1.2.3.4]"], "--advertise"),  # 0.1.0: accepted, then every peer crashed
        (["proxy", "--advertise", "[abc]"], "--advertise"),
    ],
)
def test_bad_endpoints_are_clear_errors_with_exit_code_2(zeromesh_exe: list[str], args: list[str], needle: str) -> None:
    r = run(zeromesh_exe, *args, "--seconds", "0.1") if args[0] == "peer" else run(zeromesh_exe, *args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    assert needle in r.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--seconds", "nan"], "--seconds"),  # 0.1.0: 100% of a core forever
        (["--seconds", "inf"], "--seconds"),
        (["--expire-after", "-1"], "--expire-after"),  # 0.1.0: expired everyone at once
        (["--linger", "-5"], "--linger"),  # 0.1.0: "did not bind in time" after 5 s
        (["--uuid", "bad"], "--uuid"),  # 0.1.0: a traceback
        (["--advertise", "a" * 300], "--advertise"),  # 0.1.0: a traceback
        (["--advertise", "a b"], "--advertise"),  # 0.1.0: accepted, never ready
        (["--bind", "inproc://x"], "--bind"),  # 0.1.0: accepted, never ready
        (["--sleep-at-exit", "1e9"], "--sleep-at-exit"),  # 0.1.0: ignored SIGINT
        (["--meta", "novalue"], "--meta"),
    ],
)
def test_bad_values_are_one_line_errors_before_anything_starts(
    zeromesh_exe: list[str], args: list[str], needle: str
) -> None:
    r = run(zeromesh_exe, "peer", "--proxy", "tcp://127.0.0.1:9", *args, timeout=20.0)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr


# --- flag mapping (in process: cheap) --------------------------------------------------------


def parse(*argv: str) -> Any:
    return build_parser("peer").parse_args(["peer", *argv])


def peer_config(a: Any) -> tuple[Behaviour, SocketPolicy]:
    """What the flags set in the protocol and socket layers."""
    return layer_settings(*peer_options(a))


def test_seed_spellings_parse_to_the_seed_settings() -> None:
    a = parse("-seconds", "1", "-send", "-early")
    behaviour, policy = peer_config(a)
    assert a.seconds == 1.0 and not a.long_lived
    assert policy.send_after_disconnect and policy.linger_when is LingerWhen.CREATION
    a = parse(
        "-long-lived",
        "-port",
        "7000",
        "-linger",
        "5",
        "-poll",
        "-fix1256",
        "-immediate",
        "-dup",
        "-disable",
        "-monitor",
        "-sleep",
        "0.5",
    )
    behaviour, policy = peer_config(a)
    assert a.long_lived and a.port == 7000 and a.sleep_at_exit == 0.5
    assert policy.linger_ms == 5 and policy.poll_after_disconnect and policy.kick
    assert policy.disable_reconnect and policy.monitor_sockets
    assert behaviour.immediate_exit and behaviour.duplicate_disconnect


def test_prefix_abbreviations() -> None:
    _, policy = peer_config(parse("--send", "--early", "--poll"))
    assert policy.send_after_disconnect and policy.poll_after_disconnect
    assert policy.linger_when is LingerWhen.CREATION


def test_defaults_are_zeromeshs_and_classic_is_the_seeds() -> None:
    b, pol = peer_config(parse())
    assert pol.kick and pol.linger_when is LingerWhen.CREATION and pol.linger_ms == 0
    assert not b.announce_every_turn and not b.reannounce_while_leaving and not b.always_reannounce
    b, pol = peer_config(parse("--classic"))
    assert not pol.kick and pol.linger_when is LingerWhen.BEFORE_CLOSE
    assert b.announce_every_turn and b.reannounce_while_leaving and b.always_reannounce
    b, pol = peer_config(parse("--classic", "-early"))  # a seed flag on top of --classic
    assert pol.linger_when is LingerWhen.CREATION and not pol.kick


@pytest.mark.parametrize(
    ("flag", "check"),
    [
        ("--no-kick", lambda b, p: not p.kick),
        ("--late-linger", lambda b, p: p.linger_when is LingerWhen.BEFORE_CLOSE),
        ("--linger-after-bind", lambda b, p: p.linger_when is LingerWhen.AFTER_BIND),
        ("--events-after-disconnect", lambda b, p: p.events_after_disconnect),
        ("--send-after-disconnect", lambda b, p: p.send_after_disconnect),
        ("--poll-after-disconnect", lambda b, p: p.poll_after_disconnect),
        ("--immediate-exit", lambda b, p: b.immediate_exit),
        ("--duplicate-disconnect", lambda b, p: b.duplicate_disconnect),
        ("--disable-reconnect", lambda b, p: p.disable_reconnect),
        ("--monitor-sockets", lambda b, p: p.monitor_sockets),
    ],
)
def test_each_seed_behaviour_switch(flag: str, check: Any) -> None:
    b, p = peer_config(parse(flag))
    assert check(b, p)
    b0, p0 = peer_config(parse())
    assert not check(b0, p0)  # and it is not the default


def test_two_linger_timings_conflict() -> None:
    with pytest.raises(ValueError, match="choose one"):
        peer_config(parse("--late-linger", "--early"))
