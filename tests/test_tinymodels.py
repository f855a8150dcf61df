"""The offline test models: deterministic builds (the README's example output must be reproducible)."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import tinymodels

HERE = Path(__file__).resolve().parent


def _build_in_fresh_process(out: Path, steps: int) -> dict:
    """Build the tiny model in a new interpreter (new hash seeds, as two user runs would be) and fingerprint it."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import tinymodels as t\n"
            "t.make_trained_model(sys.argv[2], steps=int(sys.argv[3]))\n")
    p = subprocess.run([sys.executable, "-c", code, str(HERE), str(out), str(steps)], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    from safetensors.torch import load_file

    sd = load_file(str(out / "model.safetensors"))
    weights = hashlib.sha256(b"".join(sd[k].numpy().tobytes() for k in sorted(sd))).hexdigest()
    vocab = json.loads((out / "tokenizer.json").read_text())["model"]["vocab"]
    return {"weights": weights, "vocab": vocab, "stderr": p.stderr}


def test_trained_model_builds_are_identical(tmp_path):
    """Two builds in two processes: the same vocabulary (ids included) and bit-identical weights."""
    a = _build_in_fresh_process(tmp_path / "a", steps=20)
    b = _build_in_fresh_process(tmp_path / "b", steps=20)
    assert a["vocab"] == b["vocab"] and 200 < len(a["vocab"]) <= 400  # every word of the corpus fits
    assert a["weights"] == b["weights"]
    assert "[tinymodels] tiny model: step 20/20" in a["stderr"]  # progress is printed
    assert "1 thread(s)" in a["stderr"]  # the fixed training thread count (README: measured fastest)


def test_vocabulary_is_counted_deterministically():
    v1 = tinymodels.count_vocab(tinymodels.corpus(), 400)
    v2 = tinymodels.count_vocab(list(reversed(tinymodels.corpus())), 400)  # order of the corpus does not matter
    assert v1 == v2
    assert v1[:5] == tinymodels.SPECIALS and "##a" in v1 and "Lovelace" in v1 and "1815" in v1
    assert len(v1) == len(set(v1)) <= 400
    small = tinymodels.count_vocab(tinymodels.corpus(), 200)  # a smaller budget drops the rarest words first
    assert len(small) == 200 and small == v1[:200]


def test_fact_examples_are_consistent():
    exs = tinymodels.fact_examples(300, seed=3)
    assert exs == tinymodels.fact_examples(300, seed=3)  # seeded
    kinds = {"born": 0, "founded": 0, "river": 0, "Mount": 0, "": 0}
    for e in exs:
        if e.answer:
            assert e.context[e.answer_start:e.answer_start + len(e.answer)] == e.answer
        else:
            kinds[""] += 1
        for k in kinds:
            if k and k in e.question:
                kinds[k] += 1
    assert all(v > 10 for v in kinds.values()), kinds  # several entity types, and unanswerable questions
    held = tinymodels.fact_examples(200, seed=tinymodels.MINILM_HELD_OUT_SEED)
    train = {(e.context, e.question) for e in tinymodels.fact_examples(2000, seed=tinymodels.MINILM_SEED)}
    overlap = sum((e.context, e.question) in train for e in held)
    assert overlap <= 10  # held out in practice: different seeds (a short passage can repeat by chance)
