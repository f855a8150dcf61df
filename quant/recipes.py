"""Which INT8 should I ship? Every recipe side by side on a QA set, and the fastest that keeps the answers.

Recipes (`RECIPES`), each measured alone and with the K most sensitive Linear
layers kept in FP32, K found per recipe over tune.py's ranking (at most
`max_keep`): for the recipe `tune` just stepped through, the first K of its steps
that meets the target; for the others, a K that meets it found by doubling then
bisection (agreement is noisy in K, so this K can be a few layers more than the
smallest: `tune`'s one-at-a-time steps find that one for a dynamic recipe):

  dynamic-per-tensor   torch.ao quantize_dynamic, one weight scale per tensor (the seed's recipe), traced
  dynamic-per-channel  the same, one weight scale per output channel, traced
  static               PT2E X86 Inductor quantizer, calibrated activation scales, AOTInductor package (static.py)
  dynamic-per-token    torchao Int8DynamicActivationInt8WeightConfig: an activation scale per token, torch.compile
  static-realtext      static, calibrated on the real-text set's calibration half too (static.recipe_setup)
  static-smooth        static-realtext with SmoothQuant folded into the LayerNorms and weights
  static-mixed         static-realtext with the FFN output Linear layers' activations quantized at each call
  static-split         static-realtext with outlier input channels split (smooth.split_outliers)
  static-gptq          static-split with GPTQ-rounded weights (gptq.py): the static card's

`DEFAULT_RECIPES` (the first four) run unless others are asked for: each static variant costs a compilation
(bench/README.md, issue #24, for what each keeps on real text).

For every row: agreement with FP32 (same character span), EM / F1, logits SQNR
(mean noise over the questions, in dB), size (MiB of the tensors it runs on) and
latency (median ms on the set's question of median length, every row timed
interleaved with FP32). The K search scores each candidate in its fast-to-build
form (static: the eager quantized graph; per-token: eager); the rows themselves
are scored and timed as shipped (compiled). `chosen` is the fastest row that
meets the target; rows no other row beats on both agreement and latency are
the Pareto front.
"""

from __future__ import annotations

import statistics
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .evaluate import Example
from .inputs import first_line
from .artifact import DEFAULT_RECIPES, RECIPES
from .metrics import ratio_db
from .quantize import QuantConfig, quantize, quantize_per_token, trace_or_eager
from .line import Abandoned, Cancelled, Overran
from .size import state_dict_mib
from .static import build_static, convert, is_static, recipe_setup
from .timing import measure_interleaved
from .tune import QuestionSet, rank_layers, tune

LINE_STOPS = (Abandoned, Cancelled, Overran)  # the line stopped the work: never "this recipe is unavailable"

EXPORT_S = 30.0  # about how long static INT8's export + calibration takes on bert-base (2 cores); cannot pause
COMPILE_S = 120.0  # ... and a compilation (static, max-autotune: ~106 s on bert-base; per-token: about a minute)
DESCRIPTIONS = {
    "dynamic-per-tensor": "dynamic INT8, per-tensor weight scales (the seed's recipe; torch.ao, traced)",
    "dynamic-per-channel": "dynamic INT8, per-channel weight scales (torch.ao, traced)",
    "static": "static INT8: calibrated activations, FP32 SDPA attention (PT2E, AOTInductor)",
    "dynamic-per-token": "dynamic INT8, per-token activation scales (torchao, torch.compile)",
    "static-realtext": "static INT8 calibrated on real text too (the set's calibration half)",
    "static-smooth": "static INT8 (real-text calibration) with SmoothQuant",
    "static-mixed": "static INT8 (real-text calibration), FFN outputs with dynamic activations",
    "static-split": "static INT8 (real-text calibration), outlier input channels split",
    "static-gptq": "static INT8 (real-text calibration), outlier input channels split, GPTQ-rounded weights",
    "fp32": "FP32, the reference",
}


