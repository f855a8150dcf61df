"""Latency benchmark: every variant (and peers, where installed) interleaved in one process.

For each sequence length, all variants are timed on the same synthetic input
([CLS] + random wordpieces + [SEP], batch 1), warm-up first, then `runs`
rounds; each round runs every variant once and the order rotates every round
(`timing.measure_interleaved`), so a noisy neighbour or a clock change hits
all variants alike. Reported: median and p90 in ms, speed-up of the median vs
`fp32-cpu`, and a header saying what machine this was.

Variants and peers: see `VARIANTS` (python -m quant bench --list-variants).
ONNX Runtime is installed only in .venv-peers (`make bench`: it is not needed
to run the app); torchao comes with requirements.txt. Each peer row is skipped
with a note when its package is absent.

ONNX Runtime's threads spin after each run (its default, and its fastest
setting); in an interleaved loop that spinning would steal the cores of
whatever runs next, so each ORT call is followed by a pause outside the clock
(`ORT_SETTLE_S`, measured: the next variant is back to its own speed after
~30-100 ms).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from . import env
from .variants import ModelSet
from .inputs import first_line
from .quantize import QuantConfig, quantize, trace_or_eager
from .timing import measure_interleaved

CPU_VARIANTS = ("fp32-cpu", "fp32-jit-cpu", "int8-eager-cpu", "int8-cpu", "int8-pt-cpu", "int8-pc-cpu", "int8-emb-cpu",
                "int8-nosplit-cpu", "int8-static-cpu", "bf16-cpu")
GPU_VARIANTS = ("fp32-cuda", "fp16-cuda")
PEERS = ("ort-fp32", "ort-int8", "ort-int8-opt", "torchao-int8")
VARIANTS = {
    "fp32-cpu": "the model as loaded (eager FP32)",
    "fp32-jit-cpu": "FP32 traced + frozen with TorchScript: how much of INT8's lead is TorchScript, not int8",
    "int8-eager-cpu": "dynamic INT8, eager",
    "int8-cpu": "dynamic INT8, traced + frozen (what the app runs: per-channel weights unless --per-tensor)",
    "int8-pt-cpu": "dynamic INT8, per-tensor weight scales, traced + frozen: the seed's recipe",
    "int8-pc-cpu": "dynamic INT8 with per-channel weight scales, traced + frozen",
    "int8-emb-cpu": "dynamic INT8 + 8-bit embeddings",
    "int8-nosplit-cpu": "dynamic INT8 as int8-cpu without outlier channel splitting (--no-split): the split's cost",
    "int8-static-cpu": "static INT8: PT2E + X86 Inductor quantizer, AOTInductor package (cached; --no-static skips)",
    "bf16-cpu": "bfloat16 (CPUs with native bf16)",
    "fp32-cuda": "FP32 on the GPU",
    "fp16-cuda": "FP16 on the GPU",
    "ort-fp32": "peer: ONNX Runtime FP32, transformer-optimized graph (fused attention, LayerNorm, GELU)",
    "ort-int8": "peer: ONNX Runtime INT8, plain export + quantize_dynamic (per-tensor)",
    "ort-int8-opt": "peer: ONNX Runtime INT8, transformer optimizer + quantize_dynamic per-channel (its strongest)",
    "torchao-int8": "peer: torchao Int8DynamicActivationInt8WeightConfig, eager",
}
ORT_SETTLE_S = 0.1
PEER_HINT = "install the peers with `make bench` (a separate .venv-peers; see README)"


def describe_variants() -> str:
    return "\n".join(f"{k:<16} {v}" for k, v in VARIANTS.items())


@dataclass
class Row:
    variant: str
    seq_len: int
    median_ms: float
    p90_ms: float
    speedup: float | None
    sqnr_db: float | None = None  # logits vs fp32-cpu on the same input


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
                         "p90_ms": round(r.p90_ms, 3), "speedup": None if r.speedup is None else round(r.speedup, 3),
                         "sqnr_db": None if r.sqnr_db is None else round(r.sqnr_db, 2)}
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
        head = (f"{'variant':<16}" + "".join(f"{f'{s} tok: median / p90 ms':>26}{'speed-up':>9}" for s in seq_lens)
                + f"{'logits SQNR dB':>17}")
        out += [head, "-" * len(head)]
        for v in variants:
            line = f"{v:<16}"
            dbs = []
            for s in seq_lens:
                r = by.get((v, s))
                if r is None:
                    line += f"{'-':>26}{'':>9}"
                else:
                    sp = f"{r.speedup:.2f}x" if r.speedup else "-"
                    line += f"{f'{r.median_ms:.2f} / {r.p90_ms:.2f}':>26}{sp:>9}"
                    if r.sqnr_db is not None:
                        dbs.append(r.sqnr_db)
            line += f"{(f'{min(dbs):.1f}' + (f'-{max(dbs):.1f}' if max(dbs) - min(dbs) >= 0.1 else '')) if dbs else '-':>17}"
            out.append(line)
        out.append("(speed-up: fp32-cpu median / this median; logits SQNR vs fp32-cpu on the same input, "
                   "min-max over lengths)")
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
    """ONNX Runtime sessions: FP32 (optimized), INT8 plain, INT8 optimized + per-channel (the strongest found)."""
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.transformers import optimizer
    except ImportError:
        notes.append(f"ONNX Runtime rows skipped: onnxruntime is not installed here; {PEER_HINT}")
        return {}
    import logging

    cfg = model.config
    plain, fused = workdir / "model.onnx", workdir / "model.eager.onnx"
    opt, int8, int8_opt = workdir / "model.opt.onnx", workdir / "model.int8.onnx", workdir / "model.opt.int8.onnx"
    names = ["input_ids", "attention_mask", "token_type_ids"]
    dummy = synthetic_inputs(cfg.vocab_size, 32)
    eager = copy.deepcopy(model).eval()
    try:
        eager.set_attn_implementation("eager")  # ORT's fusion patterns match the eager attention graph
    except Exception:
        pass
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing", optimizer chatter
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for m, path in ((model, plain), (eager, fused)):
                torch.onnx.export(m, tuple(dummy[k] for k in names), str(path), input_names=names,
                                  output_names=["start_logits", "end_logits"], opset_version=17, dynamo=False,
                                  dynamic_axes={k: {0: "batch", 1: "seq"} for k in names + ["start_logits",
                                                                                             "end_logits"]})
            om = optimizer.optimize_model(str(fused), model_type="bert", num_heads=cfg.num_attention_heads,
                                          hidden_size=cfg.hidden_size)
            fusedops = {k: v for k, v in om.get_fused_operator_statistics().items() if v}
            om.save_model_to_file(str(opt))
            quantize_dynamic(str(plain), str(int8), weight_type=QuantType.QInt8)
            quantize_dynamic(str(opt), str(int8_opt), weight_type=QuantType.QInt8, per_channel=True,
                             extra_options={"DefaultTensorType": 1})  # fused ops defeat shape inference: FLOAT
    finally:
        logging.getLogger().setLevel(level)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sessions = {}
    for name, path in (("ort-fp32", opt), ("ort-int8", int8), ("ort-int8-opt", int8_opt)):
        sessions[name] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    notes.append(f"ONNX Runtime {ort.__version__}: ORT_ENABLE_ALL, {threads} intra-op threads, spinning on (its "
                 f"default) with a {ORT_SETTLE_S * 1e3:.0f} ms pause after each call outside the clock; ort-int8-opt "
                 f"= transformer optimizer ({', '.join(f'{k} {v}' for k, v in fusedops.items())}) + per-channel "
                 f"quantize_dynamic")
    return sessions


def _torchao_model(model: torch.nn.Module, notes: list[str]):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchao
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError:
        notes.append(f"torchao row skipped: torchao is not installed here; {PEER_HINT}")
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
        "from quant import ModelSet, QuantConfig\n"
        "t1 = time.perf_counter()\n"
        f"c = ModelSet({model_id!r}, threads={threads!r}, quant=QuantConfig(**{quant.__dict__!r}), "
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


def _logits(out) -> torch.Tensor | None:
    """(start, end) logits of any variant's output, as one float tensor."""
    if out is None:
        return None
    if isinstance(out, (list, tuple)):  # ONNX Runtime: [start, end] numpy arrays
        return torch.cat([torch.as_tensor(out[0]), torch.as_tensor(out[1])], -1).float()
    return torch.cat([out.start_logits, out.end_logits], -1).float().cpu()


