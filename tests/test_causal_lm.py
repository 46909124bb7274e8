"""Causal LM: the token rows and their targets, packing, chat rendering, generation,
scores, training, exact resume, predict and serve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import compose_spec, resumes_bit_identical
from transformers import AutoModelForCausalLM, AutoTokenizer

from ft_cli.config.schema import GenerationSettings
from ft_cli.data import lm_examples
from ft_cli.data.encoded import EncodedSplit
from ft_cli.errors import FtError
from ft_cli.paths import resolve_path
from ft_cli.tasks import causal_lm, generation

DECODERS = ("tiny_gpt2", "tiny_llama")
SMALL = [
    "task=causal_lm",
    "model=tiny_gpt2",
    "data=demo_instructions",
    "data.max_train_samples=64",
    "data.max_eval_samples=8",
    "data.max_length=48",
    "train.batch_size=8",
    "train.eval_batch_size=8",
    "train.log_every=1",
    "hardware.precision=fp32",
    "optimizer.lr=3e-3",
    "task.generation.max_new_tokens=3",
]


def folder(name: str) -> str:
    return resolve_path(f"pkg:ft_cli/assets/{name}", "model")


def tokenizer(name: str = "tiny_gpt2"):
    return AutoTokenizer.from_pretrained(folder(name))


def fresh(name: str):
    from transformers import AutoConfig

    torch.manual_seed(0)
    net = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder(name)))
    return net.eval()


def split_of(rows: lm_examples.TokenRows) -> EncodedSplit:
    return EncodedSplit(
        rows.input_ids,
        None,
        [0] * len(rows.input_ids),
        positions=rows.positions,
        trained=rows.trained,
    )


def test_the_loss_reads_the_response_tokens_only() -> None:
    tok = tokenizer()
    prompts, answers = ["The lamp is quiet. Overall, this was", "Hi"], [" great", " the lamp"]
    examples = lm_examples.pair_examples(tok, prompts, answers)
    batch = causal_lm.CausalCollator(split_of(lm_examples.one_per_row(examples, 64)), 0, 1, False)(
        [0, 1]
    )
    width = batch["input_ids"].shape[1]
    for row, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        asked = tok(prompt)["input_ids"]
        said = [*tok(answer, add_special_tokens=False)["input_ids"], tok.eos_token_id]
        # Token by token: the targets are the answer and end-of-text, each read from the
        # token before it; nothing of the prompt, nothing of the padding.
        expected = {row * width + len(asked) - 1 + i: token for i, token in enumerate(said)}
        mine = {
            int(p): int(t)
            for p, t in zip(batch["target_positions"], batch["labels"], strict=True)
            if int(p) // width == row
        }
        assert mine == expected


def test_plain_text_is_packed_with_positions_restarting_at_each_document() -> None:
    examples = [lm_examples.Example([1, 2, 3]), lm_examples.Example([4, 5, 6, 7, 8])]
    rows = lm_examples.group_stream(examples, 4, "train")
    assert rows.input_ids == [[1, 2, 3, 4], [5, 6, 7, 8]]
    # The second document goes on in the next row from position 0.
    assert rows.positions == [[0, 1, 2, 0], [0, 1, 2, 3]]
    batch = causal_lm.CausalCollator(split_of(rows), 0, 1, False)([0, 1])
    # No target crosses from document one (1 2 3) to document two (4 ...).
    assert batch["labels"].tolist() == [2, 3, 6, 7, 8]


def test_examples_are_packed_whole_and_never_cut() -> None:
    examples = [
        lm_examples.Example(list(range(n)), [False] + [True] * (n - 1)) for n in (5, 3, 4, 2)
    ]
    rows = lm_examples.pack_examples(examples, 7)
    assert sorted(len(r) for r in rows.input_ids) == [7, 7]
    assert rows.cut == 0
    for ids, positions in zip(rows.input_ids, rows.positions, strict=True):
        starts = [i for i, p in enumerate(positions) if p == 0]
        parts = [ids[a:b] for a, b in zip(starts, [*starts[1:], len(ids)], strict=True)]
        assert all(part == list(range(len(part))) for part in parts)
    long = lm_examples.fit(lm_examples.Example(list(range(10)), [False] * 7 + [True] * 3), 6)
    assert long.ids == [0, 5, 6, 7, 8, 9] and long.trained == [False] * 3 + [True] * 3


@pytest.mark.parametrize("name", DECODERS)
def test_packed_documents_never_see_each_other(name: str) -> None:
    net = fresh(name)
    assert causal_lm.keeps_documents_apart(net)
    first, second = [5, 9, 14, 3], [7, 8, 30]
    rows = split_of(
        lm_examples.TokenRows([first + second, second], [[0, 1, 2, 3, 0, 1, 2], [0, 1, 2]], None)
    )
    batch = causal_lm.CausalCollator(rows, 0, 1, False)([0, 1])
    with torch.no_grad():
        logits = net(**{k: batch[k] for k in ("input_ids", "position_ids")}, use_cache=False).logits
    assert torch.allclose(logits[0, 4:7], logits[1, :3], atol=1e-5)


def test_a_conversation_trains_on_the_assistant_turns_only() -> None:
    tok = tokenizer()
    messages = [
        {"role": "user", "content": "The lamp is quiet."},
        {"role": "assistant", "content": "great"},
        {"role": "user", "content": "And the tent?"},
        {"role": "assistant", "content": "terrible"},
    ]
    template = lm_examples.chat_template(tok, None)
    text = lm_examples.render(tok, messages, template)
    eos = tok.eos_token
    assert text == (
        f"<|user|>\nThe lamp is quiet.{eos}\n<|assistant|>\ngreat{eos}\n"
        f"<|user|>\nAnd the tent?{eos}\n<|assistant|>\nterrible{eos}\n"
    )
    example = lm_examples.chat_example(tok, messages, template, "row 0")
    trained = "".join(
        tok.decode([token])
        for token, flag in zip(example.ids, example.trained, strict=True)
        if flag
    )
    assert trained == f"great{eos}\nterrible{eos}\n"
    with pytest.raises(FtError, match="row 3: every turn needs a role and a content"):
        lm_examples.chat_example(tok, [{"role": "user"}], template, "row 3")


def test_sampling_is_seeded_and_independent_of_the_batch() -> None:
    net, tok = fresh("tiny_gpt2"), tokenizer()
    prompts = lm_examples.prompt_ids(tok, ["The lamp is", "This tent was never", "I found"])
    sampled = GenerationSettings(max_new_tokens=6, sample=True, temperature=1.5, seed=3)
    alone = [generation.generate(net, tok, [p], sampled)[0] for p in prompts]
    assert generation.generate(net, tok, prompts, sampled) == alone
    other = GenerationSettings(max_new_tokens=6, sample=True, temperature=1.5, seed=4)
    assert generation.generate(net, tok, prompts, other) != alone
    greedy = GenerationSettings(max_new_tokens=6)
    batched = generation.generate(net, tok, prompts, greedy)
    assert batched == [generation.generate(net, tok, [p], greedy)[0] for p in prompts]
    assert generation.generate(net, tok, prompts, greedy, [2, 2, 2]) == [
        generation.generate(net, tok, [p], GenerationSettings(max_new_tokens=2))[0] for p in prompts
    ]


def test_overlap_scores_against_known_values() -> None:
    scores = generation.overlap_scores(
        ["the cat sat", "a dog"],
        ["the cat sat down", "a dog"],
        ("rouge1", "rouge2", "rougeL", "bleu"),
    )
    # ROUGE-1 of the first: P 3/3, R 3/4 -> F 6/7; ROUGE-2: P 2/2, R 2/3 -> 0.8.
    assert scores["exact_match"] == 0.5
    assert scores["rouge_1"] == pytest.approx((6 / 7 + 1) / 2, abs=1e-4)
    assert scores["rouge_2"] == pytest.approx((0.8 + 1) / 2, abs=1e-4)
    assert scores["rouge_l"] == pytest.approx((6 / 7 + 1) / 2, abs=1e-4)
    assert generation.overlap_scores(
        ["the cat sat on the mat"], ["the cat sat on the mat"], ("bleu",)
    )["bleu"] == pytest.approx(1.0)
    assert generation.overlap_scores(["x y z w"], ["a b c d"], ("bleu",))["bleu"] == 0.0


def train(run_dir: Path, overrides: list[str]):
    from ft_cli.training.engine import train as run

    spec = compose_spec([*SMALL, *overrides])
    return run(spec, run_dir=run_dir, overrides=[*SMALL, *overrides])


def test_fine_tune_predict_and_serve_agree(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from ft_cli.commands import predict, serve
    from ft_cli.deploy import serving

    result = train(tmp_path / "run", ["train.epochs=1", "task.pack_examples=true"])
    assert {"perplexity", "loss", "exact_match", "token_f1", "rouge_l"} <= set(result.final)
    prompts = [
        "The lamp is not quiet. Overall, this was",
        "I found the tent truly fast. In short, this is the",
    ]
    source = tmp_path / "prompts.jsonl"
    source.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    target = tmp_path / "out.jsonl"
    assert predict.predict_file(str(tmp_path / "run"), source, target, []) == 2
    written = [json.loads(line)["generated"] for line in target.read_text().splitlines()]

    served, _ = serve.load(str(tmp_path / "run"), None, None, [], 8)
    with TestClient(serving.build_app(served, serving.Limits())) as client:
        answer = client.post("/predict", json={"prompts": prompts}).json()
        assert [p["generated"] for p in answer["predictions"]] == written
        one = client.post("/predict", json={"prompt": prompts[0], "max_new_tokens": 1})
        assert one.status_code == 200
        capped = served.predict(
            [{"prompt": prompts[0]}, {"prompt": prompts[0], "max_new_tokens": 1}]
        )
        assert capped[1] == one.json()["prediction"] and capped[0]["generated"] == written[0]
        too_many = client.post("/predict", json={"prompt": prompts[0], "max_new_tokens": 10**6})
        assert too_many.status_code == 422 and "max_new_tokens" in too_many.json()["error"]
        assert client.post("/predict", json={"prompt": "x", "beams": 2}).status_code == 422
        assert client.get("/health").status_code == 200
    from ft_cli.commands import report

    title, header, rows = report.task_table(tmp_path / "run")
    assert title == "generated answers, validation (wrong ones first)"
    assert header == ["prompt", "reference", "generated", "exact match"] and len(rows) == 8
    assert all(row[0].endswith(("In short, this is the", "Overall, this was")) for row in rows)
    assert all(row[1] in {"great", "terrible"} or " " not in row[1] for row in rows)


@pytest.mark.slow
def test_kill_and_resume_is_bit_identical(tmp_path: Path) -> None:
    overrides = [
        "data=demo_corpus",
        "train.epochs=2",
        "train.save_every=2",
        "train.export=last",
        "train.keep_checkpoints=100",
    ]
    assert resumes_bit_identical(train, tmp_path, overrides)


def test_a_missing_column_names_the_key(tmp_path: Path) -> None:
    rows = tmp_path / "train.jsonl"
    rows.write_text(json.dumps({"prompt": "a", "answer": "b"}) + "\n")
    with pytest.raises(FtError, match=r"data\.text_column: column 'text' is not in the train data"):
        train(tmp_path / "run", [f"data.files.train={rows}", f"data.files.validation={rows}"])
    with pytest.raises(FtError, match=r"data\.response_column: column 'response'"):
        train(
            tmp_path / "run2",
            [
                f"data.files.train={rows}",
                f"data.files.validation={rows}",
                "task.text_format=prompt_response",
            ],
        )
