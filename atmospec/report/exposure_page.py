"""The exposure pages of the report (``exposures/<OBSID>.html``): the exposure's state, its
summary values, tasks, calibrations used, output files and figures."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from atmospec.io import write_text_atomic
from atmospec.plots.common import config_label
from atmospec.plots.exposure import ExposureOutputs
from atmospec.report import html as H
from atmospec.report.figures import ExposureFigures
from atmospec.report.read import Night, row_value
from atmospec.report.truth import truth_column

__all__ = ["exposure_pages"]

_GROUP_CAPTIONS = MappingProxyType({
    "postisr": "Post-ISR image (ZScale, block means) with the mask planes named in the "
               "legend (BAD includes the curated defect list's boxes: on LATISS a whole bad "
               "amplifier, the solid red block), detected sources (circles) and the zeroth "
               "order (cross); click for the full FITS file.",
    "sources.png": "Detected sources on the detector (marker area grows with brightness).",
    "psf.png": "PSF whiskers across the detector and the FWHM histogram of the PSF stars.",
    "spectrum_spectrogram.png": "Spectrogram cutout with the fitted trace.",
    "spectrum_model.png": "Data, 2D forward model and normalised residuals.",
    "spectrum_psf.png": "PSF parameters against wavelength: the curve is PSF_TAB (from the "
                         "2D model when there is one), the points the per-bin 1D Moffat fits, "
                         "all in cutout pixels; bins beyond the axis are arrows on its edge. "
                         "In the shaded wavelengths order 2 adds more than 5 % to order 1: "
                         "the bins, fitted before the order-2 correction, fit both orders "
                         "(a wider PSF), while the 2D model holds order 2 in its background "
                         "and follows order 1 alone.",
    "spectrum_lines.png": "Wavelength calibration: line positions minus catalogue values.",
    "spectrum_spectrum.png": "Extracted first-order spectrum with its errors and lines.",
    "atmosphere_fit.png": "Atmosphere fit: data and model, normalised residuals and "
                          "parameter correlations (re-drawn from the stored fit).",
})


def exposure_pages(night: Night, exposures: ExposureFigures, calib_pages: dict[str, Path],
                   directory: Path) -> None:
    """Write the page of every exposure of the night summary, linked to its neighbours.

    Parameters
    ----------
    night : Night
        The night (summary rows, task records).
    exposures : ExposureFigures
        Outputs, figure manifests and calibrations used, by OBSID.
    calib_pages : dict
        Calibration pages by product file name.
    directory : pathlib.Path
        Where the pages go (``<report>/exposures``).
    """
    ids = [str(r["obs_id"]) for r in night.summary]
    for i, row in enumerate(night.summary):
        obs_id = ids[i]
        text = _exposure_page(row, night, exposures.outputs[obs_id],
                              exposures.manifests[obs_id], exposures.used[obs_id],
                              calib_pages, directory,
                              ids[i - 1] if i > 0 else None,
                              ids[i + 1] if i + 1 < len(ids) else None)
        write_text_atomic(text, directory / f"{obs_id}.html")


def _status_sentence(row: Any, tasks: list) -> tuple[str, str]:
    status = str(row["status"])
    if status == "failed":
        failed = [t for t in tasks if t.status == "failed"]
        first = failed[0] if failed else None
        what = (f"Failed in task {first.task}: {first.reason}" if first is not None
                else f"Failed: {row['reason']}")
        return "error", what
    if status == "pending":
        return "warn", "Not processed yet: no task has run on this exposure."
    if status == "calibration":
        return "", (f"Calibration frame ({row['image_type']}): an input of the night's "
                    f"{row['image_type']} product when it was built from this night (see the "
                    "calibration pages).")
    return "", "Every task of this exposure is done."


def _exposure_page(row: Any, night: Night, outputs: ExposureOutputs,
                   manifest: dict[str, Any], used: dict[str, str], calib_pages: dict[str, Path],
                   directory: Path, prev_id: str | None, next_id: str | None) -> str:
    obs_id = str(row["obs_id"])
    tasks = night.tasks.get(obs_id, [])
    links = [H.link("../index.html", "night")]
    links.append(H.link(f"{prev_id}.html", f"← {prev_id}") if prev_id else "<span>first</span>")
    links.append(H.link(f"{next_id}.html", f"{next_id} →") if next_id else "<span>last</span>")
    nav = "<nav>" + " ".join(links) + "</nav>"
    kind, sentence = _status_sentence(row, tasks)
    body = [H.note(sentence, kind)]
    body += _summary_section(row, night.truth.get(obs_id, {}))
    body += _tasks_section(tasks)
    body += _calibrations_section(used, calib_pages, directory)
    body += _files_section(outputs, directory)
    body.append(_figures_section(obs_id, outputs, manifest, directory, row))
    return H.page(f"{obs_id} — {row['image_type']}, "
                  f"{config_label(str(row['filter']), str(row['disperser']))}",
                  "\n".join(body), nav=nav)


def _summary_section(row: Any, truth: dict[str, float]) -> list[str]:
    """What the summary says of the exposure: every column with a value; on a simulated
    night the simulator's value beside the measured ones it knows (`truth_column`)."""
    cells = []
    for name in row.colnames:
        value = row_value(row, name)
        if value is None or (isinstance(value, float | np.floating) and not np.isfinite(value)):
            continue
        if isinstance(value, str | np.str_) and not str(value):
            continue
        cell = [name, H.Cell(_summary_text(name, value, row.table[name].unit),
                             value=H.data_value(value))]
        if truth:
            true = truth_column(row, name, truth)
            cell.append(H.Cell("" if true is None else H.fmt_number(true, 4), numeric=True,
                               value=None if true is None else H.data_value(true)))
        cells.append(cell)
    headers = ["column", "value"] + (["simulator truth"] if truth else [])
    return ["<h2>Summary</h2>", H.table(headers, cells, table_id="exposure-summary")]


