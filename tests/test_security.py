"""CURVE security: secured meshes converge and carry data; peers without the
mesh keys, with another mesh's keys or (with an allow-list) with an unlisted
key never join; bad key files are clear errors, exit code 2 from the CLI."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import data_flows, full_mesh, wait_for
from zeromesh import Peer, Proxy, Tuning
from zeromesh.cli import main
from zeromesh.security import MEMBER_CERT, MESH_CERT, Security, SecurityError, keygen

pytestmark = pytest.mark.timeout(30)

#: How long an intruder is watched for (it would join in milliseconds if it could).
INTRUDER_WATCH = 1.5
#: Intruders never hear their own D: do not wait the default 2 s for it.
QUICK_LEAVE = Tuning(leave_timeout=0.3)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("keys") / "mesh"
    keygen(root, 4)
    return root


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("other") / "mesh"
    keygen(root, 1)
    return root


def member(keys: Path, k: int, allow: bool = False) -> Security:
    return Security.from_dir(keys / f"member-{k}", keys / "allow" if allow else None)


def secured_proxy(keys: Path, allow: bool) -> Proxy:
    return Proxy(security=Security.from_dir(keys / "proxy", keys / "allow" if allow else None))


def never_joins(intruder: Peer, proxy: Proxy, members: list[Peer]) -> bool:
    """True if, for INTRUDER_WATCH seconds, *intruder* hears nothing and nobody lists it."""

    def seen() -> bool:
        return (
            intruder.wait_ready(0)
            or bool(intruder.peers())
            or intruder.uuid in proxy.directory.entries
            or any(intruder.uuid in m.peers() for m in members)
        )

    return not wait_for(seen, INTRUDER_WATCH, 0.02)


@pytest.mark.parametrize("allow", [False, True], ids=["mesh-key", "allow-list"])
def test_secured_mesh_converges_and_carries_data(keys: Path, allow: bool, peers: list[Peer]) -> None:
    with secured_proxy(keys, allow) as proxy:
        peers.extend(Peer(proxy.endpoint, security=member(keys, k, allow)).start() for k in (1, 2, 3))
        assert wait_for(lambda: full_mesh(peers), 5.0)
        assert wait_for(lambda: len(proxy.directory.entries) == 3, 3.0)
        assert data_flows(peers[0], peers[1:], b"secret payload")
        if allow:
            assert proxy.gate is not None and proxy.gate.denied == 0
        for p in list(peers):
            assert p.stop(5.0) and p.exit_reason == "left"


@pytest.fixture
def secured_mesh(keys: Path) -> Iterator[tuple[Proxy, list[Peer]]]:
    """A proxy and two members, allow-list on."""
    with secured_proxy(keys, allow=True) as proxy:
        members = [Peer(proxy.endpoint, security=member(keys, k, allow=True)).start() for k in (1, 2)]
        try:
            assert wait_for(lambda: full_mesh(members), 5.0)
            yield proxy, members
        finally:
            for p in members:
                assert p.stop(5.0)


def intruder_security(kind: str, keys: Path, other_keys: Path, tmp_path: Path) -> Security | None:
    if kind == "no-keys":
        return None
    if kind == "other-mesh":
        return Security.from_dir(other_keys / "member-1")
    # The right mesh certificate, but a member key nobody listed.
    bundle = tmp_path / "unlisted"
    keygen(bundle, 1)
    return Security.load(keys / MESH_CERT, bundle / "member-1" / MEMBER_CERT)


@pytest.mark.parametrize("kind", ["no-keys", "other-mesh", "unlisted-key"])
def test_intruder_never_joins_and_nothing_breaks(
    kind: str, keys: Path, other_keys: Path, tmp_path: Path, secured_mesh: tuple[Proxy, list[Peer]]
) -> None:
    proxy, members = secured_mesh
    sec = intruder_security(kind, keys, other_keys, tmp_path)
    intruder = Peer(proxy.endpoint, security=sec, tuning=QUICK_LEAVE).start()
    try:
        assert never_joins(intruder, proxy, members)
        if kind == "unlisted-key":  # refused by the allow-list, not by the handshake
            assert proxy.gate is not None
            assert wait_for(lambda: proxy.gate is not None and proxy.gate.denied > 0, 3.0)
        # The mesh is unharmed: still whole, data still flows, nothing crashed.
        assert full_mesh(members) and len(proxy.directory.entries) == 2
        assert data_flows(members[0], members[1:], b"secret payload")
        assert proxy._thread is not None and proxy._thread.is_alive()
    finally:
        assert intruder.stop(5.0)
    assert intruder.exit_reason != "error"


def test_secured_peer_cannot_join_a_plain_proxy(keys: Path) -> None:
    with Proxy() as proxy:
        p = Peer(proxy.endpoint, security=member(keys, 1), tuning=QUICK_LEAVE).start()
        try:
            assert not p.wait_ready(INTRUDER_WATCH)
            assert not proxy.directory.entries
        finally:
            assert p.stop(5.0)


# --- keys and errors -------------------------------------------------------------------


def test_keygen_layout(keys: Path) -> None:
    assert sorted(f.name for f in (keys / "allow").iterdir()) == [
        "member-1.key",
        "member-2.key",
        "member-3.key",
        "member-4.key",
        "proxy.key",
    ]
    listed = Security.from_dir(keys / "proxy", keys / "allow").allowed
    bundles = [keys / "proxy"] + [keys / f"member-{k}" for k in range(1, 5)]
    secs = [Security.from_dir(b) for b in bundles]
    assert listed == frozenset(s.public for s in secs)  # every bundle is listed, and only they
    assert len({s.mesh_public for s in secs}) == 1
    for b in bundles:
        for f in (MESH_CERT, MEMBER_CERT):
            assert stat.S_IMODE((b / f).stat().st_mode) == 0o600
    assert "secret" not in repr(secs[0]).lower()
    assert main(["keygen", str(keys)]) == 2  # never overwrites keys


def _garble(tmp_path: Path, keys: Path, what: str) -> tuple[Path, Path | None, str]:
    """A bundle directory (and allow dir) broken in one way, and the error's gist."""
    b = tmp_path / "bundle"
    b.mkdir()
    for f in (MESH_CERT, MEMBER_CERT):
        (b / f).write_bytes((keys / "member-1" / f).read_bytes())
    allow = None
    if what == "missing-member":
        (b / MEMBER_CERT).unlink()
        return b, None, "no such key file"
    if what == "garbage":
        (b / MESH_CERT).write_bytes(os.urandom(64).replace(b"\n", b"x"))
        return b, None, "not a ZeroMQ certificate"
    if what == "short-key":
        (b / MEMBER_CERT).write_text('curve\n    public-key = "tooshort"\n')
        return b, None, "malformed public key"
    if what == "public-only":
        (b / MEMBER_CERT).write_bytes((keys / "allow" / "member-1.key").read_bytes())
        return b, None, "no secret-key line"
    if what == "mismatch":  # another member's secret key under member-1's public key
        other = (keys / "member-2" / MEMBER_CERT).read_text().splitlines()
        mine = (b / MEMBER_CERT).read_text().splitlines()
        (b / MEMBER_CERT).write_text(
            "\n".join(o if "secret-key" in o else m for m, o in zip(mine, other, strict=True)) + "\n"
        )
        return b, None, "does not match"
    allow = tmp_path / "allow"
    allow.mkdir()
    if what == "empty-allow":
        return b, allow, r"no \*\.key files"
    (allow / "junk.key").write_text("not a certificate\n")
    return b, allow, "not a ZeroMQ certificate"


