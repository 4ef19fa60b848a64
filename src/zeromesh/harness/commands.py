"""The command lines a soak runs: the long-lived peer under test, the
reference, and the churners. zeromesh's own programs run as
``python -m zeromesh <subcommand>`` (strings: the harness never imports the CLI)."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

from .model import SEED_REFERENCE_ARGS, Scenario, SoakConfig
from .slots import CommandFor


def memray_available() -> bool:
    return importlib.util.find_spec("memray") is not None


def fill(template: str, **kw: str) -> list[str]:
    """A ``--peer-cmd``-style template split as a shell would, placeholders filled."""
    return [part.format(**kw) for part in shlex.split(template)]


class Commands:
    def __init__(self, cfg: SoakConfig, scenario: Scenario, mode: str, out: Path, python: str) -> None:
        self.cfg, self.scenario, self.mode, self.out, self.python = cfg, scenario, mode, out, python

    def _zeromesh(self) -> list[str]:
        return [self.python, "-m", "zeromesh"]

    def _long_lived(self, proxy: str, extra: list[str] | tuple[str, ...]) -> list[str]:
        return ["peer", "--long-lived", "--events", "jsonl", "--proxy", proxy, *extra]

    def peer(self, proxy: str) -> tuple[list[str], bool]:
        """The long-lived peer under test, and whether it prints zeromesh events."""
        c = self.cfg
        if c.long_lived_cmd:
            return fill(c.long_lived_cmd, proxy=proxy, python=self.python) + c.long_lived_args, False
        head = self._zeromesh()
        if c.memray:
            out = str(self.out / "memray.bin")
            head = [self.python, "-m", "memray", "run", "--native", "-q", "-f", "-o", out, "-m", "zeromesh"]
        return head + self._long_lived(proxy, [*self.scenario.long_lived, *c.long_lived_args]), True

    def reference(self, proxy: str) -> tuple[list[str], bool] | None:
        """The reference long-lived peer (None with ``--reference none``)."""
        ref = self.cfg.reference
        if ref == "none":
            return None
        if ref == "seed":
            return self._zeromesh() + self._long_lived(proxy, SEED_REFERENCE_ARGS), True
        return fill(ref, proxy=proxy, python=self.python), False

    def churner(self, proxy: str) -> CommandFor:
        """uuid -> one lifetime's command (process mode) or one worker's (inproc)."""
        c = self.cfg
        secs = f"{c.lifetime:g}"
        if self.mode == "inproc":
            worker = [
                *self._zeromesh(),
                "churn-worker",
                "--seconds",
                secs,
                "--proxy",
                proxy,
                *self.scenario.churner,
                *c.peer_args,
            ]
            return lambda uid: worker
        template = c.peer_cmd
        if template:
            appended = [] if "{seconds}" in template else ["-seconds", secs]  # the seed's spelling

            def foreign(uid: str) -> list[str]:
                cmd = fill(template, seconds=secs, proxy=proxy, uuid=uid, python=self.python)
                return cmd + appended + c.peer_args

            return foreign

        def ours(uid: str) -> list[str]:
            return [
                *self._zeromesh(),
                "peer",
                "--seconds",
                secs,
                "--proxy",
                proxy,
                "--uuid",
                uid,
                *self.scenario.churner,
                *c.peer_args,
            ]

        return ours
