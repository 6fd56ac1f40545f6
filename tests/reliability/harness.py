"""The reliability suite's harness (its fixtures are in conftest.py): one folder per case,
the CLI run in process as a terminal would show it, and the contract every damaged-input
case asserts.

A case's folder (`Case`) holds its inputs (``in/``) and an output folder two levels down
(``work/deep/out``), so that a name escaping the output folder (``../../x``) still lands
inside the case's folder, where the before/after snapshot sees it. The folder is removed
after the case (a damaged raw is a 70 MB copy; 150 of them must not pile up).

The contract (issue 16, docs: the CLI module's docstring):

- bad input: exit status 2, exactly one line on stderr (``atmospec: <path>: <problem>``)
  naming the file, no traceback, no warning, no output file for the refused input;
- a valid variant: exit status 0, nothing on stderr, the outputs written whole;
- always: nothing written outside the output folder, no ``*.tmp`` left anywhere.

What a terminal shows on stderr is more than ``sys.stderr`` in process: a Python warning
and a log record at WARNING or above are printed too. `Case.run` records both and counts
them as stderr lines (warnings hidden by Python's default filters are not shown on a
terminal, so they are not counted).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from atmospec.cli import main

#: Warning categories Python does not show by default outside ``__main__``.
_HIDDEN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning,
                    ResourceWarning)

#: SQLite's own transient files beside a database: a reader may create them.
_SQLITE_SIDECARS = ("-wal", "-shm", "-journal")

#: The fast ISR path of the raw cases: a damaged raw is refused before its pixels matter.
FAST = ("--steps", "overscan,gain,assemble")


@dataclass
class CliRun:
    """One in-process run of ``atmospec``: what a terminal would have shown."""

    argv: list[str]
    status: int
    stdout: str
    stderr: str
    warnings: list[str] = field(default_factory=list)
    """Python warnings a terminal shows (``file:line: Category: message``)."""
    log: list[str] = field(default_factory=list)
    """Log records at WARNING or above (the CLI prints them on stderr)."""
    seconds: float = 0.0

    @property
    def stderr_lines(self) -> list[str]:
        """Every non-blank line a terminal's stderr would show."""
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        return lines + self.warnings + self.log

    def describe(self) -> str:
        """The run, for an assertion message."""
        lines = self.stderr_lines
        shown = [repr(ln[:200]) for ln in lines[:3]]
        return (f"atmospec {' '.join(self.argv)} -> status {self.status} in "
                f"{self.seconds:.1f} s\n{len(lines)} stderr lines: {', '.join(shown)}"
                f"{' ...' if len(lines) > 3 else ''}\nstdout: {self.stdout[-300:]!r}")


Snapshot = dict[str, tuple[str, int, int]]


def tree_snapshot(root: Path, exclude: Sequence[Path] = ()) -> Snapshot:
    """Every entry below ``root`` (not following links): kind, size, modification time.

    Entries below an ``exclude`` folder are left out; so are SQLite's transient sidecar
    files (``-wal``, ``-shm``, ``-journal``), which a mere reader may create.
    """
    excluded = {p.resolve() for p in exclude}
    found: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if (here / d).resolve() not in excluded
                       or (here / d).is_symlink()]
        for name in dirnames + filenames:
            path = here / name
            if name.endswith(_SQLITE_SIDECARS):
                continue
            st = path.lstat()
            kind = ("link" if stat.S_ISLNK(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode)
                    else "file" if stat.S_ISREG(st.st_mode) else "special")
            size = st.st_size if kind == "file" else 0
            mtime = st.st_mtime_ns if kind in ("file", "link") else 0
            found[str(path.relative_to(root))] = (kind, size, mtime)
    return found


def tmp_files(root: Path) -> list[Path]:
    """Temporary files left below ``root`` (``*.tmp``, hidden ones included)."""
    return sorted(p for p in root.rglob("*.tmp"))


def output_files(folder: Path) -> list[Path]:
    """Files (not folders) below an output folder; none when it does not exist."""
    return sorted(p for p in folder.rglob("*") if not p.is_dir()) if folder.exists() else []


