"""The deterministic ctx_term hang, its fix, and stack capture of a hung process."""

from __future__ import annotations

import selectors
import subprocess
import time

import pytest

from zeromesh.harness import stacks

pytestmark = pytest.mark.timeout(40)

#: How long a hang-demo that has said it calls term() is given to prove it is
#: stuck: term() returns within milliseconds when it does not hang.
STUCK_AFTER = 2.0
#: Bound on the interpreter start and the demo's set-up on a loaded machine.
START_TIMEOUT = 30.0


def _wait_for_term(p: subprocess.Popen[bytes]) -> None:
    """Read stderr until the demo says it calls term() (bounded): the stacks are
    taken from a process in term(), not from one still importing."""
    assert p.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(p.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while time.monotonic() < deadline:
            if sel.select(max(0.0, deadline - time.monotonic())):
                line = p.stderr.readline()
                if b"term()" in line or not line:
                    return
        raise AssertionError(f"hang-demo did not reach term() within {START_TIMEOUT:g} s")
    finally:
        sel.close()


def _demo(zeromesh_exe: list[str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*zeromesh_exe, "hang-demo", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.parametrize("kind", ["pub", "push"])
def test_early_linger_terminates(zeromesh_exe: list[str], kind: str) -> None:
    p = _demo(zeromesh_exe, "--early-linger", "--socket", kind)
    _, err = p.communicate(timeout=15)
    assert p.returncode == 0
    assert b"term() returned" in err


@pytest.mark.parametrize("kind", ["pub", "push"])
def test_late_linger_hangs_in_ctx_term_and_stacks_show_it(zeromesh_exe: list[str], kind: str) -> None:
    p = _demo(zeromesh_exe, "--socket", kind)
    try:
        _wait_for_term(p)
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(STUCK_AFTER)
        tool, text = stacks.capture(p.pid)
        assert tool in ("py-spy", "gdb"), text[:300]  # the soak extra brings py-spy
        assert "zmq_ctx_term" in text
        if tool == "py-spy":
            assert "hangdemo.py" in text  # the Python frames too
    finally:
        p.kill()
        p.communicate(timeout=10)
    assert p.returncode == -9


def test_capture_without_tools_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stacks, "find_tool", lambda name: None)
    tool, text = stacks.capture(1)
    assert tool == "none"
    assert "py-spy" in text and "gdb" in text
