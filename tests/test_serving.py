"""Many visitors (quant/serving.py): one measurement at a time, shared by identical requests, said aloud."""

import threading
import time

import pytest

import tinymodels
from quant.compare import compare
from quant.line import FRESH_S, MAX_PER_CLIENT, Cancelled, Overran
from quant.serving import Abandoned, Busy, CompareService, Job, Scheduler


def until(cond, timeout: float = 20.0) -> None:
    """Wait for `cond()` (a fact the test needs before it goes on); fail, never hang, when it does not come."""
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "waited 20 s for a condition that never came"
        time.sleep(0.01)


class Clock:
    """A clock the test moves by hand (freshness windows without sleeping)."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def fake_job(key, runs=10, seconds=0.2, calls=None, gate=None, units=100, background=False, session=None):
    """A measurement that takes `seconds` (or waits for `gate`), records each call, and reports its runs."""
    calls = calls if calls is not None else []

    def run(r, why, check, keep_going=None):
        calls.append((key, r, why))
        if gate is not None:
            gate.wait(10)
        deadline = time.time() + seconds
        while time.time() < deadline:
            check()
            time.sleep(0.01)
        return {"key": key, "runs": {"requested": runs, "done": r, "why": why},  # measured_at: the scheduler's clock
                "timing_s": {"model": seconds}}

    return Job(key, run, runs, warmup=1, units=units, background=background, session=session)


def hold_the_line(s: Scheduler, key="running") -> tuple[threading.Event, threading.Thread]:
    """A measurement of `key` that runs until the returned gate is set (the line is held meanwhile)."""
    gate, calls = threading.Event(), []
    t = threading.Thread(target=lambda: s.get(fake_job(key, calls=calls, gate=gate, seconds=0.0)))
    t.start()
    until(lambda: calls)
    return gate, t


def in_threads(fns):
    out, errs = [None] * len(fns), [None] * len(fns)

    def go(i):
        try:
            out[i] = fns[i]()
        except BaseException as exc:
            errs[i] = exc

    ts = [threading.Thread(target=go, args=(i,)) for i in range(len(fns))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    return out, errs


def test_concurrent_identical_requests_share_one_measurement():
    """Twelve visitors send the same request while it is being measured: one measurement, and the eleven who came
    later *joined* it (none waited for a second one, none got a stored copy)."""
    s = Scheduler()
    calls, gate = [], threading.Event()
    first = threading.Thread(target=lambda: out0.append(s.get(fake_job("same", calls=calls, gate=gate,
                                                                              session="v0"))))
    out0 = []
    first.start()
    until(lambda: calls)
    rest = threading.Thread(target=lambda: res.append(in_threads(
        [lambda i=i: s.get(fake_job("same", calls=calls, session=f"v{i}")) for i in range(1, 12)])))
    res = []
    rest.start()
    until(lambda: s.counts["joined"] >= 11)
    gate.set()
    first.join(10)
    rest.join(30)
    out, errs = res[0]
    out = out0 + out
    assert errs == [None] * 11
    assert len(calls) == 1 and s.counts["measured"] == 1  # one measurement ...
    assert all(o["key"] == "same" for o in out)  # ... given to every one of the twelve
    shared = [o for o in out if "shared" in o]
    assert len(shared) == 11  # all but the visitor it was measured for are told so
    assert all(o["shared"]["for"] == "another visitor" and o["shared"]["age_s"] >= 0 for o in shared)
    assert s.counts["joined"] == 11 and s.counts["stored"] == 0 and all(o["shared"]["joined"] for o in shared)


def test_a_changed_option_is_measured_anew():
    s = Scheduler()
    calls = []
    a = s.get(fake_job(("p", "q", 10, "fp32,int8"), calls=calls))
    b = s.get(fake_job(("p", "q", 11, "fp32,int8"), runs=11, calls=calls))  # one more run asked
    c = s.get(fake_job(("p", "q", 10, "fp32,int8,bf16"), calls=calls))  # one more variant
    d = s.get(fake_job(("p", "q", 10, "fp32,int8"), calls=calls))  # the first again: stored
    assert len(calls) == 3 and "shared" not in a and "shared" not in b and "shared" not in c
    assert d["shared"]["for"] == "another visitor" and d["key"] == a["key"]


def test_stored_results_expire_after_the_freshness_window():
    clock = Clock()
    s = Scheduler(fresh_s=300, clock=clock)
    calls = []
    s.get(fake_job("k", calls=calls, seconds=0.01, session="me"))
    clock.t += 299
    again = s.get(fake_job("k", calls=calls, seconds=0.01, session="me"))
    assert len(calls) == 1 and again["shared"]["for"] == "you"
    clock.t += 2  # 301 s after: measured anew
    fresh = s.get(fake_job("k", calls=calls, seconds=0.01))
    assert len(calls) == 2 and "shared" not in fresh


def test_memory_is_bounded():
    s = Scheduler(cache_size=5)
    for i in range(20):
        s.get(fake_job(i, seconds=0.0))
    assert len(s._cache) == 5 and set(s._cache) == set(range(15, 20))


def test_under_load_runs_adapt_and_say_why():
    """Ten different requests at once: the ones measured while others wait get fewer runs (at least 3), with the
    reason."""
    s = Scheduler(max_wait_s=2.0)
    s.cost.per_unit_s, s.cost.overhead_s, s.cost.samples = 1e-3, 0.0, 1  # 0.1 s per round for units=100
    gate, first = hold_the_line(s, "first")
    out = [None]
    rest = threading.Thread(target=lambda: out.__setitem__(0, in_threads(
        [lambda i=i: s.get(fake_job(f"k{i}", seconds=0.0)) for i in range(9)])))
    rest.start()
    time.sleep(0.5)  # all nine in line behind "first"
    gate.set()
    first.join(10)
    rest.join(30)
    results, errors = out[0]
    assert errors == [None] * 9
    got = {r["key"]: r["runs"] for r in results}
    squeezed = [r for r in got.values() if r["done"] < r["requested"]]
    assert squeezed, got  # the line was long: fewer runs ...
    assert all(r["done"] >= 3 and "in line" in r["why"] and "at least 3" in r["why"] for r in squeezed)  # ... said aloud


def test_a_long_line_is_refused_with_a_retry_estimate():
    # the clock stands still: the running job (10 runs + warm-up) is 11 s of work, each waiting one 4 s at 3 runs;
    # the first two wait 11 and 15 s before they start, the third would wait 19 s (over the 16 s allowed): it can
    # retry once 3 s of work are done and its own 4 s fit, in 7 s
    s = Scheduler(max_line_wait_s=16, clock=Clock())
    s.cost.per_unit_s, s.cost.overhead_s, s.cost.samples = 1e-2, 0.0, 1
    gate, t = hold_the_line(s, "running")
    waiting = [threading.Thread(target=lambda i=i: s.get(fake_job(f"w{i}", seconds=0.0))) for i in range(2)]
    for w in waiting:
        w.start()
    time.sleep(0.3)
    with pytest.raises(Busy, match="Queue is full") as info:
        s.get(fake_job("one too many", seconds=0.0))
    assert info.value.retry_s == pytest.approx(7.0) and "try again in about 7 s" in str(info.value)
    assert s.counts["refused"] == 1
    gate.set()
    t.join(10)
    for w in waiting:
        w.join(10)


def test_background_work_yields_to_a_visitor():
    s = Scheduler()
    calls = []
    bg = fake_job("example", seconds=5.0, calls=calls, background=True)
    err = []
    t = threading.Thread(target=lambda: err.append(pytest.raises(Abandoned, s.get, bg)))
    t.start()
    until(lambda: calls)
    t0 = time.time()
    r = s.get(fake_job("visitor", seconds=0.05))
    assert r["key"] == "visitor" and time.time() - t0 < 2.0  # not 5 s behind the background measurement
    t.join(10)
    assert s.counts["abandoned"] == 1 and s.stored("example") is None


def test_a_visitor_who_joins_a_background_measurement_keeps_it_going():
    """A visitor clicks the example being measured in the background: the measurement is now theirs, so another
    visitor arriving meanwhile (who would abandon background work) does not stop it."""
    s = Scheduler()
    calls = []
    bg = fake_job("example", seconds=0.6, calls=calls, background=True)
    t = threading.Thread(target=lambda: s.get(bg))
    t.start()
    until(lambda: calls)
    out = []
    joiner = threading.Thread(target=lambda: out.append(s.get(fake_job("example"))))  # the same example, clicked now
    joiner.start()
    until(lambda: s.counts["joined"] >= 1)
    other = s.get(fake_job("another question", seconds=0.0, calls=calls))  # a visitor waits: background work would stop here
    joiner.join(10)
    t.join(10)
    r = out[0]
    assert other["key"] == "another question"
    assert len(calls) == 2 and calls[0][0] == "example" and s.counts["abandoned"] == 0  # measured once, not stopped
    assert r["shared"]["joined"] is True and r["key"] == "example"
    assert r["shared"]["for"] == "the examples, measured in the background"


# ------------------------------------------------------------------ on the tiny model


def test_compare_service_key_is_exact(trained):
    svc = CompareService(trained)
    ex = tinymodels.held_out_examples(1, seed=81)[0]
    base = svc.job(ex.context, ex.question, 3, ("fp32-cpu", "int8-cpu")).key
    assert svc.job(ex.context, ex.question, 3, ("fp32-cpu", "int8-cpu")).key == base
    assert svc.job(ex.context + " ", ex.question, 3, ("fp32-cpu", "int8-cpu")).key != base
    assert svc.job(ex.context, ex.question, 4, ("fp32-cpu", "int8-cpu")).key != base
    assert svc.job(ex.context, ex.question, 3, ("fp32-cpu",)).key != base
    # the text as answered: a control character becomes a space, so it is the same question
    assert svc.job(ex.context, ex.question.replace(" ", "\x0b", 1), 3, ("fp32-cpu", "int8-cpu")).key == \
        svc.job(ex.context, ex.question.replace(" ", " ", 1), 3, ("fp32-cpu", "int8-cpu")).key


def test_the_example_cache_is_used(trained):
    """The examples are measured in the background; a visitor clicking one gets that result at once, told so."""
    svc = CompareService(trained, Scheduler())
    exs = [(e.context, e.question) for e in tinymodels.held_out_examples(2, seed=82)]
    svc.scheduler.start_background(lambda: [svc.job(p, q, 3, ("fp32-cpu", "int8-cpu"), background=True)
                                            for p, q in exs], idle_s=0.0, period_s=0.05)
    try:
        deadline = time.time() + 60
        while svc.scheduler.counts["measured"] < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert svc.scheduler.counts["measured"] == 2
        d = svc.compare(exs[1][0], exs[1][1], 3, ("fp32-cpu", "int8-cpu"), session="visitor")
    finally:
        svc.scheduler.stop()
    assert d["shared"]["for"] == "the examples, measured in the background" and d["shared"]["joined"] is False
    assert svc.scheduler.counts["measured"] == 2 and svc.scheduler.counts["stored"] == 1  # nothing measured anew
    assert d["results"][1]["answer"] == tinymodels.held_out_examples(2, seed=82)[1].answer


def test_bad_input_never_waits_in_line(trained):
    from quant import InputError

    svc = CompareService(trained)
    with pytest.raises(InputError, match="empty"):
        svc.compare("  ", "Where?", 3, ("fp32-cpu",))
    assert set(svc.scheduler.counts) >= {"measured", "joined", "stored", "refused", "abandoned"}
    assert not any(svc.scheduler.counts.values()) and not svc.scheduler.waiting_visitors()


def test_a_room_clicking_the_same_request_gets_one_measurement(app_demo):
    """Eight visitors send the same passage, question and options at once through the app: one measurement,
    eight answers, seven of them saying they were shared (bench/audience.py, as a user runs it)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from audience import run_audience

    before = dict(app_demo.scheduler.counts)
    rep = run_audience(app_demo.local_url, 8, "same", runs=7, timeout=120)  # 7 runs: not an example's stored result
    assert rep["answered"] == 8 and rep["refused"] == rep["failed"] == rep["wrong"] == 0, rep
    assert app_demo.scheduler.counts["measured"] - before["measured"] == 1
    assert rep["shared"]["count"] == 7 and rep["runs_done"] == {"7": 8}


