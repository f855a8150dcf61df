"""Accuracy: exact match / F1 per variant on a SQuAD v1.1 or v2.0 JSON file.

Scoring follows the official SQuAD v2.0 evaluation script: answers are
normalized (lower case, punctuation and the articles a/an/the removed, white
space collapsed); EM and F1 take the max over gold answers; an unanswerable
question (no gold answers / `is_impossible`) has the single gold answer "",
so predicting "" scores 1 and anything else 0. Scores are reported in percent.

Also measured, for every variant against FP32 · CPU: agreement (the share of
questions where it returns exactly the FP32 span), mean |score difference|, and
the questions where they differ; and questions per second of model time (each
question is tokenized once and shared by all variants). A changed answer is a
*near tie* when FP32's own logits score it within `NEAR_TIE` (5 %) of FP32's
answer: FP32 all but chose it itself, and any small perturbation (not only
INT8's) can tip it. They are counted, not excused: agreement stays the share of
identical spans. The built-in set,
`BUILTIN` (assets/realqa.json), is hand-written real text: 240 questions over
24 passages, 72 of them unanswerable.
"""

from __future__ import annotations

import collections
import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .realqa import BUILTIN, paragraphs  # the real-text set (BUILTIN is part of this module's API) and its split

MAX_FILE_BYTES = 64 * 2**20
NEAR_TIE = 0.05  # a changed answer FP32 scored within this fraction of its own is a near tie (see the docstring)


class SquadFormatError(ValueError):
    """The file is not SQuAD-format JSON; the message says what is wrong and where."""


@dataclass(frozen=True)
class Example:
    qid: str
    context: str
    question: str
    answers: tuple[str, ...]  # empty for an unanswerable question

    @property
    def impossible(self) -> bool:
        return not self.answers


# ---------------------------------------------------------------- official metric


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra white space (official script)."""

    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text, flags=re.UNICODE)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def get_tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def compute_exact(a_gold: str, a_pred: str) -> int:
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold: str, a_pred: str) -> float:
    gold_toks, pred_toks = get_tokens(a_gold), get_tokens(a_pred)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        # if either is no-answer, F1 is 1 if they agree, 0 otherwise
        return float(gold_toks == pred_toks)
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_toks)
    recall = num_same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def score(example: Example, prediction: str) -> tuple[int, float]:
    golds = [a for a in example.answers if normalize_answer(a)] or [""]
    return max(compute_exact(g, prediction) for g in golds), max(compute_f1(g, prediction) for g in golds)


# ---------------------------------------------------------------- loading


def _where(i: int, j: int | None = None, k: int | None = None) -> str:
    w = f"data[{i}]"
    if j is not None:
        w += f".paragraphs[{j}]"
    if k is not None:
        w += f".qas[{k}]"
    return w


def parse_squad(obj: Any, limit: int | None = None, source: str = "the file") -> list[Example]:
    """Validate SQuAD-format JSON and flatten it to examples (first `limit` questions)."""
    if not isinstance(obj, dict) or "data" not in obj:
        raise SquadFormatError(f"{source}: expected a JSON object with a 'data' list (SQuAD format)")
    if not isinstance(obj["data"], list):
        raise SquadFormatError(f"{source}: 'data' must be a list")
    out: list[Example] = []
    for i, article in enumerate(obj["data"]):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise SquadFormatError(f"{source}: {_where(i)} needs a 'paragraphs' list")
        for j, para in enumerate(article["paragraphs"]):
            if not isinstance(para, dict):
                raise SquadFormatError(f"{source}: {_where(i, j)} must be an object")
            ctx = para.get("context")
            if not isinstance(ctx, str) or not ctx.strip():
                raise SquadFormatError(f"{source}: {_where(i, j)}.context is missing or not text")
            if not isinstance(para.get("qas"), list):
                raise SquadFormatError(f"{source}: {_where(i, j)} needs a 'qas' list")
            for k, qa in enumerate(para["qas"]):
                w = _where(i, j, k)
                if not isinstance(qa, dict):
                    raise SquadFormatError(f"{source}: {w} must be an object")
                q = qa.get("question")
                if not isinstance(q, str) or not q.strip():
                    raise SquadFormatError(f"{source}: {w}.question is missing or not text")
                answers = qa.get("answers", [])
                if not isinstance(answers, list):
                    raise SquadFormatError(f"{source}: {w}.answers must be a list")
                texts = []
                for n, a in enumerate(answers):
                    if not isinstance(a, dict) or not isinstance(a.get("text"), str):
                        raise SquadFormatError(f"{source}: {w}.answers[{n}] needs a 'text' string")
                    _check_answer_start(a, ctx, f"{source}: {w}.answers[{n}]")
                    texts.append(a["text"])
                impossible = bool(qa.get("is_impossible", False))
                if not texts and not impossible and "is_impossible" not in qa:
                    raise SquadFormatError(f"{source}: {w} has no answers and is not marked is_impossible")
                out.append(Example(str(qa.get("id", f"{i}-{j}-{k}")), ctx, q, () if impossible else tuple(texts)))
                if limit is not None and len(out) >= limit:
                    return out
    if not out:
        raise SquadFormatError(f"{source}: no questions found")
    return out


def _check_answer_start(answer: dict, context: str, where: str) -> None:
    """An answer's `answer_start`, when given, must be a character offset into its passage where its text is."""
    if "answer_start" not in answer:
        return
    start, text = answer["answer_start"], answer["text"]
    if isinstance(start, bool) or not isinstance(start, int):
        raise SquadFormatError(f"{where}.answer_start must be a whole number, not {start!r}")
    if not 0 <= start < max(len(context), 1) or start + len(text) > len(context):
        raise SquadFormatError(f"{where}.answer_start {start} (with its {len(text)}-character text) is outside its "
                               f"passage ({len(context)} characters)")
    if context[start:start + len(text)] != text:
        raise SquadFormatError(f"{where}: the text {text[:40]!r} is not at answer_start {start} (the passage has "
                               f"{context[start:start + len(text)][:40]!r} there)")


