"""QuantQA: what PyTorch INT8 quantization does to a BERT question-answering model.

Public names (no Gradio anywhere in this package), imported on first use so
that `import quant` (and every `--help`) stays fast:

    ModelSet                                variants.py every variant of one model, built once (and sizes)
    Comparison (compare, predict)           compare.py  operations over it: every variant on one question
    inspect_question                        inspection.py  where INT8 loses precision on one question
    load_model, ModelLoadError, set_threads models.py   load once (hub id or local folder)
    QuantConfig, quantize, choose_engine    quantize.py FP32 -> dynamic INT8 (a copy); keep_fp32, per_channel
    save_artifact, load_artifact            artifact.py an INT8 model as a folder (every recipe), its model card
    encode, best_span, rank_spans, Span     qa.py       windows + span decoding by char offsets
    Inspector, sqnr_db                      inspect.py  per-layer / per-token FP32-vs-INT8 error
    tune                                    tune.py     keep the most sensitive layers in FP32
    measure, LatencyStats                   timing.py   warm-up + timed runs, CUDA synced
    state_dict_mib                          size.py     bytes of torch.save(state_dict) / 2**20
    InputError, check_inputs                inputs.py   server-side validation and limits
"""

from __future__ import annotations

import importlib
import logging
import sys
import types

# transformers imports torchao (when installed) while importing its BERT code; torchao then
# warns about CUDA-only extensions it cannot load on a CPU build, and torch warns about
# torchao's enum registrations. Neither concerns QuantQA's users: keep them out of the console.
for _noisy in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)

_WHERE = {
    "Comparison": "compare", "VariantResult": "compare", "DEFAULT_VARIANTS": "compare",
    "EXTRA_VARIANTS": "compare", "STATIC_VARIANT": "compare", "LABELS": "compare",
    "InputError": "inputs", "check_inputs": "inputs",
    "DEFAULT_MODEL": "models", "ModelLoadError": "models", "load_model": "models", "set_threads": "models",
    "Span": "qa", "best_span": "qa", "rank_spans": "qa", "encode": "qa",
    "ModelSet": "variants",
    "QuantConfig": "quantize", "choose_engine": "quantize", "count_quantized": "quantize",
    "load_artifact": "artifact", "quantize": "quantize", "save_artifact": "artifact",
    "Inspector": "inspect", "sqnr_db": "inspect", "inspect_question": "inspection",
    "tune": "tune",
    "state_dict_mib": "size",
    "LatencyStats": "timing", "measure": "timing",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'quant' has no attribute {name!r}")


class _Package(types.ModuleType):
    """`quant.quantize` and `quant.tune` are functions (`from quant import quantize`), though modules of the
    same names exist: the import system binds each submodule onto its package with setattr, which would
    replace the function; here that one binding is skipped (the module stays in sys.modules)."""

    def __setattr__(self, name, value):
        if name in ("quantize", "tune") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
