"""SmoothQuant for BERT-family encoders: move activation outliers into the weights, exactly, before static INT8.

A Linear y = x W^T whose input has a few channels far larger than the rest loses
the small channels to a per-tensor activation scale. Divide input channel j by
s_j and multiply the weight's column j by s_j: the product is unchanged, the
activation range shrinks, the weights (per-channel int8) absorb it. s_j =
max|x_j|^alpha / max|W_:,j|^(1 - alpha), from the calibration windows (Xiao et
al., SmoothQuant, 2023; alpha 0.5 there).

In a post-LayerNorm BERT the LayerNorm output is also the residual, so it cannot
absorb the scale as in pre-LN models (folding it there would change the residual
stream). Instead, per encoder layer:

* the attention's input (Q, K and V share it), the FFN input and the FFN output's
  input (after GELU): a multiply by 1/s on the input (a forward pre-hook on
  `attention.self`, `intermediate` and `output.dense`; it is part of the exported
  graph, and Inductor fuses it into the quantize step that follows: an elementwise
  kernel either way), the weights' columns times s;
* the attention output's input (the context, linear in V): folded exactly, with no
  multiply at all: V's output channel j divided by s_j, the output projection's
  column j times s_j.

Families with BERT's module names (BERT, RoBERTa, XLM-RoBERTa, ELECTRA) are smoothed;
others are left as they are (`smoothable` says which).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import torch
from torch import nn

_LAYER = re.compile(r"^(?P<prefix>.*\.layer\.\d+)\.attention\.self$")


@dataclass
class Site:
    """One place to smooth: the module whose input is scaled (or, for `fold`, the V projection), and the Linear
    layers that read that input."""

    name: str  # e.g. bert.encoder.layer.3.intermediate
    kind: str  # "hook" (a multiply on the input) or "fold" (into V)
    hooked: nn.Module | None  # the module whose first input is scaled ("hook")
    linears: list[nn.Linear]  # the layers whose weight columns take s
    value: nn.Linear | None = None  # "fold": the V projection whose output channels take 1/s


def sites(model: nn.Module) -> list[Site]:
    """Every smoothing site of a BERT-family model (empty for other families)."""
    mods = dict(model.named_modules())
    out = []
    for name in mods:
        m = _LAYER.match(name)
        if not m:
            continue
        p = m.group("prefix")
        need = [f"{p}.attention.self.query", f"{p}.attention.self.key", f"{p}.attention.self.value",
                f"{p}.attention.output.dense", f"{p}.intermediate", f"{p}.intermediate.dense", f"{p}.output.dense"]
        if not all(n in mods for n in need):
            return []
        out += [Site(f"{p}.attention.self", "hook", mods[f"{p}.attention.self"],
                     [mods[f"{p}.attention.self.{x}"] for x in ("query", "key", "value")]),
                Site(f"{p}.attention.output.dense", "fold", None, [mods[f"{p}.attention.output.dense"]],
                     value=mods[f"{p}.attention.self.value"]),
                Site(f"{p}.intermediate", "hook", mods[f"{p}.intermediate"], [mods[f"{p}.intermediate.dense"]]),
                Site(f"{p}.output.dense", "hook", mods[f"{p}.output.dense"], [mods[f"{p}.output.dense"]])]
    return out


def smoothable(model: nn.Module) -> bool:
    return bool(sites(model))


def input_absmax(model: nn.Module, inputs: list[dict[str, torch.Tensor]], where: list[Site]) -> list[torch.Tensor]:
    """Per site, max |x| per input channel of its Linear layers over every calibration window."""
    maxes: list[torch.Tensor | None] = [None] * len(where)
    hooks = []
    for i, site in enumerate(where):
        def record(_mod, args, i=i):
            x = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0)
            maxes[i] = x if maxes[i] is None else torch.maximum(maxes[i], x)
        hooks.append(site.linears[0].register_forward_pre_hook(record))
    try:
        with torch.inference_mode():
            for x in inputs:
                model(**x)
    finally:
        for h in hooks:
            h.remove()
    return [m if m is not None else torch.ones(s.linears[0].in_features) for m, s in zip(maxes, where)]


class _Scale(nn.Module):
    """Holds 1/s as a buffer (a constant of the exported graph) for the pre-hook that multiplies the input."""

    def __init__(self, inv: torch.Tensor):
        super().__init__()
        self.register_buffer("inv", inv)


def smooth(model: nn.Module, inputs: list[dict[str, torch.Tensor]], alpha: float = 0.5,
           skip: tuple[str, ...] = ()) -> nn.Module:
    """A smoothed copy of `model` (the same function: logits equal up to float rounding). `inputs`: calibration
    windows (as the model takes them). `skip`: Linear paths left alone (those kept in FP32)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"SmoothQuant's alpha is between 0 and 1 (exclusive); got {alpha}")
    m = copy.deepcopy(model).eval()
    names = {id(mod): n for n, mod in m.named_modules()}
    where = [s for s in sites(m) if not any(names[id(lin)] in skip for lin in s.linears)]
    for site, amax in zip(where, input_absmax(m, inputs, where)):
        wmax = torch.stack([lin.weight.detach().abs().amax(0) for lin in site.linears]).amax(0)
        s = (amax.clamp(min=1e-5) ** alpha / wmax.clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5)
        with torch.no_grad():
            for lin in site.linears:
                lin.weight.mul_(s)  # column j times s_j
            if site.kind == "fold":
                site.value.weight.div_(s[:, None])  # V's output channel j over s_j
                if site.value.bias is not None:
                    site.value.bias.div_(s)
            else:
                holder = _Scale(1.0 / s)
                site.hooked.add_module("smooth_scale", holder)
                site.hooked.register_forward_pre_hook(
                    lambda mod, args: (args[0] * mod.smooth_scale.inv,) + tuple(args[1:]))
    return m