@dataclass
class RecipeResult:
    recipe: str
    keep_fp32: list[str]
    agreement: float  # percent of questions with FP32's span
    exact_match: float
    f1: float
    sqnr_db: float  # logits, mean noise over the questions
    size_mib: float
    median_ms: float = 0.0
    meets: bool = False
    pareto: bool = False
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "keep_fp32": self.keep_fp32, "agreement": round(self.agreement, 2),
                "exact_match": round(self.exact_match, 2), "f1": round(self.f1, 2),
                "sqnr_db": None if self.sqnr_db == float("inf") else round(self.sqnr_db, 2),
                "size_mib": round(self.size_mib, 2), "median_ms": round(self.median_ms, 3),
                "meets_target": self.meets, "pareto": self.pareto, "note": self.note}


@dataclass
class RecipeReport:
    target_agreement: float
    n: int
    seq_len: int
    rows: list[RecipeResult]
    chosen: RecipeResult | None
    unavailable: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"recipes": [r.to_dict() for r in self.rows], "chosen": None if self.chosen is None else
                {"recipe": self.chosen.recipe, "keep_fp32": self.chosen.keep_fp32}, "recipes_unavailable": self.unavailable,
                "target_agreement": self.target_agreement, "n": self.n, "seq_len": self.seq_len}

    def table(self) -> str:
        lines = [f"recipes on {self.n} questions | target agreement {self.target_agreement:g}% | latency at "
                 f"{self.seq_len} tokens, interleaved", "",
                 f"{'recipe':<20} {'kept':>4} {'agree %':>8} {'EM':>6} {'F1':>6} {'SQNR dB':>8} {'MiB':>8} {'ms':>8}  "]
        for r in self.rows:
            mark = ("chosen" if r is self.chosen else "meets" if r.meets else "") + (" pareto" if r.pareto else "")
            sq = "inf" if r.sqnr_db == float("inf") else f"{r.sqnr_db:.1f}"
            lines.append(f"{r.recipe:<20} {len(r.keep_fp32):>4} {r.agreement:8.2f} {r.exact_match:6.2f} {r.f1:6.2f} "
                         f"{sq:>8} {r.size_mib:8.2f} {r.median_ms:8.2f}  {mark.strip()}")
        for r in self.rows:
            if r.note:
                lines.append(f"note: {r.recipe} ({len(r.keep_fp32)} kept): {r.note}")
        for k, why in self.unavailable.items():
            lines.append(f"{k}: unavailable here: {why}")
        lines.append("")
        lines.append(f"chosen: {self.chosen.recipe} with {len(self.chosen.keep_fp32)} layer(s) in FP32 — the fastest "
                     f"that meets {self.target_agreement:g}%" if self.chosen else
                     f"no recipe met {self.target_agreement:g}% (raise --max-keep or lower the target)")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------- builders


