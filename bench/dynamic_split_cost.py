"""What outlier channel splitting costs the dynamic card: torch.ao dynamic INT8 (traced + frozen, as the app runs it)
with and without a split, side by side, per quantized engine.

    python bench/dynamic_split_cost.py --model <bert-base shape> [--extra 16,16,16] [--engines fbgemm,onednn]
    python bench/dynamic_split_cost.py --model <MiniLM-QA> --real 16/16,64/64,64/16

The bert-base shape has random weights, whose activations have no outlier channels, so every layer's attention
input, FFN input and FFN output's input is forced to carry `--extra` channel copies (its top channels split in two):
16, 16, 16 is the most the dynamic card's budget adds (QuantConfig.split_budget). With `--real ALIGN/BUDGET,...` the
plans are the card's own (`static.dynamic_splits` on real weights), one model per alignment and budget. Timed in
paired rounds (each round runs every model 3 times, the order reversed every other round; a round's ratio is a
model's median over the unsplit one's), medians of `--rounds` rounds, at each length.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--extra", default="16,16,16", help="copies forced at each layer's three split inputs")
    ap.add_argument("--real", default=None, help="the card's own plans instead, at these ALIGN/BUDGET pairs")
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
    from quant.static import calibration_inputs, calibration_texts, dynamic_splits, input_names

    ms = ModelSet(a.model, variants=("fp32-cpu",), quant=QuantConfig(split=None), log=None)
    fp32 = ms.fp32_eager
    plans: dict[str, tuple] = {}  # label -> (config, plans)
    if a.real:
        for p in a.real.split(","):
            align, budget = (int(v) for v in p.split("/"))
            cfg = replace(QuantConfig(), split_align=align, split_budget=budget)
            plans[f"K to {align}, <= {budget}"] = (cfg, dynamic_splits(fp32, ms.tokenizer, ms.max_length, cfg))
    else:
        extra, calls = [int(v) for v in a.extra.split(",")], [0]

        def forced(amax, *args, **kwargs):  # sites come per layer in this order: attention, FFN input, FFN output
            n = extra[calls[0] % 3]
            calls[0] += 1
            top = amax.topk(n).indices.sort().values
            k = torch.ones(amax.numel())
            k[top] = 2.0
            return top, torch.cat([1.0 / k, torch.full((n,), 0.5)])

        names = input_names(ms.tokenizer)
        windows = [dict(zip(names, x)) for x in
                   calibration_inputs(ms.tokenizer, calibration_texts("examples")[:1], ms.max_length, names)]
        smooth.split_plan = forced
        plans[f"forced +{a.extra}"] = (QuantConfig(), smooth.plan_splits(fp32, windows))
    print(f"{a.model}: {_cpuinfo()[0]}, {torch.get_num_threads()} threads; "
          + "; ".join(f"{k}: +{sum(i.numel() for i, _ in p.values())} channels" for k, (_, p) in plans.items()),
          flush=True)
    for eng in a.engines.split(","):
        use_engine(eng)
        built = {"unsplit": trace_or_eager(quantize(fp32, QuantConfig(split=None)), ms.probes())}
        built.update({k: trace_or_eager(quantize(fp32, cfg, p), ms.probes()) for k, (cfg, p) in plans.items()})
        assert all(failed is None for _, failed in built.values()), built
        models = {k: m for k, (m, _) in built.items()}
        for T in (int(t) for t in a.lengths.split(",")):
            x = synthetic_inputs(fp32.config.vocab_size, T)
            ratios: dict[str, list[float]] = {k: [] for k in models}
            base = []
            with torch.inference_mode():
                for m in models.values():
                    m(**x), m(**x)
                for r in range(a.rounds):
                    t: dict[str, list[float]] = {k: [] for k in models}
                    order = list(models) if r % 2 == 0 else list(models)[::-1]
                    for _ in range(3):
                        for k in order:
                            s = time.perf_counter()
                            models[k](**x)
                            t[k].append(time.perf_counter() - s)
                    base.append(statistics.median(t["unsplit"]))
                    for k in models:
                        ratios[k].append(statistics.median(t[k]) / base[-1])
            cells = []
            for k in plans:
                q1, _, q3 = statistics.quantiles(ratios[k], n=4)
                cells.append(f"{k} {statistics.median(ratios[k]):.3f} ({q1:.3f}-{q3:.3f})")
            print(f"{eng:7s} @{T}: unsplit {1000 * statistics.median(base):.1f} ms; × unsplit: " + ", ".join(cells),
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
