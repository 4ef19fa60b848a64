"""The zeromesh extension: what follows the classic 295 bytes, key by key.

C readers truncate every frame to 295 bytes, so zeromesh carries its additions
after them (:data:`zeromesh.wire.EXT_MAGIC` + one JSON object). This module is
the one schema of that object: the key constants, and typed readers that turn
whatever a frame carries into a value or None. Everything here comes from the
network: a reader never raises, and a value of the wrong type, sign or size
counts as absent.

========= ============== ==============================================================
key       frames         meaning
========= ============== ==============================================================
``p``     W, C, D        proxy instance uuid (set by the directory proxy)
``s``     W, C           W: the directory's sequence number; C: the announcer's entry number
``dir``   W              the directory: ``[[uuid, endpoint], ...]``, with
                         ``incarnation`` (and ``1`` if it proves itself) for zeromesh members
``k``     C              ``{"p", "s"}``: the directory position the announcer has seen
``r``     C              1: the announcer found a gap and asks for re-announcements
``m``     C              with ``r``: the entry numbers it missed
``i``     C, D           the member's incarnation (zeromesh members always send it)
``v``     C              1: the member's data PUB proves its uuid (list it once proven)
``o``     D              1: an obituary (the directory proxy found the member dead)
``b``     C, D           the CURVE public key the proxy saw the frame come from
``meta``  C              the announcer's metadata ``{key: value}`` (bound: :mod:`zeromesh.metadata`)
``dx``    W              per listed member: ``{uuid: {"m": metadata, "t": unix time listed,
                         "st": "joining" | "suspect", "pub": .., "sub": ..}}`` (``m`` left out
                         when empty, ``st`` when alive, ``pub``/``sub`` when everything)
``pub``   C              the topic prefixes the announcer publishes (absent: everything)
``sub``   C              the topic prefixes it subscribes to (absent: everything)
========= ============== ==============================================================

Topics are bytes and JSON has none: each prefix travels as standard base64
(with padding). Of the encodings JSON carries without escaping, base64 is the
most compact (4/3; hex doubles), and its size does not depend on the bytes
(text would escape a control byte to six characters), so the bound on a frame
is exact: at most :data:`MAX_TOPICS` prefixes of :data:`MAX_TOPIC_BYTES` per
side, :data:`MAX_TOPICS_JSON` bytes of JSON for both.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import metadata
from .errors import ConfigError

PROXY = "p"
SEQ = "s"
DIRECTORY = "dir"
KNOWN = "k"
RESYNC = "r"
MISSING = "m"
INCARNATION = "i"
PROVES = "v"
OBITUARY = "o"
BINDING = "b"
META = "meta"
DIR_INFO = "dx"
PUBLISHES = "pub"
SUBSCRIBES = "sub"

#: The largest incarnation accepted: exact in every JSON reader (IEEE doubles).
MAX_INCARNATION = 2**53 - 1
#: A resync names at most this many missed entries (keeps the frame small).
MAX_MISSING = 256
#: A CURVE public key in Z85 is 40 characters.
KEY_LEN = 40
#: Interest-scoped connections: at most this many topic prefixes a peer
#: publishes, and as many it subscribes to (each a data SUB subscription and a
#: trie entry in every publisher it connects to) ...
MAX_TOPICS = 16
#: ... each at most this many bytes (a subscription is one message of 1 + this
#: on the wire, under the data PUB's ``MAXMSGSIZE``).
MAX_TOPIC_BYTES = 64
_MAX_TOPIC_B64 = 4 * ((MAX_TOPIC_BYTES + 2) // 3)
#: Both topic lists of one member as JSON at most: ``"pub":[..],"sub":[..],``
#: with every prefix quoted and separated (2.9 KB).
MAX_TOPICS_JSON = 2 * (8 + MAX_TOPICS * (_MAX_TOPIC_B64 + 3))

#: Topic prefixes: None is everything (the default, and what a classic peer or
#: an older zeromesh peer, which sends no list, means).
Topics = tuple[bytes, ...] | None


def _int(value: object, top: int = MAX_INCARNATION) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= top:
        return value
    return None


@dataclass(frozen=True)
class Stamp:
    """A directory position: which proxy instance, and its sequence number."""

    proxy: str
    seq: int

    def as_ext(self) -> dict[str, Any]:
        return {PROXY: self.proxy, SEQ: self.seq}


def stamp(ext: object) -> Stamp | None:
    """The ``p``/``s`` pair of *ext* (a frame's extension, or its ``k``)."""
    if not isinstance(ext, Mapping):
        return None
    p, s = ext.get(PROXY), _int(ext.get(SEQ))
    if isinstance(p, str) and s is not None:
        return Stamp(p, s)
    return None


def known(ext: Mapping[str, Any]) -> Stamp | None:
    """The directory position a newcomer says it has seen (``k``)."""
    return stamp(ext.get(KNOWN))


def incarnation(ext: Mapping[str, Any]) -> int | None:
    """The sender's incarnation; None for a classic frame (or a malformed value)."""
    return _int(ext.get(INCARNATION))


def flag(ext: Mapping[str, Any], key: str) -> bool:
    """A 0/1 flag (``r``, ``o``): only the integer 1 (or true) sets it."""
    return ext.get(key) in (1, True)


def missing(ext: Mapping[str, Any]) -> list[int] | None:
    """The entry numbers a resync names; None if absent or malformed."""
    m = ext.get(MISSING)
    if not isinstance(m, list) or len(m) > MAX_MISSING:
        return None
    out = [_int(x) for x in m]
    return None if any(x is None for x in out) else [x for x in out if x is not None]


def binding(ext: Mapping[str, Any]) -> str | None:
    """The CURVE key the proxy stamped on a frame, or None."""
    b = ext.get(BINDING)
    return b if isinstance(b, str) and len(b) == KEY_LEN else None


@dataclass(frozen=True)
class DirEntry:
    uuid: str
    endpoint: str
    #: None: a classic (C) member, which carries no incarnation.
    incarnation: int | None = None
    #: Its data PUB proves its uuid (``v`` on its C).
    proves: bool = False

    def as_ext(self) -> list[Any]:
        if self.incarnation is None:
            return [self.uuid, self.endpoint]
        if self.proves:
            return [self.uuid, self.endpoint, self.incarnation, 1]
        return [self.uuid, self.endpoint, self.incarnation]


def directory(ext: Mapping[str, Any]) -> list[DirEntry] | None:
    """The directory of a welcome; None without one. Malformed entries are skipped."""
    entries = ext.get(DIRECTORY)
    if not isinstance(entries, list):
        return None
    out: list[DirEntry] = []
    for e in entries:
        if not (isinstance(e, list) and len(e) >= 2 and isinstance(e[0], str) and isinstance(e[1], str)):
            continue
        inc = _int(e[2]) if len(e) >= 3 else None
        out.append(DirEntry(e[0], e[1], inc, inc is not None and len(e) >= 4 and e[3] in (1, True)))
    return out


# --- incarnations and tombstones: the rules both protocol and directory apply ---------


def newer(inc: int | None, than: int | None) -> bool:
    """Does a claim at *inc* supersede one at *than*? A classic frame (None)
    never supersedes a zeromesh member's claim; anything supersedes a classic one."""
    if than is None:
        return True
    return inc is not None and inc > than


@dataclass
class Tomb:
    incarnation: int | None
    t: float
    #: An obituary (the proxy found the member dead) rather than the member's
    #: own ``D``: the member may come back, as a C peer cannot refute.
    obituary: bool


class Tombstones:
    """Uuids that said ``D`` (or were declared dead), bounded in number and time."""

    def __init__(self, limit: int, ttl: float) -> None:
        self.limit = limit
        self.ttl = ttl
        self._tombs: dict[str, Tomb] = {}  # insertion order = age

    def __len__(self) -> int:
        return len(self._tombs)

    def add(self, uuid: str, incarnation: int | None, now: float, obituary: bool = False) -> None:
        old = self._tombs.pop(uuid, None)
        if old is not None and old.incarnation is not None:
            incarnation = old.incarnation if incarnation is None else max(incarnation, old.incarnation)
            obituary = obituary and old.obituary
        self._tombs[uuid] = Tomb(incarnation, now, obituary)
        while len(self._tombs) > self.limit:
            del self._tombs[next(iter(self._tombs))]

    def get(self, uuid: str, now: float) -> Tomb | None:
        tomb = self._tombs.get(uuid)
        if tomb is not None and now - tomb.t > self.ttl:
            del self._tombs[uuid]
            return None
        return tomb

    def blocks(self, uuid: str, incarnation: int | None, now: float) -> bool:
        """Must a ``C`` for *uuid* at *incarnation* be dropped? Yes unless it
        is newer than the tombstone (a live member refuting a false ``D``), or
        classic after an obituary (a C peer cannot refute)."""
        tomb = self.get(uuid, now)
        if tomb is None:
            return False
        if tomb.obituary and incarnation is None:
            return False
        if tomb.incarnation is None:
            return not tomb.obituary  # a C peer's own D is final
        return not newer(incarnation, tomb.incarnation)

    def discard(self, uuid: str) -> None:
        self._tombs.pop(uuid, None)


# --- proof of identity on the data connection -------------------------------------

#: Starts the welcome a zeromesh data PUB (an XPUB) sends on every new
#: subscriber connection: a one-frame message, never a data message (those are
#: three frames), and a topic prefix no application plausibly uses (the
#: proxy's probe subscribes to exactly it).
PROOF_MAGIC = b"\x00ZMXP"
#: A proof is small; anything longer is not one.
MAX_PROOF = 512


def encode_proof(uuid: str, endpoint: str, incarnation: int) -> bytes:
    return PROOF_MAGIC + json.dumps({"u": uuid, "e": endpoint, "i": incarnation}, separators=(",", ":")).encode()


def decode_proof(frame: bytes) -> tuple[str, str] | None:
    """(uuid, endpoint) a data PUB's welcome claims, or None if *frame* is not one."""
    if not frame.startswith(PROOF_MAGIC) or len(frame) > MAX_PROOF:
        return None
    try:
        obj = json.loads(frame[len(PROOF_MAGIC) :])
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    u, e = obj.get("u"), obj.get("e")
    return (u, e) if isinstance(u, str) and isinstance(e, str) else None


def meta(ext: Mapping[str, Any]) -> tuple[dict[str, str], int]:
    """The announcer's metadata within the bound, and how many pairs were dropped."""
    return metadata.read(ext.get(META))


def dir_info(ext: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-member details of a welcome (``{}`` if absent or malformed;
    entries that are not objects are left out). Values still need checking."""
    info = ext.get(DIR_INFO)
    if not isinstance(info, dict):
        return {}
    return {u: v for u, v in info.items() if isinstance(u, str) and isinstance(v, dict)}


# --- topics (interest-scoped connections) ------------------------------------------


def encode_topics(topics: tuple[bytes, ...]) -> list[str]:
    return [base64.b64encode(t).decode("ascii") for t in topics]


def read_topics(ext: Mapping[str, Any], key: str) -> tuple[Topics, bool]:
    """The topic prefixes under *key* (``pub``/``sub``) of a remote frame or
    directory entry: (prefixes, False); absent: (None, False). A malformed
    list (not a list, too many, not base64, too long) is dropped whole and
    read as everything, (None, True): an unreadable publisher costs a
    connection, never the data the application wants."""
    value = ext.get(key)
    if value is None:
        return None, False
    if not isinstance(value, list) or len(value) > MAX_TOPICS:
        return None, True
    out: list[bytes] = []
    for item in value:
        if not isinstance(item, str) or len(item) > _MAX_TOPIC_B64:
            return None, True
        try:
            topic = base64.b64decode(item.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            return None, True
        if len(topic) > MAX_TOPIC_BYTES:
            return None, True
        out.append(topic)
    return tuple(dict.fromkeys(out)), False


def validate_topics(value: object, name: str) -> Topics:
    """Local topic prefixes (the API's ``publishes``/``subscribes``), checked:
    None (everything) or a sequence of bytes within the bound, as a tuple
    without duplicates. ``TypeError`` or :class:`ConfigError` naming *name*."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview, str)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be None or a list of bytes, not {type(value).__name__}")
    if len(value) > MAX_TOPICS:
        raise ConfigError(f"{name} has {len(value)} topics; at most {MAX_TOPICS}")
    for t in value:
        if not isinstance(t, bytes):
            raise TypeError(f"{name}: topics must be bytes, not {type(t).__name__}")
        if len(t) > MAX_TOPIC_BYTES:
            raise ConfigError(f"{name}: topic {t[:16]!r}... is {len(t)} bytes; at most {MAX_TOPIC_BYTES}")
    return tuple(dict.fromkeys(value))


def overlaps(publishes: Topics, subscribes: Topics) -> bool:
    """Does a publisher of *publishes* carry anything a subscriber of
    *subscribes* wants? Prefixes match either way: a published ``a`` may carry
    ``ab..``, which a subscription ``ab`` wants; a published ``abc`` is
    within a subscription ``a``. None (everything) overlaps anything non-empty."""
    if publishes is None:
        return subscribes is None or bool(subscribes)
    if subscribes is None:
        return bool(publishes)
    return any(p.startswith(s) or s.startswith(p) for p in publishes for s in subscribes)


def covers(publishes: Topics, topic: bytes) -> bool:
    """Is *topic* within the declared *publishes* prefixes?"""
    return publishes is None or any(topic.startswith(p) for p in publishes)
