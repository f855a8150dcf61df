"""QuantQA web demo: one BERT QA model answered side by side — FP32 CPU, INT8 CPU (dynamic and static), FP32 CUDA.

UI only: every number and answer comes from `quant` (the same calls the CLI
makes); the rendering is quant.render (HTML / Markdown) and quant.figures
(Plotly). The model is loaded and quantized once at start-up; static INT8 is
built in the background (the other cards serve at once, and a latency measured
while it compiles says so). Requests never reload anything. One function per
tab: `compare_tab`, `inspect_tab`, `evaluate_tab`.

    python app.py [--model M] [--host H] [--port P] [--no-static] [--keep-fp32 NAMES]
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
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads, fixed (default: chosen per measurement from the free cores)")
    ap.add_argument("--engine", default="auto", choices=("auto", "x86", "fbgemm", "onednn", "qnnpack"),
                    help="quantized engine (default: fastest measured here)")
    ap.add_argument("--embeddings", action="store_true", help="also quantize embeddings (8-bit weight-only)")
    w = ap.add_mutually_exclusive_group()
    w.add_argument("--per-channel", dest="per_channel", action="store_true", default=True,
                   help="INT8 weights with one scale per output channel (default)")
    w.add_argument("--per-tensor", dest="per_channel", action="store_false",
                   help="one weight scale per tensor: the seed's recipe")
    ap.add_argument("--keep-fp32", default="", metavar="NAME[,NAME...]",
                    help="leave these nn.Linear layers in FP32 (module paths or globs, e.g. '*.output.dense')")
    static = ap.add_mutually_exclusive_group()
    static.add_argument("--static", dest="static", action="store_true", default=True,
                        help="show the int8-static-cpu card: static INT8 (PT2E + Inductor), built once per model "
                             "and machine in the background (about a minute on bert-base) and cached (default: on)")
    static.add_argument("--no-static", dest="static", action="store_false", help="no static INT8 card")
    ap.add_argument("--no-torchscript", dest="torchscript", action="store_false",
                    help="run INT8 eagerly instead of traced + frozen")
    ap.add_argument("--thread-policy", choices=("auto", "cap", "off"),
                    default=os.environ.get("QUANTQA_THREAD_POLICY", "auto"),
                    help="auto (default): libgomp's spin, threads chosen per measurement from the free cores; "
                         "cap: GOMP_SPINCOUNT=1000 on every core; off: libgomp defaults on every core")
    from quant.serving import MAX_LINE, MAX_LINE_WAIT_S  # the standard library only: --help stays instant

    ap.add_argument("--max-line", type=int, default=MAX_LINE, metavar="N",
                    help=f"at most N measurements wait in line (default {MAX_LINE}; a longer line is also refused "
                         f"when its wait would pass {MAX_LINE_WAIT_S:.0f} s; identical requests share one measurement "
                         "and do not count twice)")
    ap.add_argument("--ssr", action="store_true", help="enable server-side rendering (off by default, see README)")
    ap.add_argument("--run-history", action="store_true", help="enable Gradio's run history page (off by default)")
    ap.add_argument("--share", action="store_true", help="create a public share link (off by default)")
    args = ap.parse_args(argv)
    if not 0 <= args.port <= 65535:
        ap.error(f"--port must be from 0 to 65535; got {args.port}")
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads must be at least 1; got {args.threads}")
    if not 1 <= args.max_line <= MAX_LINE:
        ap.error(f"--max-line must be from 1 to {MAX_LINE}; got {args.max_line}")
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

import json  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402

from quant import EXTRA_VARIANTS, LABELS, STATIC_VARIANT, Comparator, InputError, ModelLoadError, QuantConfig  # noqa: E402
from quant.evaluate import BUILTIN, SquadFormatError, evaluate, load_squad  # noqa: E402
from quant.figures import depth_figure, heatmap_figure, pareto_figure, tokens_figure  # noqa: E402
from quant.recipes import RECIPES, recipe_report  # noqa: E402
from quant.inputs import DEFAULT_RUNS, MAX_CONTEXT_CHARS, MAX_QUESTION_CHARS, MAX_RUNS, MIN_RUNS, first_line  # noqa: E402
from quant.serving import MAX_LINE, Busy, CompareService, Scheduler  # noqa: E402
from quant.render import (agreement_markdown, card_markdown, env_markdown, evaluation_frames, highlight,  # noqa: E402,F401
                          inspect_markdown, latency_frame, measurement_markdown, md_text, mixed_frame, passage_html,
                          recipe_frames, sizes_markdown)
from quant.render import css as render_css  # noqa: E402

ASSETS = Path(__file__).resolve().parent / "assets"
QUEUE_SIZE = 512  # Gradio's own queue: a backstop; quant.serving.Scheduler bounds the line (--max-line)
MAX_THREADS = 300  # Gradio worker threads: each visitor waiting in line holds one
EVAL_MAX_QUESTIONS = 500
EVAL_MAX_FILE = "20mb"
INSPECT_RUNS = 5  # timed runs per model in the Inspect tab's side-by-side
MAIN_VARIANTS = ("fp32-cpu", "int8-cpu", "fp32-cuda")
ALL_VARIANTS = MAIN_VARIANTS + (STATIC_VARIANT,) + EXTRA_VARIANTS
log = logging.getLogger("quantqa.app")

# System fonts only: the page must not wait on a font CDN (offline machines, privacy).
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                       font_mono=["ui-monospace", "SFMono-Regular", "monospace"])
CSS = ".qq-card {min-height: 100%;}\n.qq-agree {font-size: 1.05em;}\n" + render_css()
_md_text = md_text  # the name older code and tests use


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
    """Answer a non-number or a fraction from the API with a clear message (the stock Slider fails obscurely)."""
    stock = slider.preprocess

    def preprocess(payload):
        whole = isinstance(payload, int) or (isinstance(payload, float) and payload.is_integer())
        if isinstance(payload, bool) or not whole:
            raise rejected(f"{slider.label} must be a whole number from {slider.minimum:g} to "
                           f"{slider.maximum:g}, not {payload!r}.")
        if not slider.minimum <= payload <= slider.maximum:
            raise rejected(f"{slider.label} must be from {slider.minimum:g} to {slider.maximum:g}; got {payload!r}.")
        return stock(int(payload))

    slider.preprocess = preprocess
    return slider


def rejected(message: str, title: str = "Please check the input") -> gr.Error:
    """A clean error for the client and one line in the server console (no traceback)."""
    log.warning("rejected request: %s", " ".join(message.split())[:300])
    return gr.Error(message, title=title, print_exception=False)


def failed(what: str, exc: Exception) -> gr.Error:
    """Never a bare "error" page: say what failed, keep serving."""
    log.exception("%s failed", what)
    return gr.Error(f"The {what} failed: {type(exc).__name__}: {first_line(exc, 200)}", print_exception=False)


def load_examples() -> list[dict]:
    return json.loads((ASSETS / "examples.json").read_text(encoding="utf-8"))


def line(progress) -> callable:
    """Show a visitor's place in line and the expected wait in Gradio's progress bar."""
    def on_wait(position: int, eta_s: float) -> None:
        progress(0.0, desc=(f"In line: {position} measurement{'s' if position != 1 else ''} before yours · "
                            f"about {eta_s:.0f} s" if position else "Waiting for the same measurement, running now"))
    return on_wait


def environment(comparator: Comparator) -> dict:
    """The environment panel's facts, as they are now (static INT8 may have finished since start-up)."""
    info = comparator.info()
    avail = comparator.availability()
    if STATIC_VARIANT in avail:
        info["static"] = comparator.static_info() or avail[STATIC_VARIANT]
    return info


