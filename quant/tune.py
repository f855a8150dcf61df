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
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .compare import run_windows
from .evaluate import Example, score
from .inputs import InputError
from .qa import best_span
from .quantize import QuantConfig, trace
from .size import state_dict_mib
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


def _noise_ratio(ref: torch.Tensor, test: torch.Tensor) -> float:
    ref, test = ref.double(), test.double()
    s = float((ref ** 2).sum())
    return float(((ref - test) ** 2).sum()) / s if s > 0 else 0.0


def _db(ratio: float) -> float:
    return math.inf if ratio <= 0 else -10.0 * math.log10(ratio)


def tune(comparator, examples: list[Example], target_agreement: float, *, rank_by: str = "logits",
         max_keep: int | None = None, runs: int = 10,
         progress: Callable[[str, int, int], None] | None = None) -> tuple[TuneReport, nn.Module]:
    """Rank, then keep layers in FP32 one at a time until agreement >= target (or `max_keep` layers are kept,
    or none is left). Returns (report, final INT8 model)."""
    import copy

    if rank_by not in RANKINGS:
        raise ValueError(f"rank_by must be one of {', '.join(RANKINGS)}")
    if not 0 < target_agreement <= 100:
        raise ValueError(f"the target agreement is a percentage in (0, 100]; got {target_agreement}")
    fp32, int8 = comparator.fp32_eager, comparator.int8_eager
    if fp32 is None:
        raise ValueError(f"tune needs the FP32 model: {comparator.fp32_reason}")
    progress = progress or (lambda what, i, n: None)
    # one tokenization per question, shared by every step
    encs, kept_examples, skipped = [], [], []
    for ex in examples:
        try:
            encs.append(comparator.encode_checked(ex.context, ex.question))
            kept_examples.append(ex)
        except InputError as exc:
            skipped.append(f"{ex.qid}: {exc}")
    if not encs:
        raise ValueError("no question could be run: " + "; ".join(skipped[:3]))
    examples = kept_examples
    with torch.inference_mode():
        ref = [run_windows(fp32, e.inputs) for e in encs]
    ref_spans = [best_span(s.numpy(), e_.numpy(), e.offsets, e.context_mask, word_ids=e.word_ids)
                 for (s, e_), e in zip(ref, encs)]
    lengths = [int(e.inputs["attention_mask"].sum(-1).max()) for e in encs]
    med_i = sorted(range(len(encs)), key=lambda i: lengths[i])[len(encs) // 2]
    timing_input = encs[med_i].inputs
    fmods, qmods = dict(fp32.named_modules()), dict(int8.named_modules())
    names = [n for n, m in fmods.items() if isinstance(m, nn.Linear) and n in qmods
             and not isinstance(qmods[n], nn.Linear)]  # quantized in the INT8 model
    already = list(comparator.quant.keep_fp32)

    # ---- ranking
    rank_set = list(range(min(RANK_QUESTIONS, len(encs))))
    scores: dict[str, float] = {}
    if rank_by == "logits":
        work = copy.deepcopy(fp32)
        for k, n in enumerate(names):
            old = _swap(work, n, qmods[n])
            try:
                with torch.inference_mode():
                    ratios = []
                    for i in rank_set:
                        s, e_ = run_windows(work, encs[i].inputs)
                        ratios.append(_noise_ratio(torch.cat([ref[i][0], ref[i][1]]), torch.cat([s, e_])))
            finally:
                _swap(work, n, old)
            scores[n] = _db(statistics.fmean(ratios))
            progress("ranking", k + 1, len(names))
        del work
    else:
        from .inspect import Inspector

        ins = Inspector(fp32, int8, comparator.tokenizer, max_length=comparator.max_length)
        per: dict[str, list[float]] = {n: [] for n in names}
        for k, i in enumerate(rank_set):
            rep = ins.inspect(examples[i].context, examples[i].question, enc=encs[i])
            for x in rep.layers:
                if x.name in per and x.sqnr_db is not None and math.isfinite(x.sqnr_db):
                    per[x.name].append(x.sqnr_db)
            progress("ranking", k + 1, len(rank_set))
        scores = {n: statistics.fmean(v) if v else math.inf for n, v in per.items()}
    ranking = sorted(scores.items(), key=lambda kv: kv[1])

    # ---- steps: keep the most sensitive layers in FP32, one more each step
    work = copy.deepcopy(int8)
    probes = comparator.probes()

    def evaluate_step(keep: list[str]) -> Step:
        agree, em, f1, sq = 0, [], [], []
        with torch.inference_mode():
            for i, e in enumerate(encs):
                s, e_ = run_windows(work, e.inputs)
                sp = best_span(s.numpy(), e_.numpy(), e.offsets, e.context_mask, word_ids=e.word_ids)
                agree += (sp.start, sp.end) == (ref_spans[i].start, ref_spans[i].end)
                a, b = score(examples[i], examples[i].context[sp.start:sp.end])
                em.append(a)
                f1.append(b)
                sq.append(_noise_ratio(torch.cat([ref[i][0], ref[i][1]]), torch.cat([s, e_])))
        runnable = work
        if comparator.quant.torchscript:
            try:
                runnable = trace(work, probes)
            except Exception:
                pass  # time it eagerly, as the app would run it
        stats, _ = measure(lambda: runnable(**timing_input), runs=runs, warmup=2)
        n = len(encs)
        return Step(already + list(keep), state_dict_mib(work), stats.median, 100.0 * agree / n,
                    100.0 * sum(em) / n, 100.0 * sum(f1) / n, _db(statistics.fmean(sq)))

    steps = [evaluate_step([])]
    progress("steps", 1, len(ranking) + 1)
    keep: list[str] = []
    for k, (n, _) in enumerate(ranking):
        if steps[-1].agreement >= target_agreement or (max_keep is not None and len(keep) >= max_keep):
            break
        _swap(work, n, fmods[n])  # this layer back to FP32 (shared, read-only)
        keep.append(n)
        steps.append(evaluate_step(keep))
        progress("steps", k + 2, len(ranking) + 1)
    # FP32 reference on the same set, for the table
    f_em = [score(ex, ex.context[sp.start:sp.end]) for ex, sp in zip(examples, ref_spans)]
    f_stats, _ = measure(lambda: fp32(**timing_input), runs=runs, warmup=2)
    fp32_info = {"exact_match": 100.0 * sum(a for a, _ in f_em) / len(f_em),
                 "f1": 100.0 * sum(b for _, b in f_em) / len(f_em),
                 "median_ms": f_stats.median, "size_mib": state_dict_mib(fp32)}
    report = TuneReport(comparator.model_id, rank_by, target_agreement, len(encs), ranking, steps,
                        steps[-1].agreement >= target_agreement, fp32_info, lengths[med_i], skipped)
    return report, work


def run_tune(model_id: str, examples: list[Example], target_agreement: float, *, rank_by: str = "logits",
             max_keep: int | None = None, threads=None, quant: QuantConfig | None = None, out=None,
             progress_bar: bool = True) -> TuneReport:
    """CLI entry: build the comparator, tune with a progress bar on stderr, optionally save the artifact."""
    from .compare import Comparator
    from .quantize import save_artifact

    comp = Comparator(model_id, threads=threads, quant=quant, variants=("fp32-cpu", "int8-cpu"),
                      log=lambda m: print(m, file=sys.stderr, flush=True))
    bars: dict[str, Any] = {}

    def progress(what: str, i: int, n: int) -> None:
        if not progress_bar:
            return
        from tqdm import tqdm

        if what not in bars:
            for b in bars.values():
                b.close()
            bars[what] = tqdm(total=n, desc=f"tune: {what}", unit="layer" if what == "ranking" else "step",
                              file=sys.stderr, leave=False)
        bars[what].n = i
        bars[what].refresh()

    try:
        report, model = tune(comp, examples, target_agreement, rank_by=rank_by, max_keep=max_keep, progress=progress)
    finally:
        for b in bars.values():
            b.close()
    if out is not None:
        qc = QuantConfig(**{**comp.quant.__dict__, "keep_fp32": tuple(report.steps[-1].keep_fp32)})
        save_artifact(model, comp.tokenizer, out, qc, comp.engine, comp.model_id)
        report.out = str(out)
    return report
