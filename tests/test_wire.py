"""The classic frame codec: golden bytes built independently with ``struct``,
the C sender's garbage after NULs, the C reader's truncation, every malformed
case with its ``reason``, the extension, and hypothesis properties."""

from __future__ import annotations

import json
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zeromesh.wire import Command, Message, WireError, decode, encode

pytestmark = pytest.mark.timeout(60)

#: The seed's ``struct {char command; char uuid[37]; char endpoint[257];}``.
C_STRUCT = struct.Struct("=c37s257s")
UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"
EP = "tcp://127.0.0.1:40001"


def c_frame(cmd: bytes, uuid: bytes, endpoint: bytes, garbage: bool = False) -> bytes:
    """What the C peer puts on the wire: ``strcpy`` into a stack struct, so the
    bytes after each NUL are whatever was there (random here) when *garbage*."""
    if not garbage:
        return C_STRUCT.pack(cmd, uuid, endpoint)  # struct pads 's' with zeros
    buf = bytearray(os.urandom(C_STRUCT.size))
    buf[0:1] = cmd
    buf[1 : 1 + len(uuid) + 1] = uuid + b"\0"
    buf[38 : 38 + len(endpoint) + 1] = endpoint + b"\0"
    return bytes(buf)


# --- golden vectors ---------------------------------------------------------------


def test_struct_size_is_the_seeds() -> None:
    assert C_STRUCT.size == 295


@pytest.mark.parametrize(
    ("command", "letter"), [(Command.WELCOME, b"W"), (Command.CONNECT, b"C"), (Command.DISCONNECT, b"D")]
)
def test_encode_matches_the_c_struct_byte_for_byte(command: Command, letter: bytes) -> None:
    frame = encode(Message(command, UUID, EP))
    assert frame == C_STRUCT.pack(letter, UUID.encode(), EP.encode())
    # The same thing spelled out, offsets and all, as a literal.
    literal = letter + UUID.encode() + b"\0" + EP.encode() + b"\0" * (257 - len(EP))
    assert frame == literal
    assert len(frame) == 295 and frame[1:37] == UUID.encode() and frame[37] == 0 and frame[38:59] == EP.encode()


def test_golden_decode() -> None:
    frame = b"C" + UUID.encode() + b"\0" + b"ipc:///tmp/zm.sock" + b"\0" * 239
    assert len(frame) == 295
    assert decode(frame) == Message(Command.CONNECT, UUID, "ipc:///tmp/zm.sock")


def test_decode_cuts_fields_at_the_first_nul_ignoring_garbage() -> None:
    for _ in range(50):
        frame = c_frame(b"D", UUID.encode(), EP.encode(), garbage=True)
        assert decode(frame) == Message(Command.DISCONNECT, UUID, EP)


def test_garbage_that_looks_like_text_after_the_nul_is_still_cut() -> None:
    buf = bytearray(C_STRUCT.pack(b"C", UUID.encode(), EP.encode()))
    buf[38 + len(EP) + 1 : 38 + len(EP) + 6] = b"99999"  # "tcp://127.0.0.1:40001\099999"
    assert decode(bytes(buf)).endpoint == EP


def test_longer_frames_are_accepted_as_a_c_reader_would_truncate_them() -> None:
    frame = c_frame(b"C", UUID.encode(), EP.encode()) + b"anything at all \xff\x00"
    msg = decode(frame)
    assert (msg.command, msg.uuid, msg.endpoint, dict(msg.ext)) == (Command.CONNECT, UUID, EP, {})


@pytest.mark.parametrize("size", [0, 1, 38, 294])
def test_shorter_frames_are_rejected(size: int) -> None:
    with pytest.raises(WireError) as e:
        decode(c_frame(b"C", UUID.encode(), EP.encode())[:size])
    assert e.value.reason == "short-frame"


# --- malformed frames -------------------------------------------------------------


def _with_endpoint_field(raw: bytes) -> bytes:
    return c_frame(b"C", UUID.encode(), b"")[:38] + raw.ljust(257, b"\0")[:257]