# ---------------------------------------------------------------- the tabs


def compare_tab(demo: gr.Blocks, comparator: Comparator, service: CompareService, main_variants: list[str]):
    """Passage + question in, one marked passage and a card per variant out. Returns (passage, question)."""
    avail = comparator.availability()

    def variants(extra: bool = False) -> list[str]:
        now = comparator.availability()
        return [v for v in main_variants + (list(EXTRA_VARIANTS) if extra else []) if v in now]

    @gpu
    def compare(passage: str, question: str, runs: int = DEFAULT_RUNS, extra: bool = False,
                request: gr.Request = None, progress=gr.Progress()) -> dict:
        """Answer with every variant; returns the comparison as a dict (see README, API)."""
        try:
            return service.compare(passage, question, runs, variants(extra),
                                   session=getattr(request, "session_hash", None), on_wait=line(progress),
                                   progress=lambda f, desc: progress(f, desc=desc))
        except InputError as exc:
            raise rejected(str(exc)) from None
        except Busy as exc:
            raise rejected(str(exc), title="Busy") from None
        except Exception as exc:
            raise failed("comparison", exc) from None

    def render(d: dict):
        by = {r["variant"]: r for r in d["results"]}
        outs = []
        for v in ALL_VARIANTS:
            r = by.get(v)
            if r is None:
                outs += [gr.update(visible=v in main_variants), gr.update()]
            else:
                outs += [gr.update(visible=True), card_markdown(r, LABELS[v], d["context"], d.get("recipes", {}).get(v, ""))]
        shown = [by[v] for v in ALL_VARIANTS if v in by]
        return [*outs, agreement_markdown(d), passage_html(d["context"], shown), measurement_markdown(d),
                latency_frame(d), sizes(d["sizes_mib"])]

    def sizes(mib: dict) -> str:
        return sizes_markdown(mib, comparator.layer_counts, comparator.quant.keep_fp32, str(comparator.quant))

    def on_load():
        """A page opened later sees what changed since start-up: static INT8 built (or failed), its size."""
        why = comparator.availability().get(STATIC_VARIANT, "")
        pending = comparator.variant(STATIC_VARIANT).pending
        card = (f"### {LABELS[STATIC_VARIANT]}\n\n_Press Compare._" if why is None else
                card_markdown({"available": False, "reason": why, "pending": pending}, LABELS[STATIC_VARIANT]))
        return card, sizes(comparator.sizes_mib), env_markdown(environment(comparator))

    with gr.Row():
        with gr.Column(scale=3):
            passage = strict_text(gr.Textbox(label=f"Passage (up to {MAX_CONTEXT_CHARS:,} characters)", lines=4,
                                             max_lines=5, max_length=MAX_CONTEXT_CHARS, elem_id="passage"))
            question = strict_text(gr.Textbox(label="Question", max_length=MAX_QUESTION_CHARS, elem_id="question"))
        with gr.Column(scale=1, min_width=220):
            runs = strict_number(gr.Slider(MIN_RUNS, MAX_RUNS, value=DEFAULT_RUNS, step=1,
                                           label="Timed runs per variant"))
            extra = gr.Checkbox(False, label="Also run BF16 · CPU and FP16 · CUDA")
            button = gr.Button("Compare", variant="primary", elem_id="compare-btn")
    examples = load_examples()
    gr.Examples([[e["passage"], e["question"]] for e in examples], inputs=[passage, question], cache_examples=False,
                label="Examples", example_labels=[e["label"] for e in examples], elem_id="examples")
    agreement = gr.Markdown(elem_classes="qq-agree", elem_id="agreement")
    marked = gr.HTML(elem_id="passage-view", padding=False)
    card_outputs = []
    with gr.Row(equal_height=True):
        for v in ALL_VARIANTS:
            with gr.Column(visible=v in main_variants, elem_classes="qq-card", elem_id=f"card-{v}",
                           min_width=220) as col:
                md = gr.Markdown(card_markdown({"available": False, "reason": avail[v],
                                                "pending": comparator.variant(v).pending}, LABELS[v])
                                 if avail.get(v) else f"### {LABELS[v]}\n\n_Press Compare._", elem_id=f"md-{v}")
            card_outputs += [col, md]
    measured = gr.Markdown(elem_id="measurement")
    with gr.Row():
        chart = gr.BarPlot(latency_frame({"results": []}), x="variant", y="median_ms",
                           title="Latency (median, ms; p90 in the tooltip)", tooltip=["variant", "median_ms", "p90_ms"],
                           y_title="ms", x_title="", sort=[LABELS[v] for v in ALL_VARIANTS],  # the cards' order
                           height=230, y_lim=[0, None], elem_id="latency-chart")
        size_panel = gr.Markdown(sizes(comparator.sizes_mib), elem_id="sizes")
    with gr.Accordion("Environment", open=False):
        env_panel = gr.Markdown(env_markdown(environment(comparator)), elem_id="env")
    result = gr.JSON(visible=False)
    gr.on([button.click, question.submit], compare, [passage, question, runs, extra], result,
          api_name="compare", concurrency_limit=MAX_LINE, concurrency_id="compare",  # all reach the line, which admits
          show_progress="full", show_progress_on=card_outputs[1::2],  # place in line, then progress, on the cards
          ).success(render, result, card_outputs + [agreement, marked, measured, chart, size_panel],
                    api_visibility="private", queue=False)
    if STATIC_VARIANT in main_variants:
        static_md = card_outputs[2 * ALL_VARIANTS.index(STATIC_VARIANT) + 1]
        demo.load(on_load, None, [static_md, size_panel, env_panel], api_visibility="private", queue=False)
    return passage, question


