"""Accuracy-aware selective quantization: keep the most sensitive Linear layers in FP32 until INT8 agrees.

The loop of TensorFlow Lite's selective quantization and Intel Neural
Compressor's tuning, small: rank every nn.Linear by sensitivity, then keep
the most sensitive in FP32 one at a time until INT8 gives the FP32 answer on
`target` % of the questions (or nothing is left), reporting each step.

Sensitivity (`rank_by`):
  "logits" (default)  the noise a layer causes *at the logits* when it alone is INT8: mean over the
                      ranking questions of sum((l_fp32 - l_int8)^2) / sum(l_fp32^2), reported as the
                      SQNR in dB (lower = more sensitive). It measures what the user sees, including
                      how the layer's error grows through the layers above it; and noise powers of
                      independent layers roughly add, so removing the largest contributors first is
                      the greedy order for the total. Cost: one forward per layer and question.
  "local"             mean local SQNR (the layer alone on its FP32 input; see inspect.py). One
                      forward per question, but blind to propagation.
Agreement, as everywhere in QuantQA: INT8's span == FP32's span (character offsets).
"""

from __future__ import annotations

import math
import statistics
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
from torch import nn

from .compare import run_windows
from .evaluate import Example, score
from .inputs import InputError
from .metrics import noise_ratio, ratio_db
from .qa import best_span
from .quantize import QuantConfig, is_quantized_linear, linear_names, quantize, trace_or_eager
from .size import state_dict_mib
from .smooth import unsplit_view
from .timing import measure

RANKINGS = ("logits", "local")
RANK_QUESTIONS = 32  # questions used to rank the layers (the steps use all of them)


@dataclass
class Step:
    keep_fp32: list[str]
    size_mib: float
    median_ms: float
    agreement: float  # percent
    exact_match: float
    f1: float
    logits_sqnr_db: float  # mean over questions

    def to_dict(self) -> dict[str, Any]:
        return {"keep_fp32": self.keep_fp32, "size_mib": round(self.size_mib, 2), "median_ms": round(self.median_ms, 3),
                "agreement": round(self.agreement, 2), "exact_match": round(self.exact_match, 2),
                "f1": round(self.f1, 2), "logits_sqnr_db": round(self.logits_sqnr_db, 2)}


@dataclass
class TuneReport:
    model: str
    rank_by: str
    target_agreement: float
    n: int
    ranking: list[tuple[str, float]]
    steps: list[Step]
    target_met: bool
    fp32: dict[str, float]  # exact_match, f1, median_ms, size_mib of FP32 on the same set
    seq_len: int  # tokens of the question used for latency (the set's median length)
    skipped: list[str] = field(default_factory=list)
    out: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "rank_by": self.rank_by, "target_agreement": self.target_agreement, "n": self.n,
                "ranking": [{"name": n, "score": round(s, 3)} for n, s in self.ranking],
                "steps": [s.to_dict() for s in self.steps], "target_met": self.target_met,
                "fp32": {k: round(v, 3) for k, v in self.fp32.items()}, "latency_seq_len": self.seq_len,
                "skipped": self.skipped, "out": self.out}

    def table(self) -> str:
        f = self.fp32
        lines = [f"model: {self.model} | {self.n} questions | ranking by {self.rank_by} | target agreement "
                 f"{self.target_agreement:g}% | latency at {self.seq_len} tokens",
                 f"FP32: EM {f['exact_match']:.2f}, F1 {f['f1']:.2f}, {f['size_mib']:.2f} MiB, {f['median_ms']:.2f} ms",
                 "", f"{'kept':>4}  {'last layer kept in FP32':<46} {'MiB':>8} {'ms':>8} {'agree %':>8} "
                     f"{'EM':>7} {'F1':>7} {'SQNR dB':>8}"]
        for s in self.steps:
            last = s.keep_fp32[-1] if s.keep_fp32 else "(none: every Linear INT8)"
            lines.append(f"{len(s.keep_fp32):>4}  {last:<46} {s.size_mib:8.2f} {s.median_ms:8.2f} {s.agreement:8.2f} "
                         f"{s.exact_match:7.2f} {s.f1:7.2f} {s.logits_sqnr_db:8.2f}")
        lines.append("")
        lines.append(("target met" if self.target_met else "target NOT met") +
                     f": {self.steps[-1].agreement:.2f}% agreement with {len(self.steps[-1].keep_fp32)} layer(s) in FP32")
        if self.out:
            lines.append(f"wrote {self.out}")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} question(s): {'; '.join(self.skipped[:3])}")
        return "\n".join(lines)


