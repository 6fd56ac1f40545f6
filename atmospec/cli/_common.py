"""What every command shares: exit statuses, the usage error, the parser class."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from atmospec.errors import BadInputError

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILURE", "EXIT_OK", "HelpFormatter", "Parser",
           "UsageError", "output_folder", "plain_text"]

#: Exit statuses of every command (DESIGN.md, "Contracts").
EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(Exception):
    """Raised instead of argparse's own exit so every usage error is one line, status 2."""


#: reStructuredText inline markup of docstrings: ``literal``, `interpreted text`, and the
#: roles (:class:`x`) in front of the latter.
_RST_MARKUP = re.compile(r"(?::[a-z]+:)?``(.+?)``|(?::[a-z]+:)?`([^`]+?)`")


def plain_text(text: str) -> str:
    """``text`` without reStructuredText inline markup, as a terminal should show it.

    Parameters
    ----------
    text : str
        Help or description text, possibly taken from a docstring.

    Returns
    -------
    str
        The text with ````literal````, ```interpreted```` and ``:role:`x``` reduced to
        their content.
    """
    return _RST_MARKUP.sub(lambda m: m.group(1) if m.group(1) is not None else m.group(2),
                           text)


class HelpFormatter(argparse.HelpFormatter):
    """``--help`` as plain text, each option's default shown.

    Descriptions and help strings lose their reStructuredText markup (`plain_text`). An
    option whose default is a value (not None, not False) and whose help does not already
    speak of its default gets ``(default: VALUE)`` appended.
    """

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain_text(text))

    def _expand_help(self, action: argparse.Action) -> str:
        return plain_text(super()._expand_help(action))

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (action.option_strings and default is not None and default is not False
                and default is not argparse.SUPPRESS and default != []
                and "default" not in text.lower()):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors raise `UsageError` (one line, status 2), and whose
    help is plain text with the defaults shown (`HelpFormatter`)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

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