def inspect_tab(comparator: Comparator, scheduler: Scheduler, passage, question) -> None:
    """Where INT8 loses precision on the Compare tab's passage, and what keeping K layers in FP32 buys."""
    n_quantized = comparator.layer_counts["linear_int8"]

    def inspect(passage: str, question: str, keep: int = 0, progress=gr.Progress()) -> dict:
        """Layer report (where INT8 loses precision) + the model with the `keep` least precise layers in FP32."""
        try:
            def run(_check):
                progress(0.1, desc="inspecting")
                return comparator.inspect(passage, question, keep_least_precise=keep, runs=INSPECT_RUNS)

            return scheduler.exclusive(run, estimate_s=5.0, on_wait=line(progress), label="inspection")
        except InputError as exc:
            raise rejected(str(exc)) from None
        except Busy as exc:
            raise rejected(str(exc), title="Busy") from None
        except Exception as exc:
            raise failed("inspection", exc) from None

    def render(d: dict):
        return (inspect_markdown(d), heatmap_figure(d), depth_figure(d), tokens_figure(d), mixed_frame(d))

    gr.Markdown("Where INT8 loses precision on the Compare tab's passage and question: every INT8 Linear run on its "
                "FP32 input (local SQNR), the error as it propagates through the layers, and the start / end "
                "probabilities FP32 and INT8 give each passage token. Then keep the least precise layers in FP32 and "
                "see what that buys.")
    with gr.Row():
        keep = strict_number(gr.Slider(0, max(1, n_quantized), value=0, step=1, elem_id="keep-k",
                                       interactive=n_quantized > 0,  # no INT8 layers: Inspect says why
                                       label="Keep the K least precise layers in FP32"))
        button = gr.Button("Inspect", variant="primary", elem_id="inspect-btn")
    summary = gr.Markdown(elem_id="inspect-summary")
    with gr.Row():
        heat = gr.Plot(label="Local SQNR", elem_id="plot-heatmap")
        depth = gr.Plot(label="Propagated SQNR", elem_id="plot-depth")
    tokens = gr.Plot(label="Token probabilities", elem_id="plot-tokens")
    mixed = gr.Dataframe(label="FP32, INT8 and INT8 with the K least precise layers in FP32 (this passage)",
                         interactive=False, elem_id="mixed-table")
    out = gr.JSON(visible=False)
    button.click(inspect, [passage, question, keep], out, api_name="inspect", concurrency_limit=4,
                 concurrency_id="inspect", show_progress="full", show_progress_on=[heat, depth, tokens],
                 ).success(render, out, [summary, heat, depth, tokens, mixed], api_visibility="private", queue=False)


