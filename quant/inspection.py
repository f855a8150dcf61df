"""The Inspect operation over a `ModelSet`: the layer report for one question, FP32 vs INT8 vs INT8 with the
K least precise layers kept in FP32 (timed side by side), and static INT8's logits SQNR when it is loaded.

The metrics and the hooks live in inspect.py (Inspector); this module only wires them to the variants.
"""

from __future__ import annotations

from typing import Any

import torch

from .compare import decode, run_windows, window_runs
from .inputs import InputError, check_inputs, check_int
from .inspect import Inspector, json_db, least_precise, sqnr_db
from .timing import measure_interleaved
from .variants import STATIC_VARIANT, ModelSet


def inspector_for(models: ModelSet) -> Inspector:
    """The model set's Inspector, made on first use (weight statistics are computed once)."""
    if models.fp32_eager is None:
        raise InputError(f"Inspect needs the FP32 model: {models.fp32_reason}")
    if models.int8_eager is None:
        raise InputError(f"Inspect needs dynamic INT8: {models.int8_reason}")
    return models.inspector()


def inspect_question(models: ModelSet, context: str, question: str, keep_least_precise: int = 0, runs: int = 5,
                     warmup: int = 1) -> dict[str, Any]:
    """The report's dict (see inspect.Report) plus "mixed" (answers, latencies, sizes of FP32, INT8 and INT8 with
    the K least precise layers in FP32, timed interleaved) and, when the static variant is loaded, "static" (its
    logits SQNR vs FP32 and its answer). Raises InputError for bad input."""
    context, question, runs = check_inputs(context, question, runs)
    k = check_int(keep_least_precise, "Layers kept in FP32", 0, models.layer_counts["linear_int8"])
    ins = inspector_for(models)
    enc = models.encode_checked(context, question)
    report = ins.inspect(context, question, enc)
    d = report.to_dict()
    d.update(context=context, question=question)
    keep = least_precise(report, k)
    int8 = models.variant("int8-cpu").model if "int8-cpu" in models.variant_names else models.int8_eager
    entries = {"fp32-cpu": (models.fp32_eager, models.sizes_mib["fp32"], "FP32"),
               "int8-cpu": (int8, models.sizes_mib["int8"], "INT8")}
    if k:
        m, size = models.mixed(keep)
        entries["int8-mixed"] = (m, size, f"INT8, {k} least precise in FP32")
    notes: list[str] = []
    runs = window_runs(runs, warmup, enc.n_windows, notes)
    timed = measure_interleaved({n: (lambda m=m: run_windows(m, enc.inputs), None) for n, (m, _, _) in entries.items()},
                                runs=runs, warmup=warmup)
    results, base = [], None
    for n, (_, _, label) in entries.items():
        stats, out, err = timed[n]
        if err is not None:
            results.append({"variant": n, "label": label, "available": False,
                            "reason": f"{type(err).__name__}: {str(err)[:200]}"})
            continue
        r = decode(n, out, enc, context, stats).to_dict()
        r["label"] = label
        base = base or (r if n == "fp32-cpu" else None)
        r["agrees"] = None if base is None else (r["start"], r["end"]) == (base["start"], base["end"])
        results.append(r)
    d["mixed"] = {"k": k, "keep_fp32": keep, "results": results, "notes": notes,
                  "sizes_mib": {n: None if size is None else round(size, 2) for n, (_, size, _) in entries.items()}}
    static = models.variant(STATIC_VARIANT).model if STATIC_VARIANT in models.variant_names else None
    if static is not None and timed["fp32-cpu"][2] is None:
        f_s, f_e = timed["fp32-cpu"][1]  # FP32's logits on these inputs, from the timed runs just made
        with torch.inference_mode():
            s_s, s_e = run_windows(static, enc.inputs)
        mask = enc.inputs["attention_mask"].bool()
        ans = decode(STATIC_VARIANT, (s_s, s_e), enc, context, None)
        d["static"] = {"answer": ans.answer, "start": ans.start, "end": ans.end,
                       "logits_sqnr_db": {"start": json_db(sqnr_db(f_s[mask], s_s[mask])),
                                          "end": json_db(sqnr_db(f_e[mask], s_e[mask]))}}
    return d
