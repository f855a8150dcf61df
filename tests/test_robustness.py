"""Bad input, odd text, load and safe defaults: the server answers clearly and keeps running."""

import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import tinymodels

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


def api_error(client, *args) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises((AppError, ValueError, TypeError)) as info:
        client.predict(*args, api_name="/compare")
    return str(info.value)


@pytest.mark.parametrize("args,message", [
    (("", "Where?", 3, False), "passage is empty"),
    (("   \n\t ", "Where?", 3, False), "passage is empty"),
    (("Ada was born in Paris.", "  ", 3, False), "question is empty"),
    (("x" * 10_001, "Where?", 3, False), "limit is 10,000"),
    (("Ada was born in Paris.", "q" * 301, 3, False), "limit is 300"),
    (("Ada was born in Paris.", "Where?", 0, False), "1"),
    (("Ada was born in Paris.", "Where?", 51, False), "50"),
    (("Ada was born in Paris.", "Where?", "ten", False), "whole number"),
    (("Ada was born in Paris.", "Where?", 2.5, False), "whole number"),
    (({"text": "Ada"}, "Where?", 3, False), "must be text"),
    ((["Ada"], "Where?", 3, False), "must be text"),
    (("Ada was born in Paris.", 42, 3, False), "must be text"),
    (("Ada was born in Paris.",), "question"),  # missing arguments
])
def test_bad_api_input_gets_a_clear_message(client, args, message):
    assert message in api_error(client, *args)


def test_server_still_answers_after_bad_input(client):
    api_error(client, "", "", 3, False)
    ex = tinymodels.held_out_examples(1, seed=61)[0]
    assert client.predict(ex.context, ex.question, 1, False, api_name="/compare")["results"][0]["answer"] == ex.answer


ODD = [
    "Ada\x00 Lovelace was born in London in 1815.\x07\x1b[31m",
    "Ada Lovelace 👩‍💻🚀 was born in London 🇬🇧 in 1815.",
    "艾达·洛夫莱斯 Ada Lovelace was born in London in 1815. 她是数学家。",
    "אדה לאבלייס Ada Lovelace was born in London in 1815. ولدت في لندن",
    "Ada Lovelace was born in Lo\u0301ndo\u0308n in 1815. Zalgo: Z\u0351\u0352\u0353a\u0354\u0355l\u0356g\u0357o",
    "Ada Lovelace was born in London in 1815. " + "Pneumonoultramicroscopic" * 200,
    "Ada Lovelace was born in London in 1815.\u200f\u202e reversed \u202c\ufeff",
    "\ud83d lone surrogate: Ada Lovelace was born in London in 1815.",
]


