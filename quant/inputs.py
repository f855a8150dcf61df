"""Validation of what a user types, shared by the CLI, the app and evaluation (server side).

One bound per passage, on every path (compare, eval, inspect, the app):

* at most `MAX_CONTEXT_CHARS` characters — checked before tokenizing, and
* at most `MAX_WINDOWS` windows of up to 384 tokens once tokenized. Characters
  alone do not bound the work: English prose runs ~4.5 characters per
  wordpiece (10,000 characters ~ 2,300 tokens ~ 10 windows), but punctuation,
  digits and CJK are one token per character (10,000 "!" make 10,000 tokens,
  ~41 windows). 32 windows cover ~6,000 passage tokens.

Per request and variant, model calls are capped at `MAX_WINDOW_RUNS` window
forwards, warm-up included: (warm-up + timed runs) x windows <= 100; long
passages get fewer timed runs, with a note. Windows go through the model
`WINDOW_BATCH` at a time, so memory stays bounded too.

Text is cleaned without changing its length (control characters and lone
surrogates become one character each), so character offsets into the cleaned
passage are offsets into what the user sees.
"""

from __future__ import annotations

import unicodedata

MAX_CONTEXT_CHARS = 10_000
MAX_QUESTION_CHARS = 300
MAX_WINDOWS = 32  # windows of <= 384 tokens per passage (~6,000 passage tokens)
MIN_RUNS, MAX_RUNS, DEFAULT_RUNS = 1, 50, 10
MAX_WARMUP = 10  # untimed warm-up calls per variant
MAX_WINDOW_RUNS = 100  # (warm-up + timed runs) x windows per variant, per request
WINDOW_BATCH = 8  # windows per forward call


class InputError(ValueError):
    """Bad user input; the message is meant for the user as is."""


def first_line(exc: BaseException, limit: int = 240) -> str:
    """An exception's first line for a card or a log line (its type's name when it has no message)."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def clean_text(text: str) -> str:
    """Same length out as in: control chars -> space, lone surrogates -> U+FFFD."""
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat == "Cc" and ch not in "\n\t\r":
            out.append(" ")
        elif cat == "Cs":
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)


def check_text(value, name: str, limit: int) -> str:
    if value is None:
        raise InputError(f"The {name} is missing.")
    if not isinstance(value, str):
        raise InputError(f"The {name} must be text, not {type(value).__name__}.")
    if len(value) > limit:
        raise InputError(f"The {name} is too long: {len(value):,} characters; the limit is {limit:,}.")
    value = clean_text(value)
    if not value.strip():
        raise InputError(f"The {name} is empty. Please enter some text.")
    return value


def check_runs(value) -> int:
    if isinstance(value, bool) or value is None:
        raise InputError(f"Timed runs must be a whole number from {MIN_RUNS} to {MAX_RUNS}.")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int):
        raise InputError(f"Timed runs must be a whole number from {MIN_RUNS} to {MAX_RUNS}, not {value!r}.")
    if not MIN_RUNS <= value <= MAX_RUNS:
        raise InputError(f"Timed runs must be from {MIN_RUNS} to {MAX_RUNS}; got {value}.")
    return value


def check_windows(n_windows: int, tokens_per_window: int) -> None:
    """Refuse a passage that needs more than `MAX_WINDOWS` windows (after tokenizing)."""
    if n_windows > MAX_WINDOWS:
        raise InputError(f"The passage is too long once tokenized: it needs {n_windows} windows of "
                         f"{tokens_per_window} tokens; the limit is {MAX_WINDOWS} windows (about 6,000 "
                         f"tokens; punctuation, digits and CJK characters are a token each). Please shorten it.")


def check_int(value, name: str, lo: int, hi: int | None = None) -> int:
    """A whole number in [lo, hi] (hi None: no upper bound), or InputError naming `name` and the range."""
    rng = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        raise InputError(f"{name} must be a whole number {rng}; got {value!r}.")
    return value


def check_inputs(context, question, runs=DEFAULT_RUNS) -> tuple[str, str, int]:
    """Validate and clean; raises `InputError` with a message for the user."""
    return (check_text(context, "passage", MAX_CONTEXT_CHARS),
            check_text(question, "question", MAX_QUESTION_CHARS),
            check_runs(runs))
