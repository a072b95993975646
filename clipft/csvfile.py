"""Catalogue CSV files as users have them: any common separator, titles with unquoted commas
(Kaggle's ``styles.csv``), quoted titles over several lines, blank lines.

Every frame read here is indexed by the CSV line on which each record starts (the header is
line 1), so that every later message can name the line a user would open. Files with one
record per line go through pandas' C parser; files with quoted line breaks or blank lines, or
with malformed lines, through the ``csv`` module, which knows where each record starts.
"""
from __future__ import annotations

import csv
import functools
import io
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd

log = logging.getLogger(__name__)
SEPARATORS = (",", "\t", ";", "|")
_TAB_SUFFIXES = (".tsv", ".tab")


class CsvError(ValueError):
    """A CSV file that cannot be read; the message names the file and its lines."""


@dataclass(frozen=True)
class MalformedLine:
    line: int
    fields: int
    expected: int

    def describe(self) -> str:
        return f"line {self.line}: {self.fields} fields where the header has {self.expected}"


def check_regular_file(source: Path) -> None:
    """Only a regular file is a catalogue: opening a FIFO for reading blocks until something
    writes to it, and a device such as /dev/zero never ends. Checked without opening it; a
    missing file raises FileNotFoundError as ``open`` would."""
    mode = os.stat(source).st_mode
    if stat.S_ISREG(mode):
        return
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
             (stat.S_ISDIR, "a folder"), (stat.S_ISSOCK, "a socket"))
    kind = next((name for test, name in kinds if test(mode)), "not a file")
    raise CsvError(f"{source}: not a regular file ({kind}); give a CSV file")


def _first_line(source: Path) -> str:
    check_regular_file(source)  # every read of a catalogue opens it here first
    with open(source, encoding="utf-8-sig", newline="") as f:
        return f.readline()


def detect_separator(source: Path) -> str:
    """Tab for ``.tsv``/``.tab`` files; otherwise the separator that splits the header into
    the most columns (comma when none does)."""
    if source.suffix.lower() in _TAB_SUFFIXES:
        return "\t"
    header = _first_line(source)
    counts = {sep: header.count(sep) for sep in SEPARATORS}
    best = max(SEPARATORS, key=lambda sep: counts[sep])
    return best if counts[best] else ","


def _one_record_per_line(source: Path) -> bool:
    """Each record is exactly one line: no blank line, and every line holds an even number of
    quotes (a quoted line break leaves an odd number on the line where it opens)."""
    stat = source.stat()
    return _scan_lines(str(source.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _scan_lines(path: str, size: int, mtime_ns: int) -> bool:
    # keyed by size and time too: a chunked run reads its catalogue twice, an edited file is new
    with open(path, "rb") as f:
        return not any(line.count(b'"') % 2 or not line.strip(b"\r\n") for line in f)


def _fast_frames(source: Path, sep: str, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    # only an empty field is missing: "NA" or "None" may be a catalogue's real value
    reader = pd.read_csv(source, dtype=str, sep=sep, chunksize=chunk_rows, encoding="utf-8-sig",
                         keep_default_na=False, na_values=[""])
    for frame in [reader] if chunk_rows is None else reader:
        frame.index = frame.index + 2
        yield frame


def _records(source: Path, sep: str) -> Iterator[tuple[int, list[str]]]:
    """(line where the record starts, fields) for every non-blank record after the header."""
    with open(source, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=sep)
        next(reader, None)
        start = reader.line_num + 1
        for fields in reader:
            if fields:
                yield start, fields
            start = reader.line_num + 1


@dataclass
class _Fixer:
    """Makes every record as long as the header. Short records get missing trailing fields (as
    pandas reads them); long ones are repaired when the last column is free text, where the
    extra fields can only be unquoted separators of that text, and set aside otherwise."""

    header: list[str]
    sep: str
    repair_last: bool
    repaired: list[MalformedLine]
    malformed: list[MalformedLine]

    def __call__(self, line: int, fields: list[str]) -> list[str | None] | None:
        expected = len(self.header)
        if len(fields) > expected:
            bad = MalformedLine(line, len(fields), expected)
            if not self.repair_last:
                self.malformed.append(bad)
                return None
            self.repaired.append(bad)
            fields = fields[:expected - 1] + [self.sep.join(fields[expected - 1:])]
        return [field or None for field in fields] + [None] * (expected - len(fields))


def _careful_frames(source: Path, sep: str, chunk_rows: int | None, header: list[str],
                    fixer: _Fixer, skip_rows: int = 0) -> Iterator[pd.DataFrame]:
    lines, rows = [], []
    for count, (line, fields) in enumerate(_records(source, sep)):
        fields = fixer(line, fields)
        if count < skip_rows or fields is None:
            continue
        lines.append(line)
        rows.append(fields)
        if chunk_rows is not None and len(rows) == chunk_rows:
            yield pd.DataFrame(rows, columns=header, index=lines)
            lines, rows = [], []
    if rows or chunk_rows is None:
        yield pd.DataFrame(rows, columns=header, index=lines, dtype=object)


def read_header(source: Path, sep: str | None = None) -> list[str]:
    """The column names; a header that names a column twice is an error."""
    sep = sep or detect_separator(source)
    header = next(csv.reader(io.StringIO(_first_line(source)), delimiter=sep), [])
    if not header:
        raise CsvError(f"{source}: the file is empty (no header line)")
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise CsvError(f"{source}: column(s) {', '.join(duplicated)} appear more than once in the header")
    return header


def read_csv_frames(source: str | Path, chunk_rows: int | None = None, sep: str | None = None,
                    skip_bad: bool = False, text_columns: tuple[str, ...] = ()) -> Iterator[pd.DataFrame]:
    """The CSV as frames of string columns (one frame, or frames of ``chunk_rows`` records),
    indexed by CSV line. A record with more fields than the header is repaired when the last
    column is free text (in ``text_columns``): the extra fields are commas of that text. Other
    malformed records stop the read with every one listed, or are skipped (and logged) with
    ``skip_bad``, after the last frame."""
    source = Path(source)
    sep = sep or detect_separator(source)
    header = read_header(source, sep)
    fixer = _Fixer(header, sep, header[-1] in text_columns, [], [])
    done = 0
    try:
        if _one_record_per_line(source):
            for frame in _fast_frames(source, sep, chunk_rows):
                done += len(frame)
                yield frame
            return
    except pd.errors.ParserError:
        pass  # a malformed line: the csv module reads on from the first record not yet returned
    yield from _careful_frames(source, sep, chunk_rows, header, fixer, skip_rows=done)
    _report(source, fixer, skip_bad)


def _report(source: Path, fixer: _Fixer, skip_bad: bool, show: int = 10) -> None:
    if fixer.repaired:
        log.warning("%s: %d line(s) had unquoted separators in the last column '%s', kept as part of it "
                    "(first: %s)", source, len(fixer.repaired), fixer.header[-1], fixer.repaired[0].describe())
    if not fixer.malformed:
        return
    listed = "\n  ".join(bad.describe() for bad in fixer.malformed[:show])
    more = f"\n  ... and {len(fixer.malformed) - show} more" if len(fixer.malformed) > show else ""
    message = f"{source}: {len(fixer.malformed)} malformed line(s):\n  {listed}{more}"
    if not skip_bad:
        raise CsvError(f"{message}\nFix them (quote fields that contain the separator), or pass --skip-bad "
                       f"to skip these lines.")
    log.warning("%s\nskipped (--skip-bad)", message)
