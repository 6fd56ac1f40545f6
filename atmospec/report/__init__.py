"""Static HTML report of a repository: the night page (observing log, image quality,
failures, calibrations, spectroscopy), one page per exposure and one per calibration
product, under ``REPO/report/``; opens from disk, no server, no network.

`build_report` is the entry point (``atmospec report REPO``; ``atmospec night`` calls it at
the end). Figures come from `atmospec.plots`; this package lays them out.
"""

from atmospec.report.build import ReportConfig, build_report

__all__ = ["ReportConfig", "build_report"]
