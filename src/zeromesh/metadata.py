"""Per-peer metadata: a few short ``str -> str`` pairs (like Serf tags, Pyre
headers or zeroconf TXT records) that a peer announces about itself.

It travels in the extension of the peer's ``C`` (key ``meta``) and, for every
member the directory proxy lists, in its welcome (key ``dx``; the schema is in
:mod:`zeromesh.ext`), so newcomers and ``zeromesh members`` see it.
C peers neither send nor see it: their metadata is empty.

The bound (the same for what we send and what we accept):

* at most :data:`MAX_PAIRS` pairs;
* keys 1 to :data:`MAX_KEY_BYTES` bytes of UTF-8, values at most
  :data:`MAX_VALUE_BYTES` bytes;
* keys and values together at most :data:`MAX_TOTAL_BYTES` bytes.

Local metadata outside the bound is refused (``TypeError``/:class:`ConfigError`
naming the argument). Remote metadata is hostile input: :func:`read` never
raises; it keeps the pairs that fit and counts the ones it drops.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .errors import ConfigError

MAX_PAIRS = 16
MAX_KEY_BYTES = 64
MAX_VALUE_BYTES = 256
MAX_TOTAL_BYTES = 1024

Meta = Mapping[str, str]
EMPTY: Meta = {}


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _pair_problem(key: object, value: object) -> str | None:
    if not isinstance(key, str):
        return f"keys must be str, not {type(key).__name__}"
    if not isinstance(value, str):
        return f"value of {key[:MAX_KEY_BYTES]!r} must be a str, not {type(value).__name__}"
    if not 0 < _size(key) <= MAX_KEY_BYTES:
        return f"key {key[:MAX_KEY_BYTES]!r} must be 1-{MAX_KEY_BYTES} bytes of UTF-8"
    if _size(value) > MAX_VALUE_BYTES:
        return f"value of {key!r} is longer than {MAX_VALUE_BYTES} bytes of UTF-8"
    try:
        (key + value).encode("utf-8")
    except UnicodeEncodeError:
        return f"pair {key!r} is not valid UTF-8 text (lone surrogate)"
    return None


def validate(meta: object, name: str = "meta") -> dict[str, str]:
    """A copy of *meta*, checked against the bound; ``TypeError`` (not a
    mapping, or a key/value not a str) or :class:`ConfigError` naming *name*."""
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise TypeError(f"{name} must be a mapping of str to str, not {type(meta).__name__}")
    if len(meta) > MAX_PAIRS:
        raise ConfigError(f"{name} has {len(meta)} pairs; at most {MAX_PAIRS}")
    total = 0
    for key, value in meta.items():
        problem = _pair_problem(key, value)
        if problem is not None:
            exc = TypeError if not (isinstance(key, str) and isinstance(value, str)) else ConfigError
            raise exc(f"{name}: {problem}")
        total += _size(key) + _size(value)
    if total > MAX_TOTAL_BYTES:
        raise ConfigError(f"{name} is {total} bytes of keys and values; at most {MAX_TOTAL_BYTES}")
    return dict(meta)


def parse_pairs(pairs: Iterable[str], name: str = "--meta") -> dict[str, str]:
    """``["KEY=VALUE", ...]`` (the CLI's repeatable flag) as checked metadata.
    A key given twice keeps its last value. :class:`ConfigError` naming *name*."""
    out: dict[str, str] = {}
    for text in pairs:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise ConfigError(f"{name} wants KEY=VALUE, not {text!r}")
        out[key] = value
    return validate(out, name)


def read(value: object) -> tuple[dict[str, str], int]:
    """Metadata from the wire: (the pairs that fit the bound, how many were
    dropped). Never raises; anything not a JSON object counts as one drop."""
    if value is None:
        return {}, 0
    if not isinstance(value, dict):
        return {}, 1
    out: dict[str, str] = {}
    dropped = 0
    total = 0
    for key, val in value.items():
        if len(out) >= MAX_PAIRS or _pair_problem(key, val) is not None:
            dropped += 1
            continue
        size = _size(key) + _size(val)
        if total + size > MAX_TOTAL_BYTES:
            dropped += 1
            continue
        total += size
        out[key] = val
    return out, dropped
