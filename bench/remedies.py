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
    import torch

    from quant import Comparator, QuantConfig, quantize
    from quant.compare import run_windows
    from quant.evaluate import load_squad, score
    from quant.inspect import sqnr_db
    from quant.qa import best_span
    from quant.quantize import trace
    from quant.size import state_dict_mib
    from quant.timing import measure_interleaved
    from quant.tune import tune

    comp = Comparator(a.model, variants=("fp32-cpu", "int8-cpu"), log=lambda m: print(m, file=sys.stderr))
    exs = load_squad(a.data)
    encs = [comp.encode_checked(e.context, e.question) for e in exs]
    ks = [int(k) for k in a.keep.split(",")]
    rep, _ = tune(comp, exs[:32], 100.0, max_keep=0, runs=2)  # the ranking only
    ranked = [n for n, _ in rep.ranking]
    configs = {"per-tensor (default)": QuantConfig(), "per-channel": QuantConfig(per_channel=True)}
    for k in ks:
        configs[f"keep {k} in FP32"] = QuantConfig(keep_fp32=tuple(ranked[:k]))
    configs[f"per-channel + keep {ks[0]}"] = QuantConfig(per_channel=True, keep_fp32=tuple(ranked[:ks[0]]))
    with torch.inference_mode():
        ref = [run_windows(comp.fp32_eager, e.inputs) for e in encs]

    def span(lg, e):
        return best_span(lg[0].numpy(), lg[1].numpy(), e.offsets, e.context_mask, word_ids=e.word_ids)

    ref_sp = [span(r, e) for r, e in zip(ref, encs)]
    lengths = [int(e.inputs["attention_mask"].sum(-1).max()) for e in encs]
    mid = sorted(range(len(encs)), key=lambda i: lengths[i])[len(encs) // 2]
    x = encs[mid].inputs
    rows, fns = {}, {"fp32": (lambda: comp.fp32_eager(**x), None)}
    models = {name: (quantize(comp.fp32_eager, qc), None) for name, qc in configs.items()}
    if a.static:
        from quant.static import build_static

        st = build_static(comp.fp32_eager, comp.tokenizer, max_length=comp.max_length, log=print)
        models["static (PT2E)"] = (st, st.size_mib)
    for name, (m, size) in models.items():
        sq, agree, em = [], 0, 0
        with torch.inference_mode():
            for r, e, sp, ex in zip(ref, encs, ref_sp, exs):
                o = run_windows(m, e.inputs)
                mask = e.inputs["attention_mask"].bool()
                sq.append(sqnr_db(torch.cat([r[0][mask], r[1][mask]]), torch.cat([o[0][mask], o[1][mask]])))
                s2 = span(o, e)
                agree += (s2.start, s2.end) == (sp.start, sp.end)
                em += score(ex, ex.context[s2.start:s2.end])[0]
        sq.sort()
        rows[name] = {"agree": 100 * agree / len(encs), "em": 100 * em / len(encs), "min": sq[0],
                      "p5": sq[len(sq) // 20], "median": statistics.median(sq),
                      "mib": size if size is not None else state_dict_mib(m)}
        t = trace(m, comp.probes()) if size is None else m  # the static package is compiled already
        fns[name] = (lambda t=t: t(**x), None)
    timed = measure_interleaved(fns, runs=a.runs, warmup=2)
    fp32_ms = timed["fp32"][0].median
    fp32_em = 100 * sum(score(ex, ex.context[sp.start:sp.end])[0] for ex, sp in zip(exs, ref_sp)) / len(exs)
    print(f"{comp.model_id}: {len(exs)} questions; latency at {lengths[mid]} tokens, {a.runs} interleaved runs, "
          f"medians; FP32 EM {fp32_em:.1f}, {fp32_ms:.2f} ms, {state_dict_mib(comp.fp32_eager):.2f} MiB\n")
    print(f"{'INT8 configuration':<24} {'agree %':>8} {'EM':>6} {'SQNR min / p5 / median dB':>27} {'MiB':>8} {'ms':>8} "
          f"{'x FP32':>7}")
    for name, r in rows.items():
        ms = timed[name][0].median
        print(f"{name:<24} {r['agree']:8.1f} {r['em']:6.1f} {r['min']:9.1f} / {r['p5']:4.1f} / {r['median']:5.1f} "
              f"{r['mib']:8.2f} {ms:8.2f} {fp32_ms / ms:6.2f}x")
    print(f"\nkept layers (most sensitive first): {', '.join(ranked[:max(ks)])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
