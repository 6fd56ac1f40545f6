"""Calibration registry: registration, storage safety, and per-exposure selection."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

import atmospec.calib.registry.repository as repository_module
from atmospec.calib.isr_inputs import CalibrationFiles
from atmospec.calib.registry import (
    CalibrationRegistry,
    exposure_time_utc,
    to_utc_iso,
)
from atmospec.calib.verification import TestResult, VerificationReport
from atmospec.camera.translator import ObservationInfo, translate_header
from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.io import provenance_cards
from atmospec.layout import REGISTRY_FILE

# ---------------------------------------------------------------------------- helpers


def image_product(path: Path, obstype: str, calibdate: str, *, filter_name: str | None = None,
                  grating: str | None = None, instrument: str = "LATISS", fill: float = 0.0,
                  provenance: list[tuple[str, Any, str]] | None = None) -> Path:
    """A tiny bias/dark/flat Exposure file. Registration checks the values (not the shape):
    a flat's pixels are ``1 + fill`` (a flat of zeros would be refused)."""
    header = fits.Header()
    header["OBSTYPE"] = obstype
    header["INSTRUME"] = instrument
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
    with pytest.raises(BadInputError, match="registry is for LATISS, not LSSTCOMCAM"):
        CalibrationRegistry(repo, instrument="LSSTComCam")
    with sqlite3.connect(repo / REGISTRY_FILE) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_corrupt_or_newer_registry_is_refused(repo: Path) -> None:
    CalibrationRegistry(repo)
    db = repo / REGISTRY_FILE
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO schema_version VALUES (2, '2030-01-01T00:00:00.000')")
    conn.commit()
    conn.close()
    with pytest.raises(BadInputError, match="schema version 2 is newer") as excinfo:
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
