"""Where the split static card still loses precision: each group of Linear layers (Q/K/V, attention output, FFN input,
FFN output of one encoder layer; the QA head) kept in FP32 in turn, the logits noise it removes (MiniLM-QA, real-text
calibration, eager graphs, the calibration half).

    python bench/static_groups.py --model <MiniLM-QA> [--observer histogram]
"""
import sys, time, statistics, logging, warnings
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from quant.threads import apply_policy
apply_policy("auto")
warnings.simplefilter("ignore"); logging.disable(logging.WARNING)
import torch
from quant import ModelSet
from quant.evaluate import builtin_split
from quant.metrics import ratio_db
from quant.static import StaticOptions, convert, calibration_texts
from quant.tune import QuestionSet
from quant.quantize import linear_names
import argparse
ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--observer", default="histogram")
A = ap.parse_args()
M = A.model
ms = ModelSet(M, variants=("fp32-cpu", "int8-cpu"), log=None)
tok, fp32 = ms.tokenizer, ms.fp32_eager
calib = calibration_texts("realtext")
qs = QuestionSet(ms, builtin_split("calibration"))
layers = linear_names(fp32)
groups = {"none": ()}
for L in range(6):
    p = f"bert.encoder.layer.{L}."
    groups[f"L{L} qkv"] = tuple(p + f"attention.self.{x}" for x in ("query", "key", "value"))
    groups[f"L{L} attn-out"] = (p + "attention.output.dense",)
    groups[f"L{L} ffn-in"] = (p + "intermediate.dense",)
    groups[f"L{L} ffn-out"] = (p + "output.dense",)
groups["qa head"] = tuple(n for n in layers if "qa_outputs" in n)
opt = StaticOptions(split=2.0, observer=A.observer)
base = None
for name, keep in groups.items():
    g = convert(fp32, tok, max_length=ms.max_length, calibration=calib, keep_fp32=keep, options=opt).model(tok.pad_token_id or 0)
    r = qs.score(g); n = statistics.fmean(r["noise"])
    base = base or n
    print(f"{name:14s} {r['agreement']:5.1f}%  {ratio_db(n):5.1f} dB  share of the card's noise {100*(1-n/base):5.1f} %", flush=True)
