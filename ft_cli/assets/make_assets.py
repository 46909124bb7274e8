"""Regenerate the data and vocabulary ft ships (deterministic; run from anywhere).

    python -m ft_cli.assets.make_assets

- demo/{train,validation}.csv: short product reviews written from templates,
  labelled positive/negative. Negations and "but" clauses make the label depend
  on more than one word, so a model has something to learn.
- ner/{train,validation}.conll: short sentences written from templates with
  people, places and organisations tagged in IOB2 (multi-word names give I-
  tags; some names appear only in validation, so the model must generalise).
- corpus/{train,validation}.txt: short multi-sentence reviews, one product each,
  a blank line between documents: a pretraining corpus whose sentences belong
  together (next-sentence prediction has something to learn).
- qa/{train,validation}.json: SQuAD JSON; paragraphs of templated facts about people
  (where they work, fly, what they bought), a question per fact whose answer is a span
  of the paragraph (held-out names in validation, as for ner/).
- instructions/{train,validation}.jsonl: prompt/response pairs about the corpus's
  sentences: which product a sentence is about ("In short, this is the" chair), and
  whether it speaks well or badly of it ("Overall, this was" great or terrible; a
  negation turns a word's meaning), to fine-tune a causal LM on.
- plurals/{train,validation}.jsonl: a review clause (source) and the same clause
  about several of the product (target: "this lamp was quiet" -> "these lamps were
  quiet"), a fixed transformation for a sequence-to-sequence model to learn.
- tiny_bert/vocab.txt: special tokens, every word of the demo data, and single
  characters with their ## continuations, so any English text tokenizes.
"""

from __future__ import annotations

import csv
import json
import random
import string
from pathlib import Path

ASSETS = Path(__file__).resolve().parent
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

PRODUCTS = [
    "phone",
    "laptop",
    "blender",
    "kettle",
    "jacket",
    "backpack",
    "lamp",
    "chair",
    "headset",
    "camera",
    "toaster",
    "watch",
    "printer",
    "tent",
    "bicycle",
    "keyboard",
]
GOOD = [
    "great",
    "excellent",
    "reliable",
    "sturdy",
    "comfortable",
    "fast",
    "quiet",
    "beautiful",
    "useful",
    "solid",
    "wonderful",
    "impressive",
]
BAD = [
    "terrible",
    "flimsy",
    "slow",
    "noisy",
    "broken",
    "useless",
    "awful",
    "disappointing",
    "cheap",
    "fragile",
    "ugly",
    "unreliable",
]
ADVERBS = ["really", "very", "quite", "truly", "rather", "surprisingly"]
OPENERS = ["honestly", "overall", "after a month", "so far", "in short", "to be fair"]


def _clause(rng: random.Random, positive: bool, product: str | None = None) -> str:
    """A clause whose meaning is `positive`, sometimes said through a negation."""
    negate = rng.random() < 0.35
    pool = GOOD if positive != negate else BAD
    adjective = rng.choice(pool)
    product = product or rng.choice(PRODUCTS)
    adverb = rng.choice(ADVERBS)
    if negate:
        forms = [
            f"the {product} is not {adjective}",
            f"this {product} was never {adjective}",
            f"i would not call the {product} {adjective}",
        ]
    else:
        forms = [
            f"the {product} is {adverb} {adjective}",
            f"this {product} was {adjective}",
            f"i found the {product} {adverb} {adjective}",
        ]
    return rng.choice(forms)


def review(rng: random.Random) -> tuple[str, str]:
    positive = rng.random() < 0.5
    if rng.random() < 0.3:
        # "X but Y": the clause after "but" carries the verdict.
        text = f"{_clause(rng, not positive)}, but {_clause(rng, positive)}"
    else:
        text = _clause(rng, positive)
    if rng.random() < 0.4:
        text = f"{rng.choice(OPENERS)}, {text}"
    return text[0].upper() + text[1:] + ".", "positive" if positive else "negative"