def evaluate_tab(comparator: Comparator, scheduler: Scheduler) -> None:
    """EM / F1 and agreement with FP32 of every variant on a SQuAD file (default: the built-in real-text set), and
    which INT8 recipe to ship: each recipe alone and with its K layers in FP32, on a Pareto chart."""

    def examples_of(file, limit):
        try:
            limit = int(limit)
        except (TypeError, ValueError):
            raise rejected(f"Questions must be a whole number from 1 to {EVAL_MAX_QUESTIONS}.") from None
        if not 1 <= limit <= EVAL_MAX_QUESTIONS:
            raise rejected(f"Questions must be from 1 to {EVAL_MAX_QUESTIONS}.")
        try:
            return load_squad(file or BUILTIN, limit=limit)
        except SquadFormatError as exc:
            raise rejected(str(exc), title="Not a SQuAD file") from None

    def run_eval(file, limit, progress=gr.Progress()):
        examples = examples_of(file, limit)
        try:
            rep = scheduler.exclusive(
                lambda _check: evaluate(comparator, examples,
                                        progress=lambda n, t: progress(n / t, desc=f"question {n}/{t}")),
                estimate_s=0.2 * len(examples), on_wait=line(progress), label="evaluation")
        except Busy as exc:
            raise rejected(str(exc), title="Busy") from None
        d = rep.to_dict()
        table, summary, dis = evaluation_frames(d)
        return table, summary, dis, d

    def run_recipes(file, limit, target, max_keep, recipes, progress=gr.Progress()):
        examples = examples_of(file, limit)
        if not isinstance(target, (int, float)) or not 0 < target <= 100:
            raise rejected("The target agreement is a percentage from 1 to 100.")
        n_linear = comparator.layer_counts["linear_int8"]
        if not isinstance(max_keep, (int, float)) or not float(max_keep).is_integer() or not 0 <= max_keep <= n_linear:
            raise rejected(f"At most K layers in FP32: a whole number from 0 to {n_linear} (the INT8 Linear layers).")
        picked = [r for r in RECIPES if r in (recipes or [])]
        if not picked:
            raise rejected(f"Pick at least one recipe: {', '.join(RECIPES)}.")

        def run(_check):
            report = recipe_report(comparator, examples, float(target), picked, int(max_keep),
                                   progress=lambda what, i, n: progress(i / max(n, 1), desc=f"{what} {i}/{n}"))
            return report.to_dict()

        try:
            d = scheduler.exclusive(run, estimate_s=120.0, on_wait=line(progress), label="recipes")
        except (InputError, ValueError) as exc:
            raise rejected(str(exc)) from None
        except Busy as exc:
            raise rejected(str(exc), title="Busy") from None
        except Exception as exc:
            raise failed("recipe comparison", exc) from None
        table, summary = recipe_frames(d, float(target))
        return pareto_figure(d, float(target)), table, summary, d

    gr.Markdown("Exact match and F1 (official SQuAD normalization) of every variant, and how often each one gives "
                "exactly the FP32 span. Without a file: the **built-in real-text set** (240 hand-written questions over "
                "24 encyclopedic, news and technical passages, 72 unanswerable; assets/realqa.json). A file: SQuAD "
                f"v1.1 / v2.0 JSON, at most 20 MB; passages over {MAX_CONTEXT_CHARS:,} characters or 32 windows are "
                "skipped, with the reason.")
    with gr.Row():
        upload = gr.File(label="SQuAD-format JSON (optional)", file_types=[".json"], type="filepath")
        limit = gr.Number(100, label=f"First N questions (1–{EVAL_MAX_QUESTIONS})", precision=0,
                          minimum=1, maximum=EVAL_MAX_QUESTIONS)
    button = gr.Button("Evaluate", variant="primary", elem_id="eval-btn")
    table = gr.Dataframe(label="Scores", interactive=False, elem_id="eval-table")
    summary = gr.Markdown(elem_id="eval-summary")
    dis = gr.Dataframe(label="Questions where an INT8 variant and FP32 disagree", interactive=False, wrap=True)
    out = gr.JSON(visible=False)
    button.click(run_eval, [upload, limit], [table, summary, dis, out], api_name="evaluate", concurrency_limit=2,
                 concurrency_id="evaluate")
    gr.Markdown("### Which INT8 should I ship?\nEvery recipe alone and with its K most sensitive layers kept in FP32 "
                "(K found per recipe), on the same questions: the fastest that keeps the target share of the FP32 "
                "answers is chosen. Takes minutes: static and per-token INT8 are compiled, and nothing else is timed "
                "meanwhile.")
    with gr.Row():
        target = gr.Number(90, label="Target: same answer as FP32 (%)", minimum=1, maximum=100)
        max_keep = gr.Number(8, label="At most K layers in FP32", precision=0, minimum=0)
        recipes = gr.CheckboxGroup(list(RECIPES), value=list(RECIPES), label="Recipes")
    rec_button = gr.Button("Compare recipes", elem_id="recipes-btn")
    pareto = gr.Plot(label="Latency vs answers kept", elem_id="plot-pareto")
    rec_summary = gr.Markdown(elem_id="recipes-summary")
    rec_table = gr.Dataframe(label="Recipes", interactive=False, elem_id="recipes-table")
    rec_out = gr.JSON(visible=False)
    rec_button.click(run_recipes, [upload, limit, target, max_keep, recipes], [pareto, rec_table, rec_summary, rec_out],
                     api_name="recipes", concurrency_limit=1, concurrency_id="recipes")


