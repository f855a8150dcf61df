"""QuantQA web demo: one BERT QA model answered three ways — FP32 CPU, INT8 CPU, FP32 CUDA.

UI only. Every number and answer comes from `quant.Comparator` (the same call
the CLI makes). The model is loaded and quantized once at start-up; requests
never reload it. Comparisons and inspections run one request at a time
(concurrency 1, a bounded queue) so timings don't disturb each other.

    python app.py [--model M] [--host H] [--port P] [--static] [--keep-fp32 NAMES]
    QUANTQA_MODEL=... python app.py          # e.g. on Hugging Face Spaces

Command-line options are parsed before torch and Gradio load, so `--help` and a
bad option answer at once.
"""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_MODEL = "deepset/bert-base-cased-squad2"  # quant.models.DEFAULT_MODEL (a test keeps them equal)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="QuantQA web demo: FP32 vs INT8 BERT question answering.")
    ap.add_argument("--model", default=os.environ.get("QUANTQA_MODEL", DEFAULT_MODEL),
                    help="hub id, a folder saved with save_pretrained, or an INT8 artifact folder from "
                         "`python -m quant quantize --out` (env QUANTQA_MODEL; default %(default)s)")
    ap.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                    help="bind address (default 127.0.0.1; 0.0.0.0 to serve others)")
    ap.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                    help="port (default 7860 or GRADIO_SERVER_PORT; 0 picks a free one)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--engine", default="auto", choices=("auto", "x86", "fbgemm", "onednn", "qnnpack"),
                    help="quantized engine (default: fastest measured here)")
    ap.add_argument("--embeddings", action="store_true", help="also quantize embeddings (8-bit weight-only)")
    ap.add_argument("--per-channel", action="store_true", help="INT8 weights with one scale per output channel")
    ap.add_argument("--keep-fp32", default="", metavar="NAME[,NAME...]",
                    help="leave these nn.Linear layers in FP32 (module paths or globs, e.g. '*.output.dense')")
    ap.add_argument("--static", action="store_true",
                    help="add the int8-static-cpu card: static INT8 (PT2E + Inductor), built once per model and "
                         "machine (minutes on bert-base, start-up waits) and cached")
    ap.add_argument("--no-torchscript", dest="torchscript", action="store_false",
                    help="run INT8 eagerly instead of traced + frozen")
    ap.add_argument("--thread-policy", choices=("auto", "off"), default=os.environ.get("QUANTQA_THREAD_POLICY", "auto"),
                    help="auto (default): cap OpenMP spin-waiting so a busy neighbour costs ~2x, not ~20x; "
                         "off: libgomp defaults")
    ap.add_argument("--ssr", action="store_true", help="enable server-side rendering (off by default, see README)")
    ap.add_argument("--run-history", action="store_true", help="enable Gradio's run history page (off by default)")
    ap.add_argument("--share", action="store_true", help="create a public share link (off by default)")
    args = ap.parse_args(argv)
    if not 0 <= args.port <= 65535:
        ap.error(f"--port must be from 0 to 65535; got {args.port}")
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads must be at least 1; got {args.threads}")
    return args


if __name__ == "__main__":
    ARGS = parse_args()  # before the heavy imports below: --help and option errors answer at once
    from quant.threads import apply_policy

    THREAD_POLICY = apply_policy(ARGS.thread_policy)  # before torch loads: OpenMP reads it once

try:  # ZeroGPU on Hugging Face Spaces: imported before torch; GPU work runs inside @spaces.GPU
    import spaces

    gpu = spaces.GPU
except ImportError:  # everywhere else: a no-op
    def gpu(fn):
        return fn

import html  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402

from quant import EXTRA_VARIANTS, LABELS, STATIC_VARIANT, Comparator, InputError, ModelLoadError, QuantConfig  # noqa: E402
from quant.evaluate import SquadFormatError, evaluate, load_squad  # noqa: E402
from quant.inputs import DEFAULT_RUNS, MAX_CONTEXT_CHARS, MAX_QUESTION_CHARS, MAX_RUNS, MIN_RUNS  # noqa: E402
from quant.inspect import HEATMAP_KINDS  # noqa: E402

ASSETS = Path(__file__).resolve().parent / "assets"
QUEUE_SIZE = 16  # waiting requests beyond this are told to retry
EVAL_MAX_QUESTIONS = 500
EVAL_MAX_FILE = "20mb"
INSPECT_RUNS = 5  # timed runs per model in the Inspect tab's side-by-side
MAIN_VARIANTS = ("fp32-cpu", "int8-cpu", "fp32-cuda")
ALL_VARIANTS = MAIN_VARIANTS + (STATIC_VARIANT,) + EXTRA_VARIANTS
log = logging.getLogger("quantqa.app")

