"""``python -m atmospec`` runs the command-line interface."""

from atmospec.cli import main

raise SystemExit(main())