def test_a_visitor_who_goes_away_while_waiting_never_blocks_the_line():
    s = Scheduler()
    gate, t = hold_the_line(s, "running")

    def gone(_pos, _eta):
        raise ConnectionError("the visitor closed the page")

    with pytest.raises(ConnectionError):
        s.get(fake_job("left", seconds=0.0), on_wait=gone)
    gate.set()
    t.join(10)
    assert s.get(fake_job("next", seconds=0.0))["key"] == "next"
    assert not s.waiting_visitors() and s._running is None  # nothing stuck in line


def test_a_measurement_stops_early_when_a_line_forms_behind_it():
    """Visitors reach the line over seconds: one measured with 10 runs when it started alone stops after its 3rd
    run once nine more have arrived, and says why."""
    s = Scheduler(max_wait_s=1.0)
    s.cost.per_unit_s, s.cost.overhead_s, s.cost.samples = 1e-3, 0.0, 1  # 0.1 s per round (units=100)
    done = []

    def run(r, why, check, keep_going):
        for i in range(1, r + 1):
            time.sleep(0.05)
            reason = keep_going(i) if i < r else None
            if reason:
                done.append((i, reason))
                return {"runs": {"requested": 10, "done": i, "why": reason}}
        done.append((r, why))
        return {"runs": {"requested": 10, "done": r, "why": why}}

    first = threading.Thread(target=lambda: s.get(Job("first", run, 10, warmup=1, units=100)))
    first.start()
    time.sleep(0.12)  # it started alone: 10 runs planned
    rest = [threading.Thread(target=lambda i=i: s.get(fake_job(f"k{i}", seconds=0.0))) for i in range(9)]
    for t in rest:
        t.start()
    first.join(10)
    for t in rest:
        t.join(10)
    n, reason = done[0]
    assert 3 <= n < 10 and "in line" in reason, done[0]


