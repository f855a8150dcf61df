"""What GPTQ rounding gives static INT8 on real text (issue #24).

    python bench/gptq.py --model <MiniLM-QA> [--timing-model <bert-base shape>]

1. Weights alone (activations FP32), on the split model the static card quantizes: every Linear's weights rounded
   to nearest on the quantizer's grid (per output channel, max|w| / 127.5) vs rounded by GPTQ on the same grid;
   logits SQNR and same span as FP32 on the calibration half.
2. The static recipes as eager quantized graphs (weights and activations INT8): static-split (rounded to nearest)
   and static-gptq (the card's), same span / EM / logits SQNR on the calibration half | the held-out half, and how
   long the conversion took.
3. With `--timing-model`: how long GPTQ takes on that model (31 calibration windows), the build's extra cost.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="MiniLM-QA (real weights)")
    ap.add_argument("--timing-model", default=None, help="a model to time GPTQ on (e.g. the bert-base shape)")
    a = ap.parse_args(argv)
    from quant.threads import apply_policy

    apply_policy("auto")
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    import torch
    from torch import nn

    from quant import ModelSet
    from quant.env import _cpuinfo
    from quant.evaluate import builtin_split
    from quant.gptq import QMAX, gptq_round
    from quant.metrics import ratio_db
    from quant.smooth import SPLIT_RATIO, split_outliers
    from quant.static import calibration_inputs, calibration_texts, convert, input_names, recipe_setup
    from quant.tune import QuestionSet

    def windows_of(ms):
        names = input_names(ms.tokenizer)
        return [dict(zip(names, x)) for x in
                calibration_inputs(ms.tokenizer, calibration_texts("realtext"), ms.max_length, names)]

    ms = ModelSet(a.model, variants=("fp32-cpu", "int8-cpu"), log=None)
    fp32, tok = ms.fp32_eager, ms.tokenizer
    windows = windows_of(ms)
    halves = {h: QuestionSet(ms, builtin_split(h)) for h in ("calibration", "held-out")}
    print(f"{a.model}: {_cpuinfo()[0]}, {torch.get_num_threads()} threads; {len(windows)} calibration windows; "
          f"{len(halves['calibration'])} + {len(halves['held-out'])} questions", flush=True)

    def cells(model, which=("calibration", "held-out")):
        out = []
        for h in which:
            r = halves[h].score(model)
            out.append(f"{r['agreement']:5.1f} % EM {r['exact_match']:4.1f} "
                       f"{ratio_db(statistics.fmean(r['noise'])):5.1f} dB")
        return " | ".join(out)

    split = split_outliers(fp32, windows, SPLIT_RATIO)
    print("\n1. Weights alone INT8 (activations FP32), the split model; calibration half: same span / EM / logits SQNR")
    nearest = copy.deepcopy(split)
    with torch.no_grad():
        for m in nearest.modules():
            if isinstance(m, nn.Linear):
                s = (m.weight.abs().amax(1) / QMAX)[:, None]
                m.weight.copy_((m.weight / s).round().clamp(-128, 127) * s)
    print(f"   rounded to nearest              {cells(nearest, ('calibration',))}", flush=True)
    t = time.perf_counter()
    rounded = gptq_round(copy.deepcopy(split), windows)
    print(f"   GPTQ ({time.perf_counter() - t:4.1f} s)                 {cells(rounded, ('calibration',))}", flush=True)

    print("\n2. Static INT8, eager quantized graphs: calibration half | held-out half")
    for recipe in ("static-split", "static-gptq"):
        calib, options = recipe_setup(recipe, fp32)
        t = time.perf_counter()
        g = convert(fp32, tok, max_length=ms.max_length, calibration=calib, options=options).model(
            tok.pad_token_id or 0)
        print(f"   {recipe:14s} ({time.perf_counter() - t:4.1f} s)  {cells(g)}", flush=True)

    if a.timing_model:
        tm = ModelSet(a.timing_model, variants=("fp32-cpu",), log=None)
        w = windows_of(tm)
        sp = split_outliers(tm.fp32_eager, w, SPLIT_RATIO)
        t = time.perf_counter()
        gptq_round(sp, w)
        print(f"\n3. GPTQ on {a.timing_model} ({len(w)} windows): {time.perf_counter() - t:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
