"""Which INT8 to ship (quant/recipes.py): recipes side by side, K per recipe, the Pareto front and the choice."""

import json

import pytest

import tinymodels
from quant.recipes import RECIPES, RecipeResult, choose, compare_recipes, find_k, mark_pareto
from quant.tune import QuestionSet, rank_layers
from test_cli import run_cli
from test_eval import squad_file


def test_find_k_is_the_smallest_k_that_meets_the_target():
    agreement = {k: 50 + 3 * k for k in range(0, 38)}  # meets 80% first at k = 10
    tried = []

    def score(k):
        tried.append(k)
        return {"agreement": agreement[k]}

    k, s = find_k(score, 80.0, 37)
    assert k == 10 and s["agreement"] >= 80 and agreement[k - 1] < 80
    assert len(tried) <= 10 and len(set(tried)) == len(tried)  # doubling + bisection, each K scored once
    assert find_k(lambda k: {"agreement": 0.0}, 80.0, 5)[0] == 5  # never met: the budget's end, said by its score
    assert find_k(lambda k: {"agreement": 100.0}, 80.0, 5)[0] == 1


@pytest.fixture(scope="module")
def tiny_set(trained, tmp_path_factory):
    from quant.evaluate import load_squad

    examples = load_squad(squad_file(tmp_path_factory.mktemp("recipes") / "d.json", n=16, n_unanswerable=4))
    qs = QuestionSet(trained, examples)
    return qs, rank_layers(trained, qs, questions=8)


def _row(name, agreement, ms, target=90.0):
    return RecipeResult(name, [], agreement, 0.0, 0.0, 30.0, 100.0, median_ms=ms, meets=agreement >= target)


def test_the_choice_is_the_fastest_row_that_meets_the_target():
    """A faster row that misses the target never wins; among those that meet it, the fastest does."""
    rows = [_row("accurate", 99.0, 10.0), _row("fast-but-wrong", 85.0, 5.0), _row("chosen", 92.0, 8.0),
            _row("slow", 95.0, 12.0)]
    assert choose(rows).recipe == "chosen"
    assert choose([_row("fast-but-wrong", 85.0, 5.0)]) is None  # nothing meets: nothing is chosen
    mark_pareto(rows)
    # "slow" is beaten by "accurate" on both axes; every other row is best at something
    assert {r.recipe: r.pareto for r in rows} == {"accurate": True, "fast-but-wrong": True, "chosen": True,
                                                  "slow": False}
    tie = [_row("a", 90.0, 8.0), _row("b", 90.0, 8.0)]
    mark_pareto(tie)
    assert all(r.pareto for r in tie)  # equal on both axes: neither beats the other


def test_recipes_side_by_side_on_the_tiny_model(trained, tiny_set):
    qs, ranking = tiny_set
    rep = compare_recipes(trained, qs, ranking, 90.0, recipes=RECIPES, max_keep=3, runs=3)
    d = rep.to_dict()
    rows = d["recipes"]
    assert rows[0]["recipe"] == "fp32" and rows[0]["agreement"] == 100.0
    assert {r["recipe"] for r in rows[1:]} == set(RECIPES)  # per-token (torchao) too
    per_token = next(r for r in rows if r["recipe"] == "dynamic-per-token")
    assert "torch.compile" in per_token["note"] and per_token["agreement"] >= 90
    for r in rows:
        assert set(r) >= {"recipe", "keep_fp32", "agreement", "exact_match", "f1", "sqnr_db", "size_mib", "median_ms"}
        assert 0 <= r["agreement"] <= 100 and r["size_mib"] > 0 and r["median_ms"] > 0
    # the tiny model's INT8 keeps its answers: each recipe alone meets 90%, so no K was needed
    assert all(not r["keep_fp32"] and r["meets_target"] for r in rows[1:])
    assert d["chosen"]["recipe"] == rep.chosen.recipe and rep.chosen in rep.rows[1:]
    assert "chosen:" in rep.table()


