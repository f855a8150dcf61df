"""A room clicks at once: N concurrent visitors call /compare, on the same example or on distinct passages.

    python bench/audience.py --model DIR --clients 50 --scenario same       # starts its own server (python app.py)
    python bench/audience.py --model DIR --clients 24 --scenario distinct
    python bench/audience.py --url http://127.0.0.1:7860/ --clients 50      # a server already running (loopback)

same: every visitor sends the app's first example (assets/examples.json) with the
default options, as a room does after the speaker shows the link. distinct: visitor
i sends passage i of the built-in real-text set (assets/realqa.json) with its first
question. All visitors connect first, then submit at the same moment (a barrier);
the wait is from submit to result. Printed: answered / refused / failed, the wait
(min, median, p95, max), how many answers were shared rather than measured for that
visitor, and the timed runs the answers got. With --model the script starts the app
and waits --settle seconds first (the examples are measured in the background once
the model is ready: the speaker opens the page before the audience does).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from load import crowd, print_report, server_for, stop  # noqa: E402

from quant.timing import percentile  # noqa: E402


def requests_for(scenario: str, clients: int) -> list[tuple[str, str]]:
    if scenario == "same":
        ex = json.loads((ROOT / "assets" / "examples.json").read_text(encoding="utf-8"))[0]
        return [(ex["passage"], ex["question"])] * clients
    data = json.loads((ROOT / "assets" / "realqa.json").read_text(encoding="utf-8"))["data"]
    paras = [p for a in data for p in a["paragraphs"]]
    if clients > len(paras):
        raise SystemExit(f"--scenario distinct has {len(paras)} passages; use at most that many clients")
    return [(p["context"], p["qas"][0]["question"]) for p in paras[:clients]]


def run_audience(url: str, clients: int, scenario: str, runs: int, timeout: float) -> dict:
    asks = requests_for(scenario, clients)

    def call(i: int, client) -> tuple[str, dict]:
        d = client.submit(*asks[i], runs, False, api_name="/compare").result(timeout=timeout)
        return ("answered" if d.get("context", "").strip() == asks[i][0].strip() else "wrong"), d

    results, wall = crowd(url, clients, 1, call)
    answered = [r for r in results if r[0] == "answered"]
    waits = sorted(r[1] for r in answered)
    shared = [r[2].get("shared") for r in answered if isinstance(r[2], dict) and r[2].get("shared")]
    runs_done = collections.Counter(
        (r[2].get("runs") or {}).get("done") if isinstance(r[2].get("runs"), dict)
        else next((v["latency_ms"]["runs"] for v in r[2]["results"] if v.get("latency_ms")), None)
        for r in answered)
    measured = [r[2] for r in answered if isinstance(r[2], dict) and r[2].get("line_s")]
    line = None
    if measured:  # where a measurement's time goes: the model, the rest of compare(), and the rest of its turn
        ran = [d["line_s"]["ran"] for d in measured]
        model = [d["timing_s"]["model"] for d in measured]
        line = {"measured": len(measured), "ran_s_median": round(statistics.median(ran), 3),
                "model_s_median": round(statistics.median(model), 3),
                "compare_s_median": round(statistics.median(d["timing_s"]["compare"] for d in measured), 3),
                "busy_share_of_wall": round(sum(ran) / wall, 3)}
    return {
        "scenario": scenario, "clients": clients, "timed_runs_asked": runs,
        "answered": len(answered), "refused": sum(r[0] == "refused" for r in results),
        "failed": sum(r[0] == "failed" for r in results), "wrong": sum(r[0] == "wrong" for r in results),
        "wait_s": {"min": round(waits[0], 2), "median": round(statistics.median(waits), 2),
                   "p95": round(percentile(waits, 95), 2), "max": round(waits[-1], 2)} if waits else None,
        "shared": {"count": len(shared), "joined": sum(bool(s.get("joined")) for s in shared),
                   "for": dict(collections.Counter(s["for"] for s in shared))},
        "runs_done": {str(k): v for k, v in sorted(runs_done.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))},
        "wall_s": round(wall, 2), "line": line,
        "errors": sorted({r[2] for r in results if r[0] != "answered" and isinstance(r[2], str)})[:3],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="start `python app.py --model MODEL` on a free port")
    ap.add_argument("--url", help="use a running server instead (loopback only)")
    ap.add_argument("--app-args", default="", help="extra options for app.py (with --model)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--scenario", choices=("same", "distinct"), default="same")
    ap.add_argument("--runs", type=int, default=10, help="timed runs asked per visitor (the page's default: 10)")
    ap.add_argument("--settle", type=float, default=90.0,
                    help="with --model: seconds between the server starting and the room clicking (default 90)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds a visitor waits at most")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if not 1 <= a.clients <= 256:
        ap.error("--clients must be 1-256")

    url, proc = server_for(ap, a.model, a.url, a.app_args.split())
    try:
        if proc:
            time.sleep(a.settle)
        report = run_audience(url, a.clients, a.scenario, a.runs, a.timeout)
    finally:
        stop(proc)
    return print_report(report, a.json)


if __name__ == "__main__":
    sys.exit(main())