def raw_call(app_url: str, data: list) -> dict:
    """POST to Gradio's HTTP API with hand-made JSON (gradio_client cannot send lone surrogates)."""
    import json

    body = json.dumps({"data": data}, ensure_ascii=True).encode()  # "\\ud83d" escapes survive
    req = urllib.request.Request(app_url + "gradio_api/call/compare", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        event_id = json.loads(r.read())["event_id"]
    with urllib.request.urlopen(app_url + f"gradio_api/call/compare/{event_id}", timeout=120) as r:
        text = r.read().decode()
    event = [ln for ln in text.splitlines() if ln.startswith("event:")][-1].split(":", 1)[1].strip()
    payload = [ln for ln in text.splitlines() if ln.startswith("data:")][-1].split(":", 1)[1].strip()
    return {"event": event, "data": json.loads(payload)}


@pytest.mark.parametrize("passage", ODD, ids=["control-nul", "emoji", "cjk", "rtl", "combining", "long-word",
                                              "bidi-controls", "lone-surrogate"])
def test_odd_text_answers_with_exact_offsets(client, app_url, passage):
    """Every one of these passages states that Ada Lovelace was born in 1815: both variants must say so,
    at the right place, in a context exactly as long as the passage sent."""
    if any(0xD800 <= ord(c) <= 0xDFFF for c in passage):
        out = raw_call(app_url, [passage, "When was Ada Lovelace born?", 1, False])
        assert out["event"] == "complete", out
        d = out["data"][0]
    else:
        d = client.predict(passage, "When was Ada Lovelace born?", 1, False, api_name="/compare")
    ctx = d["context"]
    assert len(ctx) == len(passage)  # cleaning never shifts offsets
    by = {r["variant"]: r for r in d["results"]}
    for v in ("fp32-cpu", "int8-cpu"):
        r = by[v]
        assert r["answer"] == "1815", (v, r["answer"])
        assert r["start"] == passage.index("1815") and r["end"] == r["start"] + 4
        assert ctx[r["start"]:r["end"]] == "1815"


def test_concurrent_visitors_get_their_own_results(app_url):
    from load import run_load

    rep = run_load(app_url, clients=6, requests=2, runs=1, timeout=120)
    assert rep["failed"] == 0 and rep["wrong"] == 0 and rep["answered"] + rep["refused"] == 12
    assert rep["answered"] >= 6


# ------------------------------------------------------------------ a real server process


@pytest.fixture(scope="module")
def server(trained_model_dir):
    """`python app.py` in its own process (the load script's launcher), for process-level checks; a line of at most
    16 measurements, so that 24 distinct visitors can fill it (the default, 256, is what a room needs)."""
    from load import free_port, start_server

    port = free_port()
    proc = start_server(str(trained_model_dir), port, ["--max-line", "16", "--no-static"])
    try:
        yield f"http://127.0.0.1:{port}/", proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def test_safe_defaults(server):
    url, _ = server
    status, config = _get(url + "config")
    assert status == 200
    import json

    cfg = json.loads(config)
    assert cfg.get("run_history") is False
    assert cfg.get("is_ssr") in (None, False)
    for probe in ("gradio_api/file=/etc/passwd", "file=/etc/passwd", "gradio_api/file=../../../../etc/passwd",
                  "gradio_api/file=" + str(ROOT / "app.py")):
        status, body = _get(url + probe)
        assert status != 200 and "root:" not in body and "def build_demo" not in body, probe
    status, _ = _get(url + "monitoring")
    assert status != 200


def test_full_queue_refuses_politely(server):
    from load import run_load

    url, _ = server
    rep = run_load(url, clients=24, requests=1, runs=20, timeout=180)  # each call long enough to queue
    assert rep["failed"] == 0 and rep["wrong"] == 0
    assert rep["refused"] > 0 and "Queue is full" in " ".join(rep["errors"])
    assert rep["answered"] >= 16


def test_memory_does_not_grow_with_requests(server):
    """Every request distinct and measured (none shared, none stored for another): once the stored results are at
    their bound and older ones are evicted, 60 more requests leave the server's memory where it was."""
    import psutil
    from gradio_client import Client

    from quant.line import CACHE_SIZE

    url, proc = server
    c = Client(url, verbose=False)
    ex = tinymodels.held_out_examples(1, seed=71)[0]
    shared = 0

    def ask(i: int) -> None:
        nonlocal shared
        d = c.predict(ex.context + f" Entry {i}.", ex.question, 1, False, api_name="/compare")
        shared += "shared" in d

    for i in range(CACHE_SIZE + 10):  # the stored results fill to their bound; allocator pools warm up
        ask(i)
    before = psutil.Process(proc.pid).memory_info().rss
    for i in range(CACHE_SIZE + 10, CACHE_SIZE + 70):  # 60 more, each evicting the oldest stored one
        ask(i)
    after = psutil.Process(proc.pid).memory_info().rss
    assert shared == 0  # measured, every one
    assert (after - before) / 2**20 < 40, f"RSS grew by {(after - before) / 2**20:.1f} MiB over 60 requests"


# ------------------------------------------------------------------ Evaluate and Recipes: bad input, one line each


@pytest.fixture(scope="module")
def console_server(trained_model_dir, tmp_path_factory):
    """`python app.py --no-static` with its console in a file, to count what each bad request prints."""
    import os
    import subprocess
    import time

    from load import free_port

    port = free_port()
    log = tmp_path_factory.mktemp("console") / "console.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py", "--model", str(trained_model_dir), "--port", str(port),
                                 "--no-static"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        deadline = time.time() + 120
        while "Running on local URL" not in log.read_text() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/", log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _bad_squad_files(tmp_path) -> dict:
    import json

    nested = tmp_path / "nested.json"
    nested.write_text("[" * 100_000 + "]" * 100_000)  # 200 KB of brackets
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"data": [{"paragraphs": [{"context": "Ada was born in 1815.", "qas": [
        {"id": "q1", "question": "When?", "answers": [{"text": "1815", "answer_start": 400}]}]}]}]}))
    return {"nested": nested, "outside": outside}


def test_bad_evaluate_and_recipes_input_gets_one_clear_line_each(console_server, tmp_path):
    """Each case: one clear line for the visitor, one line in the console, no traceback (these printed a traceback,
    a RecursionError or Gradio's generic "upstream app has raised an exception")."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    url, log = console_server
    c = Client(url, verbose=False)
    files = _bad_squad_files(tmp_path)
    everything = ["dynamic-per-tensor", "dynamic-per-channel"]
    cases = [
        ("/evaluate", (handle_file(str(files["nested"])), 5), "nested too deeply"),
        ("/evaluate", (handle_file(str(files["outside"])), 5), "outside its passage"),
        ("/evaluate", (None, "x"), "whole number"),
        ("/evaluate", (None, 0), "from 1 to 500"),
        ("/evaluate", (None, 1e9), "from 1 to 500"),
        ("/evaluate", (None, 2.5), "whole number"),
        ("/recipes", (None, 5, "abc", 1, everything), "number"),
        ("/recipes", (None, 5, 1000, 1, everything), "from 1 to 100"),
        ("/recipes", (None, 5, 90, -1, everything), "from 0 to 13"),
        ("/recipes", (None, 5, 90, 2.5, everything), "whole number"),
        ("/recipes", (None, 5, 90, 1, ["bogus"]), "bogus"),
        ("/recipes", (None, 5, 90, 1, []), "at least one recipe"),
    ]
    before = log.read_text()
    for api, args, message in cases:
        with pytest.raises(AppError, match=message):
            c.predict(*args, api_name=api)
    console = log.read_text()[len(before):]
    assert console.count("rejected request") == len(cases), console
    assert "Traceback" not in console and "RecursionError" not in console, console
    ex = tinymodels.held_out_examples(1, seed=72)[0]  # and it still serves
    assert c.predict(ex.context, ex.question, 1, False, api_name="/compare")["results"][0]["answer"] == ex.answer
