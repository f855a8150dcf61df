"""Static INT8 with eager attention vs one fused SDPA kernel: speed on the bert-base shape, answers on MiniLM-QA.

    python bench/attention.py --speed-model <bert-base shape> --accuracy-model <MiniLM-QA> [--runs 20]

Both packages are built with the same calibration and observer (StaticOptions(attention=...)); timed interleaved
with FP32 and the dynamic card at 64 / 160 / 384 tokens (medians, logits SQNR vs FP32 on the same input); scored
on the built-in real-text set (all 240 and the held-out half) by the share of questions with FP32's span.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speed-model", required=True)
    ap.add_argument("--accuracy-model", required=True)
    ap.add_argument("--runs", type=int, default=20)
    a = ap.parse_args(argv)
    from quant.threads import apply_policy

    apply_policy("auto")
    warnings.simplefilter("ignore")
    import torch

    from quant import ModelSet
    from quant.bench import synthetic_inputs
    from quant.env import cpu_name
    from quant.evaluate import BUILTIN, builtin_split, load_squad
    from quant.metrics import ratio_db, sqnr_db
    from quant.static import ATTENTIONS, StaticOptions, build_static
    from quant.timing import measure_interleaved
    from quant.tune import QuestionSet

    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731

    def packages(ms):
        return {att: build_static(ms.fp32_eager, ms.tokenizer, max_length=ms.max_length, log=log,
                                  options=StaticOptions(attention=att), source_id=ms.model_id) for att in ATTENTIONS}

    print(f"cpu: {cpu_name()} | threads {torch.get_num_threads()}")
    acc = ModelSet(a.accuracy_model, variants=("fp32-cpu",), log=None)
    qs, held = QuestionSet(acc, load_squad(BUILTIN)), QuestionSet(acc, builtin_split("held-out"))
    for att, m in packages(acc).items():
        s, h = qs.score(m), held.score(m)
        print(f"{att:>5} attention: same span as FP32 on all {len(qs)}: {s['agreement']:.1f} %, held-out {len(held)}: "
              f"{h['agreement']:.1f} % (EM {h['exact_match']:.1f}, F1 {h['f1']:.1f}); median logits SQNR "
              f"{statistics.median(ratio_db(n) for n in s['noise']):.1f} dB", flush=True)
    comp = ModelSet(a.speed_model, variants=("fp32-cpu", "int8-cpu"), log=None)
    pk, cfg, tok = packages(comp), comp.fp32_eager.config, comp.tokenizer
    for n in (64, 160, 384):
        x = synthetic_inputs(cfg.vocab_size, n, tok.cls_token_id or 0, tok.sep_token_id or 0)
        with torch.inference_mode():
            ref = comp.fp32_eager(**x).start_logits
            sq = {att: sqnr_db(ref, m(**x).start_logits) for att, m in pk.items()}
        fns = {"fp32": (lambda x=x: comp.fp32_eager(**x), None),
               "int8-cpu": (lambda x=x: comp.model("int8-cpu")(**x), None)}
        fns.update({f"static-{att}": (lambda m=m, x=x: m(**x), None) for att, m in pk.items()})
        t = measure_interleaved(fns, runs=a.runs, warmup=3, seed=n)
        f = t["fp32"][0].median
        print(f"@{n}: " + "  ".join(f"{k} {v[0].median:.1f} ms ({f / v[0].median:.2f}x)" for k, v in t.items())
              + "  | SQNR " + " ".join(f"{att} {s:.1f} dB" for att, s in sq.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
