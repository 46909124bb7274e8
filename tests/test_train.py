"""End-to-end training of the tiny BERT in-process: outputs, reload, strategies, stopping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_train, write_csv
from safetensors.torch import load_file


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def hparams_of(run_dir: Path) -> dict:
    """The hyperparameters a run recorded for TensorBoard's HPARAMS tab."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    values = {}
    for name, value in info.hparams.items():
        kind = value.WhichOneof("kind")
        values[name] = getattr(value, kind)
    return values


def test_loss_falls_and_outputs_are_written(tmp_path: Path) -> None:
    result = run_train(
        tmp_path,
        ["optimizer.lr=3e-3", "train.epochs=8", "data.max_train_samples=512", "train.log_every=4"],
    )
    run = result.run_dir
    losses = [v for _, v in scalars(run, "train/loss")]
    assert len(losses) == result.steps // 4 == 8 * 32 // 4
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.1, (first, last)
    assert result.metric > 0.6  # validation accuracy on 48 rows, chance is 0.5
    for tag in ("train/lr", "train/grad_norm", "train/samples_per_s", "eval/accuracy", "eval/f1"):
        assert scalars(run, tag), tag
    assert (run / "config.yaml").read_text().count("lr: 0.003") == 1
    assert hparams_of(run)["optimizer.lr"] == pytest.approx(3e-3)
    for tag in ("hparam/best_accuracy", "hparam/final_accuracy", "hparam/final_loss"):
        assert scalars(run, tag), tag  # the HPARAMS tab's metric columns
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert record["steps"] == 256
    assert record["epochs"] == 8.0
    assert set(record["best"]) >= {"accuracy", "f1", "mcc", "loss", "step"}
    assert record["monitor"] == {"metric": "accuracy", "mode": "max", "best": result.metric}
    assert record["train_samples_per_s"] > 0
    assert record["labels"] == ["negative", "positive"]
    card = (run / "model" / "README.md").read_text()
    assert f"| accuracy | {record['best']['accuracy']:.4f} |" in card  # the run's own metrics
    assert "ft train optimizer.lr=3e-3 train.epochs=8" in card  # how to reproduce it
    assert "transformers " in card and "Base model:" in card
    # Retention: the newest 2 plus the best, each with safetensors weights.
    checkpoints = sorted((run / "checkpoints").glob("step-*"))
    assert 2 <= len(checkpoints) <= 3
    for ckpt in checkpoints:
        assert load_file(ckpt / "model.safetensors")
        state = torch.load(ckpt / "trainer_state.pt", weights_only=True)
        assert {"optimizer", "scheduler", "scaler", "rng", "loop"} <= set(state)
        assert (ckpt / "manifest.json").exists()
    assert not list((run / "checkpoints").glob(".tmp-*"))


