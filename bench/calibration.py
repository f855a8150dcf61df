"""Static INT8 recipes on real text: calibration sets, activation observers, SmoothQuant, dynamic layers.

    python bench/calibration.py --model <MiniLM-QA> [--only NAME ...] [--json]

Every candidate is scored by what a person sees — the share of questions where it gives exactly FP32's span,
EM and F1 — on the built-in real-text set's two halves: the *calibration* half (the passages static INT8 may be
calibrated and tuned on) and the *held-out* half (never calibrated or tuned on; the figure that counts). Scored
on the eager quantized graph (the compiled package matches it to >= 30 dB). bench/migration.py compiles and times
the candidates worth it, interleaved with FP32 and today's static INT8, on the bert-base shape.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def candidates(models, args) -> dict:
    from quant.static import StaticOptions, calibration_texts

    examples = calibration_texts("examples")
    realtext = calibration_texts("realtext")
    import torch

    ffn_out = tuple(n for n, m in models.fp32_eager.named_modules()
                    if isinstance(m, torch.nn.Linear) and n.endswith(".output.dense") and ".attention." not in n)
    out = {
        "today: 6 examples, histogram": (examples, StaticOptions()),
        "real text (calibration half), histogram": (realtext, StaticOptions()),
        "real text, minmax": (realtext, StaticOptions(observer="minmax")),
        "real text, percentile 99.99": (realtext, StaticOptions(observer="percentile")),
        "real text, histogram, SmoothQuant 0.5": (realtext, StaticOptions(smooth=0.5)),
        "real text, histogram, SmoothQuant 0.3": (realtext, StaticOptions(smooth=0.3)),
        "real text, histogram, SmoothQuant 0.7": (realtext, StaticOptions(smooth=0.7)),
        "real text, histogram, FFN outputs dynamic (mixed)": (realtext, StaticOptions(dynamic_layers=ffn_out)),
    }
    return {k: v for k, v in out.items() if not args.only or any(o in k for o in args.only)}


def score(models, qs, model) -> dict:
    r = qs.score(model)
    return {"agreement": round(r["agreement"], 2), "exact_match": round(r["exact_match"], 2), "f1": round(r["f1"], 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="MiniLM-QA (real weights): where the error is measured")
    ap.add_argument("--only", nargs="*", help="candidates whose name contains one of these")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from quant.threads import apply_policy

    apply_policy("auto")
    from quant import ModelSet
    from quant.evaluate import builtin_split
    from quant.static import convert
    from quant.tune import QuestionSet

    models = ModelSet(args.model, variants=("fp32-cpu", "int8-cpu"), log=None)
    halves = {part: QuestionSet(models, builtin_split(part)) for part in ("calibration", "held-out")}
    fp32 = {part: score(models, qs, models.fp32_eager) for part, qs in halves.items()}
    rows = []
    print(f"FP32: {fp32}", file=sys.stderr, flush=True)
    for name, (calib, options) in candidates(models, args).items():
        t0 = time.perf_counter()
        conv = convert(models.fp32_eager, models.tokenizer, max_length=models.max_length, calibration=calib,
                       options=options)
        build_s = time.perf_counter() - t0
        m = conv.model(models.tokenizer.pad_token_id or 0)
        row = {"candidate": name, "options": options.as_dict(), "calibration_pairs": len(calib),
               "calibration_windows": conv.calibration_windows, "convert_s": round(build_s, 1),
               **{part: score(models, qs, m) for part, qs in halves.items()}}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    report = {"model": args.model, "fp32": fp32, "rows": rows}
    print(json.dumps(report, indent=1) if args.json else "\n".join(
        f"{r['candidate']:<45} calibration half {r['calibration']['agreement']:6.2f} %  held-out "
        f"{r['held-out']['agreement']:6.2f} %  EM {r['held-out']['exact_match']:5.1f} (FP32 "
        f"{fp32['held-out']['exact_match']:5.1f})  {r['calibration_windows']} windows, {r['convert_s']} s"
        for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
