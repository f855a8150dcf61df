"""Operations over a `ModelSet` (variants.py): answer one (passage, question) with every variant -> `Comparison`.

`compare` tokenizes once, times all variants interleaved on the same inputs
(thread count chosen for the machine as it is now: threads.py), and decodes
each variant's logits with the same span search; `predict` runs each variant
once (evaluation). Both are functions of a ready `ModelSet`, as are
inspection.inspect_question and evaluate.evaluate; the app and the CLI call the
same ones, so they never disagree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from . import gpu
from .inputs import MAX_WARMUP, MAX_WINDOW_RUNS, InputError, check_inputs, check_int, first_line
from .qa import Encoded, best_span, run_windows
from .threads import ThreadChoice, choose_threads
from .timing import LatencyStats, measure_interleaved, time_once
from .variants import DEFAULT_VARIANTS, EXTRA_VARIANTS, LABELS, STATIC_VARIANT, ModelSet, _Variant, short_name

BASELINE = "fp32-cpu"


@dataclass
class VariantResult:
    variant: str
    available: bool
    reason: str | None = None  # why it is unavailable (or what failed during this request)
    answer: str = ""
    start: int = 0
    end: int = 0
    score: float = 0.0
    latency: LatencyStats | None = None
    speedup: float | None = None  # vs fp32-cpu median
    pending: bool = False  # not ready yet (static INT8 still being built), rather than unavailable here

    @property
    def label(self) -> str:
        return LABELS.get(self.variant, self.variant)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"variant": self.variant, "available": self.available}
        if self.reason:
            d["reason"] = self.reason
        if self.pending:
            d["pending"] = True
        d.update(answer=self.answer, start=self.start, end=self.end, score=round(self.score, 6),
                 latency_ms=self.latency.as_dict() if self.latency else None,
                 speedup=None if self.speedup is None else round(self.speedup, 3))
        return d


@dataclass
class Comparison:
    model: str
    context: str  # the passage as answered (cleaned; offsets index into it)
    question: str
    results: list[VariantResult]
    sizes_mib: dict[str, float | None]
    threads: int
    engine: str
    windows: int
    tokens: int  # tokens per window
    runs: int
    notes: list[str] = field(default_factory=list)
    model_s: float = 0.0  # wall time of all model calls (warm-up included) in this request
    total_s: float = 0.0  # wall time of compare(): validation, tokenization, model calls, decoding
    threads_why: str = ""  # how the thread count was chosen
    runs_requested: int = 0
    runs_why: str = ""  # why fewer runs than requested, when so
    measured_at: float = 0.0  # time.time() when the timed runs ended
    recipes: dict[str, str] = field(default_factory=dict)  # INT8 variant -> its recipe, for the cards
    degraded: list[str] = field(default_factory=list)  # why these numbers are not the machine's usual (shared briefly)

    def result(self, variant: str) -> VariantResult | None:
        return next((r for r in self.results if r.variant == variant), None)

    @property
    def int8_agrees(self) -> bool | None:
        a, b = self.result("fp32-cpu"), self.result("int8-cpu")
        if not (a and b and a.available and b.available):
            return None
        return (a.start, a.end) == (b.start, b.end)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "results": [r.to_dict() for r in self.results],
            "sizes_mib": {k: None if v is None else round(v, 2) for k, v in self.sizes_mib.items()},
            "threads": self.threads,
            "threads_why": self.threads_why,
            "quantized_engine": self.engine,
            "windows": self.windows,
            "tokens_per_window": self.tokens,
            "runs": {"requested": self.runs_requested or self.runs, "done": self.runs, "why": self.runs_why},
            "int8_agrees_with_fp32": self.int8_agrees,
            "notes": self.notes,
            "measured_at": round(self.measured_at, 3),
            "recipes": self.recipes,
            "degraded": self.degraded,
            "timing_s": {"model": round(self.model_s, 4), "compare": round(self.total_s, 4)},
        }


def decode(variant: str, logits, enc: Encoded, context: str, latency: LatencyStats | None) -> VariantResult:
    """One variant's (start, end) logits -> its answer (the same span search for every variant)."""
    start, end = logits
    span = best_span(start.float().cpu().numpy(), end.float().cpu().numpy(), enc.offsets, enc.context_mask,
                     word_ids=enc.word_ids)
    return VariantResult(variant, True, None, context[span.start:span.end], span.start, span.end, span.score, latency)


