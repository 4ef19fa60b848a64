"""Does a PUB need heartbeats of its own to drop a silent subscriber?

    .venv/bin/python benchmarks/pub_heartbeat_ttl.py pub-hb      # PUB pings too
    .venv/bin/python benchmarks/pub_heartbeat_ttl.py pub-no-hb   # only the SUB pings

A SUB child (heartbeats on: IVL 500 ms, TIMEOUT and TTL 1000 ms) subscribes to
a PUB here; the child is then SIGSTOPped (its kernel keeps the TCP connection)
and the PUB's monitor is watched for DISCONNECTED. Prints how long it took.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import zmq
from zmq.utils.monitor import recv_monitor_message

HB = {zmq.HEARTBEAT_IVL: 500, zmq.HEARTBEAT_TIMEOUT: 1000, zmq.HEARTBEAT_TTL: 1000}


def main(mode: str) -> int:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    if mode == "pub-hb":
        for opt, value in HB.items():
            pub.setsockopt(opt, value)
    mon = pub.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    pub.bind("tcp://127.0.0.1:0")
    sub_code = (
        "import time, zmq\n"
        "s = zmq.Context().socket(zmq.SUB)\n"
        "s.setsockopt(zmq.SUBSCRIBE, b'')\n"
        + "".join(f"s.setsockopt({opt}, {value})\n" for opt, value in HB.items())
        + f"s.connect({pub.getsockopt_string(zmq.LAST_ENDPOINT)!r})\n"
        "print('up', flush=True)\n"
        "time.sleep(30)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", sub_code], stdout=subprocess.PIPE, text=True)
    took = None
    try:
        assert child.stdout is not None
        child.stdout.readline()
        t_end = time.monotonic() + 2.0  # connected and heartbeating for a while
        while time.monotonic() < t_end:
            pub.send(b"x")
            pub.poll(10)
        os.kill(child.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 6.0:
            pub.send(b"x")  # makes the PUB process its commands
            if mon.poll(50) and recv_monitor_message(mon)["event"] == zmq.EVENT_DISCONNECTED:
                took = time.monotonic() - t0
                break
    finally:
        child.kill()
        child.wait(5.0)
        if child.stdout:
            child.stdout.close()
        pub.disable_monitor()
        mon.close()
        pub.close()
        ctx.term()
    print(
        f"{mode}: PUB saw DISCONNECTED {took:.2f} s after the subscriber stopped"
        if took is not None
        else f"{mode}: no DISCONNECTED within 6 s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "pub-no-hb"))
