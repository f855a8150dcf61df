"""Validation of what a user types, shared by the CLI and the app (server side).

Limits keep one request bounded in time: a passage of `MAX_CONTEXT_CHARS` is
about 2,500 wordpieces, i.e. at most ~10 windows of 384 tokens, and the number
of timed runs is capped so that runs x windows stays under `MAX_WINDOW_RUNS`.
Text is cleaned without changing its length (control characters and lone
surrogates become one character each), so character offsets into the cleaned
passage are offsets into what the user sees.
"""

from __future__ import annotations

import unicodedata

MAX_CONTEXT_CHARS = 10_000
MAX_QUESTION_CHARS = 300
MIN_RUNS, MAX_RUNS, DEFAULT_RUNS = 1, 50, 10
MAX_WINDOW_RUNS = 100  # timed runs x windows per variant, per request


class InputError(ValueError):
    """Bad user input; the message is meant for the user as is."""


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


def check_inputs(context, question, runs=DEFAULT_RUNS) -> tuple[str, str, int]:
    """Validate and clean; raises `InputError` with a message for the user."""
    return (check_text(context, "passage", MAX_CONTEXT_CHARS),
            check_text(question, "question", MAX_QUESTION_CHARS),
            check_runs(runs))
