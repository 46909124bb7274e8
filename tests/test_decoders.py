"""Decoders as classifiers: a tiny GPT-2 and a tiny Llama-style model trained on the demo
reviews; padding, the last real token pooled, layer groups."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import compose_spec


def trained(tmp_path: Path, model: str) -> Path:
    from ft_cli.training.engine import train

    overrides = [
        "+recipe=demo",
        f"model={model}",
        "optimizer.lr=3e-3",
        "train.max_steps=20",
        "hardware.precision=fp32",
        "data.max_train_samples=160",
        "data.max_eval_samples=32",
    ]
    train(compose_spec(overrides), run_dir=tmp_path / model, overrides=overrides)
    return tmp_path / model


@pytest.mark.parametrize("model", ["tiny_gpt2", "tiny_llama"])
def test_a_decoder_classifies_whichever_side_a_batch_is_padded(tmp_path, model) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = trained(tmp_path, model)
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    net = AutoModelForSequenceClassification.from_pretrained(run / "model").eval()
    assert tokenizer.pad_token == "<|endoftext|>" and net.config.pad_token_id == 0
    texts = ["The kettle was great.", "Awful.", "The chair is rather comfortable, I think."]
    with torch.no_grad():
        alone = torch.cat([net(**tokenizer(t, return_tensors="pt")).logits for t in texts])
        for side in ("right", "left"):
            tokenizer.padding_side = side
            batch = tokenizer(texts, return_tensors="pt", padding=True)
            # Positions count real tokens only (as generation does), so a left-padded row's
            # words sit where they would alone.
            positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            padded = net(**batch, position_ids=positions).logits
            assert torch.allclose(padded, alone, atol=1e-5), side
    assert batch["input_ids"][1, 0] == tokenizer.pad_token_id  # it was padded on the left


def test_ft_predicts_with_a_decoder_as_it_evaluates(tmp_path: Path) -> None:
    import csv
    import json

    from ft_cli import cli

    run = trained(tmp_path, "tiny_llama")
    source = tmp_path / "rows.csv"
    source.write_text("text\nThe kettle was great.\nAwful.\nThe chair is rather fine.\n")
    target = tmp_path / "out.csv"
    assert (
        cli._run_tool("predict", [str(run), "--input", str(source), "--output", str(target)]) == 0
    )
    with open(target) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and {r["predicted_label"] for r in rows} <= {"negative", "positive"}
    record = json.loads((run / "metrics.json").read_text())
    assert 0 <= record["final"]["accuracy"] <= 1


def test_decoder_layer_groups_follow_their_blocks() -> None:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from ft_cli.paths import resolve_path
    from ft_cli.strategies import layers

    for name, table in (
        ("tiny_gpt2", "transformer.wte.weight"),
        ("tiny_llama", "model.embed_tokens.weight"),
    ):
        folder = resolve_path(f"pkg:ft_cli/assets/{name}", "model")
        net = AutoModelForSequenceClassification.from_config(
            AutoConfig.from_pretrained(folder, num_labels=2)
        )
        groups = {layers.group_of(n) for n, _ in net.named_parameters()}
        assert groups == {"embeddings", "layer.0", "layer.1", "head"}, name
        assert layers.group_of(table) == "embeddings"
        assert layers.num_layers_of(net) == 2
    assert layers.group_of("transformer.h.1.attn.c_attn.weight") == "layer.1"
    assert layers.group_of("model.layers.0.self_attn.q_proj.weight") == "layer.0"


def test_lora_finds_each_familys_attention_projections() -> None:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from ft_cli.config.schema import LoraSettings
    from ft_cli.paths import resolve_path
    from ft_cli.strategies import lora

    expected = {
        "tiny_gpt2": {"c_attn"},
        "tiny_llama": {"q_proj", "v_proj"},
        "tiny_bert": {"query", "value"},
    }
    for name, wanted in expected.items():
        folder = resolve_path(f"pkg:ft_cli/assets/{name}", "model")
        net = AutoModelForSequenceClassification.from_config(
            AutoConfig.from_pretrained(folder, num_labels=2)
        )
        wrapped = lora.apply_lora(net, LoraSettings(r=2))
        adapted = {
            n.split(".lora_A")[0].rsplit(".", 1)[-1]
            for n, _ in wrapped.named_parameters()
            if ".lora_A" in n
        }
        assert adapted == wanted, name
    given = LoraSettings(r=2, target_modules=["q_proj"])
    assert lora.target_modules(net, given) == ["q_proj"]  # a list given is used as it is
