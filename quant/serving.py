"""Many visitors, one set of cores: one timed measurement at a time, shared by everyone who asks the same.

A live demo's audience clicks the same example at once. Timing every click
would make the room wait minutes for numbers that are all the same, and timing
them in parallel would make every number wrong. So (`Scheduler`):

* **One measurement at a time**, in arrival order ("the line"); nothing else
  timed runs meanwhile (Inspect and Evaluate take their turn in the same line).
* **Identical requests share one measurement**: same model, passage, question,
  runs and variants (`CompareService.key`: the text after cleaning, the options
  exactly; a changed option is a new measurement). A request that arrives while
  its twin is being measured waits for that result; one that arrives within
  `FRESH_S` of it gets the stored result. Either way the result says so
  (`"shared": {"age_s", "for", "joined"}`) — a latency is never presented as
  measured for a visitor when it was not.
* **Bounded memory**: at most `CACHE_SIZE` results are kept (least recently
  used dropped; each is one comparison dict, a few KB plus the passage, itself
  at most 10,000 characters), and the line holds at most what the admission
  rule below lets in (hard cap `MAX_LINE`).
* **Under load, fewer runs, said aloud**: when a measurement starts, and again
  after each of its rounds, its runs are the most (up to what was asked) with
  which everyone in line is served within `MAX_WAIT_S` of their own arrival
  (time already waited counts), never fewer than `MIN_RUNS`; the result says how
  many runs it got and why.
* **Admission**: a request that would wait (for everything ahead, at `MIN_RUNS`)
  more than `MAX_LINE_WAIT_S` before it starts, or that finds `max_line` requests
  in line, is refused at once with an estimate of when to retry (`Busy.retry_s`).
* **Background work only when idle**: the examples are measured once the model
  is ready and re-measured before they go stale, only when nobody is in line, and a
  background measurement is abandoned the moment a visitor arrives.

Costs are estimated from what was measured: seconds per round per token-window
(tokens per window x windows), a running average (`CostModel`).
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

FRESH_S = 300.0  # a stored result is served again for this long (5 minutes)
MAX_WAIT_S = 30.0  # adaptive runs: the last visitor in line should wait about this long
MIN_RUNS = 3  # never fewer timed runs than this (unless fewer were asked for)
MAX_LINE_WAIT_S = 120.0  # refuse a request that would wait longer than this even at MIN_RUNS
MAX_LINE = 256  # hard cap on waiting measurements
CACHE_SIZE = 64  # stored results
IDLE_S = 3.0  # background work starts only after the line has been empty this long
REFRESH_S = 240.0  # background: re-measure an example once its result is this old (before FRESH_S)
VISITOR_GONE_S = 1800.0  # background: stop refreshing when nobody has asked anything for this long


class Busy(RuntimeError):
    """Refused: the line is too long. `retry_s`: about when to try again."""

    def __init__(self, message: str, retry_s: float):
        super().__init__(message)
        self.retry_s = retry_s


class Abandoned(RuntimeError):
    """A background measurement stopped because a visitor arrived."""


@dataclass
class CostModel:
    """Seconds per round (every variant once) per token-window, as a running average of what was measured."""

    per_unit_s: float = 2e-5  # a first guess until something was measured (bert-base, 3 variants: ~1e-5 to 3e-5)
    overhead_s: float = 0.05  # per measurement: tokenizing, decoding, serialising
    samples: int = 0

    def observe(self, units: int, round_s: float) -> None:
        if units > 0 and round_s > 0:
            rate = round_s / units
            self.per_unit_s = rate if self.samples == 0 else 0.7 * self.per_unit_s + 0.3 * rate
            self.samples += 1

    def seconds(self, units: int, rounds: int) -> float:
        return self.overhead_s + rounds * units * self.per_unit_s


@dataclass
class Job:
    """One measurement: `run(runs, why, check, keep_going)` returns its result dict. `check()` raises Abandoned when
    a visitor needs the line; `keep_going(runs_done)` gives a reason to stop timing early, or None."""

    key: Any
    run: Callable[..., dict]
    runs: int  # as asked
    warmup: int = 1
    units: int = 0  # token-windows, for the cost estimate
    background: bool = False
    label: str = "measurement"
    session: str | None = None
    store: bool = True  # keep the result for identical requests (not for Inspect / Evaluate)
    done: threading.Event = field(default_factory=threading.Event)
    result: dict | None = None
    error: BaseException | None = None
    joined: int = 0  # other requests waiting on this one
    arrived: float = 0.0  # when it joined the line (the scheduler's clock)

    def __post_init__(self):
        self.started_in_background = self.background

    def estimate(self, cost: CostModel, runs: int | None = None) -> float:
        return cost.seconds(self.units, (min(self.runs, runs) if runs else self.runs) + self.warmup)


@dataclass
class _Stored:
    result: dict
    measured_at: float
    session: str | None
    background: bool


class Scheduler:
    def __init__(self, fresh_s: float = FRESH_S, max_wait_s: float = MAX_WAIT_S, min_runs: int = MIN_RUNS,
                 max_line_wait_s: float = MAX_LINE_WAIT_S, cache_size: int = CACHE_SIZE, max_line: int = MAX_LINE,
                 clock=time.time):
        self.fresh_s, self.max_wait_s, self.min_runs, self.max_line = fresh_s, max_wait_s, min_runs, max_line
        self.max_line_wait_s, self.cache_size, self.clock = max_line_wait_s, cache_size, clock
        self.cost = CostModel()
        self._cv = threading.Condition()
        self._line: list[Job] = []  # the running job first, then the waiting ones, in arrival order
        self._running: Job | None = None
        self._running_since = 0.0
        self._by_key: dict[Any, Job] = {}
        self._cache: OrderedDict[Any, _Stored] = OrderedDict()
        self.last_visit = clock()
        self.last_busy = 0.0
        self.counts = {"measured": 0, "joined": 0, "stored": 0, "refused": 0, "abandoned": 0}
        self._stop = threading.Event()  # set by stop(): background work ends, a background measurement is abandoned
        self._background: threading.Thread | None = None

    # ------------------------------------------------------------------ state

    def waiting_visitors(self) -> int:
        return sum(1 for j in self._line if j is not self._running and not j.background)

    def line_seconds(self, upto: Job | None = None) -> float:
        """Estimated seconds until `upto` starts (or until the line is empty), at MIN_RUNS for those not started."""
        total = 0.0
        for j in self._line:
            if j is upto:
                break
            if j is self._running:
                total += max(0.0, j.estimate(self.cost) - (self.clock() - self._running_since))
            else:
                total += j.estimate(self.cost, self.min_runs)
        return total

    def stored(self, key) -> _Stored | None:
        with self._cv:
            return self._fresh(key)

    def _fresh(self, key) -> _Stored | None:
        s = self._cache.get(key)
        if s is not None and self.clock() - s.measured_at <= self.fresh_s:
            self._cache.move_to_end(key)
            return s
        return None

    def _shared(self, s: _Stored, session: str | None, joined: bool) -> dict:
        d = dict(s.result)
        who = ("the examples, measured in the background" if s.background else
               "you" if session is not None and session == s.session else "another visitor")
        d["shared"] = {"age_s": round(max(0.0, self.clock() - s.measured_at), 1), "for": who, "joined": joined}
        return d

    # ------------------------------------------------------------------ the line

    def get(self, job: Job, on_wait: Callable[[int, float], None] | None = None) -> dict:
        """`job`'s result: stored (fresh), from its twin being measured, or measured now in turn.

        on_wait(ahead, eta_s) is called about twice a second while waiting: the measurements ahead of this one, the
        running one included (0: this one, or its twin, is being measured), and the seconds until it starts.
        Raises Busy when the line is too long, or what the measurement raised.
        """
        with self._cv:
            if not job.background:
                self.last_visit = self.clock()
            s = self._fresh(job.key)
            if s is not None:
                self.counts["stored"] += 1
                return self._shared(s, job.session, joined=False)
            twin = self._by_key.get(job.key)
            if twin is not None:
                twin.joined += 1
                twin.background = twin.background and job.background  # a visitor's now: not abandoned
                self.counts["joined"] += 1
                mine, owner = twin, False
            else:
                self._admit(job)
                job.arrived = self.clock()
                self._line.append(job)
                self._by_key[job.key] = job
                mine, owner = job, True
            self._cv.notify_all()
            try:
                while not mine.done.is_set():
                    if owner and self._running is None and self._line[0] is mine:
                        break
                    if on_wait is not None:
                        pos = self._line.index(mine) if mine in self._line else 0  # measurements ahead, the running one too
                        eta = self.line_seconds(mine)
                        self._cv.release()
                        try:
                            on_wait(pos, eta)
                        finally:
                            self._cv.acquire()
                    self._cv.wait(0.5)
            except BaseException as exc:  # the waiting visitor went away (or on_wait failed): never block the line
                if owner and mine is not self._running and not mine.done.is_set():
                    self._line.remove(mine)
                    self._by_key.pop(mine.key, None)
                    mine.error = exc
                    mine.done.set()
                    self._cv.notify_all()
                raise
            if owner and not mine.done.is_set():
                self._running, self._running_since = mine, self.clock()
                runs, why = self._runs_for(mine)
        if owner and not mine.done.is_set():
            self._measure(mine, runs, why)
        if mine.error is not None:
            raise mine.error
        if owner:
            return dict(mine.result)
        with self._cv:
            return self._shared(_Stored(mine.result, mine.result.get("measured_at") or self.clock(), mine.session,
                                        mine.started_in_background), job.session, joined=True)

    def _admit(self, job: Job) -> None:
        """Refuse when the line is full, or when what is ahead would keep this job waiting over MAX_LINE_WAIT_S."""
        ahead = self.line_seconds()
        if len(self._line) >= self.max_line or ahead > self.max_line_wait_s:
            self.counts["refused"] += 1
            retry = max(5.0, ahead - self.max_line_wait_s + job.estimate(self.cost, self.min_runs))
            raise Busy(f"Queue is full: {len(self._line)} measurements are in line (about {ahead:.0f} s of work). "
                       f"Please try again in about {retry:.0f} s.", retry)

    def _runs_for(self, job: Job) -> tuple[int, str]:
        """The most runs (up to what was asked) with which everyone in line is served within MAX_WAIT_S of their
        own arrival (their time already waited counts), never fewer than MIN_RUNS."""
        now = self.clock()
        line = [job] + [j for j in self._line if j is not job]
        floor = min(job.runs, self.min_runs)

        def fits(r: int) -> bool:
            done_at = now
            for j in line:
                done_at += j.estimate(self.cost, r)
                if not j.background and done_at - (j.arrived or now) > self.max_wait_s:
                    return False
            return True

        r = next((r for r in range(job.runs, floor - 1, -1) if fits(r)), floor)
        if r == job.runs:
            return r, ""
        return r, (f"{len(self._line)} measurement{'s' if len(self._line) != 1 else ''} in line; {r} runs each keep "
                   f"every wait near {self.max_wait_s:.0f} s (at least {self.min_runs})")

    def _keep_going(self, job: Job) -> Callable[[int], str | None]:
        """Re-decided after every round: with the line as it is now, are `done` runs enough? Visitors reach the
        line over seconds, so a measurement that started with a short line stops early once a long one formed."""
        def keep_going(done: int) -> str | None:
            with self._cv:
                r, why = self._runs_for(job)
            return why if why and done >= r else None
        return keep_going

    def _check(self, job: Job) -> Callable[[], None]:
        def check() -> None:
            if job.background and self._stop.is_set():
                raise Abandoned("the server is stopping")
            if job.background and self.waiting_visitors():
                raise Abandoned("a visitor arrived")
        return check

    def _measure(self, job: Job, runs: int, why: str) -> None:
        t0 = self.clock()
        try:
            job.result = job.run(runs, why, self._check(job), self._keep_going(job))
        except BaseException as exc:  # InputError, Abandoned, a failure: the waiters get it too
            job.error = exc
        with self._cv:
            self._running = None
            self._line.remove(job)
            self._by_key.pop(job.key, None)
            self.last_busy = self.clock()
            if job.error is None:
                self.counts["measured"] += 1
                rounds = ((job.result.get("runs") or {}).get("done") or runs) + job.warmup
                self.cost.observe(job.units, max(0.0, (job.result.get("timing_s", {}).get("model") or
                                                       (self.clock() - t0))) / rounds)
                if job.store:
                    self._cache[job.key] = _Stored(job.result, job.result.get("measured_at") or self.clock(),
                                                   job.session, job.started_in_background)
                    self._cache.move_to_end(job.key)
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
            elif isinstance(job.error, Abandoned):
                self.counts["abandoned"] += 1
            job.done.set()
            self._cv.notify_all()

    def exclusive(self, fn: Callable[[Callable[[], None]], Any], estimate_s: float = 5.0,
                  on_wait: Callable[[int, float], None] | None = None, label: str = "task") -> Any:
        """Run `fn(check)` in the line (Inspect, Evaluate): nothing else timed runs meanwhile; never shared."""
        box: dict[str, Any] = {}
        units = max(1, int(estimate_s / self.cost.per_unit_s))

        def run(_runs, _why, check, _keep_going):
            box["value"] = fn(check)
            return {}

        self.get(Job(key=("exclusive", object()), run=run, runs=0, warmup=1, units=units, label=label, store=False),
                 on_wait)
        return box.get("value")

    # ------------------------------------------------------------------ background

    def start_background(self, tasks: Callable[[], list[Job]], idle_s: float = IDLE_S, refresh_s: float = REFRESH_S,
                         period_s: float = 1.0) -> threading.Thread:
        """Measure `tasks()` (their keys not stored, or stored longer than `refresh_s` ago) whenever the line has
        been empty for `idle_s`; stop refreshing once nobody has asked anything for VISITOR_GONE_S."""
        self.background_rounds = 0

        def loop():
            while not self._stop.wait(period_s):
                with self._cv:
                    quiet = (not self._line and self.clock() - self.last_busy >= idle_s)
                    visited = self.clock() - self.last_visit < VISITOR_GONE_S
                if not quiet:
                    continue
                for job in tasks():
                    with self._cv:
                        s = self._cache.get(job.key)
                        stale = s is None or self.clock() - s.measured_at > refresh_s
                        if not stale or self._line or not (visited or s is None):
                            continue
                    try:
                        self.get(job)
                    except Exception:  # abandoned for a visitor, or failed: try again later
                        pass
                    break  # one measurement per idle check: visitors come first
                self.background_rounds += 1

        t = self._background = threading.Thread(target=loop, name="quantqa-background", daemon=True)
        t.start()
        return t

    def stop(self, timeout: float = 30.0) -> None:
        """End the background work and wait for it: a measurement still running in a daemon thread when the
        interpreter exits would abort the process inside torch."""
        self._stop.set()
        if self._background is not None:
            self._background.join(timeout)


# ---------------------------------------------------------------------------------------------- compare


class CompareService:
    """`compare` for many visitors: validated first (bad input never waits in line), then through the line."""

    def __init__(self, models, scheduler: Scheduler | None = None, warmup: int = 1):
        self.models, self.warmup = models, warmup
        self.scheduler = scheduler or Scheduler()
        # Checked and tokenized once per distinct request: the examples' background jobs are made every idle
        # second, and tokenizing them each time would be CPU work that could overlap a visitor's timed runs.
        self._prepared = functools.lru_cache(maxsize=16)(self._prepare)

    def key(self, context: str, question: str, runs: int, variants) -> tuple:
        """Exact: the model, the text as answered (after cleaning), and every option."""
        return ("compare", self.models.model_id, context, question, int(runs), self.warmup, tuple(variants))

    def _prepare(self, passage, question, runs, variants: tuple) -> tuple:
        """(context, question, runs, encoding): checked and cleaned; an over-long passage is refused here,
        before it waits in line."""
        from .inputs import check_inputs

        context, question, runs = check_inputs(passage, question, runs)
        return context, question, runs, self.models.encode_checked(context, question)

    def job(self, passage, question, runs, variants, session: str | None = None, background: bool = False,
            progress: Callable[[float, str], None] | None = None) -> Job:
        from .compare import compare

        variants = tuple(variants)
        hashable = all(isinstance(x, (str, int, float)) for x in (passage, question, runs))
        context, question, runs, enc = (self._prepared if hashable else self._prepare)(passage, question, runs,
                                                                                        variants)
        runnable = sum(self.models.variant(v).model is not None for v in variants if v in self.models.variant_names)

        def run(r: int, why: str, check: Callable[[], None], keep_going=None) -> dict:
            def step(f: float, desc: str) -> None:
                check()
                if progress:
                    progress(f, desc)

            c = compare(self.models, context, question, runs=r, warmup=self.warmup, variants=variants, progress=step,
                        runs_why=why, requested_runs=runs, keep_going=keep_going, enc=enc)
            d = c.to_dict()
            d["context"], d["question"] = c.context, c.question  # the passage as answered: offsets index into it
            return d

        return Job(self.key(context, question, runs, variants), run, runs, self.warmup,
                   units=enc.n_windows * enc.n_tokens * max(1, runnable), background=background, session=session)

    def compare(self, passage, question, runs, variants, session: str | None = None,
                on_wait: Callable[[int, float], None] | None = None,
                progress: Callable[[float, str], None] | None = None) -> dict:
        """The comparison dict (see Comparison.to_dict, plus "context", "question" and, when not measured for this
        request, "shared"). Raises InputError for bad input, Busy when the line is full."""
        return self.scheduler.get(self.job(passage, question, runs, variants, session, progress=progress), on_wait)

    def warm(self, examples: list[tuple[str, str]], runs: int, variants: Callable[[], list[str]]) -> None:
        """Measure `examples` (passage, question) in the background once the models are ready, and keep them fresh."""
        def tasks() -> list[Job]:
            if self.models.static_building():
                return []  # the cards would change, and the compiler takes the cores: wait
            return [self.job(p, q, runs, variants(), background=True) for p, q in examples]

        self.scheduler.start_background(tasks)
