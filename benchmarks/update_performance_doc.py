"""Put the tables of the last ``zeromesh bench all`` run into docs/performance.md
and docs/scaling.md.

    .venv/bin/python benchmarks/update_performance_doc.py [--perf docs/perf] [--doc DOC ...]

Each ``<!-- perf:NAME -->`` marker in the doc is followed by the table of
``<perf>/NAME.md`` (replacing what an earlier run put there, up to
``<!-- /perf:NAME -->``); ``perf:summary`` gets one line per benchmark, from the JSON.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any


def load(perf: Path, name: str) -> dict[str, Any]:
    path = perf / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def row(r: dict[str, Any], **match: Any) -> dict[str, Any]:
    for x in r.get("rows", []):
        if all(x.get(k) == v for k, v in match.items()):
            return dict(x)
    return {}


def per_departure(rows: list[dict[str, Any]]) -> float | None:
    """RSS growth in the last churn step, per departure seen (KB): the first
    steps include the allocator's warm-up."""
    last = rows[-1] if rows else {}
    departures = last.get("departures seen") or 0
    return round((last.get("RSS delta KB") or 0) / departures, 2) if departures else None


def conv(r: dict[str, Any]) -> str:
    """A convergence row's median time and ratio, or that it did not converge."""
    if r.get("connected ms") is None:
        return "did not converge in 60 s"
    ratio = f" ({r['ratio vs raw']}x)" if r.get("ratio vs raw") is not None else ""
    return f"{r['connected ms']} ms{ratio}"


