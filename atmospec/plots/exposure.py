"""The figures of one exposure: which ones its outputs allow, whether the cached PNGs are
still good, and drawing the missing ones.

Every figure is drawn by a function of `atmospec.plots` from a stage output read here; this
module only decides what to draw and where (the night's workers call `refresh_figures` as
an exposure finishes, the report draws what is still missing). A figure group (e.g. the
spectrum diagnostics, several PNGs from one spectrum file) is redrawn only when one of its
input files changed (size or modification time) or one of its PNGs is gone: each exposure's
directory holds a manifest, ``figures.json``, recording for every group its inputs and the
files written (or why it could not be drawn).

Figures are drawn into the exposure's figure store beside its outputs
(`atmospec.layout.exposure_figure_store`, ``REPO/exposures/<day_obs>/figures/<OBSID>``), a
product of the night, and published into a report folder by hard links (`publish_figures`):
a report rebuilt after its folder was deleted links the night's figures instead of drawing
them again (~3 s of CPU per exposure).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from atmospec.errors import BadInputError, short_error
from atmospec.io import atomic_path, write_text_atomic
from atmospec.layout import exposure_figure_store, exposure_file
from atmospec.plots.common import FIGURE_VERSION

if TYPE_CHECKING:
    import numpy as np

    from atmospec.exposure import Exposure
    from atmospec.isr.preview import Preview

log = logging.getLogger(__name__)

MANIFEST = "figures.json"


@dataclass(frozen=True)
class ExposureOutputs:
    """The stage outputs of one exposure that exist in the repository."""

    obs_id: str
    """Exposure."""
    postisr: Path | None = None
    """``<OBSID>_postisr.fits``."""
    catalog: Path | None = None
    """``<OBSID>_sources.ecsv``."""
    centroid: Path | None = None
    """``<OBSID>_centroid.json``."""
    spectrum: Path | None = None
    """``<OBSID>_spectrum.fits``."""
    atmosphere: Path | None = None
    """``<OBSID>_atmosphere.json``."""
    preview: Path | None = None
    """``<OBSID>_preview.fits``: block means and mask of the post-ISR exposure
    (`atmospec.isr.preview`), what its thumbnail draws."""

    @classmethod
    def find(cls, directory: Path, obs_id: str) -> ExposureOutputs:
        """The outputs of ``obs_id`` in ``directory`` (``REPO/exposures/<day_obs>``), by the
        file names of the night's contract (docs/night.md)."""
        def have(role: str) -> Path | None:
            path = exposure_file(directory, obs_id, role)
            return path if path.is_file() else None

        return cls(obs_id, have("postisr"), have("catalog"), have("centroid"),
                   have("spectrum"), have("atmosphere"), have("preview"))


def _identity(paths: Sequence[Path]) -> dict[str, list[float]]:
    """Size and modification time of each input: a change makes its figures stale."""
    out = {}
    for p in paths:
        st = p.stat()
        out[p.name] = [st.st_size, st.st_mtime]
    return out


@dataclass(frozen=True)
class FigureGroup:
    """Figures drawn together from the same inputs."""

    name: str
    """Group name (manifest key)."""
    inputs: tuple[Path, ...]
    """Files read."""


