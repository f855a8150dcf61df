"""Static INT8 packages (.pt2) timed in paired rounds: the first is the baseline, each other is a ratio to it.

    ROUNDS=40 PER=3 SEQ=160,384 python bench/paired_packages.py --model DIR BASE.pt2 OTHER.pt2 ...

Each round runs every package PER times (the order rotated between rounds) and takes each one's median; a round's
ratio is a package's median over the baseline's in that round, so a noisy neighbour that slows a round slows both
sides of its ratio. Printed: the median ratio over ROUNDS rounds, its quartiles, and the ratio of the fastest
rounds. Packages are named by their folder (bench/split_cost.py builds one folder per forced plan).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="the model the packages were built from (its tokenizer, shape)")
    ap.add_argument("packages", nargs="+")
    a = ap.parse_args(argv)
    from quant.threads import apply_policy

    apply_policy("auto")
    warnings.simplefilter("ignore")
    import torch

    from quant import ModelSet
    from quant.bench import synthetic_inputs
    from quant.env import _cpuinfo
    from quant.static import INPUT_NAMES, _load_runner

    rounds, per = int(os.environ.get("ROUNDS", 40)), int(os.environ.get("PER", 3))
    ms = ModelSet(a.model, variants=("fp32-cpu",), log=None)
    tok = ms.tokenizer
    names = [Path(p).parent.name for p in a.packages]
    runners = [_load_runner(p)[0] for p in a.packages]
    print(f"{_cpuinfo()[0]}; {rounds} rounds of {per} runs each", flush=True)
    for n in [int(s) for s in os.environ.get("SEQ", "160,384").split(",")]:
        x = synthetic_inputs(ms.fp32_eager.config.vocab_size, n, tok.cls_token_id, tok.sep_token_id)
        xs = [x[k] for k in INPUT_NAMES]
        med: list[list[float]] = [[] for _ in runners]
        with torch.inference_mode():
            for r in runners:
                for _ in range(3):
                    r(xs)
            for rnd in range(rounds):
                order = list(range(len(runners)))
                order = order[rnd % len(order):] + order[:rnd % len(order)]
                for i in order:
                    ts = []
                    for _ in range(per):
                        t0 = time.perf_counter()
                        runners[i](xs)
                        ts.append((time.perf_counter() - t0) * 1000)
                    med[i].append(statistics.median(ts))
        print(f"@{n}: {names[0]} (baseline) median {statistics.median(med[0]):.1f} ms", flush=True)
        for i in range(1, len(runners)):
            rat = sorted(m / b for m, b in zip(med[i], med[0]))
            q = statistics.quantiles(rat, n=4)
            print(f"  {names[i]:>16}: {statistics.median(med[i]):.1f} ms; paired ratio median {statistics.median(rat):.3f} "
                  f"(quartiles {q[0]:.3f}-{q[2]:.3f}; fastest rounds' ratio {min(med[i]) / min(med[0]):.3f})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
