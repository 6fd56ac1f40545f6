"""Calibration products carry and check their integrity (issue 16, items 5 and 12).

Every FITS product is written with ``CHECKSUM``/``DATASUM``; a truncated file or one whose
sums do not match is refused where it is read (ISR) and where it is registered or certified;
a product without sums (written before they existed) is accepted when whole. Values its
kind cannot have (an all-NaN or all-zero flat, a bias of 1000 e⁻) are refused, and an
explicit flat of another filter than the exposure's too: one line naming the product.
"""

from __future__ import annotations

import shutil
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

import atmospec.calib.registry.repository as repository_module
from atmospec.calib.products import Bias, Dark, Flat, Ptc
from atmospec.calib.registry import CalibrationRegistry
from atmospec.camera.description import load_camera
from atmospec.cli import main
from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.night.calibs import BuiltProduct, _register

pytestmark = pytest.mark.reliability

CAMERA = load_camera("latiss")
FILTER_R = "SDSSr_65mm~empty"
FILTER_G = "SDSSg_65mm~empty"


# ------------------------------------------------------------------------------- helpers


def product_exposure(kind: str, value: float, shape: tuple[int, int] = CAMERA.detector_shape,
                     physical_filter: str | None = None) -> Exposure:
    """A master bias/dark/flat of constant ``value`` (plus a little noise, so that a
    flipped byte changes a real pixel)."""
    rng = np.random.default_rng(1)
    image = np.full(shape, value, dtype=np.float32)
    if np.isfinite(value) and value != 0:
        image += rng.normal(0, 1e-3 * abs(value), shape).astype(np.float32)
    header = fits.Header()
    header["OBSTYPE"] = kind
    header["INSTRUME"] = "LATISS"
    header["HIERARCH CALIBDATE"] = "2018-01-01T00:00:00"
    header["FILTER"] = physical_filter or "NONE"
    return Exposure.from_image(image, header)


def write_legacy(exposure: Exposure, path: Path) -> Path:
    """As products were written before atmospec added checksums."""
    exposure.to_hdulist().writeto(path)
    return path


def truncated_copy(source: Path, path: Path, keep: int) -> Path:
    path.write_bytes(source.read_bytes()[:keep])
    return path


def data_offset(path: Path, extname: str) -> int:
    """Byte offset of an extension's data in the file."""
    with fits.open(path) as hdul:
        return hdul.fileinfo(hdul.index_of(extname))["datLoc"]


def flip_byte(source: Path, path: Path, offset: int) -> Path:
    data = bytearray(source.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))
    return path


def run_isr(raw: Path, out: Path, capsys, *options: str) -> tuple[int, list[str]]:
    status = main(["isr", str(raw), "--out", str(out), *options])
    _, err = capsys.readouterr()
    assert "Traceback" not in err
    return status, [line for line in err.splitlines() if line.strip()]


def assert_refused(status: int, lines: list[str], out: Path, *words: str) -> None:
    """Exit 2, one stderr line holding every word, nothing written in ``out``."""
    assert status == 2
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not out.exists() or not any(out.iterdir())


# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("products")


@pytest.fixture(scope="module")
def raw_r(folder: Path, template_raw: Path) -> Path:
    """A raw LATISS frame taken through SDSSr_65mm, no disperser."""
    raw = folder / "AT_C_20180920_000065.fits"
    shutil.copyfile(template_raw, raw)
    with fits.open(raw, mode="update") as hdul:
        hdul[0].header["FILTER"] = "SDSSr_65mm"
        hdul[0].header["GRATING"] = "empty_1"
    return raw


@pytest.fixture(scope="module")
def bias_file(folder: Path) -> Path:
    """A whole LATISS master bias written by atmospec (with checksums)."""
    return Bias(product_exposure("bias", 0.0)).write(folder / "bias.fits")


# ------------------------------------------------------------------------------- item 5


@pytest.mark.timeout(60)
def test_products_are_written_with_checksums(bias_file: Path) -> None:
    with fits.open(bias_file) as hdul:
        assert [hdu.name for hdu in hdul] == ["PRIMARY", "IMAGE", "MASK", "VARIANCE"]
        for hdu in hdul:
            assert "CHECKSUM" in hdu.header and "DATASUM" in hdu.header
            assert hdu.verify_checksum() == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["primary header", "image data", "last 1000 bytes",
                                   "last byte"])
def test_issue16_item5_truncated_product_is_refused(tmp_path, capsys, raw_r, bias_file,
                                                    where):
    size = bias_file.stat().st_size
    keep = {"primary header": 1000,
            "image data": data_offset(bias_file, "IMAGE") + 1_000_000,
            "last 1000 bytes": size - 1000,
            "last byte": size - 1}[where]
    bad = truncated_copy(bias_file, tmp_path / "bias_cut.fits", keep)
    out = tmp_path / "out"
    status, lines = run_isr(raw_r, out, capsys, "--bias", str(bad))
    words = ["bias_cut.fits"] + (["truncated"] if where != "primary header" else [])
    assert_refused(status, lines, out, *words)


