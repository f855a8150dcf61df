"""QuantQA web demo: one BERT QA model answered three ways — FP32 CPU, INT8 CPU, FP32 CUDA.

UI only. Every number and answer comes from `quant.Comparator` (the same call
the CLI makes). The model is loaded and quantized once at start-up; requests
never reload it. The comparison runs one request at a time (concurrency 1, a
bounded queue) so timings don't disturb each other.

    python app.py [--model M] [--host H] [--port P]
    QUANTQA_MODEL=... python app.py          # e.g. on Hugging Face Spaces
"""

from __future__ import annotations

try:  # ZeroGPU on Hugging Face Spaces: imported before torch; GPU work runs inside @spaces.GPU
    import spaces

    gpu = spaces.GPU
except ImportError:  # everywhere else: a no-op
    def gpu(fn):
        return fn

import argparse
import html
import json
import os
import sys
from pathlib import Path

import gradio as gr
import pandas as pd

from quant import DEFAULT_MODEL, EXTRA_VARIANTS, LABELS, Comparator, InputError, ModelLoadError, QuantConfig
from quant.evaluate import SquadFormatError, evaluate, load_squad
from quant.inputs import DEFAULT_RUNS, MAX_CONTEXT_CHARS, MAX_QUESTION_CHARS, MAX_RUNS, MIN_RUNS

ASSETS = Path(__file__).resolve().parent / "assets"
QUEUE_SIZE = 16  # waiting requests beyond this are told to retry
EVAL_MAX_QUESTIONS = 500
EVAL_MAX_FILE = "20mb"
MAIN_VARIANTS = ("fp32-cpu", "int8-cpu", "fp32-cuda")
ALL_VARIANTS = MAIN_VARIANTS + EXTRA_VARIANTS

# System fonts only: the page must not wait on a font CDN (offline machines, privacy).
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                       font_mono=["ui-monospace", "SFMono-Regular", "monospace"])
CSS = """
.qq-card {min-height: 100%;}
.qq-agree {font-size: 1.05em;}
.qq-hl .textfield .text {word-break: normal !important; overflow-wrap: break-word;}
"""


def strict_text(box: gr.Textbox) -> gr.Textbox:
    """Make an API value that is not text an error (the stock Textbox str()s dicts and lists).

    Done per instance: subclassing a component makes Gradio write a .pyi file next to app.py.
    """
    stock = box.preprocess

    def preprocess(payload):
        if payload is not None and not isinstance(payload, str):
            raise gr.Error(f"{box.label or 'This field'} must be text, not {type(payload).__name__}.")
        return stock(payload)

    box.preprocess = preprocess
    return box


def strict_number(slider: gr.Slider) -> gr.Slider:
    """Answer a non-number from the API with a clear message (the stock Slider fails obscurely)."""
    stock = slider.preprocess

    def preprocess(payload):
        if isinstance(payload, bool) or not isinstance(payload, (int, float)):
            raise gr.Error(f"{slider.label} must be a whole number from {slider.minimum:g} to "
                           f"{slider.maximum:g}, not {payload!r}.")
        return stock(payload)

    slider.preprocess = preprocess
    return slider


def load_examples() -> list[list]:
    data = json.loads((ASSETS / "examples.json").read_text(encoding="utf-8"))
    return [[e["passage"], e["question"]] for e in data]


def _md_text(s: str) -> str:
    """User text shown inside Markdown: HTML-escaped and Markdown-inert."""
    s = html.escape(" ".join(s.split()), quote=True)
    return "".join("\\" + c if c in "\\`*_{}[]()#+-.!|~>" else c for c in s)


# ---------------------------------------------------------------- rendering (pure functions of the result dict)


def card_markdown(r: dict, label: str) -> str:
    if not r.get("available"):
        return f"### {label}\n\n**Not available** — {_md_text(r.get('reason') or 'unknown reason')}"
    answer = (f"#### “{_md_text(r['answer'])}”" if r["answer"]
              else "#### no answer\n_the model finds no answer to this question in the passage_")
    lat = r["latency_ms"]
    speed = f"**{r['speedup']:.2f}×** vs FP32 · CPU" if r.get("speedup") else ""
    return (f"### {label}\n{answer}\n\n"
            f"**{lat['median']:.1f} ms** median · {lat['p90']:.1f} ms p90 · {speed}  \n"
            f"confidence {100 * r['score']:.1f}% · {lat['runs']} timed runs after warm-up")


