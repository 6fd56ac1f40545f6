"""Which files of a watched folder are new, and when each is complete (``atmospec watch``).

A file-system observer (``watchdog``: inotify on Linux, or polling for network file systems
that deliver no events) hands the paths of its events to an `EventQueue` from its thread;
the watch's loop notes them in `Arrivals`, which says when each file is due for the
completeness check: its size and modification time unchanged over two looks ``settle_s``
apart, or at once when its writer closed it or it was moved in (inotify's close-after-write,
or a rename into the folder, as atomic writers and transfer tools finish: no writer holds it
any more, which is what the wait guesses; 0.3 s less latency per exposure). The check
itself is the night index's (`NightIndex.index_files`, whose ``defer`` question
`Arrivals.defer` answers): a file that fails it is waited for until it changes, or until
``timeout_s`` after its last change, when it is recorded as rejected.
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_EVENTS_LOST,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
)
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

log = logging.getLogger(__name__)

__all__ = ["Arrivals", "EventQueue", "start_observer"]

#: File events that may mean a raw arrived or changed (a move: its destination).
_FILE_CHANGES = frozenset({EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_MOVED,
                           EVENT_TYPE_CLOSED})


@dataclass
class _Candidate:
    """A file seen by the watch, not yet indexed."""

    identity: tuple[int, int] | None
    """(size, mtime in ns) at the last look; None before the first."""
    since: float
    """When that identity was first seen (monotonic clock), s."""
    failed: tuple[int, int] | None = None
    """The identity that last failed the completeness check (not checked again until it
    changes or times out)."""
    closed: bool = False
    """Its writer closed it, or it was moved in, since the last look: due at once."""


class Arrivals:
    """The files seen and not yet indexed, and when each is due for a look.

    Parameters
    ----------
    settle_s : float
        A file is due once its size and modification time did not change for this long, s.
    timeout_s : float
        A file that failed the check is recorded as rejected this long after its last
        change, s.
    """

    def __init__(self, settle_s: float, timeout_s: float) -> None:
        self.settle_s = settle_s
        self.timeout_s = timeout_s
        self.pending: dict[Path, _Candidate] = {}

    def note(self, path: Path, now: float, closed: bool = False) -> None:
        """A file was created, changed or moved in; ``closed``: its writer closed it or it
        was moved in (it is due at the next look, without waiting `settle_s`)."""
        c = self.pending.get(path)
        if c is None:
            c = self.pending[path] = _Candidate(None, now)
        c.closed |= closed

    def due(self, now: float) -> list[Path]:
        """The files to index now: stable for `settle_s`, or closed by their writer (or moved
        in) since the last look, and not already refused as they are; or refused for
        `timeout_s` (then their rejection is recorded)."""
        out = []
        for path, c in list(self.pending.items()):
            try:
                st = path.stat()
            except FileNotFoundError:
                if not path.is_symlink():  # gone (a dangling link is the index's to record)
                    del self.pending[path]
                    continue
                identity = (-1, -1)
            except OSError:
                identity = (-1, -1)  # unreadable: the index records why
            else:
                identity = (st.st_size, st.st_mtime_ns)
            if identity != c.identity:
                c.identity, c.since = identity, now
                if not c.closed:
                    continue
            waited = now - c.since
            settled = c.closed or waited >= self.settle_s
            c.closed = False  # a closed file that fails the check waits for a change
            if (settled and identity != c.failed) or waited >= self.timeout_s:
                out.append(path)
        return out

    def defer(self, path: Path, reason: str) -> bool:
        """`NightIndex.index_files`'s question for a file that is not a usable raw: wait
        for it (True) until it timed out."""
        c = self.pending.get(path)
        if c is None or time.monotonic() - c.since >= self.timeout_s:
            return False
        if c.failed != c.identity:
            log.debug("%s not complete yet (%s)", path, reason)
        c.failed = c.identity
        return True

    def done(self, path: Path) -> None:
        """Indexed or rejected: no longer watched."""
        self.pending.pop(path, None)


class EventQueue:
    """Paths named by file-system events, handed from the observer's thread to the watch's
    loop (watchdog's event-handler interface: `dispatch`)."""

    def __init__(self) -> None:
        self.events: queue.SimpleQueue[tuple[Path, bool] | None] = queue.SimpleQueue()

    def dispatch(self, event: Any) -> None:
        """watchdog's handler interface: every event names a path (a move, two), with
        whether the file is finished (closed after writing, or moved in); None asks for a
        full look at the directory (events were lost, or a folder arrived whole)."""
        kind = event.event_type
        if kind == EVENT_TYPE_EVENTS_LOST or (event.is_directory and kind in (
                EVENT_TYPE_CREATED, EVENT_TYPE_MOVED)):
            self.events.put(None)
            return
        if event.is_directory or kind not in _FILE_CHANGES:
            return
        path = getattr(event, "dest_path", "") or event.src_path
        self.events.put((Path(os.fsdecode(path)).absolute(),
                        kind in (EVENT_TYPE_CLOSED, EVENT_TYPE_MOVED)))

    def drain(self) -> Iterator[tuple[Path, bool] | None]:
        while True:
            try:
                yield self.events.get_nowait()
            except queue.Empty:
                return


def start_observer(raw_dir: Path, events: EventQueue, poll: bool, poll_interval_s: float
                   ) -> Any:
    """A started watchdog observer of ``raw_dir`` and its sub-folders, handing the paths
    of its events to ``events``.

    Parameters
    ----------
    raw_dir : pathlib.Path
        The folder watched.
    events : EventQueue
        Where the paths go.
    poll : bool
        Poll the folder (network file systems deliver no events); without it, polling
        only when the system refuses file-system events (inotify's watch limit).
    poll_interval_s : float
        Time between two polls, s.

    Returns
    -------
    watchdog.observers.api.BaseObserver
        Started; ``stop()`` and ``join()`` it.
    """
    if not poll:
        observer = Observer()
        try:
            observer.schedule(events, str(raw_dir), recursive=True)
            observer.start()
            return observer
        except OSError as exc:
            log.warning("no file-system events for %s (%s): polling every %.1f s instead",
                        raw_dir, exc.strerror or exc, poll_interval_s)
    observer = PollingObserver(timeout=poll_interval_s)
    observer.schedule(events, str(raw_dir), recursive=True)
    observer.start()
    return observer
