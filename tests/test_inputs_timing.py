"""Input validation and latency statistics."""

import pytest

from quant.compare import compare, predict
from quant.inputs import MAX_CONTEXT_CHARS, InputError, check_inputs, clean_text
from quant.timing import LatencyStats, measure, measure_interleaved, percentile


def test_clean_text_keeps_length():
    s = "a\x00b\x07c\nd\ud800e"
    out = clean_text(s)
    assert len(out) == len(s) and "\x00" not in out and "\n" in out and "\ufffd" in out


@pytest.mark.parametrize("ctx,q,runs,msg", [
    ("", "q", 1, "passage is empty"),
    (" \n\t", "q", 1, "passage is empty"),
    ("text", "   ", 1, "question is empty"),
    (None, "q", 1, "passage is missing"),
    (123, "q", 1, "must be text"),
    ("x" * (MAX_CONTEXT_CHARS + 1), "q", 1, "limit is 10,000"),
    ("text", "q" * 301, 1, "question is too long"),
    ("text", "q", 0, "from 1 to 50"),
    ("text", "q", 51, "from 1 to 50"),
    ("text", "q", 2.5, "whole number"),
    ("text", "q", "ten", "whole number"),
    ("text", "q", True, "whole number"),
])
def test_bad_inputs(ctx, q, runs, msg):
    with pytest.raises(InputError, match=msg):
        check_inputs(ctx, q, runs)


def test_good_inputs_pass():
    assert check_inputs("a passage", "a question", 5.0) == ("a passage", "a question", 5)


def test_percentile_matches_numpy_linear():
    xs = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(xs, 50) == 3.0
    assert percentile(xs, 90) == pytest.approx(4.6)
    s = LatencyStats.from_samples(xs)
    assert (s.median, s.min, s.runs) == (3.0, 1.0, 5)


def test_measure_counts_runs_and_warmup():
    calls = []
    stats, out = measure(lambda: calls.append(1) or len(calls), runs=4, warmup=2)
    assert len(calls) == 6 and stats.runs == 4 and out == 6


def test_interleaved_isolates_failures():
    order = []

    def make(name):
        return lambda: order.append(name)

    def boom():
        raise RuntimeError("GPU fell off the bus")

    res = measure_interleaved({"a": (make("a"), None), "b": (make("b"), None), "c": (boom, None)}, runs=3, warmup=1)
    assert res["a"][0].runs == 3 and res["b"][0].runs == 3
    assert res["c"][0] is None and "bus" in str(res["c"][2])
    assert order.count("a") == order.count("b") == 4  # one warm-up + three timed each


def test_interleaved_varies_each_variants_predecessor():
    """A fixed rotation keeps every variant's predecessor (a spinning runtime would always tax the same one)."""
    order = []
    names = ["a", "b", "c", "d"]
    measure_interleaved({n: ((lambda n=n: order.append(n)), None) for n in names}, runs=40, warmup=0)
    rounds = [order[i:i + 4] for i in range(0, len(order), 4)]
    assert rounds[0] == names and all(sorted(r) == names for r in rounds)  # each runs once per round
    preds = {n: set() for n in names}
    for prev, cur in zip(order, order[1:]):
        preds[cur].add(prev)
    assert all(len(p - {n}) == 3 for n, p in preds.items()), preds  # every other variant came before each one


def test_interleaved_settles_outside_the_clock():
    import time

    res = measure_interleaved({"spinner": (lambda: None, None), "other": (lambda: None, None)}, runs=3, warmup=1,
                              settle_s={"spinner": 0.05})
    assert res["spinner"][0].median < 5 and res["other"][0].median < 5  # ms: the pause is not timed
    t0 = time.perf_counter()
    measure_interleaved({"spinner": (lambda: None, None)}, runs=3, warmup=1, settle_s={"spinner": 0.05})
    assert time.perf_counter() - t0 >= 4 * 0.05  # but it happens, after every call


def test_window_bound_is_in_windows_not_characters(trained):
    """10,000 characters of prose fit; 10,000 of punctuation are one token each and exceed 32 windows."""
    from quant.inputs import MAX_WINDOWS

    prose = ("Ada Lovelace was born in London in 1815. " * 250)[:MAX_CONTEXT_CHARS]
    c = compare(trained, prose, "When was Ada Lovelace born?", runs=50)
    assert c.windows <= MAX_WINDOWS
    assert c.windows * (c.runs + 1) <= 100 and c.notes  # warm-up counted in the per-request cap
    with pytest.raises(InputError, match=r"needs \d+ windows .* limit is 32 windows"):
        compare(trained, "!" * MAX_CONTEXT_CHARS, "When?", runs=1)
    with pytest.raises(InputError, match="limit is 32 windows"):
        predict(trained, "!" * MAX_CONTEXT_CHARS, "When?")
    with pytest.raises(InputError, match="limit is 10,000"):
        predict(trained, "x " * 500_000, "When?")  # refused before tokenizing


@pytest.mark.parametrize("warmup", [-1, 11, 2.5, "3", True])
def test_warmup_is_validated(trained, warmup):
    with pytest.raises(InputError, match="Warm-up runs must be a whole number from 0 to 10"):
        compare(trained, "Ada was born in Paris.", "Where?", runs=1, warmup=warmup)


def test_windows_run_in_bounded_batches(trained):
    """predict() sends at most WINDOW_BATCH windows through the model per call."""
    from quant.inputs import WINDOW_BATCH

    model = trained._variants["fp32-cpu"].model
    sizes = []
    handle = model.register_forward_pre_hook(lambda m, args, kw: sizes.append(kw["input_ids"].shape[0]),
                                             with_kwargs=True)
    try:
        saved, trained.max_length = trained.max_length, 64
        context = " ".join(["The river runs through the old town."] * 60) + " Ada Lovelace was born in 1815."
        predict(trained, context, "When was Ada Lovelace born?", variants=["fp32-cpu"])
    finally:
        trained.max_length = saved
        handle.remove()
    assert sum(sizes) > WINDOW_BATCH and max(sizes) <= WINDOW_BATCH
