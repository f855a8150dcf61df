"""QuantQA: what PyTorch dynamic INT8 quantization does to a BERT question-answering model.

Public names (no Gradio anywhere in this package):

    Comparator, Comparison, VariantResult   compare.py  run every variant on one question
    load_model, ModelLoadError, set_threads models.py   load once (hub id or local folder)
    QuantConfig, quantize, choose_engine    quantize.py FP32 -> dynamic INT8 (a copy)
    save_artifact, load_artifact
    encode, best_span, Span                 qa.py       windows + span decoding by char offsets
    measure, LatencyStats                   timing.py   warm-up + timed runs, CUDA synced
    state_dict_mib                          size.py     bytes of torch.save(state_dict) / 2**20
    InputError, check_inputs                inputs.py   server-side validation and limits
"""

from .compare import DEFAULT_VARIANTS, EXTRA_VARIANTS, LABELS, Comparator, Comparison, VariantResult
from .inputs import InputError, check_inputs
from .models import DEFAULT_MODEL, ModelLoadError, load_model, set_threads
from .qa import Span, best_span, encode
from .quantize import QuantConfig, choose_engine, count_quantized, load_artifact, quantize, save_artifact
from .size import state_dict_mib
from .timing import LatencyStats, measure

__all__ = [
    "DEFAULT_MODEL", "DEFAULT_VARIANTS", "EXTRA_VARIANTS", "LABELS", "Comparator", "Comparison", "VariantResult",
    "InputError", "check_inputs", "ModelLoadError", "load_model", "set_threads", "Span", "best_span", "encode",
    "QuantConfig", "choose_engine", "count_quantized", "load_artifact", "quantize", "save_artifact",
    "state_dict_mib", "LatencyStats", "measure",
]
