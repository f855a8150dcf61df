"""FP32 model -> dynamically quantized INT8 model; engine choice; INT8 artifacts.

Dynamic quantization (PyTorch eager mode): every `nn.Linear` gets int8 weights
(per-tensor, symmetric); its input activations are quantized on the fly from
their observed range at each call, the int8 GEMM runs, and the output is float
again. Optionally `nn.Embedding` gets 8-bit weight-only rows (per-row float
scale/offset), which shrinks the model further at no speed cost.

`torch.ao.quantization.quantize_dynamic` is deprecated (successor: torchao's
`quantize_`). Every call into it lives in `_backend_quantize`, so a migration
is a change to that one function; its deprecation warnings are kept out of the
user's console.

References: PyTorch dynamic quantization tutorial for BERT;
torchao `quantize_` (pytorch/ao `torchao/quantization/quant_api.py`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import platform
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .smooth import SPLIT_RATIO, Plans, apply_splits

ENGINES = ("x86", "fbgemm", "onednn", "qnnpack")
ARTIFACT_WEIGHTS = "int8_state_dict.pt"  # an INT8 artifact's weights file (artifact.py writes and reads them)


@dataclass(frozen=True)
class QuantConfig:
    """How the INT8 variant is made."""

    embeddings: bool = False  # also quantize nn.Embedding (8-bit weight-only); -38% size, same speed
    engine: str = "auto"  # quantized engine: "auto" = fastest measured here, or one of ENGINES
    torchscript: bool = True  # run the INT8 model traced + frozen (same outputs, less Python/dispatch overhead)
    # One weight scale per output channel (default) or per tensor (the seed's recipe, --per-tensor). Chosen by
    # measurement: on the real-text set MiniLM-QA's per-channel INT8 gives the FP32 span on 66% of the questions,
    # per-tensor on 48%, and per-channel costs nothing (bert-base shape, AMD Zen 4: -0.9% to +0% latency).
    per_channel: bool = True
    keep_fp32: tuple[str, ...] = ()  # nn.Linear module names (or globs) left in FP32: selective quantization
    # Outlier channels split at this multiple of the median channel's range (quant.smooth; calibrated as the static
    # card, on the real-text calibration half) or None; K padded to a multiple of `split_align`, at most
    # `split_budget` extra channels per input. Chosen by measurement (#24, MiniLM-QA, 2-core Xeon): held-out logits
    # SQNR 21 -> 31 dB, FP32's span kept on 65-67 % -> 85-87 % of the held-out questions; 16 / 16 keeps as many
    # answers as the static card's 64 / 64 for less (the unsplit card's latency x 1.04-1.07 fbgemm, 1.10-1.11 oneDNN
    # on the bert-base shape; bench/README.md). Artifacts made before it read back as None.
    split: float | None = SPLIT_RATIO
    split_align: int = 16
    split_budget: int = 16

    def __post_init__(self):
        if self.engine != "auto" and self.engine not in ENGINES:
            raise ValueError(f"engine must be 'auto' or one of {', '.join(ENGINES)}; got {self.engine!r}")
        keep = self.keep_fp32
        if isinstance(keep, str):
            keep = keep.split(",")
        keep = tuple(dict.fromkeys(k.strip() for k in keep if k and k.strip()))
        object.__setattr__(self, "keep_fp32", keep)  # frozen: normalise once, here

    @classmethod
    def from_manifest(cls, d: dict) -> "QuantConfig":
        """The config recorded in an artifact manifest (fields this version does not know are ignored)."""
        known = {k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}}
        return cls(**{"split": None, **known})  # a manifest without "split" was written before the split

    def for_recipe(self, per_channel: bool, keep_fp32=()) -> "QuantConfig":
        """This config for a dynamic recipe of that weight granularity and those kept layers. The split goes with
        the card's own granularity only: the other is the seed's recipe (per-tensor) or plain per-channel."""
        return dataclasses.replace(self, per_channel=per_channel, keep_fp32=tuple(keep_fp32),
                                   split=self.split if per_channel == self.per_channel else None)

    @property
    def recipe(self) -> str:
        """What the card shows: 'dynamic, per-channel weights' (+ layers in FP32)."""
        kept = f", {len(self.keep_fp32)} Linear in FP32" if self.keep_fp32 else ""
        split = ", outlier channels split" if self.split is not None else ""
        weights = "dynamic, per-channel weights" if self.per_channel else "dynamic, per-tensor weights (the seed's)"
        return weights + split + kept

    def __str__(self) -> str:
        emb = "Linear + Embedding" if self.embeddings else "Linear only"
        parts = [emb, "per-channel weights" if self.per_channel else "per-tensor weights", f"engine={self.engine}"]
        if self.split is not None:
            parts.append(f"outlier channels split at {self.split:g}x (K to {self.split_align}, "
                         f"<= {self.split_budget} extra)")
        if self.keep_fp32:
            parts.append(f"{len(self.keep_fp32)} Linear kept in FP32")
        if self.torchscript:
            parts.append("TorchScript")
        return f"dynamic INT8 ({', '.join(parts)})"


def is_quantized_linear(mod: nn.Module) -> bool:
    """A dynamically quantized Linear (torch.ao.nn.quantized.dynamic.Linear), not a float nn.Linear."""
    return type(mod).__name__ == "Linear" and not isinstance(mod, nn.Linear)


def linear_names(model: nn.Module) -> list[str]:
    """Module paths of every float nn.Linear in `model`, in definition order."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def compact_names(names: list[str]) -> str:
    """`bert.encoder.layer.{0..5}.attention.self.query, ..., qa_outputs` — a long name list, readable."""
    import re

    groups: dict[str, list[int]] = {}
    order: list[str] = []
    for n in names:
        m = re.search(r"\.(\d+)\.", n)
        key = n if m is None else n[:m.start()] + ".{}." + n[m.end():]
        if key not in groups:
            groups[key] = []
            order.append(key)
        if m is not None:
            groups[key].append(int(m.group(1)))
    out = []
    for key in order:
        idx = sorted(groups[key])
        if not idx:
            out.append(key)
        elif idx == list(range(idx[0], idx[-1] + 1)) and len(idx) > 1:
            out.append(key.replace("{}", "{%d..%d}" % (idx[0], idx[-1])))
        else:
            out.append(key.replace("{}", "{" + ",".join(map(str, idx)) + "}"))
    return ", ".join(out)


