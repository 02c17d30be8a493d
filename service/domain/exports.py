"""CSV cells that a spreadsheet will not run: formula-injection escaping for every export.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return is read as a formula by Excel, LibreOffice and Sheets (OWASP "CSV
Injection"); such a cell gets a leading apostrophe, which the spreadsheet
shows as text.  Numbers we write ourselves (amounts) are plain digits and a
dot, so they are never touched.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Final

FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_line(cells: Sequence[object]) -> str:
    """One CSV line (RFC 4180 quoting, CRLF) of escaped cells."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow([safe_cell(c) for c in cells])
    return buffer.getvalue()


def csv_lines(header: Sequence[str], rows: Iterable[Sequence[object]]) -> Iterable[str]:
    yield csv_line(header)
    for row in rows:
        yield csv_line(row)
