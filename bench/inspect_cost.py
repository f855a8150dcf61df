"""What one inspection costs, as a multiple of one FP32 forward (same input, interleaved, medians).

    python bench/inspect_cost.py --model DIR [--tokens 160] [--runs 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", type=int, default=160)
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args(argv)
    from quant.threads import apply_policy

    apply_policy("auto")
    import torch

    from quant import ModelSet
    from quant.inspect import Inspector

    comp = ModelSet(a.model, variants=("fp32-cpu", "int8-cpu"), log=None)
    ins = Inspector(comp.fp32_eager, comp.int8_eager, comp.tokenizer, max_length=comp.max_length)
    words = "Ada Lovelace was born in London in 1815 and later worked on the analytical engine".split()
    context, n = "", 0
    while True:  # grow the passage until question + passage make the wanted number of tokens
        nxt = (context + " " + words[n % len(words)]).strip()
        if len(comp.tokenizer("When was Ada Lovelace born?", nxt)["input_ids"]) > a.tokens:
            break
        context, n = nxt, n + 1
    enc = comp.encode_checked(context, "When was Ada Lovelace born?")
    t0 = time.perf_counter()
    ins.weight_sqnr()  # once per model pair (cached): reported separately
    weights_s = time.perf_counter() - t0
    fwd, insp = [], []
    with torch.inference_mode():
        comp.fp32_eager(**enc.inputs)
        ins.inspect(context, "When was Ada Lovelace born?", enc=enc)
        for _ in range(a.runs):
            t = time.perf_counter()
            comp.fp32_eager(**enc.inputs)
            fwd.append(time.perf_counter() - t)
            t = time.perf_counter()
            ins.inspect(context, "When was Ada Lovelace born?", enc=enc)
            insp.append(time.perf_counter() - t)
    f, i = statistics.median(fwd) * 1e3, statistics.median(insp) * 1e3
    print(f"{comp.model_id}: {enc.n_tokens} tokens, {torch.get_num_threads()} threads, {a.runs} interleaved runs, medians")
    print(f"FP32 forward {f:.1f} ms | inspect {i:.1f} ms = {i / f:.2f} FP32 forwards | "
          f"weight statistics once per model {weights_s * 1e3:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
