"""Exceptions shared by the whole pipeline.

`BadInputError` is the one the CLI turns into a one-line message and exit status 2:
its text always starts with the offending file, then the problem.
"""

from __future__ import annotations

from pathlib import Path


class BadInputError(Exception):
    """Input the pipeline cannot use: message names the file and the problem (CLI exits 2)."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = str(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)

    def __reduce__(self) -> tuple:
        # Worker processes send it back pickled; the default would call __init__ with the
        # formatted message alone and fail, breaking the whole process pool.
        return (type(self), (self.path, self.problem))


class ProcessingError(Exception):
    """A valid input on which an algorithm failed (CLI exits 1)."""


def short_error(exc: BaseException) -> str:
    """First line of an exception's message (its type name if empty), at most 160 chars:
    for one-line error reports of third-party failures."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]