def resolve_keep_fp32(model: nn.Module, patterns) -> tuple[str, ...]:
    """Exact Linear names (in model order) for `patterns` (names or fnmatch globs such as `*.output.dense`).

    Raises ValueError naming what matched nothing and listing the valid names.
    """
    import fnmatch

    names = linear_names(model)
    patterns = QuantConfig(keep_fp32=patterns).keep_fp32
    chosen: set[str] = set()
    unknown = []
    for p in patterns:
        hits = [n for n in names if n == p or fnmatch.fnmatchcase(n, p)]
        if not hits:
            unknown.append(p)
        chosen.update(hits)
    if unknown:
        raise ValueError(f"--keep-fp32: no nn.Linear named {', '.join(map(repr, unknown))} in this model; "
                         f"valid names: {compact_names(names)}")
    return tuple(n for n in names if n in chosen)


class QuantizationUnavailable(RuntimeError):
    """This torch cannot make dynamic INT8 (torch.ao.quantization is gone); the message says what to use."""


def _backend_quantize(model: nn.Module, embeddings: bool, per_channel: bool = False,
                      keep_fp32: tuple[str, ...] = ()) -> nn.Module:
    """The one call into PyTorch's quantization backend. Mutates and returns `model`.

    `keep_fp32` holds exact module names; a name mapped to None in the spec is left float.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notices
        try:
            from torch.ao.quantization import (
                default_dynamic_qconfig,
                float_qparams_weight_only_qconfig,
                per_channel_dynamic_qconfig,
                quantize_dynamic,
            )
        except ImportError as exc:
            raise QuantizationUnavailable(
                f"dynamic INT8 needs torch.ao.quantization.quantize_dynamic, which this torch ({torch.__version__}) "
                f"does not have ({exc}); its successors (torchao per-token INT8, PT2E dynamic and static) are "
                "measured in bench/README.md") from None

        spec: dict = {nn.Linear: per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig}
        if embeddings:
            spec[nn.Embedding] = float_qparams_weight_only_qconfig
        for name in keep_fp32:
            spec[name] = None
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)


def quantize(model: nn.Module, config: QuantConfig | None = None, splits: "Plans | None" = None) -> nn.Module:
    """Return a new, dynamically INT8-quantized copy of `model` (the input is not changed).

    Every nn.Linear is quantized except those `config.keep_fp32` names (an
    unknown name raises ValueError listing the valid ones). Uses the quantized
    engine currently set (see `use_engine`); weights are packed for that
    engine, so pick the engine first. `splits`: the outlier-channel plans
    (`static.dynamic_splits` for `config`; `ModelSet.splits`) the copy is split
    by before it is quantized, when `config.split` is set (an input read by a kept
    layer stays whole). This function does not calibrate: without `splits` the
    copy is not split.
    """
    config = config or QuantConfig()
    keep = resolve_keep_fp32(model, config.keep_fp32)
    if config.engine != "auto":
        use_engine(config.engine)
    # an input read by a kept layer stays whole: the kept layer keeps FP32's shape (the model card's snippet loads it)
    src = apply_splits(model, splits, keep) if config.split is not None and splits else copy.deepcopy(model)
    qmodel = _backend_quantize(src, config.embeddings, config.per_channel, keep)
    return qmodel.eval()


def quantize_per_token(model: nn.Module, keep_fp32=()) -> nn.Module:
    """A new copy of `model` with torchao's dynamic INT8: int8 weights per output channel, an activation scale per
    token, computed at each call (Int8DynamicActivationInt8WeightConfig). `keep_fp32`: Linear paths left float.
    Eager; torch.compile it to run it as measured. Its state dict loads with `torch.load(weights_only=True)`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchao's import notices
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        m = copy.deepcopy(model).eval()
        kept = set(keep_fp32)
        quantize_(m, Int8DynamicActivationInt8WeightConfig(),
                  filter_fn=lambda mod, fqn: isinstance(mod, nn.Linear) and fqn not in kept)
    return m


