"""The line: one timed piece of work at a time, fair between visitors, and it never wedges.

Two cores are shared by everyone on the page, and a latency is only true when
nothing else runs meanwhile, so every timed piece of work waits its turn here
(`Scheduler`). Two kinds (`Job.kind`):

* a **measurement** ("measure": Compare's timed runs). Identical requests share
  one: a request whose twin is waiting or running joins it; one that arrives
  within its freshness window gets the stored result (`FRESH_S`; a degraded
  result — `Job.degraded` says why — only for `DEGRADED_FRESH_S`), told so in
  `"shared"`. Its timed runs adapt to the line (`runs_for`).
* a **task** ("task": Inspect, Evaluate, Recipes). It runs in *turns*: at each
  safe point (`turn()`, between questions or build steps) it gives the line
  back when others wait and it has had `TURN_S`, and resumes at its next turn;
  it stops there when its visitor left or pressed Cancel. Its turn lengths are
  measured per label and never feed the measurements' cost model.

**Fair.** Waiting work is served round-robin by client (`Job.session`, the
visitor's Gradio session): one client's forty requests take one turn in every
round, not the next forty. A client has at most `MAX_PER_CLIENT` pieces of work
waiting or running (joins and stored results are free); an address that a
proxy names (X-Forwarded-For, as on a Space) at most `MAX_PER_ADDRESS`. Past a
cap, or when the wait before starting would pass `MAX_LINE_WAIT_S`, a request
is refused at once with one line that says why and when to retry (`Busy`).

**Never wedged.** Every wait ends: a waiter looks at the line every `WAKE_S`
(no broadcast wake-ups under the lock) and leaves when its visitor has gone
(`gone()`); the bookkeeping after a piece of work is in `finally`; a piece of
work that overruns its estimate `WATCHDOG_FACTOR` times (and at least
`WATCHDOG_MIN_S`) is abandoned — every waiter gets one line, the line moves on,
and the work stops at its next safe point.

Durations use the scheduler's clock (`time.monotonic` unless a test moves one by
hand). This module knows nothing of models: serving.py builds the jobs.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable

FRESH_S = 300.0  # a stored result is served again for this long (5 minutes)
DEGRADED_FRESH_S = 30.0  # ... a degraded one (runs cut, a busy neighbour, a variant failed) only this long, labelled
MAX_WAIT_S = 25.0  # adaptive runs: everyone waiting should have their result within about this long of arriving
#                    (25 s: a visitor's 30 s, less the estimate's error and the trip through Gradio)
MIN_RUNS = 3  # never fewer timed runs than this (unless fewer were asked for)
MAX_LINE_WAIT_S = 120.0  # refuse a request that would wait longer than this before it starts
MAX_LINE = 256  # hard cap on pieces of work in line
MAX_PER_CLIENT = 4  # pieces of work one visitor (session) may have waiting or running
MAX_PER_ADDRESS = 32  # ... one address a proxy names (many sessions behind one address: a classroom, a script)
CACHE_SIZE = 64  # stored results
TURN_S = 1.0  # a task gives the line back after about this long when others wait
WAKE_S = 1.0  # a waiter looks at the line (and at its visitor) this often
WATCHDOG_FACTOR = 5.0  # abandon work that runs this many times its estimate ...
WATCHDOG_MIN_S = 60.0  # ... and at least this long
WATCHDOG_UNMEASURED_S = 300.0  # before anything was measured, the estimate is a guess: this much slack
IDLE_S = 3.0  # background work starts only after the line has been empty this long
REFRESH_S = 240.0  # background: re-measure an example once its result is this old (before FRESH_S)
VISITOR_GONE_S = 1800.0  # background: stop refreshing when nobody has asked anything for this long
BACKGROUND = "\0background"  # the client of background work


class Busy(RuntimeError):
    """Refused at once: the line is too long, or this visitor already has its share. `retry_s`: when to try."""

    def __init__(self, message: str, retry_s: float):
        super().__init__(message)
        self.retry_s = retry_s


class Abandoned(RuntimeError):
    """Background work stopped because a visitor arrived (or the server is stopping)."""


class Cancelled(RuntimeError):
    """The visitor left (closed the page) or pressed Cancel: the work stopped at its next safe point."""


class Overran(RuntimeError):
    """The watchdog abandoned work that ran far past its estimate."""


@dataclass
class CostModel:
    """Seconds per round (every variant once) per token-window, a running average of what measurements took.

    Fed by measurements only: a task's turns have their own figures (`TurnCosts`)."""

    per_unit_s: float = 1e-3  # a first guess until something was measured (bert-base on 2 cores: ~1e-3)
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
class TurnCosts:
    """Seconds per turn of each kind of task (label), a running average of the turns measured."""

    default_s: float = TURN_S
    by_label: dict[str, float] = field(default_factory=dict)

    def observe(self, label: str, seconds: float) -> None:
        old = self.by_label.get(label)
        self.by_label[label] = seconds if old is None else 0.7 * old + 0.3 * seconds

    def seconds(self, label: str) -> float:
        return self.by_label.get(label, self.default_s)