@pytest.mark.timeout(60)
def test_issue16_item5_flipped_byte_is_a_checksum_mismatch(tmp_path, capsys, raw_r,
                                                           bias_file):
    bad = flip_byte(bias_file, tmp_path / "bias_flip.fits",
                    data_offset(bias_file, "IMAGE") + 123_457)
    out = tmp_path / "out"
    status, lines = run_isr(raw_r, out, capsys, "--bias", str(bad))
    assert_refused(status, lines, out, "bias_flip.fits", "checksum", "IMAGE")


@pytest.mark.timeout(60)
def test_issue16_item5_legacy_product_without_checksum(tmp_path, capsys, raw_r):
    """Written before checksums existed: used when whole, refused when truncated."""
    legacy = write_legacy(product_exposure("bias", 5.0), tmp_path / "bias_legacy.fits")
    with fits.open(legacy) as hdul:
        assert all("CHECKSUM" not in hdu.header for hdu in hdul)
    out = tmp_path / "out"
    status, lines = run_isr(raw_r, out, capsys, "--bias", str(legacy), "--steps",
                            "overscan,gain,assemble,bias")
    assert status == 0 and lines == []
    post = Exposure.read(out / "AT_C_20180920_000065_postisr.fits")
    assert post.metadata["HIERARCH ATM CALIB BIAS"] == "bias_legacy.fits"

    cut = truncated_copy(legacy, tmp_path / "bias_legacy_cut.fits",
                         legacy.stat().st_size - 1000)
    out = tmp_path / "out2"
    status, lines = run_isr(raw_r, out, capsys, "--bias", str(cut))
    assert_refused(status, lines, out, "bias_legacy_cut.fits", "truncated")


@pytest.mark.timeout(60)
def test_issue16_item5_truncated_product_is_neither_registered_nor_certified(
        tmp_path, capsys, bias_file):
    repo = tmp_path / "repo"
    cut = truncated_copy(bias_file, tmp_path / "bias_cut.fits", bias_file.stat().st_size - 1000)
    status = main(["calib", "register", str(cut), "--repo", str(repo), "--certify"])
    _, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and "Traceback" not in err
    assert "bias_cut.fits" in lines[0] and "truncated" in lines[0]
    assert CalibrationRegistry(repo).list() == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("damage", ["truncated", "checksum"])
def test_issue16_item5_registry_refuses_damaged_products(tmp_path, damage):
    """Through the registry API, on a small product (the registry does not check shapes)."""
    good = Bias(product_exposure("bias", 1.0, (40, 40))).write(tmp_path / "small.fits")
    if damage == "truncated":
        bad = truncated_copy(good, tmp_path / "small_bad.fits", good.stat().st_size - 1)
    else:
        bad = flip_byte(good, tmp_path / "small_bad.fits", data_offset(good, "IMAGE") + 17)
    registry = CalibrationRegistry(tmp_path / "repo")
    with pytest.raises(BadInputError, match=damage) as info:
        registry.register(bad, certify=True)
    assert info.value.path == str(bad)
    assert registry.list() == []
    assert registry.register(good, certify=True).certified


@pytest.mark.timeout(60)
def test_issue16_item5_certify_rechecks_the_stored_file(tmp_path):
    """A stored product changed after registration, or registered before the value checks
    existed, is not certified; the reason names the stored file."""
    registry = CalibrationRegistry(tmp_path / "repo")
    good = Bias(product_exposure("bias", 1.0, (40, 40))).write(tmp_path / "b.fits")
    record = registry.register(good, link=False)
    damaged = flip_byte(record.absolute_path, tmp_path / "x.fits",
                        data_offset(record.absolute_path, "IMAGE") + 5)
    shutil.copyfile(damaged, record.absolute_path)
    with pytest.raises(BadInputError, match=r"not certified.*sha256") as info:
        registry.certify(record.id)
    assert info.value.path == str(record.absolute_path)
    assert not registry.get(record.id).certified

    nan_flat = Flat(product_exposure("flat", np.nan, (40, 40), FILTER_R)).write(
        tmp_path / "nan_flat.fits")
    with pytest.MonkeyPatch.context() as patch:
        # As a registry filled before products were checked.
        patch.setattr(repository_module, "check_contents", lambda path, kind: None)
        old = registry.register(nan_flat)
    with pytest.raises(BadInputError, match="not certified: flat refused"):
        registry.certify(old.id)
    assert not registry.get(old.id).certified


# ------------------------------------------------------------------------------- item 12


@pytest.mark.timeout(60)
@pytest.mark.parametrize("value", [np.nan, 0.0, -1.0], ids=["nan", "zero", "negative"])
def test_issue16_item12_unusable_flat_is_refused(tmp_path, capsys, raw_r, value):
    flat = Flat(product_exposure("flat", value, physical_filter=FILTER_R)).write(
        tmp_path / "flat_bad.fits")
    out = tmp_path / "out"
    status, lines = run_isr(raw_r, out, capsys, "--flat", str(flat))
    assert_refused(status, lines, out, "flat_bad.fits", "flat refused", "NaN or <= 0")


