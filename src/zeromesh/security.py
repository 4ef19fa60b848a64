"""Optional CURVE security: encrypted, authenticated meshes (zeromesh-only).

A secured mesh shares one **mesh certificate**: every socket that binds (each
peer's data PUB, the proxy's XPUB and XSUB) is a CURVE server with the mesh
secret key, and every socket that connects (data SUB, proxy SUB, proxy PUB, the
proxy's liveness probe) is a CURVE client that knows the mesh public key and
has its member's own keypair. A process without the mesh keys fails the CURVE
handshake on every connection, so it never hears a frame, and nobody can
connect to it. An optional **allow-list** (a directory of member public keys)
narrows that to the listed members: a ZAP handler on each context refuses any
other client key. Classic C peers speak no CURVE: a secured mesh is
zeromesh-only. See ``docs/security.md``.

``zeromesh keygen DIR`` writes what a mesh needs::

    DIR/mesh.key_secret                       the mesh certificate (master copy)
    DIR/proxy/{mesh,member}.key_secret        the proxy's bundle (--curve DIR/proxy)
    DIR/member-K/{mesh,member}.key_secret     one bundle per member (--curve DIR/member-K)
    DIR/allow/{proxy,member-K}.key            public keys only (--allow DIR/allow)
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import stat
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.auth

from . import timing
from .errors import SecurityError
from .logs import RateLimitedLog

log = logging.getLogger(__name__)

#: File names inside a member's bundle directory (``--curve DIR``).
MESH_CERT = "mesh.key_secret"
MEMBER_CERT = "member.key_secret"
_Z85 = frozenset(string.digits + string.ascii_letters + ".-:+=^!/*?&<>()[]{}@%$#")
PathLike = str | os.PathLike[str]


def _z85_key(text: bytes, what: str, path: Path) -> bytes:
    if len(text) != 40 or not set(text.decode("latin-1")) <= _Z85:
        # Never the key itself: error messages end up in logs and terminals.
        raise SecurityError(f"{path}: malformed {what} (want 40 Z85 characters, got {len(text)} characters)")
    return text


def _check_private(path: Path) -> None:
    """Refuse a secret key file that anyone but its owner may read (as ssh
    does): such a key must be taken as already leaked."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise SecurityError(f"{path}: cannot read key file: {exc.strerror}") from None
    if mode & 0o077:
        raise SecurityError(
            f"{path}: secret key file is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
            f"make it private: chmod 600 {shlex.quote(str(path))}"
        )


def _read_cert(path: Path, need_secret: bool) -> tuple[bytes, bytes | None]:
    """(public, secret) of a ZeroMQ certificate file, checked; secret is None
    when the file has none and *need_secret* is false. A file that must hold
    a secret key must be private to its owner."""
    if not path.is_file():
        raise SecurityError(f"{path}: no such key file")
    if need_secret:
        _check_private(path)
    try:
        public, secret = zmq.auth.load_certificate(path)
    except ValueError:
        raise SecurityError(f"{path}: not a ZeroMQ certificate (no public-key line)") from None
    except (OSError, UnicodeError) as exc:
        raise SecurityError(f"{path}: cannot read key file: {exc}") from None
    public = _z85_key(public, "public key", path)
    if secret is None:
        if need_secret:
            raise SecurityError(f"{path}: no secret-key line (a .key_secret file is needed here)")
        return public, None
    secret = _z85_key(secret, "secret key", path)
    if zmq.curve_public(secret) != public:
        raise SecurityError(f"{path}: the secret key does not match the public key")
    return public, secret


def _read_allow(directory: Path) -> frozenset[bytes]:
    if not directory.is_dir():
        raise SecurityError(f"{directory}: no such allow-list directory")
    try:
        files = sorted(directory.glob("*.key"))
    except OSError as exc:
        raise SecurityError(f"{directory}: cannot read allow-list directory: {exc}") from None
    if not files:
        raise SecurityError(f"{directory}: no *.key files: the allow-list would refuse everyone")
    return frozenset(_read_cert(f, need_secret=False)[0] for f in files)