# System fonts only: the page must not wait on a font CDN (offline machines, privacy).
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                       font_mono=["ui-monospace", "SFMono-Regular", "monospace"])
# The stock HighlightedText lays its spans out as wrapping flex items: the answer chip starts a new
# line and its side margins put a space before the next punctuation. Here the passage is running text:
# inline spans, no chip margins, and font-size 0 on the wrappers so the white space between Gradio's
# span elements (which flex layout ignored) takes no room; the passage's own text keeps its size.
CSS = """
.qq-card {min-height: 100%;}
.qq-agree {font-size: 1.05em;}
.qq-hl .textfield {display: block !important; word-break: normal !important; overflow-wrap: break-word;}
.qq-hl .textfield, .qq-hl .token-container, .qq-hl .token {font-size: 0 !important;}
.qq-hl .textfield > *, .qq-hl .token-container, .qq-hl .token, .qq-hl .text {display: inline !important;}
.qq-hl .text {font-size: var(--body-text-size, 14px) !important;}
.qq-hl .token.highlighted {margin: 0 !important; padding: 0 1px !important;}
.qq-hl .line-break {display: block !important;}
"""


def strict_text(box: gr.Textbox) -> gr.Textbox:
    """Make an API value that is not text an error (the stock Textbox str()s dicts and lists).

    Done per instance: subclassing a component makes Gradio write a .pyi file next to app.py.
    """
    stock = box.preprocess

    def preprocess(payload):
        if payload is not None and not isinstance(payload, str):
            raise rejected(f"{box.label or 'This field'} must be text, not {type(payload).__name__}.")
        return stock(payload)

    box.preprocess = preprocess
    return box


def strict_number(slider: gr.Slider) -> gr.Slider:
    """Answer a non-number from the API with a clear message (the stock Slider fails obscurely)."""
    stock = slider.preprocess

    def preprocess(payload):
        if isinstance(payload, bool) or not isinstance(payload, (int, float)):
            raise rejected(f"{slider.label} must be a whole number from {slider.minimum:g} to "
                           f"{slider.maximum:g}, not {payload!r}.")
        if not slider.minimum <= payload <= slider.maximum:
            raise rejected(f"{slider.label} must be from {slider.minimum:g} to {slider.maximum:g}; got {payload!r}.")
        return stock(payload)

    slider.preprocess = preprocess
    return slider


def rejected(message: str, title: str = "Please check the input") -> gr.Error:
    """A clean error for the client and one line in the server console (no traceback)."""
    log.warning("rejected request: %s", " ".join(message.split())[:300])
    return gr.Error(message, title=title, print_exception=False)


def load_examples() -> list[list]:
    data = json.loads((ASSETS / "examples.json").read_text(encoding="utf-8"))
    return [[e["passage"], e["question"]] for e in data]


def _md_text(s: str) -> str:
    """User text shown inside Markdown: HTML-escaped and Markdown-inert."""
    s = html.escape(" ".join(s.split()), quote=True)
    return "".join("\\" + c if c in "\\`*_{}[]()#+-.!|~>" else c for c in s)


# ---------------------------------------------------------------- rendering (pure functions of result dicts)


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


def sizes_markdown(sizes: dict, layers: dict, keep_fp32: list | tuple = ()) -> str:
    fp32 = sizes.get("fp32")
    rows = [("FP32", fp32), ("INT8 (Linear layers)", sizes.get("int8"))]
    if "int8_emb" in sizes:
        rows.append(("INT8 (Linear + embeddings)", sizes["int8_emb"]))
    if "int8_static" in sizes:
        rows.append(("INT8 static (PT2E)", sizes["int8_static"]))

    def row(name, mib):
        if mib is None:
            return f"| {name} | n/a | | |"
        if not fp32:
            return f"| {name} | {mib:,.2f} MiB | | |"
        return f"| {name} | {mib:,.2f} MiB | {100 * mib / fp32:.1f}% | {fp32 / mib:.2f}× |"

    kept = f" {len(keep_fp32)} kept in FP32." if keep_fp32 else ""
    return ("### Model size\n\n| | size | of FP32 | smaller by |\n|---|---|---|---|\n" +
            "\n".join(row(n, m) for n, m in rows) +
            f"\n\n<sub>Bytes of `torch.save(state_dict)`, MiB = 2²⁰ bytes. {layers['linear_int8']} Linear layers "
            f"quantized.{kept} Measured once at start-up.</sub>")