def test_compare_reports_the_runs_it_did_when_stopped_early(trained):
    ex = tinymodels.held_out_examples(1, seed=83)[0]
    c = compare(trained, ex.context, ex.question, runs=6, keep_going=lambda done: "a line formed" if done >= 2 else None)
    assert c.runs == 2 and all(r.latency.runs == 2 for r in c.results if r.available)
    d = c.to_dict()
    assert d["runs"] == {"requested": 6, "done": 2, "why": "stopped after 2 of 6 runs: a line formed"}


def test_a_waiting_visitor_is_told_how_many_are_ahead_and_when_theirs_starts():
    """on_wait gets the measurements ahead (the running one included) and a positive wait; a visitor whose twin is
    being measured is told 0 (it is running now)."""
    s = Scheduler()
    gate, first = hold_the_line(s, "running")
    seen = {"second": [], "third": [], "twin": []}

    def waiter(name, key):
        return lambda: s.get(fake_job(key, seconds=0.0), on_wait=lambda pos, eta: seen[name].append((pos, eta)))

    ts = []
    for name, key in (("second", "b"), ("third", "c")):
        ts.append(threading.Thread(target=waiter(name, key)))
        ts[-1].start()
        while not seen[name]:
            time.sleep(0.01)
    ts.append(threading.Thread(target=waiter("twin", "running")))
    ts[-1].start()
    while not seen["twin"]:
        time.sleep(0.01)
    gate.set()
    for t in [first, *ts]:
        t.join(10)
    assert seen["second"][0][0] == 1 and seen["third"][0][0] == 2  # one ahead (running), then two
    assert seen["second"][0][1] > 0 and seen["third"][0][1] > seen["second"][0][1]  # a longer wait further back
    assert seen["twin"][0][0] == 0  # its twin is the one running