def highlight(context: str, r: dict) -> dict | None:
    if not r.get("available"):
        return None
    entities = [{"entity": "answer", "start": r["start"], "end": r["end"]}] if r["end"] > r["start"] else []
    return {"text": context, "entities": entities}


def agreement_markdown(d: dict) -> str:
    agree = d.get("int8_agrees_with_fp32")
    if agree is None:
        return ""
    if agree:
        return "✓ **INT8 gave the same answer as FP32.**"
    by = {r["variant"]: r for r in d["results"]}
    return (f"⚠ **INT8 answered differently from FP32**: “{_md_text(by['int8-cpu']['answer']) or 'no answer'}” "
            f"vs “{_md_text(by['fp32-cpu']['answer']) or 'no answer'}”.")


def latency_frame(d: dict) -> pd.DataFrame:
    rows = [{"variant": LABELS[r["variant"]], "median_ms": r["latency_ms"]["median"], "p90_ms": r["latency_ms"]["p90"]}
            for r in d["results"] if r.get("available") and r.get("latency_ms")]
    return pd.DataFrame(rows, columns=["variant", "median_ms", "p90_ms"]).astype(
        {"variant": str, "median_ms": float, "p90_ms": float})


def sizes_markdown(sizes: dict, layers: dict) -> str:
    fp32 = sizes["fp32"]
    rows = [("FP32", fp32), ("INT8 (Linear layers)", sizes["int8"])]
    if "int8_emb" in sizes:
        rows.append(("INT8 (Linear + embeddings)", sizes["int8_emb"]))
    body = "\n".join(f"| {name} | {mib:,.2f} MiB | {100 * mib / fp32:.1f}% | {fp32 / mib:.2f}× |" for name, mib in rows)
    return ("### Model size\n\n| | size | of FP32 | smaller by |\n|---|---|---|---|\n" + body +
            f"\n\n<sub>Bytes of `torch.save(state_dict)`, MiB = 2²⁰ bytes. {layers['linear_int8']} Linear layers "
            f"quantized; measured once at start-up.</sub>")


def env_markdown(info: dict) -> str:
    rows = [("model", info["model"]), ("torch", info["torch"]), ("transformers", info["transformers"]),
            ("threads", info["threads"]), ("quantized engine", info["engine_choice"]),
            ("INT8 config", info["quant_config"]), ("TorchScript (INT8)", info["torchscript"]),
            ("CPU", info["cpu"]),
            ("CPU features", ", ".join(info["cpu_features"]) or "—"),
            ("GPU", info["gpu"] or "none (CUDA not available)"), ("start-up", f"{info['startup_s']} s")]
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {_md_text(str(v))} |" for k, v in rows)


# ---------------------------------------------------------------- the app


