"""Command line: python -m quant {compare,quantize,inspect,tune,bench,eval} [--help].

Exit status: 0 ok; 2 for anything the user can fix (model cannot be loaded,
bad input or option, malformed data file) with one line on stderr saying what
and how. Options are validated before any model is loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .inputs import DEFAULT_RUNS, MAX_RUNS, MAX_WARMUP, MIN_RUNS, InputError
from .models import DEFAULT_MODEL, ModelLoadError, cpu_count

EXIT_USER = 2
ENGINES = ("x86", "fbgemm", "onednn", "qnnpack")  # quantize.ENGINES, without importing torch for --help
MAX_BENCH_RUNS, MAX_BENCH_WARMUP = 1000, 100


def _int_in(lo: int, hi: int | None, what: str):
    """argparse type: a whole number in [lo, hi], with a message that says the range."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a whole number, not {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            rng = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"
            raise argparse.ArgumentTypeError(f"{what} must be {rng}; got {v}")
        return v
    return parse


def _threads(text: str) -> int:
    return _int_in(1, cpu_count(), f"--threads (1 to the {cpu_count()} cores this process may use)")(text)


def _percent(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a percentage, not {text!r}") from None
    if not 0 < v <= 100:
        raise argparse.ArgumentTypeError(f"must be a percentage in (0, 100]; got {v:g}")
    return v


def _common(p: argparse.ArgumentParser, static: bool = False) -> None:
    p.add_argument("--model", default=os.environ.get("QUANTQA_MODEL", DEFAULT_MODEL),
                   help="Hugging Face hub id, a folder saved with save_pretrained, or an INT8 artifact folder "
                        f"written by `quantize --out` (env QUANTQA_MODEL; default: {DEFAULT_MODEL})")
    p.add_argument("--threads", type=_threads, default=None, help="torch threads (default: all cores)")
    p.add_argument("--engine", default="auto", choices=("auto",) + ENGINES,
                   help="quantized engine for INT8 (default: auto = fastest measured on this machine)")
    p.add_argument("--embeddings", action="store_true",
                   help="also quantize nn.Embedding (8-bit weight-only): ~25%% of FP32 size instead of ~41%%")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--per-channel", dest="per_channel", action="store_true", default=True,
                   help="INT8 weights with one scale per output channel (the default: it keeps more answers on real "
                        "text at no cost; README, Accuracy)")
    w.add_argument("--per-tensor", dest="per_channel", action="store_false",
                   help="one weight scale per tensor: the seed's recipe (torch's default_dynamic_qconfig)")
    p.add_argument("--no-split", dest="split_outliers", action="store_false",
                   help="dynamic INT8 without outlier channel splitting (the default splits the channels whose range "
                        "is over 2x the median's: more answers kept, ~1.1x the latency; bench/README.md)")
    p.add_argument("--keep-fp32", default="", metavar="NAME[,NAME...]",
                   help="leave these nn.Linear layers in FP32 (module paths such as "
                        "bert.encoder.layer.3.output.dense, or globs such as '*.output.dense')")
    p.add_argument("--no-torchscript", dest="torchscript", action="store_false",
                   help="run the INT8 model eagerly instead of traced + frozen with TorchScript")
    if static:
        p.add_argument("--static", action="store_true",
                       help="also run int8-static-cpu: static INT8 (PT2E + Inductor), compiled once and cached "
                            "(the first build takes minutes on bert-base; on by itself for a static artifact folder)")
        p.add_argument("--trust-package", action="store_true",
                       help="a static artifact folder: run the compiled package it brought when it was built for "
                            "this CPU and torch (default: rebuilt here from its FP32 weights)")


