"""Figures for docs/membership.md: how fast forged frames are undone, how fast
C peers hear of a crash, what an insider's forgeries do under CURVE, and how
fast a partial partition heals.

    python benchmarks/membership.py --trials 50 --kills 10 --partitions 3 --json docs/membership.json

* refutation: a mesh of ``--mesh`` in-process peers and a directory proxy; an
  attacker's PUB on the proxy's XSUB sends a ``D`` for a live peer at its
  current incarnation (accepted by everyone, as a real ``D`` would be), or a
  ``C`` for its uuid at the attacker's endpoint and a higher incarnation.
  Measured: the send to the moment every table (each observer's and the
  proxy's directory) lists the victim at its true endpoint again.
* obituary: 3 emulated C peers (``zeromesh.testing.cpeer``) and a ``zeromesh
  peer`` child, SIGKILLed; the kill to the moment no C peer lists it.
* insider: a CURVE mesh with an allow-list; an allowed member forges ``D``
  and ``C`` frames for another member's uuid; leave events anywhere.
* partial partition (root only): network namespaces, a blackhole route each
  way between two hosts that both still reach the proxy; the route removal to
  the last ``join`` back.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from zeromesh import Peer, PeerEvent, Proxy, ext, wire
from zeromesh.security import Security, keygen
from zeromesh.testing.cpeer import CPeer
from zeromesh.testing.netns import HostMesh, Topology, available, spawn_zeromesh
from zeromesh.wire import Command, Message


def pct(xs: list[float]) -> dict[str, Any]:
    if not xs:
        return {"n": 0}
    s = sorted(xs)
    return {
        "n": len(s),
        "p50": s[len(s) // 2],
        "p99": s[min(len(s) - 1, round(0.99 * (len(s) - 1)))],
        "max": s[-1],
        "mean": statistics.fmean(s),
    }


def wait(cond: Callable[[], bool], timeout: float, interval: float = 0.001) -> float | None:
    """Seconds until *cond* held (polled), or None after *timeout*."""
    t0 = time.monotonic()
    while True:
        if cond():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            return None
        time.sleep(interval)  # sleep: polling interval of a bounded wait


class Attacker:
    def __init__(self, proxy: Proxy, security: Security | None = None) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        if security is not None:
            security.apply_client(self.pub)
        self.pub.connect(proxy.xsub_endpoint)
        probe = wire.encode(Message(Command.WELCOME, "00000000-0000-4000-8000-00000000dead", "tcp://127.0.0.1:9"))
        base = proxy.bad["foreign-welcome"]

        def through() -> bool:
            self.pub.send(probe)
            return proxy.bad["foreign-welcome"] > base

        if wait(through, 10.0, 0.02) is None:
            raise RuntimeError("attacker never reached the proxy")

    def send(self, msg: Message) -> None:
        self.pub.send(wire.encode(msg))

    def close(self) -> None:
        self.pub.close()
        self.ctx.term()


def _restored(proxy: Proxy, victim: Peer, observers: list[Peer], ep: str, before: int) -> bool:
    """The victim refuted, and every table lists it at its true endpoint."""
    assert victim.protocol is not None
    entry = proxy.directory.entries.get(victim.uuid)
    return (
        victim.protocol.incarnation > before
        and entry is not None
        and entry.endpoint == ep
        and all(o.peers().get(victim.uuid) == ep for o in observers)
    )


def _listed_everywhere(uuid: str, proxy: Proxy, cpeers: list[CPeer]) -> bool:
    entry = proxy.directory.entries.get(uuid)
    return all(uuid in c.table() for c in cpeers) and entry is not None and entry.probed


def _listed_nowhere(uuid: str, cpeers: list[CPeer]) -> bool:
    return not any(uuid in c.table() for c in cpeers)


def refutation(mesh: int, trials: int) -> dict[str, Any]:
    out: dict[str, list[float]] = {"forged D": [], "hijack C": []}
    failed = {"forged D": 0, "hijack C": 0}
    with Proxy("tcp://127.0.0.1:0") as proxy:
        peers = [Peer(proxy.endpoint).start() for _ in range(mesh)]
        try:
            want = {p.uuid for p in peers}
            if wait(lambda: all(set(p.peers()) == want for p in peers), 30.0) is None:
                raise RuntimeError("mesh did not form")
            attacker = Attacker(proxy)
            fake = attacker.ctx.socket(zmq.XPUB)
            fake.setsockopt(zmq.LINGER, 0)
            fake.bind("tcp://127.0.0.1:0")
            fake_ep = fake.getsockopt_string(zmq.LAST_ENDPOINT)
            try:
                for t in range(trials):
                    victim = peers[t % mesh]
                    observers = [p for p in peers if p is not victim]
                    assert victim.protocol is not None and victim.endpoint is not None
                    ep, inc = victim.endpoint, victim.protocol.incarnation
                    for kind in ("forged D", "hijack C"):
                        if kind == "forged D":
                            msg = Message(Command.DISCONNECT, victim.uuid, ep, {"i": victim.protocol.incarnation})
                        else:
                            fake.setsockopt(zmq.XPUB_WELCOME_MSG, ext.encode_proof(victim.uuid, fake_ep, inc + 9))
                            msg = Message(Command.CONNECT, victim.uuid, fake_ep, {"i": victim.protocol.incarnation + 9})
                        before = victim.protocol.incarnation
                        attacker.send(msg)

                        back = functools.partial(_restored, proxy, victim, observers, ep, before)
                        took = wait(back, 10.0)
                        if took is None:
                            failed[kind] += 1
                        else:
                            out[kind].append(took)
            finally:
                fake.close()
                attacker.close()
        finally:
            for p in peers:
                p.leave()
            for p in peers:
                p.stop(10.0)
    return {k: {**pct(v), "failed": failed[k]} for k, v in out.items()} | {"mesh": mesh}


def obituary(kills: int) -> dict[str, Any]:
    took: list[float] = []
    failed = 0
    with Proxy("tcp://127.0.0.1:0") as proxy:
        cpeers = [CPeer(proxy.endpoint).start() for _ in range(3)]
        try:
            for _ in range(kills):
                child = spawn_zeromesh("peer", "--proxy", proxy.endpoint)
                try:
                    ready = child.wait(lambda e: e.get("event") == "ready", 30.0)
                    if ready is None:
                        failed += 1
                        continue
                    uuid = str(ready["uuid"])
                    seen = wait(functools.partial(_listed_everywhere, uuid, proxy, cpeers), 30.0, 0.01)
                    if seen is None:
                        failed += 1
                        continue
                    child.kill()
                    t = wait(functools.partial(_listed_nowhere, uuid, cpeers), 30.0)
                    if t is None:
                        failed += 1
                    else:
                        took.append(t)
                finally:
                    child.close()
        finally:
            for c in cpeers:
                c.leave()
            for c in cpeers:
                c.stop()
    return {**pct(took), "failed": failed, "c_peers": 3}


def insider(forgeries: int) -> dict[str, Any]:
    leaves: list[PeerEvent] = []
    lock = threading.Lock()

    def on_event(ev: PeerEvent) -> None:
        if ev.kind == "leave":
            with lock:
                leaves.append(ev)

    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "mesh"
        keygen(keys, 4)

        def member(k: int) -> Security:
            return Security.from_dir(keys / f"member-{k}", keys / "allow")

        with Proxy(security=Security.from_dir(keys / "proxy", keys / "allow")) as proxy:
            peers = [Peer(proxy.endpoint, security=member(k), on_event=on_event).start() for k in (1, 2, 3)]
            try:
                want = {p.uuid for p in peers}
                if wait(lambda: all(set(p.peers()) == want for p in peers), 30.0) is None:
                    raise RuntimeError("secured mesh did not form")
                attacker = Attacker(proxy, member(4))
                try:
                    victim = peers[0]
                    assert victim.endpoint is not None and victim.protocol is not None
                    sent = 0
                    for n in range(forgeries):
                        i = victim.protocol.incarnation + n
                        for msg in (
                            Message(Command.DISCONNECT, victim.uuid, victim.endpoint, {"i": i}),
                            Message(Command.DISCONNECT, victim.uuid, victim.endpoint, {"i": i, "o": 1}),
                            Message(Command.CONNECT, victim.uuid, "tcp://127.0.0.1:9", {"i": i + 1, "v": 1}),
                        ):
                            attacker.send(msg)
                            sent += 1
                    wait(lambda: proxy.directory.dropped["foreign-key"] >= sent, 10.0)
                    time.sleep(1.0)  # sleep: let any late effect show (there must be none)
                    dropped = proxy.directory.dropped["foreign-key"]
                    refuted = victim.protocol.counters.refuted
                    with lock:  # before the members leave (their own leaves are not the forgeries')
                        forged_leaves = len(leaves)
                finally:
                    attacker.close()
            finally:
                for p in peers:
                    p.leave()
                for p in peers:
                    p.stop(10.0)
    return {
        "forged frames": sent,
        "dropped by the proxy (foreign key)": dropped,
        "leave events": forged_leaves,
        "victim refutations needed": refuted,
    }


def partial_partition(trials: int) -> dict[str, Any]:
    ok, why = available()
    if not ok:
        return {"skipped": why}
    heal: list[float] = []
    detect: list[float] = []
    failed = 0
    for _ in range(trials):
        with Topology(["px", "a", "b"], prefix="zmmb") as topo:
            mesh = HostMesh(topo, per_host=2, start_timeout=30.0)
            try:
                if wait(mesh.full, 30.0, 0.05) is None:
                    failed += 1
                    continue

                def route(host: str, other: str, verb: str) -> None:
                    r = topo.run(host, ["ip", "route", verb, "blackhole", f"{topo.addr(other)}/32"])
                    if r.returncode != 0:
                        raise RuntimeError(r.stderr)

                marks = mesh.marks()
                cut = time.time()
                route("a", "b", "add")
                route("b", "a", "add")
                gone = mesh.across("leave", marks, 10.0)
                if any(len(g) != 2 for g in gone):
                    failed += 1
                else:
                    detect.append(max(float(e["t"]) for g in gone for e in g.values()) - cut)
                time.sleep(3.0)  # sleep: the partition lasts a while
                marks = mesh.marks()
                healed = time.time()
                route("a", "b", "del")
                route("b", "a", "del")
                back = mesh.across("join", marks, 15.0)
                if any(len(g) != 2 for g in back):
                    failed += 1
                else:
                    heal.append(max(float(e["t"]) for g in back for e in g.values()) - healed)
            finally:
                mesh.close()
    return {"detect (cut -> last expired)": pct(detect), "heal (route back -> last join)": pct(heal), "failed": failed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mesh", type=int, default=8)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--forgeries", type=int, default=20)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()
    res: dict[str, Any] = {"load_average_start": os.getloadavg()}
    res["refutation"] = refutation(a.mesh, a.trials)
    print(json.dumps({"refutation": res["refutation"]}), flush=True)
    res["obituary"] = obituary(a.kills)
    print(json.dumps({"obituary": res["obituary"]}), flush=True)
    res["insider"] = insider(a.forgeries)
    print(json.dumps({"insider": res["insider"]}), flush=True)
    if a.partitions:
        res["partial partition"] = partial_partition(a.partitions)
        print(json.dumps({"partial partition": res["partial partition"]}), flush=True)
    res["load_average_end"] = os.getloadavg()
    res["versions"] = {"pyzmq": zmq.pyzmq_version(), "libzmq": zmq.zmq_version()}
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
