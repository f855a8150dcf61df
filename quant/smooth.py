"""Exact rewrites of BERT-family encoders that tame activation outliers before static INT8: SmoothQuant (moves
them into the weights) and outlier channel splitting (`split_outliers`, below: cuts them into copies).

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

Outlier channel splitting keeps the scale out of the weights altogether: a
channel far over the median channel's range is carried by k copies of x_j / k
and read by k copies of its weight column (y unchanged, the range cut k times,
the weights untouched; K grows). It is what keeps static INT8's answers on real
text (bench/README.md, issue #24).

The BERT, RoBERTa, XLM-RoBERTa and ELECTRA families (`FAMILIES`) are rewritten;
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


FAMILIES = ("bert", "roberta", "xlm-roberta", "electra")  # BERT's layer: attention.self reads one hidden state


def sites(model: nn.Module) -> list[Site]:
    """Every smoothing site of a BERT-family model (empty for other families: MobileBERT has the module names, but
    its attention takes separate query / key / value inputs)."""
    if getattr(getattr(model, "config", None), "model_type", None) not in FAMILIES:
        return []
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


# --------------------------------------------------------------------------------------- outlier channel splitting

SPLIT_RATIO = 2.0  # a channel whose calibrated max |x| exceeds this many times the median channel's is split; chosen
# on the real-text calibration half by logits SQNR (compiled, MiniLM-QA: ratio 2 / 3 / 4 -> 35.7 / 34.4 / 33.5 dB)
MAX_COPIES = 8  # at most this many copies of one channel (its range cut 8x)
MAX_EXTRA = 64  # at most this many extra channels per split input (one AMX tile of depth): a bound on the latency cost
ALIGN = 64  # a split input's K is padded (zero channels) to a multiple of this: AMX's INT8 tile is 64 deep, and a K
# tail costs more than the padding's FLOPs (compiled static-split on MiniLM-QA, 2-core Xeon with AMX: 1.13x the static
# card's latency @160 with K a multiple of 16, 1.00x with 64; bench/README.md). Folders built before: 16 (`split_align`)


@dataclass
class SplitSite:
    """One input to split: `hooked` is the module whose first input is widened ("gather": attention.self, whose
    input Q, K, V share; intermediate) or scaled ("rows": the FFN output block, whose extra channels come from extra
    rows of `producer`, the FFN input Linear, through the elementwise GELU). Hooks sit on these container modules,
    never on a Linear, so a quantizer that swaps the Linear layers (torch.ao's) keeps them."""

    name: str
    kind: str  # "gather" or "rows"
    hooked: nn.Module
    linears: list[nn.Linear]  # the layers that read the input (their weight columns are copied)
    producer: str | None = None  # "rows": the path of the Linear whose output rows are copied (looked up when
    # copied: the FFN input's own split may have replaced it by then)


def split_sites(model: nn.Module) -> list[SplitSite]:
    """Every input to split in a BERT-family model: per encoder layer the attention input (the LayerNorm output
    that Q, K and V read), the FFN input (the next LayerNorm output) and the FFN output's input (after GELU)."""
    out = []
    for s in sites(model):
        if s.kind == "fold":  # the context (attention output's input): no outlier channels to speak of
            continue
        if s.name.endswith(".output.dense"):
            block = s.name[: -len(".dense")]
            inter = s.name[: -len("output.dense")] + "intermediate.dense"
            out.append(SplitSite(block, "rows", model.get_submodule(block), s.linears, inter))
        else:
            out.append(SplitSite(s.name, "gather", s.hooked, s.linears))
    return out


def split_plan(amax: torch.Tensor, ratio: float = SPLIT_RATIO, max_copies: int = MAX_COPIES,
               align: int = ALIGN, budget: int | None = MAX_EXTRA) -> tuple[torch.Tensor, torch.Tensor]:
    """Which channels to copy and the factor every channel then takes: (idx, c). Channel j with max |x_j| over the
    bound (ratio x the median channel's) is carried by k_j copies, each x_j / k_j, up to k_j = ceil(max|x_j| / bound)
    (under the bound) or `max_copies`. With a `budget` of extra channels, one copy at a time goes to the channel whose
    range x_j / k_j is then the largest (water-filling: the per-tensor range falls fastest) until the budget is spent.
    idx: the extra copies' source channels (padded with zero channels, c = 0, until n + len(idx) is a multiple of
    `align`); c: the factor of each of the n + len(idx) channels. No channel over the bound: both empty."""
    n = amax.numel()
    bound = max(float(amax.median()) * ratio, 1e-12)
    if budget is None:
        k = torch.clamp(torch.ceil(amax / bound), 1, max_copies).float()
    else:
        k = torch.ones(n)
        for _ in range(budget):
            r = torch.where(k < max_copies, amax / k, torch.zeros(()))
            j = int(r.argmax())
            if float(r[j]) <= bound:
                break
            k[j] += 1
    idx = torch.repeat_interleave(torch.arange(n), (k - 1).long())
    if not idx.numel():
        return idx, torch.empty(0)
    c = torch.cat([1.0 / k, (1.0 / k)[idx]])
    pad = -(n + idx.numel()) % align  # the widened K a multiple of `align`
    return torch.cat([idx, idx.new_zeros(pad)]), torch.cat([c, c.new_zeros(pad)])


class _Split(nn.Module):
    """Holds a split's channel copies and factors (constants of the exported graph)."""

    def __init__(self, idx: torch.Tensor, c: torch.Tensor):
        super().__init__()
        self.register_buffer("idx", idx)
        self.register_buffer("c", c)


def _widen(x: torch.Tensor, split: _Split) -> torch.Tensor:
    """x with its split channels' copies appended, every channel times its factor (the split's input)."""
    return torch.cat([x, x.index_select(-1, split.idx)], -1) * split.c


def _gather(mod, args):
    return (_widen(args[0], mod.outlier_split),) + tuple(args[1:])


def _scale(mod, args):
    return (args[0] * mod.outlier_split.c,) + tuple(args[1:])


def _widened(lin: nn.Linear, idx: torch.Tensor, c: torch.Tensor) -> nn.Linear:
    """`lin` reading n + len(idx) input channels: the copies' columns equal their source's (zero for padding)."""
    new = nn.Linear(lin.in_features + idx.numel(), lin.out_features, bias=lin.bias is not None)
    with torch.no_grad():
        extra = lin.weight[:, idx] * (c[lin.in_features:] > 0)
        new.weight.copy_(torch.cat([lin.weight, extra], 1))
        if lin.bias is not None:
            new.bias.copy_(lin.bias)
    return new


def _set(model: nn.Module, lin: nn.Linear, new: nn.Module) -> None:
    for mod in model.modules():
        for child_name, child in mod.named_children():
            if child is lin:
                setattr(mod, child_name, new)


Plans = dict[str, tuple[torch.Tensor, torch.Tensor]]  # split site path -> (idx, c) of `split_plan`


def _split_where(model: nn.Module, skip: tuple[str, ...]) -> list[SplitSite]:
    names = {id(mod): n for n, mod in model.named_modules()}
    return [s for s in split_sites(model) if not any(names[id(lin)] in skip for lin in s.linears)]


def plan_splits(model: nn.Module, inputs: list[dict[str, torch.Tensor]], ratio: float = SPLIT_RATIO,
                skip: tuple[str, ...] = (), align: int = ALIGN, budget: int | None = MAX_EXTRA) -> Plans:
    """Each split input's plan (`split_plan`) from its channels' max |x| over the calibration `inputs`; inputs with
    no channel over the bound are left out. `skip`: Linear paths kept in FP32 (their inputs are not split)."""
    if ratio <= 1.0:
        raise ValueError(f"the split ratio is a multiple of the median channel's range, > 1; got {ratio}")
    where = _split_where(model, skip)
    plans: Plans = {}
    if not where:  # not a BERT-family layout: nothing to split, no calibration pass
        return plans
    for site, amax in zip(where, input_absmax(model, inputs, where)):
        idx, c = split_plan(amax, ratio, align=align, budget=budget)
        if idx.numel():
            plans[site.name] = (idx, c)
    return plans


def apply_splits(model: nn.Module, plans: Plans, skip: tuple[str, ...] = ()) -> nn.Module:
    """A copy of `model` split as `plans` says (see `split_outliers`); sites reading a `skip` Linear are left as
    they are. The plans travel in the copy's state dict (`<site>.outlier_split.idx` / `.c`: `plans_in`)."""
    m = copy.deepcopy(model).eval()
    for site in _split_where(m, skip):
        if site.name not in plans:
            continue
        idx, c = plans[site.name]
        for lin in site.linears:
            _set(m, lin, _widened(lin, idx, c))
        if site.kind == "rows":  # the FFN input's output rows copied; GELU is elementwise, so the copies match
            p = m.get_submodule(site.producer)
            new = nn.Linear(p.in_features, p.out_features + idx.numel(), bias=p.bias is not None)
            with torch.no_grad():
                new.weight.copy_(torch.cat([p.weight, p.weight[idx]]))
                if p.bias is not None:
                    new.bias.copy_(torch.cat([p.bias, p.bias[idx]]))
            _set(m, p, new)
        site.hooked.add_module("outlier_split", _Split(idx.clone(), c.clone()))
        site.hooked.register_forward_pre_hook(_scale if site.kind == "rows" else _gather)
    return m


def plans_in(state: dict[str, torch.Tensor]) -> Plans:
    """The split plans a split model's state dict holds (empty for a model never split)."""
    suffix = ".outlier_split.idx"
    return {k[: -len(suffix)]: (state[k], state[k[: -len(".idx")] + ".c"]) for k in state if k.endswith(suffix)}


class _View(nn.Module):
    """A split Linear seen from the unsplit model: its input widened as the split widens it, its output cut."""

    def __init__(self, mod: nn.Module, split: "_Split | None", out_features: int):
        super().__init__()
        self.mod, self.split, self.out_features = mod, split, out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mod(x if self.split is None else _widen(x, self.split))[..., : self.out_features]


def unsplit_view(model: nn.Module, name: str, like: nn.Linear) -> nn.Module | None:
    """The Linear `name` of a split `model` as a module that takes the unsplit model's input to `like` (its FP32
    twin) and gives `like`'s output shape: the input widened as the split widens it (copies and factors), the output
    cut to `like`'s channels (an FFN input whose output rows were copied). It can stand in `like`'s place (tune's
    one-layer swaps). None when `name` is not split."""
    mod = model.get_submodule(name)
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    split = getattr(parent, "outlier_split", None)
    if split is None and mod.out_features <= like.out_features:  # float and quantized Linear both say it
        return None
    return _View(mod, split, like.out_features)


def unsplit_weight(w: torch.Tensor, like: nn.Linear) -> torch.Tensor:
    """A split Linear's weight cut back to its FP32 twin's shape (the original rows and columns come first)."""
    return w[: like.out_features, : like.in_features]


def split_outliers(model: nn.Module, inputs: list[dict[str, torch.Tensor]], ratio: float = SPLIT_RATIO,
                   skip: tuple[str, ...] = (), align: int = ALIGN, budget: int | None = MAX_EXTRA) -> nn.Module:
    """A copy of `model` whose outlier input channels are split (the same function: logits equal up to float
    rounding), so a per-tensor activation scale fits the rest (outlier channel splitting: Zhao et al., ICML 2019).

    Channel j, k_j times the bound (`split_plan`), is carried by k_j copies of x_j / k_j and the Linear layers
    reading it get k_j copies of column j: y = sum_j x_j w_j is unchanged, the activation range is cut k_j times,
    and the weights' range is not touched (SmoothQuant's scales move the range into the weights instead). The
    layer's K grows by a few channels, padded with zero channels to a multiple of `align` (a K tail is what costs:
    compiled static INT8 on MiniLM-QA's plan, 1.13x the unsplit package's latency with K a multiple of 16, 1.00x
    with 64; bench/README.md); the gather and the factors are elementwise work that Inductor fuses into the
    quantize step. `skip`: Linear paths kept in FP32 (their inputs are left as they are)."""
    return apply_splits(model, plan_splits(model, inputs, ratio, skip, align, budget), skip)
