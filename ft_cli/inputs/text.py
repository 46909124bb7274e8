"""Text: one text (or a pair) per row, read through the model's tokenizer.

A served request gives `text` (with `text_pair` for a pair model), `texts`,
`pairs` or `rows`; a tagger's text may be a list of words.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from ft_cli.inputs.base import Modality, RequestError, Rows, counted_items, kind_of, one_field

if TYPE_CHECKING:
    from ft_cli.config.schema import DataConfig, ModelConfig

FIELDS = ("text", "texts", "pairs", "rows")


class Text(Modality):
    name = "text"
    noun = "text"
    request_fields = {  # noqa: RUF012 (read only)
        "text": str | list[str] | None,
        "text_pair": str | list[str] | None,
        "texts": list[Any] | None,
        "pairs": list[Any] | None,
        "rows": list[Any] | None,
    }
    augment_keys = (
        "token_mask",
        "token_delete",
        "token_swap",
        "span_cutoff",
        "embedding_noise",
        "mixup",
    )

    def processor(self, cfg: ModelConfig) -> Any:
        from ft_cli.models import model

        return model.load_tokenizer(cfg)

    def same_inputs(self, processor: Any, other: Any) -> bool:
        return processor.get_vocab() == other.get_vocab()

    def vocab_size(self, processor: Any) -> int:
        return len(processor)

    def check_model(self, cfg: ModelConfig, data: DataConfig) -> None:
        from ft_cli.models import model

        model.check_max_length(cfg, data.max_length)

    def columns(self, data: DataConfig) -> dict[str, str]:
        wanted = {"data.text_column": data.text_column}
        if data.text_pair_column is not None:
            wanted["data.text_pair_column"] = data.text_pair_column
        return wanted

    def request_columns(self, data: DataConfig) -> dict[str, str]:
        columns = {"text": data.text_column}
        if data.text_pair_column is not None:
            columns["text_pair"] = data.text_pair_column
        return columns

    def request_rows(
        self, body: dict[str, Any], columns: dict[str, str], limits: Any, word_lists: bool
    ) -> tuple[Rows, bool]:
        text = functools.partial(_text, words=word_lists)
        hint = "text (with text_pair for a pair model), texts, pairs or rows"
        key, pair = one_field(body, FIELDS, hint), "text_pair" in columns
        if body.get("text_pair") is not None and key != "text":
            raise RequestError(422, "text_pair goes with text; for a list send pairs")
        if key == "text":
            if pair and body.get("text_pair") is None:
                raise RequestError(422, "this model reads sentence pairs: send text and text_pair")
            if not pair and body.get("text_pair") is not None:
                raise RequestError(422, "this model reads single texts: drop text_pair")
            items = [[body["text"], body["text_pair"]] if pair else body["text"]]
        else:
            items = counted_items(body, key, False, limits)
        if key == "texts" and pair:
            raise RequestError(422, "this model reads sentence pairs: send pairs, [[a, b], ...]")
        if key == "pairs" and not pair:
            raise RequestError(422, "this model reads single texts: send texts")
        if key == "rows":
            rows = [_given_row(row, index, columns, text) for index, row in enumerate(items)]
        elif pair:
            rows = [
                _pair_row(item, f"{key}.{i}" if key != "text" else "text", columns, text)
                for i, item in enumerate(items)
            ]
        else:
            name = columns["text"]
            rows = [
                {name: text(item, f"{key}.{i}" if key != "text" else "text")}
                for i, item in enumerate(items)
            ]
        for index, row in enumerate(rows):
            for column in columns.values():
                if len(_plain(row[column])) > limits.max_chars:
                    where = key if key == "text" else f"{key}.{index}"
                    raise RequestError(413, f"{where}: longer than {limits.max_chars} characters")
        return rows, key == "text"

    def describe(self, data: DataConfig) -> str:
        pair = f" + `{data.text_pair_column}`" if data.text_pair_column else ""
        return f"text column `{data.text_column}`{pair}, max_length {data.max_length}"


def _text(value: Any, where: str, words: bool = False) -> Any:
    """A text (valid Unicode); a tagger (`words`) also takes a list of words."""
    if isinstance(value, str):
        _unicode(value, where)
        return value
    if words and isinstance(value, list) and value and all(isinstance(w, str) for w in value):
        for index, word in enumerate(value):
            _unicode(word, f"{where}.{index}")
        return value
    wanted = "a string or a list of words" if words else "a string"
    if isinstance(value, list) and not words:
        wanted += " (a list of words is for a token-classification model)"
    raise RequestError(422, f"{where}: expected {wanted}, got {kind_of(value)}")


def _unicode(value: str, where: str) -> None:
    """JSON may carry lone surrogates (\\ud800), which no tokenizer can read."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise RequestError(
            422, f"{where}: not valid Unicode (a lone surrogate at character {err.start})"
        ) from err


def _pair_row(item: Any, where: str, columns: dict[str, str], text: Any) -> dict[str, Any]:
    if not (isinstance(item, list) and len(item) == 2):
        raise RequestError(422, f"{where}: expected a pair [text, text_pair], got {kind_of(item)}")
    first, second = (text(v, f"{where}.{i}") for i, v in enumerate(item))
    return {columns["text"]: first, columns["text_pair"]: second}


def _given_row(row: Any, index: int, columns: dict[str, str], text: Any) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise RequestError(422, f"rows.{index}: expected an object, got {kind_of(row)}")
    for column in columns.values():
        if column not in row:
            raise RequestError(
                422, f"rows.{index}: no '{column}' (the model reads {', '.join(columns.values())})"
            )
        text(row[column], f"rows.{index}.{column}")
    return row


def _plain(value: Any) -> str:
    return " ".join(value) if isinstance(value, list) else value


MODALITY = Text()
