"""Latency benchmark: every variant (and peers, where installed) interleaved in one process.

For each sequence length, all variants are timed on the same synthetic input
([CLS] + random wordpieces + [SEP], batch 1), warm-up first, then `runs`
rounds; each round runs every variant once and the order rotates every round
(`timing.measure_interleaved`), so a noisy neighbour or a clock change hits
all variants alike. Reported: median and p90 in ms, speed-up of the median vs
`fp32-cpu`, and a header saying what machine this was.

Variants: fp32-cpu (as loaded), fp32-jit-cpu (FP32 traced + frozen: shows how
much of INT8's lead is TorchScript rather than quantization), int8-eager-cpu,
int8-cpu (what the app runs: traced + frozen unless --no-torchscript),
int8-emb-cpu (embeddings quantized too), bf16-cpu (where the CPU has native
bf16), fp32-cuda, fp16-cuda (with a GPU).
Peers (requirements-peers.txt; skipped with a note when absent):
  ort-fp32, ort-int8   ONNX Runtime, exported with torch.onnx.export; INT8 by
                       onnxruntime.quantization.quantize_dynamic (QInt8 weights)
  torchao-int8         torchao quantize_(Int8DynamicActivationInt8WeightConfig())
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from . import env
from .compare import Comparator
from .quantize import QuantConfig, quantize, trace
from .timing import measure_interleaved

CPU_VARIANTS = ("fp32-cpu", "fp32-jit-cpu", "int8-eager-cpu", "int8-cpu", "int8-emb-cpu", "bf16-cpu")
GPU_VARIANTS = ("fp32-cuda", "fp16-cuda")
PEERS = ("ort-fp32", "ort-int8", "torchao-int8")


@dataclass
class Row:
    variant: str
    seq_len: int
    median_ms: float
    p90_ms: float
    speedup: float | None


@dataclass
class BenchReport:
    model: str
    runs: int
    warmup: int
    rows: list[Row]
    machine: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    sizes_mib: dict[str, float] = field(default_factory=dict)
    startup: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "runs": self.runs,
            "warmup": self.warmup,
            "results": [{"variant": r.variant, "seq_len": r.seq_len, "median_ms": round(r.median_ms, 3),
                         "p90_ms": round(r.p90_ms, 3), "speedup": None if r.speedup is None else round(r.speedup, 3)}
                        for r in self.rows],
            "machine": self.machine,
            "sizes_mib": {k: round(v, 2) for k, v in self.sizes_mib.items()},
            "startup_s": self.startup,
            "notes": self.notes,
        }

    def table(self) -> str:
        m = self.machine
        out = [f"model: {self.model}",
               f"cpu: {m['cpu']} | features: {', '.join(m['cpu_features']) or '-'}",
               f"threads: {m['threads']} | torch {m['torch']} | transformers {m['transformers']} | "
               f"quantized engine: {m['engine_choice']}",
               f"gpu: {m['gpu'] or 'none'} | {self.runs} timed runs after {self.warmup} warm-up, interleaved; "
               f"medians", ""]
        seq_lens = sorted({r.seq_len for r in self.rows})
        variants = list(dict.fromkeys(r.variant for r in self.rows))
        by = {(r.variant, r.seq_len): r for r in self.rows}
        head = f"{'variant':<14}" + "".join(f"{f'{s} tok: median / p90 ms':>30}{'speed-up':>10}" for s in seq_lens)
        out += [head, "-" * len(head)]
        for v in variants:
            line = f"{v:<14}"
            for s in seq_lens:
                r = by.get((v, s))
                if r is None:
                    line += f"{'-':>30}{'':>10}"
                else:
                    sp = f"{r.speedup:.2f}x" if r.speedup else "-"
                    line += f"{f'{r.median_ms:.2f} / {r.p90_ms:.2f}':>30}{sp:>10}"
            out.append(line)
        if self.sizes_mib:
            f = self.sizes_mib.get("fp32")
            out += ["", "size (torch.save(state_dict), MiB): " + ", ".join(
                f"{k} {v:.2f}" + (f" ({100 * v / f:.1f}%)" if f and k != "fp32" else "") for k, v in self.sizes_mib.items())]
        if self.startup:
            out.append("app start-up (fresh process, s): " + ", ".join(f"{k} {v:.2f}" for k, v in self.startup.items()))
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out)


def synthetic_inputs(vocab_size: int, seq_len: int, cls_id: int = 101, sep_id: int = 102, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000 if vocab_size > 2000 else 5, vocab_size, (1, seq_len), generator=g)
    ids[0, 0], ids[0, -1] = cls_id, sep_id
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


# ----------------------------------------------------------------------------- peers


def _ort_sessions(model: torch.nn.Module, threads: int, workdir: Path, notes: list[str]) -> dict[str, Any]:
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        notes.append("ONNX Runtime rows skipped: pip install -r requirements-peers.txt")
        return {}
    fp32_path, int8_path = workdir / "model.onnx", workdir / "model.int8.onnx"
    dummy = synthetic_inputs(model.config.vocab_size, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (dummy["input_ids"], dummy["attention_mask"], dummy["token_type_ids"]),
                          str(fp32_path), input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["start_logits", "end_logits"], opset_version=17, dynamo=False,
                          dynamic_axes={k: {0: "batch", 1: "seq"} for k in ("input_ids", "attention_mask",
                                                                            "token_type_ids", "start_logits",
                                                                            "end_logits")})
        import logging

        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing" notice
        try:
            quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
        finally:
            logging.getLogger().setLevel(level)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # ORT's threads busy-wait after each run by default; interleaved with other variants
    # that would steal their cores and bias the table in ORT's favour.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = {}
    for name, path in (("ort-fp32", fp32_path), ("ort-int8", int8_path)):
        sessions[name] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    notes.append(f"ONNX Runtime {ort.__version__}: torch.onnx.export (opset 17) + quantize_dynamic(QInt8), "
                 f"ORT_ENABLE_ALL, {threads} intra-op threads")
    return sessions


def _torchao_model(model: torch.nn.Module, notes: list[str]):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchao
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError:
        notes.append("torchao row skipped: pip install -r requirements-peers.txt")
        return None
    m = copy.deepcopy(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_(m, Int8DynamicActivationInt8WeightConfig())
    notes.append(f"torchao {torchao.__version__}: quantize_(Int8DynamicActivationInt8WeightConfig()), eager")
    return m


# ----------------------------------------------------------------------------- startup


def measure_startup(model_id: str, threads: int | None, quant: QuantConfig) -> dict[str, float]:
    """App start-up in a fresh process: imports, load from local files, quantize, sizes."""
    code = (
        "import time; t0 = time.perf_counter()\n"
        "import json, sys\n"
        "from quant import Comparator, QuantConfig\n"
        "t1 = time.perf_counter()\n"
        f"c = Comparator({model_id!r}, threads={threads!r}, quant=QuantConfig(**{quant.__dict__!r}), "
        "variants=('fp32-cpu', 'int8-cpu', 'fp32-cuda'), log=None)\n"
        "t2 = time.perf_counter()\n"
        "print(json.dumps({'imports': t1 - t0, 'load_quantize_sizes': t2 - t1, 'total': t2 - t0}))\n"
    )
    root = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"start-up measurement failed: {p.stderr.strip().splitlines()[-1:]}")
    return {k: round(v, 2) for k, v in json.loads(p.stdout.strip().splitlines()[-1]).items()}


# ----------------------------------------------------------------------------- main


def run_bench(model_id: str, seq_lens=(64, 160, 384), runs: int = 20, warmup: int = 3, threads: int | None = None,
              quant: QuantConfig | None = None, variants=None, peers: bool = True, startup: bool = False,
              progress: bool = False, log: Callable[[str], None] | None = None) -> BenchReport:
    quant = quant or QuantConfig()
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    notes: list[str] = []
    startup_s = measure_startup(model_id, threads, quant) if startup else None
    base_variants = ("fp32-cpu", "int8-cpu", "bf16-cpu", "fp32-cuda", "fp16-cuda")
    comp = Comparator(model_id, threads=threads, quant=quant, variants=base_variants, log=log)
    fp32 = comp.model("fp32-cpu")
    models: dict[str, tuple[Any, str]] = {}
    for name, why in comp.availability().items():
        if why is None:
            models[name] = (comp.model(name), "cuda:0" if name.endswith("cuda") else "cpu")
        else:
            notes.append(f"{name} skipped: {why}")
    sizes = dict(comp.sizes_mib)
    probes = comp.probes()

    def maybe_trace(m, name):
        if not quant.torchscript:
            return m
        try:
            return trace(m, probes)
        except Exception as exc:
            notes.append(f"{name}: TorchScript failed, eager ({type(exc).__name__})")
            return m

    if not quant.embeddings:
        emb = quantize(fp32, QuantConfig(embeddings=True, engine=comp.engine))
        from .size import state_dict_mib

        sizes["int8_emb"] = state_dict_mib(emb)
        models["int8-emb-cpu"] = (maybe_trace(emb, "int8-emb-cpu"), "cpu")
    else:
        models["int8-emb-cpu"] = models.pop("int8-cpu")
    if quant.torchscript:
        models["int8-eager-cpu"] = (comp.int8_eager, "cpu")
        models["fp32-jit-cpu"] = (maybe_trace(fp32, "fp32-jit-cpu"), "cpu")
    tmp = tempfile.TemporaryDirectory(prefix="quantqa-bench-")
    ort_sessions = {}
    if peers:
        try:
            ort_sessions = _ort_sessions(fp32, comp.threads, Path(tmp.name), notes)
        except Exception as exc:  # an exporter or ORT failure must not sink the whole bench
            notes.append(f"ONNX Runtime rows skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        try:
            ao = _torchao_model(fp32, notes)
            if ao is not None:
                models["torchao-int8"] = (ao, "cpu")
        except Exception as exc:
            notes.append(f"torchao row skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    order = list(CPU_VARIANTS + GPU_VARIANTS + PEERS)
    wanted = [v for v in order if v in models or v in ort_sessions]
    if variants:
        unknown = [v for v in variants if v not in order]
        if unknown:
            raise ValueError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(order)}")
        wanted = [v for v in wanted if v in variants]
    tok = comp.tokenizer
    rows: list[Row] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(seq_lens) * len(wanted) * (runs + warmup), desc="bench", unit="call", file=sys.stderr,
                   leave=False)
    try:
        for s in seq_lens:
            if s > comp.max_length and s > getattr(fp32.config, "max_position_embeddings", 512):
                notes.append(f"{s} tokens skipped: longer than the model's positions")
                continue
            x = synthetic_inputs(fp32.config.vocab_size, s, tok.cls_token_id or 0, tok.sep_token_id or 0)
            fns = {}
            for v in wanted:
                if v in ort_sessions:
                    feed = {k: t.numpy() for k, t in x.items()}
                    fns[v] = (lambda sess=ort_sessions[v], f=feed: sess.run(None, f), None)
                else:
                    m, dev = models[v]
                    xi = {k: t.to(dev) for k, t in x.items()}
                    fns[v] = (lambda m=m, xi=xi: m(**xi), dev if dev.startswith("cuda") else None)
            done = [0]

            def step(n, total, done=done):
                if bar:
                    bar.update(n - done[0])
                    done[0] = n

            res = measure_interleaved(fns, runs=runs, warmup=warmup, on_step=step)
            base = res.get("fp32-cpu", (None,))[0]
            for v in wanted:
                stats, _, err = res[v]
                if err is not None:
                    notes.append(f"{v} at {s} tokens failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
                    continue
                rows.append(Row(v, s, stats.median, stats.p90, base.median / stats.median if base else None))
    finally:
        if bar:
            bar.close()
        tmp.cleanup()
    machine = env.machine_info()
    machine["engine_choice"] = comp.engine_choice.describe()
    return BenchReport(comp.model_id, runs, warmup, rows, machine, notes, sizes, startup_s)
