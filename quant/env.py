"""What machine the numbers were measured on: CPU, features, threads, versions, GPU."""

from __future__ import annotations

import platform
from functools import lru_cache

import torch

# /proc/cpuinfo flag -> what it means for this demo
CPU_FEATURES = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX-512 VNNI (int8 dot products)",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX-512 BF16",
    "amx_int8": "AMX-INT8",
    "amx_bf16": "AMX-BF16",
}


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset]:
    name, flags = platform.processor() or platform.machine(), frozenset()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "model name" and name in ("", platform.machine(), platform.processor()):
                    name = val.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = frozenset(val.split())
    except OSError:
        pass
    return name or "unknown CPU", flags


def cpu_name() -> str:
    return _cpuinfo()[0]


def cpu_features() -> list[str]:
    flags = _cpuinfo()[1]
    return [label for flag, label in CPU_FEATURES.items() if flag in flags]


def has_native_bf16() -> bool:
    flags = _cpuinfo()[1]
    return bool({"avx512_bf16", "amx_bf16", "bf16"} & flags)


def cuda_status() -> tuple[bool, str]:
    """(available, a line saying what torch reports)."""
    try:
        if torch.cuda.is_available():
            return True, f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    except Exception as exc:  # broken driver: report, don't fail
        return False, f"CUDA is not available on this machine (torch reports: {exc})"
    if torch.version.cuda is None:
        return False, f"CUDA is not available on this machine (torch {torch.__version__} is a CPU-only build)"
    return False, (f"CUDA is not available on this machine (torch {torch.__version__} "
                   f"built for CUDA {torch.version.cuda} found no GPU)")


def machine_info() -> dict:
    import transformers

    from .threads import current

    ok, gpu = cuda_status()
    return {
        "thread_policy": current().describe(),
        "cpu": cpu_name(),
        "cpu_features": cpu_features(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "quantized_engine": torch.backends.quantized.engine,
        "gpu": gpu if ok else None,
        "python": platform.python_version(),
    }