def write_demo(rows: int, name: str, seed: int) -> None:
    rng = random.Random(seed)
    with open(ASSETS / "demo" / name, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for _ in range(rows):
            writer.writerow(review(rng))


def corpus_document(rng: random.Random) -> str:
    """Three to five sentences about one product: the sentences of a document belong together."""
    product = rng.choice(PRODUCTS)
    sentences = []
    for _ in range(rng.randint(3, 5)):
        text = _clause(rng, rng.random() < 0.5, product)
        sentences.append(text[0].upper() + text[1:] + ".")
    return " ".join(sentences)


def instruction(rng: random.Random) -> dict[str, str]:
    """A question about one corpus-style sentence, and its one-word answer."""
    positive = rng.random() < 0.5
    product = rng.choice(PRODUCTS)
    text = _clause(rng, positive, product)
    sentence = text[0].upper() + text[1:] + "."
    if rng.random() < 0.5:
        return {"prompt": f"{sentence} In short, this is the", "response": f" {product}"}
    verdict = " great" if positive else " terrible"
    return {"prompt": f"{sentence} Overall, this was", "response": verdict}


def write_instructions(rows: int, name: str, seed: int) -> None:

    rng = random.Random(seed)
    (ASSETS / "instructions").mkdir(exist_ok=True)
    lines = [json.dumps(instruction(rng)) for _ in range(rows)]
    (ASSETS / "instructions" / name).write_text("\n".join(lines) + "\n")


# The clause forms of `_clause`, each with its plural: (singular, plural) templates.
PLURAL_FORMS = [
    ("the {p} is not {a}", "the {ps} are not {a}"),
    ("this {p} was never {a}", "these {ps} were never {a}"),
    ("i would not call the {p} {a}", "i would not call the {ps} {a}"),
    ("the {p} is {adv} {a}", "the {ps} are {adv} {a}"),
    ("this {p} was {a}", "these {ps} were {a}"),
    ("i found the {p} {adv} {a}", "i found the {ps} {adv} {a}"),
]


def plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("ch", "sh", "s", "x")) else "s")


def plural_pair(rng: random.Random) -> dict[str, str]:
    """A review clause and the same clause about several of the product."""
    singular, many = rng.choice(PLURAL_FORMS)
    product = rng.choice(PRODUCTS)
    words = {
        "p": product,
        "ps": plural(product),
        "a": rng.choice(GOOD + BAD),
        "adv": rng.choice(ADVERBS),
    }
    return {"source": singular.format(**words), "target": many.format(**words)}


def write_plurals(rows: int, name: str, seed: int) -> None:

    rng = random.Random(seed)
    (ASSETS / "plurals").mkdir(exist_ok=True)
    lines = [json.dumps(plural_pair(rng)) for _ in range(rows)]
    (ASSETS / "plurals" / name).write_text("\n".join(lines) + "\n")


def write_corpus(documents: int, name: str, seed: int) -> None:
    rng = random.Random(seed)
    (ASSETS / "corpus").mkdir(exist_ok=True)
    text = "\n\n".join(corpus_document(rng) for _ in range(documents))
    (ASSETS / "corpus" / name).write_text(text + "\n")


FIRST = [
    "Anna",
    "Ben",
    "Chloe",
    "David",
    "Elena",
    "Farid",
    "Grace",
    "Hugo",
    "Ines",
    "Jonas",
    "Kara",
    "Liam",
    "Mina",
    "Noah",
    "Olga",
    "Pablo",
]
LAST = ["Smith", "Garcia", "Okafor", "Nguyen", "Larsen", "Rossi", "Kowalski", "Tanaka"]
PLACES = [
    "Paris",
    "Berlin",
    "Lagos",
    "Lima",
    "Oslo",
    "New York",
    "San Diego",
    "Hong Kong",
    "Cape Town",
    "Rio de Janeiro",
    "Kyoto",
    "Quito",
]
ORGS = [
    "Acme Corp",
    "Globex",
    "Initech",
    "Northwind Traders",
    "Umbrella Group",
    "Stark Labs",
    "Blue Harbor Bank",
    "Vertex",
]
# Seen only in validation: the model must tag names it never saw.
HELD_OUT = {"PER": ["Zoe", "Yusuf"], "LOC": ["Dakar", "Buenos Aires"], "ORG": ["Helix Systems"]}
NER_TEMPLATES = [
    "{PER} works for {ORG} in {LOC} .",
    "{PER} flew to {LOC} on Monday .",
    "{ORG} opened an office in {LOC} last year .",
    "yesterday {PER} met {PER} at the {ORG} office .",
    "the weather in {LOC} was lovely .",
    "{PER} said that {ORG} will hire ten people .",
    "a new bridge was built in {LOC} .",
    "{ORG} and {ORG} signed a deal in {LOC} .",
    "we visited {LOC} with {PER} .",
    "the report from {ORG} was late .",
]


def _entity(rng: random.Random, kind: str, held_out: bool) -> list[str]:
    if held_out and rng.random() < 0.5:
        name = rng.choice(HELD_OUT[kind])
        if kind == "PER":
            name += " " + rng.choice(LAST)
        return name.split()
    if kind == "PER":
        return [rng.choice(FIRST), *([rng.choice(LAST)] if rng.random() < 0.6 else [])]
    return rng.choice(PLACES if kind == "LOC" else ORGS).split()


