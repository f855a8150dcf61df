"""One INT8 model as a folder, for every recipe the app can choose: what serves it as measured, and its model card.

    DIR/quantqa.json        the manifest: format, recipe (name, layers kept in FP32), versions, the CPU it was
                            built and measured on, what was measured (agreement with FP32, EM / F1, latency, sizes)
    DIR/README.md           the model card (Hugging Face front matter) with a snippet that runs the model with
                            torch + transformers (+ torchao) alone
    DIR/config.json, tokenizer files
    DIR/int8_state_dict.pt  dynamic recipes: the INT8 weights (torch.ao packed per-tensor / per-channel, or
                            torchao's per-token Int8Tensor); loads with torch.load(weights_only=True)
    DIR/model.safetensors   static: the FP32 weights it is built from (and the FP32 card's model)
    DIR/calibration.json    static: the (question, passage) pairs its activation scales were calibrated on (its
                            other options, SmoothQuant or layers with dynamic activations: the manifest's
                            `static.options`; every static-* recipe is written this way)
    DIR/static/package.pt2  static: the AOTInductor package, compiled for the CPU and torch the manifest names
    DIR/static/probes.pt    static: inputs and the logits the package gave on them (the parity check)

Static INT8 is compiled code for one CPU and one torch. Loading a folder never runs code it brought unless asked
(`trust_package=True`, `--trust-package`): by default the package is rebuilt here from the FP32 weights, the
calibration pairs and the recipe (export, calibrate, compile: about a minute on bert-base, then cached), and the
rebuild is checked against the logits the folder's package gave. The folder's own package is used only when
trusted *and* built for this machine: its cache key (CPU instruction sets, torch and torchao versions, weights,
recipe) equals the one this machine computes.
"""

from __future__ import annotations

import datetime
import json
import shutil
import warnings
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from .models import is_artifact  # noqa: F401 (re-exported)
from .quantize import ARTIFACT_WEIGHTS as WEIGHTS
from .static import STATIC_RECIPES, StaticOptions, is_static
from .smooth import SPLIT_RATIO, apply_splits, plans_in

FORMAT = "quantqa-int8/2"
MANIFEST = "quantqa.json"
CARD = "README.md"
DEFAULT_RECIPES = ("dynamic-per-tensor", "dynamic-per-channel", "static", "dynamic-per-token")  # tune --recipes
RECIPES = DEFAULT_RECIPES + STATIC_RECIPES[1:]  # and the static variants (issue #24), each a compilation


class ArtifactError(ValueError):
    """A folder that is not a QuantQA artifact, or one this machine cannot serve; the message says which."""


@dataclass
class Loaded:
    """What a folder serves: the tokenizer, the FP32 model (when the folder or its source has one), and its recipe's
    model — the dynamic INT8 model (`int8`), or for static what builds it (`static_kwargs`, for static.build_static)."""

    manifest: dict
    tokenizer: Any
    fp32: Any = None
    int8: Any = None
    static_kwargs: dict = field(default_factory=dict)

    @property
    def recipe(self) -> str:
        return self.manifest["recipe"]["name"]

    @property
    def keep_fp32(self) -> list[str]:
        return list(self.manifest["recipe"].get("keep_fp32", []))


def describe(recipe: str, keep_fp32=()) -> str:
    """The recipe as a card names it."""
    base = {"dynamic-per-tensor": "dynamic INT8, per-tensor weights", "dynamic-per-channel":
            "dynamic INT8, per-channel weights", "static": "static INT8, calibrated activations (PT2E)",
            "dynamic-per-token": "dynamic INT8, per-token activations (torchao)",
            "static-realtext": "static INT8, calibrated on real text (PT2E)",
            "static-smooth": "static INT8 with SmoothQuant, calibrated on real text (PT2E)",
            "static-mixed": "static INT8, FFN outputs with dynamic activations (PT2E)",
            "static-split": "static INT8, outlier channels split, calibrated on real text (PT2E)",
            "static-gptq": "static INT8, outlier channels split, GPTQ-rounded weights, calibrated on real text (PT2E)"}[
        recipe]
    return base + (f", {len(keep_fp32)} Linear in FP32" if keep_fp32 else "")


