"""Check data files as their users wrote them, and name the cause when one cannot be read.

The `datasets` loaders report a bad file as "An error occurred while generating
the dataset", and a row with one tab too many silently shifts its columns. A
cheap pass with the standard library first finds the line and the cause: not
UTF-8, a row with the wrong number of fields, a line that is not JSON, a
folder given for a file.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from ft_cli.errors import FtError

# Fields in a row of text data can be long: lift the csv module's 128 KiB cap.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def require_file(path: str | Path, key: str) -> Path:
    """The path, once it is known to be a file; a folder or a missing path fails by key."""
    target = Path(path)
    if target.is_dir():
        raise FtError(f"{key}: '{target}' is a folder, not a file; name a file inside it")
    if not target.is_file():
        raise FtError(f"{key}: file '{target}' does not exist")
    return target


def check_utf8(path: Path, key: str) -> None:
    """Fail on the first line that is not UTF-8, naming it."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                byte = raw[err.start]
                raise FtError(
                    f"{key}: line {number} of '{path}' is not UTF-8 (byte 0x{byte:02x} at column"
                    f" {err.start + 1}); save the file as UTF-8"
                ) from err


def check_delimited(path: Path, delimiter: str, quoted: bool, key: str) -> None:
    """Every row has as many fields as the header (an extra tab would shift the columns)."""
    check_utf8(path, key)
    quoting = csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
    name = "tab" if delimiter == "\t" else repr(delimiter)
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting, strict=quoted)
        try:
            header = next(reader, None)
            if header is None:
                return
            _unique_columns(header, path, key)
            for row in reader:
                if not row:
                    continue  # a blank line: the loaders skip it too
                if len(row) != len(header):
                    hint = _field_hint(len(row), len(header), name, quoted)
                    raise FtError(
                        f"{key}: line {reader.line_num} of '{path}' has {len(row)} fields, the"
                        f" header has {len(header)}; {hint}"
                    )
        except csv.Error as err:
            raise FtError(
                f"{key}: line {reader.line_num} of '{path}' cannot be parsed ({err}); if double"
                " quotes in it are text, set data.quoting=none"
            ) from err


def _unique_columns(names: list[str], path: Path, key: str) -> None:
    """A second column of the same name would be read in place of the first, silently."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise FtError(
                f"{key}: '{path}' has two columns named '{name}'; rename one (columns are read"
                " by name)"
            )
        seen.add(name)


def _field_hint(found: int, expected: int, name: str, quoted: bool) -> str:
    if found < expected and name != "tab":
        return "is the file tab-separated? use data=tsv (or data.format=tsv)"
    if found < expected:
        return "is the file comma-separated? use data=csv (or data.format=csv)"
    if quoted:
        return f'a {name} inside a text field must be quoted ("...")'
    return (
        f"a {name} inside a text field splits it; remove it, or quote such fields and set"
        " data.quoting=quoted"
    )


def check_json(path: Path, key: str) -> None:
    """JSON Lines (an object per line) or one JSON array; fail naming the bad line."""
    check_utf8(path, key)
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            json.loads(text)
        except json.JSONDecodeError as err:
            raise FtError(
                f"{key}: '{path}' is not valid JSON at line {err.lineno} ({err.msg})"
            ) from err
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise FtError(
                f"{key}: line {number} of '{path}' is not valid JSON ({err.msg}); write one"
                ' object per line ({"text": ..., "label": ...})'
            ) from err
        if not isinstance(value, dict):
            raise FtError(
                f"{key}: line {number} of '{path}' is a JSON {type(value).__name__}, not an"
                ' object; write one object per line ({"text": ..., "label": ...})'
            )


def check_parquet(path: Path, key: str) -> None:
    import pyarrow.parquet as pq

    try:
        names = pq.ParquetFile(path).schema_arrow.names
    except Exception as err:
        raise FtError(f"{key}: '{path}' is not a parquet file ({_first_line(err)})") from err
    _unique_columns(names, path, key)


def root_cause(err: BaseException) -> str:
    """The innermost cause's first line: what the loader's wrapper message hides."""
    seen = err
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    return _first_line(seen)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
