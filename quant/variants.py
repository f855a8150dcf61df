"""Every variant of one model, built once: `ModelSet`.

Building is kept apart from using: this module loads the model and makes each
variant (FP32, dynamic INT8, static INT8, GPU copies, BF16, and Inspect's INT8
models with some layers kept in FP32) and measures their sizes; compare.py,
inspection.py and evaluate.py are operations over a ready `ModelSet`.

`--model` may be a hub id, a `save_pretrained` folder, or an INT8 artifact
folder written by `python -m quant quantize --out` (INT8 is then loaded from
the artifact, not re-quantized; FP32 comes from the artifact's source model,
or its variants say why not).

Variants (`LABELS`):
  fp32-cpu         the model as loaded
  int8-cpu         dynamic INT8 (every nn.Linear but `keep_fp32`; optionally nn.Embedding too)
  fp32-cuda        the FP32 model on cuda:0 (unavailable, with the reason, without a GPU)
  bf16-cpu         opt-in: bfloat16 weights and activations, where the CPU has native bf16
  fp16-cuda        opt-in: half precision on the GPU
  int8-static-cpu  static INT8 (PT2E + Inductor, compiled once and cached; see static.py); built in a
                   background thread when `static="background"` (the app), so the other cards serve at once
"""

from __future__ import annotations

import copy
import gc
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from . import env, gpu
from .inputs import MAX_CONTEXT_CHARS, check_text, check_windows, first_line
from .models import DEFAULT_MODEL, ModelLoadError, describe_source, load_model, set_threads, source_kind, window_length
from .qa import Encoded, encode, tokenize
from .quantize import (EngineChoice, QuantConfig, QuantizationUnavailable, choose_engine, count_quantized, quantize,
                       resolve_keep_fp32, trace_or_eager)
from .size import state_dict_mib
from .smooth import Plans, plans_in
from .static import dynamic_splits

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
NEEDS_FP32 = ("fp32-cpu", "bf16-cpu", "fp32-cuda", "fp16-cuda", STATIC_VARIANT)
MIXED_CAPACITY = 3  # Inspect's keep-K models held at once (each ~ the INT8 model + its FP32 layers)


@dataclass
class _Variant:
    name: str
    model: torch.nn.Module | None
    device: str
    reason: str | None = None  # set when unavailable (or, while `pending`, what is happening)
    pending: bool = False  # being built in the background

    @property
    def cuda(self) -> str | None:
        """The device to synchronize when timing, or None on the CPU."""
        return self.device if self.device.startswith("cuda") else None


def _log_default(msg: str) -> None:
    print(msg, flush=True)


def short_name(model_id: str) -> str:
    """What the page header shows: a hub id as is, a folder by its last part."""
    kind = source_kind(model_id)
    return Path(model_id).expanduser().resolve().name if kind in ("folder", "artifact") else model_id