def _context_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--context", help="the passage")
    src.add_argument("--context-file", type=Path, help="read the passage from this UTF-8 text file")
    p.add_argument("--question", required=True)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m quant",
                                 description="QuantQA: FP32 vs INT8 BERT question answering.")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="{compare,quantize,inspect,tune,bench,eval}")

    c = sub.add_parser("compare", help="answer one question with every variant, with latencies and sizes",
                       description="Answer one question about a passage with FP32-CPU, INT8-CPU and FP32-CUDA.")
    _common(c, static=True)
    _context_args(c)
    c.add_argument("--runs", type=_int_in(MIN_RUNS, MAX_RUNS, "--runs"), default=DEFAULT_RUNS,
                   help=f"timed runs per variant, {MIN_RUNS}-{MAX_RUNS} (default {DEFAULT_RUNS})")
    c.add_argument("--warmup", type=_int_in(0, MAX_WARMUP, "--warmup"), default=1,
                   help=f"untimed warm-up runs per variant, 0-{MAX_WARMUP} (default 1)")
    c.add_argument("--extra", action="store_true", help="also run bf16-cpu and fp16-cuda")
    c.add_argument("--json", action="store_true",
                   help='print one JSON object: {"model", "results": [{"variant", "available", "reason"?, '
                        '"answer", "start", "end", "score", "latency_ms"}], "sizes_mib", ...} (README, Command line)')

    q = sub.add_parser("quantize", help="write an INT8 artifact folder (usable as --model) and print both sizes",
                       description="Quantize a model and save config + tokenizer + INT8 state dict to --out; "
                                   "the folder can then be passed as --model to every command and to app.py.")
    _common(q)
    q.add_argument("--out", type=Path, required=True, help="output folder")
    q.add_argument("--json", action="store_true")

    i = sub.add_parser("inspect", help="where INT8 loses precision on one question: per layer, by depth, logits",
                       description="Layer report for one (passage, question): local SQNR of every INT8 Linear, "
                                   "weight SQNR, input range and outliers, propagated SQNR by encoder layer, "
                                   "logits SQNR, per-token probabilities and how close INT8 came to another answer.")
    _common(i)
    _context_args(i)
    i.add_argument("--top", type=_int_in(1, 1000, "--top"), default=8, help="layers listed in the table (default 8)")
    i.add_argument("--json", action="store_true")

    t = sub.add_parser("tune", help="keep the most sensitive layers in FP32 until INT8 agrees with FP32",
                       description="Rank the Linear layers by sensitivity, then keep the most sensitive in FP32 "
                                   "one at a time until FP32-INT8 agreement reaches --target-agreement.")
    _common(t)
    t.add_argument("--data", type=Path, default=None,
                   help="SQuAD-format JSON file (v1.1 or v2.0); default: the built-in real-text set (assets/realqa.json)")
    t.add_argument("--limit", type=_int_in(1, None, "--limit"), default=None, help="only the first N questions")
    _split_arg(t)
    t.add_argument("--target-agreement", type=_percent, required=True, metavar="P",
                   help="stop once INT8 gives the FP32 answer on P%% of the questions")
    t.add_argument("--rank-by", choices=("logits", "local"), default="logits",
                   help="sensitivity: logits noise with only that layer INT8 (default), or mean local SQNR")
    t.add_argument("--max-keep", type=_int_in(0, None, "--max-keep"), default=None, metavar="N",
                   help="keep at most N layers in FP32 (a size budget); default: as many as the target needs")
    t.add_argument("--recipes", nargs="?", const="default", default=None, metavar="LIST",
                   help="also compare INT8 recipes side by side, each alone and with its K most sensitive layers in "
                        "FP32, and choose the fastest that meets the target. LIST: default (dynamic-per-tensor, "
                        "dynamic-per-channel, static, dynamic-per-token; the same as no LIST), all (those and "
                        "static-realtext, static-smooth, static-mixed, static-split, static-gptq), or a comma-separated subset")
    t.add_argument("--out", type=Path, default=None,
                   help="write the final model as an INT8 artifact folder (with --recipes: the chosen recipe)")
    t.add_argument("--json", action="store_true")

    b = sub.add_parser("bench", help="interleaved latency benchmark table over sequence lengths",
                       description="Time every variant (and peers, where installed: `make bench`) interleaved "
                                   "in one process.")
    _common(b)
    b.add_argument("--seq-lens", default="64,160,384", help="comma-separated token counts, 8-512 (default 64,160,384)")
    b.add_argument("--runs", type=_int_in(1, MAX_BENCH_RUNS, "--runs"), default=20,
                   help=f"timed runs per variant and length, 1-{MAX_BENCH_RUNS} (default 20)")
    b.add_argument("--warmup", type=_int_in(0, MAX_BENCH_WARMUP, "--warmup"), default=3,
                   help=f"warm-up runs per variant and length, 0-{MAX_BENCH_WARMUP} (default 3)")
    b.add_argument("--variants", default=None,
                   help="comma-separated subset (default: all that apply here; see --list-variants)")
    b.add_argument("--list-variants", action="store_true", help="list the variants and peers, then exit")
    b.add_argument("--no-peers", action="store_true", help="skip ONNX Runtime and torchao")
    b.add_argument("--no-static", action="store_true", help="skip int8-static-cpu (its first build takes minutes)")
    b.add_argument("--startup", action="store_true", help="also time app start-up (load + quantize + sizes)")
    b.add_argument("--json", action="store_true")
    b.add_argument("--save", type=Path, default=None, help="also write the JSON report to this file")

    e = sub.add_parser("eval", help="exact match / F1 per variant on a SQuAD v1.1 or v2.0 JSON file",
                       description="Exact match and F1 (official SQuAD normalization) for every variant.")
    _common(e, static=True)
    e.add_argument("--data", type=Path, default=None,
                   help="SQuAD-format JSON file (v1.1 or v2.0); default: the built-in real-text set (assets/realqa.json: "
                        "240 hand-written questions over 24 real passages, 72 unanswerable)")
    e.add_argument("--limit", type=_int_in(1, None, "--limit"), default=None, help="only the first N questions")
    _split_arg(e)
    e.add_argument("--json", action="store_true")
    return ap


