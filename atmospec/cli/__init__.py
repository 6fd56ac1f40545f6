"""Command-line interface: ``atmospec <command> ...``.

Exit status: 0 success, 2 bad input or usage (one line on stderr naming the file and the
problem, no traceback), 1 processing failure (one line too). With several inputs, a bad one
is reported and skipped; the others are still processed. Python warnings raised while a
command runs are counted and logged once each at ``INFO`` (`atmospec.warnings_log`): ``-v``
shows them; they never precede the one-line error.

One module per command family (`isr`, `calib`, `eo`, `imaging`, `spectro`, `night`,
`watch`, `simulate`, `gen3`), each with ``add_parsers(sub)``. The commands import the pipeline when
they run, not when the parser is built, so ``atmospec --help`` answers at once.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from atmospec import __version__
from atmospec.cli import calib, eo, gen3, imaging, isr, night, simulate, spectro, watch
from atmospec.cli._common import EXIT_BAD_INPUT, EXIT_FAILURE, Parser, UsageError
from atmospec.errors import BadInputError, short_error
from atmospec.memory import keep_freed_memory
from atmospec.warnings_log import collect_warnings

__all__ = ["build_parser", "main"]

log = logging.getLogger("atmospec")

#: What ``atmospec --help`` says first.
DESCRIPTION = ("Reduction pipeline for the Rubin Auxiliary Telescope (LATISS) and the LSST "
               "Camera: ``atmospec <command> ...``; ``atmospec <command> --help`` describes "
               "each command.")


def build_parser() -> Parser:
    """The ``atmospec`` argument parser."""
    parser = Parser(prog="atmospec", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"atmospec {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    isr.add_parsers(sub)
    calib.add_parsers(sub)
    eo.add_parsers(sub)
    imaging.add_parsers(sub)
    spectro.add_parsers(sub)
    night.add_parsers(sub)
    watch.add_parsers(sub)
    simulate.add_parsers(sub)
    # The Gen3 path: its commands say so when the extra is missing.
    gen3.add_butler_parser(sub)
    gen3.add_bps_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    keep_freed_memory()
    try:
        with collect_warnings():
            return args.func(args)
    except UsageError as exc:
        print(_one_line(str(exc)), file=sys.stderr)
        return EXIT_BAD_INPUT
    except BadInputError as exc:
        print(_one_line(f"atmospec: {exc}"), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("atmospec: interrupted", file=sys.stderr)
        return 130
    except (PermissionError, IsADirectoryError, NotADirectoryError, FileNotFoundError,
            FileExistsError) as exc:
        # A path the user gave that cannot be used (an output folder without write
        # permission, a file where a folder is needed): bad input, naming the path.
        log.debug("unusable path", exc_info=True)
        where = exc.filename if exc.filename is not None else "atmospec"
        print(_one_line(f"atmospec: {where}: {exc.strerror or short_error(exc)}"),
              file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:
        log.debug("processing failure", exc_info=True)
        print(_one_line(f"atmospec: processing failed: {type(exc).__name__}: "
                        f"{short_error(exc)}"), file=sys.stderr)
        return EXIT_FAILURE


def _one_line(text: str) -> str:
    """The first line of a message: what the CLI promises on stderr, whatever the text."""
    text = text.strip()
    return text.splitlines()[0] if text else text
