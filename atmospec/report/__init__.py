"""Static HTML report of a repository: the night page (observing log, image quality,
failures, calibrations, spectroscopy), one page per exposure and one per calibration
product, under ``REPO/report/``; opens from disk, no server, no network.

`build_report` is the entry point (``atmospec report REPO``; ``atmospec night`` calls it at
the end). Figures come from `atmospec.plots`; this package lays them out:

* `read`: what is read from the repository (night summary and index, products,
  calibrations used);
* `figures`: the exposures' figures (stale ones drawn, in a process pool) and manifests;
* `night_page`, `exposure_page`, `calib_page`: one module per kind of page;
* `html`: the HTML building blocks;
* `build`: `build_report`, the short driver, and `config`: `ReportConfig`.
"""

from atmospec.report.build import build_report
from atmospec.report.config import ReportConfig

__all__ = ["ReportConfig", "build_report"]
