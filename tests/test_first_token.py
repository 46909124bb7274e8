"""The last encoder layer on the first token only (hardware/first_token.py): the same loss,
logits and gradients as the whole layer, for the heads that read the first token alone."""

from __future__ import annotations

import copy

import pytest
import torch
from test_kernels import TINY_BERT
from test_unpadding import FAMILIES, exported_logits
from torch import nn

from ft_cli.hardware import first_token, kernels

NO_DROPOUT = dict(
    attention_probs_dropout_prob=0.0,
    hidden_dropout_prob=0.0,
    attention_dropout=0.0,
    dropout=0.0,
    seq_classif_dropout=0.0,
    classifier_dropout=0.0,
)
PACKED = [12, 3, 7, 1, 12, 5]  # 44% padding: packed rows
PADDED = [12, 12, 11, 12, 12, 12]  # 1%: the padded layout


def _model(family: str, head: str, **config) -> nn.Module:
    import transformers

    settings = {**TINY_BERT, "num_labels": 3, **NO_DROPOUT, **FAMILIES[family], **config}
    torch.manual_seed(0)
    auto = getattr(transformers, f"AutoModelFor{head}")
    return auto.from_config(transformers.AutoConfig.for_model(family, **settings))


def _batch(lengths: list[int], choices: int = 0, left: bool = False) -> dict:
    torch.manual_seed(4)
    width = max(lengths)
    positions = torch.arange(width)[None]
    mask = (positions < torch.tensor(lengths)[:, None]).long()
    mask = mask.flip(1) if left else mask
    ids = torch.randint(5, 99, mask.shape) * mask
    if choices:
        rows = len(lengths) // choices
        shape = (rows, choices, width)
        return {"input_ids": ids.view(shape), "attention_mask": mask.view(shape)} | {
            "labels": torch.arange(rows) % choices
        }
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.arange(len(lengths)) % 3}


def _rows_out_of_the_last_layer(net: nn.Module) -> list[tuple[int, ...]]:
    """The shape of each output of the last layer (recorded as the model runs)."""
    shapes: list[tuple[int, ...]] = []
    last = next(m for m in net.modules() if isinstance(m, nn.ModuleList))[-1]
    last.register_forward_hook(lambda m, a, out: shapes.append(tuple(out.shape)))
    return shapes


def _step(net: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
    net.zero_grad()
    out = net.train()(**batch)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    return out.loss.detach(), out.logits.detach(), grads


def _assert_same(a: tuple, b: tuple, tol: float = 1e-5) -> None:
    assert torch.allclose(a[0], b[0], atol=tol)
    assert torch.allclose(a[1], b[1], atol=tol)
    assert a[2].keys() == b[2].keys()
    for name, grad in a[2].items():
        assert torch.allclose(grad, b[2][name], atol=tol * 10), name


@pytest.mark.parametrize(
    "family, head",
    [
        (family, head)
        for family in sorted(set(FAMILIES) - {"albert"})
        for head in ("SequenceClassification", "MultipleChoice")
        if (family, head) != ("electra", "MultipleChoice")  # its summary's position varies
    ],
)
def test_each_family_runs_its_last_layer_on_the_first_token_and_computes_the_same(
    family: str, head: str
) -> None:
    original = _model(family, head)
    narrowed = copy.deepcopy(original)
    assert kernels.speed_up(narrowed)["first_token"] == 1
    shapes = _rows_out_of_the_last_layer(narrowed)
    choices = 2 if head == "MultipleChoice" else 0
    for lengths, layout in ((PACKED, (1, 6, 32)), (PADDED, (6, 1, 32))):
        batch = _batch(lengths, choices)
        _assert_same(_step(original, batch), _step(narrowed, batch))
        assert shapes.pop() == layout  # the feed-forward ran on 6 rows of one token


def test_heads_over_every_token_albert_and_electras_summary_keep_the_whole_layer() -> None:
    for family, head in [
        ("bert", "TokenClassification"),
        ("bert", "QuestionAnswering"),
        ("bert", "MaskedLM"),
        ("bert", "PreTraining"),
        ("albert", "SequenceClassification"),
        ("electra", "MultipleChoice"),
    ]:
        net = _model(family, head)
        assert kernels.speed_up(net)["first_token"] == 0, (family, head)


def test_inference_and_an_export_see_every_position() -> None:
    original = _model("bert", "SequenceClassification").eval()
    net = copy.deepcopy(original)
    kernels.speed_up(net)
    shapes = _rows_out_of_the_last_layer(net)
    batch = _batch(PACKED)
    exported = exported_logits(net, batch)
    with torch.no_grad():
        eager, own = net(**batch), original(**batch).logits
    assert shapes == [(6, 12, 32)] * len(shapes) and shapes  # the whole layer, every time
    assert torch.allclose(eager.logits, own, atol=1e-6)
    assert torch.allclose(exported, own, atol=1e-5)


def test_left_padded_rows_keep_the_padded_layout() -> None:
    """Packed rows hold no pad position 0, which a left-padded row's head reads."""
    original = _model("bert", "SequenceClassification")
    narrowed = copy.deepcopy(original)
    kernels.speed_up(narrowed)
    shapes = _rows_out_of_the_last_layer(narrowed)
    batch = _batch(PACKED, left=True)
    _assert_same(_step(original, batch), _step(narrowed, batch))
    assert shapes == [(6, 1, 32)]


def test_lora_adapters_and_checkpointed_layers_compute_the_same() -> None:
    """LoRA wraps the key and value projections after the hooks are set; checkpointing
    runs the last layer again in the backward pass."""
    from peft import LoraConfig, get_peft_model

    original = _model("bert", "SequenceClassification")
    narrowed = copy.deepcopy(original)
    kernels.speed_up(narrowed)
    lora = LoraConfig(r=4, target_modules=["query", "key", "value"], lora_dropout=0.0)
    for batch in (_batch(PACKED), _batch(PADDED)):
        adapted = []
        for net in (original, narrowed):
            torch.manual_seed(1)
            net = get_peft_model(copy.deepcopy(net), lora)
            for name, p in net.named_parameters():  # lora_B starts at zero: make it count
                if "lora_B" in name:
                    nn.init.normal_(p, std=0.1)
            adapted.append(_step(net, batch))
        _assert_same(*adapted)
    checkpointed = copy.deepcopy(narrowed)
    checkpointed.activation_checkpointing_enable({"use_reentrant": False})
    for batch in (_batch(PACKED), _batch(PADDED)):
        _assert_same(_step(original, batch), _step(checkpointed, batch))


def test_bf16_stays_within_rounding() -> None:
    original = _model("bert", "SequenceClassification")
    narrowed = copy.deepcopy(original)
    kernels.speed_up(narrowed)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = _step(original, _batch(PACKED)), _step(narrowed, _batch(PACKED))
    _assert_same(a, b, tol=3e-2)
    assert first_token.is_narrowed(narrowed.bert.encoder.layer[-1])


def test_a_shared_encoder_stays_whole_while_any_of_its_heads_reads_every_token() -> None:
    from ft_cli.models.multitask import MultiTaskNet

    def shared(*heads: str) -> nn.Module:
        return MultiTaskNet({f"t{i}": _model("bert", head) for i, head in enumerate(heads)})

    mixed = shared("SequenceClassification", "TokenClassification")
    assert kernels.speed_up(mixed)["first_token"] == 0
    assert kernels.speed_up(shared("SequenceClassification", "MultipleChoice"))["first_token"] == 1
