"""Run one (passage, question) through every variant of one model -> `Comparison`.

`Comparator` does the expensive work once (load, choose the quantized engine,
quantize, measure sizes, copy to the GPU); `Comparator.compare` then tokenizes
once, times all variants interleaved on the same inputs, and decodes each
variant's logits with the same span search. The app and the CLI both call it,
so they never disagree.

`--model` may be a hub id, a `save_pretrained` folder, or an INT8 artifact
folder written by `python -m quant quantize --out` (INT8 is then loaded from
the artifact, not re-quantized; FP32 comes from the artifact's source model,
or its variants say why not).

Variants:
  fp32-cpu         the model as loaded
  int8-cpu         dynamic INT8 (every nn.Linear but `keep_fp32`; optionally nn.Embedding too)
  fp32-cuda        the FP32 model on cuda:0 (unavailable, with the reason, without a GPU)
  bf16-cpu         opt-in: bfloat16 weights and activations, where the CPU has native bf16
  fp16-cuda        opt-in: half precision on the GPU
  int8-static-cpu  opt-in: static INT8 (PT2E + Inductor, compiled once and cached; see static.py)
"""

from __future__ import annotations

import copy
import gc
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from . import env
from .inputs import (MAX_CONTEXT_CHARS, MAX_WARMUP, MAX_WINDOW_RUNS, WINDOW_BATCH, InputError, check_inputs,
                     check_int, check_text, check_windows)
from .models import DEFAULT_MODEL, ModelLoadError, describe_source, load_model, set_threads, source_kind, window_length
from .qa import Encoded, best_span, encode
from .quantize import (EngineChoice, QuantConfig, choose_engine, count_quantized, load_artifact, quantize,
                       resolve_keep_fp32, trace_or_eager)
from .size import state_dict_mib
from .timing import LatencyStats, measure_interleaved, time_once

LABELS = {
    "fp32-cpu": "FP32 · CPU",
    "int8-cpu": "INT8 · CPU",
    "fp32-cuda": "FP32 · CUDA",
    "bf16-cpu": "BF16 · CPU",
    "fp16-cuda": "FP16 · CUDA",
    "int8-static-cpu": "INT8 static · CPU",
}
DEFAULT_VARIANTS = ("fp32-cpu", "int8-cpu", "fp32-cuda")
EXTRA_VARIANTS = ("bf16-cpu", "fp16-cuda")
STATIC_VARIANT = "int8-static-cpu"
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

    @property
    def label(self) -> str:
        return LABELS.get(self.variant, self.variant)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"variant": self.variant, "available": self.available}
        if self.reason:
            d["reason"] = self.reason
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
            "quantized_engine": self.engine,
            "windows": self.windows,
            "tokens_per_window": self.tokens,
            "int8_agrees_with_fp32": self.int8_agrees,
            "notes": self.notes,
            "timing_s": {"model": round(self.model_s, 4), "compare": round(self.total_s, 4)},
        }


@dataclass
class _Variant:
    name: str
    model: torch.nn.Module | None
    device: str
    reason: str | None = None  # set when unavailable


def _log_default(msg: str) -> None:
    print(msg, flush=True)


def short_name(model_id: str) -> str:
    """What the page header shows: a hub id as is, a folder by its last part."""
    kind = source_kind(model_id)
    return Path(model_id).expanduser().resolve().name if kind in ("folder", "artifact") else model_id


def run_windows(model, inputs: dict[str, torch.Tensor], batch: int = WINDOW_BATCH):
    """Forward all windows, `batch` at a time (bounded memory) -> (start_logits, end_logits), each (W, T)."""
    n = next(iter(inputs.values())).shape[0]
    if n <= batch:
        out = model(**inputs)
        return out.start_logits, out.end_logits
    starts, ends = [], []
    for i in range(0, n, batch):
        out = model(**{k: v[i:i + batch] for k, v in inputs.items()})
        starts.append(out.start_logits)
        ends.append(out.end_logits)
    return torch.cat(starts), torch.cat(ends)