MALFORMED: list[tuple[str, bytes, str]] = [
    ("unknown command", c_frame(b"X", UUID.encode(), EP.encode()), "bad-command"),
    ("NUL command", c_frame(b"\0", UUID.encode(), EP.encode()), "bad-command"),
    ("lower-case command", c_frame(b"c", UUID.encode(), EP.encode()), "bad-command"),
    ("uuid not text uuid", c_frame(b"C", b"not-a-uuid", EP.encode()), "bad-uuid"),
    ("uuid too short", c_frame(b"C", UUID[:-1].encode(), EP.encode()), "bad-uuid"),
    ("uuid empty", c_frame(b"C", b"", EP.encode()), "bad-uuid"),
    ("uuid not NUL-terminated", b"C" + b"a" * 37 + EP.encode().ljust(257, b"\0"), "bad-uuid"),
    ("uuid not utf-8", c_frame(b"C", b"\xff" * 36, EP.encode()), "bad-uuid"),
    ("endpoint empty", c_frame(b"C", UUID.encode(), b""), "bad-endpoint"),
    ("endpoint not NUL-terminated", _with_endpoint_field(b"t" * 257), "bad-endpoint"),
    ("endpoint not utf-8", c_frame(b"C", UUID.encode(), b"tcp://\xff\xfe:1"), "bad-endpoint"),
    ("endpoint without scheme", c_frame(b"C", UUID.encode(), b"127.0.0.1:40999"), "bad-endpoint"),
    ("tcp wildcard *", c_frame(b"C", UUID.encode(), b"tcp://*:1"), "bad-endpoint"),
    ("tcp wildcard 0.0.0.0", c_frame(b"C", UUID.encode(), b"tcp://0.0.0.0:40999"), "bad-endpoint"),
    ("tcp port 0", c_frame(b"C", UUID.encode(), b"tcp://127.0.0.1:0"), "bad-endpoint"),
    ("tcp port too big", c_frame(b"C", UUID.encode(), b"tcp://127.0.0.1:65536"), "bad-endpoint"),
    ("tcp no port", c_frame(b"C", UUID.encode(), b"tcp://127.0.0.1"), "bad-endpoint"),
    ("ipc with whitespace", c_frame(b"C", UUID.encode(), b"ipc:///tmp/a b"), "bad-endpoint"),
    ("inproc scheme", c_frame(b"C", UUID.encode(), b"inproc://x"), "bad-scheme"),
    ("udp scheme", c_frame(b"C", UUID.encode(), b"udp://127.0.0.1:5"), "bad-scheme"),
    ("epgm scheme", c_frame(b"C", UUID.encode(), b"epgm://eth0;239.1.1.1:40999"), "bad-scheme"),
    ("extension not JSON", c_frame(b"C", UUID.encode(), EP.encode()) + b"ZMX1{nope", "bad-ext"),
    ("extension not an object", c_frame(b"C", UUID.encode(), EP.encode()) + b"ZMX1[1,2]", "bad-ext"),
    ("extension deeply nested", c_frame(b"C", UUID.encode(), EP.encode()) + b"ZMX1" + b"[" * 100_000, "bad-ext"),
]


@pytest.mark.parametrize(("frame", "reason"), [(f, r) for _, f, r in MALFORMED], ids=[n for n, _, _ in MALFORMED])
def test_malformed_frames_raise_wire_error_with_reason(frame: bytes, reason: str) -> None:
    with pytest.raises(WireError) as e:
        decode(frame)
    assert e.value.reason == reason
    assert isinstance(e.value, ValueError)  # callers may catch it as a ValueError too


def test_endpoint_of_256_bytes_is_the_longest_allowed() -> None:
    host = ".".join(["h" * 63] * 3 + ["h" * 53])  # a 245-byte DNS name (at most 253)
    longest = f"tcp://{host}:4321"
    assert len(longest) == 256
    assert decode(encode(Message(Command.CONNECT, UUID, longest))).endpoint == longest
    with pytest.raises(WireError) as e:
        encode(Message(Command.CONNECT, UUID, longest + "0"))
    assert e.value.reason == "bad-endpoint"


def test_allowed_schemes_are_configurable() -> None:
    frame = c_frame(b"C", UUID.encode(), b"ipc:///tmp/x")
    with pytest.raises(WireError) as e:
        decode(frame, frozenset({"tcp"}))
    assert e.value.reason == "bad-scheme"


@pytest.mark.parametrize("host", ["localhost", "10.1.2.3", "[::1]", "[fe80::1]", "my-host.example.org"])
def test_tcp_hosts_accepted(host: str) -> None:
    ep = f"tcp://{host}:7"
    assert decode(c_frame(b"C", UUID.encode(), ep.encode())).endpoint == ep