def ner_sentence(rng: random.Random, held_out: bool) -> list[tuple[str, str]]:
    """(word, IOB2 tag) pairs of one templated sentence."""
    pairs = []
    for piece in rng.choice(NER_TEMPLATES).split():
        if piece.startswith("{"):
            words = _entity(rng, piece[1:-1], held_out)
            pairs += [(w, ("B-" if i == 0 else "I-") + piece[1:-1]) for i, w in enumerate(words)]
        else:
            pairs.append((piece, "O"))
    first, tag = pairs[0]
    pairs[0] = (first[0].upper() + first[1:], tag)
    return pairs


def write_ner(rows: int, name: str, seed: int, held_out: bool) -> None:
    rng = random.Random(seed)
    (ASSETS / "ner").mkdir(exist_ok=True)
    with open(ASSETS / "ner" / name, "w") as handle:
        for _ in range(rows):
            handle.write("".join(f"{w} {t}\n" for w, t in ner_sentence(rng, held_out)) + "\n")


DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
COUNTS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve"]
# A fact about one person: its sentence, and the questions it answers with their answer's
# slot. {P}: the person, {O}: an organisation, {L}: a place, {D}: a day, {N}: a number.
QA_FACTS = [
    ("{P} works for {O} in {L}.", [("Who does {P} work for?", "O"), ("Where does {P} work?", "L")]),
    ("On {D}, {P} flew to {L}.", [("Where did {P} fly?", "L"), ("When did {P} fly to {L}?", "D")]),
    ("{P} bought {N} tickets for the concert.", [("How many tickets did {P} buy?", "N")]),
    ("{P} met a friend from {O} in {L} on {D}.", [("What day did {P} meet a friend?", "D")]),
    ("Last year {P} moved to {L} to join {O}.", [("Which company did {P} join?", "O")]),
    ("{P} has visited {L} {N} times.", [("How often has {P} visited {L}?", "N")]),
]


def qa_paragraph(rng: random.Random, held_out: bool) -> tuple[str, list[tuple[str, str, int]]]:
    """A paragraph of three to six facts about different people, and one question (with its
    answer and the answer's first character) about each fact."""
    people: list[str] = []
    count = rng.randint(3, 6)
    while len(people) < count:
        name = " ".join(_entity(rng, "PER", held_out))
        if name.split()[0] not in {p.split()[0] for p in people}:
            people.append(name)
    sentences: list[str] = []
    questions: list[tuple[str, str, int]] = []
    offset = 0
    for person in people:
        sentence, asks = rng.choice(QA_FACTS)
        values = {
            "P": person,
            "O": " ".join(_entity(rng, "ORG", held_out)),
            "L": " ".join(_entity(rng, "LOC", held_out)),
            "D": rng.choice(DAYS),
            "N": rng.choice(COUNTS),
        }
        text = sentence.format(**values)
        question, slot = rng.choice(asks)
        answer = values[slot]
        # The answer's first character: after the slots before it in the template.
        start = offset + _slot_position(sentence, slot, values)
        assert text[start - offset : start - offset + len(answer)] == answer
        sentences.append(text)
        questions.append((question.format(**values), answer, start))
        offset += len(text) + 1
    return " ".join(sentences), questions


def _slot_position(template: str, slot: str, values: dict[str, str]) -> int:
    """Where slot {slot} starts in the filled `template`."""
    head = template[: template.index("{" + slot + "}")]
    return len(head.format(**values))


def write_qa(paragraphs: int, name: str, seed: int, held_out: bool) -> None:
    """SQuAD JSON: one article of `paragraphs` paragraphs, a question per fact."""

    rng = random.Random(seed)
    (ASSETS / "qa").mkdir(exist_ok=True)
    items = []
    for p in range(paragraphs):
        context, questions = qa_paragraph(rng, held_out)
        qas = [
            {
                "id": f"{name.split('.')[0]}-{p}-{q}",
                "question": question,
                "answers": [{"text": answer, "answer_start": start}],
            }
            for q, (question, answer, start) in enumerate(questions)
        ]
        items.append({"context": context, "qas": qas})
    record = {"version": "ft-demo", "data": [{"title": "people", "paragraphs": items}]}
    (ASSETS / "qa" / name).write_text(json.dumps(record) + "\n")


def write_vocab() -> None:
    words = set()
    for name in ("train.csv", "validation.csv"):
        with open(ASSETS / "demo" / name) as handle:
            for row in csv.DictReader(handle):
                words.update(row["text"].lower().replace(",", " ").replace(".", " ").split())
    chars = string.ascii_lowercase + string.digits + string.punctuation
    vocab = [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in string.ascii_lowercase + string.digits)]
    vocab += sorted(words - set(vocab))
    (ASSETS / "tiny_bert" / "vocab.txt").write_text("\n".join(vocab) + "\n")


