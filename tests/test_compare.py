"""ModelSet: every variant on one question, contract of the result, CUDA fallback."""

import pytest
import torch

import tinymodels
from quant.compare import compare
from quant.inspection import inspect_question
from quant import InputError, ModelSet
from quant.compare import EXTRA_VARIANTS


def test_compare_answers_and_contract(trained):
    ex = tinymodels.held_out_examples(1, seed=5)[0]
    c = compare(trained, ex.context, ex.question, runs=3)
    d = c.to_dict()
    assert [r["variant"] for r in d["results"]] == ["fp32-cpu", "int8-cpu", "fp32-cuda"]
    for r in d["results"][:2]:
        assert r["available"] is True
        assert r["answer"] == ex.answer
        assert ex.context[r["start"]:r["end"]] == r["answer"]
        assert 0 < r["score"] <= 1
        lat = r["latency_ms"]
        assert lat["runs"] == 3 and 0 < lat["median"] <= lat["p90"]
    assert d["results"][0]["speedup"] == 1.0
    assert d["int8_agrees_with_fp32"] is True
    assert set(d["sizes_mib"]) == {"fp32", "int8"} and d["sizes_mib"]["int8"] < d["sizes_mib"]["fp32"]
    assert d["threads"] == torch.get_num_threads()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_cuda_variant_reports_unavailable_without_gpu(trained):
    ex = tinymodels.held_out_examples(1)[0]
    r = compare(trained, ex.context, ex.question, runs=1).result("fp32-cuda")
    assert r.available is False and "CUDA is not available" in r.reason
    assert r.latency is None and r.to_dict()["latency_ms"] is None


def test_unanswerable_gives_empty_answer(trained):
    ex = tinymodels.held_out_examples(1, seed=21, unanswerable=True)[0]
    c = compare(trained, ex.context, ex.question, runs=1)
    assert c.result("fp32-cpu").answer == "" and c.result("int8-cpu").answer == ""
    assert c.result("fp32-cpu").start == c.result("fp32-cpu").end == 0


def test_long_passage_answer_in_later_window(trained):
    """The fact sits far past the first window; sliding windows must still find it.

    Windows are shortened to 64 tokens because the tiny model was trained on
    short passages (its late position embeddings are untrained).
    """
    rng = __import__("random").Random(4)
    ex = tinymodels.make_example(rng, fillers=0)
    filler = " ".join(tinymodels.FILLERS * 3)  # ~150 tokens before the fact
    context = filler + " " + ex.context
    saved, trained.max_length = trained.max_length, 64
    try:
        c = compare(trained, context, ex.question, runs=1)
    finally:
        trained.max_length = saved
    assert c.windows >= 3
    for v in ("fp32-cpu", "int8-cpu"):
        r = c.result(v)
        assert r.answer == ex.answer
        assert r.start == len(filler) + 1 + ex.answer_start


def test_runs_capped_for_many_windows(trained):
    ex = tinymodels.held_out_examples(1)[0]
    context = " ".join(tinymodels.FILLERS * 40) + " " + ex.context  # ~2,000 tokens: 7+ windows
    c = compare(trained, context, ex.question, runs=50)
    assert c.windows * c.runs <= 100 and c.notes


def test_bad_input_is_an_input_error(trained):
    with pytest.raises(InputError, match="empty"):
        compare(trained, "   ", "Where?", runs=1)
    with pytest.raises(InputError, match="Timed runs"):
        compare(trained, "text", "Where?", runs=0)


def test_question_too_long_for_window(trained):
    ex = tinymodels.held_out_examples(1)[0]
    saved, trained.max_length = trained.max_length, 64
    try:
        with pytest.raises(InputError, match="question is too long"):
            compare(trained, ex.context, " ".join(["Where"] * 60), runs=1)
    finally:
        trained.max_length = saved


