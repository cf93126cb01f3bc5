"""Errors raised for bad user input; the CLI prints them on one line without a traceback."""

from __future__ import annotations


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
        super().__init__(f"{where}{message}")
        self.path = path
        self.row = row
