"""Static INT8 (PT2E + X86 Inductor quantizer), compiled once with AOTInductor and cached on disk.

Dynamic INT8 (quantize.py) quantizes activations at every call and leaves the
FP32 work around the int8 GEMMs alone. Static INT8 fixes every Linear's
activation scale ahead of time from calibration data and lets Inductor fuse the
rest (quantize / dequantize, bias, GELU, LayerNorm) into compiled C++ — the
recipe PyTorch maintains in torchao (`torchao.quantization.pt2e`; torch.ao eager
mode is deprecated). The attention stays FP32: the X86 quantizer annotates the
Linear layers of this graph (MiniLM's: 37 int8 Linear, no int8 matmul), and the
attention runs as one fused SDPA kernel (flash attention for CPU). With eager
attention the mask, softmax and two matmuls were separate kernels per layer:
28.9 % + 21.9 % of static INT8's time at 384 tokens on an Intel Xeon
(bench/op_profile.py); SDPA made the package 1.22x faster there, the same at 160,
with the same answers on real text (bench/README.md).

Recipe: the FP32 model with SDPA attention -> torch.export (batch 1, sequence 8-384 dynamic;
windows run one after another: a package with a dynamic batch dimension
measured ~6% slower at 160 tokens on bert-base)
-> X86InductorQuantizer (uint8 activations per tensor, static; int8 weights
per output channel; `StaticOptions`: the observer, SmoothQuant, outlier channel
splitting, layers with dynamic activations) -> calibration (`calibration_texts`,
each window once) -> convert -> AOTInductor package (freezing on; max-autotune
first, `COMPILE_CONFIGS`) -> a parity check of the compiled package against the
eager quantized graph on 9/16/37/64/160/211/384 tokens and a padded batch (logits
SQNR >= `PARITY_DB`): a max-autotune package that fails it is replaced by the
default compilation (oneDNN qlinear), and one that fails too is not kept.

Cache: `<cache>/<key>.pt2` + `<key>.json` (+ `<key>.probes.pt`, the parity
references), key = sha256 of the FP32 weights, config, tokenizer, recipe
version, calibration texts, torch/torchao versions and CPU flags. A warm start
loads the package (~0.4 s for bert-base) and re-checks it on the stored probes.
Default cache: $QUANTQA_CACHE, else /data/quantqa where a Space has persistent storage, else ~/.cache/quantqa.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .inputs import first_line
from .metrics import sqnr_db
from .qa import tokenize
from .quantize import _Positional, _QAOutput
from .size import graph_state_mib
from .smooth import ALIGN, MAX_EXTRA

RECIPE = "pt2e-x86-inductor-static/6 (SDPA attention, int8 Linear, per-channel weights, per-tensor activations, float tensors only, batch 1, max-autotune when it keeps parity)"
PARITY_DB = 20.0  # compiled vs eager quantized graph; rounding differences give ~30 dB, a broken kernel < 0 dB
MIN_SEQ = 8
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
ASSETS = Path(__file__).resolve().parents[1] / "assets" / "examples.json"


def default_cache(data: str | Path = "/data") -> Path:
    """Where compiled packages are kept: $QUANTQA_CACHE; else a Space's persistent storage (/data/quantqa) when it
    is there and writable, so a restart does not rebuild; else ~/.cache/quantqa."""
    if os.environ.get("QUANTQA_CACHE"):
        return Path(os.environ["QUANTQA_CACHE"]) / "static"
    data = Path(data)
    if data.is_dir() and os.access(data, os.W_OK | os.X_OK):
        return data / "quantqa" / "static"
    return Path.home() / ".cache" / "quantqa" / "static"


CALIBRATION_SETS = ("examples", "realtext")


def calibration_texts(kind: str = "examples") -> list[tuple[str, str]]:
    """(question, passage) pairs to calibrate on. "examples": the app's six (assets/examples.json). "realtext":
    those and the built-in real-text set's calibration half (12 passages, two questions each; the held-out half
    is never calibrated on: quant.realqa)."""
    if kind not in CALIBRATION_SETS:
        raise ValueError(f"calibration set must be one of {', '.join(CALIBRATION_SETS)}; got {kind!r}")
    data = json.loads(ASSETS.read_text(encoding="utf-8"))
    pairs = [(e["question"], e["passage"]) for e in data]
    if kind == "realtext":
        from .realqa import paragraphs

        pairs += [(qa["question"], p["context"]) for p in paragraphs("calibration") for qa in p["qas"][:2]]
    return pairs


class StaticUnavailable(RuntimeError):
    """Static INT8 cannot be built here; the message says why (shown on the card)."""


class StaticQA(nn.Module):
    """The compiled package, called like a transformers QA model: `m(**inputs).start_logits`.

    Inputs shorter than `MIN_SEQ` tokens are padded (attention mask 0) and the
    logits cut back; the rows of a batch (windows) run one after another.
    Inputs the package was not compiled for are refused with a ValueError *before*
    it runs (`check`): inside the compiled kernels an out-of-range index is a
    failed check in an OpenMP worker thread, which ends the whole process.
    """

    def __init__(self, runner, names: tuple[str, ...], pad_id: int, size_mib: float, info: dict,
                 limits: dict[str, int] | None = None, max_seq: int | None = None):
        super().__init__()
        self.runner, self.names, self.pad_id = runner, names, pad_id
        self.size_mib, self.info = size_mib, info
        self.limits, self.max_seq = dict(limits or {}), max_seq

    def check(self, inputs: dict[str, torch.Tensor]) -> None:
        """ValueError unless every input is one the package can take: at most `max_seq` tokens, every index
        (token id, token type) inside its embedding table."""
        t = inputs[self.names[0]].shape[-1]
        if self.max_seq is not None and t > self.max_seq:
            raise ValueError(f"{t} tokens per window: this static INT8 package takes at most {self.max_seq}")
        for name, bound in self.limits.items():
            v = inputs.get(name)
            if v is not None and v.numel() and (int(v.min()) < 0 or int(v.max()) >= bound):
                raise ValueError(f"{name} outside [0, {bound}) for this model: {int(v.min())}..{int(v.max())}")

    def forward(self, **inputs):
        self.check(inputs)
        x = [inputs[k] for k in self.names]
        b, t = x[0].shape
        if t < MIN_SEQ:
            pad = MIN_SEQ - t
            x = [torch.nn.functional.pad(v, (0, pad), value=self.pad_id if k == "input_ids" else 0)
                 for k, v in zip(self.names, x)]
        s, e = _run_rows(self.runner, x)
        return _QAOutput(s[:, :t], e[:, :t])


def input_limits(config) -> dict[str, int]:
    """Each index input's table size: token ids < vocab_size, token types < type_vocab_size."""
    out = {"input_ids": int(config.vocab_size)}
    if getattr(config, "type_vocab_size", None):
        out["token_type_ids"] = int(config.type_vocab_size)
    return out


