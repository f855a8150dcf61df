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

from dataclasses import dataclass

import numpy as np
import torch


from .inputs import InputError


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
    """Tokenize once; passages longer than a window become overlapping windows."""
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
    n = enc["input_ids"].shape[0]
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


def best_span(start_logits, end_logits, offsets, context_mask, *, word_ids=None, max_answer_tokens: int = 30,
              allow_null: bool = True, cls_index: int = 0) -> Span:
    """Best answer span over all windows. Pure function of logits and offsets.

    start_logits, end_logits: (W, T) arrays; offsets: (W, T, 2); context_mask: (W, T) bool;
    word_ids: optional (W, T) word index per token (-1 for none). With it, a span that
    starts or ends inside a word ("##entific") is widened to whole words, so an
    answer is never a fragment of a word.
    """
    start_logits = np.asarray(start_logits, dtype=np.float64).reshape(len(context_mask), -1)
    end_logits = np.asarray(end_logits, dtype=np.float64).reshape(len(context_mask), -1)
    offsets = np.asarray(offsets)
    context_mask = np.asarray(context_mask, dtype=bool)
    if max_answer_tokens < 1:
        raise ValueError("max_answer_tokens must be >= 1")
    best = (-1.0, -1, 0, 0)  # score, window, start_char, end_char
    null = np.inf
    for w in range(len(context_mask)):
        allowed = context_mask[w].copy()
        if not allowed.any():
            continue
        allowed[cls_index] = True  # [CLS] stays in the softmax: it carries "no answer"
        idx = np.flatnonzero(allowed)
        ps = np.zeros_like(start_logits[w])
        pe = np.zeros_like(end_logits[w])
        ps[idx] = _softmax(start_logits[w][idx])
        pe[idx] = _softmax(end_logits[w][idx])
        null = min(null, ps[cls_index] * pe[cls_index])
        ps = np.where(context_mask[w], ps, 0.0)
        pe = np.where(context_mask[w], pe, 0.0)
        # scores[i, j] = p_start(i) * p_end(j), kept only for i <= j < i + max_answer_tokens
        T = len(ps)
        scores = np.triu(np.outer(ps, pe)) - np.triu(np.outer(ps, pe), k=max_answer_tokens)
        # an empty-text span (a token with no characters) is no answer at all
        empty = offsets[w, :, 1] <= offsets[w, :, 0]
        scores[empty, :] = 0.0
        scores[:, empty] = 0.0
        flat = int(np.argmax(scores))
        i, j = divmod(flat, T)
        top = float(scores[i, j])
        if top > best[0] and top > 0:
            if word_ids is not None:  # widen to whole words (the score stays the model's own)
                wid = np.asarray(word_ids)[w]
                while i > 0 and wid[i] >= 0 and wid[i - 1] == wid[i] and context_mask[w, i - 1]:
                    i -= 1
                while j + 1 < T and wid[j] >= 0 and wid[j + 1] == wid[j] and context_mask[w, j + 1]:
                    j += 1
            best = (top, w, int(offsets[w, i, 0]), int(offsets[w, j, 1]))
    null = 0.0 if null == np.inf else float(null)
    score, w, s, e = best
    if w < 0 or (allow_null and null > score):
        return Span(0, 0, null, -1, null)
    return Span(s, e, score, w, null)
