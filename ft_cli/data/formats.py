"""Table file formats: how each one is checked, loaded, streamed and written.

`FORMATS` maps a `data.format` name to its `TableFormat`; training data, `ft eval
--file`, `ft predict` and `ft ensemble` reach files only through it. Nothing here
imports datasets or pyarrow until a file is read, so the config schema may list
the names. A new format is a class here, its line in `FORMATS`, and
configs/data/NAME.yaml.
"""

from __future__ import annotations

import csv
import itertools
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ft_cli.data import files
from ft_cli.errors import FtError

if TYPE_CHECKING:
    from ft_cli.config.schema import DataConfig

Rows = list[dict[str, Any]]
CHUNK_ROWS = 4096  # rows read (and predicted) at a time when a file streams


class TableFormat:
    """A file format of rows. The defaults: UTF-8 text that only the loader parses."""

    name = ""
    suffixes: tuple[str, ...] = ()  # files of this format by name (eval --file, predict)
    header_lines = 1  # lines before the first row (an empty file has no more)
    holds_lists = False  # a cell may hold a list (prediction columns of several values)
    streams = False  # ft predict reads it in chunks and writes it

    def check(self, path: Path, cfg: DataConfig, key: str) -> None:
        """The cheap pass that names a bad line before the loader sees it."""
        files.check_utf8(path, key)

    def load(self, path: str, cfg: DataConfig) -> Any:
        """The file as a `datasets.Dataset` (the loader's own exceptions pass through)."""
        import datasets

        builder, options = self.builder(cfg)
        return datasets.load_dataset(builder, data_files={"rows": path}, **options)["rows"]

    def builder(self, cfg: DataConfig) -> tuple[str, dict[str, Any]]:
        """The `datasets` builder that reads the format, and its options."""
        return self.name, {}

    def has_no_rows(self, path: Path) -> bool:
        with open(path, encoding="utf-8-sig", errors="replace") as handle:
            lines = [line for line in itertools.islice(handle, 3) if line.strip()]
        return len(lines) <= self.header_lines

    def count_rows(self, path: Path) -> int | None:
        """Rows in the file without parsing them (a progress bar's total); None: unknown."""
        return None

    def read_rows(self, path: Path, cfg: DataConfig) -> Iterator[Rows]:
        """The file's rows as dicts, CHUNK_ROWS at a time (formats that stream)."""
        raise TypeError(f"{self.name} files are read whole, not streamed")

    def writer(self, path: Path) -> RowWriter:
        """What writes rows of this format to `path` (formats that stream)."""
        raise TypeError(f"ft writes no {self.name} files")


class RowWriter(ABC):
    """Rows appended to one file; `close` flushes (where a full disk may fail)."""

    @abstractmethod
    def write(self, rows: Rows) -> None: ...

    @abstractmethod
    def close(self) -> None: ...


class Delimited(TableFormat):
    """csv / tsv: a header line, then a row a line (a quoted field may span lines)."""

    streams = True

    def __init__(self, name: str, delimiter: str, quoted: bool, suffixes: tuple[str, ...]):
        self.name, self.delimiter, self.quoted, self.suffixes = name, delimiter, quoted, suffixes

    def quotes_enclose(self, cfg: DataConfig) -> bool:
        """Whether double quotes enclose fields: csv's convention; TSV has none (GLUE's hold
        unbalanced quotes as text). `data.quoting` decides when it is not auto."""
        return self.quoted if cfg.quoting.value == "auto" else cfg.quoting.value == "quoted"

    def check(self, path: Path, cfg: DataConfig, key: str) -> None:
        files.check_delimited(path, self.delimiter, self.quotes_enclose(cfg), key)

    def builder(self, cfg: DataConfig) -> tuple[str, dict[str, Any]]:
        quoting = csv.QUOTE_MINIMAL if self.quotes_enclose(cfg) else csv.QUOTE_NONE
        # utf-8-sig drops a byte-order mark (GLUE's train.tsv starts with one).
        return "csv", {"encoding": "utf-8-sig", "sep": self.delimiter, "quoting": quoting}

    def read_rows(self, path: Path, cfg: DataConfig) -> Iterator[Rows]:
        quoting = csv.QUOTE_MINIMAL if self.quotes_enclose(cfg) else csv.QUOTE_NONE
        with open(path, encoding="utf-8-sig", newline="") as handle:
            yield from chunks(csv.DictReader(handle, delimiter=self.delimiter, quoting=quoting))

    def writer(self, path: Path) -> RowWriter:
        return _DelimitedWriter(path, self.delimiter)


class _DelimitedWriter(RowWriter):
    def __init__(self, path: Path, delimiter: str) -> None:
        self.handle = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115 (closed by close)
        self.delimiter = delimiter
        self.rows: csv.DictWriter | None = None

    def write(self, rows: Rows) -> None:
        if self.rows is None:
            self.rows = csv.DictWriter(self.handle, list(rows[0]), delimiter=self.delimiter)
            self.rows.writeheader()
        self.rows.writerows(rows)

    def close(self) -> None:
        self.handle.close()


class JsonLines(TableFormat):
    """JSON lines (an object a line; .json too, as the `datasets` json loader reads it)."""

    name = "json"
    suffixes = (".jsonl", ".json")
    header_lines = 0
    holds_lists = True
    streams = True

    def check(self, path: Path, cfg: DataConfig, key: str) -> None:
        files.check_json(path, key)

    def count_rows(self, path: Path) -> int | None:
        with open(path, "rb") as handle:
            return sum(1 for line in handle if line.strip())

    def read_rows(self, path: Path, cfg: DataConfig) -> Iterator[Rows]:
        with open(path, encoding="utf-8-sig") as handle:
            yield from chunks(json.loads(line) for line in handle if line.strip())

    def writer(self, path: Path) -> RowWriter:
        return _JsonWriter(path)


