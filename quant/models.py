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
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads on first use: `import quant` and every --help stay fast
    import torch

DEFAULT_MODEL = "deepset/bert-base-cased-squad2"


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message is meant for the user as is."""


@dataclass(frozen=True)
class LoadedModel:
    model_id: str
    tokenizer: object  # a *fast* tokenizer (we need offset mappings)
    model: "torch.nn.Module"  # FP32, eval(), on CPU
    max_length: int  # tokens per window (question + passage + specials)


def cpu_count() -> int:
    """Cores this process may use: its affinity (taskset, cpuset), or fewer when a cgroup CPU quota grants fewer
    (a container limited to 2 CPUs on a 64-core host: 2)."""
    from .threads import usable_cores

    return usable_cores()


def set_threads(threads: int | None = None) -> int:
    """Fix torch's intra-op thread count (None: all cores) and return it.

    Every variant is timed with the same count, and the count is reported next
    to the numbers: a comparison without it means little. More threads than
    cores only makes OpenMP threads wait for each other, so it is refused.
    """
    import torch

    cores = cpu_count()
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or not 1 <= threads <= cores):
        raise ValueError(f"threads must be a whole number from 1 to {cores} (the cores this process may use); "
                         f"got {threads!r}")
    n = threads or cores
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


def looks_like_path(model_id: str) -> bool:
    """A local path rather than a hub id ("org/name"): ./x, /x, ~/x, a/b/c, C:\\x, or anything that exists."""
    return (model_id.startswith((".", "/", "~")) or model_id.count("/") > 1 or "\\" in model_id
            or Path(model_id).expanduser().exists())


def is_artifact(path: str | Path) -> bool:
    """A folder written by `quantize --out`, `tune --out` or the page's download (artifact.py)."""
    return (Path(path) / "quantqa.json").is_file()


def source_kind(model_id: str) -> str:
    """'artifact' (a `quantize --out` folder), 'folder' (save_pretrained), 'missing' (a path that is not there) or 'hub'."""
    path = Path(model_id).expanduser()
    if path.exists():
        return "artifact" if is_artifact(path) else "folder"
    return "missing" if looks_like_path(model_id) else "hub"


def describe_source(model_id: str) -> str:
    """What loading `model_id` will do, for the start-up log."""
    kind = source_kind(model_id)
    if kind == "artifact":
        return f"INT8 artifact folder {model_id}"
    if kind == "folder":
        return f"local folder {model_id}"
    if kind == "missing":
        return f"{model_id} (no such folder)"
    offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True")
    return (f"hub id {model_id} from the local hub cache (HF_HUB_OFFLINE is set)" if offline else
            f"hub id {model_id} from the Hugging Face hub (downloaded on first use, then cached)")


def _hint(model_id: str) -> str:
    kind = source_kind(model_id)
    if kind == "folder":
        return ("the folder exists but does not hold a model saved with save_pretrained() "
                "(config.json, weights and a tokenizer)")
    if kind == "missing":
        return (f"check the path ({Path(model_id).expanduser().absolute()} does not exist); --model takes a folder "
                "written by save_pretrained() or by `python -m quant quantize --out`, or a hub id")
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return ("HF_HUB_OFFLINE is set, so a hub id loads only from the local hub cache; unset it while online, "
                "or pass a local folder saved with save_pretrained() (--model /path/to/folder)")
    return ("check the hub id and your network connection, or pass a local folder saved "
            "with save_pretrained() (--model /path/to/folder)")


HUB_RESOLVE_S = 3.0  # how long to wait for the hub's name to resolve before saying it cannot be reached


def hub_unreachable(timeout: float = HUB_RESOLVE_S) -> str | None:
    """Why the Hugging Face hub cannot be reached from here, or None when its name resolves.

    Without this, an offline machine spends ~30 s in huggingface_hub's retries (5 per file, for two files) before
    the same error; a name that does not resolve will not resolve on a retry."""
    import socket
    import threading
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    box: list = []

    def resolve():
        try:
            socket.getaddrinfo(host, 443)
            box.append(None)
        except OSError as exc:
            box.append(f"{host} does not resolve here ({exc.strerror or exc})")

    t = threading.Thread(target=resolve, daemon=True)
    t.start()
    t.join(timeout)
    return box[0] if box else f"{host} did not resolve within {timeout:g} s"


def _cached_on_hub(model_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    except Exception:
        return False


@functools.lru_cache(maxsize=4)
def load_model(model_id: str = DEFAULT_MODEL) -> LoadedModel:
    """Tokenizer + FP32 QA model, `eval()`, on CPU. Cached: one load per id.

    Raises `ModelLoadError` (one readable line) on any failure.
    """
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    model_id = str(model_id)
    path = Path(model_id).expanduser()
    _quiet_transformers(local=path.exists())
    if source_kind(model_id) == "missing":
        raise ModelLoadError(f"Cannot load model {model_id!r}: no such folder. Fix: {_hint(model_id)}.")
    if source_kind(model_id) == "artifact":
        raise ModelLoadError(f"Cannot load model {model_id!r} as FP32: it is an INT8 artifact folder; "
                             "load it with quant.load_artifact() or pass it to ModelSet / --model")
    source = str(path) if path.exists() else model_id
    local = path.exists()
    if not local and os.environ.get("HF_HUB_OFFLINE") not in ("1", "true", "True"):
        why = hub_unreachable()
        if why is not None and not _cached_on_hub(model_id):
            raise ModelLoadError(f"Cannot load model {model_id!r}: the Hugging Face hub cannot be reached: {why}, "
                                 f"and the model is not in the local hub cache. Fix: pass a local folder saved "
                                 f"with save_pretrained() (--model /path/to/folder), or connect and try again.")
        local = why is not None  # in the cache: load it from there without a round of retries
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        model = AutoModelForQuestionAnswering.from_pretrained(source, dtype=torch.float32, local_files_only=local)
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
    return LoadedModel(model_id=model_id, tokenizer=tokenizer, model=model,
                       max_length=window_length(model.config, tokenizer))


# Families whose position ids start after padding_idx (RoBERTa's `create_position_ids_from_input_ids`): of their
# max_position_embeddings, pad_token_id + 1 are never a token's position (roberta-base: 514 for 512 tokens).
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "data2vec-text", "xmod")


def window_length(config, tokenizer) -> int:
    """Tokens per window: 384 (the SQuAD convention), or less where the model or tokenizer allows less."""
    positions = int(getattr(config, "max_position_embeddings", 512) or 512)
    if getattr(config, "model_type", "") in OFFSET_POSITIONS:
        positions -= int(getattr(config, "pad_token_id", 1) or 0) + 1
    limit = min(positions, int(tokenizer.model_max_length) if tokenizer.model_max_length < 1e6 else 512, 512)
    return min(384, limit)
