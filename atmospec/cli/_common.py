"""What every command shares: exit statuses, the usage error, the parser class."""

from __future__ import annotations

import argparse
from pathlib import Path

from atmospec.errors import BadInputError

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILURE", "EXIT_OK", "Parser", "UsageError",
           "output_folder"]

#: Exit statuses of every command (DESIGN.md, "Contracts").
EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(Exception):
    """Raised instead of argparse's own exit so every usage error is one line, status 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors raise `UsageError` (one line, status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Raise `UsageError` with the program name and the message."""
        raise UsageError(f"{self.prog}: {message}")


def output_folder(path: str | Path) -> Path:
    """The output folder a command was given, created if needed.

    Checked once before any input is processed, so that an unusable folder is one line
    (exit 2) rather than one failure per input after all the work.

    Raises
    ------
    BadInputError
        If it exists and is not a folder, or cannot be created.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise BadInputError(path, "exists and is not a folder") from None
    except OSError as exc:
        raise BadInputError(path, f"cannot create the output folder ({exc.strerror})") from None
    return path