# ---------------------------------------------------------------------------------------------- writing


def write(out: str | Path, models, recipe: str, keep_fp32=(), *, measured: dict | None = None,
          model=None, log: Callable[[str], None] | None = None) -> Path:
    """Write `models`' FP32 model quantized with `recipe` (these Linear layers kept in FP32) to `out`, with its
    manifest and model card. `model`: the recipe's model already built (eager: dynamic recipes), else built here.
    `measured`: what was measured of it (see `measurement`), for the card."""
    from .quantize import count_quantized

    if recipe not in RECIPES:
        raise ArtifactError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    fp32, tok = models.fp32_eager, models.tokenizer
    if fp32 is None:
        raise ArtifactError(f"there is no FP32 model to quantize: {models.fp32_reason}")
    keep = list(keep_fp32)
    if not is_static(recipe):
        model = model if model is not None else _dynamic(models, recipe, keep)
        return write_dynamic(out, model, tok, recipe, keep, source_model=models.model_id, engine=models.engine,
                             measured=measured)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fp32.config.save_pretrained(out)
    tok.save_pretrained(out)
    extra = _write_static(out, models, recipe, keep, log)
    layers = count_quantized(fp32)  # the FP32 source: every Linear is INT8 in the package but the kept ones
    layers.update(linear_fp32=len(keep), linear_int8=layers["linear_fp32"] - len(keep))
    extra["layers"] = layers
    return _finish(out, _manifest(models.model_id, models.engine, recipe, keep, measured, extra))


def write_dynamic(out: str | Path, model, tokenizer, recipe: str, keep_fp32=(), *, source_model: str,
                  engine: str, measured: dict | None = None, embeddings: bool = False, extra: dict | None = None) -> Path:
    """A dynamic INT8 model (torch.ao per-tensor / per-channel, or torchao per-token) as a folder: config,
    tokenizer, its state dict, the manifest and the card."""
    from .quantize import count_quantized, linear_names

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    state = model.state_dict()
    torch.save(state, out / WEIGHTS)
    keep = list(keep_fp32) if recipe == "dynamic-per-token" else linear_names(model)  # the exact names left FP32
    plans = plans_in(state)
    split = {"inputs": len(plans), "extra_channels": sum(i.numel() for i, _ in plans.values())} if plans else None
    manifest = _manifest(source_model, engine, recipe, keep, measured,
                         {"layers": count_quantized(model), "outlier_split": split, **(extra or {})}, embeddings)
    if plans:
        manifest["quant_config"]["split"] = SPLIT_RATIO
    return _finish(out, manifest)


def _finish(out: Path, manifest: dict) -> Path:
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    (out / CARD).write_text(model_card(manifest), encoding="utf-8")
    return out


def save_artifact(qmodel, tokenizer, out_dir: str | Path, config, engine: str, source_model: str,
                  extra: dict | None = None) -> Path:
    """A torch.ao dynamic INT8 model (made with `config`) as an artifact folder (`quantize --out`)."""
    recipe = "dynamic-per-channel" if config.per_channel else "dynamic-per-tensor"
    return write_dynamic(out_dir, qmodel, tokenizer, recipe, source_model=source_model, engine=engine,
                         embeddings=config.embeddings, extra=extra)


def load_artifact(path: str | Path):
    """A dynamic INT8 folder -> (tokenizer, int8 model, manifest). Weights load with weights_only=True: a pickle
    with code in it is refused."""
    loaded = load(path)
    if loaded.int8 is None:
        raise ArtifactError(f"{path}: its recipe ({loaded.recipe}) has no dynamic INT8 model; serve it with --model")
    return loaded.tokenizer, loaded.int8, loaded.manifest


