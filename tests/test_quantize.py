"""INT8 quantization: structure, parity with FP32, size, artifacts, engines."""

import copy
import io
import math
import pickle

import pytest
import torch

import tinymodels
from quant import (QuantConfig, count_quantized, load_artifact, load_model, quantize, save_artifact,
                   state_dict_mib)
from quant.compare import predict
from quant.qa import encode
from quant.quantize import ARTIFACT_WEIGHTS, available_engines, choose_engine, use_engine


def sqnr_db(ref: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB (as torchao's tests use)."""
    return float(20 * torch.log10(ref.norm() / (ref - test).norm()))


def test_every_linear_is_quantized(random_model_dir):
    model = load_model(str(random_model_dir)).model
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    q = quantize(model)
    counts = count_quantized(q)
    # 2 layers x (q, k, v, attn out, intermediate, output) + qa_outputs (+ no pooler in QA heads)
    assert n_linear == 2 * 6 + 1
    assert counts["linear_int8"] == n_linear and counts["linear_fp32"] == 0
    assert counts["embedding_int8"] == 0 and counts["embedding_fp32"] == 3


def test_embedding_option(random_model_dir):
    q = quantize(load_model(str(random_model_dir)).model, QuantConfig(embeddings=True))
    counts = count_quantized(q)
    assert counts["embedding_int8"] == 3 and counts["embedding_fp32"] == 0


def test_quantize_does_not_mutate_input(random_model_dir):
    model = load_model(str(random_model_dir)).model
    before = copy.deepcopy(model.state_dict())
    quantize(model, QuantConfig(embeddings=True))
    assert all(type(m).__module__.startswith(("torch.nn.modules", "transformers")) for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_config_validation():
    with pytest.raises(ValueError, match="engine"):
        QuantConfig(engine="tpu")
    assert "Linear only" in str(QuantConfig())


def _logits(model, enc):
    with torch.inference_mode():
        out = model(**enc.inputs)
    return torch.cat([out.start_logits.flatten(), out.end_logits.flatten()])


@pytest.mark.parametrize("embeddings", [False, True])
def test_int8_matches_fp32_on_trained_model(trained_model_dir, embeddings):
    """Same answers on held-out questions; logits close by SQNR."""
    from quant import ModelSet

    comp = ModelSet(str(trained_model_dir), quant=QuantConfig(embeddings=embeddings), log=None)
    examples = tinymodels.held_out_examples(40) + tinymodels.held_out_examples(10, seed=99, unanswerable=True)
    fp32_correct = int8_correct = same = 0
    sqnrs = []
    for ex in examples:
        res = predict(comp, ex.context, ex.question)
        f, q = res["fp32-cpu"], res["int8-cpu"]
        fp32_correct += f.answer == ex.answer
        int8_correct += q.answer == ex.answer
        same += (f.start, f.end) == (q.start, q.end)
        enc = encode(comp.tokenizer, ex.question, ex.context)
        sqnrs.append(sqnr_db(_logits(comp.model("fp32-cpu"), enc), _logits(comp.model("int8-cpu"), enc)))
    assert fp32_correct >= 0.9 * len(examples), "the trained tiny model should really answer"
    assert same == len(examples)
    assert int8_correct == fp32_correct
    assert min(sqnrs) > 20.0, f"INT8 logits too far from FP32: min SQNR {min(sqnrs):.1f} dB"


def test_int8_size_ratio_when_linear_weights_dominate(tmp_path):
    # hidden 256, 2 layers, vocab ~400: Linear weights are ~90% of the bytes
    d = tinymodels.make_random_model(tmp_path, hidden_size=256, num_attention_heads=4, intermediate_size=1024,
                                     max_position_embeddings=64)
    model = load_model(str(d)).model
    fp32, int8 = state_dict_mib(model), state_dict_mib(quantize(model))
    emb = state_dict_mib(quantize(model, QuantConfig(embeddings=True)))
    assert 0.25 < int8 / fp32 < 0.40, (fp32, int8)
    assert emb < int8 and emb / fp32 < 0.30


def test_size_is_serialized_bytes(random_model_dir):
    model = load_model(str(random_model_dir)).model
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    assert state_dict_mib(model) == pytest.approx(buf.tell() / 2**20)
    q = quantize(model)
    # parameters() misses packed INT8 weights: the serialized size must not
    params = sum(p.numel() * p.element_size() for p in q.parameters()) / 2**20
    assert state_dict_mib(q) > params


@pytest.mark.parametrize("embeddings", [False, True])
def test_artifact_round_trip(trained_model_dir, tmp_path, embeddings):
    loaded = load_model(str(trained_model_dir))
    qc = QuantConfig(embeddings=embeddings)
    q = quantize(loaded.model, qc)
    out = save_artifact(q, loaded.tokenizer, tmp_path / "int8", qc, torch.backends.quantized.engine, loaded.model_id)
    # the weights file is plain tensors
    torch.load(out / ARTIFACT_WEIGHTS, weights_only=True)
    tok2, q2, manifest = load_artifact(out)
    assert manifest["quant_config"]["embeddings"] is embeddings
    ex = tinymodels.held_out_examples(1)[0]
    enc = encode(loaded.tokenizer, ex.question, ex.context)
    assert torch.equal(_logits(q, enc), _logits(q2, enc))
    assert tok2(ex.question)["input_ids"] == loaded.tokenizer(ex.question)["input_ids"]


class _Evil:
    def __reduce__(self):
        return (print, ("this would run code",))


def test_artifact_refuses_a_pickle_with_code(trained_model_dir, tmp_path):
    loaded = load_model(str(trained_model_dir))
    qc = QuantConfig()
    out = save_artifact(quantize(loaded.model, qc), loaded.tokenizer, tmp_path / "a", qc,
                        torch.backends.quantized.engine, loaded.model_id)
    with open(out / ARTIFACT_WEIGHTS, "wb") as f:
        pickle.dump({"x": _Evil()}, f)
    with pytest.raises(pickle.UnpicklingError):
        load_artifact(out)


def test_engine_choice_is_measured_and_set():
    before = torch.backends.quantized.engine
    try:
        choice = choose_engine("auto", hidden=64, intermediate=256, tokens=32, rounds=3)
        assert choice.engine in available_engines()
        assert torch.backends.quantized.engine == choice.engine
        if choice.how == "measured":
            assert set(choice.median_ms) >= {choice.engine} and all(v > 0 for v in choice.median_ms.values())
            assert choice.median_ms[choice.engine] == min(choice.median_ms.values())
        forced = choose_engine(available_engines()[0])
        assert forced.how == "requested" and torch.backends.quantized.engine == available_engines()[0]
        with pytest.raises(ValueError):
            use_engine("nonexistent")
    finally:
        torch.backends.quantized.engine = before


@pytest.mark.parametrize("engine", [e for e in ("x86", "fbgemm", "onednn") if e in torch.backends.quantized.supported_engines])
def test_each_engine_keeps_answers(trained_model_dir, engine):
    from quant import ModelSet

    before = torch.backends.quantized.engine
    try:
        comp = ModelSet(str(trained_model_dir), quant=QuantConfig(engine=engine), log=None)
        assert comp.engine == engine
        for ex in tinymodels.held_out_examples(15, seed=3):
            r = predict(comp, ex.context, ex.question)
            assert (r["fp32-cpu"].start, r["fp32-cpu"].end) == (r["int8-cpu"].start, r["int8-cpu"].end)
    finally:
        torch.backends.quantized.engine = before


def test_torchscript_trace_is_exact_and_checked(trained):
    from quant.quantize import TracedQA, trace

    traced = trained.model("int8-cpu")
    assert isinstance(traced, TracedQA)  # the app runs the traced INT8 model by default
    eager = trained.int8_eager
    for ex in tinymodels.held_out_examples(5, seed=17):
        enc = encode(trained.tokenizer, ex.question, ex.context)
        assert torch.equal(_logits(eager, enc), _logits(traced, enc))

    class ShapeBaked(torch.nn.Module):
        """Builds its output from a Python int: a trace would freeze the first length."""

        def forward(self, input_ids, attention_mask=None, token_type_ids=None, return_dict=True):
            n = int(input_ids.shape[1])
            logits = torch.arange(n, dtype=torch.float32).expand(input_ids.shape[0], n)
            return type("Out", (), {"start_logits": logits, "end_logits": logits})()

    a = {"input_ids": torch.ones(1, 8, dtype=torch.long)}
    b = {"input_ids": torch.ones(2, 13, dtype=torch.long)}
    with pytest.raises(RuntimeError, match="differs from eager"):
        trace(ShapeBaked(), [a, b])


# ------------------------------------------------------------------ selective quantization, per-channel


def test_keep_fp32_leaves_exactly_those_layers_float(random_model_dir):
    from quant.quantize import linear_names

    model = load_model(str(random_model_dir)).model
    keep = ("bert.encoder.layer.0.output.dense", "qa_outputs")
    q = quantize(model, QuantConfig(keep_fp32=keep))
    counts = count_quantized(q)
    assert counts["linear_fp32"] == 2 and counts["linear_int8"] == 13 - 2
    assert linear_names(q) == list(keep)  # the float Linear layers left are exactly the kept ones
    full = quantize(model)
    assert state_dict_mib(full) < state_dict_mib(q) < state_dict_mib(model)  # FP32 layers cost their bytes


def test_keep_fp32_globs_and_normalisation(random_model_dir):
    from quant.quantize import resolve_keep_fp32

    model = load_model(str(random_model_dir)).model
    assert resolve_keep_fp32(model, "*.output.dense") == ("bert.encoder.layer.0.attention.output.dense",
                                                          "bert.encoder.layer.0.output.dense",
                                                          "bert.encoder.layer.1.attention.output.dense",
                                                          "bert.encoder.layer.1.output.dense")
    assert QuantConfig(keep_fp32=" qa_outputs , qa_outputs,").keep_fp32 == ("qa_outputs",)
    assert "1 Linear kept in FP32" in str(QuantConfig(keep_fp32="qa_outputs"))


def test_unknown_keep_fp32_name_lists_the_valid_ones(random_model_dir):
    model = load_model(str(random_model_dir)).model
    with pytest.raises(ValueError) as info:
        quantize(model, QuantConfig(keep_fp32=("bert.encoder.layer.7.output.dense", "qa_outputs")))
    msg = str(info.value)
    assert "'bert.encoder.layer.7.output.dense'" in msg and "'qa_outputs'" not in msg.split("valid names")[0]
    assert "bert.encoder.layer.{0..1}.attention.self.query" in msg and "qa_outputs" in msg.split("valid names")[1]


def test_per_channel_weights(random_model_dir):
    model = load_model(str(random_model_dir)).model
    q = quantize(model, QuantConfig(per_channel=True))
    w = q.bert.encoder.layer[0].intermediate.dense.weight()
    assert w.qscheme() == torch.per_channel_affine and w.q_per_channel_scales().numel() == 64
    seed = quantize(model, QuantConfig(per_channel=False))  # --per-tensor: the seed's recipe
    assert seed.bert.encoder.layer[0].intermediate.dense.weight().qscheme() == torch.per_tensor_affine
    assert quantize(model).bert.encoder.layer[0].intermediate.dense.weight().qscheme() == torch.per_channel_affine  # default


def test_per_channel_weights_are_more_precise(trained_model_dir):
    """A per-row symmetric scale is never larger than the per-tensor one: a finer grid, so less rounding
    error in expectation (a particular 2-row layer can still round ~0.7 dB worse, as qa_outputs does here).

    (At the logits the tiny model can go either way by a few dB on one question; on MiniLM-QA, whose
    FFN weights have outlier rows, per-channel lifts the worst logits SQNR by ~6 dB: test_inspect.py.)
    """
    from quant.inspect import Inspector

    loaded = load_model(str(trained_model_dir))
    pt = Inspector(loaded.model, quantize(loaded.model, QuantConfig(per_channel=False)), loaded.tokenizer).weight_sqnr()
    pc = Inspector(loaded.model, quantize(loaded.model, QuantConfig(per_channel=True)), loaded.tokenizer).weight_sqnr()
    assert set(pt) == set(pc) and len(pt) == 13
    assert all(pc[n] >= pt[n] - 1.0 for n in pt), {n: (pt[n], pc[n]) for n in pt}
    assert sum(pc.values()) / len(pc) >= sum(pt.values()) / len(pt) + 1.0


def test_artifact_records_and_restores_selective_quantization(trained_model_dir, tmp_path):
    import json

    loaded = load_model(str(trained_model_dir))
    qc = QuantConfig(keep_fp32="*.intermediate.dense", per_channel=True)
    q = quantize(loaded.model, qc)
    out = save_artifact(q, loaded.tokenizer, tmp_path / "a", qc, torch.backends.quantized.engine, loaded.model_id)
    manifest = json.loads((out / "quantqa.json").read_text())
    assert manifest["quant_config"]["keep_fp32"] == ["bert.encoder.layer.0.intermediate.dense",
                                                     "bert.encoder.layer.1.intermediate.dense"]
    assert manifest["quant_config"]["per_channel"] is True
    assert manifest["layers"] == {"linear_fp32": 2, "linear_int8": 11, "embedding_fp32": 3, "embedding_int8": 0}
    _, q2, _ = load_artifact(out)
    assert count_quantized(q2) == manifest["layers"]
    ex = tinymodels.held_out_examples(1, seed=9)[0]
    enc = encode(loaded.tokenizer, ex.question, ex.context)
    assert torch.equal(_logits(q, enc), _logits(q2, enc))


@pytest.mark.minilm
def test_minilm_the_dynamic_card_splits_outlier_channels_and_keeps_more_answers_on_held_out_text(minilm_dir):
    """The dynamic card (the default QuantConfig) splits real weights' outlier channels (MiniLM-QA: the LayerNorm
    output has one channel ~15x the median's), planned on the real-text calibration half: K padded to its alignment,
    at most its budget of extra channels per input. On the held-out half it keeps more answers than the same card
    unsplit (measured, 120 questions, 2-core Xeon: logits SQNR 21 -> 31 dB, FP32's span 65-67 % -> 85-87 %). Inspect
    sees the widened layers as FP32's: every weight SQNR is the unsplit card's (the original rows and columns
    quantize alike), and every layer's local SQNR is read through the split."""
    import statistics
    from dataclasses import replace

    from quant import ModelSet
    from quant.evaluate import builtin_split
    from quant.inspect import Inspector
    from quant.metrics import ratio_db
    from quant.tune import QuestionSet

    comp = ModelSet(str(minilm_dir), variants=("fp32-cpu", "int8-cpu"), log=None)
    q = comp.quant
    assert q.split is not None and len(comp.splits) >= 12
    for idx, c in comp.splits.values():
        n = c.numel() - idx.numel()
        assert c.numel() % q.split_align == 0 and 0 < int((c[n:] > 0).sum()) <= q.split_budget
    plain = quantize(comp.fp32_eager, replace(q, split=None))
    qs = QuestionSet(comp, builtin_split("held-out", limit=60))
    split_r, plain_r = qs.score(comp.int8_eager), qs.score(plain)
    db = {k: ratio_db(statistics.fmean(r["noise"])) for k, r in (("split", split_r), ("plain", plain_r))}
    assert db["split"] >= db["plain"] + 6.0, db
    assert split_r["agreement"] >= plain_r["agreement"] + 10.0, (split_r["agreement"], plain_r["agreement"])
    ins, ins_plain = Inspector(comp.fp32_eager, comp.int8_eager, comp.tokenizer), Inspector(comp.fp32_eager, plain,
                                                                                           comp.tokenizer)
    w, w_plain = ins.weight_sqnr(), ins_plain.weight_sqnr()
    assert w.keys() == w_plain.keys() and all(abs(w[k] - w_plain[k]) < 1e-6 for k in w)
    ex = builtin_split("held-out", limit=1)[0]
    local = {s.name: s.sqnr_db for s in ins.inspect(ex.context, ex.question).layers}
    local_plain = {s.name: s.sqnr_db for s in ins_plain.inspect(ex.context, ex.question).layers}
    assert all(v is not None and math.isfinite(v) for v in local.values())
    assert statistics.median(local.values()) >= statistics.median(local_plain.values()) + 3.0, (local, local_plain)
