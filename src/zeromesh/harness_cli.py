"""CLI entry points of the harness (filled in by the soak harness work)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: "argparse._SubParsersAction[Any]") -> None:
    return None