def load_squad(path: str | Path, limit: int | None = None) -> list[Example]:
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SquadFormatError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if size > MAX_FILE_BYTES:
        raise SquadFormatError(f"{path.name} is {size / 2**20:.1f} MiB; the limit is {MAX_FILE_BYTES // 2**20} MiB")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise SquadFormatError(f"{path.name} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise SquadFormatError(f"{path.name} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from exc
    except RecursionError:  # "[[[[...]]]]": Python's JSON parser recurses once per level
        raise SquadFormatError(f"{path.name} is nested too deeply to be a SQuAD file") from None
    return parse_squad(obj, limit=limit, source=path.name)


def builtin_split(part: str, limit: int | None = None) -> list[Example]:
    """The built-in set in two halves by passage (quant.realqa): "calibration" (the even passages, 12 of 24:
    static INT8 may be calibrated and recipes tuned on them) and "held-out" (the odd ones: never calibrated or
    tuned on)."""
    keep = paragraphs(part)
    return parse_squad({"data": [{"paragraphs": keep}]}, limit=limit, source=f"{BUILTIN.name} ({part})")


# ---------------------------------------------------------------- running


@dataclass
class VariantScore:
    variant: str
    exact_match: float  # percent
    f1: float  # percent
    n: int
    seconds: float  # model time (one forward per question, tokenization excluded)
    has_ans: dict[str, float] | None = None  # EM/F1 on answerable questions (v2 files)
    no_ans: dict[str, float] | None = None  # EM/F1 on unanswerable questions

    @property
    def qps(self) -> float:
        return self.n / self.seconds if self.seconds else 0.0


@dataclass
class Disagreement:
    qid: str
    question: str
    snippet: str
    fp32: str
    int8: str
    gold: str
    fp32_gap_pct: float | None = None  # how far below its own answer FP32 scored this one, in percent (100: not
    # among its 50 best); under NEAR_TIE x 100: a near tie


@dataclass
class Agreement:
    """How often a variant gives exactly FP32's span, on the questions both answered."""

    variant: str
    n: int
    same: int
    mean_abs_score_diff: float
    disagreements: list[Disagreement] = field(default_factory=list)

    @property
    def percent(self) -> float:
        return 100.0 * self.same / self.n if self.n else 0.0

    @property
    def near_ties(self) -> int:
        """Changed answers that FP32 scored within NEAR_TIE of its own (see the module docstring)."""
        return sum(d.fp32_gap_pct is not None and d.fp32_gap_pct < 100 * NEAR_TIE for d in self.disagreements)

    def to_dict(self) -> dict[str, Any]:
        return {"agreement": round(self.percent, 2), "n": self.n,
                "mean_abs_score_diff": round(self.mean_abs_score_diff, 5),
                "changed": len(self.disagreements), "near_ties": self.near_ties,
                "near_tie_within_pct": 100 * NEAR_TIE,
                "disagreements": [d.__dict__ for d in self.disagreements]}


@dataclass
class EvalReport:
    model: str
    results: list[VariantScore]
    agreement: float | None  # percent of questions where INT8 (dynamic) span == FP32 span
    mean_abs_score_diff: float | None
    disagreements: list[Disagreement] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # question ids that could not be run, with reason
    unavailable: dict[str, str] = field(default_factory=dict)
    agreements: dict[str, Agreement] = field(default_factory=dict)  # every variant but FP32 · CPU
    threads: int | None = None  # the thread count every forward ran with
    threads_why: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "results": [{"variant": r.variant, "exact_match": round(r.exact_match, 2), "f1": round(r.f1, 2),
                         "n": r.n, "questions_per_s": round(r.qps, 2),
                         "agreement_with_fp32": (round(self.agreements[r.variant].percent, 2)
                                                 if r.variant in self.agreements else None),
                         **({"has_ans": r.has_ans} if r.has_ans else {}),
                         **({"no_ans": r.no_ans} if r.no_ans else {})} for r in self.results],
            "agreement": None if self.agreement is None else round(self.agreement, 2),
            "mean_abs_score_diff": None if self.mean_abs_score_diff is None else round(self.mean_abs_score_diff, 5),
            "disagreements": [d.__dict__ for d in self.disagreements],
            "agreement_by_variant": {v: a.to_dict() for v, a in self.agreements.items()},
            "skipped": self.skipped,
            "unavailable": self.unavailable,
            "threads": self.threads,
            "threads_why": self.threads_why,
        }

    def table(self) -> str:
        split = any(r.has_ans for r in self.results)
        head = (f"{'variant':<16} {'EM %':>7} {'F1 %':>7} {'n':>6} {'q/s':>8} {'FP32 span %':>12} "
                f"{'changed (near ties)':>20} {'mean |dscore|':>14}")
        if split:
            head += f"   {'answerable EM / F1 (n)':>24}   {'unanswerable EM / F1 (n)':>26}"
        lines = [f"model: {self.model}", "", head, "-" * len(head)]
        for r in self.results:
            a = self.agreements.get(r.variant)
            changed = f"{len(a.disagreements)} ({a.near_ties})" if a else ""
            agree = (f"{a.percent:12.2f} {changed:>20} {a.mean_abs_score_diff:14.4f}" if a
                     else f"{'(reference)':>12} {'':>20} {'':>14}")
            line = f"{r.variant:<16} {r.exact_match:7.2f} {r.f1:7.2f} {r.n:6d} {r.qps:8.2f} {agree}"
            if split and r.has_ans:
                h, z = r.has_ans, r.no_ans
                has = "{:.2f} / {:.2f} ({})".format(h["exact_match"], h["f1"], h["n"])
                no = "{:.2f} / {:.2f} ({})".format(z["exact_match"], z["f1"], z["n"])
                line += f"   {has:>24}   {no:>26}"
            lines.append(line)
        for v, why in self.unavailable.items():
            lines.append(f"{v:<16} unavailable: {why}")
        if self.agreement is not None:
            lines += ["", f"INT8 gives exactly the FP32 span on {self.agreement:.2f}% of questions; "
                          f"mean |score difference| {self.mean_abs_score_diff:.4f}"]
        if any(a.disagreements for a in self.agreements.values()):
            lines += [f"A near tie: a changed answer that FP32's own logits score within {100 * NEAR_TIE:g} % of "
                      "FP32's answer (FP32 all but chose it); still counted as changed."]
        for v, a in self.agreements.items():
            if a.disagreements:
                lines += ["", f"{v}: disagreements with FP32 ({len(a.disagreements)}; first 10):"]
                for d in a.disagreements[:10]:
                    gap = "" if d.fp32_gap_pct is None else (", not among FP32's 50 best" if d.fp32_gap_pct >= 100
                                                             else f", FP32 {d.fp32_gap_pct:.1f} % below")
                    lines.append(f"  {d.qid}: {d.question!r}: FP32 {d.fp32!r} vs {v} {d.int8!r} (gold {d.gold!r}{gap})")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} question(s): {'; '.join(self.skipped[:3])}")
        return "\n".join(lines)


