"""Latency with a busy neighbour: a variant quiet vs with CPU-bound competitors, per thread policy.

    python bench/contention.py --model DIR [--tokens 160] [--runs 20] [--competitors 1] [--variant int8-cpu]
           [--policies default,spin1000,passive,threads1,quantqa] [--repeat 2] [--json]

Hosted demos rarely have the cores to themselves. PyTorch's OpenMP threads
spin-wait at every barrier; when a core is taken by another process, the
thread on it is descheduled and the others spin until it comes back, so a
2-thread forward can get many times slower. Each policy runs in its own
process (OpenMP reads its environment when torch loads), which times the model
quiet, then with `--competitors` busy-loop processes (each bounded by a
deadline and killed at the end), then quiet and busy again; medians over both
phases of each kind. The app's policy is `quantqa`: libgomp's default spin, and
before each timed phase the thread count the app would choose for a measurement
(quant/threads.py `choose_threads`, the same call `compare` makes); the table
says how many threads each phase got.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POLICIES = {
    "default": {},  # libgomp's own: spin, then sleep
    "spin1000": {"GOMP_SPINCOUNT": "1000"},  # the app's earlier policy (now --thread-policy cap)
    "spin10000": {"GOMP_SPINCOUNT": "10000"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "threads1": {"QUANTQA_BENCH_THREADS": "1"},
    "quantqa": {"QUANTQA_THREAD_POLICY": "auto"},  # what app.py does: threads chosen per measurement
}

CHILD = r"""
import json, os, statistics, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
import quant.threads as qt
policy = qt.apply_policy()   # before torch loads: the app's own start-up path (no-op unless QUANTQA_THREAD_POLICY)
import torch
from quant import ModelSet
threads = int(os.environ.get("QUANTQA_BENCH_THREADS", "0")) or None
variant = sys.argv[6]
from quant import QuantConfig
comp = ModelSet(sys.argv[2], threads=threads, variants=(variant,), log=None, quant=QuantConfig(engine=sys.argv[7]))
tok = comp.tokenizer
n = int(sys.argv[3]); runs = int(sys.argv[4]); k = int(sys.argv[5])
g = torch.Generator().manual_seed(0)
ids = torch.randint(1000 if len(tok) > 2000 else 5, len(tok), (1, n), generator=g)
x = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
x = {k_: v for k_, v in x.items() if k_ in tok.model_input_names}
m = comp.model(variant)
used = {"quiet": [], "busy": []}
def timed(r, phase):
    choice = qt.choose_threads(comp.threads, comp.threads_fixed)  # what compare() does before its timed runs
    used[phase].append(choice.n)
    out = []
    with choice.applied(), torch.inference_mode():
        m(**x)
        for _ in range(r):
            t = time.perf_counter(); m(**x); out.append((time.perf_counter() - t) * 1e3)
    return out
def busy():
    pin = os.environ.get("QUANTQA_BENCH_PIN", "")
    code = ("import os, time\n" + (f"os.sched_setaffinity(0, {{{pin}}})\n" if pin else "") +
            "end = time.time() + 120\nwhile time.time() < end:\n    pass\n")
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(k)]
quiet, contended = [], []
for phase in range(2):
    quiet += timed(runs, "quiet")
    procs = busy()
    try:
        time.sleep(0.5)
        contended += timed(runs, "busy")
    finally:
        for p in procs:
            p.kill(); p.wait()
    time.sleep(0.5)
print(json.dumps({"threads": torch.get_num_threads(), "policy": policy.describe(), "used": used,
                  "quiet": statistics.median(quiet), "contended": statistics.median(contended)}))
