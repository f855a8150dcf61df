"""Run one (passage, question) through every variant of one model -> `Comparison`.

`Comparator` does the expensive work once (load, choose the quantized engine,
quantize, measure sizes, copy to the GPU); `Comparator.compare` then tokenizes
once, times all variants interleaved on the same inputs, and decodes each
variant's logits with the same span search. The app and the CLI both call it,
so they never disagree.

Variants:
  fp32-cpu   the model as loaded
  int8-cpu   dynamic INT8 (every nn.Linear; optionally nn.Embedding too)
  fp32-cuda  the FP32 model on cuda:0 (unavailable, with the reason, without a GPU)
  bf16-cpu   opt-in: bfloat16 weights and activations, where the CPU has native bf16
  fp16-cuda  opt-in: half precision on the GPU
"""

from __future__ import annotations

import copy
import gc
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from . import env
from .inputs import MAX_WINDOW_RUNS, check_inputs
from .models import DEFAULT_MODEL, load_model, set_threads
from .qa import best_span, encode
from .quantize import EngineChoice, QuantConfig, choose_engine, count_quantized, quantize, trace
from .size import state_dict_mib
from .timing import LatencyStats, measure_interleaved, time_once

LABELS = {
    "fp32-cpu": "FP32 · CPU",
    "int8-cpu": "INT8 · CPU",
    "fp32-cuda": "FP32 · CUDA",
    "bf16-cpu": "BF16 · CPU",
    "fp16-cuda": "FP16 · CUDA",
}
DEFAULT_VARIANTS = ("fp32-cpu", "int8-cpu", "fp32-cuda")
EXTRA_VARIANTS = ("bf16-cpu", "fp16-cuda")
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
    sizes_mib: dict[str, float]
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
            "sizes_mib": {k: round(v, 2) for k, v in self.sizes_mib.items()},
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