def env_markdown(info: dict) -> str:
    rows = [("model", info["model"]), ("torch", info["torch"]), ("transformers", info["transformers"]),
            ("threads", info["threads"]), ("OpenMP wait policy", info.get("thread_policy", "—")),
            ("quantized engine", info["engine_choice"]), ("INT8 config", info["quant_config"]),
            ("TorchScript (INT8)", info["torchscript"]), ("CPU", info["cpu"]),
            ("CPU features", ", ".join(info["cpu_features"]) or "—"),
            ("GPU", info["gpu"] or "none (CUDA not available)"), ("start-up", f"{info['startup_s']} s")]
    if info.get("static"):
        rows.append(("INT8 static", info["static"]))
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {_md_text(str(v))} |" for k, v in rows)


# ---------------------------------------------------------------- Inspect tab figures (Plotly, rendered by gr.Plot)


def _db(v) -> float | None:
    return None if v is None else float(v)


def heatmap_figure(d: dict):
    """Local SQNR per encoder layer x Linear kind; exact dB and module path on hover."""
    import plotly.graph_objects as go

    layers = sorted({x["layer"] for x in d["layers"] if x["layer"] is not None})
    z, text = [], []
    for i in layers:
        row, trow = [], []
        for kind in HEATMAP_KINDS:
            x = next((y for y in d["layers"] if y["layer"] == i and y["kind"] == kind), None)
            if x is None:
                row.append(None)
                trow.append("")
            elif not x["quantized"]:
                row.append(None)
                trow.append(f"{x['name']}<br>kept in FP32")
            else:
                row.append(x["sqnr_db"])
                trow.append(f"{x['name']}<br>local SQNR {x['sqnr_db']} dB<br>weight SQNR {x['weight_sqnr_db']} dB"
                            f"<br>max |x| {x['input_absmax']} · outlier ratio {x['outlier_ratio']}")
        z.append(row)
        text.append(trow)
    fig = go.Figure(go.Heatmap(z=z, x=list(HEATMAP_KINDS), y=[f"layer {i}" for i in layers], text=text,
                               hovertemplate="%{text}<extra></extra>", colorscale="RdYlGn", zmin=10, zmax=40,
                               colorbar={"title": "dB"}))
    fig.update_layout(title="Local SQNR of each INT8 Linear (low = loses precision)", height=360,
                      margin={"l": 70, "r": 20, "t": 50, "b": 40}, yaxis={"autorange": "reversed"})
    return fig


def depth_figure(d: dict):
    import plotly.graph_objects as go

    ys = [_db(v) for v in d["hidden_sqnr_db"]]
    fig = go.Figure(go.Scatter(x=list(range(len(ys))), y=ys, mode="lines+markers", name="hidden state",
                               hovertemplate="after layer %{x}: %{y:.1f} dB<extra></extra>"))
    for k, dash in (("start", "dash"), ("end", "dot")):
        v = _db(d["logits_sqnr_db"][k])
        if v is not None:
            fig.add_hline(y=v, line_dash=dash, annotation_text=f"{k} logits {v:.1f} dB",
                          annotation_position="top left" if k == "start" else "top right")
    fig.update_layout(title="Propagated SQNR by depth (INT8 model vs FP32 model)", xaxis_title="encoder layer",
                      yaxis_title="dB", height=320, margin={"l": 60, "r": 20, "t": 50, "b": 40})
    return fig