def _dynamic(models, recipe: str, keep: list[str]):
    from .quantize import QuantConfig, quantize, quantize_per_token

    if recipe == "dynamic-per-token":
        return quantize_per_token(models.fp32_eager, keep)
    card = models.quant if isinstance(models.quant, QuantConfig) else QuantConfig(split=None)
    qc = replace(card.for_recipe(recipe == "dynamic-per-channel", keep), embeddings=False, engine="auto")
    return quantize(models.fp32_eager, qc, getattr(models, "splits", None))


def _write_static(out: Path, models, recipe: str, keep: list[str], log) -> dict:
    """The FP32 weights, calibration pairs and options that rebuild it, and the package as compiled here (from the
    cache)."""
    from .static import _cpu_flags, build_static, recipe_setup

    models.fp32_eager.save_pretrained(out, safe_serialization=True)
    calib, options = recipe_setup(recipe, models.fp32_eager)
    (out / "calibration.json").write_text(json.dumps([{"question": q, "passage": p} for q, p in calib], indent=1))
    m = build_static(models.fp32_eager, models.tokenizer, max_length=models.max_length, keep_fp32=tuple(keep),
                     source_id=models.model_id, log=log, calibration=calib, options=options)
    pkg = Path(m.info["path"])
    (out / "static").mkdir(exist_ok=True)
    shutil.copyfile(pkg, out / "static" / "package.pt2")
    shutil.copyfile(pkg.with_name(pkg.stem + ".probes.pt"), out / "static" / "probes.pt")
    import torchao

    return {"static": {"key": m.info["key"], "cpu": _cpu_flags(), "torch": torch.__version__,
                       "torchao": torchao.__version__, "max_length": models.max_length, "size_mib": m.size_mib,
                       "options": options.as_dict(),
                       "parity_db": [round(d, 2) for d in m.info["parity_db"]]}}


def _manifest(source_model: str, engine: str, recipe: str, keep: list[str], measured: dict | None, extra: dict,
              embeddings: bool = False) -> dict:
    import transformers

    from . import env

    src = Path(source_model).expanduser()
    info = env.machine_info()
    return {
        "format": FORMAT,
        "recipe": {"name": recipe, "keep_fp32": keep, "description": describe(recipe, keep)},
        "chosen": recipe,
        "source_model": str(src.resolve()) if src.exists() else source_model,
        "quant_config": {"embeddings": embeddings, "per_channel": recipe != "dynamic-per-tensor", "engine": "auto",
                         "torchscript": True, "keep_fp32": keep},
        "engine": engine,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu": {"name": info.get("cpu"), "features": info.get("cpu_features")},
        "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "measured": measured,
        **({"static_keep_fp32": keep} if is_static(recipe) else {}),
        **extra,
    }


def measurement(row: dict, fp32: dict, *, set_name: str, n: int, seq_len: int, cpu: str, threads=None) -> dict:
    """What the card reports of a recipe row (recipes.RecipeResult.to_dict) beside FP32's row, on one set."""
    speedup = fp32["median_ms"] / row["median_ms"] if row.get("median_ms") else None
    return {"set": set_name, "questions": n, "agreement": row["agreement"], "exact_match": row["exact_match"],
            "f1": row["f1"], "fp32_exact_match": fp32["exact_match"], "fp32_f1": fp32["f1"],
            "logits_sqnr_db": row.get("sqnr_db"), "median_ms": row["median_ms"], "fp32_median_ms": fp32["median_ms"],
            "speedup": None if speedup is None else round(speedup, 2), "latency_tokens": seq_len,
            "size_mib": row["size_mib"], "fp32_size_mib": fp32["size_mib"], "cpu": cpu, "threads": threads}


# ---------------------------------------------------------------------------------------------- loading


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: no readable {MANIFEST} ({exc})") from None
    if manifest.get("format") == "quantqa-int8/1":  # the first format: dynamic INT8 only (and a note of a static pick)
        qc = manifest.get("quant_config", {})
        name = "dynamic-per-channel" if qc.get("per_channel") else "dynamic-per-tensor"
        manifest["recipe"] = {"name": name, "keep_fp32": qc.get("keep_fp32", []), "description": describe(name)}
        if manifest.get("chosen") == "static":
            manifest["recipe"] = {"name": "static", "keep_fp32": manifest.get("static_keep_fp32", [])}
            manifest["legacy_static"] = True
    elif manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a QuantQA INT8 artifact (format {manifest.get('format')!r})")
    if manifest["recipe"]["name"] not in RECIPES:
        raise ArtifactError(f"{path}: unknown recipe {manifest['recipe']['name']!r}")
    return manifest