_ids = itertools.count(1)


@dataclass(eq=False)  # identity: two jobs are never "equal"
class Job:
    """One piece of work in line. A measurement's `run(runs, why, check, keep_going)` returns its result dict;
    `check()` raises when the work must stop (Abandoned, Cancelled, Overran); `keep_going(runs_done)` gives a
    reason to stop timing early, or None. A task's work is given to `Scheduler.task`."""

    key: Any
    run: Callable[..., dict] | None
    runs: int = 0  # as asked
    warmup: int = 1
    units: int = 0  # token-windows x variants, for the cost estimate
    background: bool = False
    label: str = "measurement"
    session: str | None = None  # the visitor (Gradio session); None: a client of its own
    address: str | None = None  # the visitor's address as a proxy named it, for MAX_PER_ADDRESS
    store: bool = True  # keep the result for identical requests
    degraded: Callable[[dict], str] | None = None  # why a result must not be shared long ("" when it may)
    kind: str = "measure"  # or "task"
    turns: int = 1  # a task: about how many turns it needs (for the others' wait estimates)
    # ---- the scheduler's
    id: int = field(default_factory=lambda: next(_ids))
    done: threading.Event = field(default_factory=threading.Event)
    result: dict | None = None
    error: BaseException | None = None
    joined: int = 0  # requests that joined this one
    waiters: int = 0  # threads waiting for it (the one running it included)
    arrived: float = 0.0
    state: str = "new"  # waiting, running, done
    claimed: bool = False  # a thread is running it
    started: float = 0.0  # when this turn (or the measurement) started
    segment: float = 0.0  # a task: its last safe point (the watchdog times the step from there)
    ran_s: float = 0.0  # how long it held the line
    planned_s: float = 0.0  # its estimate then (the watchdog's reference)
    unmeasured: bool = False  # planned with no measurement yet behind the estimate
    expect_s: float | None = None  # a task's current step, when it said how long it takes
    turns_done: int = 0  # a task: turns it had
    wakers: set = field(default_factory=set)

    def __post_init__(self):
        self.started_in_background = self.background

    @property
    def client(self) -> str:
        if self.background:
            return BACKGROUND
        return self.session if self.session is not None else f"\0job-{self.id}"

    def estimate(self, cost: CostModel, runs: int | None = None, done: int = 0) -> float:
        """Seconds for its rounds still to go: (runs - done) timed rounds, plus the warm-up when not started."""
        r = min(self.runs, runs) if runs else self.runs
        return cost.seconds(self.units, max(0, r - done) + (self.warmup if done == 0 else 0))


@dataclass
class _Stored:
    result: dict
    measured_at: float
    session: str | None
    background: bool
    fresh_s: float
    degraded: str = ""


