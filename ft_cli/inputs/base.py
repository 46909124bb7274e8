"""What every kind of input provides: its processor, its columns and config checks, the
request body `ft serve` accepts for it, and how the tools show it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ft_cli.config.schema import DataConfig, ModelConfig

Rows = list[dict[str, Any]]


class RequestError(Exception):
    """A request `ft serve` refuses: its HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Modality(ABC):
    """One kind of input. Subclasses override what differs; none of it imports torch at
    module level, so the config schema may ask a modality its checks."""

    name = ""
    noun = "inputs"  # how messages name several of them ("texts", "images")
    # ft serve: the JSON fields of a request ({name: type}), shown at /docs, and the
    # default body limit in bytes (None: the server's own).
    request_fields: dict[str, Any] = {}  # noqa: RUF012 (read only)
    body_limit: int | None = None
    own_formats: tuple[str, ...] = ()  # data formats only this modality's inputs come in
    names_files = False  # a row's input is a file path, relative to its table's folder
    augmented_by: str | None = None  # its own augmentation's settings (not the augment group)
    augment_keys: tuple[str, ...] = ()  # the augment group's keys that change its inputs

    @abstractmethod
    def processor(self, cfg: ModelConfig) -> Any:
        """What turns raw inputs into model inputs (a tokenizer, an image processor)."""

    @abstractmethod
    def same_inputs(self, processor: Any, other: Any) -> bool:
        """Whether two models' processors give the same inputs (a teacher reads the student's)."""

    def vocab_size(self, processor: Any) -> int:
        """Token ids the model must embed (0: the inputs are not token ids)."""
        return 0

    def check_model(self, cfg: ModelConfig, data: DataConfig) -> None:
        """Refuse data settings the model cannot read (before any data is loaded)."""
        return  # nothing to refuse unless a modality says so

    def check_data(self, data: DataConfig, task: str, data_key: str, kind_key: str) -> None:
        """Refuse data settings this input cannot come from (the config check, no files read).

        `task`: the task's name; `data_key`/`kind_key`: how messages name the data and
        task keys (`data.`, `task.kind=`, or a multi-task run's own)."""
        return  # nothing to refuse unless a modality says so

    def measure(self, value: Any) -> dict[str, float]:
        """What `ft data check` reports of one input file (an image's width and height, a
        clip's seconds); {} for inputs that are not files, or a file it cannot read."""
        return {}

    @abstractmethod
    def columns(self, data: DataConfig) -> dict[str, str]:
        """{config key: column} of the columns every row must have besides its label."""

    def check_column(self, first: Any, key: str, column: str, split: str, source: str) -> None:
        """Refuse a column whose values have the wrong shape (its first row's value)."""
        return  # nothing to refuse unless a modality says so

    @abstractmethod
    def request_columns(self, data: DataConfig) -> dict[str, str]:
        """{request role: column} of what a served request gives (shown at /info)."""

    @abstractmethod
    def request_rows(
        self, body: dict[str, Any], columns: dict[str, str], limits: Any, word_lists: bool
    ) -> tuple[Rows, bool]:
        """The rows a request asks about, and whether it asked about one (not a list).

        Raises `RequestError` for a body this input cannot come in."""

    def listed(self, source: Path) -> list[str] | None:
        """`ft predict --input` that is not a table: the inputs a folder or list names,
        relative to `source` (a folder) or its folder; None: tables only."""
        return None

    @abstractmethod
    def describe(self, data: DataConfig) -> str:
        """The model card's line about the data (after where it came from)."""

    def activation_bytes(self, ready: Any, batch: int) -> int | None:
        """fp32 bytes one training batch saves for backward, for `ft explain`
        (None: the transformer-layer estimate from the longest tokenized row)."""
        return None

    def mistakes_sheet(self, ready: Any, wrong: list[Any], path: Path, title: str) -> str | None:
        """`ft report`: a picture of the most confident mistakes (outcomes with .row,
        .truth, .guess, .confidence) written to `path`; its caption, or None if none."""
        return None


def kind_of(value: Any) -> str:
    """A JSON value's kind, as a request's error message names it."""
    names = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def counted_items(body: dict[str, Any], key: str, single: bool, limits: Any) -> list[Any]:
    """The items of a request's field: [the value] for a single one, else its non-empty list
    of at most `limits.max_items`."""
    items = [body[key]] if single else body[key]
    if not isinstance(items, list) or not items:
        raise RequestError(422, f"{key} must be a non-empty list")
    if len(items) > limits.max_items:
        raise RequestError(413, f"{key}: {len(items)} items; at most {limits.max_items} a request")
    return items


def check_file_column(
    first: Any, key: str, own_key: str, column: str, split: str, source: str, noun: str
) -> None:
    """Refuse a column of files (`own_key`) whose first value is no path, bytes or hub
    file cell; `noun`: what the files are ("image", "sound")."""
    from ft_cli.errors import FtError

    if key == own_key and not isinstance(first, (str, bytes, dict)):
        raise FtError(
            f"{key}: column '{column}' of the {split} data ({source}) holds"
            f" {type(first).__name__} values, not {noun} paths; set {key} to the column of"
            f" {noun} file paths"
        )


def base64_files(
    body: dict[str, Any], single: str, plural: str, hint: str, limits: Any
) -> tuple[list[tuple[str, bytes]], bool]:
    """The files a request sends as base64 in `single` (one) or `plural` (a list): each
    as (where it was in the request, its bytes), and whether it sent one."""
    import base64

    key = one_field(body, (single, plural), hint)
    found = []
    for index, item in enumerate(counted_items(body, key, key == single, limits)):
        where = key if key == single else f"{plural}.{index}"
        if not isinstance(item, str):
            raise RequestError(422, f"{where}: expected a base64 string, got {kind_of(item)}")
        try:
            found.append((where, base64.b64decode(item, validate=True)))
        except ValueError as err:
            raise RequestError(422, f"{where}: not base64 ({err})") from err
    return found, key == single


def listed_files(source: Path, extensions: tuple[str, ...], noun: str) -> list[str] | None:
    """`ft predict --input` of files: a folder (every file under it whose name ends in one
    of `extensions`, sorted by path, relative to it) or a .txt list of paths; None for
    anything else (a table)."""
    from ft_cli.data import files
    from ft_cli.errors import FtError
    from ft_cli.inputs import pictures

    if source.is_dir():
        skipped: list[str] = []
        found = [
            str(path.relative_to(source))
            for path in pictures.visible_files(source, skipped)
            if path.suffix.lower() in extensions
        ]
        pictures.warn_skipped(skipped, "--input")
    elif source.suffix.lower() == ".txt":
        files.require_file(source, "--input")
        lines = source.read_text(encoding="utf-8-sig").splitlines()
        found = [line.strip() for line in lines if line.strip()]
    else:
        return None
    if not found:
        raise FtError(f"--input '{source}' holds no {noun} ({', '.join(extensions)})")
    return found


def one_field(body: dict[str, Any], fields: tuple[str, ...], hint: str) -> str:
    """The one of `fields` a request gives; refuses none or several with `hint`."""
    given = [key for key in fields if body.get(key) is not None]
    if len(given) != 1:
        raise RequestError(422, f"send one of: {hint}")
    return given[0]
