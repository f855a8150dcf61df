"""Where static INT8 loses the answers on real text, and what outlier channel splitting gives back.

    python bench/outliers.py --model <MiniLM-QA> [--sites] [--ratios 2,3,4] [--compiled]

1. `--sites`: each Linear quantized alone (static INT8, real-text calibration; every other layer FP32), its logits
   noise on the calibration half (every other question): the noise of all layers quantized is close to the sum of
   these, so this is each layer's share. With it, each input's largest channel range over its median channel's.
2. Static INT8 (real-text calibration) without and with split outlier channels at each ratio, and dynamic
   per-channel INT8 (torch.ao, the dynamic card's recipe) without and with them: same span as FP32, EM and logits
   SQNR on both halves of the built-in set (the ratio is chosen on the calibration half; the held-out half is never
   calibrated or tuned on). Static rows are eager quantized graphs, or with `--compiled` the packages the card
   serves (max-autotune, a compilation each).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--sites", action="store_true", help="also each Linear's share of the noise (about 6 min)")
    ap.add_argument("--ratios", default="2,3,4")
    ap.add_argument("--compiled", action="store_true", help="score the compiled packages (a build each)")
    ap.add_argument("--cache", default=None, help="static package cache for --compiled")
    a = ap.parse_args(argv)
    from quant.threads import apply_policy

    apply_policy("auto")
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)

    from quant import ModelSet
    from quant.env import _cpuinfo
    from quant.evaluate import builtin_split
    from quant.metrics import ratio_db
    from quant.quantize import QuantConfig, linear_names, quantize
    from quant.smooth import input_absmax, split_outliers, split_sites
    from quant.static import (StaticOptions, build_static, calibration_inputs, calibration_texts, convert,
                              input_names)
    from quant.tune import QuestionSet

    ms = ModelSet(a.model, variants=("fp32-cpu", "int8-cpu"), log=None)
    tok, fp32 = ms.tokenizer, ms.fp32_eager
    names = input_names(tok)
    calib = calibration_texts("realtext")
    windows = [dict(zip(names, x)) for x in calibration_inputs(tok, calib, ms.max_length, names)]
    halves = {h: QuestionSet(ms, builtin_split(h)) for h in ("calibration", "held-out")}
    print(f"{a.model}: {_cpuinfo()[0]}; real-text calibration {len(calib)} pairs, {len(windows)} windows; "
          f"{len(halves['calibration'])} + {len(halves['held-out'])} questions", flush=True)

    if a.sites:
        qs = halves["calibration"]
        every = list(range(0, len(qs), 2))
        layers = linear_names(fp32)
        ranges = {s.linears[0]: float(x.max() / x.median()) for s, x in
                  zip(split_sites(fp32), input_absmax(fp32, windows, split_sites(fp32)))}
        mods = dict(fp32.named_modules())
        print("\nEach Linear quantized alone (static, eager graph): logits SQNR on the calibration half "
              "(every other question), and its input's largest channel range / the median channel's")
        total = 0.0
        for n in layers:
            g = convert(fp32, tok, max_length=ms.max_length, keep_fp32=tuple(k for k in layers if k != n),
                        calibration=calib).model(tok.pad_token_id or 0)
            noise = statistics.fmean(qs.noise(g, every))
            total += noise
            r = next((v for lin, v in ranges.items() if lin is mods[n]), None)
            print(f"  {ratio_db(noise):5.1f} dB  {n}" + (f"  (max/median {r:.1f})" if r else ""), flush=True)
        print(f"  sum of the layers' noise: {ratio_db(total):.1f} dB", flush=True)

    def row(label, model, extra=""):
        cells = []
        for h, qs in halves.items():
            r = qs.score(model)
            cells.append(f"{r['agreement']:5.1f} % EM {r['exact_match']:4.1f} {ratio_db(statistics.fmean(r['noise'])):5.1f} dB")
        print(f"{label:44s} " + "   ".join(cells) + extra, flush=True)

    f = halves["held-out"].score(fp32)
    print(f"\nsame span as FP32 / EM / logits SQNR: calibration half | held-out half (FP32 held-out EM "
          f"{f['exact_match']:.1f})")
    ratios = [float(r) for r in a.ratios.split(",")]
    for r in [None] + ratios:
        options = StaticOptions(split=r)
        t = time.perf_counter()
        if a.compiled:
            m = build_static(fp32, tok, max_length=ms.max_length, calibration=calib, options=options,
                             cache_dir=a.cache)
            how = f"  (built in {m.info['build_s']:.0f} s, {m.info.get('compile')})"
        else:
            m = convert(fp32, tok, max_length=ms.max_length, calibration=calib, options=options).model(
                tok.pad_token_id or 0)
            how = f"  ({time.perf_counter() - t:.0f} s)"
        extra = "" if r is None else f", +{_extra(split_outliers(fp32, windows, r))} channels"
        row(f"static{' compiled' if a.compiled else ''}, " + ("no split" if r is None else f"split at {r:g}x"),
            m, extra + how)
    row("dynamic per-channel (torch.ao), no split", quantize(fp32, QuantConfig(per_channel=True)))
    for r in ratios:
        sp = split_outliers(fp32, windows, r)
        row(f"dynamic per-channel, split at {r:g}x", quantize(sp, QuantConfig(per_channel=True)),
            f", +{_extra(sp)} channels")
    return 0


def _extra(model) -> int:
    return sum(b.numel() for n, b in model.named_buffers() if n.endswith("outlier_split.idx"))


if __name__ == "__main__":
    raise SystemExit(main())
