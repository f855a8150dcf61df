"""Command line: python -m quant {compare,quantize,bench,eval} [--help].

Exit status: 0 ok; 2 for anything the user can fix (model cannot be loaded,
bad input, malformed data file) with one line on stderr saying what and how.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .inputs import DEFAULT_RUNS, MAX_RUNS, MIN_RUNS, InputError
from .models import DEFAULT_MODEL, ModelLoadError
from .quantize import ENGINES, QuantConfig

EXIT_USER = 2


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"Hugging Face hub id or a local folder saved with save_pretrained (default: {DEFAULT_MODEL})")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--engine", default="auto", choices=("auto",) + ENGINES,
                   help="quantized engine for INT8 (default: auto = fastest measured on this machine)")
    p.add_argument("--embeddings", action="store_true",
                   help="also quantize nn.Embedding (8-bit weight-only): ~25%% of FP32 size instead of ~41%%")
    p.add_argument("--no-torchscript", dest="torchscript", action="store_false",
                   help="run the INT8 model eagerly instead of traced + frozen with TorchScript")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m quant", description="QuantQA: FP32 vs dynamic INT8 BERT question answering.")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="{compare,quantize,bench,eval}")

    c = sub.add_parser("compare", help="answer one question with every variant, with latencies and sizes",
                       description="Answer one question about a passage with FP32-CPU, INT8-CPU and FP32-CUDA.")
    _common(c)
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--context", help="the passage")
    src.add_argument("--context-file", type=Path, help="read the passage from this UTF-8 text file")
    c.add_argument("--question", required=True)
    c.add_argument("--runs", type=int, default=DEFAULT_RUNS, help=f"timed runs per variant, {MIN_RUNS}-{MAX_RUNS} (default {DEFAULT_RUNS})")
    c.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs per variant (default 1)")
    c.add_argument("--extra", action="store_true", help="also run bf16-cpu and fp16-cuda")
    c.add_argument("--json", action="store_true", help="print one JSON object (see DESIGN.md)")

    q = sub.add_parser("quantize", help="write an INT8 artifact folder and print both sizes",
                       description="Quantize a model and save config + tokenizer + INT8 state dict to --out.")
    _common(q)
    q.add_argument("--out", type=Path, required=True, help="output folder")
    q.add_argument("--json", action="store_true")

    b = sub.add_parser("bench", help="interleaved latency benchmark table over sequence lengths",
                       description="Time every variant (and peers, where installed) interleaved in one process.")
    _common(b)
    b.add_argument("--seq-lens", default="64,160,384", help="comma-separated token counts (default 64,160,384)")
    b.add_argument("--runs", type=int, default=20, help="timed runs per variant and length (default 20)")
    b.add_argument("--warmup", type=int, default=3, help="warm-up runs per variant and length (default 3)")
    b.add_argument("--variants", default=None,
                   help="comma-separated subset (default: all that apply here; see --list-variants)")
    b.add_argument("--no-peers", action="store_true", help="skip ONNX Runtime and torchao")
    b.add_argument("--startup", action="store_true", help="also time app start-up (load + quantize + sizes)")
    b.add_argument("--json", action="store_true")
    b.add_argument("--save", type=Path, default=None, help="also write the JSON report to this file")

    e = sub.add_parser("eval", help="exact match / F1 per variant on a SQuAD v1.1 or v2.0 JSON file",
                       description="Exact match and F1 (official SQuAD normalization) for every variant.")
    _common(e)
    e.add_argument("--data", type=Path, required=True, help="SQuAD-format JSON file (v1.1 or v2.0)")
    e.add_argument("--limit", type=int, default=None, help="only the first N questions")
    e.add_argument("--json", action="store_true")
    return ap


def _quant_config(args) -> QuantConfig:
    return QuantConfig(embeddings=args.embeddings, engine=args.engine, torchscript=args.torchscript)


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return EXIT_USER


def cmd_compare(args) -> int:
    from .compare import DEFAULT_VARIANTS, EXTRA_VARIANTS, Comparator
    from .report import comparison_table

    if args.context_file is not None:
        try:
            context = args.context_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return _fail(f"cannot read --context-file {args.context_file}: {exc}")
    else:
        context = args.context
    from .inputs import check_inputs

    check_inputs(context, args.question, args.runs)  # fail fast, before loading a model
    variants = DEFAULT_VARIANTS + (EXTRA_VARIANTS if args.extra else ())
    log = (lambda m: print(m, file=sys.stderr, flush=True))
    comp = Comparator(args.model, threads=args.threads, quant=_quant_config(args), variants=variants, log=log)
    result = comp.compare(context, args.question, runs=args.runs, warmup=args.warmup)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        print(comparison_table(result))
    return 0


def cmd_quantize(args) -> int:
    import torch

    from .models import load_model, set_threads
    from .quantize import choose_engine, count_quantized, quantize, save_artifact
    from .size import state_dict_mib

    set_threads(args.threads)
    loaded = load_model(args.model)
    qc = _quant_config(args)
    cfg = loaded.model.config
    choice = choose_engine(qc.engine, cfg.hidden_size, getattr(cfg, "intermediate_size", 4 * cfg.hidden_size))
    qmodel = quantize(loaded.model, qc)
    out = save_artifact(qmodel, loaded.tokenizer, args.out, qc, choice.engine, loaded.model_id)
    fp32, int8 = state_dict_mib(loaded.model), state_dict_mib(qmodel)
    info = {"model": loaded.model_id, "out": str(out), "sizes_mib": {"fp32": round(fp32, 2), "int8": round(int8, 2)},
            "ratio": round(int8 / fp32, 4), "engine": choice.engine, "layers": count_quantized(qmodel),
            "embeddings": qc.embeddings, "torch": torch.__version__}
    if args.json:
        print(json.dumps(info))
    else:
        print(f"FP32: {fp32:8.2f} MiB\nINT8: {int8:8.2f} MiB  ({100 * int8 / fp32:.1f}% of FP32; "
              f"{info['layers']['linear_int8']} Linear layers quantized"
              f"{', embeddings too' if qc.embeddings else ''}; engine {choice.engine})\nwrote {out}")
    return 0


def cmd_bench(args) -> int:
    from .bench import run_bench

    try:
        seq_lens = [int(s) for s in args.seq_lens.split(",") if s.strip()]
    except ValueError:
        return _fail(f"--seq-lens must be comma-separated whole numbers, got {args.seq_lens!r}")
    if not seq_lens or any(s < 8 or s > 512 for s in seq_lens):
        return _fail("--seq-lens values must be from 8 to 512")
    if args.runs < 1 or args.warmup < 0:
        return _fail("--runs must be >= 1 and --warmup >= 0")
    variants = [v.strip() for v in args.variants.split(",")] if args.variants else None
    report = run_bench(args.model, seq_lens=seq_lens, runs=args.runs, warmup=args.warmup, threads=args.threads,
                       quant=_quant_config(args), variants=variants, peers=not args.no_peers,
                       startup=args.startup, progress=True)
    if args.save:
        args.save.write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(report.table())
    return 0


def cmd_eval(args) -> int:
    from .evaluate import SquadFormatError, load_squad, run_eval

    if args.limit is not None and args.limit < 1:
        return _fail("--limit must be >= 1")
    try:
        examples = load_squad(args.data, limit=args.limit)
    except SquadFormatError as exc:
        return _fail(str(exc))
    report = run_eval(args.model, examples, threads=args.threads, quant=_quant_config(args), progress=True)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print(report.table())
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"compare": cmd_compare, "quantize": cmd_quantize, "bench": cmd_bench, "eval": cmd_eval}[args.cmd](args)
    except (ModelLoadError, InputError, ValueError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