def _snippet(context: str, start: int, end: int, width: int = 80) -> str:
    a, b = max(0, start - width), min(len(context), end + width)
    return ("…" if a else "") + context[a:b] + ("…" if b < len(context) else "")


def evaluate(comparator, examples: list[Example], progress: Callable[[int, int], None] | None = None,
             check: Callable[[], None] | None = None) -> EvalReport:
    """Score every runnable variant of `comparator` on `examples`. check(): called before each question (the
    line's safe point: it may pause this work for others' turns, or stop it)."""
    from .compare import predict
    from .inputs import InputError
    from .qa import score_gap

    avail = comparator.availability()
    variants = [v for v, why in avail.items() if why is None]
    tally = _Tally(variants)
    for n, ex in enumerate(examples, 1):
        if check is not None:
            check()
        try:
            enc = comparator.encode_checked(ex.context, ex.question)
            logits: dict = {}
            preds = predict(comparator, ex.context, ex.question, variants=variants, enc=enc, logits=logits)
            ref = preds.get("fp32-cpu")
            changed = [v for v, p in preds.items() if ref is not None and v != "fp32-cpu"
                       and (p.start, p.end) != (ref.start, ref.end)]
            gaps = {v: 100 * score_gap(*logits["fp32-cpu"], enc.offsets, enc.context_mask, preds[v].start,
                                       preds[v].end, word_ids=enc.word_ids) for v in changed}
            tally.add(ex, preds, gaps)
        except InputError as exc:  # the per-passage bound (characters, windows), a question too long
            tally.skipped.append(f"{ex.qid}: {exc}")
        if progress:
            progress(n, len(examples))
    agreements = tally.agreements()
    int8 = agreements.get("int8-cpu")
    return EvalReport(comparator.model_id, tally.scores(), int8.percent if int8 and int8.n else None,
                      int8.mean_abs_score_diff if int8 and int8.n else None, int8.disagreements if int8 else [],
                      tally.skipped, {v: why for v, why in avail.items() if why is not None}, agreements)


