"""CUDA variants: run only where a GPU is present (marked `cuda`, skipped elsewhere)."""

import pytest
import torch

import tinymodels
from quant.compare import compare
from quant import ModelSet
from quant.compare import DEFAULT_VARIANTS

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def gpu_comp(trained_model_dir):
    return ModelSet(str(trained_model_dir), variants=DEFAULT_VARIANTS + ("fp16-cuda",), log=None)


def test_cuda_answers_match_cpu(gpu_comp):
    for ex in tinymodels.held_out_examples(10, seed=31):
        c = compare(gpu_comp, ex.context, ex.question, runs=3)
        cpu, gpu, half = c.result("fp32-cpu"), c.result("fp32-cuda"), c.result("fp16-cuda")
        assert gpu.available, gpu.reason
        assert (gpu.start, gpu.end) == (cpu.start, cpu.end)
        assert gpu.score == pytest.approx(cpu.score, abs=1e-3)
        assert half.available and half.answer == cpu.answer
        assert gpu.latency.runs == 3 and gpu.latency.median > 0


def test_cuda_model_lives_on_gpu(gpu_comp):
    assert next(gpu_comp.model("fp32-cuda").parameters()).device.type == "cuda"
    assert next(gpu_comp.model("fp16-cuda").parameters()).dtype == torch.float16