# --- the extension -------------------------------------------------------------------


def test_extension_round_trip_and_layout() -> None:
    ext = {"p": UUID, "s": 7, "dir": [[UUID, EP]], "k": {"p": UUID, "s": 3}}
    frame = encode(Message(Command.WELCOME, UUID, EP, ext))
    assert frame[:295] == C_STRUCT.pack(b"W", UUID.encode(), EP.encode())  # what a C reader sees
    assert frame[295:299] == b"ZMX1"
    assert json.loads(frame[299:]) == ext
    assert decode(frame) == Message(Command.WELCOME, UUID, EP, ext)


def test_a_tail_without_the_magic_is_ignored() -> None:
    assert decode(c_frame(b"C", UUID.encode(), EP.encode()) + b'ZMX2{"p":1}').ext == {}


def test_empty_extension_encodes_classic() -> None:
    assert len(encode(Message(Command.CONNECT, UUID, EP, {}))) == 295


# --- properties -----------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10) | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
_host = st.sampled_from(["127.0.0.1", "localhost", "10.0.0.1", "[::1]", "h-1.example"])
_tcp = st.builds(lambda h, p: f"tcp://{h}:{p}", _host, st.integers(1, 65535))
_ipc = st.text(
    st.characters(min_codepoint=33, max_codepoint=0x2FFF, exclude_categories=("Zs", "Zl", "Zp", "Cc")),
    min_size=1,
    max_size=60,
).map(lambda s: f"ipc:///tmp/{s}")
messages = st.builds(
    Message,
    st.sampled_from(list(Command)),
    st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()),
    _tcp | _ipc,
    st.dictionaries(st.text(max_size=5), _json, max_size=4),
)


@settings(max_examples=200, deadline=None)
@given(messages)
def test_round_trip(msg: Message) -> None:
    frame = encode(msg)
    assert decode(frame) == msg
    assert len(frame) == 295 if not msg.ext else len(frame) > 295


@settings(max_examples=200, deadline=None)
@given(messages, st.binary(min_size=295, max_size=295))
def test_garbage_after_nuls_never_changes_the_meaning(msg: Message, noise: bytes) -> None:
    """Overwrite every byte after each field's NUL with noise, as a C sender would."""
    classic = bytearray(encode(Message(msg.command, msg.uuid, msg.endpoint)))
    uuid_end = 1 + len(msg.uuid) + 1
    ep_end = 38 + len(msg.endpoint.encode()) + 1
    classic[uuid_end:38] = noise[uuid_end:38]
    classic[ep_end:295] = noise[ep_end:295]
    assert decode(bytes(classic)) == Message(msg.command, msg.uuid, msg.endpoint)


def _frame_like() -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, and arbitrary bytes that get past the first checks."""
    head = st.sampled_from([b"W", b"C", b"D"])
    body = st.binary(min_size=294, max_size=294)
    tail = st.binary(max_size=40) | st.binary(max_size=40).map(lambda b: b"ZMX1" + b)
    valid_head = st.builds(lambda e: c_frame(b"C", UUID.encode(), e.encode()), _tcp)
    return (
        st.binary(max_size=600)
        | st.builds(lambda h, b, t: h + b + t, head, body, tail)
        | st.builds(lambda v, t: v + b"ZMX1" + t, valid_head, st.binary(max_size=60))
        | st.builds(lambda v, t: v + b"ZMX1" + t.encode(), valid_head, st.text(max_size=30))
    )


@settings(max_examples=500, deadline=None)
@given(_frame_like())
def test_decode_of_arbitrary_bytes_only_raises_wire_error(frame: bytes) -> None:
    try:
        msg = decode(frame)
    except WireError as exc:
        assert exc.reason
        return
    except Exception as exc:  # the property under test: nothing but WireError escapes
        pytest.fail(f"decode raised {type(exc).__name__}: {exc}")
    assert isinstance(msg.ext, dict)


def test_json_extension_must_be_an_object() -> None:
    # A JSON scalar, string or array after the magic is rejected, never returned as ext.
    base = c_frame(b"C", UUID.encode(), EP.encode())
    for tail in (b"1", b'"s"', b"null", b"true"):
        with pytest.raises(WireError):
            decode(base + b"ZMX1" + tail)
