"""Build the static HTML report of a repository: the night page, one page per exposure and
one per calibration product, under ``REPO/report/`` (or another directory).

What is read (`atmospec.report.read`): the night summary (``REPO/night/summary.ecsv``;
rebuilt from the index when missing), the night index (task outcomes, rejected files), the
calibration registry and the verification reports beside its products, the exposures'
outputs under ``REPO/exposures/<day_obs>/``, and the run-wide table of ``atmospec eo``
(``REPO/eo/eo_figures.ecsv``) when there is one. Figures come from `atmospec.plots` (the
exposures' drawn by `atmospec.report.figures`, cached between runs); each kind of page has
its module (`night_page`, `exposure_page`, `calib_page`), built from
`atmospec.report.html`. Every file is written atomically.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from atmospec import layout
from atmospec.io import write_text_atomic
from atmospec.report.calib_page import calibration_pages
from atmospec.report.config import ReportConfig
from atmospec.report.eo_section import eo_figures, eo_section
from atmospec.report.exposure_page import exposure_pages
from atmospec.report.figures import refresh_exposure_figures
from atmospec.report.night_page import night_figures, night_page
from atmospec.report.read import check_repo, read_eo, read_night, read_products
from atmospec.report.truth import with_truth

log = logging.getLogger(__name__)

__all__ = ["ReportConfig", "build_report"]


def build_report(repo: str | os.PathLike[str], config: ReportConfig | None = None) -> Path:
    """Write the HTML report of a repository.

    Parameters
    ----------
    repo : path
        Repository reduced by ``atmospec night`` (or holding a calibration registry).
    config : ReportConfig, optional
        Output directory, caching, workers.

    Returns
    -------
    pathlib.Path
        The night page, ``<out>/index.html``.

    Raises
    ------
    BadInputError
        ``repo`` is not a directory or not an atmospec repository, or its night index or
        summary is there but unusable (not a regular file, damaged, not atmospec's).
    """
    config = config or ReportConfig()
    t0 = time.perf_counter()
    repo = check_repo(repo)
    out = Path(config.out) if config.out else layout.report_dir(repo)
    night = read_night(repo)
    products, problems = read_products(repo)
    night.notes += [("error", p) for p in problems]

    exposures = refresh_exposure_figures(repo, out, night.summary, config)
    # The night figures draw the simulator's truth beside the measurements when there is one.
    figures = (night_figures(with_truth(night.summary, night.truth), night.summary_file,
                             out / "night", config.force) if config.figures else {})
    calib_pages = calibration_pages(products, exposures.used, out / "calibs", config.force,
                                    config.figures)
    exposure_pages(night, exposures, calib_pages, layout.exposure_figure_dir(out))
    eo_table, eo_problem = read_eo(repo)
    eo_drawn = (eo_figures(eo_table, layout.eo_run_table(repo), out / "eo", config.force)
                if eo_table is not None and config.figures else {})
    index = out / "index.html"
    write_text_atomic(night_page(repo, out, night, figures, products, calib_pages,
                                 exposures.used, eo_section(eo_table, eo_problem, out, eo_drawn)),
                      index)
    log.info("report %s: %d exposures (%d with figures drawn now, %.1f s; %d linked from "
             "the night's), %d calibration pages, %.1f s", index, len(night.summary),
             exposures.n_drawn, exposures.draw_s, exposures.n_linked, len(calib_pages),
             time.perf_counter() - t0)
    return index
