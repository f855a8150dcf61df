"""Where the time goes: FP32, dynamic INT8 and static INT8 per op class, and GEMM efficiency against the peak.

    python bench/op_profile.py --model DIR [--seq-lens 64,160,384] [--runs 10] [--json]

1. Peak: the machine's FP32 and INT8 GEMM throughput, measured (not from a data
   sheet): FP32 `torch.nn.functional.linear`, INT8 the dynamic quantized Linear
   (fbgemm / oneDNN int8 GEMM, activations quantized per call), each on large
   square shapes (the peak) and on the model's own shapes at each length
   (tokens x hidden x hidden, x 4 hidden, 4 hidden x hidden); the peak is the
   best of them.
2. Profile: `torch.profiler` over `--runs` forwards of each variant; self CPU
   time summed by op class (Linear GEMM FP32 / INT8, attention matmul, quantize,
   softmax, LayerNorm, GELU, other — Inductor's fused kernels). GEMM efficiency
   = the Linear layers' FLOPs (2 x tokens x parameters) / their GEMM time,
   against the measured peak of the same precision.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLASSES = (  # (class, substrings of the profiler's op name), first match wins
    # gemm_ms: Inductor's C++ GEMM template (max-autotune), e.g. graph_0_gemm_ms57n768k768_cpp_fused_quantize_...
    ("Linear GEMM INT8", ("quantized::linear", "qlinear", "_int_mm", "gemm_ms")),
    ("attention matmul", ("aten::bmm", "aten::matmul", "aten::baddbmm", "qmatmul", "_scaled_dot_product", "cpu_bmm")),
    ("Linear GEMM FP32", ("aten::addmm", "aten::mm", "aten::linear", "mkl_linear", "mkldnn::_linear")),
    ("quantize / dequantize", ("quantize", "dequantize", "choose_qparams", "quantized_decomposed", "_fake_quant")),
    ("softmax", ("softmax",)),
    ("LayerNorm", ("layer_norm", "layernorm")),
    ("GELU", ("gelu",)),
)
LINEAR = {"fp32-cpu": "Linear GEMM FP32", "int8-cpu": "Linear GEMM INT8", "int8-static-cpu": "Linear GEMM INT8"}


def op_class(name: str) -> str:
    low = name.lower()
    for cls, keys in CLASSES:
        if any(k in low for k in keys):
            return cls
    return "other"


def median_s(fn, runs: int = 10) -> float:
    """Median seconds of `fn` after 2 warm-up calls (quant.timing.measure)."""
    from quant.timing import measure

    return measure(fn, runs=runs, warmup=2)[0].median / 1e3


def gemm_peaks(hidden: int, inter: int, seq_lens) -> dict:
    import torch

    from quant.quantize import _backend_quantize

    def pair(m, k, n):
        x, lin = torch.randn(m, k), torch.nn.Linear(k, n, bias=False).eval()
        q = _backend_quantize(torch.nn.Sequential(torch.nn.Linear(k, n, bias=False)).eval(), embeddings=False)
        f, i = median_s(lambda: lin(x)), median_s(lambda: q(x))
        ops = 2 * m * k * n / 1e9
        return {"fp32_gflops": round(ops / f, 1), "int8_gops": round(ops / i, 1)}

    out = {"square 2048": pair(2048, 2048, 2048)}
    for t in seq_lens:
        for name, (k, n) in {"qkv/out": (hidden, hidden), "FFN in": (hidden, inter), "FFN out": (inter, hidden)}.items():
            out[f"{t} tok {name}"] = pair(t, k, n)
    return out


def profile_variant(model, inputs, runs: int) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """(ms per forward by op class, the 10 kernels with the most self CPU time: [(name, ms per forward)])."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        for _ in range(2):
            model(**inputs)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                model(**inputs)
    by: dict[str, float] = collections.defaultdict(float)
    kernels = []
    for e in prof.key_averages():
        ms = e.self_cpu_time_total / 1e3 / runs  # ms per forward
        by[op_class(e.key)] += ms
        kernels.append((e.key, ms))
    return dict(by), sorted(kernels, key=lambda k: -k[1])[:10]


def non_gemm_share(share: dict[str, float]) -> float:
    """Percent of profiled time outside the Linear GEMMs and the attention matmuls (as classified)."""
    gemm = sum(v for k, v in share.items() if k.startswith("Linear GEMM") or k == "attention matmul")
    return round(100.0 - gemm, 1)


