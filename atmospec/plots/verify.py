"""Figure of a verification report: each test's value against its threshold, per amp.

One panel per test, amps along the x axis (detector-wide tests as an extra ``detector``
bar): a bar for the value, green when the test passes and red when it fails, and the
threshold as a black tick (both ±threshold for ``|value| <= threshold``). Built with
`matplotlib.figure.Figure` and the Agg canvas, without pyplot; written atomically.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from atmospec.plots.common import save_png

log = logging.getLogger(__name__)

__all__ = ["plot_verification"]

#: Resolution of the PNG.
DPI = 100

PASS_COLOR = "#2ca02c"
FAIL_COLOR = "#d62728"


def plot_verification(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Draw a verification report (the dictionary of ``VerificationReport.to_dict``).

    Parameters
    ----------
    report : mapping
        ``{"product", "file", "pass", "amps": {amp: {"tests": {name: {...}}}},
        "detector": {"tests": {...}}}`` as written to ``<stem>.verify.json``.
    path : path
        PNG file to write (atomically).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    rows = _rows(report)
    n_panels = max(len(rows), 1)
    fig = Figure(figsize=(11, 1.2 + 2.3 * n_panels))
    FigureCanvasAgg(fig)  # explicit Agg canvas: no pyplot, no global backend state
    verdict = "PASS" if report.get("pass") else "FAIL"
    fig.suptitle(f"{report.get('product', '?')} verification — {report.get('file', '')}: "
                 f"{verdict}", color=PASS_COLOR if report.get("pass") else FAIL_COLOR)
    if not rows:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no tests", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    for k, (name, entries) in enumerate(rows.items()):
        ax = fig.add_subplot(n_panels, 1, k + 1)
        _panel(ax, name, entries)
    fig.legend(handles=[Patch(color=PASS_COLOR, label="pass"),
                        Patch(color=FAIL_COLOR, label="fail"),
                        Line2D([], [], color="black", marker="_", linestyle="none",
                               markersize=14, label="threshold")],
               loc="upper right", ncols=3, fontsize="small")
    # Fixed margins: tight_layout would draw the figure once more just to measure it.
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.5 / height, top=1 - 1.0 / height,
                        hspace=0.55)
    return save_png(fig, path, DPI)


def plot_verification_file(report: str | os.PathLike[str]) -> Path:
    """Draw ``<stem>.verify.json`` as ``<stem>.verify.png`` beside it.

    Parameters
    ----------
    report : path
        A verification report (`atmospec.calib.verification.VerificationReport.write`).

    Returns
    -------
    pathlib.Path
        The PNG.
    """
    report = Path(report)
    doc = json.loads(report.read_text())
    return plot_verification(doc, report.with_name(report.name[:-len(".json")] + ".png"))


def _rows(report: Mapping[str, Any]) -> dict[str, list[tuple[str, Mapping[str, Any]]]]:
    """Test name → [(amp or ``detector``, test entry)], amps in report order."""
    rows: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for amp, entry in report.get("amps", {}).items():
        for name, test in entry.get("tests", {}).items():
            rows.setdefault(name, []).append((amp, test))
    for name, test in report.get("detector", {}).get("tests", {}).items():
        rows.setdefault(name, []).append(("detector", test))
    return rows


def _panel(ax, name: str, entries: list[tuple[str, Mapping[str, Any]]]) -> None:
    x = np.arange(len(entries))
    values = np.array([float(t["value"]) for _, t in entries])
    thresholds = np.array([float(t["threshold"]) for _, t in entries])
    colors = [PASS_COLOR if t.get("pass") else FAIL_COLOR for _, t in entries]
    shown = np.where(np.isfinite(values), values, 0.0)
    ax.bar(x, shown, color=colors, width=0.7)
    ax.scatter(x, thresholds, marker="_", s=300, color="black", zorder=3)
    if any(t.get("comparison") == "|value| <= threshold" for _, t in entries):
        ax.scatter(x, -thresholds, marker="_", s=300, color="black", zorder=3)
    for xi, v in zip(x, values, strict=True):
        if not np.isfinite(v):
            ax.text(xi, 0, "n/a", ha="center", va="bottom", fontsize="x-small", color=FAIL_COLOR)
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.set_xticks(x, [amp for amp, _ in entries], fontsize="small")
    unit = next((t.get("unit") for _, t in entries if t.get("unit")), "")
    comparison = entries[0][1].get("comparison", "")
    ax.set_ylabel(f"[{unit}]" if unit else "[fraction]")
    ax.set_title(f"{name}  ({comparison})", fontsize="medium", loc="left")
