"""What every diagnostic plot shares: writing a figure as a PNG, atomically."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from atmospec.io import atomic_path

log = logging.getLogger(__name__)

#: Resolution of every PNG atmospec writes.
DPI = 100


def save_png(fig: Figure, path: str | os.PathLike[str], dpi: int = DPI) -> Path:
    """Render ``fig`` to ``path`` as PNG, atomically (temporary file, then rename).

    The Agg canvas is attached explicitly: no pyplot and no global backend, so plotting is
    safe in worker processes and threads.
    """
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        # The temporary name ends in .tmp, so the format cannot be guessed from it.
        fig.savefig(tmp, format="png", dpi=dpi)
    log.info("wrote %s", path)
    return path
