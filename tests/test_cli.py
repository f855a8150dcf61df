"""The CLI contract: python -m quant ... (run as a user would, in a subprocess)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert "reason" in cuda or cuda["available"]


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
    assert "save_pretrained" in err[-1]


def test_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    p = run_cli("quantize", "--model", tmp_path, "--out", tmp_path / "out")
    assert p.returncode == 2 and "Traceback" not in p.stderr and "Cannot load model" in p.stderr


def test_unknown_hub_id_offline():
    p = run_cli("compare", "--model", "no-such-org/no-such-model", "--context", "x", "--question", "y")
    assert p.returncode == 2 and "Traceback" not in p.stderr and "no-such-org/no-such-model" in p.stderr


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


@pytest.mark.parametrize("sub", ["compare", "quantize", "bench", "eval"])
def test_help(sub):
    p = run_cli(sub, "--help")
    assert p.returncode == 0 and "--model" in p.stdout
