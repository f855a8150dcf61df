"""Load a tokenizer + FP32 extractive-QA model once, from a hub id or a local folder.

The real loading path is `from_pretrained(model_id_or_dir)` — the same call for
a Hugging Face hub id and for a folder written by `save_pretrained`. Models
never load with `trust_remote_code`. Failures become one `ModelLoadError` whose
message names the model and says what to do, so front ends can print one line.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_MODEL = "deepset/bert-base-cased-squad2"


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message is meant for the user as is."""


@dataclass(frozen=True)
class LoadedModel:
    model_id: str
    tokenizer: object  # a *fast* tokenizer (we need offset mappings)
    model: torch.nn.Module  # FP32, eval(), on CPU
    max_length: int  # tokens per window (question + passage + specials)


def cpu_count() -> int:
    """Cores this process may run on (respects taskset / cgroup affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def set_threads(threads: int | None = None) -> int:
    """Fix torch's intra-op thread count (default: all cores) and return it.

    Every variant is timed with the same count, and the count is reported next
    to the numbers: a comparison without it means little.
    """
    n = threads or cpu_count()
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    return torch.get_num_threads()


def _quiet_transformers(local: bool) -> None:
    # Keep library chatter ("some weights were not used", "Loading weights" bars)
    # out of the user's console; errors still surface as exceptions. A hub
    # download keeps its progress bars: a first run fetching 400 MB should not be silent.
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        if local:
            hf_logging.disable_progress_bar()
        else:
            hf_logging.enable_progress_bar()
    except Exception:  # pragma: no cover - logging is best effort
        pass
    logging.getLogger("transformers").setLevel(logging.ERROR)


def _hint(model_id: str) -> str:
    if Path(model_id).exists():
        return (
            "the folder exists but does not hold a model saved with save_pretrained() "
            "(config.json, weights and a tokenizer)"
        )
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True") or "/" not in model_id:
        return (
            "pass a local folder saved with save_pretrained() (--model /path/to/folder), "
            "or a Hugging Face hub id while online"
        )
    return (
        "check the hub id and your network connection, or pass a local folder saved "
        "with save_pretrained() (--model /path/to/folder)"
    )


@functools.lru_cache(maxsize=4)
def load_model(model_id: str = DEFAULT_MODEL) -> LoadedModel:
    """Tokenizer + FP32 QA model, `eval()`, on CPU. Cached: one load per id.

    Raises `ModelLoadError` (one readable line) on any failure.
    """
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    model_id = str(model_id)
    path = Path(model_id).expanduser()
    _quiet_transformers(local=path.exists())
    if model_id.startswith((".", "/", "~")) and not path.exists():
        raise ModelLoadError(f"Cannot load model {model_id!r}: no such folder. {_hint(model_id)}.")
    source = str(path) if path.exists() else model_id
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForQuestionAnswering.from_pretrained(source, dtype=torch.float32)
    except Exception as exc:  # OSError, ValueError, HTTP errors, bad json ...
        reason = str(exc).strip().splitlines()[0].rstrip(". ") if str(exc).strip() else type(exc).__name__
        if len(reason) > 240:
            reason = reason[:240] + "…"
        raise ModelLoadError(f"Cannot load model {model_id!r}: {reason}. Fix: {_hint(model_id)}.") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            f"Cannot use model {model_id!r}: its tokenizer is not a fast (Rust) tokenizer, "
            "and answers are located by the character offsets only a fast tokenizer gives."
        )
    model.eval()
    limit = min(
        int(getattr(model.config, "max_position_embeddings", 512) or 512),
        int(tokenizer.model_max_length) if tokenizer.model_max_length < 1e6 else 512,
        512,
    )
    return LoadedModel(model_id=model_id, tokenizer=tokenizer, model=model, max_length=min(384, limit))
