"""Sequence to sequence: batches, the decoder's inputs, training, scores, predict, serve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import compose_spec

from ft_cli.data.encoded import EncodedSplit
from ft_cli.errors import FtError
from ft_cli.tasks import seq2seq

VALIDATION = (
    (Path(__file__).parent.parent / "ft_cli/assets/plurals/validation.jsonl")
    .read_text()
    .splitlines()
)
SMALL = [
    "task=seq2seq",
    "model=tiny_t5",
    "data=demo_plurals",
    "data.max_train_samples=64",
    "data.max_eval_samples=8",
    "train.batch_size=16",
    "train.eval_batch_size=8",
    "train.log_every=1",
    "hardware.precision=fp32",
    "optimizer.lr=3e-3",
    "task.generation.max_new_tokens=12",
]


def train(run_dir: Path, overrides: list[str]):
    from ft_cli.training.engine import train as run

    spec = compose_spec([*SMALL, *overrides])
    return run(spec, run_dir=run_dir, overrides=[*SMALL, *overrides])


def test_targets_are_padded_out_of_the_loss_and_shifted_behind_the_start_token() -> None:
    split = EncodedSplit([[5, 6, 1], [7, 1]], None, [[8, 9, 10, 1], [11, 1]])
    batch = seq2seq.Seq2SeqCollator(split, 0)([0, 1])
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[8, 9, 10, 1], [11, 1, -100, -100]]
    decoder = seq2seq.shifted(batch["labels"], start=0, pad=0)
    assert decoder.tolist() == [[0, 8, 9, 10], [0, 11, 1, 0]]


def test_the_prefix_comes_before_every_source() -> None:
    spec = compose_spec([*SMALL, "task.prefix=pluralize: "])
    from ft_cli import tasks

    task = tasks.get("seq2seq")
    tokenizer = task.processor(spec.model)
    table = task.load_raw(spec.data).splits["validation"].select(range(2))
    encoded = task.encode(spec.data, spec.task, tokenizer, table, None, "validation")
    first = tokenizer.decode(encoded.input_ids[0], skip_special_tokens=True)
    assert first == "pluralize: " + table[0]["source"]
    assert tokenizer.decode(encoded.labels[0], skip_special_tokens=True) == table[0]["target"]


def test_train_scores_predict_and_serve_agree(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from ft_cli.commands import export, predict, report, serve
    from ft_cli.deploy import serving

    result = train(tmp_path / "run", ["train.epochs=1"])
    wanted = {"rouge_l", "rouge_1", "rouge_2", "bleu", "exact_match", "token_f1", "loss"}
    assert wanted <= set(result.final)
    assert 0.0 <= result.final["rouge_l"] <= 1.0 and result.final["loss"] > 0
    clauses = ["the lamp is very quiet", "this watch was never cheap"]
    source = tmp_path / "clauses.jsonl"
    source.write_text("".join(json.dumps({"source": c}) + "\n" for c in clauses))
    target = tmp_path / "out.jsonl"
    assert predict.predict_file(str(tmp_path / "run"), source, target, []) == 2
    written = [json.loads(line)["generated"] for line in target.read_text().splitlines()]
    served, _ = serve.load(str(tmp_path / "run"), None, None, [], 8)
    with TestClient(serving.build_app(served, serving.Limits())) as client:
        answer = client.post("/predict", json={"prompts": clauses}).json()
        assert [p["generated"] for p in answer["predictions"]] == written
    with pytest.raises(FtError, match="writes text token by token"):
        export.main([str(tmp_path / "run")])
    title, header, rows = report.task_table(tmp_path / "run")
    assert title == "generated answers, validation (wrong ones first)"
    assert header == ["prompt", "reference", "generated", "exact match"] and len(rows) == 8
    assert [row[3] for row in rows] == sorted(row[3] for row in rows)  # wrong ones first
    assert {row[0] for row in rows} <= {json.loads(x)["source"] for x in VALIDATION}


def test_a_missing_target_column_names_the_key(tmp_path: Path) -> None:
    rows = tmp_path / "train.jsonl"
    rows.write_text(json.dumps({"source": "a", "summary": "b"}) + "\n")
    with pytest.raises(FtError, match=r"data\.response_column: column 'target'"):
        train(tmp_path / "run", [f"data.files.train={rows}", f"data.files.validation={rows}"])


def test_layer_groups_pair_encoder_and_decoder_blocks() -> None:
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    from ft_cli.paths import resolve_path
    from ft_cli.strategies import layers

    config = AutoConfig.from_pretrained(resolve_path("pkg:ft_cli/assets/tiny_t5", "model"))
    net = AutoModelForSeq2SeqLM.from_config(config)
    groups = {name: layers.group_of(name) for name, _ in net.named_parameters()}
    assert groups["shared.weight"] == "embeddings"
    assert groups["encoder.block.1.layer.0.SelfAttention.q.weight"] == "layer.1"
    assert groups["decoder.block.0.layer.2.DenseReluDense.wi.weight"] == "layer.0"
    assert layers.num_layers_of(net) == 2


@pytest.mark.parametrize(
    ("name", "auto"), [("tiny_t5", "AutoModelForSeq2SeqLM"), ("tiny_llama", "AutoModelForCausalLM")]
)
def test_lora_on_a_language_model_trains_its_adapters_only(name: str, auto: str) -> None:
    import transformers
    from transformers import AutoConfig

    from ft_cli.config.schema import LoraSettings
    from ft_cli.paths import resolve_path
    from ft_cli.strategies.lora import apply_lora

    config = AutoConfig.from_pretrained(resolve_path(f"pkg:ft_cli/assets/{name}", "model"))
    net = apply_lora(getattr(transformers, auto).from_config(config), LoraSettings())
    trained = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trained and all(".lora_" in n for n in trained)  # the token tables stay frozen
