"""QuantQA web demo: one BERT QA model answered side by side — FP32 CPU, INT8 CPU (dynamic and static), FP32 CUDA.

UI only: every number and answer comes from `quant` (the same calls the CLI
makes); the rendering is quant.render (HTML / Markdown) and quant.figures
(Plotly). The model is loaded and quantized once at start-up; static INT8 is
built in the background (the other cards serve at once, and a latency measured
while it compiles says so). Requests never reload anything.

Layout: `Page` holds the handlers (one method per action, each a plain
function of its inputs); `compare_tab`, `inspect_tab` and `evaluate_tab` lay the
page out and wire the events to them. Every timed piece of work goes through
one line (quant/line.py): fair between visitors, in turns for the long ones,
and a visitor who closes the page or presses Cancel stops what they started.

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
    ap.add_argument("--no-split", dest="split_outliers", action="store_false",
                    help="dynamic INT8 without outlier channel splitting (default: split, as the static card)")
    ap.add_argument("--keep-fp32", default="", metavar="NAME[,NAME...]",
                    help="leave these nn.Linear layers in FP32 (module paths or globs, e.g. '*.output.dense')")
    static = ap.add_mutually_exclusive_group()
    static.add_argument("--static", dest="static", action="store_true", default=True,
                        help="show the int8-static-cpu card: static INT8 (PT2E + Inductor), built once per model "
                             "and machine in the background (about a minute on bert-base) and cached (default: on)")
    static.add_argument("--no-static", dest="static", action="store_false", help="no static INT8 card")
    ap.add_argument("--no-torchscript", dest="torchscript", action="store_false",
                    help="run INT8 eagerly instead of traced + frozen")
    ap.add_argument("--trust-package", action="store_true",
                    help="with an INT8 artifact folder of static INT8: run the compiled package it brought when it was "
                         "built for this CPU and torch (default: rebuild it here from the folder's FP32 weights, so no "
                         "code from the folder runs)")
    ap.add_argument("--thread-policy", choices=("auto", "cap", "off"),
                    default=os.environ.get("QUANTQA_THREAD_POLICY", "auto"),
                    help="auto (default): libgomp's spin, threads chosen per measurement from the free cores; "
                         "cap: GOMP_SPINCOUNT=1000 on every core; off: libgomp defaults on every core")
    from quant.line import MAX_LINE, MAX_LINE_WAIT_S, MAX_PER_CLIENT  # the standard library only: --help stays instant

    ap.add_argument("--max-line", type=int, default=MAX_LINE, metavar="N",
                    help=f"at most N requests wait in line (default {MAX_LINE}; one visitor has at most "
                         f"{MAX_PER_CLIENT} at once, and a request is refused when its wait would pass "
                         f"{MAX_LINE_WAIT_S:.0f} s; identical requests share one measurement and do not count twice)")
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

try:  # Hugging Face Spaces: imported before torch (ZeroGPU patches it); only CUDA work runs inside @spaces.GPU
    import spaces
except ImportError:  # everywhere else
    spaces = None

import json  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402

from quant import EXTRA_VARIANTS, LABELS, STATIC_VARIANT, InputError, ModelLoadError, ModelSet, QuantConfig  # noqa: E402
from quant import gpu as quant_gpu  # noqa: E402
from quant.evaluate import BUILTIN, SquadFormatError, evaluate, load_squad  # noqa: E402
from quant.inspection import inspect_question  # noqa: E402
from quant.figures import depth_figure, heatmap_figure, latency_figure, pareto_figure, tokens_figure  # noqa: E402
from quant.inputs import DEFAULT_RUNS, MAX_CONTEXT_CHARS, MAX_QUESTION_CHARS, MAX_RUNS, MIN_RUNS, first_line  # noqa: E402
from quant.static import CARD_RECIPE  # noqa: E402
from quant.line import MAX_LINE, TURN_S, Busy, Cancelled, Overran, Scheduler  # noqa: E402
from quant import artifact, links  # noqa: E402
from quant.recipes import DEFAULT_RECIPES, RECIPES, recipe_report  # noqa: E402
from quant.render import (COLORS, agreement_markdown, card_markdown, comparison_markdown, env_markdown,  # noqa: E402,F401
                          evaluation_frames, highlight, inspect_markdown, latency_frame, measurement_markdown, md_text,
                          mixed_frame, passage_html, recipe_frames, sizes_markdown)
from quant.render import css as render_css  # noqa: E402
from quant.serving import CompareService  # noqa: E402

ASSETS = Path(__file__).resolve().parent / "assets"
QUEUE_SIZE = 512  # Gradio's own queue: a backstop; quant.line.Scheduler bounds the line (--max-line)
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


# ---------------------------------------------------------------- what a visitor sends


def rejected(message: str, title: str = "Please check the input") -> gr.Error:
    """A clean error for the client and one line in the server console (no traceback)."""
    log.warning("rejected request: %s", " ".join(message.split())[:300])
    return gr.Error(message, title=title, print_exception=False)


def failed(what: str, exc: BaseException) -> gr.Error:
    """Never a bare "error" page: say what failed, keep serving (one line in the console, no traceback)."""
    log.warning("%s failed: %s: %s", what, type(exc).__name__, first_line(exc, 300))
    return gr.Error(f"The {what} failed: {type(exc).__name__}: {first_line(exc, 200)}", print_exception=False)


def strict(component, check):
    """Check an API value before the component's own preprocess (whose errors are obscure or print a
    traceback): `check(payload)` returns the value to preprocess or raises `rejected`. Done per instance:
    subclassing a component makes Gradio write a .pyi file next to app.py."""
    stock = component.preprocess
    component.preprocess = lambda payload: stock(check(payload))
    return component


def strict_text(box: gr.Textbox) -> gr.Textbox:
    """An API value that is not text is an error (the stock Textbox str()s dicts and lists)."""
    def check(payload):
        if payload is not None and not isinstance(payload, str):
            raise rejected(f"{box.label or 'This field'} must be text, not {type(payload).__name__}.")
        return payload
    return strict(box, check)


def strict_number(component, whole: bool = True):
    """A number from the component's minimum to its maximum (a whole one when `whole`), or one clear line:
    a fraction, text, a bool or a value out of range never reaches Gradio's own checks."""
    lo, hi, label = component.minimum, component.maximum, component.label
    span = f"from {lo:g} to {hi:g}" if hi is not None else f"of at least {lo:g}"

    def check(payload):
        number = isinstance(payload, (int, float)) and not isinstance(payload, bool) and payload == payload
        if not number or (whole and not float(payload).is_integer()):
            raise rejected(f"{label} must be a {'whole ' if whole else ''}number {span}, not {payload!r}.")
        if payload < lo or (hi is not None and payload > hi):
            raise rejected(f"{label} must be {span}; got {payload!r}.")
        return int(payload) if whole else float(payload)
    return strict(component, check)