def build_demo(comparator: Comparator, scheduler: Scheduler | None = None, warm_examples: bool = True) -> gr.Blocks:
    """The whole UI around one ready `Comparator`; every timed run goes through `scheduler`'s line (one at a time,
    identical requests shared). With `warm_examples`, the examples are measured in the background. Does not launch."""
    service = CompareService(comparator, scheduler or Scheduler())
    avail = comparator.availability()
    main_variants = [v for v in MAIN_VARIANTS + (STATIC_VARIANT,) if v in avail]
    with gr.Blocks(title="QuantQA — FP32 vs INT8 BERT question answering") as demo:
        gr.Markdown(
            "# QuantQA — what INT8 quantization does to a BERT QA model\n"
            f"One model (**{md_text(comparator.display_name)}**), answered side by side: FP32 on CPU, "
            "dynamically quantized INT8 on CPU, FP32 on CUDA"
            + (", static INT8 (PT2E) on CPU" if STATIC_VARIANT in main_variants else "") +
            ". Latencies are medians over live timed runs (warm-up first, tokenization outside the clock, "
            "variants interleaved). *Inspect* shows where INT8 loses precision.", elem_id="header")
        with gr.Tab("Compare"):
            passage, question = compare_tab(demo, comparator, service, main_variants)
        with gr.Tab("Inspect", elem_id="inspect-tab"):
            inspect_tab(comparator, service.scheduler, passage, question)
        with gr.Tab("Evaluate"):
            evaluate_tab(comparator, service.scheduler)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    if warm_examples:  # the examples are ready before the audience is
        service.warm([(e["passage"], e["question"]) for e in load_examples()], DEFAULT_RUNS,
                     lambda: [v for v in main_variants if v in comparator.availability()])
    demo.scheduler = service.scheduler  # for tests and the console
    return demo


