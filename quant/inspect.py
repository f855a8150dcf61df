"""Where INT8 loses precision, for one (passage, question): layer by layer, by depth, at the logits.

Ideas and vocabulary from PyTorch's Numeric Suite (float and quantized modules
matched by their path), ONNX Runtime's QDQ debugger (local error — a quantized
op on the *float* input — kept apart from propagated error — the quantized
model end to end) and TensorFlow Lite's quantization debugger (per-layer
metrics, then selective quantization). Our own small version, over forward
hooks on the *eager* models (never the traced one); hooks are always removed.

Per quantized nn.Linear (by module path):
  sqnr_db          local SQNR: the INT8 twin run on the FP32 layer's own input vs the FP32 output
                   — the error this layer adds by itself (weight rounding + per-tensor
                   activation quantization on the fly)
  weight_sqnr_db   FP32 weight vs the dequantized INT8 weight
  input_absmax     max |x| of the layer's input (the dynamic activation scale is absmax / 127)
  outlier_ratio    max |x| / 99.9th percentile of |x|: large when a few channels dominate, which
                   is what per-tensor activation quantization handles worst
Per encoder layer: propagated SQNR of its output hidden state (INT8 model vs FP32 model).
At the logits: SQNR of start / end logits; per passage token the FP32 and INT8
p(start), p(end); each variant's best and runner-up answers; and the margin —
how close INT8 came to changing the answer.

SQNR = 10 log10(sum(ref^2) / sum((ref - test)^2)) dB over the real tokens
(padding excluded). Identical tensors have infinite SQNR: Python gets math.inf,
JSON gets null — the same null as a layer kept in FP32, which adds no noise.

Cost for one question: one FP32 forward with hooks, each INT8 Linear once
more on its FP32 input, one INT8 forward; weight statistics once per model.
"""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .qa import Encoded, rank_spans, window_probs
from .quantize import is_quantized_linear, linear_names

KINDS = {  # module path suffix -> short kind (BERT naming)
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attention output",
    "intermediate.dense": "FFN in",
    "output.dense": "FFN out",
    "qa_outputs": "QA head",
}
HEATMAP_KINDS = ("query", "key", "value", "attention output", "FFN in", "FFN out")


# ------------------------------------------------------------------------------------------- metrics


def noise_ratio(ref: torch.Tensor, test: torch.Tensor) -> float:
    """sum((ref - test)^2) / sum(ref^2): noise power relative to the signal (0 identical, inf if `ref` is 0)."""
    ref, test = ref.detach().double(), test.detach().double()
    noise = float(((ref - test) ** 2).sum())
    if noise == 0.0:
        return 0.0
    signal = float((ref ** 2).sum())
    return noise / signal if signal else math.inf


def ratio_db(ratio: float) -> float:
    """A noise ratio in dB of SQNR: math.inf for no noise, -math.inf for no signal."""
    if ratio == 0.0:
        return math.inf
    return -math.inf if ratio == math.inf else -10.0 * math.log10(ratio)