# ------------------------------------------------------------------ a public Space: heavy, greedy or gone (issue 21)


class Rounds:
    """A measurement that does `asked` rounds on a hand-moved clock (each round moves it by `round_s`), asking
    keep_going after each, as compare() does; records the runs it did and why it stopped."""

    def __init__(self, clock: Clock, round_s: float, gate=None):
        self.clock, self.round_s, self.gate, self.done = clock, round_s, gate, []

    def __call__(self, r, why, check, keep_going=None):
        self.clock.t += self.round_s  # the warm-up round
        for i in range(1, r + 1):
            if self.gate is not None and i == 2:
                self.gate.wait(10)
            self.clock.t += self.round_s
            check()
            stop = keep_going(i) if keep_going and i < r else None
            if stop:
                self.done.append((i, stop))
                return {"runs": {"requested": r, "done": i, "why": stop}, "timing_s": {"model": 0.0}}
        self.done.append((r, why))
        return {"runs": {"requested": r, "done": r, "why": why}, "timing_s": {"model": 0.0}}


def calibrated(s: Scheduler, round_s: float, units: int = 100) -> None:
    s.cost.per_unit_s, s.cost.overhead_s, s.cost.samples = round_s / units, 0.0, 1


def test_a_lone_visitor_gets_every_run_asked():
    """20 runs asked on an idle server, each round 1.4 s (29 s in all): nobody waits, so nothing is cut (it was cut
    to 12: the rounds already done were charged again, and the job counted against its own wait)."""
    clock = Clock()
    s = Scheduler(clock=clock)
    calibrated(s, 1.4)
    work = Rounds(clock, 1.4)
    d = s.get(Job("alone", work, 20, warmup=1, units=100, session="v"))
    assert d["runs"] == {"requested": 20, "done": 20, "why": ""} and work.done == [(20, "")]


