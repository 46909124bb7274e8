"""ft's CPU training paths: cheap dropout masks and matmul attention compute what PyTorch's do."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from ft_cli.hardware import kernels


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_mask_keeps_the_right_share(p) -> None:
    torch.manual_seed(0)
    mask = kernels.keep_mask(torch.Size([1000, 1001]), p, torch.device("cpu"))
    assert mask.dtype == torch.bool and mask.shape == (1000, 1001)
    kept = mask.float().mean().item()
    # ~1e6 draws: the standard error of the share is under 5e-4.
    assert abs(kept - (1 - p)) < 3e-3


def test_keep_mask_follows_the_torch_generator() -> None:
    shape = torch.Size([64, 129])  # not a multiple of four: the last word is cut
    torch.manual_seed(3)
    first = kernels.keep_mask(shape, 0.1, torch.device("cpu"))
    again = kernels.keep_mask(shape, 0.1, torch.device("cpu"))
    torch.manual_seed(3)
    assert torch.equal(first, kernels.keep_mask(shape, 0.1, torch.device("cpu")))
    assert not torch.equal(first, again)
    # Neighbouring draws are independent (no pattern within one 64-bit word).
    pairs = kernels.keep_mask(torch.Size([400_000]), 0.5, torch.device("cpu")).view(-1, 4).float()
    both = (pairs[:, 0] * pairs[:, 1]).mean().item()
    assert abs(both - 0.25) < 5e-3


def test_dropout_scales_what_it_keeps_and_its_gradient_matches() -> None:
    torch.manual_seed(1)
    x = torch.randn(256, 384, requires_grad=True)
    torch.manual_seed(2)
    out = kernels.dropout(x, 0.25)
    kept = out != 0
    assert torch.allclose(out[kept], x[kept] / 0.75)
    out.sum().backward()
    assert torch.allclose(x.grad, kept.float() / 0.75)
    assert kernels.dropout(x, 0.25, training=False) is x
    assert kernels.dropout(x, 0.0) is x
    # The expectation is kept: the mean over many draws approaches the input.
    big = torch.ones(2_000_000)
    assert abs(kernels.dropout(big, 0.1).mean().item() - 1.0) < 3e-3


def _sdpa_inputs(seed: int = 0, dtype=torch.float32):
    torch.manual_seed(seed)
    q, k, v = (torch.randn(3, 4, 10, 8, dtype=dtype, requires_grad=True) for _ in range(3))
    mask = torch.ones(3, 1, 10, 10, dtype=torch.bool)
    mask[0, ..., 7:] = False  # padded keys
    mask[2, ..., 4:] = False
    return q, k, v, mask


@pytest.mark.parametrize("masked", [True, False])
def test_matmul_attention_matches_sdpa_forward_and_backward(masked) -> None:
    q, k, v, mask = _sdpa_inputs()
    mask = mask if masked else None
    ours = kernels.attention_by_matmul(q, k, v, mask, 0.3, 0.0, True).transpose(1, 2)
    ours.square().sum().backward()
    mine = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    ref = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
    ref = ref.transpose(1, 2)
    ref.square().sum().backward()
    assert ours.shape == (3, 10, 4, 8)
    assert torch.allclose(ours, ref, atol=1e-5)
    for got, want in zip(mine, (q.grad, k.grad, v.grad), strict=True):
        assert torch.allclose(got, want, atol=1e-4)


def test_matmul_attention_drops_attention_weights_when_training() -> None:
    q, k, v, mask = _sdpa_inputs(dtype=torch.bfloat16)
    module = nn.Module().train()
    torch.manual_seed(5)
    dropped, _ = kernels.matmul_attention(module, q, k, v, mask, dropout=0.5)
    clean, _ = kernels.matmul_attention(module, q, k, v, mask, dropout=0.0)
    assert not torch.allclose(dropped, clean)
    module.eval()
    assert torch.allclose(kernels.matmul_attention(module, q, k, v, mask, dropout=0.5)[0], clean)


def test_attention_dropout_is_the_masked_weights_scaled_forward_and_backward() -> None:
    q, k, v, mask = _sdpa_inputs()
    torch.manual_seed(7)
    ours = kernels.attention_by_matmul(q, k, v, mask, 0.3, 0.25, True)
    ours.square().sum().backward()
    mine = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    torch.manual_seed(7)  # the same draw: the definition, op by op
    scores = (q @ k.transpose(-1, -2) * 0.3).masked_fill(~mask, torch.finfo(q.dtype).min)
    weights = scores.softmax(-1)
    keep = kernels.keep_mask(weights.shape, 0.25, weights.device)
    want = (weights * keep / 0.75) @ v
    want.square().sum().backward()
    assert torch.allclose(ours, want, atol=1e-6)
    for got, grad in zip(mine, (q.grad, k.grad, v.grad), strict=True):
        assert torch.allclose(got, grad, atol=1e-5)


# A BERT of two small layers (tests/test_unpadding.py builds its tagger from it too).
TINY_BERT = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
)


def _tiny_classifier(attn: str = "sdpa"):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(**TINY_BERT, num_labels=3, attn_implementation=attn)
    torch.manual_seed(0)
    return BertForSequenceClassification(config)


def _batch():
    torch.manual_seed(9)
    ids = torch.randint(5, 99, (4, 12))
    mask = torch.ones(4, 12, dtype=torch.long)
    mask[1, 8:] = 0
    mask[3, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 2, 1])}


def _loss_and_grads(net):
    net.zero_grad()
    loss = net(**_batch()).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in net.named_parameters()}


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_a_swapped_model_computes_what_the_original_does(tmp_path, attn) -> None:
    original = _tiny_classifier(attn)
    swapped = _tiny_classifier(attn)
    counts = kernels.speed_up(swapped)
    assert counts["attention"] == 1
    assert counts["dropout"] == sum(isinstance(m, nn.Dropout) for m in original.modules()) > 0
    assert all(type(m) is not nn.Dropout for m in swapped.modules())
    # Without dropout the step is the same computation: loss and every gradient.
    for net in (original, swapped):
        net.train()
        for m in net.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
        net.config.attention_probs_dropout_prob = 0.0
    for m in original.modules():  # the attention reads its probability from here
        if hasattr(m, "dropout") and isinstance(m.dropout, nn.Dropout):
            m.dropout.p = 0.0
    loss_a, grads_a = _loss_and_grads(original)
    loss_b, grads_b = _loss_and_grads(swapped)
    assert math.isclose(loss_a.item(), loss_b.item(), rel_tol=1e-5)
    for name, grad in grads_a.items():
        assert torch.allclose(grad, grads_b[name], atol=1e-5), name
    # Inference (no grad) agrees too, and the export names no ft attention.
    with torch.no_grad():
        logits = swapped.eval()(**_batch()).logits
        assert torch.allclose(logits, original.eval()(**_batch()).logits, atol=1e-5)
    swapped.save_pretrained(tmp_path)
    assert kernels.ATTENTION not in (tmp_path / "config.json").read_text()
    assert len(json.loads((tmp_path / "config.json").read_text())["id2label"]) == 3


def test_a_layer_normalised_feature_encoder_computes_what_the_original_does() -> None:
    from transformers import AutoConfig, AutoModelForCTC

    from ft_cli.paths import resolve_path

    config = AutoConfig.from_pretrained(resolve_path("pkg:ft_cli/assets/tiny_wav2vec2", "model"))
    assert config.feat_extract_norm == "layer"
    config.layerdrop, config.mask_time_prob = 0.0, 0.0  # the same computation on both sides
    torch.manual_seed(0)
    original = AutoModelForCTC.from_config(config)
    swapped = copy.deepcopy(original)
    assert kernels.speed_up(swapped)["activation"] == len(config.conv_dim)
    assert kernels.speed_up(swapped)["activation"] == 0  # never wrapped twice
    assert swapped.state_dict().keys() == original.state_dict().keys()
    for net in (original, swapped):
        for m in net.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
    clips = torch.randn(2, 4000)
    losses, grads = [], []
    for net in (original, swapped):
        net.train()
        out = net(input_values=clips).logits.square().mean()
        out.backward()
        losses.append(out.item())
        grads.append({n: p.grad for n, p in net.named_parameters() if p.grad is not None})
    assert math.isclose(losses[0], losses[1], rel_tol=1e-6)
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], atol=1e-6), name


def test_gpt2s_gelu_becomes_one_kernel_of_the_same_values() -> None:
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.activations import NewGELUActivation

    from ft_cli.paths import resolve_path

    config = AutoConfig.from_pretrained(resolve_path("pkg:ft_cli/assets/tiny_gpt2", "model"))
    config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.0
    torch.manual_seed(0)
    original = AutoModelForCausalLM.from_config(config)
    swapped = copy.deepcopy(original)
    assert kernels.speed_up(swapped)["gelu"] == config.n_layer
    assert not any(isinstance(m, NewGELUActivation) for m in swapped.modules())
    ids = torch.randint(1, config.vocab_size, (2, 12))
    losses, grads = [], []
    for net in (original, swapped):
        loss = net.train()(input_ids=ids, labels=ids).loss
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad for n, p in net.named_parameters()})
    assert math.isclose(losses[0], losses[1], rel_tol=1e-6)
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], atol=1e-6), name


def test_swapped_dropout_is_active_in_training_only() -> None:
    net = _tiny_classifier()
    kernels.speed_up(net)
    batch = _batch()
    torch.manual_seed(0)
    first = net.train()(**batch).logits
    second = net(**batch).logits
    assert not torch.allclose(first, second)  # a new mask each call
    with torch.no_grad():
        assert torch.equal(net.eval()(**batch).logits, net(**batch).logits)


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
def test_a_swapped_decoder_stays_causal_while_training(name: str) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    from ft_cli.paths import resolve_path

    config = AutoConfig.from_pretrained(resolve_path(f"pkg:ft_cli/assets/{name}", "model"))
    torch.manual_seed(0)
    net = AutoModelForCausalLM.from_config(config)
    assert kernels.speed_up(net)["attention"] == 1
    for module in net.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    net.train()  # the matmul path: gradients on, on the CPU
    ids = torch.randint(1, config.vocab_size, (2, 8))
    later = ids.clone()
    later[:, 6:] = 1  # only the last two tokens change
    early = net(input_ids=ids, use_cache=False).logits[:, :6]
    assert early.requires_grad
    assert torch.equal(early, net(input_ids=later, use_cache=False).logits[:, :6])


def _attention_case(name: str) -> nn.Module:
    """A model whose attention carries more than queries, keys and values: T5's relative
    position bias, grouped-query heads (two queries a key), Gemma 2's logit soft-capping."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        Gemma2Config,
        LlamaConfig,
    )

    from ft_cli.paths import resolve_path

    torch.manual_seed(0)
    small = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2)
    if name == "t5":
        config = AutoConfig.from_pretrained(resolve_path("pkg:ft_cli/assets/tiny_t5", "model"))
        config.dropout_rate = 0.0
        return AutoModelForSeq2SeqLM.from_config(config)
    if name == "gqa":
        config = LlamaConfig(**small, num_attention_heads=4, num_key_value_heads=2)
    else:
        capping = dict(head_dim=8, attn_logit_softcapping=5.0, query_pre_attn_scalar=8)
        config = Gemma2Config(**small, num_attention_heads=4, num_key_value_heads=2, **capping)
    return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("name", ["t5", "gqa", "softcap"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_with_bias_groups_or_capping_computes_the_originals(name, dtype) -> None:
    original = _attention_case(name)
    swapped = copy.deepcopy(original)
    assert kernels.speed_up(swapped)["attention"] >= 1
    ids = torch.randint(1, 100, (3, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0  # a padded row: the bias or the capping meets a mask
    batch = {"input_ids": ids, "attention_mask": mask, "labels": ids}
    if name == "t5":
        batch["labels"] = batch["decoder_input_ids"] = ids[:, :6].contiguous()
    losses, grads = [], []
    for net in (original, swapped):
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            loss = net.train()(**batch).loss  # bf16: ft's matmul path; fp32: SDPA
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad for n, p in net.named_parameters() if p.grad is not None})
    # bf16: either side is 5 to 7% off fp32's gradients in this tiny model (rounding).
    tolerance = 1e-5 if dtype == torch.float32 else 0.15
    assert math.isclose(losses[0], losses[1], rel_tol=min(tolerance, 1e-2)), losses
    assert grads[0].keys() == grads[1].keys()
    for key, grad in grads[0].items():
        off = (grad - grads[1][key]).norm() / (grad.norm() + 1e-12)
        assert off <= tolerance, (key, off.item())


@pytest.mark.parametrize("family", ["mpnet", "deberta-v2"])
def test_a_model_computing_its_own_attention_keeps_its_masks(family) -> None:
    # The implementation's name also sets the layout of the masks a model is handed:
    # MPNet adds its mask to the scores, so a boolean one would unmask the padding.
    from transformers import AutoModelForSequenceClassification, DebertaV2Config, MPNetConfig

    small = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
    config = (MPNetConfig if family == "mpnet" else DebertaV2Config)(**small, intermediate_size=64)
    torch.manual_seed(0)
    net = AutoModelForSequenceClassification.from_config(config)
    name = net.config._attn_implementation
    assert kernels.speed_up(net)["attention"] == 0
    assert net.config._attn_implementation == name
    for module in net.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    ids = torch.randint(3, 100, (2, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    other = ids.clone()
    other[0, 6:] = 7  # what the padding holds must not matter
    logits = [net.train()(input_ids=x, attention_mask=mask).logits for x in (ids, other)]
    assert logits[0].requires_grad  # the training path
    assert torch.allclose(logits[0], logits[1], atol=1e-6)