class Comparator:
    """Holds the model in every variant; built once, used for every request."""

    def __init__(self, model_id: str = DEFAULT_MODEL, *, threads: int | None = None,
                 quant: QuantConfig | None = None, variants=DEFAULT_VARIANTS,
                 log: Callable[[str], None] | None = _log_default, static_cache: str | Path | None = None):
        log = log or (lambda _msg: None)
        self.quant = quant or QuantConfig()
        self.variant_names = tuple(dict.fromkeys(variants))
        unknown = [v for v in self.variant_names if v not in LABELS]
        if unknown:
            raise ValueError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(LABELS)}")
        self.threads = set_threads(threads)
        t0 = time.perf_counter()
        self.model_id = str(model_id)
        self.source = source_kind(self.model_id)
        log(f"[quantqa] loading {describe_source(self.model_id)} ...")
        self.manifest: dict | None = None
        fp32: torch.nn.Module | None = None
        self.fp32_reason: str | None = None
        if self.source == "artifact":
            int8, fp32 = self._load_artifact(log)
        else:
            loaded = load_model(self.model_id)
            self.tokenizer, self.max_length, fp32 = loaded.tokenizer, loaded.max_length, loaded.model
            cfg = fp32.config
            self.engine_choice: EngineChoice = choose_engine(
                self.quant.engine, hidden=cfg.hidden_size,
                intermediate=getattr(cfg, "intermediate_size", 4 * cfg.hidden_size))
            log(f"[quantqa] quantized engine: {self.engine_choice.describe()}")
            self.quant = replace(self.quant, keep_fp32=resolve_keep_fp32(fp32, self.quant.keep_fp32))
            log(f"[quantqa] quantizing to INT8 ({self.quant}) ...")
            int8 = quantize(fp32, self.quant)
        self.fp32_eager = fp32
        self.layer_counts = count_quantized(int8)
        self.int8_eager = int8
        self.torchscript_note = "off"
        int8_runnable = int8
        if self.quant.torchscript:
            int8_runnable, failed = trace_or_eager(int8, self.probes())
            self.torchscript_note = ("on (traced + frozen; outputs checked equal to eager)" if failed is None
                                     else f"off: tracing failed ({failed})")
            if failed:  # an untraceable architecture: run eager, say why
                log(f"[quantqa] TorchScript {self.torchscript_note}; running INT8 eagerly")
        log("[quantqa] measuring sizes ...")
        self.sizes_mib: dict[str, float | None] = {"fp32": state_dict_mib(fp32) if fp32 is not None else None}
        if self.quant.embeddings:  # show both INT8 rows: the usual recipe and the one with 8-bit embeddings
            plain = replace(self.quant, embeddings=False)
            self.sizes_mib["int8"] = state_dict_mib(quantize(fp32, plain)) if fp32 is not None else None
            self.sizes_mib["int8_emb"] = state_dict_mib(int8)
        else:
            self.sizes_mib["int8"] = state_dict_mib(int8)
        gc.collect()
        self._inspector = self._mixed = None  # built on the first inspect()
        self._variants: dict[str, _Variant] = {}
        cuda_ok, cuda_line = env.cuda_status()
        for name in self.variant_names:
            if name in ("fp32-cpu", "bf16-cpu", "fp32-cuda", "fp16-cuda", STATIC_VARIANT) and fp32 is None:
                self._variants[name] = _Variant(name, None, "cpu", self.fp32_reason)
            elif name == "fp32-cpu":
                self._variants[name] = _Variant(name, fp32, "cpu")
            elif name == "int8-cpu":
                self._variants[name] = _Variant(name, int8_runnable, "cpu")
            elif name == "bf16-cpu":
                if env.has_native_bf16():
                    self._variants[name] = _Variant(name, copy.deepcopy(fp32).to(torch.bfloat16).eval(), "cpu")
                else:
                    self._variants[name] = _Variant(name, None, "cpu", "this CPU has no native bf16 "
                                                    "(AVX-512 BF16 / AMX); it would be emulated and slow")
            elif name == STATIC_VARIANT:
                self._variants[name] = self._static_variant(fp32, static_cache, log)
            elif name in ("fp32-cuda", "fp16-cuda"):
                if not cuda_ok:
                    self._variants[name] = _Variant(name, None, "cuda", cuda_line)
                    continue
                log(f"[quantqa] copying the model to {cuda_line} for {name} ...")
                try:
                    m = copy.deepcopy(fp32)
                    m = (m.half() if name == "fp16-cuda" else m).to("cuda:0").eval()
                    self._variants[name] = _Variant(name, m, "cuda:0")
                except Exception as exc:  # OOM, driver error: report it on the card
                    self._variants[name] = _Variant(name, None, "cuda", f"could not copy the model to the GPU: {exc}")
        self.startup_s = time.perf_counter() - t0
        fp32_size = self.sizes_mib["fp32"]
        log(f"[quantqa] ready in {self.startup_s:.1f} s — FP32 "
            f"{'n/a' if fp32_size is None else f'{fp32_size:.2f} MiB'}, "
            f"INT8 {self.sizes_mib.get('int8_emb') or self.sizes_mib['int8']:.2f} MiB, {self.threads} threads")

    def _load_artifact(self, log):
        """INT8 from the artifact folder; FP32 from its manifest's source model when that loads."""
        try:
            tok, int8, manifest = load_artifact(self.model_id)
        except Exception as exc:
            raise ModelLoadError(f"Cannot load INT8 artifact {self.model_id!r}: {type(exc).__name__}: "
                                 f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}") from exc
        self.manifest = manifest
        self.tokenizer = tok
        self.quant = replace(QuantConfig.from_manifest(manifest.get("quant_config", {})),
                             torchscript=self.quant.torchscript, engine=manifest.get("engine", "auto"))
        self.engine_choice = EngineChoice(torch.backends.quantized.engine, "from the artifact")
        src = manifest.get("source_model") or ""
        fp32 = None
        try:
            log(f"[quantqa] INT8 loaded from the artifact ({self.quant}); FP32 from its source model "
                f"{describe_source(src)} ...")
            loaded = load_model(src)
            fp32, self.max_length = loaded.model, loaded.max_length
        except ModelLoadError as exc:
            self.fp32_reason = (f"this INT8 artifact's FP32 source model could not be loaded, so there is no "
                                f"FP32 to run: {exc}")
            log(f"[quantqa] {self.fp32_reason}")
            self.max_length = window_length(int8.config, tok)
        return int8, fp32

    def _static_variant(self, fp32, cache, log) -> _Variant:
        from .static import build_static

        try:
            model = build_static(fp32, self.tokenizer, cache_dir=cache, log=log, max_length=self.max_length,
                                 source_id=self.model_id)
            self.sizes_mib["int8_static"] = model.size_mib
            return _Variant(STATIC_VARIANT, model, "cpu")
        except Exception as exc:  # no compiler, export failure, parity failure: say why on the card
            msg = str(exc).strip().splitlines()[0][:240] if str(exc).strip() else type(exc).__name__
            log(f"[quantqa] {STATIC_VARIANT} unavailable: {msg}")
            return _Variant(STATIC_VARIANT, None, "cpu", f"static INT8 could not be built here: {msg}")

    def probes(self) -> list[dict[str, torch.Tensor]]:
        """Inputs of different lengths and batch sizes (with padding), to check a trace did not specialise."""
        keep = ("input_ids", "attention_mask", "token_type_ids")
        a = self.tokenizer("Where was it?", "It was in Paris in 1900. " * 3, return_tensors="pt")
        b = self.tokenizer(["Who wrote the long text?", "When?"], ["Somebody wrote this. " * 8, "In 1900."],
                           padding=True, truncation="only_second", max_length=64, return_tensors="pt")
        return [{k: v for k, v in enc.items() if k in keep} for enc in (a, b)]

    # ------------------------------------------------------------------ info

    @property
    def engine(self) -> str:
        return self.engine_choice.engine

    @property
    def display_name(self) -> str:
        return short_name(self.model_id)

    def static_info(self) -> str | None:
        """How the static INT8 variant was obtained (built / loaded from the cache), or None."""
        from .static import describe_build

        v = self._variants.get(STATIC_VARIANT)
        if v is None or v.model is None:
            return None
        return f"{describe_build(v.model.info)}; {v.model.info['path']}"

    def availability(self) -> dict[str, str | None]:
        """variant -> None if it can run, else the reason it cannot."""
        return {n: v.reason for n, v in self._variants.items()}

    def model(self, variant: str) -> torch.nn.Module | None:
        return self._variants[variant].model

    def info(self) -> dict[str, Any]:
        info = env.machine_info()
        info.update(model=self.model_id, source=self.source, quantized_engine=self.engine,
                    engine_choice=self.engine_choice.describe(), quant_config=str(self.quant),
                    keep_fp32=list(self.quant.keep_fp32), torchscript=self.torchscript_note,
                    layers=self.layer_counts, startup_s=round(self.startup_s, 2),
                    max_length=self.max_length)
        return info

    # ------------------------------------------------------------------ work

    def _window_runs(self, runs: int, warmup: int, n_windows: int, notes: list[str]) -> int:
        """Timed runs allowed so that (warm-up + runs) x windows <= MAX_WINDOW_RUNS; a note when capped."""
        allowed = max(1, MAX_WINDOW_RUNS // n_windows - warmup)
        if runs > allowed:
            notes.append(f"This passage needs {n_windows} windows; timed runs reduced from {runs} to "
                         f"{allowed} to keep the request bounded ({MAX_WINDOW_RUNS} window forwards per "
                         f"variant, warm-up included).")
            return allowed
        return runs

    def encode_checked(self, context: str, question: str) -> Encoded:
        """Tokenize once; refuse passages over the per-passage bound (characters, then windows)."""
        check_text(context, "passage", MAX_CONTEXT_CHARS)
        enc = encode(self.tokenizer, question, context, max_length=self.max_length)
        check_windows(enc.n_windows, enc.n_tokens)
        return enc

    def predict(self, context: str, question: str, variants=None) -> dict[str, VariantResult]:
        """One forward per variant (for evaluation) on one shared tokenization: variant -> result.

        Each result's `latency` holds that single model call (no warm-up), for throughput figures.
        The passage bound applies (InputError beyond it); windows run `WINDOW_BATCH` at a time.
        """
        names = [v for v in (variants or self.variant_names) if v in self._variants]
        enc = self.encode_checked(context, question)
        out: dict[str, VariantResult] = {}
        with torch.inference_mode():
            for n in names:
                v = self._variants[n]
                if v.model is None:
                    out[n] = VariantResult(n, False, v.reason)
                    continue
                inputs = enc.to(v.device)
                ms, logits = time_once(lambda: run_windows(v.model, inputs),
                                       v.device if v.device.startswith("cuda") else None)
                out[n] = self._answer(n, logits, enc, context, LatencyStats.from_samples([ms]))
        return out

    @staticmethod
    def _answer(variant: str, logits, enc, context: str, latency: LatencyStats | None) -> VariantResult:
        """Decode one variant's (start, end) logits into its answer (the same span search for every variant)."""
        start, end = logits
        span = best_span(start.float().cpu().numpy(), end.float().cpu().numpy(),
                         enc.offsets, enc.context_mask, word_ids=enc.word_ids)
        return VariantResult(variant, True, None, context[span.start:span.end], span.start, span.end, span.score,
                             latency)

    def compare(self, context: str, question: str, runs: int = 10, warmup: int = 1,
                variants=None, progress: Callable[[float, str], None] | None = None) -> Comparison:
        """Answer with every variant and time it. Raises `InputError` for bad input."""
        t_start = time.perf_counter()
        context, question, runs = check_inputs(context, question, runs)
        warmup = check_int(warmup, "Warm-up runs", 0, MAX_WARMUP)
        names = [v for v in (variants or self.variant_names) if v in self._variants]
        enc = self.encode_checked(context, question)
        notes: list[str] = []
        runs = self._window_runs(runs, warmup, enc.n_windows, notes)
        runnable = {n: v for n, v in self._variants.items() if n in names and v.model is not None}
        fns = {}
        for n, v in runnable.items():
            inputs = enc.to(v.device)  # tokenized once; copied to the device outside the timed region
            fns[n] = (lambda m=v.model, x=inputs: run_windows(m, x), v.device if v.device.startswith("cuda") else None)

        def on_step(done: int, total: int) -> None:
            if progress:
                progress(done / total, f"timing {len(fns)} variants: {done}/{total} model calls")

        t_model = time.perf_counter()
        timed = measure_interleaved(fns, runs=runs, warmup=warmup, on_step=on_step) if fns else {}
        model_s = time.perf_counter() - t_model
        results = []
        for n in names:
            v = self._variants[n]
            if v.model is None:
                results.append(VariantResult(n, False, v.reason))
                continue
            stats, out, err = timed[n]
            if err is not None:
                if v.device.startswith("cuda"):
                    try:
                        torch.cuda.empty_cache()
                    except Exception:
                        pass
                msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                results.append(VariantResult(n, False, f"{type(err).__name__} during this request: {msg}"))
                continue
            results.append(self._answer(n, out, enc, context, stats))
        base = next((r for r in results if r.variant == BASELINE and r.latency), None)
        for r in results:
            if base and r.latency:
                r.speedup = base.latency.median / r.latency.median
        return Comparison(self.model_id, context, question, results, dict(self.sizes_mib), self.threads,
                          self.engine, enc.n_windows, enc.n_tokens, runs, notes, model_s,
                          time.perf_counter() - t_start)


    # ------------------------------------------------------------------ inspect

    def _mixed_model(self, keep: tuple[str, ...]):
        """(runnable model, size MiB) for INT8 with `keep` (plus the configured keep_fp32) left in FP32."""
        eager = quantize(self.fp32_eager, replace(self.quant, keep_fp32=self.quant.keep_fp32 + tuple(keep)))
        runnable = trace_or_eager(eager, self.probes())[0] if self.quant.torchscript else eager
        return runnable, state_dict_mib(eager)

    def inspect(self, context: str, question: str, keep_least_precise: int = 0, runs: int = 5,
                warmup: int = 1) -> dict[str, Any]:
        """The layer report for one question, and FP32 / INT8 / INT8 with the K least precise layers in FP32.

        Returns the report's dict (see inspect.Report) plus "mixed" (answers, latencies, sizes of the
        three models, timed interleaved) and, when the static variant is loaded, "static" (its logits
        SQNR vs FP32 and its answer). Raises InputError for bad input.
        """
        from .inspect import Inspector, MixedModels, least_precise, sqnr_db

        context, question, runs = check_inputs(context, question, runs)
        if self.fp32_eager is None:
            raise InputError(f"Inspect needs the FP32 model: {self.fp32_reason}")
        n_q = self.layer_counts["linear_int8"]
        k = check_int(keep_least_precise, "Layers kept in FP32", 0, n_q)
        enc = self.encode_checked(context, question)
        if self._inspector is None:
            self._inspector = Inspector(self.fp32_eager, self.int8_eager, self.tokenizer, model_id=self.model_id,
                                        max_length=self.max_length, keep_fp32=self.quant.keep_fp32)
            self._mixed = MixedModels(self._mixed_model, capacity=3)
        report = self._inspector.inspect(context, question, enc)
        d = report.to_dict()
        d.update(context=context, question=question)
        keep = least_precise(report, k)
        models = {"fp32-cpu": (self.fp32_eager, self.sizes_mib["fp32"], "FP32"),
                  "int8-cpu": (self._variants["int8-cpu"].model if "int8-cpu" in self._variants else self.int8_eager,
                               self.sizes_mib["int8"], "INT8")}
        if k:
            m, size = self._mixed.get(keep)
            models["int8-mixed"] = (m, size, f"INT8, {k} least precise in FP32")
        notes: list[str] = []
        runs = self._window_runs(runs, warmup, enc.n_windows, notes)
        fns = {n: (lambda m=m: run_windows(m, enc.inputs), None) for n, (m, _, _) in models.items()}
        timed = measure_interleaved(fns, runs=runs, warmup=warmup)
        results = []
        base = None
        for n, (m, size, label) in models.items():
            stats, out, err = timed[n]
            if err is not None:
                results.append({"variant": n, "label": label, "available": False,
                                "reason": f"{type(err).__name__}: {str(err)[:200]}"})
                continue
            r = self._answer(n, out, enc, context, stats).to_dict()
            r["label"] = label
            if n == "fp32-cpu":
                base = r
            r["agrees"] = None if base is None else (r["start"], r["end"]) == (base["start"], base["end"])
            results.append(r)
        d["mixed"] = {"k": k, "keep_fp32": keep, "results": results, "notes": notes,
                      "sizes_mib": {n: round(size, 2) if size is not None else None
                                    for n, (_, size, _) in models.items()}}
        static = self._variants.get(STATIC_VARIANT)
        if static is not None and static.model is not None and timed["fp32-cpu"][2] is None:
            f_s, f_e = timed["fp32-cpu"][1]  # FP32's logits on these inputs, from the timed runs just made
            with torch.inference_mode():
                s_s, s_e = run_windows(static.model, enc.inputs)
            mask = enc.inputs["attention_mask"].bool()
            ans = self._answer(STATIC_VARIANT, (s_s, s_e), enc, context, None)
            db = {"start": sqnr_db(f_s[mask], s_s[mask]), "end": sqnr_db(f_e[mask], s_e[mask])}
            d["static"] = {"answer": ans.answer, "start": ans.start, "end": ans.end,
                           "logits_sqnr_db": {k_: (None if v == float("inf") else round(v, 2)) for k_, v in db.items()}}
        return d


__all__ = ["Comparator", "Comparison", "VariantResult", "LABELS", "DEFAULT_VARIANTS", "EXTRA_VARIANTS",
           "STATIC_VARIANT", "InputError", "run_windows", "short_name"]