def test_adaptive_runs_charge_only_the_rounds_still_to_go():
    """With one visitor waiting, the running job may take the runs that give that visitor their result within
    MAX_WAIT_S, counting only its rounds still to go."""
    clock = Clock()
    s = Scheduler(clock=clock, max_wait_s=14.0)
    calibrated(s, 1.0)
    job = Job("running", None, 20, warmup=1, units=100, session="a")
    s._enqueue(job)  # dispatched: it runs
    waiting = Job("waiting", None, 3, warmup=1, units=100, session="b")
    s._enqueue(waiting)  # arrived now; its own measurement takes 4 s
    # 9 runs + warm-up = 10 s, then the visitor's own 4 s: their result exactly at MAX_WAIT_S
    assert s.runs_for(job)[0] == 9
    clock.t += 6.0  # 5 runs and the warm-up done, 6 s later for the visitor
    assert s.runs_for(job, done=5)[0] == 9  # the same plan: 4 rounds to go, then the visitor's 4 s
    clock.t += 4.0  # 9 runs done: the visitor starts now
    assert s.runs_for(job, done=9) == (9, "1 request in line; 9 runs each keep every wait near 14 s (at least 3)")


def test_a_task_never_teaches_the_measurement_cost_model():
    """Exclusive work (an Evaluate, Recipes) used to feed the Compare cost model with a guessed unit count: one
    600 s turn doubled every later estimate. Now only measurements do."""
    clock = Clock()
    s = Scheduler(clock=clock)
    calibrated(s, 0.1)
    before = (s.cost.per_unit_s, s.cost.samples)

    def long_task(turn):
        for _ in range(20):
            clock.t += 30.0  # 600 s in all, in 30 s steps between safe points
            turn()
        return "done"

    assert s.task(long_task, label="recipes", session="r") == "done"
    assert (s.cost.per_unit_s, s.cost.samples) == before
    assert s.turn_costs.seconds("recipes") > 0  # its own figure


def test_a_long_task_takes_turns_with_visitors():
    """An evaluation runs in turns: a visitor who arrives meanwhile is measured at its next safe point, not after
    the whole evaluation; the evaluation then completes."""
    s = Scheduler(turn_s=0.05)
    done, steps, visitor_at = [], [], []
    started = threading.Event()

    def evaluation(turn):
        for i in range(60):
            started.set()
            turn()
            steps.append(i)
            time.sleep(0.01)
        return len(steps)

    t = threading.Thread(target=lambda: done.append(s.task(evaluation, label="evaluation", session="e", turns=60)))
    t.start()
    started.wait(5)
    r = s.get(fake_job("visitor", seconds=0.0, session="v"))
    visitor_at.append(len(steps))
    t.join(30)
    assert r["key"] == "visitor" and done == [60]
    assert visitor_at[0] < 30, visitor_at  # served between turns, well before the 60 steps ended
    assert s.counts["turns"] >= 1


