"""Many visitors (quant/serving.py): one measurement at a time, shared by identical requests, said aloud."""

import threading
import time

import pytest

import tinymodels
from quant.serving import Abandoned, Busy, CompareService, Job, Scheduler


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
    while not calls:
        time.sleep(0.01)
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
    s = Scheduler()
    calls = []
    out, errs = in_threads([lambda i=i: s.get(fake_job("same", calls=calls, session=f"v{i}")) for i in range(12)])
    assert errs == [None] * 12
    assert len(calls) == 1 and s.counts["measured"] == 1  # one measurement ...
    assert all(o["key"] == "same" for o in out)  # ... given to every one of the twelve
    shared = [o for o in out if "shared" in o]
    assert len(shared) == 11  # all but the visitor it was measured for are told so
    assert all(o["shared"]["for"] == "another visitor" and o["shared"]["age_s"] >= 0 for o in shared)
    assert s.counts["joined"] + s.counts["stored"] == 11


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
    reason; the estimate keeps the whole line near MAX_WAIT_S."""
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
    # the clock stands still: the running job (10 runs + warm-up) is 1.1 s of work, each waiting one 0.4 s at 3 runs;
    # the first two wait 1.1 and 1.5 s before they start, the third would wait 1.9 s (over the 1.6 s allowed)
    s = Scheduler(max_line_wait_s=1.6, clock=Clock())
    s.cost.per_unit_s, s.cost.overhead_s, s.cost.samples = 1e-3, 0.0, 1
    gate, t = hold_the_line(s, "running")
    waiting = [threading.Thread(target=lambda i=i: s.get(fake_job(f"w{i}", seconds=0.0))) for i in range(2)]
    for w in waiting:
        w.start()
    time.sleep(0.3)
    with pytest.raises(Busy, match="Queue is full") as info:
        s.get(fake_job("one too many", seconds=0.0))
    assert info.value.retry_s > 0 and "try again in about" in str(info.value)
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
    while not calls:
        time.sleep(0.01)
    t0 = time.time()
    r = s.get(fake_job("visitor", seconds=0.05))
    assert r["key"] == "visitor" and time.time() - t0 < 2.0  # not 5 s behind the background measurement
    t.join(10)
    assert s.counts["abandoned"] == 1 and s.stored("example") is None


def test_a_visitor_who_joins_a_background_measurement_keeps_it_going():
    s = Scheduler()
    calls = []
    bg = fake_job("example", seconds=0.5, calls=calls, background=True)
    t = threading.Thread(target=lambda: s.get(bg))
    t.start()
    while not calls:
        time.sleep(0.01)
    r = s.get(fake_job("example"))  # the same example, clicked while it is being measured in the background
    t.join(10)
    assert len(calls) == 1 and r["shared"]["joined"] is True
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
    assert svc.scheduler.counts == {"measured": 0, "joined": 0, "stored": 0, "refused": 0, "abandoned": 0}


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
    assert s.get(fake_job("next", seconds=0.0))["key"] == "next" and not s._line  # nothing stuck in line


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
    c = trained.compare(ex.context, ex.question, runs=6, keep_going=lambda done: "a line formed" if done >= 2 else None)
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