def load(path: str | Path, *, trust_package: bool = False, log: Callable[[str], None] | None = None) -> Loaded:
    """The folder's tokenizer, FP32 model (its own weights, else its source model when that loads, else None) and
    its recipe's model. Weights load with weights_only=True; a static package is rebuilt here unless trusted and
    built for this machine (see the module docstring)."""
    from transformers import AutoTokenizer

    path = Path(path)
    manifest = read_manifest(path)
    tok = AutoTokenizer.from_pretrained(path)
    fp32 = _fp32(path, manifest, log)
    loaded = Loaded(manifest, tok, fp32)
    recipe = loaded.recipe
    if is_static(recipe):
        if fp32 is None:
            raise ArtifactError(f"{path}: a static INT8 folder needs its FP32 weights (model.safetensors) to be "
                                "built here")
        loaded.static_kwargs = _static_kwargs(path, manifest, trust_package, log)
        if manifest.get("legacy_static") and (path / WEIGHTS).is_file():
            loaded.int8 = _load_dynamic(path, manifest, "dynamic-per-channel" if manifest["quant_config"].get(
                "per_channel") else "dynamic-per-tensor", manifest["quant_config"].get("keep_fp32", []))
    else:
        loaded.int8 = _load_dynamic(path, manifest, recipe, loaded.keep_fp32)
    return loaded


def _fp32(path: Path, manifest: dict, log):
    from transformers import AutoModelForQuestionAnswering

    from .models import ModelLoadError, load_model

    if (path / "model.safetensors").is_file():
        return AutoModelForQuestionAnswering.from_pretrained(path, dtype=torch.float32).eval()
    src = manifest.get("source_model") or ""
    try:
        model = load_model(src).model
        if log:
            log(f"[quantqa] FP32 from its source model {src}")
        return model
    except ModelLoadError as exc:
        if log:
            log(f"[quantqa] this INT8 folder's FP32 source model could not be loaded: {exc}")
        return None


def _skeleton(path: Path):
    from transformers import AutoConfig, AutoModelForQuestionAnswering

    return AutoModelForQuestionAnswering.from_config(AutoConfig.from_pretrained(path)).eval()


def _load_dynamic(path: Path, manifest: dict, recipe: str, keep: list[str]):
    from .quantize import (QuantConfig, _backend_quantize, available_engines, quantize_per_token, resolve_keep_fp32,
                           use_engine)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage notice from quantized tensors
        state = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)
    skeleton = _skeleton(path)
    if recipe == "dynamic-per-token":
        model = quantize_per_token(skeleton, keep)
        model.load_state_dict(state, strict=True, assign=True)
        return model.eval()
    qc = QuantConfig.from_manifest(manifest.get("quant_config", {}))
    if manifest.get("engine") in available_engines():
        use_engine(manifest["engine"])
    kept = resolve_keep_fp32(skeleton, keep)
    plans = plans_in(state)  # a split model's plans travel in its state dict
    model = _backend_quantize(apply_splits(skeleton, plans, kept) if plans else skeleton, qc.embeddings,
                              recipe == "dynamic-per-channel", kept)
    model.load_state_dict(state, strict=True)
    return model.eval()


