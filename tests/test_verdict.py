"""From intervals to verdicts, and from verdicts to exit codes (what CI gates on)."""

from __future__ import annotations

import pytest

from zeromesh.harness import verdict
from zeromesh.harness.model import Exit
from zeromesh.harness.stats import Slope, wilson

pytestmark = pytest.mark.timeout(10)


def slope(lo: float, hi: float) -> Slope:
    return Slope((lo + hi) / 2, lo, hi, 0.0, 50, 0.0)


@pytest.mark.parametrize(
    ("lo", "hi", "token"),
    [
        (0.1, 0.3, "FLAT"),
        (-0.5, verdict.GROWTH_KB - 0.1, "FLAT"),
        (verdict.GROWTH_KB + 0.1, 14.0, "GROWS"),
        (verdict.GROWTH_KB - 0.5, verdict.GROWTH_KB + 0.5, "INCONCLUSIVE"),  # straddles the threshold: no guess
        (-3.0, 5.0, "INCONCLUSIVE"),
    ],
)
def test_memory_verdict_is_the_interval_against_the_threshold(lo: float, hi: float, token: str) -> None:
    v = verdict.memory(slope(lo, hi), 500)
    assert v.token == token and v.text.startswith(token)


def test_too_few_departures_is_inconclusive() -> None:
    assert verdict.memory(slope(0.1, 0.2), verdict.MIN_DEPARTURES - 1).token == "INCONCLUSIVE"
    assert verdict.memory(None, 500).token == "INCONCLUSIVE"


def test_hang_verdicts() -> None:
    assert verdict.hangs(wilson(0, 100)).token == "NO_HANG"
    assert verdict.hangs(wilson(1, 100)).token == "HANGS"
    assert verdict.hangs(wilson(0, 100), exit_hung=True).token == "HANGS"
    assert verdict.hangs(wilson(0, 0)).token == "INCONCLUSIVE"


@pytest.mark.parametrize(
    ("memory", "hang", "errors", "interrupted", "code"),
    [
        ("FLAT", "NO_HANG", False, False, Exit.OK),
        ("GROWS", "NO_HANG", False, False, Exit.FAIL),
        ("FLAT", "HANGS", False, False, Exit.FAIL),
        ("INCONCLUSIVE", "NO_HANG", False, False, Exit.INCONCLUSIVE),
        ("INCONCLUSIVE", "HANGS", False, False, Exit.FAIL),
        ("FLAT", "NO_HANG", True, False, Exit.FAIL),
        ("GROWS", "HANGS", False, True, Exit.INTERRUPTED),
    ],
)
def test_exit_codes(memory: str, hang: str, errors: bool, interrupted: bool, code: Exit) -> None:
    assert verdict.exit_code(memory, hang, errors=errors, interrupted=interrupted) == code


def test_matrix_exit_code_is_the_worst() -> None:
    assert verdict.worst([Exit.OK, Exit.OK]) == Exit.OK
    assert verdict.worst([Exit.OK, Exit.INCONCLUSIVE]) == Exit.INCONCLUSIVE
    assert verdict.worst([Exit.INCONCLUSIVE, Exit.FAIL, Exit.OK]) == Exit.FAIL
    assert verdict.worst([Exit.FAIL, Exit.INTERRUPTED]) == Exit.INTERRUPTED
