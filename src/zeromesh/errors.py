"""zeromesh's exceptions, under one base class.

Each also derives from the built-in exception a caller would expect
(``ValueError`` for bad input), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class ZeromeshError(Exception):
    """Base class of every exception zeromesh raises on purpose."""


class WireError(ZeromeshError, ValueError):
    """A discovery frame or endpoint that does not decode. ``reason`` is a
    short, stable tag (a counter key); the message says what was wrong."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class ConfigError(ZeromeshError, ValueError):
    """A bad argument or setting, found before anything starts."""


class SecurityError(ZeromeshError, ValueError):
    """Key material that is missing, malformed or unsafely stored; the message
    says which file and why."""
