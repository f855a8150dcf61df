"""Two remedies for INT8 error, side by side: per-channel weight scales vs keeping layers in FP32.

    python bench/remedies.py --model DIR --data SQUAD.json [--keep 3,8] [--runs 20]

For each configuration: FP32-INT8 agreement, logits SQNR vs FP32 (min / 5th percentile / median over
the questions), EM, INT8 size (torch.save bytes) and median latency (traced, as the app runs it) at the
set's median length. Layers to keep are ranked as `quant tune` ranks them (logits noise when only that
layer is INT8, on the first 32 questions).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--keep", default="3,8", help="numbers of most sensitive layers to keep in FP32")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--static", action="store_true", help="add static INT8 (PT2E + AOTInductor, cached) as a row")
    a = ap.parse_args(argv)
    from quant.threads import apply_policy

    apply_policy("auto")
    import math

    from quant import ModelSet, QuantConfig, quantize
    from quant.evaluate import load_squad
    from quant.inspect import ratio_db
    from quant.quantize import trace_or_eager
    from quant.size import state_dict_mib
    from quant.timing import measure_interleaved
    from quant.tune import QuestionSet, tune

    comp = ModelSet(a.model, variants=("fp32-cpu", "int8-cpu"), log=lambda m: print(m, file=sys.stderr))
    exs = load_squad(a.data)
    ks = [int(k) for k in a.keep.split(",")]
    rep, _ = tune(comp, exs[:32], 100.0, max_keep=0, runs=2)  # the ranking only
    ranked = [n for n, _ in rep.ranking]
    configs = {"per-tensor (default)": QuantConfig(), "per-channel": QuantConfig(per_channel=True)}
    for k in ks:
        configs[f"keep {k} in FP32"] = QuantConfig(keep_fp32=tuple(ranked[:k]))
    configs[f"per-channel + keep {ks[0]}"] = QuantConfig(per_channel=True, keep_fp32=tuple(ranked[:ks[0]]))
    qs = QuestionSet(comp, exs)
    x = qs.timing_input
    models = {name: (quantize(comp.fp32_eager, qc), None) for name, qc in configs.items()}
    if a.static:
        from quant.static import build_static

        st = build_static(comp.fp32_eager, comp.tokenizer, max_length=comp.max_length, log=print)
        models["static (PT2E)"] = (st, st.size_mib)
    rows, fns = {}, {"fp32": (lambda: comp.fp32_eager(**x), None)}
    for name, (m, size) in models.items():
        r = qs.score(m)
        sq = sorted(ratio_db(v) for v in r["noise"])
        rows[name] = {"agree": r["agreement"], "em": r["exact_match"], "min": sq[0], "p5": sq[len(sq) // 20],
                      "median": statistics.median(sq), "mib": size if size is not None else state_dict_mib(m)}
        t = trace_or_eager(m, comp.probes())[0] if size is None else m  # the static package is compiled already
        fns[name] = (lambda t=t: t(**x), None)
    timed = measure_interleaved(fns, runs=a.runs, warmup=2)
    fp32_ms = timed["fp32"][0].median
    fp32_em = qs.score(comp.fp32_eager)["exact_match"]
    print(f"{comp.model_id}: {len(qs)} questions; latency at {qs.lengths[qs.median_index]} tokens, {a.runs} "
          f"interleaved runs, medians; FP32 EM {fp32_em:.1f}, {fp32_ms:.2f} ms, "
          f"{state_dict_mib(comp.fp32_eager):.2f} MiB\n")
    print(f"{'INT8 configuration':<24} {'agree %':>8} {'EM':>6} {'SQNR min / p5 / median dB':>27} {'MiB':>8} {'ms':>8} "
          f"{'x FP32':>7}")
    for name, r in rows.items():
        ms = timed[name][0].median
        fmt = (lambda v: "inf" if math.isinf(v) else f"{v:.1f}")
        print(f"{name:<24} {r['agree']:8.1f} {r['em']:6.1f} {fmt(r['min']):>9} / {fmt(r['p5']):>4} / "
              f"{fmt(r['median']):>5} {r['mib']:8.2f} {ms:8.2f} {fp32_ms / ms:6.2f}x")
    print(f"\nkept layers (most sensitive first): {', '.join(ranked[:max(ks)])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
