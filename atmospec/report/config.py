"""How the report is built (`ReportConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ReportConfig"]


@dataclass(frozen=True)
class ReportConfig:
    """How the report is built."""

    out: str | None = None
    """Report directory; None: ``REPO/report``."""
    force: bool = False
    """Redraw every figure, even those whose inputs did not change."""
    workers: int | None = None
    """Processes drawing the exposures' figures; None: all cores; 1: in this process."""
    pool_threshold: int = 4
    """Fewest exposures with figures to draw worth a process pool (a spawned worker costs
    about a second of imports)."""
    figures: bool = True
    """Draw the figures (night time series, each exposure's and each calibration
    product's); False: pages with tables, sentences and links only (a quick look)."""
    thumbnail_width: int = 1000
    """Largest width of a post-ISR thumbnail, pixels."""
