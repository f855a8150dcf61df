"""Latency measurement: warm-up, then N timed runs; median / p90 / min in milliseconds.

The caller passes a closure over already-tokenized inputs, so tokenization is
never inside the timed region. Runs under `torch.inference_mode()`. For CUDA the
device is synchronized before the clock starts and before it is read (kernels
launch asynchronously; without the sync we would time the launch, not the work).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch


@dataclass
class LatencyStats:
    median: float  # ms
    p90: float  # ms
    min: float  # ms
    runs: int
    samples: list[float] = field(default_factory=list, repr=False)  # ms, in run order

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> "LatencyStats":
        if not samples_ms:
            raise ValueError("no samples")
        return cls(statistics.median(samples_ms), percentile(samples_ms, 90), min(samples_ms),
                   len(samples_ms), list(samples_ms))

    def as_dict(self) -> dict[str, Any]:
        return {"median": round(self.median, 3), "p90": round(self.p90, 3), "min": round(self.min, 3),
                "runs": self.runs}


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), without numpy."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def _sync(device: str | torch.device | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], Any], device=None) -> tuple[float, Any]:
    """One timed call: (milliseconds, result)."""
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return (time.perf_counter() - t0) * 1e3, out


def measure(fn: Callable[[], Any], runs: int = 10, warmup: int = 1, device=None,
            on_run: Callable[[int], None] | None = None) -> tuple[LatencyStats, Any]:
    """Warm up, then time `runs` calls of `fn`. Returns (stats, output of the last call)."""
    if runs < 1:
        raise ValueError("runs must be >= 1")
    out = None
    with torch.inference_mode():
        for _ in range(max(warmup, 0)):
            out = fn()
        _sync(device)
        samples = []
        for i in range(runs):
            ms, out = time_once(fn, device)
            samples.append(ms)
            if on_run is not None:
                on_run(i + 1)
    return LatencyStats.from_samples(samples), out


def measure_interleaved(fns: dict[str, tuple[Callable[[], Any], Any]], runs: int = 10, warmup: int = 1,
                        on_step: Callable[[int, int], None] | None = None, settle_s: dict[str, float] | None = None,
                        seed: int = 0, stop: Callable[[int], Any] | None = None
                        ) -> dict[str, tuple[LatencyStats | None, Any, BaseException | None]]:
    """Time several callables fairly on a noisy machine: round-robin, in a new order every round.

    fns: name -> (fn, device). Each gets `warmup` untimed calls, then `runs` timed
    calls, one per round. Round 0 keeps the given order; later rounds are seeded
    random permutations, so no variant always runs right after the same neighbour
    (a fixed rotation would keep every predecessor: a runtime whose threads keep
    spinning after a call, like ONNX Runtime's, would tax the same victim every round).
    settle_s: name -> seconds to sleep after each of that callable's calls, outside
    the clock (ONNX Runtime's threads spin for tens of ms after each run).
    A callable that raises is dropped from the rotation and its error returned.
    stop(rounds_done): asked after each complete round; a true answer ends the timing there (every
    variant then has the same number of runs, fewer than `runs`).
    Returns name -> (stats or None, last output or None, error or None).
    """
    import random

    names = list(fns)
    settle_s = settle_s or {}
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {n: [] for n in names}
    outs: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}
    total = len(names) * (runs + max(warmup, 0))
    step = [0]

    def call(n: str, timed: bool, steps: int = 1) -> None:
        """One call of `n` (warm-up: `steps` untimed calls), its settle time, progress; errors drop it."""
        fn, device = fns[n]
        if n not in errors:
            try:
                if timed:
                    ms, outs[n] = time_once(fn, device)
                    samples[n].append(ms)
                else:
                    for _ in range(steps):
                        outs[n] = fn()
                    _sync(device)
            except Exception as exc:  # e.g. CUDA out of memory: report, keep the others
                errors[n] = exc
            if settle_s.get(n):
                time.sleep(settle_s[n])
        step[0] += steps
        if on_step:
            on_step(step[0], total)

    with torch.inference_mode():
        for n in names:
            call(n, timed=False, steps=max(warmup, 0))
        for r in range(runs):
            for n in names[:] if r == 0 else rng.sample(names, len(names)):
                call(n, timed=True)
            if stop is not None and r + 1 < runs and stop(r + 1):
                break
    return {n: (None if n in errors or not samples[n] else LatencyStats.from_samples(samples[n]),
                None if n in errors else outs.get(n), errors.get(n)) for n in names}