class Scheduler:
    """The line (see the module docstring). `get(job)` for a measurement, `task(fn)` for work in turns."""

    def __init__(self, fresh_s: float = FRESH_S, max_wait_s: float = MAX_WAIT_S, min_runs: int = MIN_RUNS,
                 max_line_wait_s: float = MAX_LINE_WAIT_S, cache_size: int = CACHE_SIZE, max_line: int = MAX_LINE,
                 max_per_client: int = MAX_PER_CLIENT, max_per_address: int = MAX_PER_ADDRESS,
                 degraded_fresh_s: float = DEGRADED_FRESH_S, turn_s: float = TURN_S, wake_s: float = WAKE_S,
                 clock: Callable[[], float] = time.monotonic):
        self.fresh_s, self.degraded_fresh_s, self.max_wait_s, self.min_runs = fresh_s, degraded_fresh_s, max_wait_s, min_runs
        self.max_line_wait_s, self.cache_size, self.max_line = max_line_wait_s, cache_size, max_line
        self.max_per_client, self.max_per_address = max_per_client, max_per_address
        self.turn_s, self.wake_s, self.clock = turn_s, wake_s, clock
        self.cost = CostModel()
        self.turn_costs = TurnCosts()
        self._lock = threading.RLock()
        self._queues: OrderedDict[str, deque[Job]] = OrderedDict()  # waiting work per client, in round-robin order
        self._running: Job | None = None
        self._by_key: dict[Any, Job] = {}  # shareable measurements waiting or running
        self._cache: OrderedDict[Any, _Stored] = OrderedDict()
        self.last_visit = clock()
        self.last_busy = clock()
        self.counts = {"measured": 0, "joined": 0, "stored": 0, "refused": 0, "abandoned": 0, "cancelled": 0,
                       "overran": 0, "turns": 0}
        self._stop = threading.Event()
        self._background: threading.Thread | None = None

    # ================================================================== measurements

    def get(self, job: Job, on_wait: Callable[[int, float], None] | None = None,
            gone: Callable[[], bool] | None = None) -> dict:
        """`job`'s result: stored (fresh), from its twin waiting or running, or measured in turn by this thread.

        on_wait(ahead, eta_s): called while waiting when the place in line changes (at most every WAKE_S): the
        pieces of work ahead (the running one included; 0: this one, or its twin, is running) and the seconds
        until it starts. gone(): True once the visitor left; then this request leaves the line (Cancelled).
        Raises Busy when refused, or what the measurement raised.
        """
        with self._lock:
            if not job.background:
                self.last_visit = self.clock()
            stored = self._fresh(job.key)
            if stored is not None:
                self.counts["stored"] += 1
                return self._shared(stored, job.session, joined=False)
            mine = self._join_or_enqueue(job)
            mine.waiters += 1
        ran = self._wait_turn(mine, on_wait, gone)
        if ran:
            runs, why = self.runs_for(mine)
            self._measure(mine, runs, why, gone)
        if mine.error is not None:
            raise mine.error
        if mine is job or ran:
            d = dict(mine.result)
            d["line_s"] = {"waited": round(mine.started - mine.arrived, 3), "ran": round(mine.ran_s, 3)}
            return d
        with self._lock:
            return self._shared(self._stored_of(mine), job.session, joined=True)

    def _join_or_enqueue(self, job: Job) -> Job:
        twin = self._by_key.get(job.key) if job.store else None
        if twin is not None:
            twin.joined += 1
            if twin.background and not job.background:  # a visitor's now: never abandoned for a visitor
                self._adopt(twin, job)
            self.counts["joined"] += 1
            return twin
        self._admit(job)
        self._enqueue(job)
        if job.store:
            self._by_key[job.key] = job
        return job

    def _adopt(self, twin: Job, visitor: Job) -> None:
        """A visitor joined background work: it is now that visitor's (its place in line: the visitor's own)."""
        waiting = twin.state == "waiting"
        if waiting:
            self._dequeue(twin)
        twin.background, twin.session, twin.address = False, visitor.session, visitor.address
        twin.arrived = self.clock()
        if waiting:
            self._enqueue(twin)

    def _measure(self, job: Job, runs: int, why: str, gone) -> None:
        """Run `job` (this thread claimed it); the bookkeeping after it always runs."""
        result, error = None, None
        try:
            result = job.run(runs, why, self._check(job, gone), self._keep_going(job))
        except BaseException as exc:  # InputError, Abandoned, Cancelled, a failure: the joiners get it too
            error = exc
        finally:
            self._finish(job, result, error)

    def _finish(self, job: Job, result: dict | None, error: BaseException | None) -> None:
        with self._lock:
            if job.state == "done":  # the watchdog took it: its waiters were told, the line moved on
                return
            try:
                if error is None and not isinstance(result, dict):
                    error = RuntimeError(f"the {job.label} returned no result")
                job.result, job.error = result, error
                if error is None and job.kind == "measure":
                    self._account(job, result)
                elif isinstance(error, Abandoned):
                    self.counts["abandoned"] += 1
                elif isinstance(error, Cancelled):
                    self.counts["cancelled"] += 1
            except Exception as exc:  # a malformed result: an error for everyone waiting, never a wedged line
                job.result, job.error = None, RuntimeError(f"the {job.label} result could not be read: {exc}")
            finally:
                self._close(job)

    def _account(self, job: Job, result: dict) -> None:
        """A measurement's result: counted, its speed taught to the cost model, stored for identical requests."""
        self.counts["measured"] += 1
        done = (result.get("runs") or {}).get("done") or job.runs
        model_s = (result.get("timing_s") or {}).get("model")
        if model_s:
            self.cost.observe(job.units, float(model_s) / (done + job.warmup))
        if job.store:
            why = job.degraded(result) if job.degraded else ""
            self._cache[job.key] = _Stored(result, self.clock(), job.session, job.started_in_background,
                                           self.degraded_fresh_s if why else self.fresh_s, why)
            self._cache.move_to_end(job.key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def _close(self, job: Job) -> None:
        """`job` is over: out of the line, its waiters woken, the next piece of work started."""
        if job.state == "waiting":
            self._dequeue(job)
        if self._by_key.get(job.key) is job:
            del self._by_key[job.key]
        job.state = "done"
        if self._running is job:
            self._running = None
            job.ran_s = self.clock() - job.started
        self.last_busy = self.clock()
        job.done.set()
        self._wake(job)
        self._dispatch()

    # ------------------------------------------------------------------ stored results

    def stored(self, key) -> _Stored | None:
        with self._lock:
            return self._fresh(key)

    def _fresh(self, key) -> _Stored | None:
        s = self._cache.get(key)
        if s is not None and self.clock() - s.measured_at <= s.fresh_s:
            self._cache.move_to_end(key)
            return s
        return None

    def _stored_of(self, job: Job) -> _Stored:
        s = self._cache.get(job.key)
        if s is not None and s.result is job.result:
            return s
        return _Stored(job.result, self.clock(), job.session, job.started_in_background, 0.0,
                       job.degraded(job.result) if job.degraded else "")

    def _shared(self, s: _Stored, session: str | None, joined: bool) -> dict:
        d = dict(s.result)
        who = ("the examples, measured in the background" if s.background else
               "you" if session is not None and session == s.session else "another visitor")
        d["shared"] = {"age_s": round(max(0.0, self.clock() - s.measured_at), 1), "for": who, "joined": joined}
        if s.degraded:
            d["shared"]["degraded"] = s.degraded
        return d

    # ================================================================== tasks

    def task(self, fn: Callable[[Callable[..., None]], Any], *, label: str = "task", session: str | None = None,
             address: str | None = None, turns: int = 1, on_wait: Callable[[int, float], None] | None = None,
             gone: Callable[[], bool] | None = None) -> Any:
        """Run `fn(turn)` in the line, in turns (Inspect, Evaluate, Recipes); never shared, never stored.

        `turn(expect_s=None)` is a safe point: it raises Cancelled when the visitor left, Overran when the watchdog
        took the work, Abandoned when the server stops; when others wait and this turn has had TURN_S, it gives the
        line back and returns at the next turn. expect_s: the next step cannot stop for about this long (a
        compilation): the others' estimates and the watchdog use it. turns: about how many turns `fn` needs.
        """
        job = Job(("task", object()), None, label=label, session=session, address=address, store=False,
                  kind="task", turns=max(1, turns))
        with self._lock:
            self.last_visit = self.clock()
            self._admit(job)
            self._enqueue(job)
            job.waiters += 1
        if not self._wait_turn(job, on_wait, gone):
            raise job.error
        value, error = None, None
        try:
            value = fn(self._turn(job, on_wait, gone))
        except BaseException as exc:
            error = exc
        finally:
            self.turn_costs.observe(label, self.clock() - job.started)
            self._finish(job, {} if error is None else None, error)
        if job.error is not None:
            raise job.error
        return value

    def _turn(self, job: Job, on_wait, gone) -> Callable[..., None]:
        check = self._check(job, gone)

        def turn(expect_s: float | None = None) -> None:
            check()
            with self._lock:
                now = self.clock()
                pause = self._others_waiting(job) and now - job.started >= self.turn_s
                if pause:  # back in line: first of its client's work, its client last in the round
                    if not job.expect_s:
                        self.turn_costs.observe(job.label, now - job.started)
                    job.turns, job.turns_done = max(1, job.turns - 1), job.turns_done + 1
                    self.counts["turns"] += 1
                    self._running, job.claimed = None, False
                    self._enqueue(job, front=True)
            if pause and not self._wait_turn(job, on_wait, gone):
                raise job.error
            check()
            with self._lock:  # a new step starts here: the watchdog and the others' estimates time it
                job.segment, job.expect_s = self.clock(), expect_s
                job.planned_s = expect_s or self.turn_costs.seconds(job.label)
        return turn

    # ================================================================== waiting

    def _wait_turn(self, job: Job, on_wait, gone) -> bool:
        """Wait until `job` starts (True: this thread runs it) or is over (False). Leaves the line when the visitor
        went away (Cancelled) or `on_wait` failed."""
        waker = threading.Event()
        with self._lock:
            job.wakers.add(waker)
        last = None
        try:
            while True:
                with self._lock:
                    if job.state == "done":
                        return False
                    if self._running is job and not job.claimed:
                        job.claimed = True
                        return True
                    self._watchdog()
                    ahead, eta = self._place(job)
                if gone is not None and gone():
                    raise Cancelled("the visitor left before the work started")
                if on_wait is not None and (ahead, round(eta)) != last:
                    last = (ahead, round(eta))
                    on_wait(ahead, eta)
                waker.wait(self.wake_s)
                waker.clear()
        except BaseException:
            self._leave(job)
            raise
        finally:
            with self._lock:
                job.wakers.discard(waker)

    def _leave(self, job: Job) -> None:
        """A waiting thread went away. Work nobody waits for any more leaves the line."""
        with self._lock:
            job.waiters -= 1
            if job.waiters > 0 or job.state == "done" or job.claimed:
                return
            job.error = Cancelled("nobody is waiting for it any more")
            self.counts["cancelled"] += 1
            self._close(job)

    def _wake(self, job: Job) -> None:
        for w in list(job.wakers):
            w.set()

    # ================================================================== the order

    def _enqueue(self, job: Job, front: bool = False) -> None:
        if not job.arrived:
            job.arrived = self.clock()
        job.state = "waiting"
        q = self._queues.get(job.client)
        if q is None:
            q = self._queues[job.client] = deque()
        elif front:  # a task's next turn: first of its client's work, its client to the back of the round
            self._queues.move_to_end(job.client)
        (q.appendleft if front else q.append)(job)
        self._dispatch()

    def _dequeue(self, job: Job) -> None:
        q = self._queues.get(job.client)
        if q is not None and job in q:
            q.remove(job)
            if not q:
                del self._queues[job.client]

    def _dispatch(self) -> None:
        """When nothing runs, start the next piece of work: round-robin over the clients, background last."""
        if self._running is not None:
            return
        client = next((c for c in self._queues if c != BACKGROUND), None)
        if client is None:
            client = BACKGROUND if BACKGROUND in self._queues else None
        if client is None:
            return
        q = self._queues[client]
        job = q.popleft()
        if q:
            self._queues.move_to_end(client)
        else:
            del self._queues[client]
        job.state, job.claimed = "running", False
        job.started = job.segment = self.clock()
        job.expect_s = None
        self._running = job
        job.planned_s = self._planned(job)
        job.unmeasured = job.kind == "measure" and self.cost.samples == 0
        self._wake(job)

    def _planned(self, job: Job) -> float:
        if job.kind == "task":
            return self.turn_costs.seconds(job.label)
        return job.estimate(self.cost, self.runs_for(job)[0])

    def _order(self, extra: Job | None = None) -> list[Job]:
        """Who starts next, in order, if nobody else arrives (a task appears once per turn it still needs)."""
        clients = [(c, list(q)) for c, q in self._queues.items() if c != BACKGROUND]
        if extra is not None and extra.state != "waiting":
            for c, q in clients:
                if c == extra.client:
                    q.append(extra)
                    break
            else:
                clients.append((extra.client, [extra]))
        turns = {id(j): j.turns for _, q in clients for j in q if j.kind == "task"}
        rr = deque(range(len(clients)))
        order: list[Job] = []
        while rr and len(order) < 4 * MAX_LINE:
            i = rr.popleft()
            q = clients[i][1]
            j = q[0]
            order.append(j)
            if j.kind == "task" and turns[id(j)] > 1:
                turns[id(j)] -= 1
            else:
                q.pop(0)
            if q:
                rr.append(i)
        return order

    def _step_s(self, job: Job, runs: int | None = None) -> float:
        """How long one appearance of `job` in the order takes: a measurement whole, a task one turn."""
        if job.kind == "task":
            return max(self.turn_s, self.turn_costs.seconds(job.label))
        return job.estimate(self.cost, runs)

    def _remaining_s(self, now: float) -> float:
        """The running work's seconds still to go (never counted as 0 while it runs: a tenth of its plan)."""
        job = self._running
        if job is None:
            return 0.0
        plan = job.expect_s or job.planned_s or self._step_s(job)
        if job.kind == "task" and not job.expect_s:
            plan = max(plan, self.turn_s)
        return max(plan - (now - job.segment), 0.1 * plan)

    def _place(self, job: Job) -> tuple[int, float]:
        """(pieces of work ahead, the running one included; seconds until `job` starts)."""
        if self._running is job:
            return 0, 0.0
        t = self._remaining_s(self.clock())
        ahead = 1 if self._running is not None else 0
        for j in self._order():
            if j is job:
                return ahead, t
            ahead += 1
            t += self._step_s(j, self.min_runs)
        return ahead, t

    def _others_waiting(self, job: Job) -> bool:
        """Visitor work is waiting (the running `job` is never in a queue)."""
        return any(q for c, q in self._queues.items() if c != BACKGROUND)

    def waiting_visitors(self) -> int:
        with self._lock:
            return sum(len(q) for c, q in self._queues.items() if c != BACKGROUND)

    def line_seconds(self) -> float:
        """Estimated seconds until the line is empty (the running work's remainder included)."""
        with self._lock:
            return self._remaining_s(self.clock()) + sum(self._step_s(j, self.min_runs) for j in self._order())

    # ================================================================== admission

    def _admit(self, job: Job) -> None:
        """Refuse at once (Busy) past a cap, or when the wait before starting would pass MAX_LINE_WAIT_S."""
        if job.background:
            return
        mine = self._work_of(lambda j: j.session == job.session) if job.session is not None else []
        if len(mine) >= self.max_per_client:
            self._refuse(f"You already have {len(mine)} requests in line (at most {self.max_per_client} per "
                         "visitor, so that everyone gets a turn). Please wait for one of them to finish.",
                         self._place(mine[0])[1] + self._step_s(mine[0], self.min_runs))
        if job.address:
            same = self._work_of(lambda j: j.address == job.address)
            if len(same) >= self.max_per_address:
                self._refuse(f"Your address already has {len(same)} requests in line (at most "
                             f"{self.max_per_address}). Please wait for some of them to finish.", 30.0)
        n = sum(len(q) for q in self._queues.values()) + (self._running is not None)
        if n >= self.max_line:
            self._refuse(f"Queue is full: {n} requests are in line. Please try again in about 30 s.", 30.0)
        wait = self._start_s(job)
        if wait > self.max_line_wait_s:
            retry = max(5.0, wait - self.max_line_wait_s + self._step_s(job, self.min_runs))
            self._refuse(f"Queue is full: about {wait:.0f} s of work is ahead of this request (the limit is "
                         f"{self.max_line_wait_s:.0f} s). Please try again in about {retry:.0f} s.", retry)

    def _work_of(self, which: Callable[[Job], bool]) -> list[Job]:
        """Visitor work waiting or running that `which` selects, the running one first."""
        out = [self._running] if self._running is not None and which(self._running) else []
        return out + [j for c, q in self._queues.items() if c != BACKGROUND for j in q if which(j)]

    def _start_s(self, job: Job) -> float:
        """Seconds until `job` would start if it joined the line now."""
        t = self._remaining_s(self.clock())
        for j in self._order(extra=job):
            if j is job:
                return t
            t += self._step_s(j, self.min_runs)
        return t

    def _refuse(self, message: str, retry_s: float) -> None:
        self.counts["refused"] += 1
        raise Busy(message, max(1.0, retry_s))

    # ================================================================== during the work

    def runs_for(self, job: Job, done: int = 0) -> tuple[int, str]:
        """The most timed runs (up to what was asked) with which every visitor waiting starts within MAX_WAIT_S of
        their own arrival, if each piece of work ahead of them gets as many — never fewer than MIN_RUNS. `done`:
        runs this job already did (its remaining rounds are what counts). Nobody waiting: every run asked."""
        with self._lock:
            now = self.clock()
            order = [j for j in self._order() if j is not job]
            if not any(not j.background for j in order):
                return job.runs, ""
            floor = min(job.runs, self.min_runs)

            def fits(r: int) -> bool:
                t, seen = now + job.estimate(self.cost, r, done), set()
                for j in order:  # a visitor waits until their result (a task: its first turn; a paused one waits on)
                    t += self._step_s(j, r)
                    if j.id not in seen and j.turns_done == 0 and t - j.arrived > self.max_wait_s:
                        return False
                    seen.add(j.id)
                return True

            r = next((r for r in range(job.runs, floor - 1, -1) if r >= done and fits(r)), max(floor, done))
            if r >= job.runs:
                return job.runs, ""
            waiting = len(order)
            return r, (f"{waiting} request{'s' if waiting != 1 else ''} in line; {r} runs each keep every wait "
                       f"near {self.max_wait_s:.0f} s (at least {self.min_runs})")

    def _keep_going(self, job: Job) -> Callable[[int], str | None]:
        """Re-decided after every round: with the line as it is now, are `done` runs enough?"""
        def keep_going(done: int) -> str | None:
            r, why = self.runs_for(job, done)
            return why if why and done >= r else None
        return keep_going

    def _check(self, job: Job, gone) -> Callable[[], None]:
        """The safe point of a running piece of work: raise when it must stop."""
        def check() -> None:
            if job.state == "done":
                raise Overran("the watchdog stopped this work")
            if job.background and self._stop.is_set():
                raise Abandoned("the server is stopping")
            if job.background and self.waiting_visitors():
                raise Abandoned("a visitor arrived")
            if gone is not None and gone():
                with self._lock:
                    if job.waiters <= 1:
                        raise Cancelled("the visitor left")
            with self._lock:
                self._watchdog()
            if job.state == "done":
                raise Overran("the watchdog stopped this work")
        return check

    def _watchdog(self) -> None:
        """Abandon the running work when it overran its plan by far: its waiters get one line, the line moves on.
        Looked at by every waiter as it wakes and by the work's own safe points (no thread of its own)."""
        job = self._running
        if job is None or not job.claimed:
            return
        limit = self.watchdog_limit(job)
        over = self.clock() - job.segment  # a measurement: since it started; a task: since its last safe point
        if over <= limit:
            return
        self.counts["overran"] += 1
        job.error = Overran(f"The {job.label} was stopped: it ran {over:.0f} s, far past its estimate of "
                            f"{job.planned_s:.0f} s (limit {limit:.0f} s), so the line moved on. Please try again.")
        job.result = None
        self._close(job)

    def watchdog_limit(self, job: Job) -> float:
        if job.unmeasured:
            return WATCHDOG_UNMEASURED_S
        return max(WATCHDOG_MIN_S, WATCHDOG_FACTOR * (job.planned_s or self._step_s(job)))

    # ================================================================== background

    def start_background(self, tasks: Callable[[], list[Job]], idle_s: float = IDLE_S, refresh_s: float = REFRESH_S,
                         period_s: float = 1.0) -> threading.Thread:
        """Measure `tasks()` (their keys not stored, or stored longer than `refresh_s` ago) whenever the line has
        been empty for `idle_s`; stop refreshing once nobody has asked anything for VISITOR_GONE_S."""
        self.background_rounds = 0

        def due(job: Job) -> bool:
            with self._lock:
                quiet = self._running is None and not self._queues and self.clock() - self.last_busy >= idle_s
                visited = self.clock() - self.last_visit < VISITOR_GONE_S
                s = self._cache.get(job.key)
                stale = s is None or self.clock() - s.measured_at > min(refresh_s, s.fresh_s)
                return quiet and stale and (visited or s is None)

        def loop():
            while not self._stop.wait(period_s):
                try:
                    job = next((j for j in tasks() if due(j)), None)
                    if job is not None:
                        self.get(job)  # one measurement per idle check: visitors come first
                except Exception:  # abandoned for a visitor, or failed: try again later
                    pass
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