def sqnr_db(ref: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB; math.inf when identical, -math.inf when `ref` is all zero."""
    return ratio_db(noise_ratio(ref, test))


def outlier_ratio(x: torch.Tensor, q: float = 0.999) -> float:
    """max |x| / q-quantile of |x| (1.0 for a flat distribution; tens for a few dominant channels)."""
    a = x.detach().abs().flatten().float()
    if a.numel() == 0:
        return 1.0
    k = max(1, int(math.ceil((1.0 - q) * a.numel())))  # the k-th largest is the q-quantile
    top = torch.topk(a, k).values
    qv = float(top[-1])
    mx = float(top[0])
    return mx / qv if qv > 0 else (1.0 if mx == 0 else math.inf)


def _json_db(v: float | None) -> float | None:
    """dB for JSON: +inf (no noise) -> null; -inf (no signal) -> -999."""
    if v is None or v == math.inf:
        return None
    if v == -math.inf:
        return -999.0
    return round(v, 2)


def layer_kind(name: str) -> tuple[str, int | None]:
    """('FFN in', 3) for 'bert.encoder.layer.3.intermediate.dense'."""
    m = re.search(r"\.layer\.(\d+)\.", name)
    for suffix, kind in KINDS.items():
        if name.endswith(suffix):
            return kind, int(m.group(1)) if m else None
    return "linear", int(m.group(1)) if m else None


# ------------------------------------------------------------------------------------------- report


@dataclass
class LayerStat:
    name: str
    kind: str
    layer: int | None  # encoder layer index (None for the QA head)
    quantized: bool
    sqnr_db: float | None  # local; None when kept in FP32
    weight_sqnr_db: float | None
    input_absmax: float
    outlier_ratio: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sqnr_db"] = _json_db(self.sqnr_db) if self.quantized else None
        d["weight_sqnr_db"] = _json_db(self.weight_sqnr_db) if self.quantized else None
        d["input_absmax"] = round(self.input_absmax, 4)
        d["outlier_ratio"] = round(self.outlier_ratio, 2) if math.isfinite(self.outlier_ratio) else None
        return d


@dataclass
class Report:
    model: str
    layers: list[LayerStat]
    hidden_sqnr_db: list[float]
    logits_sqnr_db: dict[str, float]
    tokens: list[dict[str, Any]]
    answers: dict[str, dict[str, Any]]
    margin: dict[str, Any]
    keep_fp32: list[str]
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def worst(self, n: int = 5) -> list[LayerStat]:
        """The `n` quantized layers with the lowest local SQNR (most precision lost)."""
        q = [x for x in self.layers if x.quantized and x.sqnr_db is not None]
        return sorted(q, key=lambda x: x.sqnr_db)[:n]

    def sentence(self) -> str:
        return margin_sentence(self.margin)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "layers": [x.to_dict() for x in self.layers],
            "hidden_sqnr_db": [_json_db(v) for v in self.hidden_sqnr_db],
            "logits_sqnr_db": {k: _json_db(v) for k, v in self.logits_sqnr_db.items()},
            "tokens": self.tokens,
            "answers": self.answers,
            "margin": self.margin,
            "keep_fp32": self.keep_fp32,
            "summary": self.sentence(),
            "seconds": round(self.seconds, 4),
            "notes": self.notes,
        }

    def table(self, n: int = 8) -> str:
        """The CLI's text view: the least precise layers, depth, logits, margin."""
        lines = [f"model: {self.model}" + (f" | kept in FP32: {', '.join(self.keep_fp32)}" if self.keep_fp32 else ""),
                 "", "least precise INT8 layers (local SQNR: the layer alone, on the FP32 input):",
                 f"  {'layer':<50} {'SQNR dB':>8} {'weight dB':>10} {'max|x|':>9} {'outlier':>8}"]
        for x in self.worst(n):
            lines.append(f"  {x.name:<50} {x.sqnr_db:8.1f} {x.weight_sqnr_db:10.1f} {x.input_absmax:9.2f} "
                         f"{x.outlier_ratio:8.1f}")
        hs = ", ".join("inf" if v == math.inf else f"{v:.1f}" for v in self.hidden_sqnr_db)
        lines += ["", f"propagated SQNR by encoder layer (dB): {hs}",
                  "logits SQNR (dB): start " + _fmt_db(self.logits_sqnr_db["start"]) +
                  ", end " + _fmt_db(self.logits_sqnr_db["end"]), "", self.sentence()]
        lines += [f"note: {n_}" for n_ in self.notes]
        return "\n".join(lines)


def _fmt_db(v: float) -> str:
    return "inf" if v == math.inf else f"{v:.1f}"


def _quote(s: str) -> str:
    s = " ".join(s.split())
    return f"“{s[:60]}{'…' if len(s) > 60 else ''}”" if s else "no answer"


def margin_sentence(m: dict[str, Any]) -> str:
    """One sentence on how close INT8 came to changing the answer."""
    if m["kept"]:
        other = m["int8_runner_up"]
        return (f"INT8 kept the answer {_quote(m['fp32_answer'])} with a margin of {m['score_gap']:.3f} "
                f"(its score {m['int8_score_of_fp32_answer']:.3f} vs {other['score']:.3f} for the runner-up "
                f"{_quote(other['answer'])}).")
    return (f"INT8 changed the answer from {_quote(m['fp32_answer'])} to {_quote(m['int8_answer'])} "
            f"(INT8 scores {m['int8_best_score']:.3f} vs {m['int8_score_of_fp32_answer']:.3f} for the FP32 answer).")


# ------------------------------------------------------------------------------------------- inspector


def _real_tokens(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(W, T, C) activations -> (N, C) over real (non-padding) tokens; other shapes flattened per row."""
    if x.dim() == 3 and x.shape[:2] == mask.shape:
        return x[mask]
    return x.reshape(-1, x.shape[-1])


class Inspector:
    """FP32 vs INT8 for one model pair. Weight statistics are computed once; `inspect()` per question."""

    def __init__(self, fp32: nn.Module, int8: nn.Module, tokenizer, *, model_id: str = "", max_length: int = 384,
                 keep_fp32=()):
        self.fp32, self.int8, self.tokenizer = fp32.eval(), int8.eval(), tokenizer
        self.model_id, self.max_length = model_id, max_length
        self.keep_fp32 = list(keep_fp32)
        qmods = dict(int8.named_modules())
        self.names = linear_names(fp32)
        self.twins = {n: qmods[n] for n in self.names if n in qmods}
        missing = [n for n in self.names if n not in self.twins]
        if missing:
            raise ValueError(f"the INT8 model has no module for {', '.join(missing[:3])}: not a quantized copy")
        self._weights: dict[str, float | None] | None = None

    def weight_sqnr(self) -> dict[str, float | None]:
        """FP32 weight vs dequantized INT8 weight, per Linear (cached: weights do not change)."""
        if self._weights is None:
            fmods = dict(self.fp32.named_modules())
            out = {}
            with torch.inference_mode():
                for n in self.names:
                    q = self.twins[n]
                    out[n] = sqnr_db(fmods[n].weight, q.weight().dequantize()) if is_quantized_linear(q) else None
            self._weights = out
        return self._weights

    def inspect(self, context: str, question: str, enc: Encoded | None = None) -> Report:
        """The layer report for one (passage, question). Raises InputError for bad input."""
        from .qa import encode

        t0 = time.perf_counter()
        enc = enc or encode(self.tokenizer, question, context, max_length=self.max_length)
        ids = enc.inputs["input_ids"]
        m = enc.inputs.get("attention_mask", torch.ones_like(ids)).bool()  # (W, T): real tokens, not padding
        fmods = dict(self.fp32.named_modules())
        stats: dict[str, dict[str, float]] = {}
        wsq = self.weight_sqnr()

        def hook_for(name: str):
            twin = self.twins[name]

            def hook(_mod, inputs, output):
                x = inputs[0]
                xr = _real_tokens(x, m)
                st = {"absmax": float(xr.abs().max()) if xr.numel() else 0.0, "outlier": outlier_ratio(xr)}
                if is_quantized_linear(twin):
                    st["sqnr"] = sqnr_db(_real_tokens(output, m), _real_tokens(twin(x), m))
                stats[name] = st

            return hook

        handles = [fmods[n].register_forward_hook(hook_for(n)) for n in self.names]
        try:
            with torch.inference_mode():
                f_out = self.fp32(**enc.inputs, output_hidden_states=True)
        finally:
            for h in handles:
                h.remove()
        with torch.inference_mode():
            q_out = self.int8(**enc.inputs, output_hidden_states=True)
        hidden = [sqnr_db(_real_tokens(a, m), _real_tokens(b, m))
                  for a, b in zip(f_out.hidden_states[1:], q_out.hidden_states[1:])]
        logits = {"start": sqnr_db(f_out.start_logits[m], q_out.start_logits[m]),
                  "end": sqnr_db(f_out.end_logits[m], q_out.end_logits[m])}
        layers = []
        for n in self.names:
            kind, idx = layer_kind(n)
            q = is_quantized_linear(self.twins[n])
            st = stats.get(n, {"absmax": 0.0, "outlier": 1.0})
            layers.append(LayerStat(n, kind, idx, q, st.get("sqnr") if q else None, wsq.get(n) if q else None,
                                    st["absmax"], st["outlier"]))
        fs, fe = f_out.start_logits.float().numpy(), f_out.end_logits.float().numpy()
        qs, qe = q_out.start_logits.float().numpy(), q_out.end_logits.float().numpy()
        tokens = self._tokens(enc, context, (fs, fe), (qs, qe))
        answers, margin = self._answers(enc, context, (fs, fe), (qs, qe))
        notes = []
        if enc.n_windows > 1:
            notes.append(f"{enc.n_windows} windows: token probabilities are taken from the window where each "
                         "token has the most context on both sides")
        return Report(self.model_id, layers, hidden, logits, tokens, answers, margin, self.keep_fp32,
                      time.perf_counter() - t0, notes)

    # -------------------------------------------------------------- logits-level views

    def _tokens(self, enc: Encoded, context: str, f, q) -> list[dict[str, Any]]:
        """Per passage token (each once, from the window where it has the most context): text, offsets, probs."""
        probs = []
        for w in range(enc.n_windows):
            fps, fpe = window_probs(f[0][w], f[1][w], enc.context_mask[w])
            qps, qpe = window_probs(q[0][w], q[1][w], enc.context_mask[w])
            probs.append((fps, fpe, qps, qpe))
        best: dict[tuple[int, int], tuple[float, int, int]] = {}
        for w in range(enc.n_windows):
            idx = np.flatnonzero(enc.context_mask[w])
            if not len(idx):
                continue
            lo, hi = idx[0], idx[-1]
            for t in idx:
                key = (int(enc.offsets[w, t, 0]), int(enc.offsets[w, t, 1]))
                ctx = min(t - lo, hi - t)  # context on both sides, in tokens
                if key not in best or ctx > best[key][0]:
                    best[key] = (ctx, w, int(t))
        out = []
        for (s, e), (_, w, t) in sorted(best.items()):
            fps, fpe, qps, qpe = probs[w]
            out.append({"text": context[s:e], "start": s, "end": e,
                        "p_start": {"fp32": round(float(fps[t]), 6), "int8": round(float(qps[t]), 6)},
                        "p_end": {"fp32": round(float(fpe[t]), 6), "int8": round(float(qpe[t]), 6)}})
        return out

    @staticmethod
    def _answers(enc: Encoded, context: str, f, q) -> tuple[dict, dict]:
        def ranked(lg, k):
            return rank_spans(lg[0], lg[1], enc.offsets, enc.context_mask, word_ids=enc.word_ids, k=k)

        def as_dict(c):
            return {"answer": context[c.start:c.end], "start": c.start, "end": c.end, "score": round(c.score, 6)}

        f_rank, q_rank = ranked(f, 2), ranked(q, 50)
        answers = {"fp32": {"best": as_dict(f_rank[0]), "runner_up": as_dict(f_rank[1]) if len(f_rank) > 1 else None},
                   "int8": {"best": as_dict(q_rank[0]), "runner_up": as_dict(q_rank[1]) if len(q_rank) > 1 else None}}
        target = (f_rank[0].start, f_rank[0].end)
        mine = next((c for c in q_rank if (c.start, c.end) == target), None)
        s_keep = mine.score if mine else 0.0  # not among INT8's 50 best: below the 50th
        others = [c for c in q_rank if (c.start, c.end) != target]
        other = others[0] if others else None
        s_other = other.score if other else 0.0
        kept = (q_rank[0].start, q_rank[0].end) == target
        margin = {
            "kept": kept,
            "fp32_answer": context[target[0]:target[1]],
            "int8_answer": context[q_rank[0].start:q_rank[0].end],
            "int8_best_score": round(q_rank[0].score, 6),
            "int8_score_of_fp32_answer": round(s_keep, 6),
            "int8_runner_up": as_dict(other) if other else {"answer": "", "start": 0, "end": 0, "score": 0.0},
            # > 0: INT8 still prefers the FP32 answer by this much probability; < 0: it changed the answer
            "score_gap": round(s_keep - s_other, 6),
            "log_ratio": round(math.log(s_keep / s_other), 4) if s_keep > 0 and s_other > 0 else None,
        }
        return answers, margin


# ------------------------------------------------------------------------------------------- mixed models


def least_precise(report: Report, k: int) -> list[str]:
    """Names of the `k` quantized layers with the lowest local SQNR in `report`."""
    return [x.name for x in report.worst(k)]


class MixedModels:
    """INT8 models with some Linear layers kept in FP32, built once per set of layers.

    At most `capacity` models are held (least recently used dropped first): each
    costs about the INT8 model's memory plus the kept layers' FP32 weights.
    Building one shares nothing mutable with the source models (quantize() copies).
    """

    def __init__(self, build: Callable[[tuple[str, ...]], Any], capacity: int = 3):
        self.build, self.capacity = build, capacity
        self._cache: OrderedDict[tuple[str, ...], Any] = OrderedDict()
        self.builds = 0

    def get(self, keep: list[str] | tuple[str, ...]) -> Any:
        key = tuple(sorted(keep))
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