def run_bench(model_id: str, seq_lens=(64, 160, 384), runs: int = 20, warmup: int = 3, threads: int | None = None,
              quant: QuantConfig | None = None, variants=None, peers: bool = True, static: bool = True,
              startup: bool = False, progress: bool = False, log: Callable[[str], None] | None = None,
              static_cache=None) -> BenchReport:
    """Every wanted variant (and peer) timed interleaved at each sequence length; logits SQNR vs FP32."""
    from .compare import STATIC_VARIANT

    quant = quant or QuantConfig()
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    want = _wanted(variants, static, STATIC_VARIANT)
    notes: list[str] = []
    startup_s = measure_startup(model_id, threads, quant) if startup else None
    base_variants = tuple(v for v in ("fp32-cpu", "int8-cpu", "bf16-cpu", "fp32-cuda", "fp16-cuda", STATIC_VARIANT)
                          if v in want or v in ("fp32-cpu", "int8-cpu"))
    comp = ModelSet(model_id, threads=threads, quant=quant, variants=base_variants, log=log, static_cache=static_cache)
    if comp.model("fp32-cpu") is None:
        raise ValueError(f"the benchmark needs the FP32 model: {comp.fp32_reason}")
    models: dict[str, tuple[Any, str]] = {}
    for name, why in comp.availability().items():
        if why is None:
            models[name] = (comp.model(name), "cuda:0" if name.endswith("cuda") else "cpu")
        elif name in want:
            notes.append(f"{name} skipped: {why}")
    sizes = dict(comp.sizes_mib)
    _more_int8(comp, quant, want, models, sizes, notes)
    with tempfile.TemporaryDirectory(prefix="quantqa-bench-") as tmp:
        ort_sessions = _peers(comp, want, models, notes, Path(tmp)) if peers else {}
        wanted = [v for v in list(CPU_VARIANTS + GPU_VARIANTS + PEERS)
                  if (v in models or v in ort_sessions) and v in want]
        rows = _time_lengths(comp, seq_lens, wanted, models, ort_sessions, runs, warmup, progress, notes)
    machine = env.machine_info()
    machine["engine_choice"] = comp.engine_choice.describe()
    if comp.static_info():
        notes.append(f"int8-static-cpu: {comp.static_info()}")
    return BenchReport(comp.model_id, runs, warmup, rows, machine, notes, sizes, startup_s)


