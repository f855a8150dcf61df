"""GPTQ rounding for static INT8 (quant/gptq.py): closer layer outputs than rounding to nearest, on the grid the
PT2E quantizer itself chooses, so that the package keeps GPTQ's integers."""

import pytest
import torch
from torch import nn

from quant.gptq import QMAX, gptq_round


class _One(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(w)

    def forward(self, x):
        return self.lin(x)


def _rtn(w):
    s = (w.abs().amax(1) / QMAX)[:, None]
    return (w / s).round().clamp(-128, 127) * s


def test_gptq_keeps_a_layers_output_closer_than_rounding_to_nearest_on_the_same_grid():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 96, generator=g)
    x = torch.randn(4000, 96, generator=g) @ torch.randn(96, 96, generator=g)  # correlated input channels
    m = gptq_round(_One(w), [{"x": x[:2000]}])
    q = m.lin.weight.detach()
    rtn = _rtn(w)
    held = x[2000:]  # inputs GPTQ did not see
    err_g = ((held @ (q - w).T) ** 2).sum()
    err_r = ((held @ (rtn - w).T) ** 2).sum()
    assert err_g < 0.6 * err_r, (float(err_g), float(err_r))
    # the quantizer's grid: each row's max |w| (its scale) unchanged, every other weight an integer step within 127
    assert torch.equal(q.abs().amax(1), w.abs().amax(1))
    s = (w.abs().amax(1) / QMAX)[:, None]
    k = q / s
    anchor = q.abs() == q.abs().amax(1, keepdim=True)
    assert torch.allclose(k[~anchor], k[~anchor].round(), atol=1e-4) and k[~anchor].abs().max() <= 127 + 1e-4
    assert _rtn(q).sub(q)[~anchor].abs().max() <= 1e-6 * float(w.abs().max())  # the quantizer keeps them


def test_the_static_package_keeps_gptqs_integers(trained):
    """Static INT8 built from GPTQ-rounded weights holds exactly those weights (the quantizer re-derives the same
    grid), except the anchors (one per row, which set the scale and round as they would have)."""
    import copy

    from quant.static import StaticOptions, calibration_inputs, calibration_texts, convert, input_names

    tok = trained.tokenizer
    names = input_names(tok)
    calib = calibration_texts()
    windows = [dict(zip(names, x)) for x in calibration_inputs(tok, calib, trained.max_length, names)]
    rounded = gptq_round(copy.deepcopy(trained.fp32_eager).eval(), windows)
    weights = [m.weight.detach() for m in rounded.modules() if isinstance(m, nn.Linear)]
    gm = convert(rounded, tok, max_length=trained.max_length, calibration=calib, options=StaticOptions()).graph
    deq = [n for n in gm.graph.nodes if n.target == torch.ops.quantized_decomposed.dequantize_per_channel.default]
    assert len(deq) == len(weights)
    for n in deq:
        w8, scale = getattr(gm, n.args[0].target), getattr(gm, n.args[1].target)
        back = w8.float() * scale[:, None]
        match = [w for w in weights if w.shape == back.shape and torch.allclose(
            (back - w)[w.abs() < w.abs().amax(1, keepdim=True)], torch.zeros(()), atol=1e-6)]
        assert match, n
