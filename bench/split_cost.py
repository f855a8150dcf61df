"""What outlier channel splitting costs in latency: static INT8 packages with and without it, side by side.

    python bench/split_cost.py --model <bert-base shape> --cache /tmp/qq-split [--extra 32,64,208 [--extra ...]]

The bert-base shape here has random weights, whose activations have no outlier channels, so `split_plan` would
split nothing. To time what the recipe costs on real weights, every layer's attention input, FFN input and FFN
output's input is forced to carry `--extra` channel copies (its top channels split in two): the default is
MiniLM-QA's plan at ratio 2 (smooth.SPLIT_RATIO) scaled to bert-base's widths — per layer on average +16 of 384
(4.2 %), +27 of 384 (6.9 %) and +101 of 1536 (6.6 %) there, so +32 of 768, +64 of 768 and +208 of 3072 here.
MiniLM-QA's plan at ratio 3 is +16, +16, +16 (+32, +32, +32 here). The packages are built as the app builds them
(max-autotune in a child process, parity-checked; each split in its own cache folder: the cache key does not know a
forced plan), then timed by compare_packages.py, interleaved with FP32 and the static card's recipe of before.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--extra", action="append",
                    help="channel copies forced at each layer's attention input, FFN input, FFN output's input "
                         "(default 32,64,208; repeat to compare several)")
    a = ap.parse_args(argv)
    from quant.threads import apply_policy

    apply_policy("auto")
    import torch

    from quant import ModelSet, smooth
    from quant.static import build_static, recipe_setup

    plans = a.extra or ["32,64,208"]
    extra, calls = [], [0]

    def forced(amax, *args, **kwargs):  # sites come per layer in this order: attention, FFN input, FFN output
        n = extra[calls[0] % 3]
        calls[0] += 1
        if not n:
            return torch.empty(0, dtype=torch.long), torch.empty(0)
        top = amax.topk(n).indices.sort().values  # the top n channels, each split in two
        k = torch.ones(amax.numel())
        k[top] = 2.0
        return top, torch.cat([1.0 / k, torch.full((n,), 0.5)])

    smooth.split_plan = forced
    ms = ModelSet(a.model, variants=("fp32-cpu",), log=None)
    paths = []
    for recipe, plan in [("static", None)] + [("static-split", p) for p in plans]:
        calib, options = recipe_setup(recipe, ms.fp32_eager)
        extra[:] = [int(x) for x in plan.split(",")] if plan else []
        cache = Path(a.cache) / (recipe if plan is None else "extra-" + plan.replace(",", "-"))
        m = build_static(ms.fp32_eager, ms.tokenizer, cache_dir=cache, max_length=ms.max_length,
                         calibration=calib, options=options, log=lambda s: print(s, file=sys.stderr))
        print(f"{recipe} {plan or ''}: {m.info['path']} ({m.info.get('compile')}, {m.info['build_s']:.0f} s, parity "
              f">= {min(m.info['parity_db']):.1f} dB)", flush=True)
        paths.append(m.info["path"])
    return subprocess.call([sys.executable, str(Path(__file__).with_name("compare_packages.py")),
                            "--model", a.model, *paths])


if __name__ == "__main__":
    raise SystemExit(main())