def window_runs(runs: int, warmup: int, n_windows: int, notes: list[str]) -> int:
    """Timed runs allowed so that (warm-up + runs) x windows <= MAX_WINDOW_RUNS; a note when capped."""
    allowed = max(1, MAX_WINDOW_RUNS // n_windows - warmup)
    if runs > allowed:
        notes.append(f"This passage needs {n_windows} windows; timed runs reduced from {runs} to {allowed} to keep "
                     f"the request bounded ({MAX_WINDOW_RUNS} window forwards per variant, warm-up included).")
        return allowed
    return runs


def _runnable(models: ModelSet, variants) -> tuple[list[str], dict[str, _Variant]]:
    names = [v for v in (variants or models.variant_names) if v in models.variant_names]
    return names, {n: models.variant(n) for n in names}


def predict(models: ModelSet, context: str, question: str, variants=None, *, enc: Encoded | None = None,
            logits: dict | None = None) -> dict[str, VariantResult]:
    """One forward per variant (for evaluation) on one shared tokenization: variant -> result.

    Each result's `latency` holds that single model call (no warm-up), for throughput figures.
    The passage bound applies (InputError beyond it); windows run `WINDOW_BATCH` at a time.
    enc: the checked encoding of this context and question, when the caller made it; logits: a dict that receives
    each variant's (start, end) logits (on the CPU), for a caller that looks past the best span.
    """
    names, vs = _runnable(models, variants)
    enc = enc or models.encode_checked(context, question)
    out: dict[str, VariantResult] = {}
    with torch.inference_mode():
        for n in names:
            v = vs[n]
            if v.model is None:
                out[n] = VariantResult(n, False, v.reason)
                continue
            inputs = enc.to(v.device)
            ms, got = time_once(lambda: run_windows(v.model, inputs), v.cuda)
            out[n] = decode(n, got, enc, context, LatencyStats.from_samples([ms]))
            if logits is not None:
                logits[n] = tuple(x.float().cpu() for x in got)
    return out


def compare(models: ModelSet, context: str, question: str, runs: int = 10, warmup: int = 1, variants=None,
            progress: Callable[[float, str], None] | None = None, threads: ThreadChoice | None = None,
            runs_why: str = "", requested_runs: int | None = None,
            keep_going: Callable[[int], str | None] | None = None, enc: Encoded | None = None) -> Comparison:
    """Answer with every variant and time it. Raises `InputError` for bad input.

    threads: the thread count to time with (default: chosen now for the machine as it is, threads.py).
    requested_runs / runs_why: when a scheduler gave this request fewer runs than asked (serving.py).
    keep_going(runs_done): asked after each round; a reason (text) stops the timing there, and says why.
    enc: the (checked) encoding of this cleaned context and question, when the caller already made it.
    """
    t_start = time.perf_counter()
    context, question, runs = check_inputs(context, question, runs)
    warmup = check_int(warmup, "Warm-up runs", 0, MAX_WARMUP)
    names, vs = _runnable(models, variants)
    enc = enc or models.encode_checked(context, question)
    notes: list[str] = []
    runs = window_runs(runs, warmup, enc.n_windows, notes)
    fns = {n: (lambda m=v.model, x=enc.to(v.device): run_windows(m, x), v.cuda)  # copied to the device untimed
           for n, v in vs.items() if v.model is not None}
    choice = threads or choose_threads(models.threads, models.threads_fixed)
    building = models.static_building()
    stopped: list[str] = []

    def stop(done: int) -> bool:
        why = keep_going(done) if keep_going else None
        if why:
            stopped.append(f"stopped after {done} of {runs} runs: {why}")
        return bool(why)

    def on_step(done: int, total: int) -> None:
        if progress:
            progress(done / total, f"timing {len(fns)} variants: {done}/{total} model calls")

    apart = [n for n in fns if n in gpu.GPU_VARIANTS] if gpu.runner() else []  # ZeroGPU: timed in its worker
    t_model = time.perf_counter()
    with choice.applied() as watch:
        here = {n: f for n, f in fns.items() if n not in apart}
        timed = measure_interleaved(here, runs=runs, warmup=warmup, on_step=on_step, stop=stop) if here else {}
    runs_done = min((st.runs for st, _, err in timed.values() if st is not None), default=runs)
    if apart:
        timed.update(_time_apart(models, apart, enc, runs_done, warmup))
    model_s = time.perf_counter() - t_model
    degraded = _degraded(models, choice, watch, notes, building, bool(stopped or runs_why),
                         f"timed with {runs_done} of {requested_runs or runs} runs: the line was long")
    results = _results(names, vs, timed, enc, context, degraded)
    return Comparison(models.model_id, context, question, results, dict(models.sizes_mib), choice.n, models.engine,
                      enc.n_windows, enc.n_tokens, runs_done, notes, model_s, time.perf_counter() - t_start,
                      threads_why=choice.why, runs_requested=requested_runs or runs,
                      runs_why=stopped[0] if stopped else runs_why,
                      measured_at=time.time(), recipes={v: r for v, r in models.recipes().items() if v in names},
                      degraded=degraded)


def _time_apart(models: ModelSet, names: list[str], enc: Encoded, runs: int, warmup: int) -> dict:
    """The CUDA variants timed by the installed GPU runner (a ZeroGPU worker; see gpu.py), as measure_interleaved
    reports them."""
    try:
        got = gpu.runner()(models.model_id, names, dict(enc.inputs), runs, warmup)
    except Exception as exc:  # no GPU granted, the worker failed: those cards say so, the others stand
        return {n: (None, None, exc) for n in names}
    return {n: (stats, logits, None if err is None else RuntimeError(err)) for n, (stats, logits, err) in got.items()}


def _degraded(models: ModelSet, choice: ThreadChoice, watch, notes: list[str], building: bool, cut: bool,
              cut_why: str) -> list[str]:
    """Why these numbers are not the machine's usual (and the notes the card shows for them)."""
    degraded = [cut_why] if cut else []
    if building or models.static_building():
        notes.append("Static INT8 was being compiled in the background during this measurement: every latency here "
                     "is inflated by it (the compiler used the same cores).")
        degraded.append("static INT8 was being compiled meanwhile")
    if watch.note:
        notes.append(watch.note)
        degraded.append("other processes were busy")
    elif choice.n < models.threads and not models.threads_fixed:
        degraded.append(f"{choice.n} thread{'s' if choice.n > 1 else ''} instead of {models.threads}: "
                        "other processes were busy")
    return degraded


def _results(names, vs, timed, enc: Encoded, context: str, degraded: list[str]) -> list[VariantResult]:
    """Each variant's decoded answer and latency (or why it could not run), with its speed-up over FP32."""
    results = []
    for n in names:
        v = vs[n]
        if v.model is None:
            results.append(VariantResult(n, False, v.reason, pending=v.pending))
            continue
        stats, out, err = timed[n]
        if err is not None:
            if v.cuda:
                try:
                    torch.cuda.empty_cache()
                except Exception:
                    pass
            results.append(VariantResult(n, False, f"{type(err).__name__} during this request: {first_line(err)}"))
            degraded.append(f"{n} failed")
            continue
        results.append(decode(n, out, enc, context, stats))
    base = next((r for r in results if r.variant == BASELINE and r.latency), None)
    for r in results:
        if base and r.latency:
            r.speedup = base.latency.median / r.latency.median
    return results


__all__ = ["Comparison", "VariantResult", "LABELS", "DEFAULT_VARIANTS", "EXTRA_VARIANTS",
           "STATIC_VARIANT", "InputError", "ModelSet", "run_windows", "short_name", "compare", "predict", "decode"]