def _static_kwargs(path: Path, manifest: dict, trust_package: bool, log) -> dict:
    """What static.build_static needs to serve this folder: its calibration pairs and kept layers, and — when
    trusted and compiled for this machine — its own package (else a rebuild, checked against its probes)."""
    calib_file = path / "calibration.json"
    calib = ([(c["question"], c["passage"]) for c in json.loads(calib_file.read_text())]
             if calib_file.is_file() else None)
    st = manifest.get("static") or {}
    try:
        options = StaticOptions.from_dict(st.get("options"))
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{path}: its static options cannot be read here ({exc})") from None
    kwargs: dict[str, Any] = {"calibration": calib, "keep_fp32": tuple(manifest["recipe"].get("keep_fp32", ())),
                              "options": options}
    probes = path / "static" / "probes.pt"
    if probes.is_file():
        kwargs["expect"] = probes  # the rebuild (or the trusted package) must give these logits
    if trust_package and (path / "static" / "package.pt2").is_file():
        kwargs["package"] = (path / "static" / "package.pt2", st.get("key"), st.get("size_mib", 0.0))
    return kwargs


# ---------------------------------------------------------------------------------------------- sharing


def zip_folder(folder: str | Path, dest: str | Path | None = None) -> Path:
    """`folder` as one .zip (weights stored, text compressed); the folder's name is the zip's top directory."""
    folder = Path(folder)
    dest = Path(dest) if dest else folder.with_suffix(".zip")
    with zipfile.ZipFile(dest, "w") as z:
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            binary = f.suffix in (".pt", ".pt2", ".safetensors", ".bin")
            z.write(f, Path(folder.name) / f.relative_to(folder),
                    compress_type=zipfile.ZIP_STORED if binary else zipfile.ZIP_DEFLATED)
    return dest


# ---------------------------------------------------------------------------------------------- the model card

_SNIPPET_LOAD = {
    "dynamic-per-tensor": (
        "from torch.ao.quantization import default_dynamic_qconfig as qconfig, quantize_dynamic",
        "model = AutoModelForQuestionAnswering.from_config(AutoConfig.from_pretrained(d)).eval()\n"
        "model = quantize_dynamic(model, {torch.nn.Linear: qconfig, **{n: None for n in keep}}, dtype=torch.qint8)\n"
        "model.load_state_dict(torch.load(f\"{d}/int8_state_dict.pt\", weights_only=True))"),
    "dynamic-per-channel": (
        "from torch.ao.quantization import per_channel_dynamic_qconfig as qconfig, quantize_dynamic",
        "model = quantize_dynamic(AutoModelForQuestionAnswering.from_config(AutoConfig.from_pretrained(d)).eval(), "
        "{torch.nn.Linear: qconfig, **{n: None for n in keep}}, dtype=torch.qint8)\n"
        "sd = torch.load(f\"{d}/int8_state_dict.pt\", weights_only=True)  # int8 weights, and the split outlier "
        "channels (copies, factors) the hooks below widen the inputs by\n"
        "split = {k[:-18]: (sd.pop(k), sd.pop(k[:-3] + \"c\")) for k in list(sd) if k.endswith(\".outlier_split.idx\")}"
        "; model.load_state_dict(sd)\n"
        "for k, (i, c) in split.items(): model.get_submodule(k).register_forward_pre_hook(lambda m, a, i=i, c=c: (("
        "torch.cat([a[0], a[0][..., i]], -1) if a[0].shape[-1] < c.numel() else a[0]) * c, *a[1:]))"),
    "dynamic-per-token": (
        "from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_",
        "model = AutoModelForQuestionAnswering.from_config(AutoConfig.from_pretrained(d)).eval()\n"
        "quantize_(model, Int8DynamicActivationInt8WeightConfig(), filter_fn=lambda m, n: isinstance(m, "
        "torch.nn.Linear) and n not in keep)\n"
        "model.load_state_dict(torch.load(f\"{d}/int8_state_dict.pt\", weights_only=True), assign=True)"),
}