def test_fair_share_round_robin_and_a_cap_per_visitor():
    """One visitor with many requests in line gets one turn per round, and at most MAX_PER_CLIENT in line;
    the rest are refused at once with a line that says why."""
    s = Scheduler()
    calibrated(s, 0.001)
    gate, first = hold_the_line(s, "running")
    order = []

    def job(key, session):
        return fake_job(key, seconds=0.0, calls=order, session=session)

    greedy, errors = [], []
    for i in range(MAX_PER_CLIENT + 3):
        th = threading.Thread(target=lambda i=i: _catch(lambda: s.get(job(f"g{i}", "greedy")), errors))
        th.start()
        greedy.append(th)
        time.sleep(0.02)
    time.sleep(0.1)
    others = [threading.Thread(target=lambda i=i: s.get(job(f"v{i}", f"visitor{i}"))) for i in range(3)]
    for th in others:
        th.start()
        time.sleep(0.02)
    time.sleep(0.1)
    gate.set()
    for th in [first, *greedy, *others]:
        th.join(10)
    refused = [e for e in errors if isinstance(e, Busy)]
    assert len(refused) == 3 and all(f"at most {MAX_PER_CLIENT} per visitor" in str(e) for e in refused)
    keys = [k for k, _, _ in order]
    assert sorted(keys) == sorted([f"g{i}" for i in range(MAX_PER_CLIENT)] + ["v0", "v1", "v2"])
    # round-robin: one turn per visitor per round — the greedy one's first request, then each other visitor's
    # (who all arrived after its four), then the greedy one's next
    assert keys == ["g0", "v0", "v1", "v2", "g1", "g2", "g3"], keys


def _catch(fn, errors):
    try:
        fn()
    except BaseException as exc:
        errors.append(exc)


def test_results_are_keyed_on_what_shaped_them(trained):
    """A result measured while a variant could not run (static INT8 building) or with another thread setting is
    never served for a request that would run differently."""
    svc = CompareService(trained)
    ex = tinymodels.held_out_examples(1, seed=84)[0]
    base = svc.key(ex.context, ex.question, 3, ("fp32-cpu", "int8-cpu"))
    assert base[-2] == ("fp32-cpu", "int8-cpu") and base[-1] == (trained.threads, trained.threads_fixed)
    old = trained._variants["int8-cpu"]
    try:  # int8 unavailable now (as static INT8 is while it builds): another key
        from quant.variants import _Variant

        trained._variants["int8-cpu"] = _Variant("int8-cpu", None, "cpu", "being built", pending=True)
        assert svc.key(ex.context, ex.question, 3, ("fp32-cpu", "int8-cpu")) != base
    finally:
        trained._variants["int8-cpu"] = old
    assert svc.key(ex.context, ex.question, 3, ("fp32-cpu", "int8-cpu")) == base


def test_degraded_results_are_shared_briefly_and_labelled():
    clock = Clock()
    s = Scheduler(clock=clock, degraded_fresh_s=30)

    def job(key, cut):
        def run(r, why, check, keep_going=None):
            return {"key": key, "runs": {"requested": 10, "done": 3 if cut else 10, "why": ""},
                    "degraded": ["timed with 3 of 10 runs: the line was long"] if cut else [],
                    "timing_s": {"model": 0.1}}
        return Job(key, run, 10, units=10, degraded=lambda d: "; ".join(d.get("degraded") or ()))

    s.get(job("cut", True))
    s.get(job("clean", False))
    clock.t += 20
    shared = s.get(job("cut", True))
    assert shared["shared"]["degraded"] == "timed with 3 of 10 runs: the line was long"
    clock.t += 20  # 40 s after: the degraded one is measured anew, the clean one is still shared
    assert "shared" not in s.get(job("cut", True))
    clean = s.get(job("clean", False))
    assert "degraded" not in clean["shared"] and clean["shared"]["age_s"] == 40


def test_stored_results_last_five_minutes_by_default():
    clock = Clock()
    s = Scheduler(clock=clock)
    assert FRESH_S == 300 and s.fresh_s == 300
    calls = []
    s.get(fake_job("k", calls=calls, seconds=0.0))
    clock.t += 299
    assert s.get(fake_job("k", calls=calls, seconds=0.0))["shared"]["age_s"] == 299
    clock.t += 2
    s.get(fake_job("k", calls=calls, seconds=0.0))
    assert len(calls) == 2


