"""What Inductor's options change for the static INT8 package (issue #25): one converted graph, compiled several ways.

    python bench/inductor_options.py --model <bert-base shape> [--runs 20] [--only base,autotune]

Rows (AOTInductor, which always has a C++ wrapper: `cpp_wrapper` is a torch.compile option and changes nothing
here): base (freezing on, no max-autotune: what the package was before), concat (torchao's quantized concat-linear
pass: Q/K/V as one GEMM), autotune (max-autotune with the C++ GEMM template and oneDNN as candidates), noprepack
(cpp.weight_prepack off), nofreeze (freezing off). Each package is timed interleaved with FP32 at 160 and 384
tokens (medians) and checked against FP32 and against the eager quantized graph (start-logits SQNR).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = {
    "base": {"freezing": True, "max_autotune": False},
    "concat": {"freezing": True, "max_autotune": False},  # + torchao's concat-linear post-grad pass
    "autotune": {"freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN"},
    "noprepack": {"freezing": True, "max_autotune": False, "cpp.weight_prepack": False},
    "nofreeze": {"freezing": False, "max_autotune": False},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--only", default=",".join(CONFIGS))
    ap.add_argument("--workdir", default="/tmp")
    a = ap.parse_args(argv)
    from quant.threads import apply_policy

    apply_policy("auto")
    warnings.simplefilter("ignore")
    import torch

    from quant import ModelSet
    from quant.bench import synthetic_inputs
    from quant.env import cpu_name
    from quant.metrics import sqnr_db
    from quant.static import _load_runner, convert
    from quant.timing import measure_interleaved

    logging.getLogger("torch._inductor").setLevel(logging.ERROR)
    ms = ModelSet(a.model, variants=("fp32-cpu",), log=None)
    print(f"cpu: {cpu_name()} | threads {torch.get_num_threads()} | torch {torch.__version__}", flush=True)
    runners = {}
    with torch.no_grad():
        conv = convert(ms.fp32_eager, ms.tokenizer, max_length=384)
        ep = torch.export.export(conv.graph, tuple(conv.example), dynamic_shapes=conv.dynamic_shapes)
        for name in a.only.split(","):
            path, t0 = Path(a.workdir) / f"inductor-options-{name}.pt2", time.perf_counter()
            patch = {}
            if name == "concat":
                from torchao.prototype.inductor.fx_passes.quantized_concat_linear_fusion_cpu import (
                    _concat_linear_quantized_cpu)
                patch = {"post_grad_custom_post_pass": _concat_linear_quantized_cpu}
            try:
                with torch._inductor.config.patch(patch):
                    torch._inductor.aoti_compile_and_package(ep, package_path=str(path), inductor_configs=CONFIGS[name])
                runners[name] = _load_runner(path)[0]
                print(f"{name}: compiled in {time.perf_counter() - t0:.0f} s", flush=True)
            except Exception as exc:
                print(f"{name}: failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
    tok, cfg = ms.tokenizer, ms.fp32_eager.config
    for n in (160, 384):
        x = synthetic_inputs(cfg.vocab_size, n, tok.cls_token_id or 0, tok.sep_token_id or 0)
        xs = [x[k] for k in conv.names]
        with torch.inference_mode():
            ref, eager_q = ms.fp32_eager(**x).start_logits, conv.graph(*xs)[0]
            sq = {k: (sqnr_db(ref, r(xs)[0]), sqnr_db(eager_q, r(xs)[0])) for k, r in runners.items()}
            fns = {"fp32": (lambda x=x: ms.fp32_eager(**x), None)}
            fns.update({k: (lambda r=r, xs=xs: r(xs), None) for k, r in runners.items()})
            t = measure_interleaved(fns, runs=a.runs, warmup=3, seed=n)
        f = t["fp32"][0].median
        print(f"@{n}: " + "  ".join(f"{k} {v[0].median:.1f} ms ({f / v[0].median:.2f}x)" for k, v in t.items()),
              flush=True)
        print("   start-logits SQNR vs FP32 / vs the eager quantized graph: "
              + "  ".join(f"{k} {p:.1f}/{q:.1f} dB" for k, (p, q) in sq.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
