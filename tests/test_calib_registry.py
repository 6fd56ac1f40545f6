"""Calibration registry: registration, storage safety, and per-exposure selection."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import threading
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time

import atmospec.calib.registry.repository as repository_module
from atmospec.calib.isr_inputs import CalibrationFiles
from atmospec.calib.products import Ptc
from atmospec.calib.products.detector import detector_cards
from atmospec.calib.ptc import PairStats, astier_model, ptc_table
from atmospec.calib.registry import (
    SCHEMA_VERSION,
    CalibrationRegistry,
    exposure_time_utc,
    to_utc_iso,
)
from atmospec.calib.verification import TestResult, VerificationReport
from atmospec.camera.description import Camera, load_camera
from atmospec.camera.translator import ObservationInfo, translate_header
from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.io import add_cards, provenance_cards
from atmospec.layout import REGISTRY_FILE

# ---------------------------------------------------------------------------- helpers


def image_product(path: Path, obstype: str, calibdate: str, *, filter_name: str | None = None,
                  grating: str | None = None, instrument: str = "LATISS", fill: float = 0.0,
                  provenance: list[tuple[str, Any, str]] | None = None,
                  camera: Camera | None = None) -> Path:
    """A tiny bias/dark/flat Exposure file. Registration checks the values (not the shape):
    a flat's pixels are ``1 + fill`` (a flat of zeros would be refused). With ``camera``,
    the product names its instrument and detector as every writer does (`detector_cards`);
    without, it names only ``instrument``, as older products."""
    header = fits.Header()
    header["OBSTYPE"] = obstype
    header["INSTRUME"] = instrument
    if camera is not None:
        add_cards(header, detector_cards(camera))
    header["HIERARCH CALIBDATE"] = calibdate
    if filter_name is not None:
        header["FILTER"] = filter_name
    if grating is not None:
        header["GRATING"] = grating
    # ``fill`` makes otherwise identical products differ, hence differ in SHA-256.
    value = 1.0 + fill if obstype == "flat" else fill
    return Exposure.from_image(np.full((10, 10), value), header).write(path, provenance or [])


def table_product(path: Path, obstype: str, calibdate: str = "2024-01-01T00:00:00",
                  instrument: str = "LATISS", **meta: Any) -> Path:
    """A tiny table product; FITS or ECSV after the suffix, metadata in ``meta``."""
    table = Table({"x0": [1], "y0": [2], "width": [3], "height": [4]})
    table.meta.update({"OBSTYPE": obstype, "INSTRUME": instrument, "CALIBDATE": calibdate})
    table.meta.update(meta)
    if path.suffix == ".ecsv":
        table.write(path, format="ascii.ecsv")
    else:
        table.write(path, format="fits")
    return path


def exposure(date_beg: str | None, *, filter_name: str = "SDSSr_65mm",
             grating: str = "empty", day_obs: str = "20240310") -> ObservationInfo:
    """An ObservationInfo from a minimal raw LATISS header (times in TAI)."""
    header: dict[str, Any] = {"INSTRUME": "LATISS", "OBSID": f"AT_O_{day_obs}_000042",
                              "FILTER": filter_name, "GRATING": grating, "TIMESYS": "TAI"}
    if date_beg is not None:
        header["DATE-BEG"] = date_beg
    return translate_header(header)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return tmp_path / "repo"


@pytest.fixture
def products(tmp_path: Path) -> Path:
    folder = tmp_path / "products"
    folder.mkdir()
    return folder


def stray_files(repo: Path) -> list[str]:
    """Hidden or temporary files left in the product folders."""
    return sorted(p.name for p in (repo / "calib").rglob("*")
                  if p.is_file() and (p.name.startswith(".") or p.name.endswith(".tmp")))


# ---------------------------------------------------------------------------- selection


def test_bias_chosen_by_exposure_date(repo: Path, products: Path) -> None:
    reg = CalibrationRegistry(repo)
    early = reg.register(image_product(products / "bias_a.fits", "bias", "2024-01-01"),
                         valid_to="2024-06-01")
    late = reg.register(image_product(products / "bias_b.fits", "bias", "2024-06-01", fill=1))
    assert (early.valid_from, early.valid_to) == ("2024-01-01T00:00:00.000",
                                                  "2024-06-01T00:00:00.000")
    assert (late.valid_from, late.valid_to) == ("2024-06-01T00:00:00.000", None)

    assert reg.select("bias", exposure("2024-03-10T02:00:00")).id == early.id
    assert reg.select("bias", exposure("2024-07-01T02:00:00")).id == late.id
    assert reg.select("bias", exposure("2023-12-31T23:00:00")) is None
    # 00:00:20 TAI on June 1st is 23:59:43 UTC on May 31st (TAI - UTC = 37 s): still early.
    assert reg.select("bias", exposure("2024-06-01T00:00:20")).id == early.id
    assert reg.select("bias", exposure("2024-06-01T00:00:40")).id == late.id


def test_day_obs_is_the_fallback_time(repo: Path, products: Path) -> None:
    reg = CalibrationRegistry(repo)
    early = reg.register(image_product(products / "a.fits", "bias", "2024-01-01"),
                         valid_to="2024-06-01")
    late = reg.register(image_product(products / "b.fits", "bias", "2024-06-01", fill=1))
    # No usable time: the middle of night day_obs, i.e. the next day at 00:00 UTC.
    info = exposure(None, day_obs="20240531")
    assert info.datetime_begin is None
    assert exposure_time_utc(info).isoformat() == "2024-06-01T00:00:00"
    assert reg.select("bias", info).id == late.id
    assert reg.select("bias", exposure(None, day_obs="20240530")).id == early.id


def test_validity_end_is_respected(repo: Path, products: Path) -> None:
    reg = CalibrationRegistry(repo)
    dark = reg.register(image_product(products / "dark.fits", "dark", "2024-01-01"),
                        valid_to="2024-02-01T12:00:00")
    # 12:00:36 TAI is 11:59:59 UTC; 12:00:37 TAI is 12:00:00 UTC, the (excluded) end.
    assert reg.select("dark", exposure("2024-02-01T12:00:36")).id == dark.id
    assert reg.select("dark", exposure("2024-02-01T12:00:37")) is None
    assert reg.select("dark", exposure("2024-03-01T00:00:00")) is None
    with pytest.raises(BadInputError, match="not after valid_from") as excinfo:
        reg.register(image_product(products / "d2.fits", "dark", "2024-05-01", fill=2),
                     valid_to="2024-04-01")
    assert excinfo.value.path == str(products / "d2.fits")


def test_most_recent_then_nearest(repo: Path, products: Path) -> None:
    reg = CalibrationRegistry(repo)
    jan = reg.register(image_product(products / "jan.fits", "bias", "2024-01-01"),
                       valid_from="2023-01-01")
    mar = reg.register(image_product(products / "mar.fits", "bias", "2024-03-01", fill=1),
                       valid_from="2023-01-01")
    assert jan.calib_date == "2024-01-01T00:00:00.000"
    # Both valid; the latest calib_date not after the exposure wins.
    assert reg.select("bias", exposure("2024-04-01T00:00:00")).id == mar.id
    assert reg.select("bias", exposure("2024-02-01T00:00:00")).id == jan.id
    # Both made after the exposure: the nearest in time.
    assert reg.select("bias", exposure("2023-06-01T00:00:00")).id == jan.id


def test_certification_overrides_recency(repo: Path, products: Path) -> None:
    reg = CalibrationRegistry(repo)
    old = reg.register(image_product(products / "old.fits", "bias", "2024-01-01"))
    new = reg.register(image_product(products / "new.fits", "bias", "2024-03-01", fill=1))
    other = reg.register(image_product(products / "other.fits", "bias", "2023-01-01", fill=2),
                         valid_to="2023-06-01", certify=True)
    when = exposure("2024-04-01T00:00:00")
    assert reg.select("bias", when).id == new.id

    assert reg.certify(old.id).certified
    assert reg.select("bias", when).id == old.id

    # Certifying the newer one uncertifies the overlapping old one, not the 2023 one.
    reg.certify(new.id)
    certified = {r.id: r.certified for r in reg.list("bias")}
    assert certified == {old.id: False, new.id: True, other.id: True}
    assert reg.select("bias", when).id == new.id
    with pytest.raises(BadInputError, match="no calibration product with id 99"):
        reg.certify(99)


def test_flat_chosen_by_filter_and_disperser(repo: Path, products: Path) -> None:
    reg = CalibrationRegistry(repo)
    flat_r = reg.register(image_product(products / "flat_r.fits", "flat", "2024-01-01",
                                        filter_name="SDSSr_65mm~empty"))
    flat_g = reg.register(image_product(products / "flat_g.fits", "flat", "2024-01-01",
                                        filter_name="SDSSg_65mm~EMPTY", fill=1))
    holo = reg.register(image_product(products / "flat_holo.fits", "flat", "2024-01-01",
                                      filter_name="empty~holo4_003", fill=2))
    assert (flat_g.physical_filter, flat_g.disperser) == ("SDSSg_65mm~empty", "empty")
    assert (holo.physical_filter, holo.disperser) == ("empty~holo4_003", "holo4_003")
    # Raw-style keys (FILTER and GRATING apart) say the same thing.
    ronchi = reg.register(image_product(products / "flat_ronchi.fits", "flat", "2024-01-01",
                                        filter_name="SDSSr_65mm", grating="ronchi170lpmm",
                                        fill=4))
    assert ronchi.physical_filter == "SDSSr_65mm~ronchi170lpmm"
    t = "2024-03-10T02:00:00"
    assert reg.select("flat", exposure(t, filter_name="SDSSr_65mm")).id == flat_r.id
    assert reg.select("flat", exposure(t, filter_name="SDSSg_65mm")).id == flat_g.id
    spectro = exposure(t, filter_name="empty", grating="holo4_003")
    assert spectro.is_dispersed
    assert reg.select("flat", spectro).id == holo.id
    # No r + hologram flat: the imaging r flat.
    r_holo = exposure(t, filter_name="SDSSr_65mm", grating="holo4_003")
    assert reg.select("flat", r_holo).id == flat_r.id
    r_ronchi = exposure(t, filter_name="SDSSr_65mm", grating="ronchi170lpmm")
    assert reg.select("flat", r_ronchi).id == ronchi.id
    # A spectro flat never serves an imaging exposure; no white-light flat exists.
    assert reg.select("flat", exposure(t, filter_name="empty")) is None
    assert reg.select("flat", exposure(t, filter_name="SDSSi_65mm")) is None
    # A bias does not depend on the filter.
    bias = reg.register(image_product(products / "bias.fits", "bias", "2024-01-01", fill=3))
    assert reg.select("bias", exposure(t, filter_name="SDSSg_65mm")).id == bias.id


def test_select_all_returns_existing_absolute_paths(repo: Path, products: Path) -> None:
    reg = CalibrationRegistry(repo)
    reg.register(image_product(products / "bias.fits", "bias", "2024-01-01"))
    reg.register(image_product(products / "flat.fits", "flat", "2024-01-01",
                               filter_name="SDSSr_65mm~empty", fill=1))
    reg.register(table_product(products / "defects.ecsv", "defects"))
    reg.register(table_product(products / "ptc.fits", "ptc"))
    # Rubin's linearizer files say LINEARITY; a FITS table keeps its meta in extension 1.
    linearizer = reg.register(table_product(products / "lin.fits", "LINEARITY"))
    assert linearizer.kind == "linearizer"
    assert "OBSTYPE" not in fits.getheader(products / "lin.fits", 0)
    reg.register(table_product(products / "crosstalk.ecsv", "CROSSTALK", "1970-01-01"))

    files = reg.select_all(exposure("2024-03-10T02:00:00"))
    assert isinstance(files, CalibrationFiles)
    assert files.dark is None
    chosen = {k: v for k, v in vars(files).items() if v is not None}
    assert set(chosen) == {"bias", "flat", "defects", "ptc", "linearizer", "crosstalk"}
    for path in chosen.values():
        assert Path(path).is_absolute()
        assert Path(path).is_file()
        assert Path(path).is_relative_to(repo.resolve() / "calib")
    assert Path(files.defects).parent.name == "defects"
    only = reg.select_all(exposure("2024-03-10T02:00:00"), kinds=("bias",))
    assert only == CalibrationFiles(bias=files.bias)


# ---------------------------------------------------------------------------- refusals


def test_refusals_name_the_file(repo: Path, products: Path) -> None:
    reg = CalibrationRegistry(repo)
    cases = {
        "OBSTYPE 'science' is not a calibration kind":
            image_product(products / "sci.fits", "science", "2024-01-01"),
        "for instrument LSSTComCam; this registry is for LATISS":
            image_product(products / "comcam.fits", "bias", "2024-01-01",
                          instrument="LSSTComCam", fill=1),
        "no such file": products / "missing.fits",
        "no OBSTYPE": table_product(products / "anon.ecsv", ""),
        "neither FITS nor ECSV": products / "notes.txt",
        "needs a FILTER": image_product(products / "flat.fits", "flat", "2024-01-01", fill=2),
        "IMAGE extension": table_product(products / "tablebias.fits", "bias"),
        "CALIBDATE 'soon' is not an ISO date":
            image_product(products / "soon.fits", "dark", "soon", fill=3),
        "validity: 'tomorrow' is not an ISO date":
            image_product(products / "good.fits", "bias", "2024-01-01", fill=4),
    }
    (products / "notes.txt").write_text("bias, honest\n")
    for problem, path in cases.items():
        valid_from = "tomorrow" if problem.startswith("validity") else None
        with pytest.raises(BadInputError) as excinfo:
            reg.register(path, valid_from=valid_from)
        assert excinfo.value.path == str(path), problem
        assert problem in excinfo.value.problem
    assert reg.list() == []
    assert [p for p in (repo / "calib").rglob("*") if p.is_file()] == [repo / REGISTRY_FILE]
    with pytest.raises(ValueError, match="unknown calibration kind 'fringe'"):
        reg.list("fringe")


def test_old_instrument_name_is_latiss(repo: Path, products: Path) -> None:
    reg = CalibrationRegistry(repo)
    record = reg.register(image_product(products / "b.fits", "BIAS", "2018-09-20",
                                        instrument="LSST_ATISS"))
    assert (record.kind, record.instrument) == ("bias", "LATISS")


def test_duplicate_is_refused(repo: Path, products: Path) -> None:
    reg = CalibrationRegistry(repo)
    path = image_product(products / "bias.fits", "bias", "2024-01-01")
    first = reg.register(path)
    with pytest.raises(BadInputError, match=f"already registered as bias id {first.id}"):
        reg.register(path, valid_from="2025-01-01")
    assert [r.id for r in reg.list()] == [first.id]
    assert stray_files(repo) == []


# ---------------------------------------------------------------------------- storage


def test_stored_file_and_sha256(repo: Path, products: Path) -> None:
    source = image_product(products / "bias.fits", "bias", "2024-01-01")
    reg = CalibrationRegistry(repo)
    record = reg.register(source, link=False)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert record.sha256 == digest
    assert hashlib.sha256(record.absolute_path.read_bytes()).hexdigest() == digest
    assert record.path == f"calib/bias/bias.{digest[:12]}.fits"
    assert record.absolute_path == repo.resolve() / record.path
    assert not record.absolute_path.samefile(source)  # a copy
    assert record.source == str(source.resolve())
    assert reg.check() == {}

    linked = reg.register(image_product(products / "b2.fits", "bias", "2024-01-02", fill=1))
    assert linked.absolute_path.samefile(products / "b2.fits")  # same file system: a link

    with open(record.absolute_path, "r+b") as stream:  # damage the stored copy
        stream.seek(-1, 2)
        stream.write(b"X")
    linked.absolute_path.unlink()
    assert reg.check() == {record.id: "sha256 mismatch", linked.id: "missing"}
    with pytest.raises(BadInputError, match=f"bias id {linked.id} is registered but missing"):
        reg.select("bias", exposure("2024-03-01T00:00:00"))


def test_interrupted_copy_leaves_nothing(repo: Path, products: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    reg = CalibrationRegistry(repo)
    source = image_product(products / "bias.fits", "bias", "2024-01-01")
    report = VerificationReport("bias", "bias.fits")
    report.add("C10", TestResult("mean_below_sigma", 0.3, 8.1, "|value| <= threshold"))
    report.write(source)

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    # Failing before the final rename, then after the renames but before the commit.
    for target in ("replace", "fsync_directory"):
        with monkeypatch.context() as patch:
            if target == "replace":
                patch.setattr(repository_module.os, "replace", fail)
            else:
                patch.setattr(repository_module, target, fail)
            with pytest.raises(OSError, match="disk full"):
                reg.register(source)
        assert reg.list() == [], target
        assert [p.name for p in (repo / "calib" / "bias").iterdir()] == [], target
    record = reg.register(source)
    assert stray_files(repo) == []
    assert sorted(p.name for p in (repo / "calib" / "bias").iterdir()) == sorted(
        [record.absolute_path.name, Path(record.verification_path).name])


def test_verification_report_travels_with_the_product(repo: Path, products: Path) -> None:
    source = image_product(products / "flat.fits", "flat", "2024-01-01",
                           filter_name="SDSSr_65mm~empty")
    report = VerificationReport("flat", "flat.fits")
    report.add("C10", TestResult("noise_matches", 1.2, 1.5, "value <= threshold"))
    report.add("C11", TestResult("noise_matches", 2.5, 1.5, "value <= threshold"))
    report.add(None, TestResult("uniformity", 0.5, 0.1, "value <= threshold"))
    report_path = report.write(source)
    reg = CalibrationRegistry(repo)
    record = reg.register(source)
    assert record.verification_passed is False
    assert record.verification_failures == ("C11:noise_matches", "detector:uniformity")
    stored = repo.resolve() / record.verification_path
    assert stored == record.absolute_path.with_name(
        record.absolute_path.name.removesuffix(".fits") + ".verify.json")
    assert json.loads(stored.read_text()) == json.loads(report_path.read_text())

    plain = reg.register(image_product(products / "bias.fits", "bias", "2024-01-01"))
    assert (plain.verification_passed, plain.verification_failures) == (None, ())
    assert plain.verification_path is None

    removed = reg.remove(record.id)
    assert not removed.absolute_path.exists() and not stored.exists()
    assert [r.id for r in reg.list()] == [plain.id]
    assert source.exists()  # the registry removes its own copy only


def test_provenance_is_recorded(repo: Path, products: Path) -> None:
    cards = provenance_cards("bias", ["AT_O_20240101_000001.fits", "AT_O_20240101_000002.fits"],
                             {"sigma": 3.0, "method": "median"})
    source = image_product(products / "bias.fits", "bias", "2024-01-01", provenance=cards)
    record = CalibrationRegistry(repo).register(source)
    provenance = json.loads(record.provenance)
    assert provenance["ATMSTAGE"] == "bias"
    assert provenance["inputs"] == ["AT_O_20240101_000001.fits", "AT_O_20240101_000002.fits"]
    assert provenance["config"] == {"method": "median", "sigma": 3.0}
    assert record.to_dict()["provenance"] == provenance
    # ECSV tables keep the same keys in their meta, HISTORY as a list of lines.
    history = [value for key, value, _ in cards if key == "HISTORY"]
    table = table_product(products / "defects.ecsv", "defects", ATMSTAGE="defects",
                          ATMIN0="dark.fits", ATMIN1="flat.fits", HISTORY=history)
    provenance = json.loads(CalibrationRegistry(repo).register(table).provenance)
    assert provenance["ATMSTAGE"] == "defects"
    assert provenance["inputs"] == ["dark.fits", "flat.fits"]
    assert provenance["config"] == {"method": "median", "sigma": 3.0}


def test_registry_survives_reopening(repo: Path, products: Path) -> None:
    with pytest.raises(BadInputError, match="no calibration registry here"):
        CalibrationRegistry(repo, create=False)
    assert not repo.exists()
    first = CalibrationRegistry(repo)
    record = first.register(image_product(products / "bias.fits", "bias", "2024-01-01"),
                            certify=True)
    again = CalibrationRegistry(repo, create=False)
    assert again.list() == [record]
    assert again.instrument == "LATISS"
    with pytest.raises(BadInputError, match="registry is for LATISS, not LSSTComCam"):
        CalibrationRegistry(repo, instrument="LSSTComCam")
    with sqlite3.connect(repo / REGISTRY_FILE) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_corrupt_or_newer_registry_is_refused(repo: Path) -> None:
    CalibrationRegistry(repo)
    db = repo / REGISTRY_FILE
    conn = sqlite3.connect(db)
    newer = SCHEMA_VERSION + 1
    conn.execute("INSERT INTO schema_version VALUES (?, '2030-01-01T00:00:00.000')", (newer,))
    conn.commit()
    conn.close()
    with pytest.raises(BadInputError, match=f"schema version {newer} is newer") as excinfo:
        CalibrationRegistry(repo)
    assert excinfo.value.path == str(db.resolve())

    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(BadInputError, match="not a usable calibration registry") as excinfo:
        CalibrationRegistry(repo)
    assert excinfo.value.path == str(db.resolve())


def test_concurrent_registrations(repo: Path, products: Path) -> None:
    CalibrationRegistry(repo)
    sources = [image_product(products / f"bias{i}.fits", "bias", f"2024-01-0{i + 1}", fill=i)
               for i in range(4)]
    errors: list[BaseException] = []

    def register(path: Path) -> None:
        try:
            CalibrationRegistry(repo).register(path)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(p,)) for p in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    records = CalibrationRegistry(repo).list()
    assert sorted(r.calib_date[:10] for r in records) == [
        "2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]
    assert len({r.id for r in records}) == 4
    assert stray_files(repo) == []


def test_time_normalisation() -> None:
    assert to_utc_iso("20240624") == "2024-06-24T00:00:00.000"
    assert to_utc_iso("2024-06-24T03:00:00-04:00") == "2024-06-24T07:00:00.000"
    assert to_utc_iso("2024-06-24T03:00:00.5Z") == "2024-06-24T03:00:00.500"
    with pytest.raises(BadInputError, match="'June' is not an ISO date"):
        to_utc_iso("June")


# ---------------------------------------------------------------------------- detectors

#: Two science detectors of one LSSTCam raft: the same e2v sensor type, the same shape, so
#: only the products' DETECTOR tells their products apart.
R22_S11 = load_camera("lsstcam", "R22_S11")
R22_S12 = load_camera("lsstcam", "R22_S12")


def lsstcam_frame(detector: str, date_beg: str = "2025-05-10T03:00:00") -> ObservationInfo:
    """One detector's frame of an LSSTCam exposure (a LATISS header's translation
    relabelled: the LSSTCam translator is not part of this change)."""
    exposure_id = "MC_O_20250509_000042"
    return replace(exposure(date_beg, day_obs="20250509"), instrument="LSSTCam",
                   exposure_id=exposure_id, obs_id=f"{exposure_id}_{detector}",
                   detector=detector)


def ptc_product(path: Path, camera: Camera, gain: float) -> Path:
    """A PTC file of ``camera`` by the real writer (`ptc_table`), from flat pairs on the
    Astier curve of ``gain`` (e⁻/ADU), 6 e⁻ read noise and a00 = -2e-6 /e⁻ (an e2v
    sensor's brighter-fatter level): its fitted gains are ``gain``."""
    read_noise = 6.0
    mean = np.geomspace(500.0, 60_000.0, 8)
    var = astier_model(mean, -2e-6, gain, read_noise**2)
    n_amps = camera.n_amps
    pairs = [PairStats(exptime=float(m / 1000.0), obs_ids=(f"a{i}", f"b{i}"),
                       mean=np.full(n_amps, m), var=np.full(n_amps, v),
                       n_pixels=np.full(n_amps, 1_000_000), ratio=np.ones(n_amps),
                       overscan_var=np.full(n_amps, (read_noise / gain) ** 2),
                       date=Time("2025-05-01T00:00:00", scale="tai"))
             for i, (m, v) in enumerate(zip(mean, var, strict=True))]
    return Ptc(ptc_table(pairs, camera)).write(path)


def test_each_detector_gets_its_own_products(repo: Path, products: Path) -> None:
    """Biases and PTCs of two detectors, valid over the same time and both certified: a
    frame gets its own detector's, which a PTC's gains show."""
    reg = CalibrationRegistry(repo, instrument="LSSTCam")
    bias = {cam.detector: reg.register(
                image_product(products / f"bias_{cam.detector}.fits", "bias", "2025-05-01",
                              camera=cam, fill=i), certify=True)
            for i, cam in enumerate((R22_S11, R22_S12))}
    gains = {"R22_S11": 1.3, "R22_S12": 1.7}
    ptc = {cam.detector: reg.register(ptc_product(products / f"ptc_{cam.detector}.fits", cam,
                                                  gains[cam.detector]))
           for cam in (R22_S11, R22_S12)}
    assert {d: r.detector for d, r in bias.items()} == {"R22_S11": "R22_S11",
                                                       "R22_S12": "R22_S12"}
    # Certification is per detector: certifying R22_S12's left R22_S11's certified.
    assert all(r.certified for r in reg.list("bias"))
    # Stored apart: one folder per detector.
    assert bias["R22_S11"].path.startswith("calib/bias/R22_S11/")
    assert ptc["R22_S12"].path.startswith("calib/ptc/R22_S12/")

    for cam in (R22_S11, R22_S12):
        frame = lsstcam_frame(cam.detector)
        assert reg.select("bias", frame).id == bias[cam.detector].id
        files = reg.select_all(frame)
        assert files.bias == str(bias[cam.detector].absolute_path)
        fitted = Ptc.read(files.ptc, cam).gains(cam).gain
        np.testing.assert_allclose(fitted, gains[cam.detector], rtol=1e-4)
    # A detector without products gets none, not a neighbour's.
    assert reg.select_all(lsstcam_frame("R22_S10")) == CalibrationFiles()
    # A frame must say which detector it is.
    with pytest.raises(BadInputError, match="names no detector"):
        reg.select("bias", replace(lsstcam_frame("R22_S11"), detector=None))
    assert [r.id for r in reg.list(detector="R22_S12")] == [bias["R22_S12"].id,
                                                            ptc["R22_S12"].id]


def test_detector_of_a_product(repo: Path, products: Path) -> None:
    """No DETECTOR: the only detector of LATISS, refused for LSSTCam; an unknown one is
    refused; Rubin's detector number (their shipped LATISS files write DETECTOR: 0) is
    the detector of that number."""
    latiss = CalibrationRegistry(repo / "latiss")
    plain = latiss.register(image_product(products / "old_bias.fits", "bias", "2024-01-01"))
    assert plain.detector == "RXX_S00"
    assert plain.path.startswith("calib/bias/old_bias.")  # LATISS keeps its layout
    rubin = resources.files("atmospec.data") / "latiss_defects.ecsv"
    shutil.copy(Path(str(rubin)), products / "latiss_defects.ecsv")
    assert latiss.register(products / "latiss_defects.ecsv").detector == "RXX_S00"

    lsstcam = CalibrationRegistry(repo / "lsstcam", instrument="LSSTCam")
    cases = {
        "product for LSSTCam names no DETECTOR":
            image_product(products / "anon.fits", "bias", "2025-05-01", instrument="LSSTCam"),
        "DETECTOR 'R99_S99' is not a detector of LSSTCam":
            table_product(products / "r99.ecsv", "defects", instrument="LSSTCam",
                          DETECTOR="R99_S99"),
        "DETECTOR 94 is R22_S11, but DETECTOR_NAME says R22_S12":
            table_product(products / "mixed.ecsv", "defects", instrument="LSSTCam",
                          DETECTOR=94, DETECTOR_NAME="R22_S12"),
    }
    for problem, path in cases.items():
        with pytest.raises(BadInputError) as excinfo:
            lsstcam.register(path)
        assert excinfo.value.path == str(path)
        assert excinfo.value.problem.startswith(problem)
        assert "\n" not in str(excinfo.value)
    numbered = table_product(products / "rubin.ecsv", "defects", instrument="LSSTCam",
                             DETECTOR=94)
    assert lsstcam.register(numbered).detector == "R22_S11"


#: The version-1 schema, as atmospec wrote it before products had a detector.
_V1_DDL = """
CREATE TABLE schema_version (version INTEGER NOT NULL PRIMARY KEY, applied_at TEXT NOT NULL);
CREATE TABLE registry_info (key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE products (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    instrument TEXT NOT NULL,
    physical_filter TEXT,
    disperser TEXT,
    valid_from TEXT NOT NULL,
    valid_to TEXT,
    calib_date TEXT NOT NULL,
    path TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL UNIQUE,
    registered_at TEXT NOT NULL,
    certified INTEGER NOT NULL DEFAULT 0,
    provenance TEXT NOT NULL,
    verification_passed INTEGER,
    verification_failures TEXT NOT NULL DEFAULT '[]',
    verification_path TEXT,
    source TEXT NOT NULL,
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);
CREATE INDEX products_by_configuration ON products (kind, instrument, physical_filter);
"""


def v1_registry(repo: Path, products: Path, instrument: str) -> Path:
    """A version-1 registry of ``instrument`` holding one bias (id 2; id 3 was removed)."""
    db = repo / REGISTRY_FILE
    (repo / "calib" / "bias").mkdir(parents=True)
    source = image_product(products / "bias.fits", "bias", "2024-01-01")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    stored = f"calib/bias/bias.{digest[:12]}.fits"
    shutil.copy(source, repo / stored)
    with sqlite3.connect(db) as conn:
        conn.executescript(_V1_DDL)
        conn.execute("INSERT INTO schema_version VALUES (1, '2024-01-02T00:00:00.000')")
        conn.execute("INSERT INTO registry_info VALUES ('instrument', ?)", (instrument,))
        conn.execute(
            "INSERT INTO products (id, kind, instrument, valid_from, calib_date, path, sha256, "
            "registered_at, certified, provenance, source) VALUES (2, 'bias', ?, "
            "'2024-01-01T00:00:00.000', '2024-01-01T00:00:00.000', ?, ?, "
            "'2024-01-02T00:00:00.000', 1, '{}', ?)", (instrument, stored, digest, str(source)))
        conn.execute("UPDATE sqlite_sequence SET seq = 3 WHERE name = 'products'")
    conn.close()
    return db


def test_version_1_registry_is_upgraded(repo: Path, products: Path) -> None:
    db = v1_registry(repo, products, "LATISS")
    reg = CalibrationRegistry(repo, create=False)
    [record] = reg.list()
    assert (record.id, record.detector, record.certified) == (2, "RXX_S00", True)
    with sqlite3.connect(db) as conn:
        assert [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY 1")] \
            == [1, 2]
        columns = {row[1]: row[3] for row in conn.execute("PRAGMA table_info(products)")}
        assert columns["detector"] == 1  # NOT NULL
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    assert reg.select("bias", exposure("2024-03-10T02:00:00")).id == 2
    # The AUTOINCREMENT counter survived the rebuild: the removed id 3 is never reused.
    new = reg.register(image_product(products / "bias2.fits", "bias", "2024-02-01", fill=1))
    assert new.id == 4
    assert CalibrationRegistry(repo, create=False).list() == reg.list()  # upgraded once


def test_version_1_registry_of_several_detectors_is_refused(repo: Path,
                                                            products: Path) -> None:
    """Impossible for a real version-1 registry (they were LATISS's), but refused clearly,
    the file left as it was."""
    db = v1_registry(repo, products, "LSSTCAM")
    before = db.read_bytes()
    with pytest.raises(BadInputError, match="its 1 products name no detector and LSSTCAM "
                                            "has several") as excinfo:
        CalibrationRegistry(repo, create=False)
    assert excinfo.value.path == str(db.resolve())
    assert db.read_bytes() == before
