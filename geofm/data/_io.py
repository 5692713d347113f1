"""Shared low-level readers for the dataset loaders: strict UTF-8, gzip, line errors.

Every error raised here is a `DataFormatError` (a ValueError) whose message
starts with `path:line:` so a user can jump straight to the bad line.
"""

from __future__ import annotations

import gzip
import logging
import warnings
import zlib
from pathlib import Path

from geofm.errors import UserError

log = logging.getLogger("geofm.data")


class DataFormatError(UserError, ValueError):
    """A dataset file is malformed; `path` and `line` (1-based, or None) locate it."""

    def __init__(self, path: str | Path, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class DataWarning(UserWarning):
    """Something in a dataset was dropped or ignored (the message gives the count)."""


def warn(message: str) -> None:
    """Emit a DataWarning and log it, so both test code and CLI users see it."""
    log.warning(message)
    warnings.warn(message, DataWarning, stacklevel=3)


def read_bytes(path: str | Path) -> bytes:
    """File contents, transparently gunzipped when the name ends in `.gz`."""
    path = Path(path)
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DataFormatError(path, None, f"corrupt or truncated gzip file ({err})") from err


def decode_utf8(data: bytes, path: str | Path) -> str:
    """Strict UTF-8 decode; on failure name the line and column of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        bad = data[err.start : err.start + 1].hex()
        raise DataFormatError(path, line, f"not valid UTF-8 (byte 0x{bad} at column {col})") from None


def read_text(path: str | Path) -> str:
    """Whole file as str (UTF-8, `.gz` aware), a leading BOM dropped, CRLF normalised to LF."""
    text = decode_utf8(read_bytes(path), path).removeprefix("\ufeff")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    return text


def split_lines(text: str) -> list[str]:
    """Lines of `text` without their terminators; a final newline does not add an empty line, and
    blank lines (spaces and CRs only: a TAB is a field separator) at the end, an editor's extra
    newlines, are dropped. Line i of the result is line i + 1 of the file."""
    lines = text.split("\n")
    while lines and not lines[-1].strip(" \r"):
        lines.pop()
    return lines


def split_body(text: str) -> tuple[list[str], str]:
    """(`split_lines(text)`, those lines joined, each ending in a newline): the fast-path parsers
    count separators in the body, which must hold exactly the lines."""
    lines = split_lines(text)
    body = text if text.endswith("\n") else text + "\n"
    if body.count("\n") != len(lines):  # trailing blank lines were dropped
        body = "\n".join(lines) + ("\n" if lines else "")
    return lines, body


def read_tsv_pairs(path: str | Path, *, what: str = "id<TAB>text") -> list[tuple[str, str]]:
    """Parse an `id<TAB>text` file; the text may itself contain no further TAB-split.

    Returns [(id, text)] in file order. Raises DataFormatError naming the line
    when a line has no TAB or an empty id.
    """
    out: list[tuple[str, str]] = []
    for i, line in enumerate(split_lines(read_text(path)), start=1):
        key, sep, value = line.partition("\t")
        if not sep or not key:
            raise DataFormatError(path, i, f"expected `{what}`, got {line[:60]!r}")
        out.append((key, value))
    return out