def _split_arg(p) -> None:
    from .realqa import SPLITS

    p.add_argument("--split", choices=SPLITS, default=None,
                   help="only one half of the built-in set, by passage: calibration (static INT8 may be calibrated "
                        "and recipes tuned on it) or held-out (never calibrated or tuned on); not with --data")


def _quant_config(args):
    from .quantize import QuantConfig

    return QuantConfig(embeddings=args.embeddings, engine=args.engine, torchscript=args.torchscript,
                       per_channel=args.per_channel, keep_fp32=args.keep_fp32,
                       split=QuantConfig.split if args.split_outliers else None)


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return EXIT_USER


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _read_context(args) -> str:
    if args.context_file is None:
        return args.context
    try:
        return args.context_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read --context-file {args.context_file}: {exc}") from None


def _static_folder(model: str) -> bool:
    """An artifact folder whose recipe is static INT8 (its card is the static one)."""
    from .models import is_artifact

    if not is_artifact(model):
        return False
    try:
        from .static import is_static

        return is_static(json.loads((Path(model) / "quantqa.json").read_text())["recipe"]["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def cmd_compare(args) -> int:
    from .compare import DEFAULT_VARIANTS, EXTRA_VARIANTS, STATIC_VARIANT, compare
    from .variants import ModelSet
    from .inputs import check_inputs
    from .report import comparison_table

    context = _read_context(args)
    check_inputs(context, args.question, args.runs)  # fail fast, before loading a model
    static = args.static or _static_folder(args.model)
    variants = DEFAULT_VARIANTS + (EXTRA_VARIANTS if args.extra else ()) + ((STATIC_VARIANT,) if static else ())
    comp = ModelSet(args.model, threads=args.threads, quant=_quant_config(args), variants=variants, log=_log,
                    trust_package=args.trust_package)
    result = compare(comp, context, args.question, runs=args.runs, warmup=args.warmup)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        print(comparison_table(result))
    return 0


def cmd_quantize(args) -> int:
    import torch

    from .models import load_model, set_threads
    from .artifact import save_artifact
    from .quantize import choose_engine, count_quantized, linear_names, quantize
    from .size import state_dict_mib

    set_threads(args.threads)
    loaded = load_model(args.model)
    qc = _quant_config(args)
    cfg = loaded.model.config
    choice = choose_engine(qc.engine, cfg.hidden_size, getattr(cfg, "intermediate_size", 4 * cfg.hidden_size))
    from .static import dynamic_splits

    qmodel = quantize(loaded.model, qc, dynamic_splits(loaded.model, loaded.tokenizer, loaded.max_length, qc))
    out = save_artifact(qmodel, loaded.tokenizer, args.out, qc, choice.engine, loaded.model_id)
    fp32, int8 = state_dict_mib(loaded.model), state_dict_mib(qmodel)
    layers = count_quantized(qmodel)
    kept = linear_names(qmodel)  # the exact names --keep-fp32 matched
    info = {"model": loaded.model_id, "out": str(out), "sizes_mib": {"fp32": round(fp32, 2), "int8": round(int8, 2)},
            "ratio": round(int8 / fp32, 4), "engine": choice.engine, "layers": layers,
            "embeddings": qc.embeddings, "per_channel": qc.per_channel, "keep_fp32": kept, "split": qc.split,
            "torch": torch.__version__}
    if args.json:
        print(json.dumps(info))
    else:
        kept_note = f"; {len(kept)} kept in FP32" if kept else ""
        print(f"FP32: {fp32:8.2f} MiB\nINT8: {int8:8.2f} MiB  ({100 * int8 / fp32:.1f}% of FP32; "
              f"{layers['linear_int8']} Linear layers quantized{kept_note}"
              f"{', embeddings too' if qc.embeddings else ''}; engine {choice.engine})\n"
              f"wrote {out}  (serve it: python app.py --model {out})")
    return 0


def cmd_inspect(args) -> int:
    from .variants import ModelSet
    from .inputs import check_inputs
    from .inspect import Inspector

    context = _read_context(args)
    context, question, _ = check_inputs(context, args.question, 1)
    comp = ModelSet(args.model, threads=args.threads, quant=_quant_config(args), variants=("fp32-cpu", "int8-cpu"),
                      log=_log)
    if comp.fp32_eager is None:
        raise InputError(f"inspect needs the FP32 model: {comp.fp32_reason}")
    ins = Inspector(comp.fp32_eager, comp.int8_eager, comp.tokenizer, model_id=comp.model_id,
                    max_length=comp.max_length, keep_fp32=comp.quant.keep_fp32)
    report = ins.inspect(context, question, enc=comp.encode_checked(context, question))
    print(json.dumps(report.to_dict(), ensure_ascii=False) if args.json else report.table(args.top))
    return 0


def _examples(args):
    """The --data file's questions (first --limit); a malformed file is an InputError with the reason."""
    from .evaluate import BUILTIN, SquadFormatError, load_squad

    if getattr(args, "split", None):
        from .evaluate import builtin_split

        if args.data:
            raise InputError("--split picks a half of the built-in set; it does not apply to --data")
        return builtin_split(args.split, limit=args.limit)
    try:
        return load_squad(args.data or BUILTIN, limit=args.limit)
    except SquadFormatError as exc:
        raise InputError(str(exc)) from None


def _set_name(args) -> str:
    from .evaluate import BUILTIN

    if getattr(args, "split", None) and not args.data:
        return f"the built-in real-text set's {args.split} half" + (f", first {args.limit}" if args.limit else "")
    if not args.data or Path(args.data).resolve() == BUILTIN:
        return "the built-in real-text set (assets/realqa.json)" + (f", first {args.limit}" if args.limit else "")
    return Path(args.data).name + (f", first {args.limit}" if args.limit else "")


def cmd_tune(args) -> int:
    from .recipes import DEFAULT_RECIPES, RECIPES, run_tune

    recipes = None
    if args.recipes:
        named = {"all": RECIPES, "default": DEFAULT_RECIPES}
        recipes = named.get(args.recipes) or tuple(r.strip() for r in args.recipes.split(",") if r.strip())
        bad = [r for r in recipes if r not in RECIPES]
        if bad:
            return _fail(f"--recipes: unknown recipe(s) {', '.join(bad)}; choose from {', '.join(RECIPES)}")
    report, rec = run_tune(args.model, _examples(args), args.target_agreement, rank_by=args.rank_by,
                           max_keep=args.max_keep, threads=args.threads, quant=_quant_config(args), out=args.out,
                           recipes=recipes, set_name=_set_name(args))
    if args.json:
        print(json.dumps({**report.to_dict(), **(rec.to_dict() if rec else {})}))
    else:
        print(report.table() + ("\n\n" + rec.table() if rec else ""))
    return 0


def cmd_bench(args) -> int:
    from .bench import describe_variants, run_bench

    if args.list_variants:
        print(describe_variants())
        return 0
    try:
        seq_lens = [int(s) for s in args.seq_lens.split(",") if s.strip()]
    except ValueError:
        return _fail(f"--seq-lens must be comma-separated whole numbers, got {args.seq_lens!r}")
    if not seq_lens or any(s < 8 or s > 512 for s in seq_lens):
        return _fail("--seq-lens values must be from 8 to 512")
    variants = [v.strip() for v in args.variants.split(",")] if args.variants else None
    report = run_bench(args.model, seq_lens=seq_lens, runs=args.runs, warmup=args.warmup, threads=args.threads,
                       quant=_quant_config(args), variants=variants, peers=not args.no_peers,
                       static=not args.no_static, startup=args.startup, progress=True)
    if args.save:
        args.save.write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(report.table())
    return 0


def cmd_eval(args) -> int:
    from .evaluate import run_eval

    report = run_eval(args.model, _examples(args), threads=args.threads, quant=_quant_config(args),
                      static=args.static or _static_folder(args.model), progress=True)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print(report.table())
    return 0


COMMANDS = {"compare": cmd_compare, "quantize": cmd_quantize, "inspect": cmd_inspect, "tune": cmd_tune,
            "bench": cmd_bench, "eval": cmd_eval}


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from .threads import apply_policy

    apply_policy(os.environ.get("QUANTQA_THREAD_POLICY", "auto"))  # before torch loads, as app.py does
    try:
        return COMMANDS[args.cmd](args)
    except (ModelLoadError, InputError, ValueError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