class _Builder:
    """One recipe: `scoring(keep)` a model quick to build for the K search; `final(keep)` -> (model as shipped,
    size MiB, note)."""

    def __init__(self, recipe: str, models, log: Callable[[str], None], check: Callable[..., None] | None = None):
        self.recipe, self.models, self.log, self.check = recipe, models, log, check or _no_check
        self.fp32, self.tok = models.fp32_eager, models.tokenizer

    def _dynamic(self, keep, per_channel: bool):
        return quantize(self.fp32, self.models.quant.for_recipe(per_channel, keep), self.models.splits)

    def scoring(self, keep):
        if self.recipe == "dynamic-per-tensor":
            return self._dynamic(keep, per_channel=False)
        if self.recipe == "dynamic-per-channel":
            return self._dynamic(keep, per_channel=True)
        if is_static(self.recipe):
            calib, options = recipe_setup(self.recipe, self.fp32)
            self.check(expect_s=EXPORT_S)  # export + calibration: cannot pause
            return convert(self.fp32, self.tok, max_length=self.models.max_length, keep_fp32=tuple(keep),
                           calibration=calib, options=options).model(self.tok.pad_token_id or 0)
        return self._per_token(keep)

    def _per_token(self, keep):
        return quantize_per_token(self.fp32, keep)

    def final(self, keep):
        if self.recipe in ("dynamic-per-tensor", "dynamic-per-channel"):
            eager = self._dynamic(keep, per_channel=self.recipe == "dynamic-per-channel")
            runnable, failed = trace_or_eager(eager, self.models.probes())
            return runnable, state_dict_mib(eager), f"TorchScript failed, eager: {failed}" if failed else ""
        if is_static(self.recipe):
            calib, options = recipe_setup(self.recipe, self.fp32)
            self.check(expect_s=COMPILE_S)  # a compilation cannot pause: the line is told how long it takes
            m = build_static(self.fp32, self.tok, max_length=self.models.max_length, keep_fp32=tuple(keep),
                             source_id=self.models.model_id, log=self.log, calibration=calib, options=options)
            return m, m.size_mib, ""
        eager = self._per_token(keep)
        size = state_dict_mib(eager)
        try:
            self.check(expect_s=COMPILE_S)
            compiled = torch.compile(eager, dynamic=True)
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torchao's tensor subclass and AOT autograd's cache notices
                compiled(**self.models.probes()[0])  # compile now (~1 min on MiniLM), not inside the timing
            return compiled, size, "torch.compile (dynamic shapes); compiling took a minute"
        except Exception as exc:  # no compiler, an inductor failure: eager, said so
            return eager, size, f"torch.compile failed ({type(exc).__name__}), eager"


