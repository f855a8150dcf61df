"""python -m quant bench: the table and JSON a user gets (timings are not asserted: see README)."""

import json

from test_cli import run_cli


def test_bench_json(random_model_dir):
    p = run_cli("bench", "--model", random_model_dir, "--seq-lens", "16,32", "--runs", 3, "--warmup", 1, "--json",
                "--no-peers", timeout=900)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    rows = d["results"]
    variants = {r["variant"] for r in rows}
    assert {"fp32-cpu", "int8-cpu", "int8-emb-cpu", "int8-pc-cpu", "int8-static-cpu"} <= variants
    assert {r["seq_len"] for r in rows} == {16, 32}
    for r in rows:
        assert set(r) == {"variant", "seq_len", "median_ms", "p90_ms", "speedup", "sqnr_db"}
        assert 0 < r["median_ms"] <= r["p90_ms"]
        if r["variant"].startswith("int8"):
            assert 15 < r["sqnr_db"] < 80  # logits vs fp32-cpu on the same input
    assert all(r["speedup"] == 1.0 for r in rows if r["variant"] == "fp32-cpu")
    m = d["machine"]
    assert {"cpu", "cpu_features", "threads", "torch", "quantized_engine"} <= set(m)
    assert d["sizes_mib"]["int8_emb"] < d["sizes_mib"]["int8"] < d["sizes_mib"]["fp32"]
    assert 0 < d["sizes_mib"]["int8_static"] < d["sizes_mib"]["fp32"]
    assert any("int8-static-cpu:" in n and "parity" in n for n in d["notes"])
    assert d["machine"]["thread_policy"].startswith("auto")  # the CLI runs under the app's thread policy (threads.py)


def test_bench_table_and_peers_note(random_model_dir):
    p = run_cli("bench", "--model", random_model_dir, "--seq-lens", "16", "--runs", 2, "--warmup", 1,
                "--variants", "fp32-cpu,int8-cpu,ort-int8")
    assert p.returncode == 0, p.stderr
    assert "fp32-cpu" in p.stdout and "int8-cpu" in p.stdout and "threads:" in p.stdout
    # ONNX Runtime is an optional extra (make bench): a row where installed, else a note saying how to get it
    try:
        import onnxruntime  # noqa: F401

        assert "ort-int8 " in p.stdout
    except ImportError:
        assert "ONNX Runtime rows skipped: onnxruntime is not installed here; install the peers with `make bench`" in p.stdout


def test_bench_bad_args(random_model_dir):
    p = run_cli("bench", "--model", random_model_dir, "--seq-lens", "abc")
    assert p.returncode == 2 and "seq-lens" in p.stderr
    p = run_cli("bench", "--model", random_model_dir, "--variants", "fp64-tpu", "--seq-lens", "16", "--runs", 1)
    assert p.returncode == 2 and "unknown variant" in p.stderr