def build_demo(comparator: Comparator) -> gr.Blocks:
    """The whole UI around one ready `Comparator`. Does not launch."""
    info = comparator.info()
    avail = comparator.availability()

    @gpu
    def compare(passage: str, question: str, runs: int = DEFAULT_RUNS, extra: bool = False,
                progress=gr.Progress()) -> dict:
        """Answer with every variant; returns the comparison as a dict (see README, API)."""
        variants = [v for v in (ALL_VARIANTS if extra else MAIN_VARIANTS) if v in avail]
        try:
            result = comparator.compare(passage, question, runs=runs, variants=variants,
                                        progress=lambda f, desc: progress(f, desc=desc))
        except InputError as exc:
            raise gr.Error(str(exc), title="Please check the input") from None
        except Exception as exc:  # never a bare "error" page: say what failed, keep serving
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise gr.Error(f"The comparison failed: {type(exc).__name__}: {first}") from None
        d = result.to_dict()
        d["context"] = result.context  # the passage as answered: offsets index into it
        d["question"] = result.question
        return d

    def render(d: dict):
        by = {r["variant"]: r for r in d["results"]}
        outs = []
        for v in ALL_VARIANTS:
            r = by.get(v)
            if r is None:
                outs += [gr.update(visible=False), gr.update(), gr.update(visible=False)]
            else:
                outs += [gr.update(visible=True), card_markdown(r, LABELS[v]),
                         gr.update(value=highlight(d["context"], r), visible=bool(r.get("available")))]
        notes = "".join(f"\n\n<sub>Note: {_md_text(n)}</sub>" for n in d.get("notes", []))
        return [*outs, agreement_markdown(d) + notes, latency_frame(d)]

    def run_eval(file, limit, progress=gr.Progress()):
        if file is None:
            raise gr.Error("Upload a SQuAD-format JSON file first.")
        try:
            limit = int(limit)
        except (TypeError, ValueError):
            raise gr.Error(f"Questions must be a whole number from 1 to {EVAL_MAX_QUESTIONS}.") from None
        if not 1 <= limit <= EVAL_MAX_QUESTIONS:
            raise gr.Error(f"Questions must be from 1 to {EVAL_MAX_QUESTIONS}.")
        try:
            examples = load_squad(file, limit=limit)
        except SquadFormatError as exc:
            raise gr.Error(str(exc), title="Not a SQuAD file") from None
        rep = evaluate(comparator, examples, progress=lambda n, t: progress(n / t, desc=f"question {n}/{t}"))
        d = rep.to_dict()
        table = pd.DataFrame([{"variant": LABELS.get(r["variant"], r["variant"]), "EM %": r["exact_match"],
                               "F1 %": r["f1"], "questions": r["n"], "questions/s": r["questions_per_s"]}
                              for r in d["results"]])
        dis = pd.DataFrame([{"question": x["question"], "passage": x["snippet"], "FP32": x["fp32"] or "(no answer)",
                             "INT8": x["int8"] or "(no answer)", "gold": x["gold"] or "(unanswerable)"}
                            for x in d["disagreements"]], columns=["question", "passage", "FP32", "INT8", "gold"])
        summary = (f"**Agreement:** INT8 gives exactly the FP32 span on **{d['agreement']:.1f}%** of "
                   f"{d['results'][0]['n']} questions; mean |confidence difference| {d['mean_abs_score_diff']:.4f}."
                   if d["agreement"] is not None else "")
        if d["skipped"]:
            summary += f"\n\nSkipped {len(d['skipped'])} question(s) (too long or empty)."
        return table, summary, dis, d

    with gr.Blocks(title="QuantQA — FP32 vs INT8 BERT question answering") as demo:
        gr.Markdown(
            "# QuantQA — what dynamic INT8 quantization does to a BERT QA model\n"
            f"One model (**{_md_text(comparator.model_id)}**), answered three ways side by side: FP32 on CPU, "
            "dynamically quantized INT8 on CPU, FP32 on CUDA. Latencies are medians over live timed runs "
            "(warm-up first, tokenization outside the clock, variants interleaved).")
        with gr.Tab("Compare"):
            with gr.Row():
                with gr.Column(scale=3):
                    passage = strict_text(gr.Textbox(label=f"Passage (up to {MAX_CONTEXT_CHARS:,} characters)",
                                                     lines=8, max_length=MAX_CONTEXT_CHARS, elem_id="passage"))
                    question = strict_text(gr.Textbox(label="Question", max_length=MAX_QUESTION_CHARS,
                                                      elem_id="question"))
                with gr.Column(scale=1, min_width=220):
                    runs = strict_number(gr.Slider(MIN_RUNS, MAX_RUNS, value=DEFAULT_RUNS, step=1,
                                                   label="Timed runs per variant"))
                    extra = gr.Checkbox(False, label="Also run BF16 · CPU and FP16 · CUDA")
                    button = gr.Button("Compare", variant="primary", elem_id="compare-btn")
            gr.Examples(load_examples(), inputs=[passage, question], cache_examples=False, label="Examples")
            agreement = gr.Markdown(elem_classes="qq-agree", elem_id="agreement")
            card_outputs = []
            with gr.Row(equal_height=True):
                for v in ALL_VARIANTS:
                    with gr.Column(visible=v in MAIN_VARIANTS, elem_classes="qq-card", elem_id=f"card-{v}") as col:
                        md = gr.Markdown(card_markdown({"available": False, "reason": avail[v]}, LABELS[v])
                                         if avail.get(v) else f"### {LABELS[v]}\n\n_Press Compare._")
                        hl = gr.HighlightedText(label="Answer in the passage", show_legend=False,
                                                show_inline_category=False, elem_classes="qq-hl",
                                                color_map={"answer": "#fbbf24"}, combine_adjacent=False,
                                                visible=False, elem_id=f"hl-{v}")
                    card_outputs += [col, md, hl]
            with gr.Row():
                chart = gr.BarPlot(latency_frame({"results": []}), x="variant",
                                   y="median_ms", title="Latency (median, ms; p90 in the tooltip)",
                                   tooltip=["variant", "median_ms", "p90_ms"], y_title="ms", x_title="",
                                   sort=None, height=280, y_lim=[0, None], elem_id="latency-chart")
                gr.Markdown(sizes_markdown(comparator.sizes_mib, comparator.layer_counts), elem_id="sizes")
            with gr.Accordion("Environment", open=False):
                gr.Markdown(env_markdown(info))
            result = gr.JSON(visible=False)
            gr.on([button.click, question.submit], compare, [passage, question, runs, extra], result,
                  api_name="compare", concurrency_limit=1, concurrency_id="model", show_progress="full"
                  ).success(render, result, card_outputs + [agreement, chart], api_visibility="private", queue=False)
        with gr.Tab("Evaluate"):
            gr.Markdown("Exact match and F1 (official SQuAD normalization) of every variant on a SQuAD v1.1 / "
                        "v2.0 JSON file (at most 20 MB), plus how often INT8 gives exactly the FP32 span.")
            with gr.Row():
                upload = gr.File(label="SQuAD-format JSON", file_types=[".json"], type="filepath")
                limit = gr.Number(100, label=f"First N questions (1–{EVAL_MAX_QUESTIONS})", precision=0,
                                  minimum=1, maximum=EVAL_MAX_QUESTIONS)
            eval_btn = gr.Button("Evaluate", variant="primary")
            eval_table = gr.Dataframe(label="Scores", interactive=False)
            eval_summary = gr.Markdown()
            eval_dis = gr.Dataframe(label="Questions where INT8 and FP32 disagree", interactive=False, wrap=True)
            eval_json = gr.JSON(visible=False)
            eval_btn.click(run_eval, [upload, limit], [eval_table, eval_summary, eval_dis, eval_json],
                           api_name="evaluate", concurrency_limit=1, concurrency_id="model")
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    return demo


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="QuantQA web demo")
    ap.add_argument("--model", default=os.environ.get("QUANTQA_MODEL", DEFAULT_MODEL),
                    help="hub id or local folder (env QUANTQA_MODEL; default %(default)s)")
    ap.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                    help="bind address (default 127.0.0.1; 0.0.0.0 to serve others)")
    ap.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--engine", default="auto", help="quantized engine (default: fastest measured here)")
    ap.add_argument("--embeddings", action="store_true", help="also quantize embeddings (8-bit weight-only)")
    ap.add_argument("--no-torchscript", dest="torchscript", action="store_false",
                    help="run INT8 eagerly instead of traced + frozen")
    ap.add_argument("--ssr", action="store_true", help="enable server-side rendering (off by default, see README)")
    ap.add_argument("--run-history", action="store_true", help="enable Gradio's run history page (off by default)")
    ap.add_argument("--share", action="store_true", help="create a public share link (off by default)")
    args = ap.parse_args(argv)
    try:
        comparator = Comparator(args.model, threads=args.threads, variants=ALL_VARIANTS,
                                quant=QuantConfig(embeddings=args.embeddings, engine=args.engine,
                                                  torchscript=args.torchscript))
    except (ModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    demo = build_demo(comparator)
    demo.launch(**launch_kwargs(host=args.host, port=args.port, share=args.share, ssr=args.ssr,
                                run_history=args.run_history))
    return 0


def launch_kwargs(host: str = "127.0.0.1", port: int | None = 7860, share: bool = False, ssr: bool = False,
                  run_history: bool = False) -> dict:
    """Safe defaults for `demo.launch`: loopback only, no share link, no SSR, no run history
    (gradio 6.27-6.31 advisory), no monitoring endpoint, bounded uploads, no tracebacks to clients."""
    return dict(server_name=host, server_port=port, share=share, ssr_mode=ssr, run_history=run_history,
                enable_monitoring=False, max_file_size=EVAL_MAX_FILE, show_error=False, theme=THEME, css=CSS,
                footer_links=["api"])


if __name__ == "__main__":
    sys.exit(main())
