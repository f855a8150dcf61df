"""What outlier channel splitting does for the dynamic card's answers, per quantized engine and split budget.

    python bench/dynamic_split.py --model <MiniLM-QA> [--engines x86,onednn] [--plans 16/16,16/32,64/64]

MiniLM-QA (real weights) on the built-in real-text set's two halves (quant.realqa): torch.ao dynamic INT8 with
per-channel weights (eager: the traced card gives the same logits), unsplit and split at 2x the median channel's
range, planned on the real-text calibration half as the card plans it (`static.dynamic_splits`), with K padded to a
multiple of ALIGN and at most BUDGET extra channels per input (`--plans ALIGN/BUDGET,...`). Each row: FP32's span
kept, EM and mean logits SQNR on the calibration half | the held-out half.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--engines", default="x86,onednn")
    ap.add_argument("--plans", default="16/16,16/32,64/64")
    a = ap.parse_args(argv)
    from quant.threads import apply_policy

    apply_policy("auto")
    warnings.simplefilter("ignore")
    from quant import ModelSet, QuantConfig
    from quant.env import _cpuinfo
    from quant.evaluate import builtin_split
    from quant.metrics import ratio_db
    from quant.quantize import quantize, use_engine
    from quant.static import dynamic_splits
    from quant.tune import QuestionSet

    ms = ModelSet(a.model, variants=("fp32-cpu",), quant=QuantConfig(split=None), log=None)
    halves = {h: QuestionSet(ms, builtin_split(h)) for h in ("calibration", "held-out")}
    print(f"{a.model}: {_cpuinfo()[0]}; {len(halves['calibration'])} + {len(halves['held-out'])} questions\n"
          "same span as FP32 / EM / logits SQNR: calibration half | held-out half", flush=True)
    plans = {}
    for p in a.plans.split(","):
        align, budget = (int(v) for v in p.split("/"))
        cfg = replace(QuantConfig(), split_align=align, split_budget=budget)
        plans[p] = (cfg, dynamic_splits(ms.fp32_eager, ms.tokenizer, ms.max_length, cfg))

    def row(label, model):
        cells = []
        for qs in halves.values():
            r = qs.score(model)
            cells.append(f"{r['agreement']:5.1f} % EM {r['exact_match']:4.1f} "
                         f"{ratio_db(statistics.fmean(r['noise'])):5.1f} dB")
        print(f"{label:34s} " + "   ".join(cells), flush=True)

    for eng in a.engines.split(","):
        use_engine(eng)
        row(f"{eng} unsplit", quantize(ms.fp32_eager, QuantConfig(split=None)))
        for p, (cfg, sp) in plans.items():
            extra = sum(i.numel() for i, _ in sp.values())
            row(f"{eng} split, K to {cfg.split_align}, <= {cfg.split_budget} (+{extra})",
                quantize(ms.fp32_eager, cfg, sp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
