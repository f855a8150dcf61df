"""Extractive QA: encode (question, passage) into windows, decode the best answer span.

transformers 5 has no question-answering pipeline, so decoding is ours:

* `encode` tokenizes question + passage once, with character offsets; a
  passage longer than one window is split into overlapping windows (`stride`
  tokens shared between neighbours), so an answer anywhere is seen whole.
* `best_span` is a pure function of logits + offsets: over every window it
  takes the best (start, end) with start <= end, both inside the passage, and
  at most `max_answer_tokens` long; score = p(start) * p(end) with softmax over
  the window's passage tokens plus [CLS]. SQuAD2 "no answer" wins when the
  [CLS] null score beats every span (answer "").
* The answer is `context[start_char:end_char]` — a slice by character offsets,
  never wordpieces joined back together (that loses case and spacing).

References: HF `run_qa.py` postprocessing (`utils_qa.postprocess_qa_predictions`)
and the SQuAD v2.0 null-score rule.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch


from .inputs import WINDOW_BATCH, InputError


# A fast tokenizer is not safe to share between threads: transformers sets truncation and padding on the Rust
# tokenizer before each call and resets them after, so a call made meanwhile from another thread runs with the
# other call's settings. Seen in the app: a visitor's question-only call (no truncation) landed between another
# visitor's "truncate to 384" and its encode, whose passage came back as one window of ~1,800 tokens; the static
# INT8 package then read position 512+ and the process died (std::terminate from an OpenMP worker). Every call
# into a tokenizer in quant goes through `tokenize`, one at a time.
_TOKENIZER = threading.RLock()


def tokenize(tokenizer, *args, **kwargs):
    """`tokenizer(*args, **kwargs)`, one call at a time in this process (see the note above)."""
    with _TOKENIZER:
        return tokenizer(*args, **kwargs)


class InputTooLong(InputError):
    """The question alone leaves no room for the passage in a window."""


@dataclass
class Encoded:
    """Model inputs for every window plus what decoding needs to map back to characters."""

    inputs: dict[str, torch.Tensor]  # input_ids / attention_mask [/ token_type_ids]: (W, T)
    offsets: np.ndarray  # (W, T, 2) character offsets into the context; (0, 0) elsewhere
    context_mask: np.ndarray  # (W, T) True where the token belongs to the passage
    word_ids: np.ndarray  # (W, T) index of the word each token belongs to; -1 for special/padding
    n_windows: int
    n_tokens: int  # T, tokens per window (padded)

    def to(self, device) -> dict[str, torch.Tensor]:
        return {k: v.to(device) for k, v in self.inputs.items()}


@dataclass(frozen=True)
class Span:
    start: int  # character offset into the context (inclusive)
    end: int  # character offset (exclusive); context[start:end] is the answer
    score: float  # probability-like, in [0, 1]
    window: int  # which window it came from (-1 for "no answer")
    null_score: float  # best "no answer" score over windows

    @property
    def is_null(self) -> bool:
        return self.window < 0


def encode(tokenizer, question: str, context: str, max_length: int = 384, stride: int = 128) -> Encoded:
    """Tokenize once; passages longer than a window become overlapping windows (none longer than `max_length`)."""
    with _TOKENIZER:
        return _encode(tokenizer, question, context, max_length, stride)


def _encode(tokenizer, question: str, context: str, max_length: int, stride: int) -> Encoded:
    q_tokens = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    room = max_length - q_tokens - tokenizer.num_special_tokens_to_add(pair=True)
    if room < 16:
        raise InputTooLong(
            f"The question is too long ({q_tokens} tokens): it must leave room for the passage "
            f"in a {max_length}-token window."
        )
    stride = min(stride, max(room // 2, 0))
    enc = tokenizer(
        question,
        context,
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="longest",
        return_tensors="pt",
    )
    n, t = enc["input_ids"].shape
    if t > max_length:  # never hand a model more positions than it has (a compiled kernel would abort the process)
        raise RuntimeError(f"the tokenizer returned windows of {t} tokens for max_length {max_length}")
    seq_ids = np.array([[(-1 if s is None else s) for s in enc.sequence_ids(i)] for i in range(n)])
    offsets = enc["offset_mapping"].numpy().astype(np.int64)
    context_mask = seq_ids == 1
    offsets = np.where(context_mask[..., None], offsets, 0)
    word_ids = np.array([[(-1 if x is None else x) for x in enc.word_ids(i)] for i in range(n)])
    word_ids = np.where(context_mask, word_ids, -1)
    _check_coverage(tokenizer, context, offsets, context_mask)
    keep = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    inputs = {k: enc[k] for k in keep}
    return Encoded(inputs, offsets, context_mask, word_ids, n_windows=n, n_tokens=enc["input_ids"].shape[1])


def _check_coverage(tokenizer, context: str, offsets: np.ndarray, context_mask: np.ndarray) -> None:
    """Fail loudly if the windows miss the end of the passage (never truncate silently).

    Seen with transformers 5.17, whose overflow handling returned only two windows.
    """
    covered = int(offsets[..., 1][context_mask].max()) if context_mask.any() else 0
    tail = context[covered:]
    if tail.strip() and tokenizer(tail, add_special_tokens=False)["input_ids"]:
        import transformers

        raise RuntimeError(
            f"the tokenizer's windows cover only {covered} of {len(context)} characters of the passage "
            f"(transformers {transformers.__version__}); upgrade transformers (>= 5.24 is tested)")


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max()
    e = np.exp(x)
    return e / e.sum()


def window_probs(start_logits, end_logits, context_mask, cls_index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """p(start), p(end) per token of one window: softmax over the passage tokens plus [CLS] (0 elsewhere).

    [CLS] stays in the softmax because it carries SQuAD2's "no answer".
    """
    start_logits = np.asarray(start_logits, dtype=np.float64)
    end_logits = np.asarray(end_logits, dtype=np.float64)
    allowed = np.asarray(context_mask, dtype=bool).copy()
    ps, pe = np.zeros_like(start_logits), np.zeros_like(end_logits)
    if not allowed.any():
        return ps, pe
    allowed[cls_index] = True
    idx = np.flatnonzero(allowed)
    ps[idx] = _softmax(start_logits[idx])
    pe[idx] = _softmax(end_logits[idx])
    return ps, pe


@dataclass(frozen=True)
class Candidate:
    start: int  # character offsets into the context; (0, 0) for "no answer"
    end: int
    score: float  # p(start) * p(end) in its window; for "no answer": the null score
    window: int  # -1 for "no answer"

    @property
    def is_null(self) -> bool:
        return self.window < 0


def rank_spans(start_logits, end_logits, offsets, context_mask, *, word_ids=None, max_answer_tokens: int = 30,
               k: int = 2, cls_index: int = 0, per_window: int = 20, with_null: bool = True) -> list[Candidate]:
    """The `k` best distinct answers over all windows, best first (a pure function of logits and offsets).

    start_logits, end_logits: (W, T) arrays; offsets: (W, T, 2); context_mask: (W, T) bool;
    word_ids: optional (W, T) word index per token (-1 for none). A span is allowed when
    start <= end, both in the passage, at most `max_answer_tokens` long and not empty
    text; with `word_ids`, a span that starts or ends inside a word ("##entific") is
    widened to whole words (its score stays the model's own), and spans that widen to
    the same characters count once, at their best score. With `with_null`, SQuAD2's "no
    answer" is a candidate too, scored by the lowest [CLS] score over windows; on a tie
    a real span ranks first.
    """
    start_logits = np.asarray(start_logits, dtype=np.float64).reshape(len(context_mask), -1)
    end_logits = np.asarray(end_logits, dtype=np.float64).reshape(len(context_mask), -1)
    offsets = np.asarray(offsets)
    context_mask = np.asarray(context_mask, dtype=bool)
    wids = None if word_ids is None else np.asarray(word_ids)
    if max_answer_tokens < 1:
        raise ValueError("max_answer_tokens must be >= 1")
    best: dict[tuple[int, int], Candidate] = {}
    null = np.inf
    for w in range(len(context_mask)):
        if not context_mask[w].any():
            continue
        ps, pe = window_probs(start_logits[w], end_logits[w], context_mask[w], cls_index)
        null = min(null, ps[cls_index] * pe[cls_index])
        ps = np.where(context_mask[w], ps, 0.0)
        pe = np.where(context_mask[w], pe, 0.0)
        # scores[i, j] = p_start(i) * p_end(j), kept only for i <= j < i + max_answer_tokens
        T = len(ps)
        outer = np.outer(ps, pe)
        scores = np.triu(outer) - np.triu(outer, k=max_answer_tokens)
        # an empty-text span (a token with no characters) is no answer at all
        empty = offsets[w, :, 1] <= offsets[w, :, 0]
        scores[empty, :] = 0.0
        scores[:, empty] = 0.0
        flat = scores.ravel()
        n = min(max(per_window, k), flat.size)
        top = np.argpartition(-flat, n - 1)[:n]
        for f in top[np.argsort(-flat[top], kind="stable")]:
            sc = float(flat[f])
            if sc <= 0:
                break
            i, j = divmod(int(f), T)
            if wids is not None:  # widen to whole words (the score stays the model's own)
                wid = wids[w]
                while i > 0 and wid[i] >= 0 and wid[i - 1] == wid[i] and context_mask[w, i - 1]:
                    i -= 1
                while j + 1 < T and wid[j] >= 0 and wid[j + 1] == wid[j] and context_mask[w, j + 1]:
                    j += 1
            key = (int(offsets[w, i, 0]), int(offsets[w, j, 1]))
            if key not in best or sc > best[key].score:
                best[key] = Candidate(key[0], key[1], sc, w)
    out = sorted(best.values(), key=lambda c: -c.score)
    if with_null:
        null_c = Candidate(0, 0, 0.0 if null == np.inf else float(null), -1)
        at = next((i for i, c in enumerate(out) if null_c.score > c.score), len(out))
        out.insert(at, null_c)
    return out[:k]


def null_score(start_logits, end_logits, context_mask, cls_index: int = 0) -> float:
    """SQuAD2's "no answer" score: the lowest p_start([CLS]) * p_end([CLS]) over windows."""
    start_logits = np.asarray(start_logits, dtype=np.float64).reshape(len(context_mask), -1)
    end_logits = np.asarray(end_logits, dtype=np.float64).reshape(len(context_mask), -1)
    null = np.inf
    for w in range(len(context_mask)):
        if np.asarray(context_mask[w]).any():
            ps, pe = window_probs(start_logits[w], end_logits[w], context_mask[w], cls_index)
            null = min(null, ps[cls_index] * pe[cls_index])
    return 0.0 if null == np.inf else float(null)


def best_span(start_logits, end_logits, offsets, context_mask, *, word_ids=None, max_answer_tokens: int = 30,
              allow_null: bool = True, cls_index: int = 0) -> Span:
    """Best answer span over all windows (see `rank_spans`). Pure function of logits and offsets.

    start_logits, end_logits: (W, T) arrays; offsets: (W, T, 2); context_mask: (W, T) bool;
    word_ids: optional (W, T) word index per token (-1 for none): spans are widened to whole words.
    SQuAD2 "no answer" (start = end = 0, window -1) wins when the [CLS] null score beats every span.
    """
    top = rank_spans(start_logits, end_logits, offsets, context_mask, word_ids=word_ids,
                     max_answer_tokens=max_answer_tokens, k=1, cls_index=cls_index, with_null=False)
    null = null_score(start_logits, end_logits, context_mask, cls_index)
    if not top or (allow_null and null > top[0].score):
        return Span(0, 0, null, -1, null)
    c = top[0]
    return Span(c.start, c.end, c.score, c.window, null)


def score_gap(start_logits, end_logits, offsets, context_mask, start: int, end: int, *, word_ids=None,
              max_answer_tokens: int = 30, cls_index: int = 0, k: int = 50) -> float:
    """How far below its own answer these logits put the answer (start, end) (character offsets; (0, 0): "no
    answer"), as a fraction of its own answer's score: 0 for the answer itself, 1 when (start, end) is not among its
    `k` best candidates. A small gap is a near tie: the logits all but chose (start, end) themselves."""
    ranked = rank_spans(start_logits, end_logits, offsets, context_mask, word_ids=word_ids,
                        max_answer_tokens=max_answer_tokens, k=k, cls_index=cls_index, per_window=k)
    if not ranked or ranked[0].score <= 0:
        return 1.0
    other = next((c for c in ranked if (c.start, c.end) == (start, end)), None)
    return 1.0 if other is None else (ranked[0].score - other.score) / ranked[0].score


def run_windows(model, inputs: dict[str, torch.Tensor], batch: int = WINDOW_BATCH):
    """Forward all windows, `batch` at a time (bounded memory) -> (start_logits, end_logits), each (W, T)."""
    n = next(iter(inputs.values())).shape[0]
    if n <= batch:
        out = model(**inputs)
        return out.start_logits, out.end_logits
    starts, ends = [], []
    for i in range(0, n, batch):
        out = model(**{k: v[i:i + batch] for k, v in inputs.items()})
        starts.append(out.start_logits)
        ends.append(out.end_logits)
    return torch.cat(starts), torch.cat(ends)
