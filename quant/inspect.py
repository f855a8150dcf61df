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
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .metrics import json_db, noise_ratio, outlier_ratio, ratio_db, sqnr_db  # noqa: F401 (re-exported)
from .qa import Encoded, rank_spans, window_probs
from .quantize import is_quantized_linear, linear_names
from .smooth import unsplit_view, unsplit_weight

# Module path suffix -> short kind, for every extractive-QA family transformers has (checked in order: the more
# specific suffixes first). BERT, RoBERTa, XLM-RoBERTa, ELECTRA: attention.self.query ... output.dense;
# DistilBERT: q_lin ... ffn.lin2; ALBERT (one layer shared by every depth): attention.query ... ffn_output;
# DeBERTa-v2: query_proj ... plus the relative-position projections; MobileBERT: bottlenecks and stacked FFNs.
KINDS = (
    (r"(attention\.self\.query(_proj)?|attention\.query|attention\.q_lin)$", "query"),
    (r"(attention\.self\.key(_proj)?|attention\.key|attention\.k_lin)$", "key"),
    (r"(attention\.self\.value(_proj)?|attention\.value|attention\.v_lin)$", "value"),
    (r"attention\.self\.pos_query_proj$", "position query"),
    (r"attention\.self\.pos_key_proj$", "position key"),
    (r"(attention\.output\.dense|attention\.out_lin|albert_layers\.\d+\.attention\.dense)$", "attention output"),
    (r"ffn\.(\d+)\.intermediate\.dense$", "FFN{} in"),
    (r"ffn\.(\d+)\.output\.dense$", "FFN{} out"),
    (r"bottleneck\.input\.dense$", "bottleneck in"),
    (r"bottleneck\.attention\.dense$", "bottleneck attention"),
    (r"output\.bottleneck\.dense$", "bottleneck out"),
    (r"(intermediate\.dense|ffn\.lin1|albert_layers\.\d+\.ffn)$", "FFN in"),
    (r"(output\.dense|ffn\.lin2|ffn_output)$", "FFN out"),
    (r"(embeddings_project|embedding_hidden_mapping_in|embedding_transformation)$", "embedding projection"),
    (r"qa_outputs$", "QA head"),
)
HEATMAP_KINDS = ("query", "key", "value", "attention output", "FFN in", "FFN out")
_LAYER = re.compile(r"\.(?:layer|albert_layers)\.(\d+)\.")


def layer_kind(name: str) -> tuple[str, int | None]:
    """('FFN in', 3) for 'bert.encoder.layer.3.intermediate.dense'; ('query', 0) for DistilBERT's
    'distilbert.transformer.layer.0.attention.q_lin'; ALBERT's shared layer is layer 0 of its group."""
    m = _LAYER.search(name)
    layer = int(m.group(1)) if m else None
    for pattern, kind in KINDS:
        k = re.search(pattern, name)
        if k:
            return (kind.format(int(k.group(1)) + 1) if "{}" in kind else kind), layer
    return "linear", layer


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
        d["sqnr_db"] = json_db(self.sqnr_db) if self.quantized else None
        d["weight_sqnr_db"] = json_db(self.weight_sqnr_db) if self.quantized else None
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
            "hidden_sqnr_db": [json_db(v) for v in self.hidden_sqnr_db],
            "logits_sqnr_db": {k: json_db(v) for k, v in self.logits_sqnr_db.items()},
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
        fmods = dict(fp32.named_modules())
        # A split INT8 model's widened layers, seen as functions of FP32's input with FP32's output (quant.smooth)
        self.views = {n: unsplit_view(int8, n, fmods[n]) or self.twins[n] for n in self.names}
        self._weights: dict[str, float | None] | None = None

    def weight_sqnr(self) -> dict[str, float | None]:
        """FP32 weight vs dequantized INT8 weight, per Linear (cached: weights do not change)."""
        if self._weights is None:
            fmods = dict(self.fp32.named_modules())
            out = {}
            with torch.inference_mode():
                for n in self.names:
                    q = self.twins[n]
                    out[n] = (sqnr_db(fmods[n].weight, unsplit_weight(q.weight().dequantize(), fmods[n]))
                              if is_quantized_linear(q) else None)
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
            twin, view = self.twins[name], self.views[name]

            def hook(_mod, inputs, output):
                x = inputs[0]
                xr = _real_tokens(x, m)
                st = {"absmax": float(xr.abs().max()) if xr.numel() else 0.0, "outlier": outlier_ratio(xr)}
                if is_quantized_linear(twin):
                    st["sqnr"] = sqnr_db(_real_tokens(output, m), _real_tokens(view(x), m))
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