def strict_choices(group: gr.CheckboxGroup, choices) -> gr.CheckboxGroup:
    def check(payload):
        if not isinstance(payload, list) or not all(isinstance(x, str) for x in payload):
            raise rejected(f"{group.label} must be a list of names from: {', '.join(choices)}.")
        unknown = [x for x in payload if x not in choices]
        if unknown:
            raise rejected(f"Unknown {group.label.lower()}: {', '.join(map(repr, unknown[:3]))}; choose from "
                           f"{', '.join(choices)}.")
        return payload
    return strict(group, check)


def visitor(request: gr.Request | None) -> tuple[str | None, str | None]:
    """(session, address): the visitor's Gradio session, and their address when a proxy names it (a Space's
    X-Forwarded-For; its first entry). A direct connection has no address here: on loopback every visitor would
    share 127.0.0.1."""
    if request is None:
        return None, None
    forwarded = (request.headers or {}).get("x-forwarded-for") if hasattr(request, "headers") else None
    address = forwarded.split(",")[0].strip()[:64] if forwarded else None
    return getattr(request, "session_hash", None), address or None


def visitor_gone() -> bool:
    """True once the page that sent the running request was closed or its work cancelled: Gradio then drops the
    event from its active jobs (Cancel) or marks it dead (a closed page). Outside Gradio's queue: never."""
    from gradio.context import LocalContext

    blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
    queue = getattr(blocks, "_queue", None)
    if queue is None or event_id is None:
        return False
    for events in list(queue.active_jobs):
        for event in events or ():
            if event._id == event_id:
                return not event.alive
    return True


def waiting(progress, started: list | None = None):
    """Show a visitor's place in line and the expected wait in Gradio's progress bar (a task already started is
    paused for others' turns)."""
    def on_wait(position: int, eta_s: float) -> None:
        if started and started[0]:
            desc = f"Paused for {position} other request{'s' if position != 1 else ''} · resumes in about {eta_s:.0f} s"
        elif position:
            desc = (f"In line: {position} request{'s' if position != 1 else ''} before yours · about {eta_s:.0f} s")
        else:
            desc = "Waiting for the same measurement, running now"
        progress(0.0, desc=desc)
    return on_wait


line = waiting  # the name older code used


def load_examples() -> list[dict]:
    return json.loads((ASSETS / "examples.json").read_text(encoding="utf-8"))


def environment(comparator: ModelSet) -> dict:
    """The environment panel's facts, as they are now (static INT8 may have finished since start-up)."""
    info = comparator.info()
    avail = comparator.availability()
    if STATIC_VARIANT in avail:
        info["static"] = comparator.static_info() or avail[STATIC_VARIANT]
    return info


# ---------------------------------------------------------------- files a visitor takes away