def _wanted(variants, static: bool, static_variant: str) -> set[str]:
    order = list(CPU_VARIANTS + GPU_VARIANTS + PEERS)
    if variants:
        unknown = [v for v in variants if v not in order]
        if unknown:
            raise ValueError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(order)} "
                             "(python -m quant bench --list-variants)")
    want = set(variants or order)
    if not static:
        want.discard(static_variant)
    return want


def _more_int8(comp, quant: QuantConfig, want: set, models: dict, sizes: dict, notes: list[str]) -> None:
    """The INT8 rows beyond the app's card: 8-bit embeddings, the other weight granularity, eager INT8, traced FP32."""
    from .size import state_dict_mib

    fp32, probes = comp.model("fp32-cpu"), comp.probes()

    def maybe_trace(m, name):
        if not quant.torchscript:
            return m
        m, failed = trace_or_eager(m, probes)
        if failed:
            notes.append(f"{name}: TorchScript failed, eager ({failed})")
        return m

    if "int8-emb-cpu" in want:
        if not quant.embeddings:
            emb = quantize(fp32, replace(quant, embeddings=True, engine=comp.engine), comp.splits)
            sizes["int8_emb"] = state_dict_mib(emb)
            models["int8-emb-cpu"] = (maybe_trace(emb, "int8-emb-cpu"), "cpu")
        else:
            models["int8-emb-cpu"] = models["int8-cpu"]
    for name, pc in (("int8-pc-cpu", True), ("int8-pt-cpu", False)):  # both weight recipes, one is int8-cpu itself
        if name not in want:
            continue
        if quant.per_channel == pc:
            models[name] = models["int8-cpu"]
            continue
        other = quantize(fp32, replace(quant, per_channel=pc, engine=comp.engine, split=None))  # not the card: unsplit
        sizes["int8_pc" if pc else "int8_pt"] = state_dict_mib(other)
        models[name] = (maybe_trace(other, name), "cpu")
    if "int8-nosplit-cpu" in want:
        if quant.split is None:
            models["int8-nosplit-cpu"] = models["int8-cpu"]
        else:
            plain = quantize(fp32, replace(quant, split=None, engine=comp.engine))
            sizes["int8_nosplit"] = state_dict_mib(plain)
            models["int8-nosplit-cpu"] = (maybe_trace(plain, "int8-nosplit-cpu"), "cpu")
    if quant.torchscript:
        if "int8-eager-cpu" in want:
            models["int8-eager-cpu"] = (comp.int8_eager, "cpu")
        if "fp32-jit-cpu" in want:
            models["fp32-jit-cpu"] = (maybe_trace(fp32, "fp32-jit-cpu"), "cpu")