def test_extra_variants_are_reported(trained_model_dir):
    comp = ModelSet(str(trained_model_dir), variants=("fp32-cpu", "int8-cpu") + EXTRA_VARIANTS, log=None)
    ex = tinymodels.held_out_examples(1, seed=8)[0]
    c = compare(comp, ex.context, ex.question, runs=2)
    bf16 = c.result("bf16-cpu")
    from quant import env

    if env.has_native_bf16():
        assert bf16.available and bf16.answer == ex.answer and bf16.latency.runs == 2
    else:
        assert not bf16.available and "no native bf16" in bf16.reason
    fp16 = c.result("fp16-cuda")
    if torch.cuda.is_available():
        assert fp16.available and fp16.answer == ex.answer and fp16.latency.runs == 2
    else:
        assert fp16.available is False and "CUDA is not available" in fp16.reason and fp16.latency is None
    assert [r.variant for r in c.results] == ["fp32-cpu", "int8-cpu", "bf16-cpu", "fp16-cuda"]


def test_unknown_variant_rejected(trained_model_dir):
    with pytest.raises(ValueError, match="unknown variant"):
        ModelSet(str(trained_model_dir), variants=("fp64-tpu",), log=None)


def test_gpu_failure_during_request_keeps_cpu_results(trained):
    """A variant that fails mid-request (e.g. CUDA OOM) is reported; the others still answer."""
    from quant.compare import _Variant

    class Exploding(torch.nn.Module):
        def forward(self, **kw):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    saved = trained._variants.get("fp32-cuda")
    trained._variants["fp32-cuda"] = _Variant("fp32-cuda", Exploding(), "cpu")
    try:
        ex = tinymodels.held_out_examples(1, seed=2)[0]
        c = compare(trained, ex.context, ex.question, runs=2)
        cuda = c.result("fp32-cuda")
        assert cuda.available is False and "out of memory" in cuda.reason
        assert c.result("fp32-cpu").answer == ex.answer and c.result("int8-cpu").answer == ex.answer
    finally:
        trained._variants["fp32-cuda"] = saved


def test_without_torch_ao_quantization_the_app_starts_and_the_card_says_why(trained_model_dir, monkeypatch):
    """torch 2.13 deprecates torch.ao.quantization: if an import of it fails, the dynamic card says why and the
    other cards (and the whole page) still serve."""
    import sys

    import app as app_module

    monkeypatch.setitem(sys.modules, "torch.ao.quantization", None)  # `from torch.ao.quantization import` fails
    comp = ModelSet(str(trained_model_dir), variants=("fp32-cpu", "int8-cpu"), log=None)
    why = comp.availability()["int8-cpu"]
    assert why and "torch.ao.quantization" in why and "bench/README.md" in why
    assert comp.sizes_mib["int8"] is None and comp.layer_counts["linear_int8"] == 0
    ex = tinymodels.held_out_examples(1, seed=13)[0]
    c = compare(comp, ex.context, ex.question, runs=1)
    assert c.result("fp32-cpu").answer == ex.answer and c.result("int8-cpu").available is False
    demo = app_module.build_demo(comp, warm_examples=False)  # the page builds, its INT8 card saying why
    card_md = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "md-int8-cpu")
    assert "Not available" in card_md.value and "torch.ao.quantization" in card_md.value.replace("\\", "")
    demo.scheduler.stop()
    card = app_module.card_markdown(c.result("int8-cpu").to_dict(), "INT8 · CPU")
    assert "Not available" in card and "torch.ao.quantization" in card.replace("\\", "")  # Markdown-escaped
    with pytest.raises(InputError, match="Inspect needs dynamic INT8"):
        inspect_question(comp, ex.context, ex.question)


def test_without_torch_jit_trace_int8_runs_eagerly_and_says_so(trained_model_dir, monkeypatch):
    monkeypatch.delattr(torch.jit, "trace")
    comp = ModelSet(str(trained_model_dir), variants=("fp32-cpu", "int8-cpu"), log=None)
    assert comp.availability()["int8-cpu"] is None
    assert "torch.jit.trace is not in this torch" in comp.torchscript_note
    ex = tinymodels.held_out_examples(1, seed=14)[0]
    assert compare(comp, ex.context, ex.question, runs=1).result("int8-cpu").answer == ex.answer