def launch_kwargs(host: str = "127.0.0.1", port: int | None = 7860, share: bool = False, ssr: bool = False,
                  run_history: bool = False) -> dict:
    """Safe defaults for `demo.launch`: loopback only, no share link, no SSR, no run history
    (gradio 6.27-6.31 advisory), no monitoring endpoint, bounded uploads, no tracebacks to clients.
    quiet: Gradio's banner would advise `share=True` in code; main() prints its own lines."""
    return dict(server_name=host, server_port=port or None, share=share, ssr_mode=ssr, run_history=run_history,
                enable_monitoring=False, max_file_size=EVAL_MAX_FILE, show_error=False, theme=THEME, css=CSS,
                footer_links=["api"], quiet=True, max_threads=MAX_THREADS)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="[quantqa] %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "gradio", "uvicorn", "uvicorn.access", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        comparator = Comparator(args.model, threads=args.threads,
                                variants=MAIN_VARIANTS + ((STATIC_VARIANT,) if args.static else ()) + EXTRA_VARIANTS,
                                quant=QuantConfig(embeddings=args.embeddings, engine=args.engine,
                                                  torchscript=args.torchscript, per_channel=args.per_channel,
                                                  keep_fp32=args.keep_fp32),
                                static="background")  # the page serves at once; the static card says when ready
    except (ModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[quantqa] OpenMP wait policy: {THREAD_POLICY.describe()}", flush=True)
    demo = build_demo(comparator, Scheduler(max_line=args.max_line))
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