@dataclass
class Case:
    """The folder of one case and the CLI run in it, with the contract's assertions."""

    root: Path
    capsys: pytest.CaptureFixture
    caplog: pytest.LogCaptureFixture
    before: Snapshot | None = None

    @property
    def inputs(self) -> Path:
        """``in/``: the damaged files."""
        path = self.root / "in"
        path.mkdir(exist_ok=True)
        return path

    @property
    def out(self) -> Path:
        """The output folder, ``work/deep/out`` (not created: the command must)."""
        return self.root / "work" / "deep" / "out"

    def snapshot(self, output: Path | None = None) -> Snapshot:
        """Everything in the case's folder outside the output folder."""
        return tree_snapshot(self.root, [output or self.out])

    def run(self, *argv: str | Path, output: Path | None = None) -> CliRun:
        """Run ``atmospec ARGV`` in process, from ``work/``; remember the tree outside the
        output folder (``output``, default `out`) before the run for `assert_refused` and
        `assert_accepted`."""
        args = [str(a) for a in argv]
        # The output folder's parent exists: a command creates its output folder only.
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.before = self.snapshot(output)
        self.capsys.readouterr()
        self.caplog.clear()
        cwd = Path.cwd()
        os.chdir(self.root / "work")
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                status = main(args)
        finally:
            os.chdir(cwd)
        seconds = time.perf_counter() - t0
        out, err = self.capsys.readouterr()
        shown = [f"{Path(w.filename).name}:{w.lineno}: {w.category.__name__}: {w.message}"
                 for w in caught if not issubclass(w.category, _HIDDEN_WARNINGS)]
        log = [f"{r.levelname} {r.name}: {r.getMessage()}" for r in self.caplog.records
               if r.levelno >= logging.WARNING]
        return CliRun(args, status, out, err, shown, log, seconds)

    def assert_clean(self, run: CliRun, output: Path | None = None) -> None:
        """No temporary file anywhere, nothing changed outside the output folder."""
        assert not tmp_files(self.root), f"temporary files left: {tmp_files(self.root)}"
        after = self.snapshot(output)
        changed = {k: (self.before or {}).get(k) for k in set(after) ^ set(self.before or {})}
        changed.update({k: v for k, v in after.items()
                        if (self.before or {}).get(k, v) != v})
        assert not changed, f"written outside the output folder: {sorted(changed)}\n" \
                            + run.describe()

    def assert_refused(self, run: CliRun, names: Sequence[str | tuple[str, ...]],
                       output: Path | None = None) -> None:
        """Bad input: status 2, one stderr line ``atmospec: ...`` holding every one of
        ``names`` (the file; a tuple: any one of its names), no traceback, no warning, no
        output file, nothing else written, no temporary file."""
        output = output or self.out
        lines = run.stderr_lines
        assert run.status == 2, run.describe()
        assert "Traceback" not in run.stderr + run.stdout, run.describe()
        assert len(lines) == 1, run.describe()
        assert lines[0].startswith("atmospec"), run.describe()
        assert "Warning" not in lines[0], run.describe()
        for name in names:
            either = name if isinstance(name, tuple) else (name,)
            assert any(n in lines[0] for n in either), \
                f"{name!r} not in the message\n" + run.describe()
        assert output_files(output) == [], run.describe()
        self.assert_clean(run, output)

    def assert_accepted(self, run: CliRun, expected: Sequence[str],
                        output: Path | None = None) -> None:
        """Valid input: status 0, nothing on stderr, the ``expected`` files (names in the
        output folder) written, nothing else outside it, no temporary file."""
        output = output or self.out
        assert run.status == 0, run.describe()
        assert run.stderr_lines == [], run.describe()
        names = {p.relative_to(output).as_posix() for p in output_files(output)}
        assert set(expected) <= names, f"missing outputs {set(expected) - names}\n" \
                                       + run.describe()
        self.assert_clean(run, output)


def remove_tree(root: Path) -> None:
    """Remove a case folder, whatever the case left in it (read-only files included)."""
    for dirpath, dirnames, _ in os.walk(root):
        for d in dirnames:
            p = Path(dirpath) / d
            if not p.is_symlink():
                p.chmod(0o755)
    shutil.rmtree(root, ignore_errors=True)


# -- reference outputs --------------------------------------------------------------------

@dataclass(frozen=True)
class Control:
    """The undamaged template raw through the fast ISR path: its OBSID and post-ISR image,
    the truth a valid variant (compressed, reordered, renamed) must reproduce."""

    obs_id: str
    image: np.ndarray
    variance: np.ndarray

    @property
    def outputs(self) -> tuple[str, str]:
        """The names the fast path writes for it."""
        return f"{self.obs_id}_postisr.fits", f"{self.obs_id}_isrstats.json"

    def assert_same(self, postisr: Path) -> None:
        """``postisr`` holds the control's pixels exactly."""
        from atmospec.exposure import Exposure

        exp = Exposure.read(postisr)
        np.testing.assert_array_equal(exp.image, self.image, err_msg=str(postisr))
        np.testing.assert_array_equal(exp.variance, self.variance, err_msg=str(postisr))