class Outbox:
    """Files made for visitors (exports, model downloads), in one temporary folder; the oldest are deleted so that
    it stays bounded (Gradio copies each into its own cache as it serves it)."""

    def __init__(self, keep_small: int = 200, keep_large: int = 3):
        import tempfile

        self.root = Path(tempfile.mkdtemp(prefix="quantqa-outbox-"))
        self.keep = {"small": keep_small, "large": keep_large}
        self.made: dict[str, list[Path]] = {"small": [], "large": []}
        self._n = 0

    def path(self, name: str, large: bool = False) -> Path:
        """A fresh path for `name` (its own folder, so the visitor's file keeps its name)."""
        import shutil

        self._n += 1
        d = self.root / f"{self._n:06d}"
        d.mkdir()
        kind = "large" if large else "small"
        self.made[kind].append(d)
        while len(self.made[kind]) > self.keep[kind]:
            shutil.rmtree(self.made[kind].pop(0), ignore_errors=True)
        return d / name

    def text(self, name: str, content: str) -> str:
        p = self.path(name)
        p.write_text(content, encoding="utf-8")
        return str(p)


# ---------------------------------------------------------------- the handlers


class Page:
    """Every action of the page, as plain functions of their inputs (Gradio passes request and progress)."""

    def __init__(self, comparator: ModelSet, service: CompareService, main_variants: list[str]):
        self.models, self.service, self.main_variants = comparator, service, main_variants
        self.n_linear = comparator.layer_counts["linear_int8"]
        self.outbox = Outbox()
        self.examples = load_examples()

    def variants(self, extra: bool = False) -> list[str]:
        now = self.models.availability()
        return [v for v in self.main_variants + (list(EXTRA_VARIANTS) if extra else []) if v in now]

    def guarded(self, what: str, call):
        """Run `call()`; every failure becomes one clear line for the visitor and one in the console."""
        try:
            return call()
        except gr.Error:
            raise
        except (InputError, SquadFormatError) as exc:
            raise rejected(str(exc)) from None
        except Busy as exc:
            raise rejected(str(exc), title="Busy") from None
        except (Cancelled, Overran) as exc:
            raise rejected(str(exc), title="Stopped") from None
        except Exception as exc:
            raise failed(what, exc) from None

    # ---- Compare

    def compare(self, passage: str, question: str, runs: int = DEFAULT_RUNS, extra: bool = False,
                request: gr.Request = None, progress=gr.Progress()) -> dict:
        """Answer with every variant; returns the comparison as a dict (see README, API)."""
        session, address = visitor(request)
        return self.guarded("comparison", lambda: self.service.compare(
            passage, question, runs, self.variants(extra), session=session, address=address,
            on_wait=waiting(progress), progress=lambda f, desc: progress(f, desc=desc), gone=visitor_gone))

    def render(self, d: dict):
        by = {r["variant"]: r for r in d["results"]}
        outs = []
        for v in ALL_VARIANTS:
            r = by.get(v)
            if r is None:
                outs += [gr.update(visible=v in self.main_variants), gr.update()]
            else:
                outs += [gr.update(visible=True),
                         card_markdown(r, LABELS[v], d["context"], d.get("recipes", {}).get(v, ""))]
        shown = [by[v] for v in ALL_VARIANTS if v in by]
        chart = latency_figure(d)
        table = comparison_markdown(d, self.models.info().get("cpu", ""))
        stamp = f"quantqa-{int(d.get('measured_at') or 0)}"
        return [*outs, agreement_markdown(d), passage_html(d["context"], shown), measurement_markdown(d),
                chart, self.sizes(d["sizes_mib"]), table,
                self.outbox.text(f"{stamp}.json", json.dumps(d, indent=1, ensure_ascii=False) + "\n"),
                self.outbox.text(f"{stamp}.md", table)]

    def render_if(self, d):
        """`render` for a result, nothing for no result (a page opened without a link)."""
        return self.render(d) if d else [gr.skip()] * self.n_render

    # ---- links

    def from_link(self, request: gr.Request = None, progress=gr.Progress()):
        """A page opened with ?example=N, ?passage=…&question=… or ?z=…: the inputs filled and compared once (the
        stored or shared result when there is one). A wrong link is one line on the page."""
        params = dict(getattr(request, "query_params", None) or {})
        try:
            asked = links.parse(params, self.examples)
        except InputError as exc:
            log.warning("rejected link: %s", first_line(exc, 200))
            return gr.skip(), gr.skip(), gr.skip(), f"⚠ {md_text(str(exc))}"
        if asked is None:
            return gr.skip(), gr.skip(), gr.skip(), ""
        passage, question = asked
        try:
            d = self.compare(passage, question, DEFAULT_RUNS, False, request, progress)
        except gr.Error as exc:
            return passage, question, gr.skip(), f"⚠ {md_text(exc.message)}"
        return passage, question, d, ""

    def link(self, passage: str, question: str) -> str:
        """The query string that reopens this passage and question (the page adds its own address)."""
        if not isinstance(passage, str) or not isinstance(question, str) or not passage.strip() or not question.strip():
            raise rejected("Write a passage and a question first: the link reopens them.")
        return links.query(passage, question)

    def sizes(self, mib: dict) -> str:
        return sizes_markdown(mib, self.models.layer_counts, self.models.quant.keep_fp32, str(self.models.quant))

    def on_load(self):
        """A page opened later sees what changed since start-up: static INT8 built (or failed), its size."""
        why = self.models.availability().get(STATIC_VARIANT, "")
        pending = self.models.variant(STATIC_VARIANT).pending
        card = (f"### {LABELS[STATIC_VARIANT]}\n\n_Press Compare._" if why is None else
                card_markdown({"available": False, "reason": why, "pending": pending}, LABELS[STATIC_VARIANT]))
        return card, self.sizes(self.models.sizes_mib), env_markdown(environment(self.models))

    # ---- Inspect

    def inspect(self, passage: str, question: str, keep: int = 0, request: gr.Request = None,
                progress=gr.Progress()) -> dict:
        """Layer report (where INT8 loses precision) + the model with the `keep` least precise layers in FP32."""
        session, address = visitor(request)

        def body(turn, threads):
            progress(0.1, desc="inspecting")
            d = inspect_question(self.models, passage, question, keep_least_precise=keep, runs=INSPECT_RUNS)
            d.update(threads=threads.n, threads_why=threads.why)
            return d

        return self.guarded("inspection", lambda: self.service.task(
            body, label="inspection", session=session, address=address, on_wait=waiting(progress),
            gone=visitor_gone))

    # ---- downloads: the INT8 model a card runs, or a recipe row, as an artifact folder in a .zip

    def _card_recipe(self, variant: str) -> tuple[str, list[str], object]:
        a = self.models.artifact
        if variant == STATIC_VARIANT:
            if a is not None and artifact.is_static(a.recipe):
                return a.recipe, a.keep_fp32, None  # the folder's static recipe, as its card runs it
            return CARD_RECIPE, [], None  # the recipe the static card builds (static-gptq since #24)
        if a is not None and not artifact.is_static(a.recipe):
            return a.recipe, a.keep_fp32, self.models.int8_eager
        recipe = "dynamic-per-channel" if self.models.quant.per_channel else "dynamic-per-tensor"
        return recipe, list(self.models.quant.keep_fp32), self.models.int8_eager

    def download_card(self, variant: str, d: dict | None, request: gr.Request = None, progress=gr.Progress()):
        """The INT8 model this card runs, as a .zip (built in the line), with its card; the comparison on the page,
        when there is one, is what its model card reports."""
        if self.models.availability().get(variant) is not None:
            raise rejected(f"{LABELS[variant]} is not available here: {self.models.availability()[variant]}")
        recipe, keep, model = self._card_recipe(variant)
        measured = None
        r = next((x for x in (d or {}).get("results", []) if x["variant"] == variant and x.get("latency_ms")), None)
        if r is not None:
            measured = {"median_ms": r["latency_ms"]["median"], "speedup": r.get("speedup"),
                        "cpu": self.models.info().get("cpu")}
        return self._build_zip(recipe, keep, model, measured, request, progress)

    def card_download(self, variant: str):
        """The download handler of one card (Gradio reads the request and progress from its signature)."""
        def download(d: dict | None, request: gr.Request = None, progress=gr.Progress()):
            return self.download_card(variant, d, request, progress)
        return download

    def download_row(self, rec: dict | None, row: str | None, request: gr.Request = None, progress=gr.Progress()):
        """A row of the recipes table (default: the chosen one), as a .zip with its model card."""
        if not rec or not rec.get("recipes"):
            raise rejected("Compare the recipes first: the download is the one you choose from its table.")
        rows = rec["recipes"]
        labels = row_labels(rec)
        pick = rows[labels.index(row)] if row in labels else chosen_of(rec)
        if pick is None:
            raise rejected("No recipe met the target: pick the row you want from the list to download it.")
        if pick["recipe"] == "fp32":
            raise rejected("Pick an INT8 row of the recipes table (FP32 is the model you already have).")
        fp32 = rows[0]
        measured = artifact.measurement(pick, fp32, set_name=rec.get("set", "the question set"), n=rec.get("n", 0),
                                        seq_len=rec.get("seq_len", 0), cpu=self.models.info().get("cpu"),
                                        threads=rec.get("threads"))
        return self._build_zip(pick["recipe"], pick["keep_fp32"], None, measured, request, progress)

    def _build_zip(self, recipe, keep, model, measured, request, progress) -> str:
        session, address = visitor(request)
        started = [False]

        def body(turn, threads):
            started[0] = True
            progress(0.1, desc=f"writing {artifact.describe(recipe, keep)}")
            turn(expect_s=120.0 if recipe == "dynamic-per-token" or artifact.is_static(recipe) else 30.0)
            name = f"{Path(self.models.display_name).name}-{recipe}" + (f"-fp32x{len(keep)}" if keep else "")
            folder = self.outbox.path(name, large=True)
            artifact.write(folder, self.models, recipe, keep, measured=measured, model=model, log=log.info)
            progress(0.8, desc="zipping")
            turn(expect_s=60.0)
            return str(artifact.zip_folder(folder))

        return self.guarded("download", lambda: self.service.task(
            body, label="download", session=session, address=address, turns=2,
            on_wait=waiting(progress, started), gone=visitor_gone))

    # ---- Evaluate and Recipes (long: in turns, cancellable)

    def examples_of(self, file, limit):
        try:
            return load_squad(file or BUILTIN, limit=limit)
        except SquadFormatError as exc:
            raise rejected(str(exc), title="Not a SQuAD file") from None

    def evaluate(self, file, limit, request: gr.Request = None, progress=gr.Progress()):
        examples = self.examples_of(file, limit)
        session, address = visitor(request)
        started = [False]

        def body(turn, threads):
            started[0] = True
            rep = evaluate(self.models, examples, check=turn,
                           progress=lambda n, t: progress(n / t, desc=f"question {n}/{t}"))
            rep.threads, rep.threads_why = threads.n, threads.why
            return rep.to_dict()

        d = self.guarded("evaluation", lambda: self.service.task(
            body, label="evaluation", session=session, address=address, turns=max(1, len(examples) // 2),
            on_wait=waiting(progress, started), gone=visitor_gone))
        table, summary, dis = evaluation_frames(d)
        files = [self.outbox.text("evaluation-scores.csv", table.to_csv(index=False)),
                 self.outbox.text("evaluation-disagreements.csv", dis.to_csv(index=False))]
        return table, summary, dis, d, files

    def recipes(self, file, limit, target, max_keep, recipes, request: gr.Request = None, progress=gr.Progress()):
        examples = self.examples_of(file, limit)
        if not recipes:
            raise rejected(f"Pick at least one recipe: {', '.join(RECIPES)}.")
        picked = [r for r in RECIPES if r in recipes]
        session, address = visitor(request)
        started = [False]

        def body(turn, threads):
            started[0] = True
            report = recipe_report(self.models, examples, float(target), picked, int(max_keep), check=turn,
                                   progress=lambda what, i, n: progress(i / max(n, 1), desc=f"{what} {i}/{n}"))
            d = report.to_dict()
            d.update(threads=threads.n, threads_why=threads.why,
                     set=(Path(file).name if file else "the built-in real-text set") + f", first {len(examples)}")
            return d

        d = self.guarded("recipe comparison", lambda: self.service.task(
            body, label="recipes", session=session, address=address, turns=int(120 / TURN_S),
            on_wait=waiting(progress, started), gone=visitor_gone))
        table, summary = recipe_frames(d, float(target))
        labels = row_labels(d)
        chosen = chosen_of(d)
        pick = labels[d["recipes"].index(chosen)] if chosen else (labels[1] if len(labels) > 1 else None)
        return (pareto_figure(d, float(target)), table, summary, d,
                self.outbox.text("recipes.csv", table.to_csv(index=False)),
                gr.update(choices=labels[1:], value=pick))


def row_labels(rec: dict) -> list[str]:
    """One label per row of a recipes report: 'static, 6 layers in FP32 (91.3 %, 18.6 ms)'."""
    return [f"{r['recipe']}" + (f", {len(r['keep_fp32'])} layers in FP32" if r["keep_fp32"] else "")
            + f" ({r['agreement']:.1f} %, {r['median_ms']:.1f} ms)" for r in rec.get("recipes", [])]


def chosen_of(rec: dict) -> dict | None:
    from quant.render import chosen_row

    return chosen_row(rec)


# ---------------------------------------------------------------- the tabs (layout and wiring)


COPY_LINK_JS = """(q) => { const url = window.location.origin + window.location.pathname + q;
    if (navigator.clipboard) navigator.clipboard.writeText(url).catch(() => {}); return url; }"""


def compare_tab(demo: gr.Blocks, page: Page):
    """Passage + question in, one marked passage and a card per variant out. Returns (passage, question)."""
    avail = page.models.availability()
    with gr.Row():
        with gr.Column(scale=3):
            passage = strict_text(gr.Textbox(label=f"Passage (up to {MAX_CONTEXT_CHARS:,} characters)", lines=3,
                                             max_lines=4, max_length=MAX_CONTEXT_CHARS, elem_id="passage"))
            question = strict_text(gr.Textbox(label="Question", max_length=MAX_QUESTION_CHARS, elem_id="question"))
        with gr.Column(scale=1, min_width=220):
            runs = strict_number(gr.Slider(MIN_RUNS, MAX_RUNS, value=DEFAULT_RUNS, step=1,
                                           label="Timed runs per variant"))
            extra = gr.Checkbox(False, label="Also run BF16 · CPU and FP16 · CUDA")
            button = gr.Button("Compare", variant="primary", elem_id="compare-btn")
            copy = gr.Button("Copy link", size="sm", elem_id="copy-link-btn")
    link_note = gr.Markdown(elem_id="link-note")
    link = gr.Textbox(label="Link to this passage and question (copied)", buttons=["copy"], visible=False,
                      elem_id="link", interactive=False)
    gr.Examples([[e["passage"], e["question"]] for e in page.examples], inputs=[passage, question],
                cache_examples=False, label="Examples", example_labels=[e["label"] for e in page.examples],
                elem_id="examples")
    agreement = gr.Markdown(elem_classes="qq-agree", elem_id="agreement")
    marked = gr.HTML(elem_id="passage-view", padding=False)
    card_outputs, downloads = [], {}
    with gr.Row(equal_height=True):
        for v in ALL_VARIANTS:
            with gr.Column(visible=v in page.main_variants, elem_classes="qq-card", elem_id=f"card-{v}",
                           min_width=220) as col:
                md = gr.Markdown(card_markdown({"available": False, "reason": avail[v],
                                                "pending": page.models.variant(v).pending}, LABELS[v])
                                 if avail.get(v) else f"### {LABELS[v]}\n\n_Press Compare._", elem_id=f"md-{v}")
            card_outputs += [col, md]
    with gr.Row(elem_id="take-away"):
        measured = gr.Markdown(elem_id="measurement")
        for v in ("int8-cpu", STATIC_VARIANT):
            if v in page.main_variants:
                downloads[v] = gr.Button(f"⬇ {'INT8 static' if v == STATIC_VARIANT else 'INT8'} model (.zip)",
                                         size="sm", scale=0, min_width=170, elem_id=f"download-{v}")
    model_zip = gr.File(label="INT8 model (folder with its model card, zipped)", visible=False, elem_id="model-zip")
    with gr.Row():
        chart = gr.Plot(label="Latency", show_label=False, elem_id="latency-chart")  # the cards' colours and order
        size_panel = gr.Markdown(page.sizes(page.models.sizes_mib), elem_id="sizes")
    with gr.Row(equal_height=False):
        with gr.Accordion("Export this comparison (Markdown, JSON)", open=False, elem_id="export"):
            table_md = gr.Textbox(label="Markdown table (for a report or a pull request)", lines=6, buttons=["copy"],
                                  interactive=False, elem_id="export-md")
            with gr.Row():
                json_file = gr.File(label="JSON (the API's object)", elem_id="export-json")
                md_file = gr.File(label="Markdown", elem_id="export-md-file")
        with gr.Accordion("Environment", open=False):
            env_panel = gr.Markdown(env_markdown(environment(page.models)), elem_id="env")
    result = gr.JSON(visible=False)
    shown = card_outputs + [agreement, marked, measured, chart, size_panel, table_md, json_file, md_file]
    page.n_render = len(shown)
    gr.on([button.click, question.submit], page.compare, [passage, question, runs, extra], result,
          api_name="compare", concurrency_limit=MAX_LINE, concurrency_id="compare",  # all reach the line, which admits
          show_progress="full", show_progress_on=card_outputs[1::2],  # place in line, then progress, on the cards
          ).success(page.render, result, shown, api_visibility="private", queue=False)
    query = gr.Textbox(visible=False)
    copy.click(page.link, [passage, question], query, api_visibility="private", queue=False).success(
        None, query, link, js=COPY_LINK_JS, api_visibility="private").success(
        lambda: gr.update(visible=True), None, link, queue=False, api_visibility="private")
    for v, b in downloads.items():
        b.click(lambda: gr.update(visible=True), None, model_zip, queue=False, api_visibility="private").then(
            page.card_download(v), [result], model_zip, concurrency_limit=MAX_LINE, concurrency_id="download",
            show_progress="full", api_visibility="private")
    demo.load(page.from_link, None, [passage, question, result, link_note], concurrency_limit=MAX_LINE,
              concurrency_id="compare", show_progress="full", show_progress_on=card_outputs[1::2],
              api_visibility="private").success(page.render_if, result, shown, api_visibility="private", queue=False)
    if STATIC_VARIANT in page.main_variants:
        static_md = card_outputs[2 * ALL_VARIANTS.index(STATIC_VARIANT) + 1]
        demo.load(page.on_load, None, [static_md, size_panel, env_panel], api_visibility="private", queue=False)
    return passage, question


def inspect_tab(page: Page, passage, question) -> None:
    """Where INT8 loses precision on the Compare tab's passage, and what keeping K layers in FP32 buys."""
    gr.Markdown("Where INT8 loses precision on the Compare tab's passage and question: every INT8 Linear run on its "
                "FP32 input (local SQNR), the error as it propagates through the layers, and the start / end "
                "probabilities FP32 and INT8 give each passage token. Then keep the least precise layers in FP32 and "
                "see what that buys.")
    with gr.Row():
        keep = strict_number(gr.Slider(0, max(1, page.n_linear), value=0, step=1, elem_id="keep-k",
                                       interactive=page.n_linear > 0,  # no INT8 layers: Inspect says why
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
    button.click(page.inspect, [passage, question, keep], out, api_name="inspect", concurrency_limit=MAX_LINE,
                 concurrency_id="inspect", show_progress="full", show_progress_on=[heat, depth, tokens],
                 ).success(lambda d: (inspect_markdown(d), heatmap_figure(d), depth_figure(d), tokens_figure(d),
                                      mixed_frame(d)),
                           out, [summary, heat, depth, tokens, mixed], api_visibility="private", queue=False)


def evaluate_tab(page: Page) -> None:
    """EM / F1 and agreement with FP32 of every variant on a SQuAD file (default: the built-in real-text set), and
    which INT8 recipe to ship: each recipe alone and with its K layers in FP32, on a Pareto chart."""
    gr.Markdown("Exact match and F1 (official SQuAD normalization) of every variant, and how often each one gives "
                "exactly the FP32 span. Without a file: the **built-in real-text set** (240 hand-written questions over "
                "24 encyclopedic, news and technical passages, 72 unanswerable; assets/realqa.json). A file: SQuAD "
                f"v1.1 / v2.0 JSON, at most 20 MB; passages over {MAX_CONTEXT_CHARS:,} characters or 32 windows are "
                "skipped, with the reason. Both run in short turns: other visitors' comparisons go in between. The "
                "static card is calibrated on the set's even passages: `python -m quant eval --static --split "
                "held-out` scores only the passages it never saw.")
    with gr.Row():
        upload = gr.File(label="SQuAD-format JSON (optional)", file_types=[".json"], type="filepath")
        limit = strict_number(gr.Number(100, label=f"First N questions (1–{EVAL_MAX_QUESTIONS})", precision=0,
                                        minimum=1, maximum=EVAL_MAX_QUESTIONS))
    with gr.Row():
        button = gr.Button("Evaluate", variant="primary", elem_id="eval-btn")
        cancel = gr.Button("Cancel", elem_id="eval-cancel")
    table = gr.Dataframe(label="Scores", interactive=False, elem_id="eval-table")
    summary = gr.Markdown(elem_id="eval-summary")
    dis = gr.Dataframe(label="Questions where an INT8 variant and FP32 disagree", interactive=False, wrap=True)
    eval_csv = gr.File(label="Both tables as CSV", file_count="multiple", elem_id="eval-csv")
    out = gr.JSON(visible=False)
    ev = button.click(page.evaluate, [upload, limit], [table, summary, dis, out, eval_csv], api_name="evaluate",
                      concurrency_limit=MAX_LINE, concurrency_id="evaluate", show_progress="full")
    cancel.click(None, None, None, cancels=[ev], api_visibility="private", queue=False)
    gr.Markdown("### Which INT8 should I ship?\nEvery recipe alone and with its K most sensitive layers kept in FP32 "
                "(K found per recipe), on the same questions: the fastest that keeps the target share of the FP32 "
                "answers is chosen. Takes minutes: static and per-token INT8 are compiled (a compilation cannot "
                "pause; everything else goes in turns with other visitors).")
    with gr.Row():
        target = strict_number(gr.Number(90, label="Target: same answer as FP32 (%)", minimum=1, maximum=100),
                               whole=False)
        max_keep = strict_number(gr.Number(8, label="At most K layers in FP32", precision=0, minimum=0,
                                           maximum=max(page.n_linear, 0)))
        recipes = strict_choices(gr.CheckboxGroup(list(RECIPES), value=list(DEFAULT_RECIPES), label="Recipes",
                                                    info="each static-* variant compiles a package"), RECIPES)
    with gr.Row():
        rec_button = gr.Button("Compare recipes", elem_id="recipes-btn")
        rec_cancel = gr.Button("Cancel", elem_id="recipes-cancel")
    pareto = gr.Plot(label="Latency vs answers kept", elem_id="plot-pareto")
    rec_summary = gr.Markdown(elem_id="recipes-summary")
    with gr.Row():
        row = gr.Dropdown([], label="Recipe to download (the chosen one, or any row)", elem_id="recipe-row", scale=3)
        take = gr.Button("Download the chosen model (.zip)", elem_id="recipe-download", scale=1)
    recipe_zip = gr.File(label="INT8 model (folder with its model card, zipped)", visible=False,
                         elem_id="recipe-zip")
    rec_table = gr.Dataframe(label="Recipes", interactive=False, elem_id="recipes-table")
    rec_csv = gr.File(label="The table as CSV", elem_id="recipes-csv")
    rec_out = gr.JSON(visible=False)
    rec = rec_button.click(page.recipes, [upload, limit, target, max_keep, recipes],
                           [pareto, rec_table, rec_summary, rec_out, rec_csv, row], api_name="recipes",
                           concurrency_limit=MAX_LINE, concurrency_id="recipes", show_progress="full")
    take.click(lambda: gr.update(visible=True), None, recipe_zip, queue=False, api_visibility="private").then(
        page.download_row, [rec_out, row], recipe_zip, concurrency_limit=MAX_LINE, concurrency_id="download",
        show_progress="full", api_visibility="private")
    rec_cancel.click(None, None, None, cancels=[rec], api_visibility="private", queue=False)


def zero_gpu_runner():
    """On a ZeroGPU Space (SPACES_ZERO_GPU set): quant.gpu.time_cuda inside @spaces.GPU, its duration from the
    request's size. Only the CUDA variants' timing runs in that forked worker: the line, the stored results and
    the CPU timings stay here. Elsewhere None (a GPU machine times CUDA in-process, interleaved)."""
    try:
        from spaces.config import Config
    except (ImportError, AttributeError):
        return None
    if spaces is None or not Config.zero_gpu:
        return None
    return spaces.GPU(quant_gpu.time_cuda, duration=quant_gpu.duration)


def build_demo(comparator: ModelSet, scheduler: Scheduler | None = None, warm_examples: bool = True) -> gr.Blocks:
    """The whole UI around one ready `ModelSet`; every timed run goes through `scheduler`'s line (one at a time,
    fair between visitors, identical requests shared). With `warm_examples`, the examples are measured in the
    background. Does not launch."""
    service = CompareService(comparator, scheduler or Scheduler())
    quant_gpu.use(zero_gpu_runner())  # before launch: ZeroGPU reports its decorated functions then
    avail = comparator.availability()
    page = Page(comparator, service, [v for v in MAIN_VARIANTS + (STATIC_VARIANT,) if v in avail])
    with gr.Blocks(title="QuantQA — FP32 vs INT8 BERT question answering") as demo:
        gr.Markdown(
            "# QuantQA — what INT8 quantization does to a BERT QA model\n"
            f"One model (**{md_text(comparator.display_name)}**) side by side — FP32 and INT8 on CPU, FP32 on CUDA — "
            "timed live (medians; warm-up first, tokenization outside the clock).", elem_id="header")
        with gr.Tab("Compare"):
            passage, question = compare_tab(demo, page)
        with gr.Tab("Inspect", elem_id="inspect-tab"):
            inspect_tab(page, passage, question)
        with gr.Tab("Evaluate"):
            evaluate_tab(page)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    if warm_examples:  # the examples are ready before the audience is
        service.warm([(e["passage"], e["question"]) for e in load_examples()], DEFAULT_RUNS,
                     lambda: [v for v in page.main_variants if v in comparator.availability()])
    demo.scheduler, demo.page = service.scheduler, page  # for tests and the console
    return demo


def launch_kwargs(host: str = "127.0.0.1", port: int | None = 7860, share: bool = False, ssr: bool = False,
                  run_history: bool = False) -> dict:
    """Safe defaults for `demo.launch`: loopback only, no share link, no SSR, no run history
    (gradio 6.27-6.31 advisory), no monitoring endpoint, bounded uploads, no tracebacks to clients.
    quiet: Gradio's banner would advise `share=True` in code; main() prints its own lines."""
    return dict(server_name=host, server_port=port or None, share=share, ssr_mode=ssr, run_history=run_history,
                enable_monitoring=False, max_file_size=EVAL_MAX_FILE, show_error=False, theme=THEME, css=CSS,
                footer_links=["api"], quiet=True, max_threads=MAX_THREADS)


def quiet_abandoned_event_loops() -> None:
    """Gradio 6.31 makes asyncio event loops (for locks made outside a running loop) that it never closes. When the
    garbage collector frees one, asyncio's __del__ fails on its already-closed self-pipe and Python prints a
    traceback ("Exception ignored in: BaseEventLoop.__del__ ... Invalid file descriptor: -1") though nothing is
    wrong; on a Space, Gradio's reloader walks every object at start-up and sets several off (seen by
    scripts/space_check.sh). That one report is dropped; every other unraisable error is printed as before."""
    default = sys.unraisablehook

    def hook(u):
        if (isinstance(u.exc_value, ValueError) and "Invalid file descriptor" in str(u.exc_value)
                and getattr(u.object, "__qualname__", "") == "BaseEventLoop.__del__"):
            return
        default(u)

    sys.unraisablehook = hook


def main(args: argparse.Namespace) -> int:
    quiet_abandoned_event_loops()
    logging.basicConfig(level=logging.INFO, format="[quantqa] %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "gradio", "uvicorn", "uvicorn.access", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("huggingface_hub").propagate = False  # it prints its own lines (a retry once, not twice)
    try:
        comparator = ModelSet(args.model, threads=args.threads,
                                variants=MAIN_VARIANTS + ((STATIC_VARIANT,) if args.static else ()) + EXTRA_VARIANTS,
                                quant=QuantConfig(embeddings=args.embeddings, engine=args.engine,
                                                  torchscript=args.torchscript, per_channel=args.per_channel,
                                                  keep_fp32=args.keep_fp32,
                                                  split=QuantConfig.split if args.split_outliers else None),
                                static="background",  # the page serves at once; the static card says when ready
                                trust_package=args.trust_package)
    except (ModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[quantqa] OpenMP wait policy: {THREAD_POLICY.describe()}", flush=True)
    demo = build_demo(comparator, Scheduler(max_line=args.max_line))
    sys.modules["__main__"].demo = demo  # Gradio's reloader on a Space looks for `demo` in __main__
    try:
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
    finally:  # background measurements end before the interpreter does (a thread inside torch at exit aborts)
        demo.scheduler.stop()
        demo.close()


if __name__ == "__main__":
    sys.exit(main(ARGS))
