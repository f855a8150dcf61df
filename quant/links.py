"""A link to a comparison: the page opened with `?example=N` (or a label) or `?passage=…&question=…` compares at once.

Short passages travel as they are (`?passage=...&question=...`, URL-encoded). A long
one would make a URL of tens of kilobytes (a 10,000-character passage is ~30 KB
encoded, past what many servers and proxies take in a request line), so past
`PLAIN_MAX` characters the pair travels compressed: `?z=` + base64url(zlib(JSON))
— English prose shrinks to about a third (10,000 characters: ~4 KB). Decoding is
bounded (a link can never make the server inflate more than the passage limit
allows) and every failure is one clear line (`InputError`), never an error page.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
import zlib

from .inputs import MAX_CONTEXT_CHARS, MAX_QUESTION_CHARS, InputError

PLAIN_MAX = 1500  # characters of passage + question sent as they are; longer ones are compressed
MAX_Z = 16_000  # characters of a `z` parameter accepted (a 10,000-character passage needs ~4,000-6,000)


def query(passage: str, question: str) -> str:
    """The query string ("?...") that reopens this passage and question."""
    if len(passage) + len(question) <= PLAIN_MAX:
        return "?" + urllib.parse.urlencode({"passage": passage, "question": question}, quote_via=urllib.parse.quote)
    packed = zlib.compress(json.dumps({"p": passage, "q": question}, ensure_ascii=False).encode("utf-8"), 9)
    return "?z=" + base64.urlsafe_b64encode(packed).decode("ascii").rstrip("=")


def parse(params: dict[str, str], examples: list[dict]) -> tuple[str, str] | None:
    """(passage, question) a link asks for, None when it asks nothing; InputError for a link that is wrong."""
    params = {k: v for k, v in params.items() if k in ("example", "passage", "question", "z")}
    if not params:
        return None
    if "example" in params:
        return _example(params["example"], examples)
    if "z" in params:
        return _unpack(params["z"])
    passage, question = params.get("passage", ""), params.get("question", "")
    if not passage.strip() or not question.strip():
        raise InputError("This link needs both a passage and a question (?passage=…&question=…).")
    return passage, question


def _example(value: str, examples: list[dict]) -> tuple[str, str]:
    v = value.strip()
    if v.isdigit() and 1 <= int(v) <= len(examples):
        e = examples[int(v) - 1]
        return e["passage"], e["question"]
    by_label = {e["label"].casefold(): e for e in examples}
    if v.casefold() in by_label:
        e = by_label[v.casefold()]
        return e["passage"], e["question"]
    raise InputError(f"This link asks for example {v[:40]!r}; there are {len(examples)}: 1 to {len(examples)}, or a "
                     f"label ({', '.join(e['label'] for e in examples)}).")


def _unpack(z: str) -> tuple[str, str]:
    bad = InputError("This link's passage could not be read (the `z` part is damaged or cut short); copy the link "
                     "again from the page.")
    if len(z) > MAX_Z:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(z + "=" * (-len(z) % 4))
        inflate = zlib.decompressobj()
        limit = 4 * (MAX_CONTEXT_CHARS + MAX_QUESTION_CHARS) + 64  # UTF-8 bytes, JSON quoting: never more
        text = inflate.decompress(raw, limit)
        if inflate.unconsumed_tail:
            raise bad
        d = json.loads(text.decode("utf-8"))
        passage, question = d["p"], d["q"]
    except (ValueError, KeyError, TypeError, zlib.error, UnicodeDecodeError):
        raise bad from None
    if not isinstance(passage, str) or not isinstance(question, str):
        raise bad
    return passage, question