def _summary_text(name: str, value: Any, unit: Any) -> str:
    """A summary value with its unit. An MJD is a plain number to 0.1 s (6 decimals) with
    its time scale (the summary's are TAI): six significant figures showed "61368.1 d", a
    2.4 h rounding with a unit that reads like a duration."""
    if isinstance(value, str | np.str_):
        return str(value)
    if name == "mjd":
        return f"{float(value):.6f} (TAI)"
    return H.fmt_number(value, 6) + (f" {unit}" if unit else "")


def _tasks_section(tasks: list) -> list[str]:
    if not tasks:
        return []
    return ["<h2>Tasks</h2>", H.table(
        ["task", "status", "duration (s)", "attempts", "started (UTC)", "reason"],
        [[t.task, H.Cell(t.status, css="pass" if t.status == "done" else "fail"),
          H.Cell(H.fmt_number(t.duration_s), numeric=True), str(t.attempts), t.started,
          t.reason or ""] for t in tasks])]


def _calibrations_section(used: dict[str, str], calib_pages: dict[str, Path],
                          directory: Path) -> list[str]:
    if not used:
        return []
    rows = []
    for role, name in sorted(used.items()):
        page = calib_pages.get(name)
        rows.append([role, H.Cell(name, href=H.rel(page, directory) if page else None)])
    return ["<h2>Calibrations used</h2>",
            H.table(["product", "file (linked when registered in this repository)"], rows)]


def _files_section(outputs: ExposureOutputs, directory: Path) -> list[str]:
    files = [(label, path) for label, path in (
        ("post-ISR image", outputs.postisr), ("source catalogue", outputs.catalog),
        ("zeroth order", outputs.centroid), ("spectrum", outputs.spectrum),
        ("atmosphere fit", outputs.atmosphere)) if path is not None]
    if not files:
        return []
    return ["<h2>Files</h2><ul>" + "".join(
        f"<li>{H.esc(label)}: {H.link(H.rel(p, directory), p.name)}</li>"
        for label, p in files) + "</ul>"]


def _figures_section(obs_id: str, outputs: ExposureOutputs, manifest: dict[str, Any],
                     directory: Path, row: Any) -> str:
    parts = []
    if str(row["status"]) == "calibration":
        return ""
    if outputs.postisr is None:
        parts.append(H.note("No post-ISR image in the repository: ISR did not run or "
                            "failed on this exposure."))
    for group in ("postisr", "psf", "spectrum", "atmosphere"):
        entry = manifest.get(group)
        if entry is None:
            continue
        if entry.get("error"):
            parts.append(H.note(f"{group} figure not drawn: {entry['error']}", "error"))
        for name in entry.get("files", []):
            src = f"{obs_id}/{name}"
            caption = _GROUP_CAPTIONS.get(name) or _GROUP_CAPTIONS.get(group, name)
            href = (H.rel(outputs.postisr, directory) if group == "postisr" and outputs.postisr
                    else None)
            parts.append(H.figure(src, caption, href=href))
    is_dispersed = str(row["disperser"]) not in ("empty", "", "none", "unknown")
    if is_dispersed and outputs.spectrum is None and str(row["status"]) != "pending":
        parts.append(H.note("No spectrum: the extraction did not run or failed."))
    if is_dispersed and outputs.spectrum is not None and outputs.atmosphere is None:
        parts.append(H.note("No atmosphere fit for this spectrum."))
    return ("<h2>Figures</h2>\n" + "\n".join(parts)) if parts else ""