def test_a_visitor_who_leaves_is_no_longer_measured():
    """gone() turns True while the measurement runs and nobody else waits for it: it stops at its next safe
    point (Gradio's progress never raises, so this is how the line learns the page was closed)."""
    s = Scheduler()
    left = threading.Event()
    calls = []
    err = []
    t = threading.Thread(target=lambda: _catch(lambda: s.get(fake_job("k", seconds=5.0, calls=calls),
                                                                gone=left.is_set), err))
    t.start()
    until(lambda: calls)
    t0 = time.time()
    left.set()
    t.join(10)
    assert isinstance(err[0], Cancelled) and time.time() - t0 < 2.0
    assert s.counts["cancelled"] == 1 and s.stored("k") is None and not s.waiting_visitors()


def test_when_the_owner_leaves_a_visitor_who_joined_gets_the_measurement():
    """The first visitor waits in line, a second joins its request, the first closes the page: the second is
    measured (it used to get the first one's error)."""
    s = Scheduler()
    gate, first = hold_the_line(s, "running")
    owner_left = threading.Event()
    errs, out = [], []
    owner = threading.Thread(target=lambda: _catch(lambda: s.get(fake_job("q", seconds=0.0, session="a"),
                                                                    gone=owner_left.is_set), errs))
    owner.start()
    time.sleep(0.1)
    joiner = threading.Thread(target=lambda: out.append(s.get(fake_job("q", seconds=0.0, session="b"))))
    joiner.start()
    until(lambda: s.counts["joined"] >= 1)
    owner_left.set()
    owner.join(10)
    gate.set()
    first.join(10)
    joiner.join(10)
    assert isinstance(errs[0], Cancelled)
    assert out and out[0]["key"] == "q" and s.counts["measured"] == 2


def test_a_malformed_result_never_wedges_the_line():
    """The bookkeeping after a measurement always finishes: a result that is not a dict is an error for its
    waiters, and the next request is served."""
    s = Scheduler()
    bad = Job("bad", lambda r, why, check, keep_going=None: ["not", "a", "dict"], 3, units=10)
    with pytest.raises(RuntimeError, match="returned no result"):
        s.get(bad)
    assert s.get(fake_job("next", seconds=0.0))["key"] == "next" and not s.waiting_visitors()


def test_the_watchdog_abandons_a_hung_measurement():
    """A measurement that runs far past its estimate is abandoned: those waiting for it get one clear line, the
    next visitor is served, and the hung work stops at its next safe point."""
    clock = Clock()
    s = Scheduler(clock=clock)
    calibrated(s, 0.1)
    gate, calls, errs = threading.Event(), [], []
    hung = threading.Thread(target=lambda: _catch(lambda: s.get(fake_job("hung", gate=gate, calls=calls,
                                                                         seconds=0.0)), errs))
    hung.start()
    until(lambda: calls)
    joined = []
    twin = threading.Thread(target=lambda: _catch(lambda: s.get(fake_job("hung")), joined))
    twin.start()
    out = []
    nxt = threading.Thread(target=lambda: out.append(s.get(fake_job("next", seconds=0.0))))
    nxt.start()
    time.sleep(0.2)
    assert not out  # behind the hung one
    limit = s.watchdog_limit(s._running)
    clock.t += limit + 1
    twin.join(10)
    nxt.join(10)
    assert out and out[0]["key"] == "next"
    assert isinstance(joined[0], Overran) and "far past its estimate" in str(joined[0])
    gate.set()
    hung.join(10)
    assert isinstance(errs[0], Overran) and s.counts["overran"] == 1


def test_waiters_are_not_woken_for_nothing():
    """A waiter is told its place when it changes, not twice a second: with the line unchanged for a second, each
    waiter hears once (250 waiters used to make ~500 wake-ups a second under the lock, while FP32 was timed)."""
    s = Scheduler(wake_s=0.1)
    calibrated(s, 0.0)
    s.cost.overhead_s = 0.0  # estimates that do not move with the clock
    gate, first = hold_the_line(s, "running")
    heard = {i: [] for i in range(20)}
    ts = [threading.Thread(target=lambda i=i: s.get(fake_job(f"w{i}", seconds=0.0),
                                                    on_wait=lambda pos, eta, i=i: heard[i].append(pos)))
          for i in range(20)]
    for t in ts:
        t.start()
    time.sleep(1.0)
    assert all(len(h) == 1 for h in heard.values()), {i: len(h) for i, h in heard.items()}
    gate.set()
    for t in [first, *ts]:
        t.join(10)