@pytest.mark.parametrize(
    "what", ["missing-member", "garbage", "short-key", "public-only", "mismatch", "empty-allow", "garbage-allow"]
)
def test_bad_key_files_are_clear_errors(what: str, keys: Path, tmp_path: Path) -> None:
    bundle, allow, gist = _garble(tmp_path, keys, what)
    for f in bundle.iterdir():  # private, as keygen writes them: the fault is the one _garble made
        f.chmod(0o600)
    with pytest.raises(SecurityError, match=gist) as exc:
        Security.from_dir(bundle, allow)
    assert str(tmp_path) in str(exc.value)  # names the file or directory at fault
    args = ["proxy", "--curve", str(bundle)] + (["--allow", str(allow)] if allow else [])
    assert main(args) == 2


def test_cli_key_errors_exit_2_without_traceback(tmp_path: Path, zeromesh_exe: list[str]) -> None:
    r = subprocess.run(
        [*zeromesh_exe, "peer", "--proxy", "tcp://127.0.0.1:1", "--seconds", "1", "--curve", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert r.returncode == 2
    assert "not a key directory" in r.stderr and "Traceback" not in r.stderr
    assert main(["peer", "--allow", str(tmp_path)]) == 2  # --allow needs --curve


def test_cli_peer_joins_a_secured_mesh(keys: Path, zeromesh_exe: list[str]) -> None:
    with secured_proxy(keys, allow=True) as proxy:
        r = subprocess.run(
            [
                *zeromesh_exe,
                "peer",
                "--proxy",
                proxy.endpoint,
                "--seconds",
                "0.5",
                "--events",
                "jsonl",
                "--curve",
                str(keys / "member-3"),
                "--allow",
                str(keys / "allow"),
            ],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    assert r.returncode == 0, r.stderr
    events = [json.loads(line)["event"] for line in r.stdout.splitlines()]
    assert events[0] == "ready" and events[-1] == "exit"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_loose_secret_file_is_refused_with_the_chmod_to_run(
    mode: int, keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = keys / "member-1" / MEMBER_CERT
    secret.chmod(mode)
    with pytest.raises(SecurityError, match="group or others") as exc:
        Security.from_dir(keys / "member-1")
    assert f"chmod 600 {secret}" in str(exc.value)
    assert main(["peer", "--proxy", "tcp://127.0.0.1:1", "--curve", str(keys / "member-1")]) == 2
    assert f"chmod 600 {secret}" in capsys.readouterr().err
    secret.chmod(0o600)
    assert Security.from_dir(keys / "member-1").public


def test_a_malformed_secret_key_is_never_echoed(keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = tmp_path / "bundle"
    b.mkdir()
    (b / MESH_CERT).write_bytes((keys / "member-1" / MESH_CERT).read_bytes())
    real = (keys / "member-1" / MEMBER_CERT).read_text()
    secret = next(ln.split('"')[1] for ln in real.splitlines() if "secret-key" in ln)
    # One character too many: a malformed key that is nearly the real one.
    (b / MEMBER_CERT).write_text(real.replace(secret, secret + "A"))
    for f in b.iterdir():
        f.chmod(0o600)
    with pytest.raises(SecurityError, match="malformed secret key") as exc:
        Security.from_dir(b)
    assert secret[:8] not in str(exc.value)
    assert main(["proxy", "--curve", str(b)]) == 2
    err = capsys.readouterr().err
    assert "malformed secret key" in err and secret[:8] not in err
