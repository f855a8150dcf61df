"""Error metrics between a reference tensor and its quantized counterpart (pure functions).

SQNR = 10 log10(sum(ref^2) / sum((ref - test)^2)) dB. Identical tensors have
infinite SQNR: Python gets math.inf, JSON gets null (`json_db`).
"""

from __future__ import annotations

import math

import torch


def noise_ratio(ref: torch.Tensor, test: torch.Tensor) -> float:
    """sum((ref - test)^2) / sum(ref^2): noise power relative to the signal (0 identical, inf if `ref` is 0)."""
    ref, test = ref.detach().double(), test.detach().double()
    noise = float(((ref - test) ** 2).sum())
    if noise == 0.0:
        return 0.0
    signal = float((ref ** 2).sum())
    return noise / signal if signal else math.inf


def ratio_db(ratio: float) -> float:
    """A noise ratio in dB of SQNR: math.inf for no noise, -math.inf for no signal."""
    if ratio == 0.0:
        return math.inf
    return -math.inf if ratio == math.inf else -10.0 * math.log10(ratio)


def sqnr_db(ref: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB; math.inf when identical, -math.inf when `ref` is all zero."""
    return ratio_db(noise_ratio(ref, test))


def outlier_ratio(x: torch.Tensor, q: float = 0.999) -> float:
    """max |x| / q-quantile of |x| (1.0 for a flat distribution; tens for a few dominant channels)."""
    a = x.detach().abs().flatten().float()
    if a.numel() == 0:
        return 1.0
    k = max(1, int(math.ceil((1.0 - q) * a.numel())))  # the k-th largest is the q-quantile
    top = torch.topk(a, k).values
    qv = float(top[-1])
    mx = float(top[0])
    return mx / qv if qv > 0 else (1.0 if mx == 0 else math.inf)


def json_db(v: float | None) -> float | None:
    """dB for JSON: +inf (no noise) -> null; -inf (no signal) -> -999."""
    if v is None or v == math.inf:
        return None
    if v == -math.inf:
        return -999.0
    return round(v, 2)
