"""Load test: N concurrent gradio_client calls to /compare; answered / refused / failed, latency, memory.

    python bench/load.py --model DIR --clients 16 [--requests 1] [--runs 3]   # starts its own server
    python bench/load.py --url http://127.0.0.1:7860/ --pid PID --clients 16  # an already running one

Only loopback addresses: the script refuses any other URL. Each client sends
`--requests` calls one after another; all clients start together. "refused"
means the server's bounded queue was full and the client was told to retry.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quant.timing import percentile  # noqa: E402

# Each client asks about its own year, so a mixed-up response would show as "wrong".
PASSAGE = "It has a famous library. Grace Hopper was born in Boston in {year}. Many people visit it every summer."
QUESTION = "When was Grace Hopper born?"


def year_for(i: int) -> str:
    return str(1801 + 7 * (i % 28))


def rss_mib(pid: int) -> float | None:
    try:
        import psutil

        p = psutil.Process(pid)
        return (p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))) / 2**20
    except Exception:
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, args=()) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", model, "--port", str(port), *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 300
    while time.time() < deadline:
        line = proc.stdout.readline()
        if "Running on local URL" in line:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # drain
            return proc
        if proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit("the app did not start")


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


def server_for(ap, model: str | None, url: str | None, app_args=()) -> tuple[str, subprocess.Popen | None]:
    """(url, process): a fresh `python app.py --model MODEL` on a free port, or the loopback `url` given."""
    if not (model or url) or (model and url):
        ap.error("give --model (start a server) or --url (use one)")
    if model:
        port = free_port()
        return f"http://127.0.0.1:{port}/", start_server(model, port, app_args)
    if not is_loopback(url):
        ap.error("this only targets this machine (127.0.0.0/8, localhost, ::1)")
    return url, None


def stop(proc: subprocess.Popen | None) -> None:
    if proc:
        proc.terminate()
        proc.wait(timeout=30)


def classify(exc: BaseException) -> str:
    msg = str(exc).lower()
    refused = ("queue is full", "too many", "already have", "at most")  # the line's caps answer at once, and say so
    return "refused" if any(r in msg for r in refused) else "failed"


def crowd(url: str, clients: int, calls: int, call, barrier_s: float = 180) -> tuple[list[tuple], float]:
    """`clients` visitors connect, then at the same moment (a barrier) each makes `calls` calls:
    `call(i, client)` -> (outcome, info); an exception is classified (refused / failed). Returns the
    (outcome, seconds, info) of every call and the wall time."""
    from gradio_client import Client

    results: list[tuple[str, float, Any]] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def visitor(i: int) -> None:
        try:
            client = Client(url, verbose=False)
        except Exception as exc:
            with lock:
                results.extend([("failed", 0.0, f"connect: {exc}")] * calls)
            start.abort()
            return
        try:
            start.wait(timeout=barrier_s)
        except threading.BrokenBarrierError:
            pass
        for _ in range(calls):
            t0 = time.perf_counter()
            try:
                outcome, info = call(i, client)
            except Exception as exc:  # queue full, timeout, server error
                outcome, info = classify(exc), str(exc)[:160]
            with lock:
                results.append((outcome, time.perf_counter() - t0, info))

    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - t0


def run_load(url: str, clients: int, requests: int, runs: int, timeout: float) -> dict:
    def call(i: int, client) -> tuple[str, str]:
        d = client.submit(PASSAGE.format(year=year_for(i)), QUESTION, runs, False, api_name="/compare").result(
            timeout=timeout)
        answer = d["results"][1]["answer"]
        return ("answered" if d["context"] == PASSAGE.format(year=year_for(i)) else "wrong",
                "own answer" if answer == year_for(i) else f"answer {answer!r} (model's own)")

    results, wall = crowd(url, clients, requests, call, barrier_s=120)
    answered = [r for r in results if r[0] == "answered"]
    secs = sorted(r[1] for r in answered)
    answers = dict(collections.Counter(r[2] for r in answered))
    return {
        "clients": clients, "requests_per_client": requests, "timed_runs": runs,
        "answered": len(answered), "refused": sum(r[0] == "refused" for r in results),
        "failed": sum(r[0] == "failed" for r in results),
        "wrong": sum(r[0] == "wrong" for r in results),  # got another visitor's passage back
        "p50_s": round(statistics.median(secs), 3) if secs else None,
        "p95_s": round(percentile(secs, 95), 3) if secs else None,
        "wall_s": round(wall, 2), "answers": answers,
        "errors": sorted({r[2] for r in results if r[0] != "answered"})[:5],
    }


def print_report(report: dict, as_json: bool) -> int:
    """Print a load / audience report (one JSON line, or a key per line); exit status 1 if any call failed."""
    if as_json:
        print(json.dumps(report))
    else:
        for k, v in report.items():
            print(f"{k:>20}: {v}")
    return 0 if report["failed"] == 0 and report["wrong"] == 0 else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="start a server with this model (hub id or local folder)")
    ap.add_argument("--url", help="use a running server (loopback only)")
    ap.add_argument("--pid", type=int, help="the running server's pid, for memory figures")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=1, help="calls per client, one after another")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per call")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per call")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if not 1 <= a.clients <= 256 or not 1 <= a.requests <= 100:
        ap.error("--clients must be 1-256 and --requests 1-100")
    url, proc = server_for(ap, a.model, a.url)
    pid = proc.pid if proc else a.pid
    try:
        before = rss_mib(pid) if pid else None
        report = run_load(url, a.clients, a.requests, a.runs, a.timeout)
        report["server_rss_mib"] = {"before": None if before is None else round(before, 1),
                                    "after": None if pid is None or rss_mib(pid) is None else round(rss_mib(pid), 1)}
    finally:
        stop(proc)
    return print_report(report, a.json)


if __name__ == "__main__":
    sys.exit(main())
