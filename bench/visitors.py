"""Visitors nobody designed for, against a running app: one alone, one greedy, one heavy.

    python bench/visitors.py --model DIR --scenario lone        # starts its own server (python app.py), waits --settle
    python bench/visitors.py --model DIR --scenario greedy
    python bench/visitors.py --model DIR --scenario evaluate
    python bench/visitors.py --url http://127.0.0.1:7860/ --scenario all   # a server already running (loopback)

lone:     one visitor asks 20 timed runs (`--lone-runs`) on an idle server: how many did it get?
greedy:   one client (one session) submits 40 distinct comparisons at once (`--greedy`); a second later 8 other
          visitors (`--visitors`) each submit one. Are they answered, and how long do they wait?
evaluate: one client starts an Evaluate of the 240 built-in questions; two seconds later 8 visitors each submit a
          comparison. Are they answered, how long do they wait, and does the evaluation complete?

Every request is distinct (a passage of the built-in real-text set, assets/realqa.json, with one of its
questions): nothing is shared or stored. Waits are from submit to result; "refused" is the server saying so
at once (the line's caps, "Queue is full"). With --model the script starts the app and waits --settle seconds
first, as a speaker would (static INT8 loads from its cache, the examples are measured).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from load import classify, server_for, stop  # noqa: E402

from quant.timing import percentile  # noqa: E402


def distinct_requests() -> list[tuple[str, str]]:
    """Every (passage, question) of the built-in set, interleaved so that neighbours have different passages."""
    data = json.loads((ROOT / "assets" / "realqa.json").read_text(encoding="utf-8"))["data"]
    paras = [p for a in data for p in a["paragraphs"]]
    width = max(len(p["qas"]) for p in paras)
    return [(p["context"], p["qas"][j]["question"]) for j in range(width) for p in paras if j < len(p["qas"])]


LINES: list = []  # (ran_s, model_s, runs) of each measurement a visitor got: where its turn's time went


def line_summary() -> dict | None:
    if not LINES:
        return None
    ran, model, runs = zip(*LINES)
    LINES.clear()
    return {"measured": len(ran), "ran_s_median": round(statistics.median(ran), 2),
            "model_s_median": round(statistics.median(model), 2), "runs": sorted(set(runs))}


def waits(outcomes: list[tuple[str, float, object]]) -> dict:
    ok = sorted(w for o, w, _ in outcomes if o == "answered")
    return {"answered": len(ok), "refused": sum(o == "refused" for o, _, _ in outcomes),
            "failed": sum(o == "failed" for o, _, _ in outcomes),
            "wait_s": {"median": round(statistics.median(ok), 1), "p95": round(percentile(ok, 95), 1),
                       "max": round(ok[-1], 1)} if ok else None,
            "errors": sorted({str(i)[:140] for o, _, i in outcomes if o != "answered"})[:3]}


def visit(url: str, asks: list[tuple[str, str]], runs: int, timeout: float, start: threading.Event | None = None,
          client=None) -> list[tuple[str, float, object]]:
    """Each ask from its own client (a fresh session), all submitted at once; or all from `client` (one session)."""
    from gradio_client import Client

    out: list = []
    lock = threading.Lock()
    lines = LINES

    def one(ask, c):
        try:
            c = c or Client(url, verbose=False)
            if start is not None:
                start.wait()
            t0 = time.perf_counter()
            job = c.submit(*ask, runs, False, api_name="/compare")
            d = job.result(timeout=timeout)
            res = ("answered" if d.get("context", "").strip() == ask[0].strip() else "wrong",
                   time.perf_counter() - t0, (d.get("runs") or {}).get("done"))
            if d.get("line_s"):
                with lock:
                    lines.append((d["line_s"]["ran"], d["timing_s"]["model"], res[2]))
        except Exception as exc:
            res = (classify(exc), time.perf_counter() - t0 if "t0" in locals() else 0.0, exc)
        with lock:
            out.append(res)

    threads = [threading.Thread(target=one, args=(a, client)) for a in asks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def lone(url: str, a) -> dict:
    ask = distinct_requests()[100]
    o = visit(url, [ask], a.lone_runs, a.timeout)[0]
    return {"scenario": "lone", "runs_asked": a.lone_runs, "runs_done": o[2] if o[0] == "answered" else None,
            "outcome": o[0], "wait_s": round(o[1], 1), "error": None if o[0] == "answered" else str(o[2])[:160]}


def greedy(url: str, a) -> dict:
    from gradio_client import Client

    asks = distinct_requests()
    hog = Client(url, verbose=False)
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(hog=visit(url, asks[:a.greedy], 10, a.timeout, client=hog)))
    t.start()
    time.sleep(1.0)
    others = visit(url, asks[a.greedy:a.greedy + a.visitors], 10, a.timeout)
    t.join()
    return {"scenario": "greedy", "greedy_requests": a.greedy, "greedy": waits(result["hog"]),
            "visitors": waits(others), "line": line_summary()}


def evaluate(url: str, a) -> dict:
    from gradio_client import Client

    ev: dict = {}

    def run_eval():
        t0 = time.perf_counter()
        try:
            d = Client(url, verbose=False).predict(None, a.questions, api_name="/evaluate")
            n = d[3]["results"][0]["n"] if isinstance(d, (list, tuple)) else None
            ev.update(outcome="completed", questions=n, seconds=round(time.perf_counter() - t0, 1))
        except Exception as exc:
            ev.update(outcome=classify(exc), seconds=round(time.perf_counter() - t0, 1), error=str(exc)[:160])

    t = threading.Thread(target=run_eval)
    t.start()
    time.sleep(2.0)
    others = visit(url, distinct_requests()[120:120 + a.visitors], 10, a.timeout)
    t.join()
    return {"scenario": "evaluate", "evaluation": ev, "visitors": waits(others), "line": line_summary()}


SCENARIOS = {"lone": lone, "greedy": greedy, "evaluate": evaluate}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="start `python app.py --model MODEL` on a free port")
    ap.add_argument("--url", help="use a running server instead (loopback only)")
    ap.add_argument("--app-args", default="", help="extra options for app.py (with --model)")
    ap.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    ap.add_argument("--lone-runs", type=int, default=20)
    ap.add_argument("--greedy", type=int, default=40, help="requests the greedy client sends at once")
    ap.add_argument("--visitors", type=int, default=8)
    ap.add_argument("--questions", type=int, default=240, help="evaluate: questions of the built-in set")
    ap.add_argument("--settle", type=float, default=90.0, help="with --model: seconds before the first scenario")
    ap.add_argument("--pause", type=float, default=20.0, help="seconds between scenarios (the line empties)")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds a visitor waits at most")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    url, proc = server_for(ap, a.model, a.url, a.app_args.split())
    reports, alive = [], False
    try:
        if proc:
            time.sleep(a.settle)
        for i, name in enumerate(SCENARIOS if a.scenario == "all" else [a.scenario]):
            if i:
                time.sleep(a.pause)
            r = SCENARIOS[name](url, a)
            reports.append(r)
            print(json.dumps(r) if a.json else "\n".join(f"{k:>18}: {v}" for k, v in r.items()), flush=True)
        alive = proc is None or proc.poll() is None
        print(json.dumps({"server_alive": alive}) if a.json else f"{'server_alive':>18}: {alive}", flush=True)
    finally:
        stop(proc)
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
