"""Calibration products of a night: pick the repository's, build what is missing from the
night's own frames, and say precisely what is still missing.

Products valid for the night's exposures are taken from the calibration registry
(`atmospec.calib.registry`): certified first, then by date. A kind of the pipeline's
``calibrations.build`` list that no product covers is built from the night's raw frames of
that kind (bias, then dark, then one flat per filter of the night's imaging exposures),
verified, registered with a validity of the observing night (day_obs 12:00 UTC to the next
day 12:00 UTC) and certified when its verification passes.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType

from atmospec.calib.isr_inputs import CalibrationFiles
from atmospec.calib.registry import CalibrationRegistry
from atmospec.calib.verification import verification_name
from atmospec.camera.translator import ObservationInfo
from atmospec.errors import BadInputError, short_error
from atmospec.io import write_text_atomic
from atmospec.layout import CALIBRATION_BUILDS_FILE
from atmospec.night.index import NightIndex, RawRecord
from atmospec.night.pipeline import CalibrationPolicy

log = logging.getLogger(__name__)

#: Which frames need which products (a dark needs a bias; a flat a bias and a dark).
_NEEDED_BY = MappingProxyType({"bias": ("dark", "flat", "science"), "dark": ("flat", "science"),
              "flat": ("science",)})

#: How to build each kind by hand, for the "missing product" message.
_HOW_TO = MappingProxyType({
    "bias": "atmospec calib bias BIAS_RAWS... --out bias.fits",
    "dark": "atmospec calib dark DARK_RAWS... --bias bias.fits --out dark.fits",
    "flat": "atmospec calib flat FLAT_RAWS... --bias bias.fits --out flat.fits",
    "defects": "atmospec calib defects --dark dark.fits --flat flat.fits --out defects.ecsv",
    "ptc": "atmospec calib ptc FLAT_PAIRS... --out ptc.fits",
    "linearizer": "atmospec calib linearity ptc.fits --out linearizer.fits",
    "crosstalk": "atmospec calib crosstalk RAWS_WITH_SATURATED_STARS... --out crosstalk.ecsv",
})

Submit = Callable[..., Future]


@dataclass(frozen=True)
class BuiltProduct:
    """A product the night runner built (or failed to build)."""

    kind: str
    """``bias``, ``dark`` or ``flat``."""
    filter: str | None
    """Filter of a flat."""
    path: Path
    """Product file."""
    status: str
    """``registered``, ``certified``, ``failed`` (the build failed: the exposures that
    needed it fail, `calibration_files`) or ``not built`` (too few frames of the kind)."""
    detail: str
    """Registry id and verification verdict, or the reason of the failure."""
    detector: str | None = None
    """Detector of the product (None: an instrument of one detector)."""

    def serves(self, info: ObservationInfo) -> bool:
        """Whether this product was meant for the exposure (same detector and, for a
        flat, filter)."""
        return (info.detector == self.detector
                and (self.kind != "flat" or info.filter == self.filter))


def write_builds(products: Sequence[BuiltProduct], repo: Path) -> Path:
    """Record what a night run built (`CALIBRATION_BUILDS_FILE`, JSON, atomic), for the
    report: a failed or skipped build must be seen there, not only in the terminal."""
    path = repo / CALIBRATION_BUILDS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"kind": p.kind, "detector": p.detector, "filter": p.filter, "file": p.path.name,
             "status": p.status, "detail": p.detail} for p in products]
    return write_text_atomic(json.dumps(rows, indent=1) + "\n", path)


def read_builds(repo: Path) -> list[dict[str, str | None]]:
    """The records `write_builds` wrote; empty when there are none or they are unreadable
    (the report must not fail on them)."""
    try:
        rows = json.loads((repo / CALIBRATION_BUILDS_FILE).read_text())
    except (OSError, ValueError):
        return []
    keys = ("kind", "detector", "filter", "file", "status", "detail")
    return [{k: (None if r.get(k) is None else str(r.get(k))) for k in keys}
            for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def night_window(day_obs: int) -> tuple[datetime, datetime]:
    """Validity of a product built from one night's frames: day_obs 12:00 UTC + 24 h
    (Rubin's day_obs is the date in UTC−12 h)."""
    start = datetime.strptime(f"{day_obs:08d}", "%Y%m%d") + timedelta(hours=12)
    return start, start + timedelta(days=1)


def missing_message(kind: str, info: ObservationInfo, repo: Path | str, *,
                    register: str | None = None) -> str:
    """One line naming a missing product and how to build and register it.

    ``register`` replaces the registration hint (default ``atmospec calib register FILE
    --repo REPO --certify``); the Gen3 tasks give the ``atmospec butler certify`` command.
    """
    what = f"flat for {info.filter}" if kind == "flat" else kind
    when = info.datetime_begin.isot[:16] if info.datetime_begin is not None else info.day_obs
    register = register or f"atmospec calib register FILE --repo {repo} --certify"
    return (f"missing calibration: no {what} valid at {when} in {repo} "
            f"(build it: {_HOW_TO[kind]}; then {register})")


def calibration_files(registry: CalibrationRegistry, info: ObservationInfo,
                      require: tuple[str, ...], failed: Sequence[BuiltProduct] = ()
                      ) -> tuple[CalibrationFiles, str | None]:
    """Products for one exposure, and the message for a missing required one.

    Parameters
    ----------
    registry : CalibrationRegistry
        The repository's products.
    info : ObservationInfo
        The exposure.
    require : tuple of str
        Kinds that must be found.
    failed : sequence of BuiltProduct, optional
        Products of this run whose build failed: an exposure that needed one and has no
        other product of its kind fails naming the build, even when the kind is not
        required (reducing it without would be a silent downgrade).

    Returns
    -------
    files : CalibrationFiles
        Chosen products (None where none qualifies).
    missing : str or None
        Why the exposure cannot be calibrated: the first failed build it needed, else the
        `missing_message` of the first required kind not found.
    """
    files = registry.select_all(info)
    for product in failed:
        if (product.status == "failed" and product.serves(info)
                and getattr(files, product.kind) is None):
            return files, (f"calibration {product.path.name} failed to build "
                           f"({product.detail})")
    for kind in require:
        if getattr(files, kind) is None:
            return files, missing_message(kind, info, registry.repo)
    return files, None


def _uncovered(registry: CalibrationRegistry, kind: str,
               records: list[RawRecord]) -> list[RawRecord]:
    return [r for r in records if registry.select(kind, r.info) is None]


def _build(kind: str, raws: list[str], out: Path, bias: str | None, dark: str | None,
           ptc: str | None, min_inputs: int) -> Path:
    """Build one master (runs in a worker); unusable frames are left out and logged."""
    from atmospec.calib.files import build_master_file
    from atmospec.calib.masters import DarkConfig, FlatConfig, MasterConfig
    from atmospec.plots.verify import plot_verification_file

    config_class = {"bias": MasterConfig, "dark": DarkConfig, "flat": FlatConfig}[kind]
    path = build_master_file(kind, raws, out, bias=bias, dark=dark, ptc=ptc,
                             config=config_class(skip_bad=True, min_inputs=min_inputs))
    report = path.with_name(verification_name(path))
    if report.is_file():
        plot_verification_file(report)
    return path


def prepare_calibrations(index: NightIndex, registry: CalibrationRegistry,
                         policy: CalibrationPolicy, submit: Submit,
                         out_dir: Path) -> list[BuiltProduct]:
    """Build and register the products the night lacks, in dependency order.

    Parameters
    ----------
    index : NightIndex
        The night's raw files.
    registry : CalibrationRegistry
        Repository products (new ones are registered here).
    policy : CalibrationPolicy
        Which kinds to build, from how many frames, and whether to certify them.
    submit : callable
        ``executor.submit``: builds run on the night's workers (flats of different filters
        in parallel).
    out_dir : pathlib.Path
        Where the built files go before registration (``REPO/calib/night/<day_obs>``).

    Returns
    -------
    list of BuiltProduct
        What was built and registered, or failed (a failure is logged; the exposures that
        needed the product then fail with a `missing_message`).
    """
    by_type: dict[str, list[RawRecord]] = {}
    for record in index.raws():
        by_type.setdefault(record.info.image_type, []).append(record)
    built: list[BuiltProduct] = []
    nominal_warned = False

    def product_for(kind: str, records: list[RawRecord]) -> str | None:
        """The product of ``kind`` valid for most of the frames (the registry's choice per
        frame; ties to the earliest-named), None when none is valid for any."""
        chosen = Counter(str(rec.absolute_path) for r in records
                         if (rec := registry.select(kind, r.info)) is not None)
        if not chosen:
            return None
        path, n = min(chosen.items(), key=lambda kv: (-kv[1], kv[0]))
        if n < len(records):
            log.warning("the %s %s is valid for %d of the %d frames it calibrates",
                        kind, Path(path).name, n, len(records))
        return path

    for kind in ("bias", "dark", "flat"):
        if kind not in policy.build:
            continue
        users = [r for t in _NEEDED_BY[kind] for r in by_type.get(t, [])
                 if not (kind == "flat" and t == "science" and r.info.is_dispersed
                         and registry.select("flat", r.info) is not None)]
        # One product per detector (None: an instrument of one) and, for flats, filter.
        groups: dict[tuple[str | None, str | None], list[RawRecord]] = {}
        for r in _uncovered(registry, kind, users):
            groups.setdefault((r.info.detector, r.info.filter if kind == "flat" else None),
                              []).append(r)
        futures: list[tuple[str | None, Path, Future]] = []
        for (detector, filt), needing in sorted(groups.items(), key=lambda kv: str(kv[0])):
            frames = [r for r in by_type.get(kind, []) if r.info.detector == detector
                      and (kind != "flat" or (r.info.filter == filt
                                              and not r.info.is_dispersed))]
            what = " ".join(p for p in (kind, detector, f"({filt})" if filt else None) if p)
            day_obs = (frames or needing)[0].info.day_obs
            name = "_".join(p for p in (kind, detector, filt) if p) + ".fits"
            out = out_dir / str(day_obs) / name
            if len(frames) < policy.min_frames.get(kind, 1):
                reason = (f"{len(needing)} exposures need it, the repository has none valid "
                          f"and the night has {len(frames)} {kind} frames (fewer than "
                          f"{policy.min_frames.get(kind, 1)})")
                log.warning("%s not built: %s", what, reason)
                built.append(BuiltProduct(kind, filt, out, "not built", reason, detector))
                continue
            # The frames' own products (the dark uses the bias built from the same night).
            bias = product_for("bias", frames) if kind != "bias" else None
            dark = product_for("dark", frames) if kind == "flat" else None
            if kind != "bias" and bias is None:
                log.warning("cannot build the %s: no bias valid for its frames", what)
                built.append(BuiltProduct(kind, filt, out, "failed", "no bias for its frames",
                                          detector))
                continue
            # The detector's own gains (a PTC is per detector, as every product).
            ptc = product_for("ptc", frames)
            if ptc is None and not nominal_warned:
                # Said aloud: with nominal gains the verification of the built products flags
                # amps whose true gain differs by more than 5 %, which looks like a bug.
                log.warning("no PTC valid for the night in %s: products are built with the "
                            "nominal gains (register one: atmospec calib ptc PAIRS... --out "
                            "ptc.fits; atmospec calib register ptc.fits --repo %s --certify)",
                            registry.repo, registry.repo)
                nominal_warned = True
            log.info("building the %s from %d frames -> %s", what, len(frames), out)
            futures.append((BuiltProduct(kind, filt, out, "", "", detector),
                            submit(_build, kind, [str(r.path) for r in frames], out,
                                   bias, dark, ptc, policy.min_frames.get(kind, 1))))
        for planned, future in futures:
            built.append(_register(registry, planned, future, policy.certify))
    return built


def _register(registry: CalibrationRegistry, planned: BuiltProduct, future: Future,
              certify: bool) -> BuiltProduct:
    out = planned.path
    try:
        future.result()
    except Exception as exc:  # a failed build must not stop the night
        reason = short_error(exc)
        log.error("building %s failed: %s", out.name, reason)
        return replace(planned, status="failed", detail=reason)
    day_obs = int(out.parent.name)
    start, end = night_window(day_obs)
    try:
        record = registry.register(out, valid_from=start, valid_to=end)
    except BadInputError as exc:
        log.error("registering %s failed: %s", out.name, exc.problem)
        return replace(planned, status="failed", detail=exc.problem)
    verdict = {None: "not verified", True: "verification passed",
               False: "verification FAILED: " + ", ".join(record.verification_failures)}[
        record.verification_passed]
    status = "registered"
    if certify and record.verification_passed:
        try:
            registry.certify(record.id)
        except BadInputError as exc:  # the stored copy changed since registration
            log.error("certifying %s refused: %s", out.name, exc.problem)
            return replace(planned, status="registered",
                           detail=f"id {record.id}, not certified: {exc.problem}")
        status = "certified"
    return replace(planned, status=status, detail=f"id {record.id}, {verdict}")