def _run_rows(runner, x: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The package takes batch 1: run each row (window), concatenate the logits."""
    outs = [runner([v[i:i + 1].contiguous() for v in x]) for i in range(x[0].shape[0])]
    return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])


def _cpu_flags() -> str:
    from .env import _cpuinfo

    name, flags = _cpuinfo()
    keep = sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "f16c", "sse4")))
    return name + "|" + ",".join(keep)


def cache_key(fp32: nn.Module, tokenizer, max_length: int, calib: list[tuple[str, str]], keep_fp32: tuple = (),
              dynamic: bool = False, options: "StaticOptions | None" = None) -> str:
    import torchao

    h = hashlib.sha256()
    for k, v in sorted(fp32.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().contiguous().cpu().numpy().tobytes())
    h.update(fp32.config.to_json_string().encode())
    h.update(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    extra = [] if options is None or options == StaticOptions() else [options.as_dict()]  # the default: keys as before
    h.update(json.dumps([RECIPE, max_length, calib, torch.__version__, torchao.__version__, _cpu_flags(),
                         sorted(keep_fp32), dynamic, *extra]).encode())
    return h.hexdigest()[:24]


def _load_runner(path: Path):
    """The fast loader where this torch has it (0.2-0.4 s), else the public one."""
    try:
        loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)
        return lambda xs: loader.run(xs), "AOTIModelPackageLoader"
    except Exception:  # older / newer torch: the public API
        pkg = torch._inductor.aoti_load_package(str(path))
        return lambda xs: pkg(*xs), "aoti_load_package"


def _probes(tokenizer, names, max_length: int) -> list[list[torch.Tensor]]:
    """9, 16, 37, 64, 160, 211 and max-length tokens (batch 1; none longer than the model's window: odd lengths
    check the GEMM templates' tails), and a padded batch of two."""
    g = torch.Generator().manual_seed(0)
    lo = 1000 if len(tokenizer) > 2000 else 5
    out = []
    for n in sorted({min(n, max_length) for n in (9, 16, 37, 64, 160, 211, max_length)}):  # short windows: fewer
        ids = torch.randint(lo, len(tokenizer), (1, n), generator=g)
        ids[0, 0] = tokenizer.cls_token_id or 0
        ids[0, -1] = tokenizer.sep_token_id or 0
        d = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
        out.append([d[k] for k in names])
    e = tokenize(tokenizer, ["Where was it?", "When did the long story begin?"],
                 ["It was in Paris in 1900.", "The story began in the winter of 1901 in a small town. " * 4],
                 padding=True, return_tensors="pt")
    out.append([e[k] for k in names])
    return out


def _check_parity(runner, probes, refs, what: str) -> list[float]:
    dbs = []
    with torch.inference_mode():
        for x, (rs, re_) in zip(probes, refs):
            s, e = _run_rows(runner, x)
            mask = x[1].bool() if len(x) > 1 else torch.ones_like(x[0], dtype=torch.bool)
            db = min(sqnr_db(rs[mask], s[mask]), sqnr_db(re_[mask], e[mask]))
            dbs.append(db)
            if not db >= PARITY_DB:
                raise StaticUnavailable(f"{what}: compiled outputs differ from the eager quantized graph at input "
                                        f"shape {tuple(x[0].shape)} (logits SQNR {db:.1f} dB < {PARITY_DB:.0f} dB)")
    return dbs


def _is_float(node) -> bool:
    v = node.meta.get("val") if hasattr(node, "meta") else None
    return isinstance(v, torch.Tensor) and v.is_floating_point()


def _float_only(base):
    """The quantizer class `base`, made to observe float tensors only.

    X86InductorQuantizer annotates by operator; some models run those operators on integer tensors too
    (RoBERTa and XLM-RoBERTa compute position ids from input_ids with add / mul), and a histogram observer
    on an int tensor fails ("histogram_cpu" not implemented for 'Int'). After annotating, every
    quantization spec on a non-float tensor is removed: those ops stay integer, as in the eager model.
    """

    class FloatOnly(base):
        def _need_skip_config(self, quantization_config) -> bool:
            # The X86 quantizer refuses (with a warning, silently in effect) a per-module config whose activations
            # are dynamic when the global one is static; StaticOptions.dynamic_layers asks for exactly that mix.
            # The Inductor lowering fuses static and dynamic qlinear patterns per node, and the parity check holds
            # the compiled package to the eager graph either way.
            return False

        def annotate(self, model):
            model = super().annotate(model)
            for node in model.graph.nodes:
                ann = node.meta.get("quantization_annotation")
                if ann is None:
                    continue
                ann.input_qspec_map = {n: q for n, q in ann.input_qspec_map.items() if _is_float(n)}
                if getattr(ann, "output_qspec", None) is not None and not _is_float(node):
                    ann.output_qspec = None
            return model

    return FloatOnly


def describe_build(info: dict) -> str:
    """How the package was obtained, for the log and the environment panel."""
    how = f"loaded from cache in {info['load_s']:.1f} s" if info["cached"] else f"built in {info['build_s']:.0f} s"
    compiled = f", {info['compile']} GEMMs" if info.get("compile") else ""
    return (f"{how}; parity with the eager quantized graph >= {min(info['parity_db']):.1f} dB ({info['loader']}"
            f"{compiled})")


def _info(key, path, build_s, load_s, loader, parity_db, size_mib, cached) -> dict:
    """What StaticQA.info holds: build_s is the original build's time, also when loaded from the cache."""
    return dict(key=key, path=str(path), build_s=build_s, load_s=load_s, loader=loader, parity_db=parity_db,
                size_mib=size_mib, cached=cached)


def _requirements() -> None:
    """Raise StaticUnavailable when this machine cannot build a package (no torchao, AOTInductor or compiler)."""
    try:
        import torchao  # noqa: F401
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer  # noqa: F401
    except ImportError as exc:
        raise StaticUnavailable(f"torchao is not installed ({exc.name}); pip install -r requirements.txt") from None
    if not hasattr(torch._inductor, "aoti_compile_and_package"):
        raise StaticUnavailable(f"this torch ({torch.__version__}) has no AOTInductor packaging")
    import shutil

    if not (shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++") or shutil.which("clang++")):
        raise StaticUnavailable("no C++ compiler found (Inductor compiles C++); install g++")


def input_names(tokenizer) -> tuple[str, ...]:
    return tuple(k for k in INPUT_NAMES if k in tokenizer.model_input_names)


@dataclass
class Converted:
    """The eager quantized graph (PT2E, converted) and what compiling it needs."""

    graph: nn.Module
    example: list[torch.Tensor]
    dynamic_shapes: list[dict]
    names: tuple[str, ...]
    calibration_windows: int

    def model(self, pad_id: int, info: dict | None = None) -> "StaticQA":
        """The converted graph called like a QA model (eager: for scoring, not for timing)."""
        return StaticQA(lambda xs: self.graph(*xs), self.names, pad_id, graph_state_mib(self.graph),
                        info or {"eager": True})


LEGACY_SPLIT = (16, None)  # K alignment and extra-channel budget of the splits made before either was an option


@dataclass(frozen=True)
class StaticOptions:
    """How static INT8 is built: calibration observer, SmoothQuant, mixed layers, attention (the cache key and the
    package manifest hold the non-default ones)."""

    observer: str = "histogram"  # activation ranges: histogram (the range with the least L2 error), minmax, percentile
    smooth: float | None = None  # SmoothQuant's alpha (smooth.py), or None: activation outliers moved into weights
    dynamic_layers: tuple[str, ...] = ()  # Linear paths whose activations are quantized at each call (PT2E dynamic)
    percentile: float = 99.99  # the percentile observer's clip point
    attention: str = "sdpa"  # sdpa: one fused FP32 attention kernel; eager: mask, softmax, matmuls as separate ops
    split: float | None = None  # outlier channel splitting's ratio (smooth.split_outliers), or None
    split_align: int = ALIGN  # a split input's K is padded to a multiple of this (16 in folders made before it was 64)
    split_budget: int | None = MAX_EXTRA  # at most this many extra channels per split input (None in folders before)
    gptq: bool = False  # weights rounded by GPTQ on the quantizer's own grid (gptq.py) instead of to nearest

    def __post_init__(self):
        if self.observer not in OBSERVERS:
            raise ValueError(f"observer must be one of {', '.join(OBSERVERS)}; got {self.observer!r}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTIONS)}; got {self.attention!r}")
        object.__setattr__(self, "dynamic_layers", tuple(self.dynamic_layers))

    def describe(self) -> str:
        parts = [f"{self.observer} observer" + (f" {self.percentile:g}%" if self.observer == "percentile" else "")]
        if self.smooth:
            parts.append(f"SmoothQuant alpha {self.smooth:g}")
        if self.split:
            parts.append(f"outlier channels split (over {self.split:g}x the median channel's range)")
        if self.dynamic_layers:
            parts.append(f"{len(self.dynamic_layers)} Linear with dynamic activations")
        if self.attention != "sdpa":
            parts.append(f"{self.attention} attention")
        if self.gptq:
            parts.append("GPTQ-rounded weights")
        return ", ".join(parts)

    def as_dict(self) -> dict:
        d = {"observer": self.observer, "smooth": self.smooth, "dynamic_layers": list(self.dynamic_layers),
             "percentile": self.percentile}
        if self.attention != "sdpa":  # absent when default (the keys of packages built before these existed)
            d["attention"] = self.attention
        if self.split:
            d["split"] = self.split
            if (self.split_align, self.split_budget) != LEGACY_SPLIT:  # absent: a split made before they existed
                d["split_align"], d["split_budget"] = self.split_align, self.split_budget  # (its key as it was)
        if self.gptq:  # absent when off: the keys of packages built before it existed
            d["gptq"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> "StaticOptions":
        """The options `as_dict` wrote (an artifact's manifest); unknown keys are refused, missing ones default."""
        import dataclasses

        d = dict(d or {})
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown static options: {', '.join(sorted(unknown))}")
        if d.get("split") and "split_align" not in d:  # split before K was padded to 64 and the extra channels
            d.update(zip(("split_align", "split_budget"), LEGACY_SPLIT))  # capped: rebuilt as it was made
        return cls(**{**d, "dynamic_layers": tuple(d.get("dynamic_layers", ()))})


OBSERVERS = ("histogram", "minmax", "percentile")
ATTENTIONS = ("eager", "sdpa")

# Static INT8 recipes (issue #24): what each calibrates on and how, offered by `tune --recipes` and the Recipes tab,
# measured side by side (bench/README.md). "static" is build_static's defaults (the static card's recipe before
# outlier channel splitting); CARD_RECIPE is what the static card builds.
STATIC_RECIPES = ("static", "static-realtext", "static-smooth", "static-mixed", "static-split", "static-gptq")
SMOOTH_ALPHA = 0.5  # SmoothQuant's migration strength (the paper's default; 0.3 / 0.7 measured no better here)


CARD_RECIPE = "static-gptq"  # what the static card builds (#24): static-split (more answers kept than "static",
# MiniLM-QA, real text: 92.5 / 90.8 % of FP32's spans vs 80.0 / 85.8 %, at 1.04x its latency at worst on the bert-base
# shape @160) with GPTQ-rounded weights: the same graph and kernels, +0.8 / +1.0 dB logits SQNR on the two halves,
# 95.0 % of the held-out spans compiled (bench/README.md)


def is_static(recipe: str) -> bool:
    return recipe in STATIC_RECIPES


def card_kwargs(fp32: nn.Module) -> dict:
    """build_static's calibration and options for the static card: CARD_RECIPE's."""
    calib, options = recipe_setup(CARD_RECIPE, fp32)
    return {"calibration": calib, "options": options}


def ffn_output_layers(model: nn.Module) -> tuple[str, ...]:
    """The FFN output Linear of every layer (BERT / ELECTRA / DeBERTa `.output.dense`, DistilBERT `.ffn.lin2`):
    the inputs with BERT's largest activation outliers (after GELU)."""
    return tuple(n for n, m in model.named_modules() if isinstance(m, nn.Linear)
                 and n.endswith((".output.dense", ".ffn.lin2")) and ".attention." not in n)


def recipe_setup(recipe: str, fp32: nn.Module) -> tuple[list[tuple[str, str]], StaticOptions]:
    """A static recipe's calibration pairs and options:
    static           the app's 6 examples, histogram observer (build_static's defaults; the card's before #24)
    static-realtext  the examples + the real-text calibration half (30 pairs), histogram
    static-smooth    the same calibration, SmoothQuant (alpha SMOOTH_ALPHA) folded into the LayerNorms and weights
    static-mixed     the same calibration, the FFN output Linear layers with dynamic (per-call) activation scales
    static-split     the same calibration, outlier input channels split (smooth.split_outliers, ratio SPLIT_RATIO)
    static-gptq      static-split with its weights rounded by GPTQ (gptq.py): the static card's (CARD_RECIPE)
    """
    if recipe not in STATIC_RECIPES:
        raise ValueError(f"not a static recipe: {recipe!r}; choose from {', '.join(STATIC_RECIPES)}")
    if recipe == "static":
        return calibration_texts("examples"), StaticOptions()
    calib = calibration_texts("realtext")
    if recipe == "static-smooth":
        return calib, StaticOptions(smooth=SMOOTH_ALPHA)
    if recipe == "static-mixed":
        layers = ffn_output_layers(fp32)
        if not layers:
            raise StaticUnavailable("this model has no FFN output Linear layers to give dynamic activations")
        return calib, StaticOptions(dynamic_layers=layers)
    if recipe in ("static-split", "static-gptq"):
        from .smooth import SPLIT_RATIO

        return calib, StaticOptions(split=SPLIT_RATIO, gptq=recipe == "static-gptq")
    return calib, StaticOptions()


def _percentile_observer():
    """A MinMax observer whose range is the p-th percentile of |x| seen (a sample of every call's values), so a
    handful of outlier activations does not set the scale for all."""
    from torchao.quantization.pt2e.observer import MinMaxObserver

    class PercentileObserver(MinMaxObserver):
        def __init__(self, *args, percentile: float = 99.99, **kwargs):
            super().__init__(*args, **kwargs)
            self.percentile = percentile
            self._seen: list[torch.Tensor] = []

        def forward(self, x_orig):
            if x_orig.numel() == 0:
                return x_orig
            x = x_orig.detach().float().flatten()
            if x.numel() > 100_000:
                x = x[torch.randint(0, x.numel(), (100_000,), generator=torch.Generator().manual_seed(len(self._seen)))]
            self._seen.append(x)
            seen = torch.cat(self._seen)
            q = torch.tensor([(100 - self.percentile) / 100, self.percentile / 100])
            lo, hi = torch.quantile(seen, q)
            self.min_val.copy_(torch.minimum(lo, torch.zeros(())))
            self.max_val.copy_(torch.maximum(hi, torch.zeros(())))
            return x_orig

    return PercentileObserver


def _quant_config(options: "StaticOptions", dynamic: bool = False):
    import dataclasses

    from torchao.quantization.pt2e.observer import MinMaxObserver
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    base = xiq.get_default_x86_inductor_quantization_config(is_dynamic=dynamic)
    if dynamic or options.observer == "histogram":
        return base
    ctr = (MinMaxObserver.with_args(eps=2 ** -12) if options.observer == "minmax" else
           _percentile_observer().with_args(eps=2 ** -12, percentile=options.percentile))
    act = dataclasses.replace(base.input_activation, observer_or_fake_quant_ctr=ctr)
    return dataclasses.replace(base, input_activation=act, output_activation=act)


def calibration_inputs(tokenizer, calib: list[tuple[str, str]], max_length: int, names) -> list[list[torch.Tensor]]:
    """Every window of every (question, passage) pair, unpadded, batch 1 (as the package takes them)."""
    from .qa import encode

    out = []
    for q, c in calib:
        enc = encode(tokenizer, q, c, max_length=max_length)
        for w in range(enc.n_windows):
            n = int(enc.inputs["attention_mask"][w].sum())
            out.append([enc.inputs[k][w:w + 1, :n] for k in names])
    return out


def dynamic_splits(fp32: nn.Module, tokenizer, max_length: int, config, log=None):
    """The dynamic card's outlier-channel split plans (quant.smooth.plan_splits at `config.split`, its alignment and
    budget): calibrated as the static card is, on the real-text calibration half and the app's examples. None when
    `config` does not split."""
    from .smooth import plan_splits

    if config.split is None:
        return None
    t0 = time.perf_counter()
    names = input_names(tokenizer)
    windows = [dict(zip(names, x)) for x in
               calibration_inputs(tokenizer, calibration_texts("realtext"), max_length, names)]
    plans = plan_splits(fp32, windows, config.split, align=config.split_align, budget=config.split_budget)
    if log:
        log(f"[quantqa] outlier channels: {len(plans)} inputs split, +{sum(i.numel() for i, _ in plans.values())} "
            f"channels ({len(windows)} real-text windows, {time.perf_counter() - t0:.1f} s)")
    return plans


def convert(fp32: nn.Module, tokenizer, *, max_length: int = 384, calibration: list[tuple[str, str]] | None = None,
            keep_fp32: tuple[str, ...] = (), dynamic: bool = False, options: StaticOptions | None = None) -> Converted:
    """Export `fp32` (a copy, SDPA attention where the family has it), quantize it with the X86 Inductor quantizer
    (float tensors only; the nn.Linear layers named in `keep_fp32` left in FP32), calibrate on `calibration` (default:
    the app's calibration set; none for `dynamic`, whose activation scales are computed at each call) and convert.
    options: the observer, SmoothQuant (applied to the copy first) and the layers with dynamic activations."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    options = options or StaticOptions()
    calib = calibration if calibration is not None else calibration_texts()
    names = input_names(tokenizer)
    m = copy.deepcopy(fp32).eval()
    try:
        m.set_attn_implementation(options.attention)  # sdpa: one fused kernel; eager: separate matmuls
    except Exception:
        pass
    calib_inputs = calibration_inputs(tokenizer, calib, max_length, names)
    if options.smooth and not dynamic:
        from .smooth import smooth

        m = smooth(m, [dict(zip(names, x)) for x in calib_inputs], options.smooth, skip=tuple(keep_fp32))
    if options.split and not dynamic:
        from .smooth import split_outliers

        m = split_outliers(m, [dict(zip(names, x)) for x in calib_inputs], options.split, skip=tuple(keep_fp32),
                           align=options.split_align, budget=options.split_budget)
    if options.gptq and not dynamic:  # after the split: the widened layers' weights are the ones quantized
        from .gptq import gptq_round

        m = gptq_round(m, [dict(zip(names, x)) for x in calib_inputs], skip=tuple(keep_fp32))
    wrapped = _Positional(m, names).eval()
    example = calib_inputs[0]  # batch 1 (export specialises the size-1 dimension: the package takes batch 1)
    seq = torch.export.Dim("seq", min=MIN_SEQ, max=max_length)
    dyn = [{1: seq} for _ in names]
    ep = torch.export.export(wrapped, tuple(example), dynamic_shapes={"args": tuple(dyn)})
    quantizer = _float_only(xiq.X86InductorQuantizer)()
    quantizer.set_global(_quant_config(options, dynamic))
    for name in options.dynamic_layers:  # these few: activation scales at each call
        quantizer.set_module_name_qconfig(f"model.{name}", _quant_config(options, dynamic=True))
    for name in keep_fp32:  # module paths of the FP32 model; the export wraps it as `model`
        quantizer.set_module_name_qconfig(f"model.{name}", None)
    prepared = prepare_pt2e(ep.module(), quantizer)
    for x in calib_inputs if not dynamic else calib_inputs[:1]:
        prepared(*x)
    converted = convert_pt2e(prepared)
    move_exported_model_to_eval(converted)
    return Converted(converted, example, dyn, names, 0 if dynamic else len(calib_inputs))


def build_static(fp32: nn.Module, tokenizer, *, cache_dir: str | Path | None = None, max_length: int = 384,
                 calibration: list[tuple[str, str]] | None = None, source_id: str = "",
                 log: Callable[[str], None] | None = None, keep_fp32: tuple[str, ...] = (),
                 dynamic: bool = False, package: tuple[Path, str, float] | None = None,
                 expect: Path | None = None, options: StaticOptions | None = None) -> StaticQA:
    """The static INT8 model for `fp32`, from the cache or built (minutes on bert-base) and cached.

    keep_fp32: nn.Linear module paths left in FP32. dynamic: PT2E *dynamic* INT8 instead (activation scales at
    each call, no calibration), compiled the same way (a successor to torch.ao's quantize_dynamic).
    package: (path, key, size MiB) of a trusted package (an artifact folder's), used only when its key is the one computed
    here (same weights, recipe, CPU instruction sets, torch and torchao). expect: a probes file (inputs and the
    logits they must give): the model served is checked against it ("serves as measured").
    Raises StaticUnavailable with a readable reason when it cannot be built here.
    """
    log = log or (lambda m: None)
    if fp32 is None:
        raise StaticUnavailable("there is no FP32 model to quantize")
    _requirements()
    calib = calibration if calibration is not None else calibration_texts()
    cache = Path(cache_dir) if cache_dir else default_cache()
    options = options or StaticOptions()
    key = cache_key(fp32, tokenizer, max_length, calib, tuple(sorted(keep_fp32)), dynamic, options)
    model = _from_package(package, key, fp32, tokenizer, max_length, log) if package else None
    model = model or _cached_or_built(fp32, tokenizer, _Files(cache, key), max_length, calib, keep_fp32, dynamic,
                                      source_id, log, options)
    if expect is not None:
        stored = torch.load(expect, weights_only=True)
        model.info["expect_db"] = _check_parity(model.runner, stored["inputs"], stored["refs"],
                                                "static INT8 against the logits it was measured with")
    return model


def _from_package(package: tuple[Path, str, float], key: str, fp32, tokenizer, max_length, log) -> StaticQA | None:
    """A trusted package, when it was compiled for exactly this (weights, recipe, CPU, torch); else None."""
    path, its_key, size = package
    if its_key != key:
        log("[quantqa] int8-static-cpu: the folder's package was built for another CPU, torch or recipe: rebuilding")
        return None
    t0 = time.perf_counter()
    runner, how = _load_runner(Path(path))
    info = _info(key, path, None, time.perf_counter() - t0, how, [], size, True)
    info["trusted_package"] = True
    log(f"[quantqa] int8-static-cpu: the folder's own package (trusted; built for this CPU and torch), loaded in "
        f"{info['load_s']:.1f} s")
    return StaticQA(runner, input_names(tokenizer), tokenizer.pad_token_id or 0, size, info,
                    input_limits(fp32.config), max_length)


def _cached_or_built(fp32, tokenizer, files: "_Files", max_length, calib, keep_fp32, dynamic, source_id,
                     log, options: "StaticOptions") -> StaticQA:
    what = "int8-static-cpu" if not dynamic else "pt2e-dynamic"
    key, cache = files.key, files.cache
    names, pad_id, limits = input_names(tokenizer), tokenizer.pad_token_id or 0, input_limits(fp32.config)
    if files.complete():
        t0 = time.perf_counter()
        runner, how = _load_runner(files.pkg)
        stored = torch.load(files.probes, weights_only=True)
        dbs = _check_parity(runner, stored["inputs"], stored["refs"], "cached static INT8 package")
        meta = json.loads(files.meta.read_text())
        info = _info(key, files.pkg, meta.get("build_s"), time.perf_counter() - t0, how, dbs, meta["size_mib"], True)
        info["compile"] = meta.get("compile")
        log(f"[quantqa] {what}: {describe_build(info)}")
        return StaticQA(runner, names, pad_id, meta["size_mib"], info, limits, max_length)
    t_build = time.perf_counter()
    gptq = options.gptq and not dynamic
    log(f"[quantqa] {what}: first build for this model and machine (export, calibrate, "
        + ("round the weights by GPTQ, " if gptq else "")
        + f"compile; ~{5 if gptq else 3} min for bert-base on 2 cores, then cached in {cache}) ...")
    b = _compile(fp32, tokenizer, files, max_length, calib, keep_fp32, dynamic, what, log, options)
    build_s = time.perf_counter() - t_build
    torch.save({"inputs": b.probes, "refs": b.refs}, files.probes)
    meta = {"key": key, "recipe": RECIPE, "source": source_id, "build_s": round(build_s, 1), "size_mib": b.size_mib,
            "parity_db": b.parity_db, "torch": torch.__version__, "calibration_windows": b.conv.calibration_windows,
            "keep_fp32": sorted(keep_fp32), "dynamic": dynamic, "options": options.as_dict(),
            "compile": b.compile, "fallback": b.fallback}
    files.meta.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(b.path, files.pkg)
    info = _info(key, files.pkg, build_s, b.load_s, b.loader, b.parity_db, b.size_mib, False)
    info.update(compile=b.compile, fallback=b.fallback)
    log(f"[quantqa] {what}: {describe_build(info)}")
    return StaticQA(b.runner, names, pad_id, b.size_mib, info, limits, max_length)


@dataclass
class _Files:
    """A cached package: `<key>.pt2`, its `<key>.json` and the parity references `<key>.probes.pt`."""

    cache: Path
    key: str

    @property
    def pkg(self) -> Path:
        return self.cache / f"{self.key}.pt2"

    @property
    def meta(self) -> Path:
        return self.cache / f"{self.key}.json"

    @property
    def probes(self) -> Path:
        return self.cache / f"{self.key}.probes.pt"

    def complete(self) -> bool:
        return self.pkg.is_file() and self.meta.is_file() and self.probes.is_file()


# How the package is compiled, tried in order; the first whose outputs match the eager quantized graph on every
# probe (PARITY_DB) is kept. max-autotune lets Inductor benchmark its C++ GEMM template (int8 micro-kernels: AMX or
# AVX-512 VNNI) against oneDNN's qlinear per GEMM: on an Intel Xeon (model 167, AMX visible) the package went from
# 2.92x to 3.83x FP32 at 160 tokens and 2.77x to 3.56x at 384, same logits SQNR (bench/README.md, issue #25). An
# earlier torch gave wrong BERT outputs with it on an AMD Zen 4: the parity check is what makes it safe to try.
# max-autotune runs the kernels it generates inside the compiling process to time them, and for the PT2E *dynamic*
# graph that ended the process (a segmentation fault in select_algorithm's benchmark, torch 2.13, Intel Xeon): so it
# is compiled and parity-checked in a child process (`_compile_isolated`), and a fault there only means "default".
# PT2E dynamic builds skip it (it faulted every time).
COMPILE_CONFIGS = (  # (label, inductor configs, compiled in a child process)
    ("max-autotune", {"freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN"}, True),
    ("default", {"freezing": True, "max_autotune": False}, False),  # oneDNN qlinear for every GEMM
)
CHILD_TIMEOUT_S = 1800.0


@dataclass
class _Built:
    conv: Converted
    path: Path
    probes: list
    refs: list
    size_mib: float
    runner: Callable
    loader: str
    load_s: float
    parity_db: list[float]
    compile: str  # which COMPILE_CONFIGS entry
    fallback: str = ""  # why an earlier entry was not kept


def _compile(fp32, tokenizer, files: _Files, max_length, calib, keep_fp32, dynamic, what, log, options=None) -> _Built:
    """Export, quantize, calibrate and convert once; compile with each of COMPILE_CONFIGS in turn into a temporary
    package next to the cache entry, keeping the first that passes the parity check (a package compiled in a child
    was checked there too; it is checked again as loaded here)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        logging.getLogger("torch._inductor").setLevel(logging.ERROR)
        try:
            t0 = time.perf_counter()
            conv = convert(fp32, tokenizer, max_length=max_length, calibration=calib, keep_fp32=keep_fp32,
                           dynamic=dynamic, options=options)
            log(f"[quantqa] {what}: exported and calibrated on {conv.calibration_windows} windows "
                f"in {time.perf_counter() - t0:.0f} s; compiling with AOTInductor ...")
            size = graph_state_mib(conv.graph)  # the int8 weights it uses, not the dead FP32 ones
            probes = _probes(tokenizer, conv.names, max_length)
            refs = [tuple(t.clone() for t in _run_rows(lambda xs: conv.graph(*xs), x)) for x in probes]
            ep2 = torch.export.export(conv.graph, tuple(conv.example), dynamic_shapes=conv.dynamic_shapes)
        except Exception as exc:
            raise StaticUnavailable(f"export / quantization failed: {type(exc).__name__}: "
                                    f"{first_line(exc, 200)}") from exc
        files.cache.mkdir(parents=True, exist_ok=True)
        tmp = files.cache / f"{files.key}.{os.getpid()}.tmp.pt2"
        failed = []
        for label, cfg, isolated in COMPILE_CONFIGS[1:] if dynamic else COMPILE_CONFIGS:
            t0 = time.perf_counter()
            try:
                if isolated:
                    _compile_isolated(ep2, probes, refs, label, cfg, tmp)
                else:
                    torch._inductor.aoti_compile_and_package(ep2, package_path=str(tmp), inductor_configs=cfg)
                log(f"[quantqa] {what}: compiled ({label}) in {time.perf_counter() - t0:.0f} s; checking parity ...")
                t0 = time.perf_counter()
                runner, how = _load_runner(tmp)
                load_s = time.perf_counter() - t0
                dbs = _check_parity(runner, probes, refs, f"static INT8 package ({label})")
            except Exception as exc:
                tmp.unlink(missing_ok=True)
                failed.append(f"{label}: {type(exc).__name__}: {first_line(exc, 200)}")
                log(f"[quantqa] {what}: {failed[-1]}")
                continue
            return _Built(conv, tmp, probes, refs, size, runner, how, load_s, dbs, label, "; ".join(failed))
    raise StaticUnavailable("compilation failed: " + "; ".join(failed))


def _child_argv(job: Path) -> list[str]:
    return [sys.executable, "-c", "from quant.static import _child_compile; _child_compile()", str(job)]


def _compile_isolated(ep2, probes, refs, label: str, cfg: dict, out: Path) -> list[float]:
    """Compile `ep2` with `cfg` into `out` and check it against `refs` in a child process, so that a fault in the
    compiler or in a generated kernel ends the child, not this process (the app). Returns the child's parity dB;
    raises StaticUnavailable with the reason (the child's error, its signal, or a timeout)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="quantqa-compile-") as d:
        d = Path(d)
        torch.export.save(ep2, d / "program.pt2")
        torch.save({"inputs": probes, "refs": refs}, d / "probes.pt")
        profile = torch._inductor.config.cpp.enable_kernel_profile  # set by bench/op_profile.py: named kernels
        cfg = {**cfg, **({"cpp.enable_kernel_profile": True} if profile else {})}
        job = {"program": str(d / "program.pt2"), "probes": str(d / "probes.pt"), "out": str(out), "config": cfg,
               "label": label, "threads": torch.get_num_threads(), "result": str(d / "result.json")}
        (d / "job.json").write_text(json.dumps(job))
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        try:
            p = subprocess.run(_child_argv(d / "job.json"), capture_output=True, text=True, env=env, cwd=d,
                               timeout=CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise StaticUnavailable(f"no package after {CHILD_TIMEOUT_S:.0f} s") from None
        result = json.loads((d / "result.json").read_text()) if (d / "result.json").is_file() else None
        if p.returncode != 0 or result is None:
            how = f"signal {-p.returncode}" if p.returncode < 0 else f"exit status {p.returncode}"
            last = next((ln for ln in reversed(p.stderr.splitlines()) if ln.strip()), "")
            raise StaticUnavailable(f"the compiling process ended ({how})" + (f": {last[:200]}" if last else ""))
        if result.get("error"):
            raise StaticUnavailable(result["error"])
        return result["parity_db"]


def _child_compile() -> None:
    """The child of `_compile_isolated`: load the exported program, compile it, check its parity, write the result."""
    job = json.loads(Path(sys.argv[1]).read_text())
    torch.set_num_threads(job["threads"])  # autotune times kernels with the threads the package will run with
    warnings.simplefilter("ignore")
    logging.getLogger("torch._inductor").setLevel(logging.ERROR)
    try:
        import torchao.quantization.pt2e  # noqa: F401  (registers the quantized ops the program calls)

        program = torch.export.load(job["program"])
        stored = torch.load(job["probes"], weights_only=True)
        with torch.no_grad():
            torch._inductor.aoti_compile_and_package(program, package_path=job["out"], inductor_configs=job["config"])
            runner, _ = _load_runner(Path(job["out"]))
            result = {"parity_db": _check_parity(runner, stored["inputs"], stored["refs"],
                                                 f"static INT8 package ({job['label']})")}
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {first_line(exc, 300)}"}
    Path(job["result"]).write_text(json.dumps(result))
