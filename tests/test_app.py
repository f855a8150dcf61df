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


def test_static_int8_is_on_by_default():
    import app as app_module

    assert app_module.parse_args([]).static is True
    assert app_module.parse_args(["--no-static"]).static is False and app_module.parse_args(["--static"]).static


def test_app_serves_from_command_line(trained_model_dir, tmp_path):
    """`python app.py --model DIR --port P` starts, answers /compare from a separate process, and binds 127.0.0.1.
    Static INT8 is on by default and built in the background (an empty cache here): the page serves before the
    build ends, and its card says it is being built until it is ready."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", QUANTQA_CACHE=str(tmp_path / "cache"))
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

        assert "int8-static-cpu: built" not in out, out  # the page serves before the static build ends
        c = Client(f"http://127.0.0.1:{port}/", verbose=False)
        ex = tinymodels.held_out_examples(1, seed=43)[0]
        d = c.predict(ex.context, ex.question, 2, False, api_name="/compare")
        assert d["results"][1]["answer"] == ex.answer
        static = next(r for r in d["results"] if r["variant"] == "int8-static-cpu")
        assert static["available"] or (static.get("pending") and "being built" in static["reason"]), static
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
    assert "int8-static-cpu: first build" in console  # on by default, built in the background
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


def test_cancel_stops_an_evaluation_and_the_line_moves_on(app_demo):
    """Evaluate runs in turns; Cancel (or a closed page) ends it at its next turn, and the next visitor is served
    at once — the server learns it from Gradio's own record of the event."""
    from gradio_client import Client

    s = app_demo.scheduler
    c = Client(app_demo.local_url, verbose=False)
    before = dict(s.counts)
    job = c.submit(None, 240, api_name="/evaluate")
    deadline = time.time() + 60
    while time.time() < deadline and not (s._running is not None and s._running.label == "evaluation"):
        time.sleep(0.05)
    assert s._running is not None and s._running.label == "evaluation"
    time.sleep(0.5)
    job.cancel()
    deadline = time.time() + 20
    while time.time() < deadline and s.counts["cancelled"] == before["cancelled"]:
        time.sleep(0.05)
    assert s.counts["cancelled"] == before["cancelled"] + 1  # stopped at its next turn, not run to the end
    ex = tinymodels.held_out_examples(1, seed=46)[0]
    t0 = time.time()
    assert c.predict(ex.context, ex.question, 1, False, api_name="/compare")["results"][0]["answer"] == ex.answer
    assert time.time() - t0 < 30


def test_evaluate_and_inspect_report_their_threads(client):
    """Inspect, Evaluate and Recipes choose a thread count for the machine as it is, and say so, as Compare does."""
    ex = tinymodels.held_out_examples(1, seed=47)[0]
    d = client.predict(ex.context, ex.question, 0, api_name="/inspect")
    assert d["threads"] >= 1 and "thread" in d["threads_why"]
    out = client.predict(None, 3, api_name="/evaluate")
    assert out[3]["threads"] >= 1 and "thread" in out[3]["threads_why"]


# ------------------------------------------------------------------ take it away: downloads, links, exports


def test_a_card_and_a_recipe_row_download_as_zipped_folders(app_demo, client):
    """'Download this INT8 model' builds the card's recipe as an artifact folder with its model card, zipped; the
    recipes table's chosen row downloads the same way, its card reporting what the table measured."""
    import zipfile

    page = app_demo.page
    z = page.download_card("int8-cpu", None)
    names = zipfile.ZipFile(z).namelist()
    top = names[0].split("/")[0]
    assert {f"{top}/README.md", f"{top}/quantqa.json", f"{top}/int8_state_dict.pt", f"{top}/config.json"} <= set(names)
    manifest = json.loads(zipfile.ZipFile(z).read(f"{top}/quantqa.json"))
    assert manifest["recipe"]["name"] == "dynamic-per-channel"  # what the card runs
    from quant.static import CARD_RECIPE

    assert page._card_recipe("int8-static-cpu") == (CARD_RECIPE, [], None)  # the static card's own recipe, not "static"
    fig, table, summary, rec, csv_file, row = client.predict(None, 12, 90, 1, ["dynamic-per-tensor"],
                                                             api_name="/recipes")
    assert rec["set"].startswith("the built-in real-text set") and rec["n"] == 12
    from app import row_labels

    labels = row_labels(rec)
    assert [c[0] for c in row["choices"]] == labels[1:]  # the list offers every INT8 row ...
    row = row["value"]  # ... with the chosen one (else the first) picked
    assert row in labels[1:]
    z = page.download_row(rec, row)
    top = zipfile.ZipFile(z).namelist()[0].split("/")[0]
    card = zipfile.ZipFile(z).read(f"{top}/README.md").decode()
    picked = rec["recipes"][labels.index(row)]
    assert f"{picked['agreement']:.1f} %" in card and "the built-in real-text set" in card
    csv_text = open(csv_file).read()
    assert csv_text.splitlines()[0].startswith("recipe,layers in FP32,same span as FP32 %")


