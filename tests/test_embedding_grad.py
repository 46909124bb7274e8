"""A vocabulary embedding's gradient in last step's memory: the same gradients as the
lookup's own backward, and never a tensor someone else still holds."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ft_cli.hardware import embedding_grad, kernels


def _pair(padding_idx: int | None = 0) -> tuple[nn.Embedding, nn.Embedding]:
    torch.manual_seed(0)
    plain = nn.Embedding(3000, 384, padding_idx=padding_idx)  # 4.6 MB: large enough
    reused = embedding_grad.ReusedGradEmbedding.taking_over(copy.deepcopy(plain))
    return plain, reused


def _backward(table: nn.Module, seed: int) -> None:
    draw = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 3000, (16, 40), generator=draw)
    ids[:, -6:] = 0  # padding, and many repeats of one row
    grad = torch.randn(16, 40, 384, generator=draw)
    (table(ids) * grad).sum().backward()


@pytest.mark.parametrize("padding_idx", [0, None])
def test_the_gradient_is_the_lookups_own_and_reuses_last_steps_memory(padding_idx) -> None:
    plain, reused = _pair(padding_idx)
    memory = []
    for step in range(3):
        for table in (plain, reused):
            _backward(table, seed=step)
        assert torch.equal(reused.weight.grad, plain.weight.grad), step
        memory.append(reused.weight.grad.data_ptr())
        for table in (plain, reused):
            table.zero_grad(set_to_none=True)
    assert memory[1] == memory[2] == memory[0]  # adopted without a copy, then reused


def test_micro_batches_accumulate_as_before() -> None:
    plain, reused = _pair()
    for step in range(2):
        for seed in (step, step + 10):  # two backwards before the optimizer's step
            for table in (plain, reused):
                _backward(table, seed)
        assert torch.equal(reused.weight.grad, plain.weight.grad), step
        for table in (plain, reused):
            table.zero_grad(set_to_none=True)


def test_a_gradient_someone_kept_is_never_overwritten() -> None:
    plain, reused = _pair()
    _backward(reused, seed=0)
    kept = reused.weight.grad
    before = kept.clone()
    reused.zero_grad(set_to_none=True)
    _backward(reused, seed=1)
    assert torch.equal(kept, before)
    _backward(plain, seed=1)
    assert torch.equal(reused.weight.grad, plain.weight.grad)
    view = reused.weight.grad[:10]  # a view holds the memory as well
    reused.zero_grad(set_to_none=True)
    _backward(reused, seed=2)
    assert reused.weight.grad.data_ptr() != view.data_ptr()


def test_inference_and_frozen_tables_take_the_plain_lookup() -> None:
    plain, reused = _pair()
    ids = torch.randint(0, 3000, (4, 9))
    with torch.no_grad():
        assert torch.equal(reused(ids), plain(ids))
    assert reused(ids).grad_fn.name() != "EmbeddingBackward0"  # the reusing path
    reused.weight.requires_grad_(False)
    assert reused(ids).grad_fn is None


def test_only_large_plain_tables_are_taken_over() -> None:
    assert embedding_grad.takes_over(nn.Embedding(30522, 384))
    assert not embedding_grad.takes_over(nn.Embedding(512, 384))  # the heap serves it
    assert not embedding_grad.takes_over(nn.Embedding(30522, 384, max_norm=1.0))
    assert not embedding_grad.takes_over(nn.Embedding(30522, 384, sparse=True))
    assert not embedding_grad.takes_over(nn.Embedding(30522, 384, scale_grad_by_freq=True))


def _tiny(name: str) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from ft_cli.paths import resolve_path

    config = AutoConfig.from_pretrained(resolve_path(f"pkg:ft_cli/assets/{name}", "model"))
    for key in ("dropout_rate", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if hasattr(config, key):
            setattr(config, key, 0.0)
    torch.manual_seed(0)
    auto = AutoModelForSeq2SeqLM if name == "tiny_t5" else AutoModelForCausalLM
    return auto.from_config(config)


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_t5"])
def test_tied_and_shared_tables_keep_their_ties_and_gradients(monkeypatch, name) -> None:
    original = _tiny(name)
    table = original.get_input_embeddings().weight
    monkeypatch.setattr(embedding_grad, "MIN_BYTES", table.numel() * table.element_size())
    lookups = [m for m in original.modules() if type(m) is nn.Embedding and m.weight is table]
    swapped = copy.deepcopy(original)
    assert kernels.speed_up(swapped)["embedding_grad"] == len(lookups)  # T5: three modules
    table = swapped.get_input_embeddings()
    assert isinstance(table, embedding_grad.ReusedGradEmbedding)
    assert swapped.get_output_embeddings().weight is table.weight  # still tied
    if name == "tiny_t5":
        assert swapped.encoder.embed_tokens.weight is swapped.decoder.embed_tokens.weight
    assert list(swapped.state_dict()) == list(original.state_dict())
    vocab = original.config.vocab_size
    for step in range(3):
        ids = torch.randint(1, vocab, (3, 11), generator=torch.Generator().manual_seed(step))
        grads = []
        for net in (original, swapped):
            net.zero_grad(set_to_none=True)
            extra = {"decoder_input_ids": ids[:, :5].contiguous()} if name == "tiny_t5" else {}
            net.train()(
                input_ids=ids, labels=extra.get("decoder_input_ids", ids), **extra
            ).loss.backward()
            grads.append(net.get_input_embeddings().weight.grad)
        assert torch.allclose(grads[0], grads[1], atol=1e-6), step
