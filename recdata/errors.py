"""Errors raised for bad user input; the CLI prints them on one line without a traceback."""

from __future__ import annotations

import re

# Control characters (NUL from a binary file, escape sequences) would garble a terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with control characters written as ``\\xNN`` escapes."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class DataError(ValueError):
    """A problem with input data or configuration that the user must fix.

    The message names the file, the row (when known) and the problem, on one line.
    """

    def __init__(self, message: str, *, path: object | None = None, row: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}"
            if row is not None:
                # Text files are addressed by line number (header = line 1), tables by row.
                text_file = str(path).endswith((".csv", ".tsv", ".txt", ".dat", ".yaml", ".yml", ".inter",
                                                 ".item", ".user"))
                where += f", {'line' if text_file else 'row'} {row}"
            where += ": "
        super().__init__(printable(f"{where}{message}"))
        self.path = path
        self.row = row