def snippet(recipe: str, keep_fp32=()) -> str:
    """At most 15 lines that load the folder (`d`) and answer one question with torch + transformers (+ torchao):
    the best span with start <= end, both in the passage, at most 30 tokens; the answer sliced from the passage
    by character offsets."""
    head = ["import torch, torchao  # torchao registers the int8 kernels the static package calls",
            "from transformers import AutoTokenizer"] if is_static(recipe) else \
        ["import torch", "from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoTokenizer",
         _SNIPPET_LOAD[recipe][0]]
    lines = head + ['d, keep = ".", ' + json.dumps(list(keep_fp32)) + "  # this folder; the Linear layers kept in FP32",
                    "tok = AutoTokenizer.from_pretrained(d)"]
    if is_static(recipe):
        lines += ['run = torch._inductor.aoti_load_package(f"{d}/static/package.pt2")  # built for the CPU in '
                  'quantqa.json']
    else:
        lines += _SNIPPET_LOAD[recipe][1].splitlines()
    lines += ['question, passage = "Who wrote the letters?", "The letters were written by Ada Lovelace in 1843."',
              'enc = tok(question, passage, return_offsets_mapping=True, truncation="only_second", max_length=384, '
              'return_tensors="pt")',
              "off, ctx = enc.pop(\"offset_mapping\")[0], torch.tensor([s == 1 for s in enc.sequence_ids(0)])"]
    if is_static(recipe):
        lines += ["with torch.inference_mode(): s, e = run(enc[\"input_ids\"], enc[\"attention_mask\"], "
                  "enc[\"token_type_ids\"])"]
    else:
        lines += ["with torch.inference_mode(): out = model(**enc); s, e = out.start_logits, out.end_logits"]
    lines += ["sc = (s[0][:, None] + e[0][None, :]).masked_fill(~(ctx[:, None] & ctx[None, :]), -1e9).triu().tril(29)",
              "i, j = divmod(int(sc.argmax()), sc.shape[1]); print(passage[off[i][0]:off[j][1]])"]
    return "\n".join(lines)


def model_card(manifest: dict) -> str:
    recipe, keep = manifest["recipe"]["name"], manifest["recipe"].get("keep_fp32", [])
    m = manifest.get("measured") or {}
    cpu = (manifest.get("cpu") or {}).get("name") or "unknown CPU"
    lines = ["---", "library_name: transformers", "pipeline_tag: question-answering",
             "tags:", "  - int8", "  - quantization", "  - quantqa", f"  - {recipe}",
             f"base_model: {json.dumps(manifest.get('source_model', ''))}", "---", "",
             f"# {describe(recipe, keep)}", "",
             f"An INT8 version of `{manifest.get('source_model', '')}` for extractive question answering, made with "
             f"QuantQA ({manifest['built']}; torch {manifest['torch']}, transformers {manifest['transformers']}).", ""]
    lines += _recipe_text(recipe, keep, manifest)
    lines += ["", "## Measured", ""]
    if m.get("agreement") is not None:
        lines += [f"On {m['set']} ({m['questions']} questions), on {m.get('cpu') or cpu}"
                  + (f", {m['threads']} threads" if m.get("threads") else "") + ":", "",
                  "| | gives FP32's answer | EM | F1 | latency (median) | × FP32 | size |",
                  "|---|---|---|---|---|---|---|",
                  f"| this model | {m['agreement']:.1f} % | {m['exact_match']:.1f} | {m['f1']:.1f} | "
                  f"{m['median_ms']:.1f} ms @ {m['latency_tokens']} tokens | {m['speedup']:.2f} | "
                  f"{m['size_mib']:.1f} MiB |",
                  f"| FP32 | 100 % | {m['fp32_exact_match']:.1f} | {m['fp32_f1']:.1f} | {m['fp32_median_ms']:.1f} ms | "
                  f"1.00 | {m['fp32_size_mib']:.1f} MiB |"]
    elif m:
        lines += [f"On one passage from the Compare page, on {m.get('cpu') or cpu}: median {m['median_ms']:.1f} ms"
                  + (f" ({m['speedup']:.2f}× FP32)" if m.get("speedup") else "") + "."]
    else:
        lines += ["Not measured on a question set when it was written (`python -m quant tune --recipes` measures and "
                  "chooses)."]
    lines += ["", "## Use it (torch + transformers" + (", torchao" if recipe == "dynamic-per-token" or is_static(recipe) else "")
              + " only)", "", "```python", snippet(recipe, keep), "```", ""]
    if is_static(recipe):
        lines += ["The package is compiled code for the CPU and torch the manifest names (`quantqa.json`: "
                  f"`static.cpu`, `static.torch`). QuantQA itself rebuilds it from `model.safetensors` and "
                  "`calibration.json` on any other machine, and unless told to trust it (`--trust-package`), on "
                  "this one too.", ""]
    lines += ["Serve it in QuantQA: `python app.py --model THIS_FOLDER` or "
              "`python -m quant compare --model THIS_FOLDER ...`.", ""]
    return "\n".join(lines)


