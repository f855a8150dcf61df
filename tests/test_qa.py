"""Span search on hand-made logits: a pure function of logits and offsets."""

import numpy as np
import pytest

from quant.qa import best_span

NEG = -10.0


def window(n_question=3, n_context=8, chars_per_token=5, first_char=0):
    """[CLS] q q q [SEP] c c c ... [SEP]: offsets, context mask, flat logits."""
    T = 1 + n_question + 1 + n_context + 1
    offsets = np.zeros((T, 2), dtype=np.int64)
    mask = np.zeros(T, dtype=bool)
    for k in range(n_context):
        t = 2 + n_question + k
        offsets[t] = (first_char + k * chars_per_token, first_char + k * chars_per_token + chars_per_token - 1)
        mask[t] = True
    return offsets, mask, np.full(T, NEG), np.full(T, NEG)


def ctx_tok(k, n_question=3):
    return 2 + n_question + k


def test_best_span_simple():
    off, mask, s, e = window()
    s[ctx_tok(2)] = 8
    e[ctx_tok(3)] = 8
    span = best_span(s[None], e[None], off[None], mask[None])
    assert (span.start, span.end) == (10, 19)
    assert 0.9 < span.score <= 1.0 and not span.is_null


def test_end_before_start_is_rejected():
    off, mask, s, e = window()
    s[ctx_tok(5)] = 9  # the best start ...
    e[ctx_tok(1)] = 9  # ... comes after the best end: independent argmax would give a reversed span
    e[ctx_tok(6)] = 6
    span = best_span(s[None], e[None], off[None], mask[None])
    assert span.start == off[ctx_tok(5), 0] and span.end == off[ctx_tok(6), 1]
    assert span.start < span.end


def test_question_tokens_are_excluded():
    off, mask, s, e = window()
    s[2] = 20  # a question token with huge logits
    e[2] = 20
    s[ctx_tok(0)] = 5
    e[ctx_tok(0)] = 5
    span = best_span(s[None], e[None], off[None], mask[None], allow_null=False)
    assert (span.start, span.end) == tuple(off[ctx_tok(0)])


def test_max_answer_length():
    off, mask, s, e = window(n_context=40)
    s[ctx_tok(0)] = 9
    e[ctx_tok(35)] = 9  # 36 tokens: longer than allowed
    e[ctx_tok(4)] = 5
    span = best_span(s[None], e[None], off[None], mask[None], max_answer_tokens=30)
    assert span.end == off[ctx_tok(4), 1]
    span = best_span(s[None], e[None], off[None], mask[None], max_answer_tokens=40)
    assert span.end == off[ctx_tok(35), 1]


def test_answer_in_second_window():
    w1 = window(first_char=0)
    w2 = window(first_char=20)  # overlapping window further into the passage
    w2[2][ctx_tok(6)] = 9
    w2[3][ctx_tok(7)] = 9
    w1[2][ctx_tok(1)] = 2  # a weak candidate in the first window
    w1[3][ctx_tok(1)] = 2
    S = np.stack([w1[2], w2[2]])
    E = np.stack([w1[3], w2[3]])
    span = best_span(S, E, np.stack([w1[0], w2[0]]), np.stack([w1[1], w2[1]]))
    assert span.window == 1
    assert (span.start, span.end) == (20 + 6 * 5, 20 + 7 * 5 + 4)


def test_no_answer_when_null_wins():
    off, mask, s, e = window()
    s[0] = e[0] = 9  # [CLS]
    s[ctx_tok(2)] = e[ctx_tok(2)] = 3
    span = best_span(s[None], e[None], off[None], mask[None])
    assert span.is_null and (span.start, span.end) == (0, 0)
    assert span.score == pytest.approx(span.null_score)
    # a SQuAD1-style caller can forbid "no answer"
    forced = best_span(s[None], e[None], off[None], mask[None], allow_null=False)
    assert not forced.is_null and (forced.start, forced.end) == tuple(off[ctx_tok(2)])


def test_answer_wins_over_weaker_null():
    off, mask, s, e = window()
    s[0] = e[0] = 3
    s[ctx_tok(2)] = e[ctx_tok(2)] = 9
    assert not best_span(s[None], e[None], off[None], mask[None]).is_null


def test_null_uses_minimum_over_windows():
    """A window that does not see the answer votes 'no answer'; the one that sees it must win."""
    a, b = window(), window(first_char=20)
    a[2][0] = a[3][0] = 9  # window 1: confident null
    b[2][0] = b[3][0] = -5
    b[2][ctx_tok(3)] = b[3][ctx_tok(3)] = 6
    span = best_span(np.stack([a[2], b[2]]), np.stack([a[3], b[3]]), np.stack([a[0], b[0]]), np.stack([a[1], b[1]]))
    assert span.window == 1


def test_bad_max_length():
    off, mask, s, e = window()
    with pytest.raises(ValueError):
        best_span(s[None], e[None], off[None], mask[None], max_answer_tokens=0)


def test_span_is_widened_to_whole_words():
    """A start on a '##' continuation piece must not cut a word in half."""
    off, mask, s, e = window()
    words = np.full(len(mask), -1)
    # passage tokens 0..7 -> words 0,0,1,2,2,2,3,4 ("sci ##entific", "fields", "War ##s ##aw", ...)
    for k, w in enumerate([0, 0, 1, 2, 2, 2, 3, 4]):
        words[ctx_tok(k)] = w
    s[ctx_tok(1)] = 9  # start on "##entific"
    e[ctx_tok(3)] = 9  # end on "War" (more pieces follow)
    raw = best_span(s[None], e[None], off[None], mask[None])
    span = best_span(s[None], e[None], off[None], mask[None], word_ids=words[None])
    assert (raw.start, raw.end) == (off[ctx_tok(1), 0], off[ctx_tok(3), 1])
    assert (span.start, span.end) == (off[ctx_tok(0), 0], off[ctx_tok(5), 1])
    assert span.score == raw.score


def test_score_gap_is_how_far_below_its_own_answer_the_logits_put_another():
    from quant.qa import score_gap

    off, mask, s, e = window()
    s[ctx_tok(2)], e[ctx_tok(3)] = 5.0, 5.0  # the answer: tokens 2..3, characters 10..19
    s[ctx_tok(5)], e[ctx_tok(5)] = 4.9, 4.8  # the runner-up alone: token 5, characters 25..29
    allowed = mask.copy()
    allowed[0] = True  # [CLS] stays in the softmax (no answer)

    def p(x):
        z = np.where(allowed, np.exp(x - x[allowed].max()), 0.0)
        return z / z.sum()

    ps, pe = p(s), p(e)
    best = ps[ctx_tok(2)] * pe[ctx_tok(3)]
    gap = score_gap(s[None], e[None], off[None], mask[None], 25, 29)
    assert gap == pytest.approx((best - ps[ctx_tok(5)] * pe[ctx_tok(5)]) / best)
    assert 0.0 < gap < 0.3
    assert score_gap(s[None], e[None], off[None], mask[None], 10, 19) == 0.0  # its own answer
    assert score_gap(s[None], e[None], off[None], mask[None], 10, 29) == pytest.approx(
        (best - ps[ctx_tok(2)] * pe[ctx_tok(5)]) / best)  # start of one, end of the other
    null = ps[0] * pe[0]
    assert score_gap(s[None], e[None], off[None], mask[None], 0, 0) == pytest.approx((best - null) / best)  # no answer
    assert score_gap(s[None], e[None], off[None], mask[None], 0, 4, k=3) == 1.0  # not among the 3 best