def test_export_reloads_with_the_same_logits(tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result = run_train(tmp_path, ["train.epochs=1", "train.export=last"])
    model_dir = result.run_dir / "model"
    reloaded = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    assert reloaded.config.id2label == {0: "negative", 1: "positive"}
    assert reloaded.config.label2id == {"negative": 0, "positive": 1}
    batch = tokenizer(
        ["the kettle is great.", "this lamp was never sturdy."], padding=True, return_tensors="pt"
    )
    result.model.eval()
    reloaded.eval()
    with torch.no_grad():
        expected = result.model(**batch).logits
        actual = reloaded(**batch).logits
    assert torch.equal(expected, actual)
    assert not (model_dir / "pytorch_model.bin").exists()
    assert (model_dir / "model.safetensors").exists()


def test_best_checkpoint_is_exported(tmp_path: Path) -> None:
    result = run_train(tmp_path, ["optimizer.lr=3e-3", "train.epochs=3", "train.eval_every=2"])
    record = json.loads((result.run_dir / "metrics.json").read_text())
    best_step = record["best"]["step"]
    assert record["exported_from"] == f"best checkpoint step-{best_step:08d}"
    exported = load_file(result.run_dir / "model" / "model.safetensors")
    best = load_file(result.run_dir / "checkpoints" / f"step-{best_step:08d}" / "model.safetensors")
    for name, tensor in exported.items():
        assert torch.equal(tensor, best[name]), name


@pytest.mark.parametrize(
    ("strategy", "frozen_prefixes", "trained_prefixes"),
    [
        (
            ["strategy=freeze_backbone"],
            ["bert.embeddings.", "bert.encoder."],
            ["classifier.", "bert.pooler."],
        ),
        (
            ["strategy=freeze_layers", "strategy.frozen_layers=1"],
            ["bert.embeddings.", "bert.encoder.layer.0."],
            ["bert.encoder.layer.1.", "classifier."],
        ),
        (
            [
                "strategy=freeze_layers",
                "strategy.frozen_layers=1",
                "strategy.freeze_embeddings=false",
            ],
            ["bert.encoder.layer.0."],
            ["bert.embeddings.", "bert.encoder.layer.1."],
        ),
        (
            [
                "strategy=freeze_layers",
                "strategy.frozen_layers=0",
                "strategy.frozen_top_layers=1",
                "strategy.freeze_embeddings=false",
            ],
            ["bert.encoder.layer.1."],
            ["bert.embeddings.", "bert.encoder.layer.0."],
        ),
        (
            [
                "strategy=freeze_layers",
                "strategy.frozen_layers=0",
                "strategy.frozen_layer_ids=[0]",
                "strategy.freeze_embeddings=false",
            ],
            ["bert.encoder.layer.0."],
            ["bert.embeddings.", "bert.encoder.layer.1."],
        ),
        (
            [
                "strategy=freeze_layers",
                "strategy.frozen_layers=0",
                "strategy.frozen_pattern=attention\\.self",
                "strategy.freeze_embeddings=false",
            ],
            ["bert.encoder.layer.0.attention.self.", "bert.encoder.layer.1.attention.self."],
            ["bert.encoder.layer.0.intermediate.", "bert.encoder.layer.1.output."],
        ),
    ],
)
def test_frozen_parameters_stay_bit_identical(
    tmp_path: Path, tiny_pretrained: Path, strategy, frozen_prefixes, trained_prefixes
) -> None:
    overrides = [
        f"model.name_or_path={tiny_pretrained}",
        "model.init=pretrained",
        "optimizer.lr=1e-2",
        "train.epochs=1",
        "train.export=last",
        *strategy,
    ]
    result = run_train(tmp_path, overrides)
    before = {f"bert.{k}": v for k, v in load_file(tiny_pretrained / "model.safetensors").items()}
    after = load_file(result.run_dir / "model" / "model.safetensors")
    record = json.loads((result.run_dir / "metrics.json").read_text())
    assert record["frozen_parameters"] > 0
    checked_frozen = checked_trained = 0
    for name, tensor in after.items():
        if any(name.startswith(p) for p in frozen_prefixes):
            assert torch.equal(tensor, before[name]), f"{name} changed but is frozen"
            checked_frozen += 1
        elif (
            any(name.startswith(p) for p in trained_prefixes)
            and name in before
            and tensor.ndim == 2
        ):
            assert not torch.equal(tensor, before[name]), f"{name} did not train"
            checked_trained += 1
    assert checked_frozen > 0 and checked_trained > 0


def test_frozen_modules_stay_in_eval_mode() -> None:
    from ft_cli.config.schema import ModelConfig, StrategyConfig, StrategyKind
    from ft_cli.models.model import load_model
    from ft_cli.strategies import layers as strategies

    model, _ = load_model(
        ModelConfig(name_or_path="pkg:ft_cli/assets/tiny_bert", init="scratch"),
        "classification",
        ["a", "b"],
        vocab_size=176,
    )
    applied = strategies.apply_strategy(
        model, StrategyConfig(kind=StrategyKind.freeze_layers, frozen_layers=1)
    )
    applied.train_mode(model)
    assert not model.bert.embeddings.training
    assert not model.bert.encoder.layer[0].training
    assert model.bert.encoder.layer[1].training
    assert model.classifier.training


def test_early_stopping_stops_at_the_expected_evaluation(tmp_path: Path) -> None:
    # lr ~ 0 (it must be > 0): the metric never moves, so patience 2 stops at the third evaluation.
    result = run_train(
        tmp_path,
        [
            "optimizer.lr=1e-12",
            "train.epochs=5",
            "train.eval_every=1",
            "train.early_stopping.enabled=true",
            "train.early_stopping.patience=2",
        ],
    )
    assert result.stopped_early
    assert result.steps == 3
    record = json.loads((result.run_dir / "metrics.json").read_text())
    assert record["status"] == "stopped_early"
    assert record["best"]["step"] == 1
    assert [s for s, _ in scalars(result.run_dir, "eval/accuracy")] == [1, 2, 3]


def test_early_stopping_on_loss_uses_min_mode(tmp_path: Path) -> None:
    result = run_train(
        tmp_path,
        ["optimizer.lr=3e-3", "train.epochs=2", "train.early_stopping.metric=loss"],
    )
    record = json.loads((result.run_dir / "metrics.json").read_text())
    assert record["monitor"]["mode"] == "min"
    assert result.metric == pytest.approx(min(v for _, v in scalars(result.run_dir, "eval/loss")))


def test_max_steps_and_grad_accum_count_optimizer_steps(tmp_path: Path) -> None:
    result = run_train(tmp_path, ["train.max_steps=5", "train.grad_accum=2", "train.batch_size=8"])
    assert result.steps == 5
    assert [s for s, _ in scalars(result.run_dir, "train/loss")] == [1, 2, 3, 4, 5]
    record = json.loads((result.run_dir / "metrics.json").read_text())
    assert record["train_samples"] == 5 * 2 * 8


def test_validation_is_carved_from_train_when_missing(tmp_path: Path) -> None:
    rows = [
        {"text": f"sample {i} is {'good' if i % 2 else 'bad'}", "label": i % 2} for i in range(60)
    ]
    train_file = write_csv(tmp_path / "train.csv", rows)
    result = run_train(
        tmp_path,
        [
            "data=csv",
            f"data.files.train={train_file}",
            "data.validation_fraction=0.25",
            "train.epochs=1",
        ],
    )
    record = json.loads((result.run_dir / "metrics.json").read_text())
    assert record["train_samples"] == 45
    assert record["labels"] == ["0", "1"]
    assert record["final"]


def test_multiclass_string_labels_and_sentence_pairs_from_jsonl(tmp_path: Path) -> None:
    classes = ["cat", "dog", "fish"]
    rows = [
        {"a": f"first {i}", "b": f"second {classes[i % 3]}", "y": classes[i % 3]} for i in range(48)
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = run_train(
        tmp_path,
        [
            "data=json",
            f"data.files.train={path}",
            f"data.files.validation={path}",
            "data.text_column=a",
            "data.text_pair_column=b",
            "data.label_column=y",
            "optimizer.lr=5e-3",
            "train.epochs=3",
        ],
    )
    record = json.loads((result.run_dir / "metrics.json").read_text())
    assert record["labels"] == classes
    assert result.model.config.num_labels == 3
    assert set(record["final"]) == {"accuracy", "f1", "mcc", "ece", "loss"}


def test_regression_from_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"the kettle is {'great ' * (i % 4)}good" for i in range(64)]
    table = pa.table({"sentence": texts, "score": [float(i % 4) for i in range(64)]})
    path = tmp_path / "train.parquet"
    pq.write_table(table, path)
    result = run_train(
        tmp_path,
        [
            "data=parquet",
            f"data.files.train={path}",
            f"data.files.validation={path}",
            "data.text_column=sentence",
            "data.label_column=score",
            "task=regression",
            "optimizer.lr=5e-3",
            "train.epochs=2",
        ],
    )
    record = json.loads((result.run_dir / "metrics.json").read_text())
    assert set(record["final"]) == {"pearson", "spearman", "mse", "loss"}
    assert record["monitor"]["metric"] == "pearson"
    assert result.model.config.num_labels == 1


def test_test_split_is_evaluated_on_the_exported_model(tmp_path: Path) -> None:
    rows = [
        {"text": f"row {i} {'good' if i % 2 else 'bad'}", "label": "yes" if i % 2 else "no"}
        for i in range(40)
    ]
    path = write_csv(tmp_path / "d.tsv", rows, delimiter="\t")
    result = run_train(
        tmp_path,
        [
            "data=tsv",
            f"data.files.train={path}",
            f"data.files.validation={path}",
            f"data.files.test={path}",
            "train.epochs=1",
            "train.export=last",
        ],
    )
    record = json.loads((result.run_dir / "metrics.json").read_text())
    assert record["test"]["accuracy"] == pytest.approx(record["final"]["accuracy"])


def test_bf16_autocast_on_cpu_trains(tmp_path: Path) -> None:
    result = run_train(tmp_path, ["hardware.precision=bf16", "optimizer.lr=3e-3", "train.epochs=2"])
    record = json.loads((result.run_dir / "metrics.json").read_text())
    assert record["precision"] == "bf16"
    assert record["device"] == "cpu"
    losses = [v for _, v in scalars(result.run_dir, "train/loss")]
    assert all(torch.isfinite(torch.tensor(losses)))
    # fp32 master weights: autocast never changes the parameters' dtype.
    assert {p.dtype for p in result.model.parameters()} == {torch.float32}


@pytest.mark.slow
def test_length_grouping_cuts_padding(tmp_path: Path) -> None:
    common = [
        "train.epochs=1",
        "data.max_train_samples=512",
        "optimizer.lr=1e-12",
        "train.pad_to_multiple_of=1",
    ]  # grouping alone
    grouped = run_train(tmp_path / "grouped", [*common, "train.group_by_length=true"])
    plain = run_train(tmp_path / "plain", [*common, "train.group_by_length=false"])
    padding = {
        name: json.loads((r.run_dir / "metrics.json").read_text())["padding_fraction"]
        for name, r in (("grouped", grouped), ("plain", plain))
    }
    assert padding["grouped"] < 0.1 < padding["plain"], padding


@pytest.mark.slow
def test_compiled_model_trains_and_exports(tmp_path: Path, monkeypatch) -> None:
    # Dynamo captures the graphs as it does for inductor, then runs them eagerly. What ft
    # owns (the compiled wrapper, its weights' names, the export) is the same, and
    # inductor's C++ code generation (90 s on 2 cores) is left to the benchmarks.
    compile_for_real = torch.compile
    monkeypatch.setattr(
        torch,
        "compile",
        lambda net, **options: compile_for_real(net, backend="eager", **options),
    )
    result = run_train(
        tmp_path, ["hardware.compile=true", "train.max_steps=3", "train.export=last"]
    )
    record = json.loads((result.run_dir / "metrics.json").read_text())
    assert record["compiled"] is True
    assert all(torch.isfinite(torch.tensor([v for _, v in scalars(result.run_dir, "train/loss")])))
    # The export holds the trained weights under their plain names (no compile wrapper prefix).
    exported = load_file(result.run_dir / "model" / "model.safetensors")
    assert not any(name.startswith("_orig_mod") for name in exported)
    state = result.model.state_dict()
    assert all(torch.equal(exported[name], state[name]) for name in exported)


def test_padding_to_a_multiple_changes_shapes_not_what_is_learned(tmp_path: Path) -> None:
    # fp32 without dropout: the extra pad tokens are masked, so the losses match.
    common = ["strategy.dropout=0", "train.max_steps=6", "train.export=last"]
    runs = {
        m: run_train(tmp_path / f"pad{m}", [*common, f"train.pad_to_multiple_of={m}"])
        for m in (1, 16)
    }
    losses = {m: [v for _, v in scalars(r.run_dir, "train/loss")] for m, r in runs.items()}
    assert len(losses[1]) == 6 and losses[16] == pytest.approx(losses[1], rel=1e-5)
    padding = {
        m: json.loads((r.run_dir / "metrics.json").read_text())["padding_fraction"]
        for m, r in runs.items()
    }
    assert padding[16] > padding[1]  # the batches really were wider
    a, b = (load_file(r.run_dir / "model" / "model.safetensors") for r in runs.values())
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