def _recipe_text(recipe: str, keep, manifest: dict) -> list[str]:
    kept = (f" {len(keep)} Linear layer{'s' if len(keep) != 1 else ''} stay in FP32 (the most sensitive, found by "
            "measurement): " + ", ".join(f"`{n}`" for n in keep) + ".") if keep else ""
    text = {
        "dynamic-per-tensor": "Every `nn.Linear` has int8 weights with one scale per tensor; activations are "
                              "quantized at each call from their range (torch.ao `quantize_dynamic`).",
        "dynamic-per-channel": "Every `nn.Linear` has int8 weights with one scale per output channel; activations are "
                               "quantized at each call from their range (torch.ao `quantize_dynamic`).",
        "dynamic-per-token": "Every `nn.Linear` has int8 weights per output channel and int8 activations with one "
                             "scale per token, computed at each call (torchao `Int8DynamicActivationInt8WeightConfig`)"
                             "; compile it with `torch.compile` to run it as measured.",
    }
    if is_static(recipe):
        st = manifest.get("static") or {}
        options = StaticOptions.from_dict(st.get("options"))
        how = ("the app's six example passages" if recipe == "static" else
               "the app's examples and one half of QuantQA's built-in real-text set")
        text = ("Static INT8 (PT2E, torchao's X86 Inductor quantizer): int8 weights per output channel, int8 "
                f"activations with scales fixed by calibration on {how} (`calibration.json`; "
                f"{options.describe()}), the attention in FP32 as one fused SDPA kernel, compiled ahead of time with "
                f"AOTInductor into `static/package.pt2` (batch 1, 8 to {st.get('max_length', 384)} tokens).")
        if options.smooth:
            text += (f" SmoothQuant (alpha {options.smooth:g}): per-channel scales move activation outliers into the "
                     "weights, folded into the LayerNorms before them (the FP32 function is unchanged).")
        if options.dynamic_layers:
            text += (f" {len(options.dynamic_layers)} Linear layers (the FFN outputs) quantize their activations at "
                     "each call instead.")
        if options.split:
            text += (f" Outlier channel splitting (ratio {options.split:g}): an input channel whose calibrated range "
                     "is over that many times the median channel's is carried by several copies, each a fraction of "
                     "it, and the Linear layers that read it by as many copies of its weights (the FP32 function is "
                     "unchanged; " + (f"at most {options.split_budget} extra channels per input, " if
                                      options.split_budget else "") +
                     f"K padded to a multiple of {options.split_align} where a layer has such a channel).")
        if options.gptq:
            text += (" The weights are rounded by GPTQ: column by column, each rounding error moved onto the columns "
                     "not yet rounded (weighted by the calibration inputs), on the INT8 grid the quantizer itself "
                     "chooses, so the package keeps those integers.")
    else:
        text = text[recipe]
        split, ratio = manifest.get("outlier_split"), (manifest.get("quant_config") or {}).get("split") or 2
        if split:
            text += (f" Outlier channel splitting: on {split['inputs']} inputs, the channels whose range (calibrated on "
                     f"QuantQA's built-in real text, its calibration half) is over {ratio:g}x the median channel's are "
                     f"carried by several copies, each a fraction of it ({split['extra_channels']} extra channels in "
                     "all), and the Linear layers that read them by as many copies of their weights, so the "
                     "activation's one scale per call fits the rest: the FP32 function is unchanged. The copies and "
                     "their factors are in the state dict (`*.outlier_split.idx` / `.c`).")
    return ["## Recipe", "", text + kept]
