"""python -m quant bench: the table and JSON a user gets (timings are not asserted: see README)."""

import json

from test_cli import run_cli


def test_bench_json(random_model_dir):
    p = run_cli("bench", "--model", random_model_dir, "--seq-lens", "16,32", "--runs", 3, "--warmup", 1, "--json",
                "--no-peers")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    rows = d["results"]
    variants = {r["variant"] for r in rows}
    assert {"fp32-cpu", "int8-cpu", "int8-emb-cpu"} <= variants
    assert {r["seq_len"] for r in rows} == {16, 32}
    for r in rows:
        assert set(r) == {"variant", "seq_len", "median_ms", "p90_ms", "speedup"}
        assert 0 < r["median_ms"] <= r["p90_ms"]
    assert all(r["speedup"] == 1.0 for r in rows if r["variant"] == "fp32-cpu")
    m = d["machine"]
    assert {"cpu", "cpu_features", "threads", "torch", "quantized_engine"} <= set(m)
    assert d["sizes_mib"]["int8_emb"] < d["sizes_mib"]["int8"] < d["sizes_mib"]["fp32"]


def test_bench_table_and_peers_note(random_model_dir):
    p = run_cli("bench", "--model", random_model_dir, "--seq-lens", "16", "--runs", 2, "--warmup", 1,
                "--variants", "fp32-cpu,int8-cpu,ort-int8")
    assert p.returncode == 0, p.stderr
    assert "fp32-cpu" in p.stdout and "int8-cpu" in p.stdout and "threads:" in p.stdout
    # ONNX Runtime is an optional extra: either a row or a note saying how to get it
    assert "ort-int8" in p.stdout or "ONNX Runtime rows skipped" in p.stdout


def test_bench_bad_args(random_model_dir):
    p = run_cli("bench", "--model", random_model_dir, "--seq-lens", "abc")
    assert p.returncode == 2 and "seq-lens" in p.stderr
    p = run_cli("bench", "--model", random_model_dir, "--variants", "fp64-tpu", "--seq-lens", "16", "--runs", 1)
    assert p.returncode == 2 and "unknown variant" in p.stderr
