"""The Gradio app, end to end: launched on a free port, called through gradio_client."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tinymodels

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


def test_compare_through_api(client):
    ex = tinymodels.held_out_examples(1, seed=41)[0]
    d = client.predict(ex.context, ex.question, 3, False, api_name="/compare")
    by = {r["variant"]: r for r in d["results"]}
    assert list(by) == ["fp32-cpu", "int8-cpu", "fp32-cuda"]
    for v in ("fp32-cpu", "int8-cpu"):
        assert by[v]["answer"] == ex.answer
        assert d["context"][by[v]["start"]:by[v]["end"]] == ex.answer
        assert by[v]["latency_ms"]["runs"] == 3
    cuda = by["fp32-cuda"]
    import torch

    if not torch.cuda.is_available():
        assert cuda["available"] is False and "CUDA is not available" in cuda["reason"]
    assert d["sizes_mib"]["int8"] < d["sizes_mib"]["fp32"]
    assert d["int8_agrees_with_fp32"] is True


def test_extra_variants_through_api(client):
    ex = tinymodels.held_out_examples(1, seed=42)[0]
    d = client.predict(ex.context, ex.question, 2, True, api_name="/compare")
    assert [r["variant"] for r in d["results"]] == ["fp32-cpu", "int8-cpu", "fp32-cuda", "bf16-cpu", "fp16-cuda"]


def test_api_lists_only_public_endpoints(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert names == {"/compare", "/evaluate"}


def test_app_module_has_no_side_effects_on_import():
    p = subprocess.run([sys.executable, "-c", "import app, sys; print('gradio' in sys.modules)"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "True"
    assert "Running on" not in p.stdout + p.stderr and "[quantqa] loading" not in p.stdout + p.stderr
    assert not (ROOT / "app.pyi").exists()  # Gradio writes one for component subclasses: we have none


def test_app_exits_2_when_model_cannot_load(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    p = subprocess.run([sys.executable, "app.py", "--model", str(tmp_path / "missing"), "--port", "0"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 2
    assert "Cannot load model" in p.stderr and "Traceback" not in p.stderr


def test_app_serves_from_command_line(trained_model_dir):
    """`python app.py --model DIR --port P` starts, answers /compare from a separate process, and binds 127.0.0.1."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "app.py", "--model", str(trained_model_dir), "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines = []
        deadline = time.time() + 120
        while time.time() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "Running on local URL" in line or proc.poll() is not None:
                break
        out = "".join(lines)
        assert "[quantqa] loading" in out and "quantizing" in out and "ready in" in out, out
        assert f"http://127.0.0.1:{port}" in out, out
        from gradio_client import Client

        ex = tinymodels.held_out_examples(1, seed=43)[0]
        d = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(ex.context, ex.question, 2, False,
                                                                        api_name="/compare")
        assert d["results"][1]["answer"] == ex.answer
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_examples_file():
    data = json.loads((ROOT / "assets" / "examples.json").read_text(encoding="utf-8"))
    assert len(data) >= 4
    assert "wealthiest 1%" in data[0]["question"] and "New York Times" in data[0]["passage"]
    assert all(e["passage"].strip() and e["question"].strip() for e in data)
    assert max(len(e["passage"]) for e in data) > 1500  # a long passage: more than one 384-token window


def test_cards_render_user_text_inert():
    """Answers go into Markdown cards: HTML and Markdown in them must come out as text."""
    import app as app_module

    r = {"available": True, "answer": '<img src=x onerror="alert(1)"> **bold** [link](http://x)', "start": 0,
         "end": 10, "score": 0.5, "latency_ms": {"median": 1.0, "p90": 2.0, "runs": 3}, "speedup": 2.0}
    md = app_module.card_markdown(r, "INT8 · CPU")
    assert "<img" not in md and "&lt;img" in md
    assert "**bold**" not in md and "](http" not in md
    assert "2.00×" in md and "1.0 ms" in md
    assert "no answer" in app_module.card_markdown(dict(r, answer=""), "FP32 · CPU")
    off = app_module.card_markdown({"available": False, "reason": "CUDA is not available <b>here</b>"}, "FP32 · CUDA")
    assert "Not available" in off and "<b>" not in off
    assert app_module.highlight("abc def", dict(r, start=4, end=7)) == {
        "text": "abc def", "entities": [{"entity": "answer", "start": 4, "end": 7}]}
    assert app_module.highlight("abc", dict(r, start=0, end=0))["entities"] == []
