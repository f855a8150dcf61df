"""CUDA work kept apart, so that it alone can run where the GPU is lent (ZeroGPU on Hugging Face Spaces).

On a ZeroGPU Space a function decorated with `spaces.GPU` runs in a worker
process forked from the app, with a GPU attached for the call's `duration`; its
arguments and result cross a pipe (pickled). Wrapping the whole Compare handler
would move the line, the stored results and the CPU timings into that worker,
where they die with it. So only this runs there: `time_cuda` times the CUDA
variants of one request (its tokenized inputs, already checked) and returns
plain data. The app installs a runner with `use(spaces.GPU(time_cuda,
duration=duration))`; without one (a GPU machine, or none) compare.py times the
CUDA variants in-process, interleaved with the rest.

The worker finds the models through `register` (a module global it inherits at
fork time), never through its arguments.
"""

from __future__ import annotations

from typing import Any, Callable

GPU_VARIANTS = ("fp32-cuda", "fp16-cuda")
FIRST_CALL_S = 20.0  # a fresh worker: CUDA initialised, the weights moved to the GPU
PER_FORWARD_S = 0.05  # one window through bert-base on a GPU, generously (H200: ~5 ms at 384 tokens)

_MODELS: dict[str, Any] = {}  # registered ModelSets by model id: what a forked worker sees
_RUNNER: Callable[..., dict] | None = None  # set by the app on ZeroGPU: time_cuda wrapped in spaces.GPU


def register(models) -> None:
    """Make `models` reachable from a worker forked after this call."""
    _MODELS[models.model_id] = models


def use(runner: Callable[..., dict] | None) -> None:
    """Time the CUDA variants through `runner` (same signature as `time_cuda`), or in-process when None."""
    global _RUNNER
    _RUNNER = runner


def runner() -> Callable[..., dict] | None:
    return _RUNNER


def duration(model_id: str, names: list[str], inputs: dict, runs: int, warmup: int) -> int:
    """Seconds to ask ZeroGPU for: a fresh worker's start plus every forward, generously."""
    windows = next(iter(inputs.values())).shape[0]
    return int(FIRST_CALL_S + len(names) * (runs + warmup) * windows * PER_FORWARD_S) + 1


def time_cuda(model_id: str, names: list[str], inputs: dict, runs: int, warmup: int) -> dict:
    """Time the CUDA variants `names` of the registered model on `inputs` (CPU tensors): variant ->
    (LatencyStats or None, (start, end) logits on the CPU or None, error text or None). Plain data: it crosses
    a pipe on ZeroGPU."""
    import torch

    from .qa import run_windows
    from .timing import measure_interleaved

    models = _MODELS[model_id]
    fns = {}
    for n in names:
        v = models.variant(n)
        x = {k: t.to(v.device) for k, t in inputs.items()}
        fns[n] = (lambda m=v.model, x=x: run_windows(m, x), v.cuda)
    timed = measure_interleaved(fns, runs=runs, warmup=warmup)
    out = {}
    for n, (stats, logits, err) in timed.items():
        cpu = None if logits is None else tuple(t.detach().float().cpu() for t in logits)
        out[n] = (stats, cpu, None if err is None else f"{type(err).__name__}: {err}")
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out