def exposure_groups(outputs: ExposureOutputs) -> list[FigureGroup]:
    """The figure groups an exposure's outputs allow."""
    groups = []
    if outputs.postisr is not None:
        extra = tuple(p for p in (outputs.catalog, outputs.centroid, outputs.preview)
                      if p is not None)
        groups.append(FigureGroup("postisr", (outputs.postisr, *extra)))
    if outputs.catalog is not None:
        groups.append(FigureGroup("psf", (outputs.catalog,)))
    if outputs.spectrum is not None:
        groups.append(FigureGroup("spectrum", (outputs.spectrum,)))
    if outputs.atmosphere is not None:
        groups.append(FigureGroup("atmosphere", (outputs.atmosphere,)))
    return groups


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of a figure directory (empty when missing or unreadable)."""
    try:
        doc = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def is_fresh(entry: dict[str, Any] | None, group: FigureGroup, directory: Path) -> bool:
    """Whether a group's manifest entry still holds: drawn by this `FIGURE_VERSION`, same
    inputs (size, mtime), every PNG there and not older than its inputs."""
    if not entry or entry.get("version", 1) != FIGURE_VERSION:
        return False
    if entry.get("inputs") != _identity(group.inputs):
        return False
    newest_input = max(p.stat().st_mtime for p in group.inputs)
    for name in entry.get("files", []):
        png = directory / name
        if not png.is_file() or png.stat().st_mtime < newest_input:
            return False
    return True


@dataclass(frozen=True)
class ExposureFigureJob:
    """Figures to draw for one exposure (sent to a worker process: plain data only)."""

    outputs: ExposureOutputs
    """Its stage outputs."""
    directory: Path
    """Where its PNGs go (``report/exposures/<OBSID>``)."""
    groups: tuple[FigureGroup, ...]
    """Groups to (re)draw."""
    thumbnail_width: int = 1000
    """Largest width of the post-ISR thumbnail, pixels."""
    sources: tuple[np.ndarray, np.ndarray] | None = None
    """The catalogue's source centroids ``(x, y)`` when the caller holds them (the night's
    worker right after `characterize`: the values the catalogue file holds, not parsed back
    from it); None: read from the catalogue."""


@dataclass
class GroupResult:
    """What drawing one group gave."""

    files: list[str] = field(default_factory=list)
    """PNG names written, in display order."""
    error: str | None = None
    """Why it could not be drawn."""


def _thumbnail_source(out: ExposureOutputs, postisr: Exposure | Preview | None,
                      max_width: int) -> Path | Exposure | Preview:
    """What the thumbnail is drawn from: the exposure or its preview in memory (the night's
    worker right after ISR), else the preview file when it is not older than the post-ISR
    file (~1 MB to read instead of decompressing ~25 MB), else the post-ISR file. All give
    the same figure. A preview binned more coarsely than a thumbnail ``max_width`` pixels
    wide needs (a report asked for wider thumbnails) is not used."""
    from atmospec.isr.preview import Preview, preview_factor, read_preview

    def fine_enough(preview: Preview) -> bool:
        return preview.factor <= preview_factor(preview.shape, max_width)

    if postisr is not None and not (isinstance(postisr, Preview) and not fine_enough(postisr)):
        return postisr
    if out.preview is not None and out.postisr is not None and \
            out.preview.stat().st_mtime >= out.postisr.stat().st_mtime:
        try:
            preview = read_preview(out.preview)
        except BadInputError as exc:
            log.info("%s: preview not used (%s)", out.obs_id, exc)
        else:
            if fine_enough(preview):
                return preview
    return out.postisr


def _draw_postisr(job: ExposureFigureJob, postisr: Exposure | Preview | None) -> list[str]:
    import numpy as np
    from astropy.table import Table

    from atmospec.plots.isr import plot_postisr_thumbnail

    out = job.outputs
    sources = job.sources
    if sources is None and out.catalog is not None:
        cat = Table.read(out.catalog, format="ascii.ecsv")
        sources = (np.asarray(cat["xcentroid"], dtype=float),
                   np.asarray(cat["ycentroid"], dtype=float))
    zeroth = None
    if out.centroid is not None:
        doc = json.loads(out.centroid.read_text())
        zeroth = (float(doc["x"]), float(doc["y"]))
    plot_postisr_thumbnail(_thumbnail_source(out, postisr, job.thumbnail_width),
                           job.directory / "postisr.png",
                           sources=sources, zeroth_order=zeroth, max_width=job.thumbnail_width)
    return ["postisr.png"]


def _draw_psf(job: ExposureFigureJob, postisr: Exposure | Preview | None) -> list[str]:
    from atmospec.imaging.catalog import read_catalog
    from atmospec.plots.characterize import plot_psf, plot_sources

    catalog = read_catalog(job.outputs.catalog)
    plot_sources(catalog, job.directory / "sources.png")
    plot_psf(catalog, job.directory / "psf.png")
    return ["sources.png", "psf.png"]


def _draw_spectrum(job: ExposureFigureJob, postisr: Exposure | Preview | None) -> list[str]:
    from atmospec.plots.spectro import plot_spectrum_diagnostics
    from spectractor_bridge.spectrum import read_spectrum

    written = plot_spectrum_diagnostics(read_spectrum(job.outputs.spectrum), job.directory,
                                        "spectrum")
    return [p.name for p in written]


def _draw_atmosphere(job: ExposureFigureJob, postisr: Exposure | Preview | None) -> list[str]:
    from atmospec.plots.atmosphere import fit_from_document, plot_atmosphere_fit

    doc = json.loads(job.outputs.atmosphere.read_text())
    plot_atmosphere_fit(fit_from_document(doc), job.directory / "atmosphere_fit.png")
    return ["atmosphere_fit.png"]


_Drawer = Callable[[ExposureFigureJob, "Exposure | Preview | None"], list[str]]

#: Each group's drawing: ``draw(job, postisr)``, ``postisr`` the post-ISR exposure or its
#: preview in memory when the caller holds it (else None: a file is read).
_DRAW: Mapping[str, _Drawer] = MappingProxyType({
    "postisr": _draw_postisr, "psf": _draw_psf, "spectrum": _draw_spectrum,
    "atmosphere": _draw_atmosphere,
})


def draw_exposure(job: ExposureFigureJob, postisr: Exposure | Preview | None = None
                  ) -> dict[str, dict[str, Any]]:
    """Draw the groups of one exposure (in a worker process or here); never raises.

    Parameters
    ----------
    job : ExposureFigureJob
        What to draw, where.
    postisr : Exposure or Preview, optional
        The exposure of ``job.outputs.postisr`` in memory, as written, or its preview (the
        night's worker right after its ISR): drawn from instead of reading a file back.

    Returns
    -------
    dict
        Manifest entries by group: ``inputs`` (size, mtime), ``files``, ``error``.
    """
    job.directory.mkdir(parents=True, exist_ok=True)
    entries = {}
    for group in job.groups:
        inputs = _identity(group.inputs)  # before drawing: a later change stays visible
        try:
            files, error = _DRAW[group.name](job, postisr), None
        except Exception as exc:  # one unreadable output costs its figure, not the report
            log.warning("%s: no %s figure (%s)", job.outputs.obs_id, group.name,
                        short_error(exc))
            log.debug("figure failure", exc_info=True)
            files, error = [], f"{type(exc).__name__}: {short_error(exc)}"
        entries[group.name] = {"inputs": inputs, "files": files, "error": error,
                               "version": FIGURE_VERSION}
    return entries


def refresh_figures(exposure_dir: Path, obs_id: str, directory: Path,
                    thumbnail_width: int = 1000, groups: tuple[str, ...] | None = None,
                    postisr: Exposure | Preview | None = None,
                    sources: tuple[np.ndarray, np.ndarray] | None = None) -> list[str]:
    """Draw the stale figures of one exposure into its figure store and publish them into a
    report folder (`publish_figures`); never raises.

    The night's workers call this right after an exposure's tasks, so the figures are drawn
    in parallel with the rest of the night and the report at its end only lays them out.

    Parameters
    ----------
    exposure_dir : Path
        Directory of the exposure's stage outputs (``REPO/exposures/<day_obs>``); its figure
        store is `atmospec.layout.exposure_figure_store` of it.
    obs_id : str
        Exposure.
    directory : Path
        Its figure directory in the report (``REPO/report/exposures/<OBSID>``).
    thumbnail_width : int
        Largest width of the post-ISR thumbnail, pixels.
    groups : tuple of str, optional
        Only these groups (``postisr``, ``psf``, ``spectrum``, ``atmosphere``); default all.
    postisr : Exposure or Preview, optional
        The exposure of the post-ISR file in memory, exactly as written, or its preview
        (`draw_exposure`).
    sources : (x, y) arrays, optional
        The centroids of the exposure's catalogue in memory (`ExposureFigureJob.sources`).

    Returns
    -------
    list of str
        The groups drawn.
    """
    try:
        outputs = ExposureOutputs.find(exposure_dir, obs_id)
        store = exposure_figure_store(exposure_dir, obs_id)
        manifest = read_manifest(store)
        wanted = [g for g in exposure_groups(outputs) if groups is None or g.name in groups]
        stale = tuple(g for g in wanted if not is_fresh(manifest.get(g.name), g, store))
        if stale:
            job = ExposureFigureJob(outputs, store, stale, thumbnail_width, sources)
            manifest.update(draw_exposure(job, postisr))
            write_manifest(store, manifest)
        publish_figures(store, directory, wanted)
        return [g.name for g in stale]
    except Exception as exc:  # figures are a convenience: the report redraws what is missing
        log.warning("%s: report figures not drawn (%s)", obs_id, short_error(exc))
        return []


def publish_figures(store: Path, directory: Path, groups: Iterable[FigureGroup]
                    ) -> dict[str, dict[str, Any]]:
    """Link the fresh figures of ``groups`` from an exposure's figure store into a figure
    directory of a report and record them in its manifest.

    A PNG is hard-linked (copied, with its modification time, where a link cannot be made:
    another file system); one already there as the same file is left alone. Stale groups
    of the store, and groups the store could not draw, are not published: the caller
    draws them.

    Parameters
    ----------
    store : pathlib.Path
        The exposure's figure store (`atmospec.layout.exposure_figure_store`).
    directory : pathlib.Path
        The report's figure directory of the exposure.
    groups : iterable of FigureGroup
        The groups to publish when the store holds them fresh.

    Returns
    -------
    dict
        The manifest entries published, by group.
    """
    stored = read_manifest(store)
    published: dict[str, dict[str, Any]] = {}
    for group in groups:
        entry = stored.get(group.name)
        if entry is None or entry.get("error") or not is_fresh(entry, group, store):
            continue
        if Path(store).resolve() != Path(directory).resolve():
            for name in entry.get("files", []):
                _link(store / name, directory / name)
        published[group.name] = entry
    if published and Path(store).resolve() != Path(directory).resolve():
        manifest = read_manifest(directory)
        if any(manifest.get(k) != v for k, v in published.items()):
            manifest.update(published)
            write_manifest(directory, manifest)
    return published


def _link(source: Path, target: Path) -> None:
    """``target`` the same file as ``source``, replaced atomically (a hard link, else a
    copy keeping the modification time, by which freshness is judged)."""
    try:
        if target.exists() and os.path.samefile(source, target):
            return
    except OSError:
        pass
    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:  # another file system, or links refused
            shutil.copy2(source, tmp)


def write_manifest(directory: Path, entries: dict[str, Any]) -> None:
    """Write a figure directory's manifest, atomically."""
    write_text_atomic(json.dumps(entries, indent=1) + "\n", directory / MANIFEST)


def newer_than(target: Path, sources: Sequence[Path]) -> bool:
    """Whether ``target`` exists and is not older than any existing ``sources``."""
    if not target.is_file():
        return False
    mtimes = [os.stat(s).st_mtime for s in sources if s.is_file()]
    return not mtimes or target.stat().st_mtime >= max(mtimes)
