"""ft models: parameter counts, FLOPs and activation memory from configs on the meta device."""

from __future__ import annotations

import pytest

from ft_cli.models import profile
from ft_cli.paths import resolve_path


def config_of(name: str):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolve_path(f"pkg:ft_cli/assets/{name}", "model"))


@pytest.mark.parametrize("name", ["tiny_bert", "tiny_vit", "tiny_resnet"])
def test_parameter_counts_equal_the_instantiated_model(name: str) -> None:
    from transformers import AutoModel

    config = config_of(name)
    real = AutoModel.from_config(config)
    found = profile.profile(name, config, seq=16, batch=2)
    assert found.params == sum(p.numel() for p in real.parameters())
    stem = sum(
        p.numel() for n, p in real.named_parameters() if n.startswith(("embeddings.", "embedder."))
    )
    assert stem > 0 and found.params_without_embeddings == found.params - stem


def test_bert_embedding_parameters_match_a_hand_count() -> None:
    c = config_of("tiny_bert")
    found = profile.profile("tiny_bert", c, seq=16, batch=1)
    h = c.hidden_size
    tables = (
        c.vocab_size + c.max_position_embeddings + c.type_vocab_size
    ) * h + 2 * h  # + LayerNorm
    assert found.params - found.params_without_embeddings == tables


def test_training_flops_per_token_match_a_hand_count() -> None:
    c = config_of("tiny_bert")
    seq = 16
    found = profile.profile("tiny_bert", c, seq=seq, batch=1)
    h, i, layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    linear = seq * layers * 2 * (4 * h * h + 2 * h * i)  # q, k, v, output; two FFN matmuls
    attention = layers * 2 * (2 * seq * seq * h)  # Q K^T and the weighted sum of V
    pooler = 2 * h * h  # the [CLS] row only
    assert found.train_flops == 3 * (linear + attention + pooler) / seq
    assert found.layers == layers and found.width == h and found.unit == "tokens"


def test_image_flops_are_per_image_and_activations_grow_with_the_batch() -> None:
    c = config_of("tiny_vit")
    one = profile.profile("tiny_vit", c, seq=0, batch=1)
    four = profile.profile("tiny_vit", c, seq=0, batch=4)
    assert one.unit == "images" and one.input_size == 32
    patches = (32 // 8) ** 2
    embed = 2 * 3 * 8 * 8 * c.hidden_size * patches  # the patch projection (a strided conv)
    assert one.train_flops > 3 * embed
    assert four.train_flops == one.train_flops  # per image, whatever the batch
    assert four.activation_bytes == 4 * one.activation_bytes > 0
    assert four.state_bytes == 16 * four.params


def test_heads_follow_the_family() -> None:
    assert profile.heads_of("bert") == ["classification", "token_classification", "mlm"]
    assert profile.heads_of("resnet") == ["image_classification"]
    assert profile.heads_of("gpt2")[-1] == "causal_lm" and "causal_lm" in profile.heads_of("llama")
    assert profile.heads_of("t5")[-1] == "seq2seq"
    assert profile.heads_of("segformer") == ["image_classification", "semantic_segmentation"]


def test_ft_models_table_and_from_a_run_spec(monkeypatch, capsys) -> None:
    from ft_cli import cli
    from ft_cli.commands import models

    monkeypatch.setattr(models, "_rate", lambda precision: (1e11, 0.5))
    monkeypatch.setenv("COLUMNS", "250")
    assert cli._run_tool("models", ["tiny_bert", "tiny_resnet", "--seq", "32"]) == 0
    out = capsys.readouterr().out
    bert = next(line for line in out.splitlines() if "tiny_bert" in line)
    config = config_of("tiny_bert")
    found = profile.profile("tiny_bert", config, seq=32, batch=32)
    assert f"{found.params / 1e3:.1f}K" in bert and "classification" in bert
    # 10,000 rows x 32 tokens x FLOPs per token at half of 100 GFLOP/s
    seconds = 10_000 * 32 * found.train_flops / 5e10
    assert f"{seconds:.1f} s" in bert
    assert cli._run_tool("models", ["--for", "+recipe=demo_images"]) == 0
    out = capsys.readouterr().out
    assert "600 training rows" in out and "tiny_resnet" in out and "/image (32px)" in out
    assert cli._run_tool("models", ["--batch", "0"]) == 2
    assert "--batch 0: give a positive whole number" in capsys.readouterr().err


def test_card_domain_reads_the_front_matter(tmp_path) -> None:
    (tmp_path / "README.md").write_text(
        "---\nlanguage: en\ndatasets:\n- beans\n- other\npipeline_tag: image-classification\n---\n# card\n"
    )
    assert profile.card_domain(str(tmp_path)) == "en; beans, other; image-classification"
