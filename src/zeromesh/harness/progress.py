"""What a soak shows while it runs: a rich live panel on a terminal, a plain
line every :data:`timing.SOAK_LOG_INTERVAL` otherwise; and its last lines."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from .. import timing
from . import verdict
from .model import Sample, SoakConfig


class Progress:
    def __init__(self, status: Callable[[], dict[str, Any]], cfg: SoakConfig, mode: str, out: Path) -> None:
        self.status = status
        self.cfg = cfg
        self.mode = mode
        self.out = out
        self.live_on = sys.stdout.isatty() if cfg.live is None else cfg.live
        self.console = Console()
        self._live: Live | None = None
        self._last_line = -float("inf")

    def __enter__(self) -> None:
        c = self.cfg
        print(
            f"zeromesh soak: scenario {c.scenario}, reference {c.reference}, {c.churners} churners ({self.mode}), "
            f"lifetime {c.lifetime:g} s, pause {c.pause:g} s, warm-up {c.warmup:g} s, out {self.out}",
            flush=True,
        )
        if self.live_on:
            self._live = Live(self._table(), console=self.console, refresh_per_second=2)
            self._live.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.__exit__(None, None, None)
            self._live = None

    def _peer(self, samples: list[Sample], elapsed: float) -> str:
        if not samples:
            return "-"
        rss = f"{samples[-1].rss_kb / 1024:.1f} MB"
        if elapsed < self.cfg.warmup:
            return f"{rss}, warming up ({self.cfg.warmup - elapsed:.0f} s left)"
        sl, used = verdict.growth(samples, self.cfg.warmup)
        if sl is None:
            return f"{rss}, measuring"
        return f"{rss}, {sl.slope:.2f} KB/departure ({sl.lo:.2f}..{sl.hi:.2f}) over {used}"

    def _figures(self) -> dict[str, str]:
        st = self.status()
        c = self.cfg
        if st["draining"]:
            left = "finishing the running lifetimes"
        elif c.duration:
            left = f"{max(0.0, c.duration - st['elapsed']):.0f} s left"
        else:
            left = f"of {c.lifetimes} lifetimes"
        figures = {
            "elapsed": f"{st['elapsed']:.0f} s ({left})",
            "lifetimes": f"{st['lifetimes']} done, {st['running']} running",
            "departures": str(st["departures"]),
            "hangs": str(st["hangs"]),
        }
        for role, samples in st["peers"].items():
            figures[role] = self._peer(samples, st["elapsed"])
        return figures

    def _table(self) -> Table:
        t = Table(title=f"zeromesh soak: {self.cfg.scenario}", show_header=False)
        for k, v in self._figures().items():
            t.add_row(k, v)
        return t

    def update(self) -> None:
        if self._live is not None:
            self._live.update(self._table())
            return
        now = time.monotonic()
        if now - self._last_line >= timing.SOAK_LOG_INTERVAL:
            self._last_line = now
            print("  " + "; ".join(f"{k} {v}" for k, v in self._figures().items()), flush=True)

    def final(self, summary: dict[str, Any]) -> None:
        lines = [
            f"memory: {summary['verdict']['memory']}",
            f"hangs:  {summary['verdict']['hangs']}",
        ]
        ref = summary.get("reference")
        if ref:
            lines.append(f"reference ({ref['label']}): memory {ref['verdict']['memory']}")
        lines.append(f"artefacts: {summary['out']}/report.md (exit code {summary['exit_code']})")
        print("\n".join(lines), flush=True)
        for e in summary["errors"]:
            print(f"error: {e}", file=sys.stderr)
