"""Static INT8 packages (.pt2) side by side: each loaded and timed interleaved with FP32 at 160 and 384 tokens.

    RUNS=25 python bench/compare_packages.py --model <bert-base shape> A.pt2 B.pt2 ...

For comparing compilations of the same graph on a noisy machine (`autotune-repeats-xeon.txt`): ratios within one
line are what counts.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("packages", nargs="+")
    a = ap.parse_args(argv)
    from quant.threads import apply_policy

    apply_policy("auto")
    warnings.simplefilter("ignore")
    import torch

    from quant import ModelSet
    from quant.bench import synthetic_inputs
    from quant.static import INPUT_NAMES, _load_runner
    from quant.timing import measure_interleaved

    ms = ModelSet(a.model, variants=("fp32-cpu",), log=None)
    tok = ms.tokenizer
    names = [Path(p).name for p in a.packages]  # the folder too where two packages share a file name (a key)
    runners = {(n if names.count(n) == 1 else f"{Path(p).parent.name}/{n}"): _load_runner(p)[0]
               for p, n in zip(a.packages, names)}
    for n in (160, 384):
        x = synthetic_inputs(ms.fp32_eager.config.vocab_size, n, tok.cls_token_id, tok.sep_token_id)
        xs = [x[k] for k in INPUT_NAMES]
        fns = {"fp32": (lambda x=x: ms.fp32_eager(**x), None)}
        fns.update({k: (lambda r=r, xs=xs: r(xs), None) for k, r in runners.items()})
        with torch.inference_mode():
            t = measure_interleaved(fns, runs=int(os.environ.get("RUNS", 15)), warmup=3, seed=n)
        f = t["fp32"][0].median
        print(f"@{n}: " + "  ".join(f"{k} {v[0].median:.1f} ms ({f / v[0].median:.2f}x)" for k, v in t.items()),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