@pytest.mark.minilm
def test_a_recipe_below_target_gets_its_k(minilm):
    """Real text on real weights, where per-tensor INT8 alone gives FP32's span on about half the questions: the
    recipe gets a second row with its K most sensitive layers in FP32 (the ranking's first K, within the budget),
    at a higher agreement and a larger size."""
    from quant.evaluate import BUILTIN, load_squad

    qs = QuestionSet(minilm, load_squad(BUILTIN, limit=30))
    ranking = rank_layers(minilm, qs, questions=8)
    rep = compare_recipes(minilm, qs, ranking, 95.0, recipes=("dynamic-per-tensor",), max_keep=4, runs=2)
    rows = [r for r in rep.rows if r.recipe == "dynamic-per-tensor"]
    assert rows[0].agreement < 95.0, "INT8 alone should lose answers on real text"
    assert rows[0].meets is False and rep.chosen is not rows[0]  # the row that misses the target is never chosen
    assert len(rows) == 2 and rows[1].keep_fp32 == [n for n, _ in ranking[:len(rows[1].keep_fp32)]]
    assert 1 <= len(rows[1].keep_fp32) <= 4 and rows[1].size_mib > rows[0].size_mib
    assert rows[1].agreement > rows[0].agreement and rows[1].sqnr_db > rows[0].sqnr_db


def test_tune_recipes_cli_json_and_out(trained_model_dir, tmp_path):
    f = squad_file(tmp_path / "d.json", n=10, n_unanswerable=2)
    out = tmp_path / "chosen"
    p = run_cli("tune", "--model", trained_model_dir, "--data", f, "--target-agreement", 90,
                "--recipes", "dynamic-per-tensor,dynamic-per-channel", "--out", out, "--json", timeout=900)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert set(d) >= {"ranking", "steps", "target_met", "recipes", "chosen"}  # tune's keys kept, recipes added
    assert d["chosen"]["recipe"] in ("dynamic-per-tensor", "dynamic-per-channel")
    manifest = json.loads((out / "quantqa.json").read_text())
    assert manifest["chosen"] == d["chosen"]["recipe"]
    assert manifest["quant_config"]["per_channel"] == (d["chosen"]["recipe"] == "dynamic-per-channel")
    ex = tinymodels.held_out_examples(1, seed=71)[0]
    p = run_cli("compare", "--model", out, "--context", ex.context, "--question", ex.question, "--runs", 1, "--json")
    assert p.returncode == 0, p.stderr  # the app / CLI serve the chosen recipe
    assert json.loads(p.stdout)["results"][1]["answer"] == ex.answer
    p = run_cli("tune", "--model", trained_model_dir, "--data", f, "--target-agreement", 90, "--recipes", "int4")
    assert p.returncode == 2 and "unknown recipe" in p.stderr


def test_recipes_through_the_app(app_url):
    from gradio_client import Client

    c = Client(app_url, verbose=False)
    fig, table, summary, d, _csv, _row = c.predict(None, 12, 90, 1, ["dynamic-per-tensor", "dynamic-per-channel"],
                                                   api_name="/recipes")  # no file: the built-in real-text set
    assert [r["recipe"] for r in d["recipes"]][0] == "fp32" and len(d["recipes"]) >= 3
    assert "Ship" in summary or "No recipe" in summary
    assert [row[0] for row in table["data"]] == [r["recipe"] for r in d["recipes"]]
    assert set(RECIPES) >= {r["recipe"] for r in d["recipes"][1:]}
    plot = json.loads(fig["plot"]) if isinstance(fig.get("plot"), str) else fig.get("plot", fig)  # gr.Plot's payload
    points = sum(len(t.get("x") or []) for t in plot["data"])
    assert points >= len(d["recipes"])  # the Pareto chart: a point per row ...
    assert all(r["recipe"] in json.dumps(plot) for r in d["recipes"])  # ... each named