def _peers(comp, want: set, models: dict, notes: list[str], tmp: Path) -> dict:
    """ONNX Runtime sessions (returned) and the torchao row (into `models`), each skipped with a note on failure."""
    fp32 = comp.model("fp32-cpu")
    sessions = {}
    if want & {"ort-fp32", "ort-int8", "ort-int8-opt"}:
        try:
            sessions = _ort_sessions(fp32, comp.threads, tmp, notes)
        except Exception as exc:  # an exporter or ORT failure must not sink the whole bench
            notes.append(f"ONNX Runtime rows skipped: {type(exc).__name__}: {first_line(exc, 200)}")
    if "torchao-int8" in want:
        try:
            ao = _torchao_model(fp32, notes)
            if ao is not None:
                models["torchao-int8"] = (ao, "cpu")
        except Exception as exc:
            notes.append(f"torchao row skipped: {type(exc).__name__}: {first_line(exc, 200)}")
    return sessions


def _time_lengths(comp, seq_lens, wanted, models, ort_sessions, runs, warmup, progress, notes) -> list[Row]:
    """At each sequence length, every wanted variant timed interleaved on the same synthetic input."""
    fp32, tok = comp.model("fp32-cpu"), comp.tokenizer
    settle = {v: ORT_SETTLE_S for v in wanted if v in ort_sessions}
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

            res = measure_interleaved(fns, runs=runs, warmup=warmup, on_step=step, settle_s=settle, seed=s)
            rows += _rows_at(s, wanted, res, notes)
    finally:
        if bar:
            bar.close()
    return rows


def _rows_at(s: int, wanted, res: dict, notes: list[str]) -> list[Row]:
    from .metrics import sqnr_db

    base = res.get("fp32-cpu", (None,))[0]
    ref = _logits(res["fp32-cpu"][1]) if "fp32-cpu" in res else None
    rows = []
    for v in wanted:
        stats, out, err = res[v]
        if err is not None:
            notes.append(f"{v} at {s} tokens failed: {type(err).__name__}: {first_line(err, 200)}")
            continue
        got = _logits(out)
        db = sqnr_db(ref, got) if ref is not None and got is not None and v != "fp32-cpu" else None
        rows.append(Row(v, s, stats.median, stats.p90, base.median / stats.median if base else None,
                        None if db is None or db == float("inf") else db))
    return rows
