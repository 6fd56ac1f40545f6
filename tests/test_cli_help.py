"""``--help`` of every command: plain text (no reStructuredText markup), every option
explained, the defaults shown."""

from __future__ import annotations

import argparse

import pytest

from atmospec.cli import build_parser, main
from atmospec.cli._common import plain_text


def _parsers(parser: argparse.ArgumentParser, name: str = "atmospec"):
    """Every (sub)command's parser, with its command line."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                yield from _parsers(child, f"{name} {sub}")


COMMANDS = dict(_parsers(build_parser()))


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_is_plain_text_and_explains_every_option(command):
    parser = COMMANDS[command]
    text = parser.format_help()
    assert "`" not in text, text
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.dest == "help":
            continue
        assert action.help, f"{command} {action.option_strings or action.dest}: no help text"


def test_plain_text_drops_markup():
    assert plain_text("``atmospec <command> ...`` reads :class:`Exposure` and `x`") == (
        "atmospec <command> ... reads Exposure and x")


def test_defaults_are_shown(capsys):
    assert main(["simulate", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for shown in ("--n-bias N_BIAS bias frames (default: 5)", "(default: 20261123)",
                  "(default: SDSSr_65mm)", "(default: 25)"):
        assert shown in out
    # A flag, or an option already saying its default, gets no second one.
    assert "(default: False)" not in out
    assert "RICE tiles) (default" not in out and "none) (default" not in out


def test_calib_ptc_skip_bad_is_explained(capsys):
    assert main(["calib", "ptc", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--skip-bad log and exclude unusable inputs" in out