def count_quantized(model: nn.Module) -> dict[str, int]:
    """How many layers of each kind are float vs quantized (for structural tests / reports)."""
    counts = {"linear_fp32": 0, "linear_int8": 0, "embedding_fp32": 0, "embedding_int8": 0}
    for mod in model.modules():
        name = type(mod).__module__ + "." + type(mod).__name__
        quantized = ".quantized." in name or ".ao.nn." in name
        weight = getattr(mod, "weight", None)
        if isinstance(mod, nn.Linear) and type(weight) not in (torch.Tensor, nn.Parameter):
            counts["linear_int8"] += 1  # a float module holding a quantized tensor subclass (torchao)
        elif isinstance(mod, nn.Linear) and not quantized:
            counts["linear_fp32"] += 1
        elif type(mod).__name__ == "Linear" and quantized:
            counts["linear_int8"] += 1
        elif isinstance(mod, nn.Embedding) and not quantized:
            counts["embedding_fp32"] += 1
        elif type(mod).__name__ == "Embedding" and quantized:
            counts["embedding_int8"] += 1
    return counts


# --------------------------------------------------------------------------- TorchScript


class _QAOutput:
    """The two fields of a QA model output that decoding reads."""

    __slots__ = ("start_logits", "end_logits")

    def __init__(self, start_logits, end_logits):
        self.start_logits, self.end_logits = start_logits, end_logits


class TracedQA(nn.Module):
    """A traced + frozen QA model called like the original: `m(**inputs).start_logits`."""

    def __init__(self, traced, input_names: tuple[str, ...]):
        super().__init__()
        self.traced = traced
        self.input_names = input_names

    def forward(self, **inputs):
        start, end = self.traced(*(inputs[k] for k in self.input_names))
        return _QAOutput(start, end)


class _Positional(nn.Module):
    def __init__(self, model, input_names):
        super().__init__()
        self.model, self.input_names = model, input_names

    def forward(self, *args):
        out = self.model(**dict(zip(self.input_names, args)), return_dict=True)
        return out.start_logits, out.end_logits


def trace_or_eager(model: nn.Module, probes: list[dict[str, torch.Tensor]]) -> tuple[nn.Module, str | None]:
    """(traced model, None), or (`model` itself, why tracing failed): an untraceable model runs eagerly."""
    if not (hasattr(torch.jit, "trace") and hasattr(torch.jit, "freeze")):  # deprecated; gone in some future torch
        return model, f"torch.jit.trace is not in this torch ({torch.__version__})"
    try:
        return trace(model, probes), None
    except Exception as exc:
        return model, f"{type(exc).__name__}: {str(exc)[:120]}"


