"""Encoder layers on real tokens only (hardware/unpadding.py): the same loss, logits and
gradients as the padded batch, taken only where padding is worth removing."""

from __future__ import annotations

import copy

import pytest
import torch
from test_kernels import TINY_BERT
from torch import nn

from ft_cli.hardware import kernels, unpadding


def _tagger(**config):
    from transformers import BertConfig, BertForTokenClassification

    settings = dict(
        TINY_BERT, num_labels=5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    torch.manual_seed(0)
    return BertForTokenClassification(BertConfig(**{**settings, **config}))


def _batch(lengths: list[int]) -> dict[str, torch.Tensor]:
    torch.manual_seed(4)
    width = max(lengths)
    mask = (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).long()
    ids = torch.randint(5, 99, mask.shape) * mask
    labels = torch.randint(0, 5, mask.shape).masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.fixture
def packed_calls(monkeypatch) -> list[int]:
    """How many attention calls took the packed path (one per layer per forward)."""
    calls: list[int] = []
    real = unpadding.packed_attention

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(unpadding, "packed_attention", counted)
    return calls


@pytest.mark.parametrize("precision", [torch.float32, torch.bfloat16])
def test_packed_rows_compute_what_the_padded_batch_does(packed_calls, precision) -> None:
    original = _tagger()
    packed = copy.deepcopy(original)
    assert kernels.speed_up(packed)["unpadded"] == 1
    batch = _batch([12, 3, 7, 1, 12, 5])  # 50% padding
    outputs, grads = [], []
    for net in (original, packed):
        with torch.autocast("cpu", dtype=precision, enabled=precision != torch.float32):
            out = net.train()(**batch)
        out.loss.backward()
        outputs.append(out)
        grads.append({n: p.grad for n, p in net.named_parameters()})
    assert len(packed_calls) == 2  # both layers, in the one forward
    real = batch["attention_mask"].bool()
    # bf16 rounds the packed and the padded matrix products differently.
    tol = 1e-5 if precision == torch.float32 else 3e-2
    assert torch.allclose(outputs[0].loss, outputs[1].loss, atol=tol)
    assert torch.allclose(outputs[0].logits[real], outputs[1].logits[real], atol=tol)
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], atol=tol * 10), name


# A tiny configuration of each encoder family the packed path is for.
FAMILIES = {
    "bert": {},
    "roberta": {"pad_token_id": 1},
    "xlm-roberta": {"pad_token_id": 1},
    "camembert": {"pad_token_id": 1},
    "electra": {"embedding_size": 16},
    "ernie": {},
    "albert": {"embedding_size": 16, "classifier_dropout_prob": 0.0},
    "distilbert": {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64, "dropout": 0.0},
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_encoder_family_packs_and_computes_what_it_does_padded(packed_calls, family) -> None:
    from transformers import AutoConfig, AutoModelForTokenClassification

    settings = {**TINY_BERT, "num_labels": 5, "attention_probs_dropout_prob": 0.0}
    settings.update(hidden_dropout_prob=0.0, attention_dropout=0.0)
    config = AutoConfig.for_model(family, **{**settings, **FAMILIES[family]})
    torch.manual_seed(0)
    original = AutoModelForTokenClassification.from_config(config)
    packed = copy.deepcopy(original)
    assert kernels.speed_up(packed)["unpadded"] == 1
    batch = _batch([12, 3, 7, 1])
    losses, grads = [], []
    for net in (original, packed):
        loss = net.train()(**batch).loss
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad for n, p in net.named_parameters() if p.grad is not None})
    assert len(packed_calls) == 2
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], atol=1e-4), name


def test_a_batch_with_little_padding_keeps_the_padded_path(packed_calls) -> None:
    net = _tagger()
    kernels.speed_up(net)
    # 1 pad token in 48 (2%): under MIN_PADDING.
    assert unpadding.MIN_PADDING > 1 / 48
    net.train()(**_batch([12, 12, 12, 11])).loss.backward()
    assert packed_calls == []
    net(**_batch([12, 2, 12, 11])).loss.backward()  # 21%: packed
    assert len(packed_calls) == 2


def test_packing_changes_no_weight_name_and_hooks_once() -> None:
    original = _tagger()
    packed = copy.deepcopy(original)
    assert kernels.speed_up(packed)["unpadded"] == 1
    assert kernels.speed_up(packed)["unpadded"] == 0  # never hooked twice
    assert packed.state_dict().keys() == original.state_dict().keys()
    # Without ft's attention (compiled runs keep the model's own) nothing is hooked.
    assert unpadding.unpad_encoders(_tagger(), kernels.ATTENTION) == 0


def test_a_decoder_and_cross_attention_are_left_padded(packed_calls) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    from ft_cli.paths import resolve_path

    config = AutoConfig.from_pretrained(resolve_path("pkg:ft_cli/assets/tiny_gpt2", "model"))
    assert kernels.speed_up(AutoModelForCausalLM.from_config(config))["unpadded"] == 0
    decoder = _tagger(is_decoder=True)
    assert kernels.speed_up(decoder)["unpadded"] == 0


def test_inference_and_a_traced_forward_take_the_padded_path(packed_calls) -> None:
    original = _tagger().eval()
    net = copy.deepcopy(original)
    kernels.speed_up(net)
    batch = _batch([12, 3, 7, 1])
    exported = exported_logits(net, batch)
    with torch.no_grad():
        eager, own = net.eval()(**batch).logits, original(**batch).logits
    assert packed_calls == []
    # Every position, pads included, is the model's own: what exports are checked against.
    assert torch.allclose(eager, own, atol=1e-6)
    assert torch.allclose(exported, own, atol=1e-5)
    net(**batch)  # gradients on: a training forward packs, in eval mode too
    assert len(packed_calls) == 2


def exported_logits(net: nn.Module, batch: dict) -> torch.Tensor:
    """The logits of `net`'s torch.export program (the graph an ONNX export writes)."""

    class Logits(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, ids, mask):
            return self.net(input_ids=ids, attention_mask=mask).logits

    inputs = (batch["input_ids"], batch["attention_mask"])
    return torch.export.export(Logits().eval(), inputs).module()(*inputs)


def test_distillation_learns_nothing_at_pad_positions() -> None:
    """The student packs (its pad outputs are zeros), the teacher infers padded: per-token
    soft targets must not compare the two there. An identical teacher: zero loss."""
    from ft_cli.config.schema import StrategyConfig, StrategyKind
    from ft_cli.strategies.distill import DistillObjective
    from ft_cli.tasks.objective import TaggingObjective

    student = _tagger()
    teacher = copy.deepcopy(student).eval()
    kernels.speed_up(student)
    cfg = StrategyConfig(kind=StrategyKind.distill, distill_alpha=1.0, temperature=2.0)
    labels = ["O", "B-A", "I-A", "B-B", "I-B"]
    objective = DistillObjective(TaggingObjective(student, labels, 0, False, 0.0), teacher, cfg)
    objective.cache = None
    student.train()
    batch = {**_batch([12, 3, 7, 1]), "row_index": torch.arange(4)}
    batch["word_starts"] = batch["attention_mask"].bool()
    logits, _ = objective.outputs(dict(batch))
    assert not torch.allclose(logits, objective.teacher_logits)  # they differ at the pads
    assert objective.soft_loss(logits).item() == pytest.approx(0.0, abs=1e-6)