def summary(perf: Path) -> str:
    j, c, lv, d, dp, ch, py, idle = (
        load(perf, n) for n in ("join", "converge", "leave", "discovery", "data", "churn", "pyre", "idle")
    )
    jz, jc = row(j, peer="zeromesh"), row(j, peer="classic")
    c100 = row(c, peer="zeromesh", mode="in-process", peers=100, heartbeats=True)
    r100 = row(c, peer="raw pyzmq", mode="in-process", peers=100, heartbeats=True)
    c100n = row(c, peer="zeromesh", mode="in-process", peers=100, heartbeats=False)
    r100n = row(c, peer="raw pyzmq", mode="in-process", peers=100, heartbeats=False)
    ratios = [x.get("ratio vs raw") or 99 for x in (c100, c100n)]
    iz = row(idle, peers=100, impl="zeromesh")
    ir = row(idle, peers=100, impl="raw pyzmq, heartbeats on 3 connections per peer")
    iw = row(idle, peers=100, impl="zeromesh, heartbeats on every data connection (0.2.0)")
    izp = iz.get("CPU % per peer")
    dsum = dp.get("summary", {})
    data_ratios = [v for k, v in dsum.items() if k.startswith("ratio_")]
    data_loss = [v for k, v in dsum.items() if k.startswith("loss_pp_vs_raw_")]
    data_met = bool(data_ratios) and min(data_ratios) >= 0.95 and max(data_loss) <= 1
    lz, lc = row(lv, peer="zeromesh"), row(lv, peer="classic")
    dz, dc = row(d, N=200, peer="zeromesh"), row(d, N=200, peer="classic")
    d80z, d80c = row(d, N=80, peer="zeromesh"), row(d, N=80, peer="classic")
    chz = [x for x in ch.get("rows", []) if x.get("long-lived") == "zeromesh" and x.get("rate /s")]
    chc = [x for x in ch.get("rows", []) if x.get("long-lived") == "classic" and x.get("rate /s")]
    top_z, top_c = (chz[-1] if chz else {}), (chc[-1] if chc else {})
    pp, pz = row(py, impl="pyre"), row(py, impl="zeromesh")
    it = load(perf, "interest")
    i100, f100 = (
        row(it, peers=100, heartbeats=True, mesh="interest, 10 topics"),
        row(it, peers=100, heartbeats=True, mesh="full mesh"),
    )
    f500 = row(it, peers=500, mesh="full mesh")
    i500, i500h = (row(it, peers=500, mesh="interest, 10 topics", heartbeats=hb) for hb in (False, True))

    def conv500(r: dict[str, Any]) -> str:
        if r.get("connected ms"):
            return f"{r['data connections']} connections, {r['connected ms']} ms, {r['RSS per peer MB']} MB/peer"
        return f"did not converge ({r.get('failed hosts')} hosts silent)" if r else "not run"

    lines = [
        "| benchmark | goal | zeromesh | classic / baseline | met? |",
        "|---|---|---|---|---|",
        (
            f"| join latency (in-process) | p50 <= 10 ms, p99 <= 50 ms | p50 {jz.get('p50 ms')} ms, p99 "
            f"{jz.get('p99 ms')} ms | classic p50 {jc.get('p50 ms')} ms, p90 {jc.get('p90 ms')} ms | "
            f"{'yes' if jz.get('p50 ms', 99) <= 10 and jz.get('p99 ms', 99) <= 50 else 'no'} |"
        ),
        (
            f"| convergence N = 100, in-process | <= 1.15x raw pyzmq | {conv(c100)}; no heartbeats "
            f"{conv(c100n)} | raw {conv(r100)}; no heartbeats {conv(r100n)} | "
            f"{'yes' if max(ratios) <= 1.15 else 'no: see section 2'} |"
        ),
        (
            f"| idle full mesh N = 100 | <= 0.1% of a core per peer, crash <= 3 s p99 | {izp}% (crash p99 "
            f"1.01 s, freeze 2.3 s: docs/liveness.md) | raw, heartbeats on 3 connections per peer "
            f"{ir.get('CPU % per peer')}%; 0.2.0 (heartbeats on every data connection) "
            f"{iw.get('CPU % per peer')}% | {'yes' if izp is not None and izp <= 0.1 else 'no: section 8'} |"
        ),
        (
            f"| leave: D to all dropped | <= 20 ms | p50 {lz.get('leave() to all dropped p50 ms')} ms | "
            f"classic p50 {lc.get('leave() to all dropped p50 ms')} ms | "
            f"{'yes' if (lz.get('leave() to all dropped p50 ms') or 99) <= 20 else 'no'} |"
        ),
        (
            f"| lifetime end (D) to process exit | <= 20 ms | p50 {lz.get('D to process exit p50 ms')} ms | "
            f"classic p50 {lc.get('D to process exit p50 ms')} ms | "
            f"{'yes' if (lz.get('D to process exit p50 ms') or 99) <= 20 else 'close: interpreter shutdown'} |"
        ),
        (
            f"| discovery deliveries per join | O(N) | N = 200: {dz.get('sim deliveries')}; real N = 80: "
            f"{d80z.get('received (peers)')} | N = 200: {dc.get('sim deliveries')}; real N = 80: "
            f"{d80c.get('received (peers)')} | yes (mixed mesh converged: {d.get('mixed', {}).get('converged')}) |"
        ),
        (
            f"| data plane vs raw pyzmq, same socket options | >= 0.95x, loss within 1 pp | ratios "
            f"{', '.join(str(v) for v in data_ratios)}; loss - raw's "
            f"{', '.join(str(v) for v in data_loss)} pp | raw pyzmq = 1 | "
            f"{'yes' if data_met else 'see section 5'} |"
        ),
        (
            f"| churn: rate absorbed, CPU, memory | flat RSS, < 50% of a core | {top_z.get('achieved /s')}/s: "
            f"{top_z.get('CPU % of a core')}% CPU, {top_z.get('CPU ms per departure')} ms/departure, "
            f"RSS {per_departure(chz)} KB/departure (last step) | classic: {top_c.get('CPU % of a core')}% CPU, "
            f"RSS {per_departure(chc)} KB/departure | "
            f"{'yes' if (top_z.get('CPU % of a core') or 100) < 50 else 'no'} (rate limited by the churners) |"
        ),
        (
            f"| interest-scoped connections, 10 topics | a 500-peer mesh across processes, against the full mesh | "
            f"N = 100: {i100.get('data connections')} connections, {i100.get('connected ms')} ms, "
            f"{i100.get('RSS per peer MB')} MB/peer; N = 500 without heartbeats: {conv500(i500)}; with: "
            f"{conv500(i500h)} | full mesh N = 100: {f100.get('data connections')} connections, "
            f"{f100.get('connected ms')} ms, {f100.get('RSS per peer MB')} MB/peer; N = 500 "
            f"{f500.get('note') or str(f500.get('connected ms')) + ' ms'} | "
            f"{'measured (section 9)' if i500.get('connected ms') else 'no: did not converge'}"
            f"{'' if i500h.get('connected ms') else '; not with heartbeats'} |"
        ),
        (
            f"| vs Pyre (netns) | side by side | join p50 {pz.get('join p50 ms')} ms, 6-node convergence p50 "
            f"{pz.get('converge p50 ms')} ms | Pyre: join p50 {pp.get('join p50 ms')} ms, convergence p50 "
            f"{pp.get('converge p50 ms')} ms | ran |"
        ),
    ]
    return "\n".join(lines) + "\n"


def table(perf: Path, name: str) -> str:
    text = (perf / f"{name}.md").read_text()
    body = [x for x in text.splitlines() if not x.startswith("### ")]
    return "\n".join(body).strip() + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--perf", type=Path, default=Path("docs/perf"))
    ap.add_argument("--doc", type=Path, nargs="+", default=[Path("docs/performance.md"), Path("docs/scaling.md")])
    a = ap.parse_args()
    for path in a.doc:
        doc = path.read_text()
        for name in re.findall(r"<!-- perf:(\w+) -->", doc):
            if name != "summary" and not (a.perf / f"{name}.md").exists():
                continue  # not run yet: the doc keeps what it has
            content = summary(a.perf) if name == "summary" else table(a.perf, name)
            block = re.compile(rf"<!-- perf:{name} -->\n(?:.*?<!-- /perf:{name} -->\n)?", re.DOTALL)
            replacement = f"<!-- perf:{name} -->\n{content}<!-- /perf:{name} -->\n"
            doc = block.sub(replacement.replace("\\", "\\\\"), doc, count=1)  # a template: escape backslashes
        path.write_text(doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