def linear_flops(cfg, t: int) -> float:
    """2 x multiply-adds of every encoder Linear of one forward at `t` tokens (GFLOP)."""
    h, i, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    return 2 * layers * (4 * h * h + 2 * h * i) * t / 1e9


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--seq-lens", default="64,160,384")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    from quant.threads import apply_policy

    apply_policy("auto")
    warnings.simplefilter("ignore")
    import torch
    import torch._inductor.config as icfg

    from quant import ModelSet
    from quant.bench import synthetic_inputs
    from quant.compare import STATIC_VARIANT
    from quant.env import cpu_name

    icfg.cpp.enable_kernel_profile = True  # name the fused kernels of the package built below
    comp = ModelSet(a.model, variants=("fp32-cpu", "int8-cpu", STATIC_VARIANT), log=lambda m: print(m, file=sys.stderr),
                      static_cache=Path("/tmp/quantqa-profile-cache"))
    cfg = comp.fp32_eager.config
    seq_lens = [int(s) for s in a.seq_lens.split(",")]
    peaks = gemm_peaks(cfg.hidden_size, cfg.intermediate_size, seq_lens)
    peak_fp32 = max(v["fp32_gflops"] for v in peaks.values())  # the best any shape reached here
    peak_int8 = max(v["int8_gops"] for v in peaks.values())
    tok = comp.tokenizer
    rows = []
    for t in seq_lens:
        x = synthetic_inputs(cfg.vocab_size, t, tok.cls_token_id or 0, tok.sep_token_id or 0)
        for v in ("fp32-cpu", "int8-cpu", STATIC_VARIANT):
            m = comp.model(v)
            if m is None:
                continue
            by, top = profile_variant(m, x, a.runs)
            wall = median_s(lambda: m(**x), runs=a.runs) * 1e3
            gemm = by.get(LINEAR[v], 0.0)  # the Linear layers' GEMMs, against the matching peak
            peak = peak_fp32 if v == "fp32-cpu" else peak_int8
            eff = linear_flops(cfg, t) / (gemm / 1e3) / peak if gemm else None
            rows.append({"variant": v, "tokens": t, "wall_ms": round(wall, 2),
                         "share": {k: round(100 * val / sum(by.values()), 1) for k, val in sorted(by.items())},
                         "gemm_ms": round(gemm, 2), "gemm_efficiency_vs_peak": None if eff is None else round(eff, 2),
                         "top_kernels": [(k, round(ms, 3), round(100 * ms / sum(by.values()), 1)) for k, ms in top]})
            rows[-1]["non_gemm_share"] = non_gemm_share(rows[-1]["share"])
            print(f"[profile] {v} @{t}: {wall:.1f} ms", file=sys.stderr)
    report = {"cpu": cpu_name(), "threads": torch.get_num_threads(),
              "peaks": peaks, "rows": rows}
    if a.json:
        print(json.dumps(report))
        return 0
    print(f"cpu: {report['cpu']} | threads {report['threads']}")
    print(f"measured peak (best shape): FP32 {peak_fp32} GFLOP/s, INT8 {peak_int8} GOP/s, ratio {peak_int8 / peak_fp32:.2f}x")
    for k, v in peaks.items():
        print(f"  {k:<22} FP32 {v['fp32_gflops']:>7} GFLOP/s   INT8 {v['int8_gops']:>7} GOP/s")
    classes = ["Linear GEMM FP32", "Linear GEMM INT8", "attention matmul", "quantize / dequantize", "softmax",
               "LayerNorm", "GELU", "other"]
    print("\nshare of profiled CPU time per op class; 'other' holds Inductor's fused kernels (static INT8, compiled here\n"
          "with kernel profiling on: its wall time reads slower than in the bench); GEMM eff. = the Linear layers' FLOPs\n"
          "/ their GEMM time / the measured peak of the same precision")
    print(f"\n{'variant':<16} {'tok':>4} {'ms':>8} " + " ".join(f"{c[:14]:>14}" for c in classes)
          + f" {'non-GEMM':>9} {'GEMM eff.':>10}")
    for r in rows:
        eff = "-" if r["gemm_efficiency_vs_peak"] is None else f"{100 * r['gemm_efficiency_vs_peak']:.0f}%"
        print(f"{r['variant']:<16} {r['tokens']:>4} {r['wall_ms']:8.1f} " +
              " ".join(f"{r['share'].get(c, 0.0):13.1f}%" for c in classes) + f" {r['non_gemm_share']:8.1f}% {eff:>10}")
    for r in rows:
        print(f"\ntop 10 kernels, {r['variant']} @{r['tokens']} (ms per forward, share of profiled time):")
        for name, ms, pct in r["top_kernels"]:
            print(f"  {ms:8.3f} ms {pct:5.1f}%  [{op_class(name)}] {name[:90]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
