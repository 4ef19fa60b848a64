"""``zeromesh keygen DIR``: CURVE keys for a secured mesh (mesh certificate,
one bundle per member and the proxy, an allow-list of public keys)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import SecurityError
from ..security import keygen
from . import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="new (or empty) directory to write the keys into")
    p.add_argument("--members", type=common.integer(1, 10_000), default=3, metavar="N",
                   help="member bundles to create (default %(default)s)")  # fmt: skip


def run(a: argparse.Namespace) -> int:
    try:
        bundles = keygen(a.dir, a.members)
    except (SecurityError, OSError) as exc:
        return common.fail("keygen", exc)
    root = Path(a.dir)
    print(f"mesh certificate: {root / 'mesh.key_secret'}")
    for b in bundles:
        role = "proxy" if b.name == "proxy" else "peer"
        print(f"bundle: {b}  (zeromesh {role} --curve {b} --allow {root / 'allow'})")
    return 0