def test_evaluate_tables_export_as_csv(client):
    table, summary, dis, d, files = client.predict(None, 4, api_name="/evaluate")
    texts = [open(f).read() for f in files]
    assert texts[0].splitlines()[0].startswith("variant,EM %,F1 %,same span as FP32 %")
    assert len(texts[0].splitlines()) == 1 + len(d["results"])
    assert texts[1].splitlines()[0] == "variant,question,passage,FP32,INT8,gold"


def test_the_comparison_exports_as_markdown():
    from quant.render import comparison_markdown

    d = {"model": "m", "question": "Who | why?", "windows": 1, "tokens_per_window": 40, "threads": 2,
         "runs": {"done": 3}, "recipes": {"int8-cpu": "dynamic, per-channel weights"},
         "sizes_mib": {"fp32": 10.0, "int8": 4.0},
         "results": [{"variant": "fp32-cpu", "available": True, "answer": "Ada | L", "latency_ms": {"median": 10.0,
                      "p90": 11.0}, "speedup": 1.0},
                     {"variant": "int8-cpu", "available": True, "answer": "", "latency_ms": {"median": 4.0, "p90": 4.5},
                      "speedup": 2.5},
                     {"variant": "fp32-cuda", "available": False, "reason": "no GPU"}]}
    md = comparison_markdown(d, "Test CPU")
    assert "| FP32 · CPU | Ada \\| L | 10.0 | 11.0 | 1.00 |  |" in md
    assert "| INT8 · CPU | (no answer) | 4.0 | 4.5 | 2.50 | dynamic, per-channel weights |" in md
    assert "| FP32 · CUDA | not available: no GPU | | | | |" in md and "Test CPU" in md


def test_links_travel_plain_or_compressed_and_refuse_damage():
    from quant import InputError, links

    examples = [{"label": "Hastings", "passage": "P1", "question": "Q1"}, {"label": "Curie", "passage": "P2",
                                                                           "question": "Q2"}]
    assert links.parse({"example": "2"}, examples) == ("P2", "Q2")
    assert links.parse({"example": "hastings"}, examples) == ("P1", "Q1")
    assert links.parse({}, examples) is None and links.parse({"utm_source": "x"}, examples) is None
    short = links.query("Ada was born in 1815.", "When?")
    assert short.startswith("?passage=") and "1815" in short
    import urllib.parse

    params = dict(urllib.parse.parse_qsl(short[1:]))
    assert links.parse(params, examples) == ("Ada was born in 1815.", "When?")
    passage = "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy. " * 100
    long = links.query(passage, "Who gave their name to Normandy?")
    assert long.startswith("?z=") and len(long) < len(passage) / 5  # ~9,000 characters travel in ~300
    assert links.parse({"z": long[3:]}, examples) == (passage, "Who gave their name to Normandy?")
    for bad, message in (({"example": "9"}, "there are 2"), ({"z": long[3:-20]}, "could not be read"),
                         ({"z": "!!!"}, "could not be read"), ({"passage": "P"}, "both a passage and a question")):
        with pytest.raises(InputError, match=message):
            links.parse(bad, examples)
    import base64
    import zlib

    bomb = base64.urlsafe_b64encode(zlib.compress(b"[" + b" " * 10_000_000 + b"]", 9)).decode()
    with pytest.raises(InputError, match="could not be read"):  # never inflated past the passage limit
        links.parse({"z": bomb}, examples)
