"""What every command shares: exit statuses, the usage error, the parser class."""

from __future__ import annotations

import argparse

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILURE", "EXIT_OK", "Parser", "UsageError"]

#: Exit statuses of every command (DESIGN.md, "Contracts").
EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(Exception):
    """Raised instead of argparse's own exit so every usage error is one line, status 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors raise `UsageError` (one line, status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Raise `UsageError` with the program name and the message."""
        raise UsageError(f"{self.prog}: {message}")
