"""The tokenized-split cache: hits skip the tokenizer, any change misses, damage is survived."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import compose_spec, write_csv

from ft_cli.data import dataset as data
from ft_cli.data import token_cache
from ft_cli.models.model import load_tokenizer


@pytest.fixture
def cache(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("FT_CACHE_DIR", str(folder))
    return folder


def prepare(tmp_path: Path, texts: list[str], extra: tuple[str, ...] | list[str] = ()):
    rows = [{"text": t, "label": ["no", "yes"][i % 2]} for i, t in enumerate(texts)]
    train = write_csv(tmp_path / "train.csv", rows)
    source = [f"data.files.train={train}", "data.validation_fraction=0"]
    spec = compose_spec(["model=tiny_bert", "data=csv", *source, *extra])
    tokenizer = load_tokenizer(spec.model)
    return data.prepare(spec.data, spec.task, tokenizer, seed=0), tokenizer


TEXTS = [f"the lamp {i} is bright" for i in range(20)]


@pytest.mark.parametrize(
    "task",
    [
        [],
        ["task=mlm", "task.whole_word_mask=true"],
        # Long rows in windows: which row each window belongs to comes back too.
        ["data.max_length=6", "data.stride=1", "data.long_inputs=windows"],
    ],
)
def test_a_second_run_reads_the_cache_instead_of_tokenizing(
    tmp_path: Path, cache: Path, monkeypatch, task: list[str]
) -> None:
    first, _ = prepare(tmp_path, TEXTS, task)
    assert len(list(cache.glob("*.npz"))) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("tokenized again despite a cache entry")

    monkeypatch.setattr("transformers.PreTrainedTokenizerBase.__call__", refuse)
    second, _ = prepare(tmp_path, TEXTS, task)
    assert second.train.input_ids == first.train.input_ids
    assert second.train.token_type_ids == first.train.token_type_ids
    assert second.train.word_continues == first.train.word_continues
    assert second.train.labels == first.train.labels
    assert second.train.rows == first.train.rows


def test_changed_text_or_settings_miss_the_cache(tmp_path: Path, cache: Path) -> None:
    prepare(tmp_path, TEXTS)
    prepare(tmp_path, [*TEXTS[:-1], "a different last line"])
    prepare(tmp_path, TEXTS, ["data.max_length=8"])
    assert len(list(cache.glob("*.npz"))) == 3


def test_a_damaged_entry_is_recomputed(tmp_path: Path, cache: Path) -> None:
    first, _ = prepare(tmp_path, TEXTS)
    (entry,) = cache.glob("*.npz")
    entry.write_bytes(b"not an archive")
    second, _ = prepare(tmp_path, TEXTS)
    assert second.train.input_ids == first.train.input_ids
    assert entry.read_bytes() != b"not an archive"  # rewritten


def test_cache_off_writes_nothing(tmp_path: Path, cache: Path) -> None:
    prepare(tmp_path, TEXTS, ["data.cache=false"])
    assert not cache.exists()


def test_the_key_covers_the_tokenizer(tmp_path: Path) -> None:
    _, tokenizer = prepare(tmp_path, TEXTS)
    key = token_cache.cache_key(tokenizer, [TEXTS], "x")
    tokenizer.add_tokens(["brightness"])
    assert token_cache.cache_key(tokenizer, [TEXTS], "x") != key
