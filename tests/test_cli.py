"""The CLI contract: python -m quant ... (run as a user would, in a subprocess)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tinymodels

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, timeout=300):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "quant", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def test_compare_json_contract(trained_model_dir):
    ex = tinymodels.held_out_examples(1, seed=11)[0]
    p = run_cli("compare", "--model", trained_model_dir, "--context", ex.context, "--question", ex.question,
                "--runs", 3, "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)  # stdout is exactly one JSON object; progress goes to stderr
    assert d["model"] == str(trained_model_dir)
    assert set(d["sizes_mib"]) >= {"fp32", "int8"}
    by = {r["variant"]: r for r in d["results"]}
    assert list(by) == ["fp32-cpu", "int8-cpu", "fp32-cuda"]
    for v in ("fp32-cpu", "int8-cpu"):
        r = by[v]
        assert {"variant", "available", "answer", "start", "end", "score", "latency_ms"} <= set(r)
        assert r["available"] and r["answer"] == ex.answer
        assert ex.context[r["start"]:r["end"]] == r["answer"]
        assert set(r["latency_ms"]) >= {"median", "p90", "runs"} and r["latency_ms"]["runs"] == 3
    cuda = by["fp32-cuda"]
    import torch

    if torch.cuda.is_available():
        assert cuda["available"] and cuda["answer"] == ex.answer and cuda["latency_ms"]["runs"] == 3
    else:
        assert cuda["available"] is False and "CUDA is not available" in cuda["reason"]
        assert cuda["latency_ms"] is None and cuda["answer"] == ""


def test_compare_context_file_and_table(trained_model_dir, tmp_path):
    ex = tinymodels.held_out_examples(1, seed=12)[0]
    f = tmp_path / "passage.txt"
    f.write_text(ex.context, encoding="utf-8")
    p = run_cli("compare", "--model", trained_model_dir, "--context-file", f, "--question", ex.question, "--runs", 2)
    assert p.returncode == 0, p.stderr
    assert "int8-cpu" in p.stdout and ex.answer in p.stdout and "MiB" in p.stdout


def test_bad_model_path_is_one_clear_line(tmp_path):
    p = run_cli("compare", "--model", tmp_path / "no-such-model", "--context", "x", "--question", "y")
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    err = p.stderr.strip().splitlines()
    assert err[-1].startswith("error: Cannot load model") and "no-such-model" in err[-1]
    assert "no such folder" in err[-1] and "save_pretrained" in err[-1]
    assert "network" not in err[-1] and "hub id while online" not in err[-1]  # advice for what was given
    assert "(no such folder)" in p.stderr  # the loading line says what it tried


def test_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    p = run_cli("quantize", "--model", tmp_path, "--out", tmp_path / "out")
    assert p.returncode == 2 and "Traceback" not in p.stderr and "Cannot load model" in p.stderr


def test_unknown_hub_id_offline():
    p = run_cli("compare", "--model", "no-such-org/no-such-model", "--context", "x", "--question", "y")
    assert p.returncode == 2 and "Traceback" not in p.stderr and "no-such-org/no-such-model" in p.stderr
    assert "hub id no-such-org/no-such-model from the local hub cache (HF_HUB_OFFLINE is set)" in p.stderr
    assert "HF_HUB_OFFLINE is set" in p.stderr.strip().splitlines()[-1]


def test_local_folder_is_logged_as_one(trained_model_dir):
    ex = tinymodels.held_out_examples(1, seed=13)[0]
    p = run_cli("compare", "--model", trained_model_dir, "--context", ex.context, "--question", ex.question,
                "--runs", 1)
    assert p.returncode == 0 and f"loading local folder {trained_model_dir}" in p.stderr
    assert "hub" not in p.stderr.split("\n")[0]


def test_bad_input_exit_2(trained_model_dir):
    p = run_cli("compare", "--model", trained_model_dir, "--context", "   ", "--question", "Where?")
    assert p.returncode == 2 and "passage is empty" in p.stderr


def test_quantize_writes_artifact_and_prints_sizes(trained_model_dir, tmp_path):
    p = run_cli("quantize", "--model", trained_model_dir, "--out", tmp_path / "int8", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["sizes_mib"]["int8"] < d["sizes_mib"]["fp32"]
    assert (tmp_path / "int8" / "int8_state_dict.pt").is_file() and (tmp_path / "int8" / "config.json").is_file()
    p = run_cli("quantize", "--model", trained_model_dir, "--out", tmp_path / "int8b")
    assert "FP32:" in p.stdout and "INT8:" in p.stdout


@pytest.mark.minilm
def test_quantize_splits_outlier_channels_unless_told_not_to(minilm_dir, tmp_path):
    """As the dynamic card, on real weights (MiniLM-QA has outlier channels): split by default (the plans in the
    folder's state dict), `--no-split` not."""
    from quant.smooth import plans_in

    for flags, split in (((), 2.0), (("--no-split",), None)):
        out = tmp_path / ("split" if split else "plain")
        p = run_cli("quantize", "--model", minilm_dir, "--out", out, "--json", *flags)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["split"] == split
        state = torch.load(out / "int8_state_dict.pt", weights_only=True)
        assert bool(plans_in(state)) == (split is not None)


@pytest.mark.parametrize("sub", ["compare", "quantize", "inspect", "tune", "bench", "eval"])
def test_help(sub):
    p = run_cli(sub, "--help")
    assert p.returncode == 0 and "--model" in p.stdout and "--keep-fp32" in p.stdout
    assert "DESIGN.md" not in p.stdout  # not in the repository
    assert "INT8 artifact folder" in " ".join(p.stdout.split())


def test_bench_list_variants_and_hints():
    p = run_cli("bench", "--list-variants")
    assert p.returncode == 0
    names = [line.split()[0] for line in p.stdout.strip().splitlines()]
    assert {"fp32-cpu", "int8-cpu", "int8-static-cpu", "ort-int8", "ort-int8-opt"} <= set(names)
    from quant.bench import PEER_HINT

    assert "make bench" in PEER_HINT and "pip install -r requirements-peers.txt" not in PEER_HINT


@pytest.mark.parametrize("args,message", [
    (["compare", "--threads", "0"], "--threads (1 to the"),
    (["compare", "--threads", "9999"], "--threads (1 to the"),
    (["compare", "--warmup", "1000"], "--warmup must be from 0 to 10"),
    (["compare", "--warmup", "-1"], "--warmup must be from 0 to 10"),
    (["compare", "--runs", "0"], "--runs must be from 1 to 50"),
    (["compare", "--runs", "ten"], "--runs must be a whole number"),
    (["bench", "--runs", "0"], "--runs must be from 1 to 1000"),
    (["bench", "--warmup", "101"], "--warmup must be from 0 to 100"),
    (["eval", "--limit", "0", "--data", "x.json"], "--limit must be at least 1"),
    (["tune", "--target-agreement", "120", "--data", "x.json"], "percentage in (0, 100]"),
    (["inspect", "--top", "0"], "--top must be from 1 to 1000"),
])
def test_numeric_options_are_validated_before_loading(args, message):
    extra = ["--context", "x", "--question", "y"] if args[0] in ("compare", "inspect") else []
    p = run_cli(*args, *extra, "--model", "/nonexistent/model")
    assert p.returncode == 2 and message in p.stderr, p.stderr
    assert "Cannot load model" not in p.stderr  # refused before any model is loaded


def test_artifact_folder_serves_as_model(trained_model_dir, tmp_path):
    """`quantize --out` writes a folder that --model takes: INT8 from it, FP32 from its source model."""
    out = tmp_path / "int8"
    p = run_cli("quantize", "--model", trained_model_dir, "--out", out, "--keep-fp32", "qa_outputs")
    assert p.returncode == 0 and f"python app.py --model {out}" in p.stdout
    ex = tinymodels.held_out_examples(1, seed=14)[0]
    p = run_cli("compare", "--model", out, "--context", ex.context, "--question", ex.question, "--runs", 2, "--json")
    assert p.returncode == 0, p.stderr
    assert f"INT8 artifact folder {out}" in p.stderr and "FP32 from its source model" in p.stderr
    d = json.loads(p.stdout)
    by = {r["variant"]: r for r in d["results"]}
    assert by["int8-cpu"]["answer"] == by["fp32-cpu"]["answer"] == ex.answer
    assert d["sizes_mib"]["int8"] < d["sizes_mib"]["fp32"]


def test_artifact_without_its_source_model_still_serves_int8(trained_model_dir, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(trained_model_dir, src)
    out = tmp_path / "int8"
    assert run_cli("quantize", "--model", src, "--out", out).returncode == 0
    shutil.rmtree(src)  # the source model is gone
    ex = tinymodels.held_out_examples(1, seed=15)[0]
    p = run_cli("compare", "--model", out, "--context", ex.context, "--question", ex.question, "--runs", 2, "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    by = {r["variant"]: r for r in d["results"]}
    assert by["int8-cpu"]["available"] and by["int8-cpu"]["answer"] == ex.answer
    assert by["fp32-cpu"]["available"] is False and "FP32 source model could not be loaded" in by["fp32-cpu"]["reason"]
    assert d["sizes_mib"]["fp32"] is None and d["sizes_mib"]["int8"] > 0