def trace(model: nn.Module, probes: list[dict[str, torch.Tensor]]) -> TracedQA:
    """TorchScript-trace and freeze `model` (not changed) on `probes[0]`; check every probe.

    Tracing removes Python and dispatch overhead between the many small ops
    around the int8 GEMMs (15-25% of bert-base INT8 latency on a 2-core CPU).
    Each probe (use different lengths and batch sizes) must give exactly the
    eager model's logits, or this raises: a trace that specialised on a shape
    is refused, never used.
    """
    names = tuple(probes[0])
    wrapped = _Positional(model, names).eval()
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # TracerWarnings, TorchScript deprecation notices
        traced = torch.jit.trace(wrapped, tuple(probes[0][k] for k in names), strict=False, check_trace=False)
        traced = torch.jit.freeze(traced.eval())
    result = TracedQA(traced, names).eval()
    with torch.inference_mode():
        for p in probes:
            want = model(**p)
            got = result(**p)
            for a, b in ((want.start_logits, got.start_logits), (want.end_logits, got.end_logits)):
                if a.shape != b.shape or not torch.allclose(a, b, atol=1e-4, rtol=1e-4):
                    raise RuntimeError(f"traced model differs from eager on input shape {tuple(a.shape)}")
    return result


# --------------------------------------------------------------------------- engines


def available_engines() -> list[str]:
    supported = set(torch.backends.quantized.supported_engines)
    return [e for e in ENGINES if e in supported]


def use_engine(name: str) -> str:
    if name not in available_engines():
        raise ValueError(f"quantized engine {name!r} is not supported by this torch build; "
                         f"choose one of {', '.join(available_engines())}")
    torch.backends.quantized.engine = name
    return name


@dataclass
class EngineChoice:
    engine: str
    how: str  # "measured", "requested", "only one available"
    median_ms: dict[str, float] = field(default_factory=dict)  # per engine, probe layer pair

    def describe(self) -> str:
        if not self.median_ms:
            return f"{self.engine} ({self.how})"
        parts = ", ".join(f"{k} {v:.2f} ms" for k, v in sorted(self.median_ms.items(), key=lambda kv: kv[1]))
        return f"{self.engine} (measured: {parts})"


def _candidate_engines() -> list[str]:
    engines = available_engines()
    # qnnpack is the ARM engine: on x86 it is several times slower for this and
    # prints a reduce_range warning from C++, so it is not a candidate there.
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        engines = [e for e in engines if e != "qnnpack"]
    return engines


def choose_engine(requested: str = "auto", hidden: int = 768, intermediate: int = 3072,
                  tokens: int = 160, rounds: int = 5) -> EngineChoice:
    """Pick the quantized engine (and set it). "auto" measures each candidate once.

    The probe is one BERT feed-forward block (hidden -> intermediate -> hidden) at
    `tokens` tokens, dynamically quantized under each engine and timed in
    interleaved rounds; the median wins. It costs well under a second.
    """
    if requested != "auto":
        return EngineChoice(use_engine(requested), "requested")
    engines = _candidate_engines()
    if len(engines) == 1:
        return EngineChoice(use_engine(engines[0]), "only one available")
    torch.manual_seed(0)
    probe = nn.Sequential(nn.Linear(hidden, intermediate), nn.GELU(), nn.Linear(intermediate, hidden)).eval()
    x = torch.randn(1, tokens, hidden)
    packed = {}
    for e in engines:
        torch.backends.quantized.engine = e
        packed[e] = _backend_quantize(copy.deepcopy(probe), embeddings=False)
    samples: dict[str, list[float]] = {e: [] for e in engines}
    with torch.inference_mode():
        for r in range(rounds):
            for e in engines[r % len(engines):] + engines[: r % len(engines)]:  # rotate order
                torch.backends.quantized.engine = e
                packed[e](x)  # warm-up for this engine in this round
                t0 = time.perf_counter()
                packed[e](x)
                samples[e].append((time.perf_counter() - t0) * 1e3)
    med = {e: statistics.median(s) for e, s in samples.items()}
    best = min(med, key=med.get)
    return EngineChoice(use_engine(best), "measured", med)