class _JsonWriter(RowWriter):
    def __init__(self, path: Path) -> None:
        self.handle = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed by close)

    def write(self, rows: Rows) -> None:
        for row in rows:
            self.handle.write(json.dumps(row, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self.handle.close()


class Parquet(TableFormat):
    name = "parquet"
    suffixes = (".parquet",)
    holds_lists = True
    streams = True

    def check(self, path: Path, cfg: DataConfig, key: str) -> None:
        files.check_parquet(path, key)

    def has_no_rows(self, path: Path) -> bool:
        return False  # a readable parquet file with no rows loads; the split check names it

    def count_rows(self, path: Path) -> int | None:
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows

    def read_rows(self, path: Path, cfg: DataConfig) -> Iterator[Rows]:
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK_ROWS):
            yield batch.to_pylist()

    def writer(self, path: Path) -> RowWriter:
        return _ParquetWriter(path)


class _ParquetWriter(RowWriter):
    def __init__(self, path: Path) -> None:
        self.path, self.file = path, None

    def write(self, rows: Rows) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows)
        if self.file is None:
            self.file = pq.ParquetWriter(self.path, table.schema)
        self.file.write_table(table.cast(self.file.schema))

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class Text(TableFormat):
    """Plain text: a document a line or a paragraph (`data.text_documents`)."""

    name = "text"
    header_lines = 0

    def builder(self, cfg: DataConfig) -> tuple[str, dict[str, Any]]:
        return "text", {"sample_by": cfg.text_documents.value, "encoding": "utf-8-sig"}


class Conll(TableFormat):
    """CoNLL: a word and its tag a line, a blank line between sentences."""

    name = "conll"
    suffixes = (".conll",)

    def load(self, path: str, cfg: DataConfig) -> Any:
        from ft_cli.tasks import tagging

        return tagging.conll_dataset(path, cfg.text_column, cfg.label_column)


class SquadJson(TableFormat):
    """The SQuAD JSON layout: articles of paragraphs of questions, read as a row per
    question (id, title, context, question, answers: {"text": [...], "answer_start":
    [...]}). SQuAD v2's unanswerable questions (`is_impossible`) have no answers."""

    name = "squad"
    header_lines = 0

    def check(self, path: Path, cfg: DataConfig, key: str) -> None:
        files.check_utf8(path, key)

    def load(self, path: str, cfg: DataConfig) -> Any:
        import datasets

        return datasets.Dataset.from_list(squad_rows(Path(path), "data.files"))

    def has_no_rows(self, path: Path) -> bool:
        return False  # squad_rows names an empty file itself


def squad_rows(path: Path, key: str) -> Rows:
    """A row per question of a SQuAD JSON file; one line naming the file if it is not one."""
    try:
        articles = json.loads(path.read_text(encoding="utf-8-sig"))["data"]
        rows = [
            {
                "id": str(question.get("id", f"{a}-{p}-{q}")),
                "title": article.get("title", ""),
                "context": paragraph["context"],
                "question": question["question"],
                "answers": {
                    "text": [answer["text"] for answer in _answers(question)],
                    "answer_start": [int(answer["answer_start"]) for answer in _answers(question)],
                },
            }
            for a, article in enumerate(articles)
            for p, paragraph in enumerate(article["paragraphs"])
            for q, question in enumerate(paragraph["qas"])
        ]
    except (ValueError, KeyError, TypeError) as err:
        why = f"no {err}" if isinstance(err, KeyError) else str(err).splitlines()[0]
        raise FtError(
            f'{key}: \'{path}\' is not SQuAD JSON ({why}); expected {{"data": [{{"paragraphs":'
            ' [{"context", "qas": [{"id", "question", "answers"}]}]}]}'
        ) from err
    if not rows:
        raise FtError(f"{key}: '{path}' holds no questions")
    return rows


def _answers(question: dict[str, Any]) -> list[dict[str, Any]]:
    return [] if question.get("is_impossible") else list(question.get("answers", []))


FORMATS: dict[str, TableFormat] = {
    "glue_tsv": Delimited("glue_tsv", "\t", False, ()),  # GLUE's files, named by data.path
    "csv": Delimited("csv", ",", True, (".csv",)),
    "tsv": Delimited("tsv", "\t", False, (".tsv",)),
    "json": JsonLines(),
    "parquet": Parquet(),
    "text": Text(),
    "conll": Conll(),
    "squad": SquadJson(),
}


def _every(table: TableFormat) -> bool:
    return True


def suffixes(test: Callable[[TableFormat], bool] = _every) -> dict[str, TableFormat]:
    """{file suffix: its format} of the formats `test` accepts."""
    return {s: f for f in FORMATS.values() if test(f) for s in f.suffixes}


def by_suffix(path: Path, key: str, test: Callable[[TableFormat], bool] = _every) -> TableFormat:
    """The format a file's name says (of those `test` accepts); one line if none does."""
    known = suffixes(test)
    found = known.get(path.suffix.lower())
    if found is None:
        raise FtError(f"{key} '{path}': not one of these file types: {', '.join(known)}")
    return found


def chunks(rows: Iterator[dict[str, Any]]) -> Iterator[Rows]:
    """`rows` in lists of CHUNK_ROWS."""
    while chunk := list(itertools.islice(rows, CHUNK_ROWS)):
        yield chunk
