"""App start-up, cold and warm: seconds to a served page, and to the static INT8 card being ready.

    python bench/startup.py --model DIR [--repeat 2]

cold: an empty static-INT8 cache (the package is exported, calibrated and
compiled in the background while the page already serves); warm: the cache the
cold run filled (the package is loaded and re-checked). Each run is a fresh
`python app.py --model DIR --port P` process; the times come from the moments its
console lines appear.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def one(model: str, cache: str) -> dict:
    from load import free_port

    env = dict(os.environ, PYTHONUNBUFFERED="1", QUANTQA_CACHE=cache)
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", model, "--port", str(free_port())],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    out = {}
    try:
        for line in p.stdout:
            t = time.perf_counter() - t0
            if "Running on local URL" in line:
                out["page_s"] = round(t, 1)
            if "int8-static-cpu:" in line and ("built in" in line or "loaded from cache" in line):
                out["static_s"] = round(t, 1)
                out["static"] = "built" if "built in" in line else "loaded"
            if "int8-static-cpu unavailable" in line:
                out["static_s"], out["static"] = round(t, 1), "unavailable"
            if "page_s" in out and "static_s" in out:
                break
            if time.perf_counter() - t0 > 900:
                break
    finally:
        p.terminate()
        p.wait(timeout=30)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--repeat", type=int, default=2, help="warm runs (the cold run is one)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="quantqa-startup-") as cache:
        cold = one(a.model, cache)
        warm = [one(a.model, cache) for _ in range(a.repeat)]
    print(f"model: {a.model}")
    print(f"cold (empty cache): page served in {cold.get('page_s')} s; static INT8 {cold.get('static')} at "
          f"{cold.get('static_s')} s (the page served meanwhile; the static card said so)")
    print(f"warm ({a.repeat} runs): page served in {statistics.median(w['page_s'] for w in warm):.1f} s (median); "
          f"static INT8 {warm[0].get('static')} at {statistics.median(w['static_s'] for w in warm):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
