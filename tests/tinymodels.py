"""Tiny BERT QA models built offline, saved with save_pretrained, for tests and demos.

* `make_tokenizer` trains a WordPiece vocabulary with the `tokenizers` library.
* `make_random_model` writes a random tiny (or any-shape) BERT QA model: right
  for structure, sizes and timings.
* `make_trained_model` trains a small BERT for a few hundred steps on templated
  facts ("Ada Lovelace was born in Paris in 1815.") among filler sentences, so
  it really answers, with SQuAD2-style unanswerable questions (the passage
  omits the city or year that is asked for).

Everything here is deterministic (seeded) and touches no network.
"""

from __future__ import annotations

import random
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


def make_tokenizer(out_dir: str | Path, vocab_size: int = 400):
    """Train a cased WordPiece tokenizer on the templated facts and save it as a fast tokenizer."""
    from tokenizers import BertWordPieceTokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    wp = BertWordPieceTokenizer(lowercase=False, strip_accents=False, clean_text=True)
    wp.train_from_iterator(corpus() + FIRST + LAST + CITIES + YEARS, vocab_size=vocab_size, min_frequency=1,
                           special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    cls_id, sep_id = wp.token_to_id("[CLS]"), wp.token_to_id("[SEP]")
    # [CLS] question [SEP] passage [SEP], with segment ids 0 / 1, as BERT expects
    wp._tokenizer.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tok = PreTrainedTokenizerFast(tokenizer_object=wp._tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                  cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                  model_max_length=512,
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


def make_trained_model(out_dir: str | Path, steps: int = 400, seed: int = 0, hidden: int = 64,
                       layers: int = 2, batch: int = 32, p_unanswerable: float = 0.2,
                       lr: float = 1e-3, verbose: bool = False) -> Path:
    """Train a small BERT QA model on templated facts; save model + tokenizer to `out_dir`."""
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
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    for step in range(steps):
        exs = [make_example(rng, unanswerable=rng.random() < p_unanswerable)
               for _ in range(batch)]
        enc, s, e = encode_training(tokenizer, exs)
        loss = model(**enc, start_positions=s, end_positions=e).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if verbose and step % 50 == 0:
            print(f"step {step} loss {loss.item():.3f}", flush=True)
    model.eval()
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def held_out_examples(n: int = 40, seed: int = 12345, unanswerable: bool = False) -> list[QAExample]:
    rng = random.Random(seed)
    return [make_example(rng, unanswerable=unanswerable) for _ in range(n)]


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Write a model folder for demos and benchmarks (offline).")
    ap.add_argument("kind", choices=["trained", "random", "bert-base"],
                    help="trained: tiny model that answers the templated facts; random: tiny random; "
                         "bert-base: random weights in the bert-base-cased shape (vocab 28996) for sizes/timings")
    ap.add_argument("out")
    a = ap.parse_args()
    if a.kind == "trained":
        make_trained_model(a.out)
    elif a.kind == "random":
        make_random_model(a.out)
    else:
        make_random_model(a.out, vocab_size=28996, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                          intermediate_size=3072, max_position_embeddings=512)
    print(a.out)
