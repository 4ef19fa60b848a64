"""The classic discovery frame, byte for byte as the seed's C programs lay it out.

One ZeroMQ frame of exactly 295 bytes, the C struct
``{char command; char uuid[37]; char endpoint[257];}``:

====== ==== =============================================================
offset size field
====== ==== =============================================================
0      1    command: ``W`` welcome, ``C`` I am here, ``D`` I am leaving
1      37   uuid: 36-character text UUID, NUL-terminated
38     257  endpoint: ZeroMQ endpoint text (<= 256 chars), NUL-terminated
====== ==== =============================================================

C senders fill the struct with ``strcpy``: bytes after each NUL are garbage,
so :func:`decode` cuts every field at its first NUL. C readers receive into a
295-byte buffer and so never see bytes past offset 295; zeromesh uses that
room for an optional *extension*: the magic :data:`EXT_MAGIC` followed by a
JSON object. C peers are blind to it; frames without it are plain classic.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .endpoints import DEFAULT_SCHEMES, MAX_ENDPOINT_LEN, validate_endpoint
from .errors import WireError

FRAME_SIZE = 295
UUID_FIELD = 37
ENDPOINT_FIELD = 257
UUID_OFFSET = 1
ENDPOINT_OFFSET = UUID_OFFSET + UUID_FIELD
#: Marks a zeromesh extension after the classic 295 bytes.
EXT_MAGIC = b"ZMX1"

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class Command(str, enum.Enum):
    WELCOME = "W"
    CONNECT = "C"
    DISCONNECT = "D"


@dataclass(frozen=True)
class Message:
    command: Command
    uuid: str
    endpoint: str
    #: zeromesh extension (empty for a classic frame). Compared by value.
    ext: Mapping[str, Any] = field(default_factory=dict)


def validate_uuid(text: str) -> str:
    if not _UUID_RE.match(text):
        raise WireError("bad-uuid", f"not a 36-character text UUID: {text[:40]!r}")
    return text


def _field(frame: bytes, offset: int, size: int, name: str) -> str:
    raw = frame[offset : offset + size]
    nul = raw.find(b"\0")
    if nul < 0:
        raise WireError(f"bad-{name}", f"{name} field is not NUL-terminated")
    try:
        return raw[:nul].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(f"bad-{name}", f"{name} is not text: {exc}") from None


def _decode_ext(tail: bytes) -> dict[str, Any]:
    if not tail.startswith(EXT_MAGIC):
        return {}  # C readers ignore the tail; so do we
    try:
        obj = json.loads(tail[len(EXT_MAGIC) :])
    except (ValueError, RecursionError):
        raise WireError("bad-ext", "extension is not JSON") from None
    if not isinstance(obj, dict):
        raise WireError("bad-ext", "extension is not a JSON object")
    return obj


def decode(frame: bytes, schemes: frozenset[str] = DEFAULT_SCHEMES) -> Message:
    """Decode one discovery frame; raise :class:`WireError` if it is malformed.

    Frames longer than 295 bytes are accepted (a C reader truncates them too);
    shorter ones are rejected, since a C reader would see garbage.
    """
    if len(frame) < FRAME_SIZE:
        raise WireError("short-frame", f"{len(frame)} bytes, need {FRAME_SIZE}")
    try:
        command = Command(chr(frame[0]))
    except ValueError:
        raise WireError("bad-command", f"unknown command byte 0x{frame[0]:02x}") from None
    uuid = validate_uuid(_field(frame, UUID_OFFSET, UUID_FIELD, "uuid"))
    endpoint = validate_endpoint(_field(frame, ENDPOINT_OFFSET, ENDPOINT_FIELD, "endpoint"), schemes)
    return Message(command, uuid, endpoint, _decode_ext(frame[FRAME_SIZE:]))


def encode(msg: Message) -> bytes:
    """Encode *msg*; text fields are NUL-padded (never garbage), the extension,
    if any, follows the classic 295 bytes."""
    uuid = msg.uuid.encode("ascii")
    endpoint = msg.endpoint.encode("utf-8")
    if len(uuid) >= UUID_FIELD:
        raise WireError("bad-uuid", f"uuid longer than {UUID_FIELD - 1} bytes")
    if len(endpoint) > MAX_ENDPOINT_LEN:
        raise WireError("bad-endpoint", f"endpoint longer than {MAX_ENDPOINT_LEN} bytes")
    frame = msg.command.value.encode("ascii") + uuid.ljust(UUID_FIELD, b"\0") + endpoint.ljust(ENDPOINT_FIELD, b"\0")
    if msg.ext:
        frame += EXT_MAGIC + json.dumps(msg.ext, separators=(",", ":")).encode("utf-8")
    return frame