def build_recipe(recipe: str, models, keep_fp32=(), log: Callable[[str], None] | None = None):
    """One recipe as shipped (traced / compiled), with these Linear layers in FP32: (model, size MiB, note)."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    return _Builder(recipe, models, log or (lambda m: None)).final(tuple(keep_fp32))


# ------------------------------------------------------------------------------------------- search


def _score(qs, model) -> dict[str, float]:
    r = qs.score(model)
    return {"agreement": r["agreement"], "exact_match": r["exact_match"], "f1": r["f1"],
            "sqnr_db": ratio_db(statistics.fmean(r["noise"]))}


def find_k(score_k: Callable[[int], dict], target: float, limit: int) -> tuple[int, dict]:
    """The smallest K in [1, limit] whose score meets `target` (doubling, then bisection; agreement is nearly
    monotone in K), or `limit` with its score when none does."""
    tried: dict[int, dict] = {}

    def at(k):
        if k not in tried:
            tried[k] = score_k(k)
        return tried[k]

    lo, hi = 0, 1
    while hi < limit and at(hi)["agreement"] < target:
        lo, hi = hi, min(2 * hi, limit)
    if at(hi)["agreement"] < target:
        return hi, at(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if at(mid)["agreement"] >= target:
            hi = mid
        else:
            lo = mid
    return hi, at(hi)


def _no_check(expect_s: float | None = None) -> None:
    pass


def compare_recipes(models, qs, ranking: list[tuple[str, float]], target: float, *, recipes=DEFAULT_RECIPES,
                    max_keep: int | None = None, runs: int = 10, log: Callable[[str], None] | None = None,
                    progress: Callable[[str, int, int], None] | None = None,
                    known_k: dict[str, int] | None = None, check: Callable[..., None] | None = None) -> RecipeReport:
    """Score and time every recipe alone and with its K; see the module docstring. `qs`: tune.QuestionSet.
    known_k: recipe -> K already found (tune's steps), used instead of a search. check(expect_s=None): the
    line's safe point, called between questions, builds and timed rounds (it may pause this work or stop it)."""
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        raise ValueError(f"unknown recipe(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    check = check or _no_check
    qs.check = check
    progress = progress or (lambda what, i, n: None)
    names = [n for n, _ in ranking]
    limit = len(names) if max_keep is None else min(max_keep, len(names))
    candidates, unavailable = _candidates(models, qs, names, target, recipes, limit, known_k or {},
                                          log or (lambda m: None), progress, check)
    rows, fns = _build_rows(models, qs, candidates, log or (lambda m: None), progress, check)
    fp32 = models.fp32_eager
    fns["fp32"] = (lambda: fp32(**qs.timing_input), None)
    timed = measure_interleaved(fns, runs=runs, warmup=2, on_step=lambda *_: check())
    for j, r in enumerate(rows):
        r.median_ms = timed[j][0].median if timed[j][0] else float("inf")
        r.meets = r.agreement >= target
    ref = _score(qs, fp32)
    rows.insert(0, RecipeResult("fp32", [], 100.0, ref["exact_match"], ref["f1"], float("inf"), state_dict_mib(fp32),
                                timed["fp32"][0].median, meets=True))
    mark_pareto(rows)
    return RecipeReport(target, len(qs), qs.lengths[qs.median_index], rows, choose(rows[1:]), unavailable)


def _candidates(models, qs, names, target, recipes, limit, known_k, log, progress, check):
    """(recipe, layers kept in FP32, score) for each recipe alone and with its K; and the recipes that cannot run
    here, with the reason."""
    candidates: list[tuple[str, list[str], dict]] = []
    unavailable: dict[str, str] = {}
    for i, recipe in enumerate(recipes):
        b = _Builder(recipe, models, log, check)
        try:
            alone = _score(qs, b.scoring(()))
        except Exception as exc:  # no torchao, no compiler, export failure: that recipe says why
            if isinstance(exc, LINE_STOPS):
                raise
            unavailable[recipe] = f"{type(exc).__name__}: {first_line(exc, 200)}"
            continue
        candidates.append((recipe, [], alone))
        if known_k.get(recipe):
            candidates.append((recipe, names[:known_k[recipe]], {}))
        elif alone["agreement"] < target and limit > 0:
            k, _ = find_k(lambda k: _score(qs, b.scoring(names[:k])), target, limit)
            candidates.append((recipe, names[:k], {}))
        progress("recipes", i + 1, len(recipes))
    return candidates, unavailable


def _build_rows(models, qs, candidates, log, progress, check):
    """Each candidate built as shipped and scored: (rows, timing closures by row index)."""
    rows, fns = [], {}
    for j, (recipe, keep, _) in enumerate(candidates):
        model, size, note = _Builder(recipe, models, log, check).final(tuple(keep))
        s = _score(qs, model)  # as shipped: the compiled package / traced model, not the search's stand-in
        rows.append(RecipeResult(recipe, keep, s["agreement"], s["exact_match"], s["f1"], s["sqnr_db"], size, note=note))
        fns[j] = (lambda m=model: m(**qs.timing_input), None)
        progress("building", j + 1, len(candidates))
    return rows, fns


def mark_pareto(rows: list[RecipeResult]) -> None:
    """A row is on the Pareto front when no other row is at least as good on both agreement and latency and
    better on one."""
    for r in rows:
        r.pareto = not any(o is not r and o.agreement >= r.agreement and o.median_ms <= r.median_ms and
                           (o.agreement > r.agreement or o.median_ms < r.median_ms) for o in rows)


def choose(rows: list[RecipeResult]) -> RecipeResult | None:
    """The fastest row that meets the target, or None."""
    meeting = [r for r in rows if r.meets]
    return min(meeting, key=lambda r: r.median_ms) if meeting else None


def recipe_report(models, examples, target: float, recipes=DEFAULT_RECIPES, max_keep: int | None = 8,
                  rank_questions: int = 8, progress: Callable[[str, int, int], None] | None = None,
                  check: Callable[..., None] | None = None) -> RecipeReport:
    """For the app: tokenize once, rank the layers (on `rank_questions` questions: minutes saved on bert-base),
    compare the recipes. check: the line's safe point (see compare_recipes)."""
    if not 0 < target <= 100:
        raise ValueError(f"the target agreement is a percentage in (0, 100]; got {target}")
    qs = QuestionSet(models, examples)
    qs.check = check or _no_check
    ranking = rank_layers(models, qs, progress=progress, questions=rank_questions)
    return compare_recipes(models, qs, ranking, target, recipes=recipes, max_keep=max_keep, progress=progress,
                           check=check)


def run_tune(model_id: str, examples: list[Example], target_agreement: float, *, rank_by: str = "logits",
             max_keep: int | None = None, threads=None, quant: QuantConfig | None = None, out=None,
             progress_bar: bool = True, recipes=None, set_name: str = "the question set") -> tuple[TuneReport, Any]:
    """CLI entry: build the model set, tune with progress bars on stderr, optionally compare `recipes`, and write
    the chosen model as an artifact folder (artifact.py: any recipe, with its model card) to `out`. Returns
    (tune report, recipe report or None)."""
    from .variants import ModelSet

    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    comp = ModelSet(model_id, threads=threads, quant=quant, variants=("fp32-cpu", "int8-cpu"), log=log)
    bars = _Bars(progress_bar)
    rec = None
    try:
        qs = QuestionSet(comp, examples)
        report, model = tune(comp, examples, target_agreement, rank_by=rank_by, max_keep=max_keep, progress=bars,
                             qs=qs)
        if recipes:
            stepped = "dynamic-per-channel" if comp.quant.per_channel else "dynamic-per-tensor"  # what tune stepped
            found = len(report.steps[-1].keep_fp32) - len(comp.quant.keep_fp32)
            rec = compare_recipes(comp, qs, report.ranking, target_agreement, recipes=recipes, max_keep=max_keep,
                                  log=log, progress=bars,
                                  known_k={stepped: found} if report.target_met and found else None)
    finally:
        bars.close()
    if out is not None:
        report.out = write_choice(out, comp, report, rec, model, set_name, log)
    return report, rec


class _Bars:
    """tqdm bars on stderr, one per phase (ranking, steps, recipes, building)."""

    def __init__(self, on: bool):
        self.on, self.bars = on, {}

    def __call__(self, what: str, i: int, n: int) -> None:
        if not self.on:
            return
        from tqdm import tqdm

        if what not in self.bars:
            self.close()
            self.bars[what] = tqdm(total=n, desc=f"tune: {what}", unit="layer" if what == "ranking" else "step",
                                   file=sys.stderr, leave=False)
        self.bars[what].n = i
        self.bars[what].refresh()

    def close(self) -> None:
        for b in self.bars.values():
            b.close()


def write_choice(out, models, report: TuneReport, rec: RecipeReport | None, model, set_name: str, log) -> str | None:
    """The chosen recipe (with recipes) or tune's last step as an artifact folder, with what was measured of it."""
    from . import artifact, env

    cpu = env.cpu_name()
    if rec is not None:
        if rec.chosen is None:
            log(f"[quantqa] --out: no recipe met {rec.target_agreement:g}%: nothing written")
            return None
        fp32 = rec.rows[0].to_dict()
        measured = artifact.measurement(rec.chosen.to_dict(), fp32, set_name=set_name, n=rec.n, seq_len=rec.seq_len,
                                        cpu=cpu, threads=models.threads)
        return str(artifact.write(out, models, rec.chosen.recipe, rec.chosen.keep_fp32, measured=measured, log=log))
    last, f = report.steps[-1], report.fp32
    row = {"agreement": last.agreement, "exact_match": last.exact_match, "f1": last.f1, "median_ms": last.median_ms,
           "size_mib": last.size_mib, "sqnr_db": last.logits_sqnr_db}
    measured = artifact.measurement(row, {"exact_match": f["exact_match"], "f1": f["f1"], "median_ms": f["median_ms"],
                                          "size_mib": f["size_mib"]}, set_name=set_name, n=report.n,
                                    seq_len=report.seq_len, cpu=cpu, threads=models.threads)
    recipe = "dynamic-per-channel" if models.quant.per_channel else "dynamic-per-tensor"
    return str(artifact.write_dynamic(out, model, models.tokenizer, recipe, source_model=models.model_id,
                                      engine=models.engine, measured=measured))
