"""Compare for many visitors: requests checked first, then measured through the line (line.py).

`CompareService` turns a visitor's (passage, question, runs, variants) into a
measurement `Job`: validated and tokenized before it waits (bad input never
waits in line), keyed on everything that shaped its result — the model, the
text as answered, the options, the variants that could run at that moment and
the configured thread count — so a result is only ever shared with requests it
answers exactly. A result that was degraded (timed runs cut short by the line,
a busy neighbour, fewer threads than usual, a variant that failed, static INT8
compiling meanwhile: `Comparison.degraded`) is shared only briefly, and says so.

The examples are measured in the background once the models are ready and kept
fresh (`warm`), only while the line is empty.
"""

from __future__ import annotations

import functools
import time
from typing import Callable

from .line import (DEGRADED_FRESH_S, FRESH_S, MAX_LINE, MAX_LINE_WAIT_S, MAX_PER_ADDRESS, MAX_PER_CLIENT,  # noqa: F401
                   MAX_WAIT_S, MIN_RUNS, TURN_S, Abandoned, Busy, Cancelled, CostModel, Job, Overran, Scheduler)

PROGRESS_EVERY_S = 0.25  # a visitor's progress bar is updated at most this often (each update is work for the server)


def degraded(result: dict) -> str:
    """Why a comparison must not be shared for long ("" when it may): its own list, see Comparison.degraded."""
    return "; ".join(result.get("degraded") or ())


def throttled(progress: Callable[[float, str], None] | None, every_s: float = PROGRESS_EVERY_S):
    """`progress`, called at most every `every_s` (and always for the last step)."""
    if progress is None:
        return None
    last = [0.0]

    def call(fraction: float, desc: str) -> None:
        now = time.monotonic()
        if fraction >= 1.0 or now - last[0] >= every_s:
            last[0] = now
            progress(fraction, desc)
    return call


class TaskThreads:
    """The thread counts a task's turns used: `n` (the most used) and `why`, for its report."""

    def __init__(self):
        self.turns: dict[int, int] = {}
        self.first_why = ""

    def add(self, choice) -> None:
        self.turns[choice.n] = self.turns.get(choice.n, 0) + 1
        self.first_why = self.first_why or choice.why

    @property
    def n(self) -> int:
        return max(self.turns, key=self.turns.get) if self.turns else 0

    @property
    def why(self) -> str:
        if len(self.turns) <= 1:
            return self.first_why
        parts = ", ".join(f"{n} thread{'s' if n > 1 else ''} in {k} turn{'s' if k > 1 else ''}"
                          for n, k in sorted(self.turns.items(), reverse=True))
        return f"chosen at each turn from the free cores: {parts}"


class CompareService:
    """`compare` for many visitors: validated first (bad input never waits in line), then through the line."""

    def __init__(self, models, scheduler: Scheduler | None = None, warmup: int = 1):
        self.models, self.warmup = models, warmup
        self.scheduler = scheduler or Scheduler()
        # Checked and tokenized once per distinct request: the examples' background jobs are made every idle
        # second, and tokenizing them each time would be CPU work that could overlap a visitor's timed runs.
        self._prepared = functools.lru_cache(maxsize=16)(self._prepare)

    def runnable(self, variants) -> tuple[str, ...]:
        """The asked variants that can run now (static INT8 may be building, a GPU may be missing)."""
        return tuple(v for v in variants if v in self.models.variant_names and self.models.variant(v).model is not None)

    def key(self, context: str, question: str, runs: int, variants) -> tuple:
        """Exact: the model, the text as answered (after cleaning), every option, what could run, the threads."""
        variants = tuple(variants)
        return ("compare", self.models.model_id, context, question, int(runs), self.warmup, variants,
                self.runnable(variants), (self.models.threads, self.models.threads_fixed))

    def _prepare(self, passage, question, runs, variants: tuple) -> tuple:
        """(context, question, runs, encoding): checked and cleaned; an over-long passage is refused here,
        before it waits in line."""
        from .inputs import check_inputs

        context, question, runs = check_inputs(passage, question, runs)
        return context, question, runs, self.models.encode_checked(context, question)

    def job(self, passage, question, runs, variants, session: str | None = None, background: bool = False,
            progress: Callable[[float, str], None] | None = None, address: str | None = None) -> Job:
        from .compare import compare

        variants = tuple(variants)
        hashable = all(isinstance(x, (str, int, float)) for x in (passage, question, runs))
        context, question, runs, enc = (self._prepared if hashable else self._prepare)(passage, question, runs,
                                                                                        variants)
        report = throttled(progress)

        def run(r: int, why: str, check: Callable[[], None], keep_going=None) -> dict:
            def step(f: float, desc: str) -> None:
                check()  # between model calls: stop when the visitor left, a background job when one arrived
                if report:
                    report(f, desc)

            c = compare(self.models, context, question, runs=r, warmup=self.warmup, variants=variants, progress=step,
                        runs_why=why, requested_runs=runs, keep_going=keep_going, enc=enc)
            d = c.to_dict()
            d["context"], d["question"] = c.context, c.question  # the passage as answered: offsets index into it
            return d

        units = enc.n_windows * enc.n_tokens * max(1, len(self.runnable(variants)))
        return Job(self.key(context, question, runs, variants), run, runs, self.warmup, units=units,
                   background=background, session=session, address=address, degraded=degraded)

    def compare(self, passage, question, runs, variants, session: str | None = None,
                on_wait: Callable[[int, float], None] | None = None,
                progress: Callable[[float, str], None] | None = None, address: str | None = None,
                gone: Callable[[], bool] | None = None) -> dict:
        """The comparison dict (see Comparison.to_dict, plus "context", "question" and, when not measured for this
        request, "shared"). Raises InputError for bad input, Busy when refused, Cancelled when the visitor left."""
        job = self.job(passage, question, runs, variants, session, progress=progress, address=address)
        return self.scheduler.get(job, on_wait, gone)

    def task(self, fn: Callable[[Callable[..., None], object], object], *, label: str, session: str | None = None,
             address: str | None = None, turns: int = 1, on_wait: Callable[[int, float], None] | None = None,
             gone: Callable[[], bool] | None = None):
        """Run `fn(turn, threads)` in the line, in turns (Inspect, Evaluate, Recipes; see Scheduler.task), with a
        thread count chosen for the machine as it is at each turn (a busy moment at the start must not slow the
        whole task; the work in between may have set another). `threads` (TaskThreads) reports what was used."""
        import torch

        from .threads import choose_threads

        used = TaskThreads()

        def body(turn):
            def choose() -> None:
                choice = choose_threads(self.models.threads, self.models.threads_fixed)
                used.add(choice)
                if torch.get_num_threads() != choice.n:
                    torch.set_num_threads(choice.n)

            def resume(expect_s: float | None = None) -> None:
                turn(expect_s)
                choose()

            before = torch.get_num_threads()
            choose()
            try:
                return fn(resume, used)
            finally:
                torch.set_num_threads(before)

        return self.scheduler.task(body, label=label, session=session, address=address, turns=turns,
                                   on_wait=on_wait, gone=gone)

    def warm(self, examples: list[tuple[str, str]], runs: int, variants: Callable[[], list[str]]) -> None:
        """Measure `examples` (passage, question) in the background once the models are ready, and keep them fresh."""
        def tasks() -> list[Job]:
            if self.models.static_building():
                return []  # the cards would change, and the compiler takes the cores: wait
            return [self.job(p, q, runs, variants(), background=True) for p, q in examples]

        self.scheduler.start_background(tasks)