class ModelSet:
    """One model in every variant, with sizes; built once, shared read-only by every request.

    static: "sync" builds (or loads) the static INT8 package in the constructor; "background"
    starts it in a thread and the variant says "being built" until it is ready (`static_ready`).
    """

    def __init__(self, model_id: str = DEFAULT_MODEL, *, threads: int | None = None,
                 quant: QuantConfig | None = None, variants=DEFAULT_VARIANTS,
                 log: Callable[[str], None] | None = _log_default, static_cache: str | Path | None = None,
                 static: str = "sync", trust_package: bool = False):
        self.log = log or (lambda _msg: None)
        self.quant = quant or QuantConfig()
        self.variant_names = tuple(dict.fromkeys(variants))
        unknown = [v for v in self.variant_names if v not in LABELS]
        if unknown:
            raise ValueError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(LABELS)}")
        if static not in ("sync", "background"):
            raise ValueError("static must be 'sync' or 'background'")
        self.threads = set_threads(threads)
        self.threads_fixed = threads is not None  # --threads: never changed per measurement
        t0 = time.perf_counter()
        self.model_id = str(model_id)
        self.source = source_kind(self.model_id)
        self.manifest: dict | None = None
        self.artifact = None  # artifact.Loaded, when --model is an INT8 artifact folder
        self.trust_package = trust_package  # run a folder's compiled static package (else it is rebuilt here)
        self.fp32_reason: str | None = None
        self.splits: Plans | None = None  # the dynamic card's outlier-channel split plans (QuantConfig.split)
        self.int8_reason: str | None = None  # why there is no dynamic INT8 (a torch without torch.ao.quantization)
        self.log(f"[quantqa] loading {describe_source(self.model_id)} ...")
        fp32, int8 = self._load_artifact() if self.source == "artifact" else self._load_and_quantize()
        self.fp32_eager, self.int8_eager = fp32, int8
        self.layer_counts = count_quantized(int8 if int8 is not None else fp32)
        self.int8_runnable = self._trace_int8(int8)
        self.log("[quantqa] measuring sizes ...")
        self.sizes_mib = self._sizes(fp32, int8)
        gc.collect()
        self._mixed: MixedModels | None = None  # Inspect's keep-K models, built on first use
        self._inspector = None  # Inspect's hooks and weight statistics, made on first use
        self._static_thread: threading.Thread | None = None
        self._variants: dict[str, _Variant] = {n: self._build(n, static_cache, static) for n in self.variant_names}
        gpu.register(self)  # a ZeroGPU worker forked later finds the CUDA variants here
        self.startup_s = time.perf_counter() - t0
        size = self.sizes_mib["fp32"]
        int8_mib = self.sizes_mib.get("int8_emb") or self.sizes_mib["int8"]
        self.log(f"[quantqa] ready in {self.startup_s:.1f} s — FP32 {'n/a' if size is None else f'{size:.2f} MiB'}, "
                 f"INT8 {'n/a' if int8_mib is None else f'{int8_mib:.2f} MiB'}, {self.threads} threads")

    # ------------------------------------------------------------------ building

    def _load_and_quantize(self):
        loaded = load_model(self.model_id)
        self.tokenizer, self.max_length, fp32 = loaded.tokenizer, loaded.max_length, loaded.model
        cfg = fp32.config
        self.quant = replace(self.quant, keep_fp32=resolve_keep_fp32(fp32, self.quant.keep_fp32))
        try:
            self.engine_choice: EngineChoice = choose_engine(
                self.quant.engine, hidden=getattr(cfg, "hidden_size", 768),
                intermediate=getattr(cfg, "intermediate_size", 4 * getattr(cfg, "hidden_size", 768)))
            self.log(f"[quantqa] quantized engine: {self.engine_choice.describe()}")
            self.splits = dynamic_splits(fp32, self.tokenizer, self.max_length, self.quant, self.log)
            self.log(f"[quantqa] quantizing to INT8 ({self.quant}) ...")
            return fp32, quantize(fp32, self.quant, self.splits)
        except QuantizationUnavailable as exc:  # a torch without torch.ao.quantization: the other cards still serve
            self.engine_choice = EngineChoice(torch.backends.quantized.engine, "unused: no dynamic INT8 here")
            self.int8_reason = str(exc)
            self.log(f"[quantqa] int8-cpu unavailable: {exc}")
            return fp32, None

    def _load_artifact(self):
        """The folder's recipe (artifact.py): its INT8 model, or for static what builds it; FP32 from its own weights
        or its manifest's source model (else the FP32 cards say why)."""
        from . import artifact

        try:
            loaded = artifact.load(self.model_id, trust_package=self.trust_package, log=self.log)
        except Exception as exc:
            raise ModelLoadError(f"Cannot load INT8 artifact {self.model_id!r}: {type(exc).__name__}: "
                                 f"{first_line(exc, 200) if str(exc).strip() else ''}") from exc
        self.artifact, self.manifest, self.tokenizer = loaded, loaded.manifest, loaded.tokenizer
        self.quant = replace(QuantConfig.from_manifest(self.manifest.get("quant_config", {})),
                             torchscript=self.quant.torchscript, engine=self.manifest.get("engine", "auto"))
        self.engine_choice = EngineChoice(torch.backends.quantized.engine, "from the artifact")
        fp32, int8 = loaded.fp32, loaded.int8
        self.log(f"[quantqa] {artifact.describe(loaded.recipe, loaded.keep_fp32)}, from the folder")
        if fp32 is None:
            self.fp32_reason = ("this INT8 artifact's FP32 source model could not be loaded (and the folder holds no "
                                "FP32 weights), so there is no FP32 to run")
            self.max_length = window_length(int8.config, self.tokenizer)
        else:
            self.max_length = window_length(fp32.config, self.tokenizer)
        if int8 is None and fp32 is not None:  # a static folder: the dynamic card is made here, as for any model
            self.quant = replace(self.quant, keep_fp32=(), per_channel=True, split=QuantConfig.split)
            self.splits = dynamic_splits(fp32, self.tokenizer, self.max_length, self.quant, self.log)
            int8 = quantize(fp32, self.quant, self.splits)
        elif int8 is not None:  # the folder's own split plans, if it was split (Inspect's keep-K models reuse them)
            self.splits = plans_in(int8.state_dict()) if self.quant.split is not None else None
        return fp32, int8

    def _trace_int8(self, int8):
        self.torchscript_note = "off"
        if self.artifact is not None and self.artifact.recipe == "dynamic-per-token":
            return self._compile_per_token(int8)
        if not self.quant.torchscript or int8 is None:
            return int8
        runnable, failed = trace_or_eager(int8, self.probes())
        self.torchscript_note = ("on (traced + frozen; outputs checked equal to eager)" if failed is None
                                 else f"off: tracing failed ({failed})")
        if failed:  # an untraceable architecture: run eager, say why
            self.log(f"[quantqa] TorchScript {self.torchscript_note}; running INT8 eagerly")
        return runnable

    def _compile_per_token(self, int8):
        """torchao's per-token INT8 runs compiled, as it was measured (about a minute on bert-base, here, once)."""
        import warnings

        self.log("[quantqa] compiling the per-token INT8 model with torch.compile (as it was measured) ...")
        try:
            compiled = torch.compile(int8, dynamic=True)
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for p in self.probes():
                    compiled(**p)
            self.torchscript_note = "off: torch.compile (per-token INT8, as measured)"
            return compiled
        except Exception as exc:  # no compiler: eager, said so
            self.torchscript_note = f"off: torch.compile failed ({type(exc).__name__}); per-token INT8 runs eagerly"
            return int8

    def _sizes(self, fp32, int8) -> dict[str, float | None]:
        sizes: dict[str, float | None] = {"fp32": state_dict_mib(fp32) if fp32 is not None else None}
        if self.quant.embeddings:  # both INT8 rows: the usual recipe and the one with 8-bit embeddings
            plain = replace(self.quant, embeddings=False)
            sizes["int8"] = state_dict_mib(quantize(fp32, plain, self.splits)) if fp32 is not None else None
            sizes["int8_emb"] = state_dict_mib(int8)
        else:
            sizes["int8"] = state_dict_mib(int8) if int8 is not None else None
        return sizes

    def _build(self, name: str, static_cache, static_mode: str) -> _Variant:
        fp32 = self.fp32_eager
        if name in NEEDS_FP32 and fp32 is None:
            return _Variant(name, None, "cpu", self.fp32_reason)
        if name == "fp32-cpu":
            return _Variant(name, fp32, "cpu")
        if name == "int8-cpu":
            return _Variant(name, self.int8_runnable, "cpu", self.int8_reason)
        if name == "bf16-cpu":
            if not env.has_native_bf16():
                return _Variant(name, None, "cpu", "this CPU has no native bf16 (AVX-512 BF16 / AMX); it would be "
                                                   "emulated and slow")
            return _Variant(name, copy.deepcopy(fp32).to(torch.bfloat16).eval(), "cpu")
        if name == STATIC_VARIANT:
            if static_mode == "background":
                self._static_thread = threading.Thread(target=self._static_in_background, args=(static_cache,),
                                                       name="quantqa-static-build", daemon=True)
                self._static_thread.start()
                return _Variant(name, None, "cpu", "static INT8 is being built (export, calibration, compilation: "
                                                   "about a minute for bert-base the first time; then cached)",
                                pending=True)
            return self._static_variant(static_cache)
        return self._cuda_variant(name)

    def _cuda_variant(self, name: str) -> _Variant:
        ok, line = env.cuda_status()
        if not ok:
            return _Variant(name, None, "cuda", line)
        self.log(f"[quantqa] copying the model to {line} for {name} ...")
        try:
            m = copy.deepcopy(self.fp32_eager)
            return _Variant(name, (m.half() if name == "fp16-cuda" else m).to("cuda:0").eval(), "cuda:0")
        except Exception as exc:  # OOM, driver error: report it on the card
            return _Variant(name, None, "cuda", f"could not copy the model to the GPU: {exc}")

    def _static_variant(self, cache) -> _Variant:
        from .static import build_static, card_kwargs, is_static

        # a static folder: its calibration, kept layers, probes (and package, when trusted); else the card's recipe
        kwargs = dict(self.artifact.static_kwargs) if self.artifact is not None and is_static(self.artifact.recipe) \
            else card_kwargs(self.fp32_eager)
        try:
            model = build_static(self.fp32_eager, self.tokenizer, cache_dir=cache, log=self.log,
                                 max_length=self.max_length, source_id=self.model_id, **kwargs)
        except Exception as exc:  # no compiler, export failure, parity failure: say why on the card
            self.log(f"[quantqa] {STATIC_VARIANT} unavailable: {first_line(exc)}")
            return _Variant(STATIC_VARIANT, None, "cpu", f"static INT8 could not be built here: {first_line(exc)}")
        self.sizes_mib["int8_static"] = model.size_mib
        return _Variant(STATIC_VARIANT, model, "cpu")

    def _static_in_background(self, cache) -> None:
        self._variants[STATIC_VARIANT] = self._static_variant(cache)  # one assignment: readers see old or new

    # ------------------------------------------------------------------ state

    def recipes(self) -> dict[str, str]:
        """variant -> the INT8 recipe it runs, for its card (a folder's recipe is named as such)."""
        from .artifact import describe
        from .static import CARD_RECIPE, is_static

        static = ("calibrated, PT2E" if CARD_RECIPE == "static"  # the card's title says "static INT8" already
                  else describe(CARD_RECIPE).removeprefix("static INT8, "))
        dynamic = self.quant.recipe
        if self.artifact is not None:
            name, keep = self.artifact.recipe, self.artifact.keep_fp32
            if is_static(name):
                static = describe(name, keep) + " (this folder's)"
            else:
                dynamic = describe(name, keep) + " (this folder's)"
        return {"int8-cpu": dynamic, "int8-static-cpu": static}

    def static_building(self) -> bool:
        """True while the static INT8 package is being built in the background (it takes the cores)."""
        return self._static_thread is not None and self._static_thread.is_alive()

    def wait_static(self, timeout: float | None = None) -> bool:
        """Wait for a background static build; True when nothing is left to wait for."""
        if self._static_thread is not None:
            self._static_thread.join(timeout)
        return not self.static_building()

    def variant(self, name: str) -> _Variant:
        return self._variants[name]

    def model(self, variant: str) -> torch.nn.Module | None:
        return self._variants[variant].model

    def availability(self) -> dict[str, str | None]:
        """variant -> None if it can run, else the reason it cannot (now)."""
        return {n: v.reason for n, v in self._variants.items()}

    def static_info(self) -> str | None:
        """How the static INT8 variant was obtained (built / loaded from the cache), or None."""
        from .static import describe_build

        v = self._variants.get(STATIC_VARIANT)
        if v is None or v.model is None:
            return None
        return f"{describe_build(v.model.info)}; {v.model.info['path']}"

    @property
    def engine(self) -> str:
        return self.engine_choice.engine

    @property
    def display_name(self) -> str:
        return short_name(self.model_id)

    def info(self) -> dict[str, Any]:
        info = env.machine_info()
        info.update(model=self.model_id, source=self.source, quantized_engine=self.engine,
                    engine_choice=self.engine_choice.describe(), quant_config=str(self.quant),
                    keep_fp32=list(self.quant.keep_fp32), torchscript=self.torchscript_note,
                    layers=self.layer_counts, startup_s=round(self.startup_s, 2), max_length=self.max_length)
        return info

    # ------------------------------------------------------------------ inputs

    def probes(self) -> list[dict[str, torch.Tensor]]:
        """Inputs of different lengths and batch sizes (with padding), to check a trace did not specialise."""
        keep = ("input_ids", "attention_mask", "token_type_ids")
        a = tokenize(self.tokenizer, "Where was it?", "It was in Paris in 1900. " * 3, return_tensors="pt")
        b = tokenize(self.tokenizer, ["Who wrote the long text?", "When?"], ["Somebody wrote this. " * 8, "In 1900."],
                     padding=True, truncation="only_second", max_length=64, return_tensors="pt")
        return [{k: v for k, v in enc.items() if k in keep} for enc in (a, b)]

    def encode_checked(self, context: str, question: str) -> Encoded:
        """Tokenize once; refuse passages over the per-passage bound (characters, then windows)."""
        check_text(context, "passage", MAX_CONTEXT_CHARS)
        enc = encode(self.tokenizer, question, context, max_length=self.max_length)
        check_windows(enc.n_windows, enc.n_tokens)
        return enc

    # ------------------------------------------------------------------ Inspect's models

    def inspector(self):
        """The Inspector over FP32 and dynamic INT8 (weight statistics computed once), made on first use."""
        if self._inspector is None:
            from .inspect import Inspector

            self._inspector = Inspector(self.fp32_eager, self.int8_eager, self.tokenizer, model_id=self.model_id,
                                        max_length=self.max_length, keep_fp32=self.quant.keep_fp32)
        return self._inspector

    def mixed(self, keep: tuple[str, ...] | list[str]):
        """(runnable model, size MiB): INT8 with `keep` (and the configured keep_fp32) left in FP32, built once
        per set of layers; at most MIXED_CAPACITY held."""
        if self._mixed is None:
            self._mixed = MixedModels(self._build_mixed, capacity=MIXED_CAPACITY)
        return self._mixed.get(keep)

    def _build_mixed(self, keep: tuple[str, ...]):
        eager = quantize(self.fp32_eager, replace(self.quant, keep_fp32=self.quant.keep_fp32 + tuple(keep)),
                         self.splits)
        return (trace_or_eager(eager, self.probes())[0] if self.quant.torchscript else eager), state_dict_mib(eager)


class MixedModels:
    """Models built once per set of layer names, at most `capacity` held (least recently used dropped first).

    For Inspect's INT8 models with some Linear layers kept in FP32: each costs about the INT8
    model's memory plus the kept layers' FP32 weights. Building one shares nothing mutable with
    the source models (quantize() copies).
    """

    def __init__(self, build: Callable[[tuple[str, ...]], Any], capacity: int = 3):
        self.build, self.capacity = build, capacity
        self._cache: OrderedDict[tuple[str, ...], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.builds = 0

    def get(self, keep: list[str] | tuple[str, ...]) -> Any:
        key = tuple(sorted(keep))
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            model = self.build(key)
            self.builds += 1
            self._cache[key] = model
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
            return model

    def __len__(self) -> int:
        return len(self._cache)
