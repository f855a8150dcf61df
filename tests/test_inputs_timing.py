"""Input validation and latency statistics."""

import pytest

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


def test_interleaved_rotates_and_isolates_failures():
    order = []

    def make(name):
        return lambda: order.append(name)

    def boom():
        raise RuntimeError("GPU fell off the bus")

    res = measure_interleaved({"a": (make("a"), None), "b": (make("b"), None), "c": (boom, None)}, runs=3, warmup=1)
    assert res["a"][0].runs == 3 and res["b"][0].runs == 3
    assert res["c"][0] is None and "bus" in str(res["c"][2])
    timed = order[2:]  # after one warm-up each
    assert timed[:2] == ["a", "b"] and timed[2:4] == ["b", "a"]  # order rotates each round