@dataclass(frozen=True)
class Security:
    """The CURVE keys of one mesh member (peer or proxy), Z85-encoded."""

    mesh_public: bytes
    mesh_secret: bytes = field(repr=False)
    public: bytes
    secret: bytes = field(repr=False)
    #: Client public keys a server socket accepts; None: any that knows the mesh key.
    allowed: frozenset[bytes] | None = None

    @classmethod
    def load(cls, mesh: PathLike, member: PathLike, allow: PathLike | None = None) -> Security:
        """From the mesh certificate, this member's certificate (both with
        their secret keys) and an optional allow-list directory. Raises
        :class:`SecurityError` on a missing, unreadable or malformed file."""
        mesh_public, mesh_secret = _read_cert(Path(mesh), need_secret=True)
        public, secret = _read_cert(Path(member), need_secret=True)
        assert mesh_secret is not None and secret is not None  # need_secret
        allowed = _read_allow(Path(allow)) if allow is not None else None
        return cls(mesh_public, mesh_secret, public, secret, allowed)

    @classmethod
    def from_dir(cls, path: PathLike, allow: PathLike | None = None) -> Security:
        """From a bundle directory holding ``mesh.key_secret`` and ``member.key_secret``."""
        d = Path(path)
        if not d.is_dir():
            raise SecurityError(f"{d}: not a key directory (one holding {MESH_CERT} and {MEMBER_CERT})")
        return cls.load(d / MESH_CERT, d / MEMBER_CERT, allow)

    def apply_server(self, sock: zmq.Socket[Any]) -> None:
        """Make *sock* (one that binds) a CURVE server; before bind."""
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.mesh_secret)

    def apply_client(self, sock: zmq.Socket[Any]) -> None:
        """Make *sock* (one that connects) a CURVE client; before connect."""
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.mesh_public)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)

    def gate(self, ctx: zmq.Context[Any], always: bool = False) -> Gate | None:
        """The allow-list's ZAP handler on *ctx* (started), or None without one
        (*always*: one that admits any client knowing the mesh key, for the
        ``User-Id`` it puts on every message). Start it before the server
        sockets bind; :meth:`Gate.stop` it before the context is terminated."""
        return Gate(ctx, self.allowed) if self.allowed is not None or always else None


class Gate:
    """A ZAP handler (pyzmq's :class:`ThreadAuthenticator`, one thread) that
    lets a CURVE client in only if its public key is in the allow-list."""

    def __init__(self, ctx: zmq.Context[Any], allowed: frozenset[bytes] | None) -> None:
        self.allowed = allowed
        #: Client keys refused so far (written by the ZAP thread only).
        self.denied = 0
        self._denied_log = RateLimitedLog(log, timing.BAD_FRAME_LOG_INTERVAL)
        # Imported here: it pulls in asyncio (~40 ms of start-up every command would pay).
        from zmq.auth.thread import ThreadAuthenticator

        self._auth = ThreadAuthenticator(ctx, log=logging.getLogger(f"{__name__}.zap"))
        self._auth.start()
        self._auth.thread.name = "zeromesh-zap"
        self._auth.configure_curve_callback("*", credentials_provider=self)

    def callback(self, domain: str, key: bytes) -> bool:
        """pyzmq's credentials-provider hook: *key* is the client's Z85 public key."""
        if self.allowed is None or key in self.allowed:
            return True
        self.denied += 1
        self._denied_log.warning("refused a CURVE client whose key is not in the allow-list: %s", key.decode())
        return False

    def stop(self) -> None:
        """Stop the ZAP thread and close its sockets (bounded: the thread only
        waits on its pipe). Idempotent."""
        self._auth.stop()


def keygen(directory: PathLike, members: int) -> list[Path]:
    """Write a mesh certificate, a proxy bundle, *members* member bundles and
    the allow-list (layout: module docstring) into *directory*, which must be
    new or empty. Secret files are readable by their owner only. Returns the
    bundle directories."""
    root = Path(directory)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise SecurityError(f"{root}: exists and is not an empty directory; not overwriting keys")
    allow = root / "allow"
    allow.mkdir(parents=True, exist_ok=True)
    old_umask = os.umask(0o077)  # secret files are born private, never briefly world-readable
    try:
        mesh_public, _ = zmq.auth.create_certificates(root, "mesh")
        # Without an allow-list the mesh public key is a credential too (it
        # lets a client in): no loose copy of it; the bundles carry both halves.
        os.unlink(mesh_public)
        bundles = []
        for name in ["proxy"] + [f"member-{k}" for k in range(1, members + 1)]:
            b = root / name
            b.mkdir()
            shutil.copyfile(root / MESH_CERT, b / MESH_CERT)
            pub, _ = zmq.auth.create_certificates(b, "member")
            os.replace(pub, allow / f"{name}.key")
            bundles.append(b)
    finally:
        os.umask(old_umask)
    for f in allow.iterdir():  # member public keys: anyone may read them
        f.chmod(0o644)
    return bundles
