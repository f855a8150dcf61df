"""Ship what you chose (quant/artifact.py): every recipe as a folder that serves as measured, with a model card whose
snippet runs with torch + transformers (+ torchao) alone."""

import json
import re
import subprocess
import sys
import zipfile

import pytest
import torch

import tinymodels
from quant import ModelSet, QuantConfig, artifact
from quant.compare import STATIC_VARIANT, compare
from quant.qa import run_windows
from quant.recipes import build_recipe
from quant.static import STATIC_RECIPES, recipe_setup

KEEP = ["bert.encoder.layer.0.output.dense"]


@pytest.fixture(scope="module")
def models(trained_model_dir):
    return ModelSet(str(trained_model_dir), variants=("fp32-cpu", "int8-cpu"), log=None)


@pytest.fixture(scope="module")
def folders(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    return {r: artifact.write(root / r, models, r, KEEP) for r in artifact.RECIPES}


def _served(folder):
    variants = ("fp32-cpu", "int8-cpu", STATIC_VARIANT) if "static" in folder.name else ("fp32-cpu", "int8-cpu")
    m = ModelSet(str(folder), variants=variants, log=None)
    return m, (STATIC_VARIANT if "static" in folder.name else "int8-cpu")


@pytest.mark.parametrize("recipe", artifact.RECIPES)
def test_every_recipe_is_a_folder_that_serves_as_measured(recipe, models, folders):
    """The folder, served with --model, names its recipe on the card and gives the spans the recipe gives when
    built directly (as `tune --recipes` measured it), question by question."""
    folder = folders[recipe]
    manifest = json.loads((folder / "quantqa.json").read_text())
    assert manifest["format"] == "quantqa-int8/2" and manifest["recipe"]["name"] == recipe
    assert manifest["recipe"]["keep_fp32"] == KEEP and manifest["torch"] == torch.__version__
    assert manifest["transformers"] and manifest["cpu"]["name"]
    linears = sum(isinstance(m, torch.nn.Linear) for m in models.fp32_eager.modules())
    assert manifest["layers"]["linear_fp32"] == len(KEEP) and manifest["layers"]["linear_int8"] == linears - len(KEEP)
    served, variant = _served(folder)
    assert "this folder's" in served.recipes()[variant] and artifact.describe(recipe, KEEP) in served.recipes()[variant]
    direct, _, _ = build_recipe(recipe, models, KEEP)
    with torch.inference_mode():
        for ex in tinymodels.held_out_examples(8, seed=97):
            c = compare(served, ex.context, ex.question, runs=1)
            got = c.result(variant)
            enc = models.encode_checked(c.context, c.question)
            from quant.compare import decode

            want = decode(variant, run_windows(direct, enc.inputs), enc, c.context, None)
            assert (got.start, got.end) == (want.start, want.end), (recipe, ex.question, got.answer, want.answer)
            assert c.result("fp32-cpu").available  # the FP32 card serves too (its weights, or the source model)


@pytest.mark.minilm
def test_minilm_the_dynamic_card_folder_carries_its_split_and_its_snippet_runs_it(minilm_dir, tmp_path):
    """Real weights, where the dynamic card splits outlier channels (the trained tiny BERT has none over 2x the
    median's). The card's recipe is written split as the card is: its state dict holds the plan of every split input
    not read by a kept layer, the manifest says the ratio and counts them, the model card says so; the folder serves
    the answers of the recipe built directly, with those plans, and the card's 15-line snippet (torch +
    transformers alone) rebuilds the split and gives the served answer. The seed's recipe (per-tensor) is not
    split, and a manifest from before the split reads back unsplit."""
    from quant.compare import decode
    from quant.evaluate import builtin_split
    from quant.smooth import plans_in

    comp = ModelSet(str(minilm_dir), variants=("fp32-cpu", "int8-cpu"), log=None)
    assert comp.quant.split is not None and comp.splits
    out = artifact.write(tmp_path / "card", comp, "dynamic-per-channel", KEEP)
    plans = plans_in(torch.load(out / "int8_state_dict.pt", weights_only=True))
    kept_site = "bert.encoder.layer.0.output"  # KEEP: layer 0's FFN output stays FP32, so its input is not split
    assert plans and kept_site in comp.splits and set(plans) == set(comp.splits) - {kept_site}
    assert all(torch.equal(plans[k][0], comp.splits[k][0]) and torch.equal(plans[k][1], comp.splits[k][1])
               for k in plans)
    manifest = json.loads((out / "quantqa.json").read_text())
    assert manifest["quant_config"]["split"] == QuantConfig.split and manifest["outlier_split"]["inputs"] == len(plans)
    card = (out / "README.md").read_text()
    assert f"Outlier channel splitting: on {len(plans)} inputs" in card
    served = ModelSet(str(out), variants=("fp32-cpu", "int8-cpu"), log=None)
    assert served.quant.split == QuantConfig.split and set(served.splits) == set(plans)
    direct, _, _ = build_recipe("dynamic-per-channel", comp, KEEP)
    exs = builtin_split("held-out", limit=4)
    with torch.inference_mode():
        for ex in exs:
            got = compare(served, ex.context, ex.question, runs=1).result("int8-cpu")
            enc = comp.encode_checked(ex.context, ex.question)
            want = decode("int8-cpu", run_windows(direct, enc.inputs), enc, ex.context, None)
            assert (got.start, got.end) == (want.start, want.end), (ex.question, got.answer, want.answer)
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert len(code.strip().splitlines()) <= 15 and "quant." not in code
    ex = exs[0]
    code = re.sub(r"^question, passage = .*$", f"question, passage = {ex.question!r}, {ex.context!r}", code,
                  flags=re.M)
    p = subprocess.run([sys.executable, "-I", "-c", code], cwd=out, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == compare(served, ex.context, ex.question, runs=1).result("int8-cpu").answer
    seed = artifact.write(tmp_path / "seed", comp, "dynamic-per-tensor", [])
    assert not plans_in(torch.load(seed / "int8_state_dict.pt", weights_only=True))
    old = {k: v for k, v in manifest["quant_config"].items() if k != "split"}
    assert QuantConfig.from_manifest(old).split is None


@pytest.mark.parametrize("recipe", artifact.RECIPES)
def test_the_model_card_snippet_runs_with_torch_and_transformers_alone(recipe, folders):
    """The card's snippet (at most 15 lines), run in the folder by an isolated Python that cannot import quant,
    gives the answer QuantQA serves from that folder."""
    folder = folders[recipe]
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n") and "pipeline_tag: question-answering" in card.split("---")[1]
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert len(code.strip().splitlines()) <= 15 and "quant." not in code.replace("torchao.quant", "")
    ex = tinymodels.held_out_examples(1, seed=98)[0]
    code = re.sub(r"^question, passage = .*$", f"question, passage = {ex.question!r}, {ex.context!r}", code,
                  flags=re.M)
    p = subprocess.run([sys.executable, "-I", "-c", code], cwd=folder, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    served, variant = _served(folder)
    assert p.stdout.strip().splitlines()[-1] == compare(served, ex.context, ex.question, runs=1).result(variant).answer


def test_the_card_reports_what_was_measured(models, tmp_path):
    fp32 = {"recipe": "fp32", "agreement": 100.0, "exact_match": 40.0, "f1": 50.0, "median_ms": 20.0, "size_mib": 86.0}
    row = {"recipe": "static", "agreement": 96.25, "exact_match": 39.5, "f1": 49.0, "median_ms": 5.0, "size_mib": 30.0,
           "sqnr_db": 31.0, "keep_fp32": []}
    measured = artifact.measurement(row, fp32, set_name="the built-in real-text set", n=80, seq_len=160,
                                    cpu="Test CPU", threads=2)
    from quant import quantize

    out = artifact.write_dynamic(tmp_path / "a", quantize(models.fp32_eager), models.tokenizer, "dynamic-per-channel",
                                 source_model=models.model_id, engine=models.engine, measured=measured)
    card = (out / "README.md").read_text()
    assert "On the built-in real-text set (80 questions), on Test CPU, 2 threads" in card
    assert "| this model | 96.2 % | 39.5 | 49.0 | 5.0 ms @ 160 tokens | 4.00 | 30.0 MiB |" in card
    assert "| FP32 | 100 % | 40.0 | 50.0 | 20.0 ms | 1.00 | 86.0 MiB |" in card


def test_a_static_folder_runs_its_own_package_only_when_trusted(folders, trained_model_dir):
    """By default the folder's compiled code is not run: the package is rebuilt here (from the cache here) and
    checked against the logits the folder recorded; trusted and built for this machine, its own package is used;
    trusted but built for another, it is rebuilt."""
    folder = folders["static"]
    logs = []
    m = ModelSet(str(folder), variants=("fp32-cpu", STATIC_VARIANT), log=logs.append)
    info = m.variant(STATIC_VARIANT).model.info
    assert not info.get("trusted_package") and info["expect_db"] and min(info["expect_db"]) >= 20
    m = ModelSet(str(folder), variants=("fp32-cpu", STATIC_VARIANT), log=logs.append, trust_package=True)
    assert m.variant(STATIC_VARIANT).model.info["trusted_package"] is True
    manifest = json.loads((folder / "quantqa.json").read_text())
    manifest["static"]["key"] = "built-elsewhere"
    (folder / "quantqa.json").write_text(json.dumps(manifest))
    try:
        logs.clear()
        m = ModelSet(str(folder), variants=("fp32-cpu", STATIC_VARIANT), log=logs.append, trust_package=True)
        assert not m.variant(STATIC_VARIANT).model.info.get("trusted_package")
        assert any("built for another CPU, torch or recipe: rebuilding" in x for x in logs)
    finally:
        manifest["static"]["key"] = info["key"]
        (folder / "quantqa.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("recipe", STATIC_RECIPES[1:])
def test_a_static_recipe_folder_is_rebuilt_with_its_own_calibration_and_options(recipe, models, folders):
    """static-realtext / -smooth / -mixed: the folder records the calibration pairs and the options (SmoothQuant,
    the layers with dynamic activations) its package was built with, and serving it rebuilds exactly that package
    (the same cache key: weights, recipe, calibration, options), not the static card's."""
    folder = folders[recipe]
    calib, options = recipe_setup(recipe, models.fp32_eager)
    manifest = json.loads((folder / "quantqa.json").read_text())
    assert manifest["static"]["options"] == options.as_dict()
    assert [(c["question"], c["passage"]) for c in json.loads((folder / "calibration.json").read_text())] == calib
    assert len(calib) > 6  # the real-text calibration half, not only the app's examples
    if recipe == "static-smooth":
        assert options.smooth and "SmoothQuant (alpha 0.5)" in (folder / "README.md").read_text()
    if recipe == "static-mixed":
        assert set(options.dynamic_layers) == {f"bert.encoder.layer.{i}.output.dense" for i in range(
            models.fp32_eager.config.num_hidden_layers)}
    served = ModelSet(str(folder), variants=("fp32-cpu", STATIC_VARIANT), log=None)
    info = served.variant(STATIC_VARIANT).model.info
    assert info["key"] == manifest["static"]["key"] != json.loads(
        (folders["static"] / "quantqa.json").read_text())["static"]["key"]
    assert min(info["expect_db"]) >= 20


def test_weights_that_hold_code_are_refused(folders, tmp_path):
    """A folder whose weights file is a pickle with code in it does not load (torch.load(weights_only=True))."""
    import shutil

    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "bad"
    shutil.copytree(folders["dynamic-per-channel"], bad)
    torch.save({"x": Boom()}, bad / "int8_state_dict.pt")
    with pytest.raises(Exception, match="Weights only load failed|weights_only|Unsupported global"):
        artifact.load(bad)


def test_a_folder_zips_whole(folders, tmp_path):
    z = artifact.zip_folder(folders["static"], tmp_path / "static.zip")
    names = set(zipfile.ZipFile(z).namelist())
    assert {"static/README.md", "static/quantqa.json", "static/model.safetensors", "static/calibration.json",
            "static/static/package.pt2", "static/static/probes.pt", "static/config.json"} <= names


@pytest.mark.minilm
def test_minilm_the_chosen_recipe_serves_the_answers_it_was_chosen_with(minilm, tmp_path):
    """On real weights: the recipe chosen on the built-in set's first 20 questions, written as `tune --out` writes
    it and served from the folder (--model DIR), gives the agreement, EM and F1 it was chosen with, question by
    question through compare()."""
    from quant.evaluate import BUILTIN, load_squad, score
    from quant.recipes import recipe_report, write_choice

    exs = load_squad(BUILTIN, limit=20)
    rec = recipe_report(minilm, exs, 50.0, recipes=("dynamic-per-tensor", "dynamic-per-channel", "static"),
                        max_keep=0, rank_questions=2)
    assert rec.chosen is not None, rec.table()
    out = write_choice(tmp_path / "chosen", minilm, None, rec, None, "the built-in set (first 20)", lambda m: None)
    manifest = json.loads((tmp_path / "chosen" / "quantqa.json").read_text())
    assert out and manifest["recipe"]["name"] == rec.chosen.recipe
    static = rec.chosen.recipe == "static"
    served = ModelSet(out, variants=("fp32-cpu", "int8-cpu") + ((STATIC_VARIANT,) if static else ()), log=None)
    variant = STATIC_VARIANT if static else "int8-cpu"
    agree, em, f1 = 0, 0.0, 0.0
    with torch.inference_mode():
        for ex in exs:
            c = compare(served, ex.context, ex.question, runs=1)
            got, ref = c.result(variant), c.result("fp32-cpu")
            agree += (got.start, got.end) == (ref.start, ref.end)
            a, b = score(ex, got.answer)
            em, f1 = em + a, f1 + b
    n = len(exs)
    assert (100 * agree / n, round(100 * em / n, 2), round(100 * f1 / n, 2)) == (
        rec.chosen.agreement, round(rec.chosen.exact_match, 2), round(rec.chosen.f1, 2)), rec.table()


def test_eval_on_a_static_folder_scores_its_static_card(folders):
    """`python -m quant eval --model <static folder>` scores the folder's static INT8 without --static (the help
    says so: the folder's recipe is served on the static card), as `compare` does."""
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(root))
    p = subprocess.run([sys.executable, "-m", "quant", "eval", "--model", str(folders["static"]), "--limit", "3",
                        "--json"], capture_output=True, text=True, timeout=600, cwd=root, env=env)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    scored = {r["variant"]: r for r in d["results"]}
    assert STATIC_VARIANT in scored and scored[STATIC_VARIANT]["n"] == 3, d
    assert scored[STATIC_VARIANT]["agreement_with_fp32"] is not None
