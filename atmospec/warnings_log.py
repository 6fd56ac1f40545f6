"""Python warnings during a command: counted, de-duplicated and logged, never a flood.

Third-party libraries warn through `warnings` (astropy on a damaged card, numpy on an
empty slice). On a damaged file one cause can repeat hundreds of thousands of times, and
before the one-line error the CLI promises. Every command and every worker process
therefore routes warnings through `collect_warnings`: each distinct warning (category and
first line of its message) is kept once with its count, and logged at ``INFO`` (``atmospec
-v`` shows them) when the block ends. The pipeline's own warnings for operators go through
`logging` at ``WARNING`` and are not affected.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["WarningTally", "collect_warnings", "route_warnings_to_log"]

log = logging.getLogger("atmospec.warnings")

#: Distinct warnings kept per block: a bound on memory whatever the input does.
MAX_DISTINCT = 50


@dataclass
class WarningTally:
    """Distinct warnings seen in a block, with how often each was raised."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    """(category name, first line of the message) -> occurrences."""
    dropped: int = 0
    """Occurrences of further distinct warnings beyond `MAX_DISTINCT`."""

    def add(self, message: Warning | str, category: type[Warning]) -> None:
        """Count one warning."""
        text = str(message).strip()
        key = (category.__name__, (text.splitlines()[0] if text else "")[:200])
        if key in self.counts:
            self.counts[key] += 1
        elif len(self.counts) < MAX_DISTINCT:
            self.counts[key] = 1
        else:
            self.dropped += 1

    @property
    def total(self) -> int:
        """All occurrences counted."""
        return sum(self.counts.values()) + self.dropped

    def lines(self) -> list[str]:
        """One line per distinct warning (``category: message (×n)``), most frequent first."""
        out = [f"{cat}: {msg}" + (f" (×{n})" if n > 1 else "")
               for (cat, msg), n in sorted(self.counts.items(), key=lambda kv: -kv[1])]
        if self.dropped:
            out.append(f"{self.dropped} more warnings of other kinds")
        return out


@contextmanager
def collect_warnings(level: int = logging.INFO) -> Iterator[WarningTally]:
    """Count the warnings raised in the block instead of printing them; log each distinct
    one once at ``level`` when the block ends.

    Yields
    ------
    WarningTally
        Filled as the block runs.
    """
    tally = WarningTally()
    with warnings.catch_warnings():
        # "always": every occurrence reaches the tally (cheap: a dict increment), so the
        # count is true; nothing is printed by the warnings machinery itself.
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, category, *_args, **_kw: tally.add(
            message, category)
        try:
            yield tally
        finally:
            for line in tally.lines():
                log.log(level, "%s", line)


def route_warnings_to_log() -> None:
    """For a worker process: from now on, every warning is logged at ``INFO`` through the
    ``atmospec.warnings`` logger, once per distinct message and place, instead of printed.
    """
    seen: set[tuple[str, str]] = set()

    def _show(message: Warning | str, category: type[Warning], *_args: object,
              **_kw: object) -> None:
        text = str(message).strip()
        key = (category.__name__, (text.splitlines()[0] if text else "")[:200])
        if key not in seen and len(seen) < MAX_DISTINCT:
            seen.add(key)
            log.info("%s: %s", *key)

    warnings.simplefilter("default")
    warnings.showwarning = _show