"""


def run_policy(name: str, model: str, tokens: int, runs: int, competitors: int, pin: int | None = None,
               variant: str = "int8-cpu", engine: str = "onednn") -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOMP_", "OMP_", "QUANTQA_THREAD"))}
    env.update(POLICIES[name])
    if pin is not None:
        env["QUANTQA_BENCH_PIN"] = str(pin)
    p = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), model, str(tokens), str(runs), str(competitors),
                        variant, engine],
                       capture_output=True, text=True, env=env, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"{name}: {p.stderr.strip().splitlines()[-1:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="model folder or hub id (e.g. tests/tinymodels.py bert-base DIR)")
    ap.add_argument("--tokens", type=int, default=160)
    ap.add_argument("--runs", type=int, default=20, help="timed runs per phase (two quiet and two busy phases)")
    ap.add_argument("--competitors", type=int, default=1, help="busy-loop processes during the busy phases")
    ap.add_argument("--variant", default="int8-cpu", help="the variant to time: fp32-cpu, int8-cpu, int8-static-cpu")
    ap.add_argument("--engine", default=None, choices=("x86", "fbgemm", "onednn"),
                    help="quantized engine for every policy's process (default: chosen once here, as the app would: "
                         "each process choosing its own would compare different INT8 kernels, not policies)")
    ap.add_argument("--pin", type=int, default=None, metavar="CORE",
                    help="pin the competitors to this core (a neighbour that holds one core, the worst case)")
    ap.add_argument("--policies", default=",".join(POLICIES), help=f"comma-separated: {', '.join(POLICIES)}")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run the policies this many times, alternating (ABAB...), and take medians: processes "
                         "differ by 10-30%% on a shared machine, so one run per policy can mislead")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    names = [p.strip() for p in a.policies.split(",") if p.strip()]
    bad = [p for p in names if p not in POLICIES]
    if bad:
        ap.error(f"unknown policy {', '.join(bad)}; choose from {', '.join(POLICIES)}")
    engine = a.engine
    if engine is None:
        sys.path.insert(0, str(ROOT))
        from quant.quantize import choose_engine

        engine = choose_engine().engine
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for rep in range(a.repeat):
        for name in names:
            r = run_policy(name, a.model, a.tokens, a.runs, a.competitors, a.pin, a.variant, engine)
            runs[name].append(r)
            print(f"[contention] {name} ({rep + 1}/{a.repeat}): quiet {r['quiet']:.1f} ms, busy "
                  f"{r['contended']:.1f} ms", file=sys.stderr, flush=True)
    rows = []
    for name in names:
        q = statistics.median(r["quiet"] for r in runs[name])
        c = statistics.median(r["contended"] for r in runs[name])
        used = {ph: sorted({t for r in runs[name] for t in r["used"][ph]}) for ph in ("quiet", "busy")}
        rows.append({"name": name, "threads": runs[name][0]["threads"], "used": used, "policy": runs[name][0]["policy"],
                     "quiet": q, "contended": c, "ratio": c / q, "repeats": len(runs[name])})
    base = next((r["quiet"] for r in rows if r["name"] == "default"), None)
    if a.json:
        print(json.dumps({"model": a.model, "variant": a.variant, "tokens": a.tokens, "competitors": a.competitors,
                          "pin": a.pin, "rows": rows}))
        return 0
    pinned = f", pinned to core {a.pin}" if a.pin is not None else ""
    print(f"{a.variant} (quantized engine {engine} in every process), {a.tokens} tokens, {a.competitors} busy competitor(s){pinned} in the busy phases; medians of "
          f"{2 * a.runs} runs per cell" + (f", then the median over {a.repeat} alternating repeats" if a.repeat > 1
                                          else "") + "\n")
    print(f"{'policy':<10} {'threads quiet/busy':>18} {'quiet ms':>9} {'busy ms':>9} {'busy/quiet':>11} "
          f"{'quiet vs default':>17}  what")
    for r in rows:
        rel = f"{r['quiet'] / base:.2f}x" if base else "-"
        th = "/".join(",".join(map(str, r["used"][ph])) for ph in ("quiet", "busy"))
        print(f"{r['name']:<10} {th:>18} {r['quiet']:9.1f} {r['contended']:9.1f} {r['ratio']:10.2f}x "
              f"{rel:>17}  {r['policy']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
