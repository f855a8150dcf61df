"""App overhead per /compare call: client wall time minus the time spent in model calls.

    python bench/overhead.py --model DIR [--calls 10] [--runs 10]

Starts `python app.py` on a free loopback port, calls /compare from this
(separate) process with gradio_client, and compares each call's wall time with
the model time the server reports (`timing_s.model`: every warm-up and timed
forward of every variant). Overhead = validation, tokenization, decoding,
Gradio's queue and HTTP, JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import free_port, start_server  # noqa: E402

PASSAGE = json.loads((Path(__file__).resolve().parents[1] / "assets" / "examples.json").read_text())[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args(argv)
    from gradio_client import Client

    port = free_port()
    proc = start_server(a.model, port)
    try:
        c = Client(f"http://127.0.0.1:{port}/", verbose=False)
        c.predict(PASSAGE["passage"], PASSAGE["question"], 1, False, api_name="/compare")  # warm
        rows = []
        for _ in range(a.calls):
            t0 = time.perf_counter()
            d = c.predict(PASSAGE["passage"], PASSAGE["question"], a.runs, False, api_name="/compare")
            wall = time.perf_counter() - t0
            rows.append((wall, d["timing_s"]["model"], d["timing_s"]["compare"]))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    wall = statistics.median(r[0] for r in rows)
    model = statistics.median(r[1] for r in rows)
    inside = statistics.median(r[2] - r[1] for r in rows)
    print(json.dumps({"calls": a.calls, "timed_runs": a.runs, "median_wall_s": round(wall, 4),
                      "median_model_s": round(model, 4),
                      "median_overhead_s": round(wall - model, 4),
                      "overhead_pct_of_model": round(100 * (wall - model) / model, 2),
                      "of_which_in_compare_s": round(inside, 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
