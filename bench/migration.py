"""torch.ao.quantization and torch.jit.trace are deprecated: what replaces today's dynamic INT8, measured.

    python bench/migration.py --speed-model <bert-base-shaped DIR> --accuracy-model <MiniLM-QA DIR> [--tokens 160]

Rows: today's dynamic INT8 (torch.ao quantize_dynamic, per-tensor and per-channel,
traced with torch.jit.trace) and its successors: torchao's dynamic INT8
(Int8DynamicActivationInt8WeightConfig: per-token activations) under
torch.compile, PT2E dynamic INT8 (X86 Inductor quantizer, is_dynamic=True,
AOTInductor package) and PT2E static INT8 (static.py). Speed: median ms at
`--tokens` on the speed model, every row interleaved with FP32 in one process.
Faithfulness: on the accuracy model (real weights), the median logits SQNR over
the built-in real-text set's questions and the share of them answered with
FP32's span. Each row also says how long it takes to make.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROWS = ("ao-dynamic-per-tensor", "ao-dynamic-per-channel", "torchao-per-token-compiled", "pt2e-dynamic", "pt2e-static",
        "pt2e-static-realtext-minmax", "pt2e-static-mixed-ffn-out")
WHAT = {
    "ao-dynamic-per-tensor": "torch.ao quantize_dynamic, per-tensor + jit.trace (the seed's)",
    "ao-dynamic-per-channel": "torch.ao quantize_dynamic, per-channel + jit.trace",
    "torchao-per-token-compiled": "torchao Int8DynamicActivationInt8WeightConfig + torch.compile",
    "pt2e-dynamic": "PT2E X86 Inductor quantizer, dynamic + AOTInductor",
    "pt2e-static": "PT2E X86 Inductor quantizer, static (calibrated) + AOTInductor",
    "pt2e-static-realtext-minmax": "PT2E static, calibrated on the real-text calibration half, min-max observer",
    "pt2e-static-mixed-ffn-out": "PT2E static (real-text calibration) with every FFN output Linear dynamic",
}


RECIPE_OF = {"ao-dynamic-per-tensor": "dynamic-per-tensor", "ao-dynamic-per-channel": "dynamic-per-channel",
             "torchao-per-token-compiled": "dynamic-per-token", "pt2e-static": "static"}  # quant.recipes' names


def build(row: str, comp, log):
    """(runnable model, seconds to make it): the recipe as `tune --recipes` ships it; PT2E dynamic and the static
    candidates (#24) via build_static."""
    import torch

    from quant.recipes import build_recipe
    from quant.static import StaticOptions, build_static, calibration_texts

    t0 = time.perf_counter()
    if row in RECIPE_OF:
        m = build_recipe(RECIPE_OF[row], comp, log=log)[0]
    elif row.startswith("pt2e-static-"):
        ffn_out = tuple(n for n, mod in comp.fp32_eager.named_modules()
                        if isinstance(mod, torch.nn.Linear) and n.endswith(".output.dense") and ".attention." not in n)
        opts = (StaticOptions(observer="minmax") if row.endswith("minmax") else StaticOptions(dynamic_layers=ffn_out))
        m = build_static(comp.fp32_eager, comp.tokenizer, max_length=comp.max_length, log=log, options=opts,
                         calibration=calibration_texts("realtext"), source_id=comp.model_id)
    else:
        m = build_static(comp.fp32_eager, comp.tokenizer, max_length=comp.max_length, dynamic=True, log=log,
                         source_id=comp.model_id)
    return m, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speed-model", required=True)
    ap.add_argument("--accuracy-model", required=True)
    ap.add_argument("--tokens", default="160,384", help="sequence lengths to time (comma-separated)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--questions", type=int, default=240)
    a = ap.parse_args(argv)
    from quant.threads import apply_policy

    apply_policy("auto")
    warnings.simplefilter("ignore")
    import torch

    from quant import ModelSet
    from quant.bench import synthetic_inputs
    from quant.env import cpu_name
    from quant.evaluate import BUILTIN, builtin_split, load_squad
    from quant.metrics import noise_ratio, ratio_db
    from quant.timing import measure_interleaved
    from quant.tune import QuestionSet

    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    out: dict[str, dict] = {r: {} for r in ROWS}
    # faithfulness, on real weights
    acc = ModelSet(a.accuracy_model, variants=("fp32-cpu",), log=None)
    qs = QuestionSet(acc, load_squad(BUILTIN, limit=a.questions))
    held = QuestionSet(acc, builtin_split("held-out"))  # never calibrated or tuned on
    ref = held.score(acc.fp32_eager)
    fp32_em = (ref["exact_match"], ref["f1"])
    for row in ROWS:
        m, _ = build(row, acc, log)
        s, h = qs.score(m), held.score(m)
        out[row].update(agreement=s["agreement"], sqnr_median=statistics.median(ratio_db(n) for n in s["noise"]),
                        sqnr_mean_noise=ratio_db(statistics.fmean(s["noise"])), held_out=h["agreement"],
                        held_em=h["exact_match"], held_f1=h["f1"])
        log(f"[migration] {row}: agreement {s['agreement']:.1f}% (held-out {h['agreement']:.1f}%)")
        del m
    # speed, on the bert-base shape: every row interleaved with FP32 at each length
    comp = ModelSet(a.speed_model, variants=("fp32-cpu",), log=None)
    cfg = comp.fp32_eager.config
    models = {}
    for row in ROWS:
        models[row], out[row]["make_s"] = build(row, comp, log)
    lengths = [int(t) for t in a.tokens.split(",")]
    fp32_ms = {}
    for n in lengths:
        x = synthetic_inputs(cfg.vocab_size, n, comp.tokenizer.cls_token_id or 0, comp.tokenizer.sep_token_id or 0)
        fns = {"fp32": (lambda x=x: comp.fp32_eager(**x), None)}
        fns.update({row: (lambda m=models[row], x=x: m(**x), None) for row in ROWS})
        timed = measure_interleaved(fns, runs=a.runs, warmup=3, seed=n)
        fp32_ms[n] = timed["fp32"][0].median
        for row in ROWS:
            out[row][f"ms{n}"] = timed[row][0].median
    print(f"cpu: {cpu_name()} | threads {torch.get_num_threads()} | speed: {a.speed_model} (FP32 "
          + ", ".join(f"{fp32_ms[n]:.1f} ms @{n}" for n in lengths) + f") | faithfulness: {a.accuracy_model} on "
          f"{len(qs)} real-text questions; held-out half {len(held)} (FP32 EM {fp32_em[0]:.1f}, F1 {fp32_em[1]:.1f})\n")
    print(f"{'row':<28} " + " ".join(f"{'ms@' + str(n):>8} {'xFP32':>6}" for n in lengths)
          + f" {'make s':>7} {'agree %':>8} {'held %':>7} {'EM':>5} {'F1':>5} {'SQNR':>5}  what")
    for row in ROWS:
        r = out[row]
        print(f"{row:<28} " + " ".join(f"{r[f'ms{n}']:8.1f} {fp32_ms[n] / r[f'ms{n}']:5.2f}x" for n in lengths)
              + f" {r['make_s']:7.1f} {r['agreement']:8.1f} {r['held_out']:7.1f} {r['held_em']:5.1f} "
                f"{r['held_f1']:5.1f} {r['sqnr_median']:5.1f}  {WHAT[row]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