class _Tally:
    """Per variant, question by question: EM, F1, model seconds; and against FP32: same span, score difference."""

    def __init__(self, variants: list[str]):
        self.variants = variants
        self.em: dict[str, list[int]] = {v: [] for v in variants}
        self.f1: dict[str, list[float]] = {v: [] for v in variants}
        self.secs = {v: 0.0 for v in variants}
        self.kinds: list[bool] = []  # unanswerable?
        self.others = [v for v in variants if v != "fp32-cpu"] if "fp32-cpu" in variants else []
        self.same = {v: 0 for v in self.others}
        self.diffs: dict[str, list[float]] = {v: [] for v in self.others}
        self.dis: dict[str, list[Disagreement]] = {v: [] for v in self.others}
        self.skipped: list[str] = []

    def add(self, ex: Example, preds: dict, gaps: dict[str, float] | None = None) -> None:
        """gaps: per variant whose span differs from FP32's, how far below its own answer FP32 scored it (%)."""
        self.kinds.append(ex.impossible)
        for v, p in preds.items():
            self.secs[v] += p.latency.median / 1e3
            e, f = score(ex, p.answer)
            self.em[v].append(e)
            self.f1[v].append(f)
        a = preds.get("fp32-cpu")
        for v in self.others:
            b = preds[v]
            self.diffs[v].append(abs(a.score - b.score))
            if (a.start, a.end) == (b.start, b.end):
                self.same[v] += 1
            else:
                self.dis[v].append(Disagreement(ex.qid, ex.question, _snippet(ex.context, min(a.start, b.start),
                                                                              max(a.end, b.end)),
                                                a.answer, b.answer, ex.answers[0] if ex.answers else "",
                                                None if v not in (gaps or {}) else round(gaps[v], 2)))

    def agreements(self) -> dict[str, Agreement]:
        return {v: Agreement(v, len(d), self.same[v], sum(d) / len(d) if d else 0.0, self.dis[v])
                for v, d in self.diffs.items()}

    def scores(self) -> list[VariantScore]:
        def pct(xs):
            return 100.0 * sum(xs) / len(xs) if xs else 0.0

        def subset(v, want_impossible):
            idx = [i for i, k in enumerate(self.kinds) if k == want_impossible]
            return {"exact_match": round(pct([self.em[v][i] for i in idx]), 2),
                    "f1": round(pct([self.f1[v][i] for i in idx]), 2), "n": len(idx)}

        mixed = any(self.kinds) and not all(self.kinds)  # a v2.0 file with both kinds: report each
        return [VariantScore(v, pct(self.em[v]), pct(self.f1[v]), len(self.em[v]), self.secs[v],
                             subset(v, False) if mixed else None, subset(v, True) if mixed else None)
                for v in self.variants]


def run_eval(model_id: str, examples: list[Example], *, threads=None, quant=None, static: bool = False,
             progress: bool = False) -> EvalReport:
    """CLI entry: build the comparator, evaluate with a progress bar on stderr."""
    import sys

    from .variants import DEFAULT_VARIANTS, STATIC_VARIANT, ModelSet

    comp = ModelSet(model_id, threads=threads, quant=quant, variants=DEFAULT_VARIANTS + ((STATIC_VARIANT,) if static else ()),
                      log=lambda m: print(m, file=sys.stderr, flush=True))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(examples), desc="eval", unit="q", file=sys.stderr, leave=False)
    try:
        return evaluate(comp, examples, progress=(lambda n, total: bar.update(1)) if bar else None)
    finally:
        if bar:
            bar.close()
