"""GPTQ rounding for static INT8's weights, on the grid the quantizer itself will choose.

Round-to-nearest quantizes each weight alone. GPTQ (Frantar et al., 2023; OBQ before it) rounds a Linear layer's
input columns one at a time and moves each column's rounding error onto the columns not yet rounded, weighted by the
calibration inputs' second moments H = X^T X, so that X W^T, not W, stays close: the same INT8 grid, the same
kernels, better-chosen integers. At 8 bits on MiniLM-QA (split, real-text calibration), weights alone: logits SQNR
39.2 dB rounded to nearest, 44.9 dB with GPTQ (bench/README.md, issue #24).

The quantizer (PT2E, X86 Inductor) still observes and quantizes the weights it is given: per output channel,
symmetric, scale = max|w| / 127.5, integers in [-128, 127]. `gptq_round` therefore returns weights that quantize
back to exactly the integers it chose: every row keeps its largest-magnitude weight as it was (the *anchor*: the
observer reads the row's max|w| from it, so the scale is unchanged; it rounds to +127 or -128 as it would have,
and GPTQ counts that rounding like any other), and every other weight lies on the grid, within +-127 steps (under
the anchor's 127.5).
"""

from __future__ import annotations

import torch
from torch import nn

DAMP = 0.01  # added to H's diagonal, times its mean: H is singular where inputs repeat (split copies, padding)
BLOCK = 128  # columns rounded per block (the error of a block reaches the later columns in one matmul)
QMAX = 127.5  # the X86 quantizer's symmetric INT8 weights: scale = max|w| / 127.5 (quant range -128..127)


def hessians(model: nn.Module, inputs: list[dict[str, torch.Tensor]], names: list[str]) -> dict[str, torch.Tensor]:
    """X^T X of each named Linear's input over the calibration windows (float64 sums of float32 products; layers
    that read the same tensor, Q, K and V, share one product)."""
    mods = dict(model.named_modules())
    H: dict[str, torch.Tensor] = {}
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # this window's products, by input tensor
    hooks = []
    for n in names:
        def record(_mod, args, n=n):
            x = args[0]
            if id(x) not in seen or seen[id(x)][0] is not x:
                flat = x.detach().reshape(-1, x.shape[-1]).float()
                seen[id(x)] = (x, (flat.T @ flat).double())
            xtx = seen[id(x)][1]
            H[n] = H[n] + xtx if n in H else xtx.clone()
        hooks.append(mods[n].register_forward_pre_hook(record))
    try:
        with torch.inference_mode():
            for x in inputs:
                model(**x)
                seen.clear()
    finally:
        for h in hooks:
            h.remove()
    return H


def _round(w: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """w (out, in) rounded by GPTQ on the quantizer's grid, anchors kept (see the module docstring)."""
    orig = w.detach().float()
    s = orig.abs().amax(1) / QMAX  # the observer's scale, computed as it computes it (float32)
    s = torch.where(s > 0, s, torch.ones_like(s))
    anchor = torch.zeros_like(orig, dtype=torch.bool)
    anchor[torch.arange(len(orig)), orig.abs().argmax(1)] = True
    # the anchor's integer is not ours to choose: it rounds as the quantizer rounds it (127.5 -> 127; -127.5 -> -128)
    anchor_q = (orig / s[:, None]).round().clamp(-128, 127) * s[:, None]
    H = H.clone()
    dead = torch.diag(H) == 0  # an input that is always 0 (padding): its weights do not matter
    H[dead, dead] = 1.0
    H += DAMP * torch.diag(H).mean() * torch.eye(len(H), dtype=H.dtype)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True).float()  # H^-1's factor
    w = orig.clone()  # the columns not yet rounded take the error of those rounded
    q = torch.empty_like(w)
    for a in range(0, w.shape[1], BLOCK):
        b = min(a + BLOCK, w.shape[1])
        blk, err = w[:, a:b].clone(), torch.empty(len(w), b - a, dtype=w.dtype)
        for i in range(b - a):
            col = blk[:, i]
            qc = torch.where(anchor[:, a + i], anchor_q[:, a + i], (col / s).round().clamp(-127, 127) * s)
            q[:, a + i] = qc
            err[:, i] = (col - qc) / U[a + i, a + i]
            blk[:, i:] -= err[:, i:i + 1] * U[a + i, a + i:b][None, :]
        w[:, b:] -= err @ U[a:b, b:]
    return torch.where(anchor, orig, q)  # the anchors as they were (they set the scale); the rest on the grid


def gptq_round(model: nn.Module, inputs: list[dict[str, torch.Tensor]], skip: tuple[str, ...] = ()) -> nn.Module:
    """`model` (changed in place, and returned) with every Linear's weight rounded by GPTQ, except those named in
    `skip` (kept in FP32). `inputs`: the calibration windows, as the model takes them."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in skip]
    H = hessians(model, inputs, names)
    mods = dict(model.named_modules())
    with torch.no_grad():
        for n in names:
            if n in H:  # a layer the calibration never reached keeps round-to-nearest
                mods[n].weight.copy_(_round(mods[n].weight, H[n]))
    return model