@pytest.mark.timeout(60)
def test_issue16_item12_bias_of_1000_electrons_is_refused(tmp_path, capsys, raw_r):
    bias = Bias(product_exposure("bias", 1000.0)).write(tmp_path / "bias_1000.fits")
    out = tmp_path / "out"
    status, lines = run_isr(raw_r, out, capsys, "--bias", str(bias))
    assert_refused(status, lines, out, "bias_1000.fits", "bias refused", "median 1000")


@pytest.mark.timeout(60)
def test_issue16_item12_flat_of_another_filter_is_refused(tmp_path, capsys, raw_r):
    flat = Flat(product_exposure("flat", 1.0, physical_filter=FILTER_G)).write(
        tmp_path / "flat_g.fits")
    out = tmp_path / "out"
    status, lines = run_isr(raw_r, out, capsys, "--flat", str(flat))
    assert_refused(status, lines, out, "flat_g.fits", FILTER_G, FILTER_R,
                   "AT_C_20180920_000065")


@pytest.mark.timeout(60)
def test_issue16_item12_registry_refuses_unusable_flats(tmp_path):
    registry = CalibrationRegistry(tmp_path / "repo")
    for value in (np.nan, 0.0):
        flat = Flat(product_exposure("flat", value, (40, 40), FILTER_R)).write(
            tmp_path / f"flat_{value}.fits")
        with pytest.raises(BadInputError, match="flat refused"):
            registry.register(flat, certify=True)
    assert registry.list() == []


@pytest.mark.timeout(60)
def test_issue16_item12_night_does_not_certify_a_refused_product(tmp_path):
    """The night's automatic registration (night.calibs) records the reason in one line."""
    out = tmp_path / "night" / "20250301" / "flat_SDSSr_65mm.fits"
    out.parent.mkdir(parents=True)
    Flat(product_exposure("flat", 0.0, (40, 40), FILTER_R)).write(out)
    built: Future = Future()
    built.set_result(out)
    registry = CalibrationRegistry(tmp_path / "repo")
    product = _register(registry, BuiltProduct("flat", "SDSSr_65mm", out, "", ""), built,
                        certify=True)
    assert product.status == "failed"
    assert "flat refused" in product.detail and "\n" not in product.detail
    assert registry.list() == []


# ------------------------------------------------------------------------------- bounds


@pytest.mark.timeout(60)
def test_value_bounds_accept_real_products_and_a_few_bad_pixels():
    """The bounds refuse what cannot be a product and accept what a master looks like: a
    flat with a few NaN pixels (filled, flagged BAD), one with a masked dead amplifier, a
    dark of 0.002 e⁻/s, a bias of a few e⁻."""
    flat = product_exposure("flat", 1.0, physical_filter=FILTER_R)
    flat.image[100:110, 200] = np.nan
    checked = Flat.checked(flat, "flat@1", CAMERA)
    assert checked.exposure.get_mask("BAD").sum() == 10
    dead = product_exposure("flat", 1.0, physical_filter=FILTER_R)
    dead.image[:2000, :509] = 0.0
    dead.set_mask("BAD", dead.image == 0)
    Flat.checked(dead, "flat@2", CAMERA)
    Dark.checked(product_exposure("dark", 0.002), "dark@1", CAMERA)
    Bias.checked(product_exposure("bias", -3.0), "bias@1", CAMERA)
    with pytest.raises(BadInputError, match="dark refused: median 200"):
        Dark.checked(product_exposure("dark", 200.0), "dark@2", CAMERA)
    all_bad = product_exposure("flat", np.nan, physical_filter=FILTER_R)
    all_bad.set_mask("BAD", np.ones(all_bad.shape, bool))
    with pytest.raises(BadInputError, match=r"only 0\.0% of its pixels are usable"):
        Flat.checked(all_bad, "flat@3", CAMERA)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("damage", ["truncated", "checksum"])
def test_table_products_are_checked_too(tmp_path, damage):
    table = Table({"AMP": list(CAMERA.amp_names), "GAIN": np.ones(16),
                   "READ_NOISE": np.full(16, 6.0)})
    good = Ptc(table).write(tmp_path / "ptc.fits")
    assert Ptc.read(good, CAMERA).gains(CAMERA).gain.tolist() == [1.0] * 16
    if damage == "truncated":
        bad = truncated_copy(good, tmp_path / "ptc_bad.fits", good.stat().st_size - 1000)
    else:
        bad = flip_byte(good, tmp_path / "ptc_bad.fits", data_offset(good, "PTC") + 3)
    with pytest.raises(BadInputError, match=damage) as info:
        Ptc.read(bad, CAMERA)
    assert info.value.path == str(bad)