def _swap(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put `new` at module path `name` in `model`; return what was there."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child)
    setattr(parent, child, new)
    return old


class QuestionSet:
    """Questions tokenized once, with FP32's logits and answers: what each candidate model is scored against.

    Passages over the per-passage bound are left out (listed in `skipped`).
    """

    def __init__(self, comparator, examples: list[Example]):
        if comparator.fp32_eager is None:
            raise ValueError(f"this needs the FP32 model: {comparator.fp32_reason}")
        if comparator.int8_eager is None:
            raise ValueError(f"this needs dynamic INT8: {comparator.int8_reason}")
        self.check: Callable[..., None] = lambda expect_s=None: None  # the line's safe point (per question)
        self.examples, self.encs, self.skipped = [], [], []
        for ex in examples:
            try:
                self.encs.append(comparator.encode_checked(ex.context, ex.question))
                self.examples.append(ex)
            except InputError as exc:
                self.skipped.append(f"{ex.qid}: {exc}")
        if not self.encs:
            raise ValueError("no question could be run: " + "; ".join(self.skipped[:3]))
        with torch.inference_mode():
            ref = [run_windows(comparator.fp32_eager, e.inputs) for e in self.encs]  # (start, end) logits
        self.ref_flat = [self._flat(i, r) for i, r in enumerate(ref)]
        self.ref_spans = [self._span(i, r) for i, r in enumerate(ref)]
        self.lengths = [int(e.inputs["attention_mask"].sum(-1).max()) for e in self.encs]
        self.median_index = sorted(range(len(self.encs)), key=lambda i: self.lengths[i])[len(self.encs) // 2]

    def __len__(self) -> int:
        return len(self.encs)

    @property
    def timing_input(self) -> dict[str, torch.Tensor]:
        """The question of median length: where latency is measured."""
        return self.encs[self.median_index].inputs

    def _flat(self, i: int, logits) -> torch.Tensor:
        """Start and end logits of the real (non-padding) tokens of question i, as one vector."""
        mask = self.encs[i].inputs["attention_mask"].bool()
        return torch.cat([logits[0][mask], logits[1][mask]])

    def _span(self, i: int, logits):
        enc = self.encs[i]
        return best_span(logits[0].numpy(), logits[1].numpy(), enc.offsets, enc.context_mask, word_ids=enc.word_ids)

    def noise(self, model, indices=None) -> list[float]:
        """Per question, the logits' noise ratio vs FP32 (see inspect.noise_ratio)."""
        out = []
        with torch.inference_mode():
            for i in (indices or range(len(self))):
                self.check()
                out.append(noise_ratio(self.ref_flat[i], self._flat(i, run_windows(model, self.encs[i].inputs))))
        return out

    def score(self, model) -> dict[str, Any]:
        """Agreement with FP32 (same character span), EM and F1 (percent), and per-question noise ratios."""
        agree, em, f1, noise = 0, 0.0, 0.0, []
        with torch.inference_mode():
            for i, ex in enumerate(self.examples):
                self.check()
                logits = run_windows(model, self.encs[i].inputs)
                noise.append(noise_ratio(self.ref_flat[i], self._flat(i, logits)))
                sp, ref = self._span(i, logits), self.ref_spans[i]
                agree += (sp.start, sp.end) == (ref.start, ref.end)
                a, b = score(ex, ex.context[sp.start:sp.end])
                em, f1 = em + a, f1 + b
        n = len(self)
        return {"agreement": 100.0 * agree / n, "exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n, "noise": noise}


def rank_layers(comparator, qs: QuestionSet, rank_by: str = "logits",
                progress: Callable[[str, int, int], None] | None = None,
                questions: int = RANK_QUESTIONS) -> list[tuple[str, float]]:
    """The quantized Linear layers, most sensitive first: [(name, dB)] (see the module docstring)."""
    import copy

    progress = progress or (lambda what, i, n: None)
    fp32, int8 = comparator.fp32_eager, comparator.int8_eager
    qmods = dict(int8.named_modules())
    names = [n for n in linear_names(fp32) if is_quantized_linear(qmods.get(n))]  # quantized in the INT8 model
    rank_set = list(range(min(questions, len(qs))))
    scores: dict[str, float] = {}
    if rank_by == "logits":
        work = copy.deepcopy(fp32)
        fmods = dict(fp32.named_modules())
        for k, n in enumerate(names):
            old = _swap(work, n, unsplit_view(int8, n, fmods[n]) or qmods[n])  # a split layer, seen unsplit
            try:
                scores[n] = ratio_db(statistics.fmean(qs.noise(work, rank_set)))
            finally:
                _swap(work, n, old)
            progress("ranking", k + 1, len(names))
    else:
        from .inspect import Inspector

        ins = Inspector(fp32, int8, comparator.tokenizer, max_length=comparator.max_length)
        per: dict[str, list[float]] = {n: [] for n in names}
        for k, i in enumerate(rank_set):
            ex = qs.examples[i]
            for x in ins.inspect(ex.context, ex.question, enc=qs.encs[i]).layers:
                if x.name in per and x.sqnr_db is not None and math.isfinite(x.sqnr_db):
                    per[x.name].append(x.sqnr_db)
            progress("ranking", k + 1, len(rank_set))
        scores = {n: statistics.fmean(v) if v else math.inf for n, v in per.items()}
    return sorted(scores.items(), key=lambda kv: kv[1])


def tune(comparator, examples: list[Example], target_agreement: float, *, rank_by: str = "logits",
         max_keep: int | None = None, runs: int = 10,
         progress: Callable[[str, int, int], None] | None = None,
         qs: QuestionSet | None = None) -> tuple[TuneReport, nn.Module]:
    """Rank, then keep layers in FP32 one at a time until agreement >= target (or `max_keep` layers are kept,
    or none is left). Returns (report, final INT8 model)."""
    import copy

    if rank_by not in RANKINGS:
        raise ValueError(f"rank_by must be one of {', '.join(RANKINGS)}")
    if not 0 < target_agreement <= 100:
        raise ValueError(f"the target agreement is a percentage in (0, 100]; got {target_agreement}")
    progress = progress or (lambda what, i, n: None)
    qs = qs or QuestionSet(comparator, examples)  # one tokenization and one FP32 pass per question, for every step
    fp32, int8 = comparator.fp32_eager, comparator.int8_eager
    splits = getattr(comparator, "splits", None) if comparator.quant.split is not None else None
    fmods = dict(fp32.named_modules())
    already = list(comparator.quant.keep_fp32)
    ranking = rank_layers(comparator, qs, rank_by, progress)

    # ---- steps: keep the most sensitive layers in FP32, one more each step
    work = copy.deepcopy(int8)
    probes = comparator.probes()

    def evaluate_step(keep: list[str]) -> Step:
        r = qs.score(work)
        runnable = trace_or_eager(work, probes)[0] if comparator.quant.torchscript else work  # as the app runs it
        stats, _ = measure(lambda: runnable(**qs.timing_input), runs=runs, warmup=2)
        return Step(already + list(keep), state_dict_mib(work), stats.median, r["agreement"], r["exact_match"],
                    r["f1"], ratio_db(statistics.fmean(r["noise"])))

    steps = [evaluate_step([])]
    progress("steps", 1, len(ranking) + 1)
    keep: list[str] = []
    for k, (n, _) in enumerate(ranking):
        if steps[-1].agreement >= target_agreement or (max_keep is not None and len(keep) >= max_keep):
            break
        keep.append(n)
        if splits:  # a split card: rebuilt as it ships (an input read by a kept layer is not split; quantize())
            work = quantize(fp32, replace(comparator.quant, keep_fp32=tuple(already + keep)), splits)
        else:
            _swap(work, n, fmods[n])  # this layer back to FP32 (shared, read-only)
        steps.append(evaluate_step(keep))
        progress("steps", k + 2, len(ranking) + 1)
    # FP32 reference on the same set, for the table
    f = qs.score(fp32)
    f_stats, _ = measure(lambda: fp32(**qs.timing_input), runs=runs, warmup=2)
    fp32_info = {"exact_match": f["exact_match"], "f1": f["f1"], "median_ms": f_stats.median,
                 "size_mib": state_dict_mib(fp32)}
    report = TuneReport(comparator.model_id, rank_by, target_agreement, len(qs), ranking, steps,
                        steps[-1].agreement >= target_agreement, fp32_info, qs.lengths[qs.median_index], qs.skipped)
    return report, work
