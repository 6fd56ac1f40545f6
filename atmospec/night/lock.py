"""One night per repository at a time: an advisory lock on ``REPO/night/night.lock``.

Two runs on one repository would build every product and process every exposure twice and
write the same outputs at once. The night runner holds an exclusive `fcntl.flock` on the
lock file for the whole run, with its pid, host and start time written inside, so that a
second run can say who holds it. The kernel releases the lock when the holder's process
ends, however it ends (SIGKILL, a crash): a lock file left by a dead run never blocks the
next one. The file itself is never removed (a run could lock a file another is removing).

``flock`` is advisory and per host: on a network file system shared by several hosts it
may not keep apart two runs started on different hosts.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from atmospec.errors import BadInputError
from atmospec.layout import NIGHT_LOCK_FILE

__all__ = ["LockHolder", "night_lock", "not_writable"]

#: Errors that mean the repository cannot be written (rather than anything else going wrong).
_NOT_WRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


@dataclass(frozen=True)
class LockHolder:
    """The run holding a repository's night lock."""

    pid: int
    """Process id of the run."""
    host: str
    """Host it runs on."""
    started: str
    """When it took the lock (UTC, ISO 8601, seconds)."""

    def describe(self) -> str:
        """``pid 1234 on HOST, started 2025-03-02T01:00:00+00:00``."""
        return f"pid {self.pid} on {self.host}, started {self.started}"


def not_writable(repo: str | os.PathLike[str], exc: OSError) -> BadInputError | None:
    """The one-line error for a repository that cannot be written, if ``exc`` says so."""
    if exc.errno not in _NOT_WRITABLE:
        return None
    return BadInputError(repo, f"repository not writable ({exc.strerror}); atmospec night "
                               "needs to write its index and outputs there")


@contextmanager
def night_lock(repo: str | os.PathLike[str]) -> Iterator[LockHolder]:
    """Hold the repository's night lock for the duration of the block.

    Parameters
    ----------
    repo : path
        Repository (``REPO/night/`` is created if needed).

    Yields
    ------
    LockHolder
        This process, as written in the lock file.

    Raises
    ------
    BadInputError
        Another live run holds the lock (the message names the lock file and that run's
        pid, host and start time), or the repository cannot be written.
    """
    path = Path(repo) / NIGHT_LOCK_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise (not_writable(repo, exc) or BadInputError(
            path, f"cannot open the night lock ({exc.strerror})")) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BadInputError(path, f"another atmospec night is running on this repository "
                                      f"({_holder_text(fd)}); wait for it to end or stop it"
                                ) from None
        except OSError as exc:  # a file system without locks
            raise BadInputError(path, f"cannot lock ({exc.strerror})") from None
        me = LockHolder(os.getpid(), socket.gethostname(),
                        datetime.now(UTC).isoformat(timespec="seconds"))
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(asdict(me)) + "\n").encode(), 0)
        try:
            yield me
        finally:
            # Emptied before release, so that a run taking the lock next is never described
            # by this one's pid in the moment before it writes its own.
            with suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def _holder_text(fd: int) -> str:
    """Who holds the lock, from the lock file (the holder may still be writing it)."""
    try:
        holder = LockHolder(**json.loads(os.pread(fd, 4096, 0)))
    except (OSError, ValueError, TypeError):
        return "a run that is starting: its pid is not written yet"
    return holder.describe()
