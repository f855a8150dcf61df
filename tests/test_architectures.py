"""Every extractive-QA family transformers has: FP32, dynamic INT8, static INT8 and Inspect, on tiny random configs.

BERT, DistilBERT, RoBERTa, XLM-RoBERTa, ALBERT, ELECTRA, DeBERTa-v2 and MobileBERT, each built offline from a
config (tinymodels.make_arch_model) and loaded through the same `from_pretrained` path as a hub model. Random
weights: the answers are arbitrary, so the checks are that every variant runs and decodes, that INT8 and static
INT8 stay close to FP32 on the logits, and that Inspect names each family's layers.
"""

import pytest
import torch

import tinymodels
from quant.compare import compare
from quant.inspection import inspect_question
from quant import ModelSet
from quant.compare import STATIC_VARIANT, run_windows
from quant.figures import heatmap_figure
from quant.metrics import sqnr_db


@pytest.fixture(scope="module")
def arch_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("archs")
    return {f: tinymodels.make_arch_model(f, root / f) for f in tinymodels.ARCHITECTURES}


@pytest.mark.parametrize("family", tinymodels.ARCHITECTURES)
def test_every_variant_and_inspect_work(family, arch_dirs):
    comp = ModelSet(str(arch_dirs[family]), variants=("fp32-cpu", "int8-cpu", STATIC_VARIANT), log=None)
    assert comp.availability() == {"fp32-cpu": None, "int8-cpu": None, STATIC_VARIANT: None}, comp.availability()
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in comp.fp32_eager.modules())
    assert comp.layer_counts["linear_int8"] == n_linear  # every Linear quantized (dynamic)
    ex = tinymodels.held_out_examples(1, seed=91)[0]
    passage = ex.context
    while comp.encode_checked(passage, ex.question).n_windows < 2:  # long enough for more than one window
        passage += " " + ex.context
    c = compare(comp, passage, ex.question, runs=1)
    assert c.windows > 1, (family, c.windows)  # the windows' stitching is exercised for every family
    for r in c.results:
        assert r.available, (r.variant, r.reason)
        assert c.context[r.start:r.end] == r.answer and r.latency.runs == 1
    enc = comp.encode_checked(passage, ex.question)
    mask = enc.inputs["attention_mask"].bool()
    with torch.inference_mode():
        ref = torch.cat([t[mask] for t in run_windows(comp.fp32_eager, enc.inputs)])
        for v in ("int8-cpu", STATIC_VARIANT):
            got = torch.cat([t[mask] for t in run_windows(comp.model(v), enc.inputs)])
            db = sqnr_db(ref, got)
            # close to FP32 (random tiny weights: 25-45 dB measured) but not FP32 itself: an "INT8" that silently
            # ran in FP32 would be exact (infinite SQNR) or within float rounding (> 90 dB)
            assert 15.0 < db < 80.0, (family, v, db)
    d = inspect_question(comp, ex.context, ex.question, keep_least_precise=1, runs=1)
    kinds = {x["name"]: x["kind"] for x in d["layers"]}
    assert len(kinds) == n_linear and "linear" not in kinds.values(), kinds
    per_layer = [x for x in d["layers"] if x["layer"] is not None]
    assert {"query", "key", "value", "attention output", "FFN in", "FFN out"} <= {x["kind"] for x in per_layer}
    fig = heatmap_figure(d)
    rows, cols = len(fig.data[0].y), len(fig.data[0].x)
    assert rows == (1 if family == "albert" else 2) and cols >= 6  # ALBERT: one layer, shared by every depth
    static_db = d["static"]["logits_sqnr_db"]["start"]  # null would mean "no noise": static INT8 ran in FP32
    assert static_db is not None and 15 < static_db < 80, (family, static_db)
    assert d["mixed"]["results"][2]["available"]  # INT8 with the least precise layer kept in FP32
