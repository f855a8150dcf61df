"""Model size = bytes of `torch.save(model.state_dict())`, written to memory.

The same measure the original demo used (it wrote a temp file and read its
size), without the temp file — a file in the working directory collides under
concurrent requests. Summing `parameters()` would be wrong: dynamically
quantized Linear layers keep their int8 weights in packed params, not parameters.
"""

from __future__ import annotations

import io

import torch

MIB = 2**20


class _CountingSink(io.RawIOBase):
    """A write-only stream that counts bytes and keeps none of them."""

    def __init__(self):
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        n = len(b)
        self.n += n
        return n


def state_dict_bytes(model: torch.nn.Module) -> int:
    sink = _CountingSink()
    torch.save(model.state_dict(), sink)
    return sink.n


def state_dict_mib(model: torch.nn.Module) -> float:
    return state_dict_bytes(model) / MIB


def graph_state_mib(gm: torch.fx.GraphModule) -> float:
    """Bytes of `torch.save` of the tensors an FX graph actually reads (its get_attr targets), in MiB.

    A PT2E-converted graph keeps the original FP32 weights as parameters that
    nothing reads any more, next to the int8 constants it uses; its plain
    state_dict would count both.
    """
    used = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            obj = gm
            for part in str(node.target).split("."):
                obj = getattr(obj, part)
            if isinstance(obj, torch.Tensor):
                used[str(node.target)] = obj
    sink = _CountingSink()
    torch.save(used, sink)
    return sink.n / MIB
