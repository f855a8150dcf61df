"""What outlier channel splitting costs the dynamic card: torch.ao dynamic INT8 (traced + frozen, as the app runs it)
with and without a split, side by side, per quantized engine.

    python bench/dynamic_split_cost.py --model <bert-base shape> [--extra 16,16,16] [--engines fbgemm,onednn]

The bert-base shape has random weights, whose activations have no outlier channels, so every layer's attention
input, FFN input and FFN output's input is forced to carry `--extra` channel copies (its top channels split in two):
16, 16, 16 is the most the dynamic card's budget adds (QuantConfig.split_budget). Timed in paired rounds (each round
runs both models 3 times in alternating order; a round's ratio is split / unsplit of its medians), medians of
`--rounds` rounds with their quartiles, at each length.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--extra", default="16,16,16", help="copies forced at each layer's three split inputs")
    ap.add_argument("--engines", default="fbgemm,onednn")
    ap.add_argument("--lengths", default="160,384")
    ap.add_argument("--rounds", type=int, default=30)
    a = ap.parse_args(argv)
    from quant.threads import apply_policy

    apply_policy("auto")
    warnings.simplefilter("ignore")
    import torch

    from quant import ModelSet, QuantConfig, smooth
    from quant.bench import synthetic_inputs
    from quant.env import _cpuinfo
    from quant.quantize import quantize, trace_or_eager, use_engine
    from quant.static import calibration_inputs, calibration_texts, input_names

    extra, calls = [int(v) for v in a.extra.split(",")], [0]

    def forced(amax, *args, **kwargs):  # sites come per layer in this order: attention, FFN input, FFN output
        n = extra[calls[0] % 3]
        calls[0] += 1
        top = amax.topk(n).indices.sort().values
        k = torch.ones(amax.numel())
        k[top] = 2.0
        return top, torch.cat([1.0 / k, torch.full((n,), 0.5)])

    ms = ModelSet(a.model, variants=("fp32-cpu",), quant=QuantConfig(split=None), log=None)
    names = input_names(ms.tokenizer)
    windows = [dict(zip(names, x)) for x in
               calibration_inputs(ms.tokenizer, calibration_texts("examples")[:1], ms.max_length, names)]
    smooth.split_plan = forced
    plans = smooth.plan_splits(ms.fp32_eager, windows)
    print(f"{a.model}: {_cpuinfo()[0]}, {torch.get_num_threads()} threads; forced +{a.extra} per layer "
          f"(+{sum(i.numel() for i, _ in plans.values())} channels)", flush=True)
    for eng in a.engines.split(","):
        use_engine(eng)
        cfg = QuantConfig()
        pair = [trace_or_eager(quantize(ms.fp32_eager, cfg, s), ms.probes()) for s in (None, plans)]
        assert all(failed is None for _, failed in pair), pair
        plain, split = (m for m, _ in pair)
        for T in (int(t) for t in a.lengths.split(",")):
            x = synthetic_inputs(ms.fp32_eager.config.vocab_size, T)
            with torch.inference_mode():
                for _ in range(3):
                    plain(**x), split(**x)
                ratios, base = [], []
                for _ in range(a.rounds):
                    tp, ts = [], []
                    for m, out in ((plain, tp), (split, ts), (split, ts), (plain, tp), (plain, tp), (split, ts)):
                        t = time.perf_counter()
                        m(**x)
                        out.append(time.perf_counter() - t)
                    ratios.append(statistics.median(ts) / statistics.median(tp))
                    base.append(statistics.median(tp))
            q1, _, q3 = statistics.quantiles(ratios, n=4)
            print(f"{eng:7s} @{T}: split / unsplit {statistics.median(ratios):.3f} (quartiles {q1:.3f}-{q3:.3f}); "
                  f"unsplit {1000 * statistics.median(base):.1f} ms", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