class Comparator:
    """Holds the model in every variant; built once, used for every request."""

    def __init__(self, model_id: str = DEFAULT_MODEL, *, threads: int | None = None,
                 quant: QuantConfig | None = None, variants=DEFAULT_VARIANTS,
                 log: Callable[[str], None] | None = _log_default):
        log = log or (lambda _msg: None)
        self.quant = quant or QuantConfig()
        self.variant_names = tuple(dict.fromkeys(variants))
        unknown = [v for v in self.variant_names if v not in LABELS]
        if unknown:
            raise ValueError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(LABELS)}")
        self.threads = set_threads(threads)
        t0 = time.perf_counter()
        log(f"[quantqa] loading {model_id} (downloads on first use of a hub id) ...")
        loaded = load_model(model_id)
        self.model_id, self.tokenizer, self.max_length = loaded.model_id, loaded.tokenizer, loaded.max_length
        fp32 = loaded.model
        cfg = fp32.config
        self.engine_choice: EngineChoice = choose_engine(
            self.quant.engine, hidden=cfg.hidden_size, intermediate=getattr(cfg, "intermediate_size", 4 * cfg.hidden_size))
        log(f"[quantqa] quantized engine: {self.engine_choice.describe()}")
        log(f"[quantqa] quantizing to INT8 ({self.quant}) ...")
        int8 = quantize(fp32, self.quant)
        self.layer_counts = count_quantized(int8)
        self.int8_eager = int8
        self.torchscript_note = "off"
        int8_runnable = int8
        if self.quant.torchscript:
            try:
                int8_runnable = trace(int8, self.probes())
                self.torchscript_note = "on (traced + frozen; outputs checked equal to eager)"
            except Exception as exc:  # an untraceable architecture: run eager, say why
                self.torchscript_note = f"off: tracing failed ({type(exc).__name__}: {str(exc)[:120]})"
                log(f"[quantqa] TorchScript {self.torchscript_note}; running INT8 eagerly")
        log("[quantqa] measuring sizes ...")
        self.sizes_mib = {"fp32": state_dict_mib(fp32)}
        if self.quant.embeddings:
            self.sizes_mib["int8"] = state_dict_mib(quantize(fp32, QuantConfig(embeddings=False)))
            self.sizes_mib["int8_emb"] = state_dict_mib(int8)
        else:
            self.sizes_mib["int8"] = state_dict_mib(int8)
        gc.collect()
        self._variants: dict[str, _Variant] = {}
        cuda_ok, cuda_line = env.cuda_status()
        for name in self.variant_names:
            if name == "fp32-cpu":
                self._variants[name] = _Variant(name, fp32, "cpu")
            elif name == "int8-cpu":
                self._variants[name] = _Variant(name, int8_runnable, "cpu")
            elif name == "bf16-cpu":
                if env.has_native_bf16():
                    self._variants[name] = _Variant(name, copy.deepcopy(fp32).to(torch.bfloat16).eval(), "cpu")
                else:
                    self._variants[name] = _Variant(name, None, "cpu", "this CPU has no native bf16 "
                                                    "(AVX-512 BF16 / AMX); it would be emulated and slow")
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
        log(f"[quantqa] ready in {self.startup_s:.1f} s — FP32 {self.sizes_mib['fp32']:.2f} MiB, "
            f"INT8 {self.sizes_mib.get('int8_emb', self.sizes_mib['int8']):.2f} MiB, {self.threads} threads")

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

    def availability(self) -> dict[str, str | None]:
        """variant -> None if it can run, else the reason it cannot."""
        return {n: v.reason for n, v in self._variants.items()}

    def model(self, variant: str) -> torch.nn.Module | None:
        return self._variants[variant].model

    def info(self) -> dict[str, Any]:
        info = env.machine_info()
        info.update(model=self.model_id, quantized_engine=self.engine,
                    engine_choice=self.engine_choice.describe(), quant_config=str(self.quant),
                    torchscript=self.torchscript_note,
                    layers=self.layer_counts, startup_s=round(self.startup_s, 2),
                    max_length=self.max_length)
        return info

    # ------------------------------------------------------------------ work

    def predict(self, context: str, question: str, variants=None) -> dict[str, VariantResult]:
        """One forward per variant (for evaluation) on one shared tokenization: variant -> result.

        Each result's `latency` holds that single model call (no warm-up), for throughput figures.
        Input is not length-checked; long passages are windowed.
        """
        names = [v for v in (variants or self.variant_names) if v in self._variants]
        enc = encode(self.tokenizer, question, context, max_length=self.max_length)
        out: dict[str, VariantResult] = {}
        with torch.inference_mode():
            for n in names:
                v = self._variants[n]
                if v.model is None:
                    out[n] = VariantResult(n, False, v.reason)
                    continue
                inputs = enc.to(v.device)
                ms, logits = time_once(lambda: v.model(**inputs), v.device if v.device.startswith("cuda") else None)
                out[n] = self._answer(n, logits, enc, context, LatencyStats.from_samples([ms]))
        return out

    @staticmethod
    def _answer(variant: str, logits, enc, context: str, latency: LatencyStats | None) -> VariantResult:
        """Decode one variant's logits into its answer (the same span search for every variant)."""
        span = best_span(logits.start_logits.float().cpu().numpy(), logits.end_logits.float().cpu().numpy(),
                         enc.offsets, enc.context_mask, word_ids=enc.word_ids)
        return VariantResult(variant, True, None, context[span.start:span.end], span.start, span.end, span.score,
                             latency)

    def compare(self, context: str, question: str, runs: int = 10, warmup: int = 1,
                variants=None, progress: Callable[[float, str], None] | None = None) -> Comparison:
        """Answer with every variant and time it. Raises `InputError` for bad input."""
        t_start = time.perf_counter()
        context, question, runs = check_inputs(context, question, runs)
        names = [v for v in (variants or self.variant_names) if v in self._variants]
        enc = encode(self.tokenizer, question, context, max_length=self.max_length)
        notes = []
        if runs * enc.n_windows > MAX_WINDOW_RUNS:
            capped = max(1, MAX_WINDOW_RUNS // enc.n_windows)
            notes.append(f"This passage needs {enc.n_windows} windows; timed runs reduced from {runs} to "
                         f"{capped} to keep the request bounded.")
            runs = capped
        runnable = {n: v for n, v in self._variants.items() if n in names and v.model is not None}
        fns = {}
        for n, v in runnable.items():
            inputs = enc.to(v.device)  # tokenized once; copied to the device outside the timed region
            fns[n] = (lambda m=v.model, x=inputs: m(**x), v.device if v.device.startswith("cuda") else None)

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