def write_decoders() -> None:
    """A byte-level BPE tokenizer of the demo sentences (<|endoftext|> its one special
    token, also its padding) and tiny GPT-2 and Llama-style configs that read it."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, LlamaConfig, PreTrainedTokenizerFast

    texts = []
    for name in ("train.csv", "validation.csv"):
        with open(ASSETS / "demo" / name) as handle:
            texts += [row["text"] for row in csv.DictReader(handle)]
    end = "<|endoftext|>"
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=600, min_frequency=2, special_tokens=[end])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token=end, eos_token=end, pad_token=end
    )
    sizes = {"vocab_size": len(tokenizer), "bos_token_id": 0, "eos_token_id": 0}
    configs = {
        "tiny_gpt2": GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=256, **sizes),
        "tiny_llama": LlamaConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            intermediate_size=64,
            max_position_embeddings=256,
            **sizes,
        ),
    }
    for name, config in configs.items():
        tokenizer.save_pretrained(ASSETS / name)
        config.save_pretrained(ASSETS / name)


def write_tiny_t5() -> None:
    """A byte-level BPE tokenizer of the demo sentences and their plurals (<pad> 0,
    </s> 1 closing every text, <unk> 2) and a tiny T5 config that reads it."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast, T5Config

    texts = []
    with open(ASSETS / "demo" / "train.csv") as handle:
        texts += [row["text"] for row in csv.DictReader(handle)]
    for line in (ASSETS / "plurals" / "train.jsonl").read_text().splitlines():
        texts += list(json.loads(line).values())
    special = ["<pad>", "</s>", "<unk>"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=700, min_frequency=2, special_tokens=special)
    bpe._tokenizer.post_processor = TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    tokenizer.save_pretrained(ASSETS / "tiny_t5")
    config.save_pretrained(ASSETS / "tiny_t5")


def write_tiny_segformer() -> None:
    """A two-stage SegFormer config (logits at a quarter of the input's size) and its
    image processor at 64x64, reading class ids as they are (no label reduction)."""
    from transformers import SegformerConfig, SegformerImageProcessor

    SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[4, 2],
        hidden_sizes=[16, 32],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=32,
    ).save_pretrained(ASSETS / "tiny_segformer")
    SegformerImageProcessor(
        size={"height": 64, "width": 64},
        do_reduce_labels=False,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    ).save_pretrained(ASSETS / "tiny_segformer")


def write_tiny_rtdetr() -> None:
    """An RT-DETR config with a three-stage ResNet (features at 1/8, 1/16 and 1/32 of the
    input), a 64-wide hybrid encoder and two decoder layers over 20 queries, and its image
    processor at 64x64."""
    from transformers import RTDetrConfig, RTDetrImageProcessorPil, RTDetrResNetConfig

    backbone = RTDetrResNetConfig(
        embedding_size=32,
        hidden_sizes=[32, 64, 128, 128],
        depths=[1, 1, 1, 1],
        out_features=["stage2", "stage3", "stage4"],
    )
    RTDetrConfig(
        backbone_config=backbone,
        encoder_in_channels=[64, 128, 128],
        encoder_hidden_dim=64,
        encoder_ffn_dim=128,
        encoder_attention_heads=4,
        d_model=64,
        decoder_in_channels=[64, 64, 64],
        decoder_ffn_dim=128,
        decoder_attention_heads=4,
        decoder_layers=2,
        num_queries=20,
        num_denoising=20,
    ).save_pretrained(ASSETS / "tiny_rtdetr")
    RTDetrImageProcessorPil(size={"height": 64, "width": 64}).save_pretrained(
        ASSETS / "tiny_rtdetr"
    )


def main() -> None:
    write_demo(800, "train.csv", seed=1)
    write_demo(200, "validation.csv", seed=2)
    write_ner(600, "train.conll", seed=3, held_out=False)
    write_ner(150, "validation.conll", seed=4, held_out=True)
    write_corpus(600, "train.txt", seed=5)
    write_corpus(150, "validation.txt", seed=6)
    write_qa(150, "train.json", seed=7, held_out=False)
    write_qa(40, "validation.json", seed=8, held_out=True)
    write_instructions(1200, "train.jsonl", seed=9)
    write_instructions(200, "validation.jsonl", seed=10)
    write_plurals(1500, "train.jsonl", seed=11)
    write_plurals(200, "validation.jsonl", seed=12)
    write_vocab()
    write_decoders()
    write_tiny_t5()
    write_tiny_segformer()
    write_tiny_rtdetr()


if __name__ == "__main__":
    main()