def tokens_figure(d: dict):
    """FP32 vs INT8 p(start), p(end) over the passage tokens, both answers marked."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    toks = d["tokens"]
    x = list(range(len(toks)))
    labels = [t["text"] for t in toks]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("p(start)", "p(end)"))
    for row, key in ((1, "p_start"), (2, "p_end")):
        for v, color, dash in (("fp32", "#2563eb", "solid"), ("int8", "#f59e0b", "dash")):
            fig.add_trace(go.Scatter(x=x, y=[t[key][v] for t in toks], mode="lines", name=v.upper(),
                                     line={"color": color, "dash": dash}, showlegend=row == 1, customdata=labels,
                                     hovertemplate="%{customdata}: %{y:.3f}<extra>" + v.upper() + "</extra>"),
                          row=row, col=1)
    spans = {v: (d["answers"][v]["best"]["start"], d["answers"][v]["best"]["end"]) for v in ("fp32", "int8")}
    same = spans["fp32"] == spans["int8"]
    for v, color, where in (("fp32", "#2563eb", "top left"), ("int8", "#f59e0b", "top right")):
        if same and v == "int8":
            break
        a, b = spans[v]
        idx = [i for i, t in enumerate(toks) if b > a and t["start"] >= a and t["end"] <= b]
        if idx:
            fig.add_vrect(x0=idx[0] - 0.5, x1=idx[-1] + 0.5, fillcolor=color, opacity=0.15, line_width=0,
                          annotation_text="FP32 and INT8 answer" if same else f"{v.upper()} answer",
                          annotation_position=where)
    fig.update_layout(title="Where each variant puts the answer (passage tokens)", height=420,
                      margin={"l": 50, "r": 20, "t": 60, "b": 40})
    fig.update_xaxes(tickvals=x[:: max(1, len(x) // 40)], ticktext=labels[:: max(1, len(x) // 40)], row=2, col=1)
    return fig


def inspect_markdown(d: dict) -> str:
    worst = sorted((x for x in d["layers"] if x["quantized"] and x["sqnr_db"] is not None),
                   key=lambda x: x["sqnr_db"])[:5]
    lg = d["logits_sqnr_db"]
    fmt = (lambda v: "∞" if v is None else f"{v:.1f}")
    lines = [f"**{_md_text(d['summary'])}**", "",
             f"Logits SQNR: start {fmt(lg['start'])} dB, end {fmt(lg['end'])} dB. "
             "Least precise layers (local SQNR, the layer alone on the FP32 input):", ""]
    lines += [f"- `{x['name']}` — {x['sqnr_db']:.1f} dB (weights {x['weight_sqnr_db']:.1f} dB, "
              f"outlier ratio {x['outlier_ratio']})" for x in worst]
    if d.get("static"):
        s = d["static"]
        lines += ["", f"INT8 static (PT2E): logits SQNR start {fmt(s['logits_sqnr_db']['start'])} dB, end "
                      f"{fmt(s['logits_sqnr_db']['end'])} dB; answer “{_md_text(s['answer']) or 'no answer'}”."]
    return "\n".join(lines)


def mixed_frame(d: dict) -> pd.DataFrame:
    m = d.get("mixed") or {}
    rows = []
    for r in m.get("results", []):
        size = m.get("sizes_mib", {}).get(r["variant"])
        rows.append({"model": r.get("label", r["variant"]),
                     "answer": (r["answer"] or "(no answer)") if r["available"] else r.get("reason", ""),
                     "median ms": r["latency_ms"]["median"] if r.get("latency_ms") else None,
                     "size MiB": None if size is None else round(size, 2),
                     "same answer as FP32": {True: "yes", False: "no"}.get(r.get("agrees"), "")})
    return pd.DataFrame(rows, columns=["model", "answer", "median ms", "size MiB", "same answer as FP32"])


# ---------------------------------------------------------------- the app


def build_demo(comparator: Comparator) -> gr.Blocks:
    """The whole UI around one ready `Comparator`. Does not launch."""
    info = comparator.info()
    avail = comparator.availability()
    if STATIC_VARIANT in avail:
        info["static"] = comparator.static_info() or avail[STATIC_VARIANT]
    main_variants = [v for v in MAIN_VARIANTS + (STATIC_VARIANT,) if v in avail]
    n_quantized = comparator.layer_counts["linear_int8"]

    @gpu
    def compare(passage: str, question: str, runs: int = DEFAULT_RUNS, extra: bool = False,
                progress=gr.Progress()) -> dict:
        """Answer with every variant; returns the comparison as a dict (see README, API)."""
        variants = [v for v in main_variants + (list(EXTRA_VARIANTS) if extra else []) if v in avail]
        try:
            result = comparator.compare(passage, question, runs=runs, variants=variants,
                                        progress=lambda f, desc: progress(f, desc=desc))
        except InputError as exc:
            raise rejected(str(exc)) from None
        except Exception as exc:  # never a bare "error" page: say what failed, keep serving
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            log.exception("comparison failed")
            raise gr.Error(f"The comparison failed: {type(exc).__name__}: {first}", print_exception=False) from None
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
                outs += [gr.update(visible=v in main_variants), gr.update(), gr.update(visible=False)]
            else:
                outs += [gr.update(visible=True), card_markdown(r, LABELS[v]),
                         gr.update(value=highlight(d["context"], r), visible=bool(r.get("available")))]
        notes = "".join(f"\n\n<sub>Note: {_md_text(n)}</sub>" for n in d.get("notes", []))
        return [*outs, agreement_markdown(d) + notes, latency_frame(d)]

    def inspect(passage: str, question: str, keep: int = 0, progress=gr.Progress()) -> dict:
        """Layer report (where INT8 loses precision) + the model with the `keep` least precise layers in FP32."""
        try:
            k = int(keep)
        except (TypeError, ValueError):
            raise rejected(f"Layers kept in FP32 must be a whole number from 0 to {n_quantized}.") from None
        try:
            progress(0.1, desc="inspecting")
            return comparator.inspect(passage, question, keep_least_precise=k, runs=INSPECT_RUNS)
        except InputError as exc:
            raise rejected(str(exc)) from None
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            log.exception("inspection failed")
            raise gr.Error(f"The inspection failed: {type(exc).__name__}: {first}", print_exception=False) from None

    def render_inspect(d: dict):
        return (inspect_markdown(d), heatmap_figure(d), depth_figure(d), tokens_figure(d), mixed_frame(d))

    def run_eval(file, limit, progress=gr.Progress()):
        if file is None:
            raise rejected("Upload a SQuAD-format JSON file first.")
        try:
            limit = int(limit)
        except (TypeError, ValueError):
            raise rejected(f"Questions must be a whole number from 1 to {EVAL_MAX_QUESTIONS}.") from None
        if not 1 <= limit <= EVAL_MAX_QUESTIONS:
            raise rejected(f"Questions must be from 1 to {EVAL_MAX_QUESTIONS}.")
        try:
            examples = load_squad(file, limit=limit)
        except SquadFormatError as exc:
            raise rejected(str(exc), title="Not a SQuAD file") from None
        rep = evaluate(comparator, examples, progress=lambda n, t: progress(n / t, desc=f"question {n}/{t}"))
        d = rep.to_dict()
        table = pd.DataFrame([{"variant": LABELS.get(r["variant"], r["variant"]), "EM %": r["exact_match"],
                               "F1 %": r["f1"], "questions": r["n"], "questions/s": r["questions_per_s"],
                               "answerable EM / F1": (f"{r['has_ans']['exact_match']:.1f} / {r['has_ans']['f1']:.1f}"
                                                      if r.get("has_ans") else ""),
                               "unanswerable EM / F1": (f"{r['no_ans']['exact_match']:.1f} / {r['no_ans']['f1']:.1f}"
                                                        if r.get("no_ans") else "")}
                              for r in d["results"]])
        dis = pd.DataFrame([{"question": x["question"], "passage": x["snippet"], "FP32": x["fp32"] or "(no answer)",
                             "INT8": x["int8"] or "(no answer)", "gold": x["gold"] or "(unanswerable)"}
                            for x in d["disagreements"]], columns=["question", "passage", "FP32", "INT8", "gold"])
        summary = (f"**Agreement:** INT8 gives exactly the FP32 span on **{d['agreement']:.1f}%** of "
                   f"{d['results'][0]['n']} questions; mean |confidence difference| {d['mean_abs_score_diff']:.4f}."
                   if d["agreement"] is not None else "")
        if d["skipped"]:
            summary += (f"\n\nSkipped {len(d['skipped'])} question(s): " +
                        "; ".join(_md_text(s) for s in d["skipped"][:3]) + ("; …" if len(d["skipped"]) > 3 else ""))
        return table, summary, dis, d

    with gr.Blocks(title="QuantQA — FP32 vs INT8 BERT question answering") as demo:
        gr.Markdown(
            "# QuantQA — what INT8 quantization does to a BERT QA model\n"
            f"One model (**{_md_text(comparator.display_name)}**), answered side by side: FP32 on CPU, "
            "dynamically quantized INT8 on CPU, FP32 on CUDA"
            + (", static INT8 (PT2E) on CPU" if STATIC_VARIANT in main_variants else "") +
            ". Latencies are medians over live timed runs (warm-up first, tokenization outside the clock, "
            "variants interleaved). *Inspect* shows where INT8 loses precision.", elem_id="header")
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
                    with gr.Column(visible=v in main_variants, elem_classes="qq-card", elem_id=f"card-{v}",
                                   min_width=240) as col:
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
                                   sort=[LABELS[v] for v in ALL_VARIANTS],  # the cards' order, not alphabetical
                                   height=280, y_lim=[0, None], elem_id="latency-chart")
                gr.Markdown(sizes_markdown(comparator.sizes_mib, comparator.layer_counts, comparator.quant.keep_fp32),
                            elem_id="sizes")
            with gr.Accordion("Environment", open=False):
                gr.Markdown(env_markdown(info), elem_id="env")
            result = gr.JSON(visible=False)
            gr.on([button.click, question.submit], compare, [passage, question, runs, extra], result,
                  api_name="compare", concurrency_limit=1, concurrency_id="model", show_progress="full"
                  ).success(render, result, card_outputs + [agreement, chart], api_visibility="private", queue=False)
        with gr.Tab("Inspect", elem_id="inspect-tab"):
            gr.Markdown("Where INT8 loses precision on the Compare tab's passage and question: every INT8 Linear "
                        "run on its FP32 input (local SQNR), the error as it propagates through the layers, and "
                        "the start / end probabilities FP32 and INT8 give each passage token. Then keep the least "
                        "precise layers in FP32 and see what that buys.")
            with gr.Row():
                keep = strict_number(gr.Slider(0, n_quantized, value=0, step=1, elem_id="keep-k",
                                               label="Keep the K least precise layers in FP32"))
                inspect_btn = gr.Button("Inspect", variant="primary", elem_id="inspect-btn")
            inspect_summary = gr.Markdown(elem_id="inspect-summary")
            with gr.Row():
                heat = gr.Plot(label="Local SQNR", elem_id="plot-heatmap")
                depth = gr.Plot(label="Propagated SQNR", elem_id="plot-depth")
            tokens = gr.Plot(label="Token probabilities", elem_id="plot-tokens")
            mixed = gr.Dataframe(label="FP32, INT8 and INT8 with the K least precise layers in FP32 (this passage)",
                                 interactive=False, elem_id="mixed-table")
            inspect_json = gr.JSON(visible=False)
            inspect_btn.click(inspect, [passage, question, keep], inspect_json, api_name="inspect",
                              concurrency_limit=1, concurrency_id="model", show_progress="full"
                              ).success(render_inspect, inspect_json, [inspect_summary, heat, depth, tokens, mixed],
                                        api_visibility="private", queue=False)
        with gr.Tab("Evaluate"):
            gr.Markdown("Exact match and F1 (official SQuAD normalization) of every variant on a SQuAD v1.1 / "
                        "v2.0 JSON file (at most 20 MB), plus how often INT8 gives exactly the FP32 span. "
                        f"Passages over {MAX_CONTEXT_CHARS:,} characters or 32 windows are skipped, with the reason.")
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


def launch_kwargs(host: str = "127.0.0.1", port: int | None = 7860, share: bool = False, ssr: bool = False,
                  run_history: bool = False) -> dict:
    """Safe defaults for `demo.launch`: loopback only, no share link, no SSR, no run history
    (gradio 6.27-6.31 advisory), no monitoring endpoint, bounded uploads, no tracebacks to clients.
    quiet: Gradio's banner would advise `share=True` in code; main() prints its own lines."""
    return dict(server_name=host, server_port=port or None, share=share, ssr_mode=ssr, run_history=run_history,
                enable_monitoring=False, max_file_size=EVAL_MAX_FILE, show_error=False, theme=THEME, css=CSS,
                footer_links=["api"], quiet=True)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="[quantqa] %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "gradio", "uvicorn", "uvicorn.access", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        comparator = Comparator(args.model, threads=args.threads,
                                variants=MAIN_VARIANTS + ((STATIC_VARIANT,) if args.static else ()) + EXTRA_VARIANTS,
                                quant=QuantConfig(embeddings=args.embeddings, engine=args.engine,
                                                  torchscript=args.torchscript, per_channel=args.per_channel,
                                                  keep_fp32=args.keep_fp32))
    except (ModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[quantqa] OpenMP wait policy: {THREAD_POLICY.describe()}", flush=True)
    demo = build_demo(comparator)
    try:
        demo.launch(prevent_thread_lock=True, **launch_kwargs(host=args.host, port=args.port, share=args.share,
                                                              ssr=args.ssr, run_history=args.run_history))
    except OSError as exc:  # port taken, address not available
        print(f"error: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    print(f"* Running on local URL:  {demo.local_url}", flush=True)
    if demo.share_url:
        print(f"* Running on public URL: {demo.share_url}", flush=True)
    elif args.host in ("127.0.0.1", "localhost", "::1"):
        print("* Only this machine can open it (--host 0.0.0.0 serves your network; --share makes a public "
              "link)", flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