def test_a_task_can_be_cancelled_and_the_line_moves_on():
    s = Scheduler()
    stop = threading.Event()
    steps, errs = [], []

    def evaluation(turn):
        for i in range(1000):
            turn()
            steps.append(i)
            time.sleep(0.005)

    t = threading.Thread(target=lambda: _catch(lambda: s.task(evaluation, label="evaluation", session="e",
                                                              gone=stop.is_set), errs))
    t.start()
    until(lambda: len(steps) >= 5)
    stop.set()  # Cancel pressed (or the page closed)
    t.join(10)
    assert isinstance(errs[0], Cancelled) and len(steps) < 1000
    assert s.get(fake_job("next", seconds=0.0))["key"] == "next"


def test_a_running_turn_past_its_estimate_still_counts_in_the_wait():
    """Once running work passes its estimate, the wait estimate used to count its remainder as 0: visitors were
    admitted with an ETA of seconds behind a turn with minutes to go."""
    clock = Clock()
    s = Scheduler(clock=clock)
    calibrated(s, 1.0)
    job = Job("long", None, 20, warmup=1, units=100, session="a")
    s._enqueue(job)
    clock.t += 100.0  # far past its 21 s plan
    assert s.line_seconds() > 0
    waiting = Job("w", None, 3, warmup=1, units=100, session="b")
    s._enqueue(waiting)
    assert s._place(waiting) == (1, pytest.approx(2.1))  # a tenth of its plan, not 0


def test_a_failed_measurement_reaches_everyone_who_joined_it():
    """The owner's measurement fails: each visitor who joined it gets that failure (one clear error), not a wait
    forever, and the next request is served."""
    s = Scheduler()
    gate, calls = threading.Event(), []

    def failing(r, why, check, keep_going=None):
        calls.append(r)
        gate.wait(10)
        raise RuntimeError("the kernel said no")

    errs = []
    ts = [threading.Thread(target=lambda: _catch(lambda: s.get(Job("k", failing, 3, units=10)), errs))]
    ts[0].start()
    until(lambda: calls)
    ts += [threading.Thread(target=lambda i=i: _catch(lambda: s.get(Job("k", failing, 3, units=10, session=f"j{i}")),
                                                       errs)) for i in range(3)]
    for t in ts[1:]:
        t.start()
    until(lambda: s.counts["joined"] >= 3)
    gate.set()
    for t in ts:
        t.join(10)
    assert len(calls) == 1 and len(errs) == 4 and all(str(e) == "the kernel said no" for e in errs)
    assert s.stored("k") is None and s.get(fake_job("next", seconds=0.0))["key"] == "next"


def test_concurrent_tokenization_never_returns_a_window_longer_than_max_length(trained):
    """The crash seen on the Space: visitors' requests are tokenized in Gradio's worker threads, and a fast tokenizer
    keeps its truncation setting on the shared Rust object; a question-only call from one thread (no truncation) could
    land between another thread's "truncate to 384" and its encode, which then came back as ONE window of every
    token of the passage. The static INT8 package read positions past its 512 and aborted the process. Every
    tokenizer call now goes one at a time (quant.qa.tokenize), and a window longer than max_length is refused."""
    from quant.qa import encode

    passage = " ".join(["The quick brown fox jumps over the lazy dog in Paris in 1900."] * 30)  # ~420 tokens
    bad, errors = [], []

    def worker(i):
        for _ in range(60):
            try:
                e = encode(trained.tokenizer, f"Where did the fox jump {i}?", passage, max_length=128)
            except Exception as exc:
                errors.append(exc)
                continue
            if e.n_tokens > 128 or e.n_windows < 2:
                bad.append((e.n_windows, e.n_tokens))

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errors, errors[:3]
    assert not bad, f"{len(bad)} of 480 encodings came back untruncated, e.g. {bad[:3]}"
