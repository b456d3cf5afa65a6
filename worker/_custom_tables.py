"""The rows of a custom task's CSV or TSV file, each with as many fields as its header names.

A CSV is read as Python's csv module, pandas and spreadsheets write it: a field in double
quotes may hold commas, newlines and ``""`` for a quote. A TSV is read the same way with tabs
(pandas' ``to_csv(sep="\\t")`` quotes a text holding a tab or a quote) when the whole file
parses so; otherwise it is read as GLUE's TSVs are written, without quoting, every ``"`` being
text. A row whose field count is not the header's is refused, naming its line: it is the sign
of a separator inside an unquoted text, which would otherwise shift the label column.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

_SEPARATOR = {"csv": "comma", "tsv": "tab"}

#: A field quoted as a spreadsheet quotes one, with a doubled quote inside: in a file read
#: without quoting, it means the file's quoting broke somewhere.
_QUOTED = re.compile(r'^".*"".*"$', re.DOTALL)


class _Unreadable(ValueError):
    def __init__(self, path: Path, line: int, error: csv.Error) -> None:
        super().__init__(f"{path}:{line}: {error}")
        self.line = line


def table_records(
    path: Path, text: str, fmt: str, columns: Iterable[str]
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, column -> field) for each row of ``text`` (the file at ``path``) but
    blank ones; the line is the row's last where a quoted field spans several.

    Args:
        fmt: "csv" or "tsv".
        columns: The columns the task reads; one the header names twice is refused.

    Raises:
        ValueError: An empty file, a column named twice, a row with another field count than
            the header, or text the csv module cannot parse; the message names file and line.
    """
    rows, unquoted = _rows(path, text, fmt)
    if not rows or not rows[0][1]:
        raise ValueError(f"{path}: empty file; the first line must name the columns")
    header_line, header = rows[0][0], [h.strip() for h in rows[0][1]]
    for column in dict.fromkeys(columns):
        at = [str(i) for i, name in enumerate(header, start=1) if name == column]
        if len(at) > 1:
            raise ValueError(
                f"{path}:{header_line}: the header names column {column!r} {len(at)} times "
                f"(columns {', '.join(at)}); rename all but the one the task should read"
            )
    for line, row in rows[1:]:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) != len(header):
            raise ValueError(_field_count(path, line, fmt, row, header))
        if unquoted:
            _refuse_broken_quoting(path, line, row, unquoted)
        yield line, dict(zip(header, row, strict=True))


def _rows(path: Path, text: str, fmt: str) -> tuple[list[tuple[int, list[str]]], str]:
    """The file's rows with their lines, and for a TSV read without quoting why quoting did
    not parse ("" when it did, and for a CSV)."""
    if fmt == "csv":
        return _parse(path, csv.reader(io.StringIO(text))), ""
    try:  # quoted as pandas and spreadsheets write a TSV
        quoted = csv.reader(io.StringIO(text), delimiter="\t", strict=True)
        return _parse(path, quoted), ""
    except _Unreadable as e:  # as GLUE's TSVs: a '"' is text
        plain = csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
        why = f"a field of line {e.line} starts with '\"' and does not end with one at a tab"
        return _parse(path, plain), why


def _parse(path: Path, reader: Any) -> list[tuple[int, list[str]]]:
    out: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            out.append((reader.line_num, row))
    except csv.Error as e:
        raise _Unreadable(path, reader.line_num, e) from None
    return out


def _field_count(path: Path, line: int, fmt: str, row: list[str], header: list[str]) -> str:
    fields = repr(row) if len(repr(row)) <= 160 else repr(row)[:157] + "..."
    said = (
        f"{path}:{line}: {len(row)} fields where the header names {len(header)} "
        f"({', '.join(header)}): {fields}"
    )
    if len(row) < len(header):
        return f"{said}; every row needs a field for each column (an empty one may stay empty)"
    separator = _SEPARATOR[fmt]
    example = '"great, fantastic product"' if fmt == "csv" else '"a\\tb"'
    return (
        f"{said}; a {separator} inside a text splits it: put that field in double quotes "
        f'({example}, with "" for a quote inside), as pandas\' to_csv and spreadsheets do'
    )


def _refuse_broken_quoting(path: Path, line: int, row: list[str], why: str) -> None:
    for field in row:
        if _QUOTED.match(field):
            raise ValueError(
                f"{path}:{line}: field {field[:80]!r} is quoted as pandas and spreadsheets "
                f"quote one, but the file is not read with quoting because {why}; quote such "
                "fields throughout (a field that starts with '\"' must end with one) or none"
            )
