"""The Gradio app, end to end: launched on a free port, called through gradio_client."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import urllib.request

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
    import torch

    from quant import env

    ex = tinymodels.held_out_examples(1, seed=42)[0]
    d = client.predict(ex.context, ex.question, 2, True, api_name="/compare")
    assert [r["variant"] for r in d["results"]] == ["fp32-cpu", "int8-cpu", "fp32-cuda", "bf16-cpu", "fp16-cuda"]
    by = {r["variant"]: r for r in d["results"]}
    if env.has_native_bf16():
        assert by["bf16-cpu"]["answer"] == ex.answer and by["bf16-cpu"]["latency_ms"]["runs"] == 2
    else:
        assert by["bf16-cpu"]["available"] is False and "bf16" in by["bf16-cpu"]["reason"]
    if torch.cuda.is_available():
        assert by["fp16-cuda"]["answer"] == ex.answer
    else:
        assert by["fp16-cuda"]["available"] is False and "CUDA is not available" in by["fp16-cuda"]["reason"]
    d = client.predict(ex.context, ex.question, 2, False, api_name="/compare")
    assert [r["variant"] for r in d["results"]] == ["fp32-cpu", "int8-cpu", "fp32-cuda"]  # extras only when asked


def test_api_lists_only_public_endpoints(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert names == {"/compare", "/inspect", "/evaluate", "/recipes"}  # the render steps stay private


def test_inspect_through_api(client):
    ex = tinymodels.held_out_examples(1, seed=44)[0]
    d = client.predict(ex.context, ex.question, 2, api_name="/inspect")
    assert len(d["layers"]) == 13 and len(d["hidden_sqnr_db"]) == 2
    assert d["answers"]["fp32"]["best"]["answer"] == ex.answer and d["context"] == ex.context
    assert "INT8 kept the answer" in d["summary"]
    m = d["mixed"]
    worst = sorted((x for x in d["layers"] if x["quantized"]), key=lambda x: x["sqnr_db"])[:2]
    assert m["k"] == 2 and m["keep_fp32"] == [x["name"] for x in worst]  # the 2 least precise layers
    by = {r["variant"]: r for r in m["results"]}
    assert list(by) == ["fp32-cpu", "int8-cpu", "int8-mixed"]
    assert all(r["answer"] == ex.answer and r["latency_ms"]["runs"] == 5 for r in by.values())
    assert m["sizes_mib"]["int8-cpu"] < m["sizes_mib"]["int8-mixed"] < m["sizes_mib"]["fp32-cpu"]
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="from 0 to 13"):
        client.predict(ex.context, ex.question, 14, api_name="/inspect")
    with pytest.raises(AppError, match="passage is empty"):
        client.predict(" ", ex.question, 0, api_name="/inspect")


def test_default_model_matches_the_library():
    import app as app_module
    from quant.models import DEFAULT_MODEL

    assert app_module.DEFAULT_MODEL == DEFAULT_MODEL


def test_help_and_option_errors_answer_before_heavy_imports():
    """`python app.py --help` used to take 6-16 s: torch and gradio loaded before the options were read."""
    code = ("import runpy, sys\nsys.argv = ['app.py'] + sys.argv[1:]\n"
            "try:\n    runpy.run_path('app.py', run_name='__main__')\nexcept SystemExit as e:\n    code = e.code\n"
            "print('EXIT', code, 'torch' in sys.modules, 'gradio' in sys.modules)\n")
    for args, want in ((["--help"], "EXIT 0 False False"), (["--port", "99999"], "EXIT 2 False False"),
                       (["--engine", "tpu"], "EXIT 2 False False")):
        p = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert want in p.stdout, (args, p.stdout, p.stderr)
    p = subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "--keep-fp32" in p.stdout and "--static" in p.stdout and "artifact" in p.stdout


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
        assert "[quantqa] loading local folder" in out and "quantizing" in out and "ready in" in out, out
        assert f"http://127.0.0.1:{port}" in out, out
        assert "share=True" not in out and "OpenMP wait policy: auto" in out
        from gradio_client import Client
        from gradio_client.exceptions import AppError

        c = Client(f"http://127.0.0.1:{port}/", verbose=False)
        ex = tinymodels.held_out_examples(1, seed=43)[0]
        d = c.predict(ex.context, ex.question, 2, False, api_name="/compare")
        assert d["results"][1]["answer"] == ex.answer
        bad = [("", "Where?", 2, False), ("Ada.", "Where?", 500, False), ("Ada.", {"q": 1}, 2, False)]
        for args in bad:
            with pytest.raises(AppError):
                c.predict(*args, api_name="/compare")
        html = urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=30).read().decode()
        # the header names the folder (Markdown-escaped: trained\\_tiny0), not the full temporary path
        assert "tiny0" in html and str(trained_model_dir.parent) not in html
    finally:
        proc.terminate()
        rest, _ = proc.communicate(timeout=30)
    console = out + rest
    rejected = [ln for ln in console.splitlines() if "rejected request" in ln]
    assert len(rejected) == len(bad), console  # one line per rejected request ...
    assert "Traceback" not in console  # ... and no traceback


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


def test_inspect_refuses_a_fraction_of_a_layer(client):
    from gradio_client.exceptions import AppError

    ex = tinymodels.held_out_examples(1, seed=45)[0]
    for bad in (2.5, "3", True):
        with pytest.raises(AppError, match="whole number"):
            client.predict(ex.context, ex.question, bad, api_name="/inspect")
    assert client.predict(ex.context, ex.question, 2.0, api_name="/inspect")["mixed"]["k"] == 2  # 2.0 is whole


def test_token_chart_names_neighbouring_answers_in_the_legend():
    """FP32 and INT8 answers on neighbouring tokens: their bands are legend entries, never labels that overlap."""
    from quant.figures import tokens_figure

    toks = [{"text": w, "start": i * 6, "end": i * 6 + 5, "p_start": {"fp32": 0.1, "int8": 0.1},
             "p_end": {"fp32": 0.1, "int8": 0.1}} for i, w in enumerate(["alpha", "bravo", "charl", "delta"])]
    d = {"tokens": toks, "answers": {"fp32": {"best": {"start": 6, "end": 11}}, "int8": {"best": {"start": 12, "end": 17}}}}
    fig = tokens_figure(d)
    assert not [a for a in fig.layout.annotations if "answer" in (a.text or "")]  # no text labels on the bands
    bands = [sh for sh in fig.layout.shapes if sh.type == "rect"]
    legend = [sh.name for sh in bands if sh.showlegend]
    assert sorted(legend) == ["FP32 answer", "INT8 answer"]  # each named once in the legend
    by = {sh.name: sh for sh in bands}
    assert by["FP32 answer"].x1 <= by["INT8 answer"].x0  # neighbours, not overlapping
    same = tokens_figure({**d, "answers": {"fp32": d["answers"]["fp32"], "int8": d["answers"]["fp32"]}})
    assert [sh.name for sh in same.layout.shapes if sh.type == "rect" and sh.showlegend] == ["FP32 and INT8 answer"]
