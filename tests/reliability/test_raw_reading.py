"""Issue 16, reading a raw: checked from its headers before any pixel is read, in a time
proportional to the file size, quietly (one line naming the file, never a flood of warnings).

Damaged files are made from a valid LATISS raw by editing its bytes in place (a card
replaced by another of the same length, a bit flipped), so that only the damage differs.
"""

from __future__ import annotations

import gzip
import shutil
import time
import warnings
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from astropy.io import fits
from conftest import make_template_raw
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from atmospec.camera.raw import check_raw_structure, read_raw
from atmospec.camera.translator import translate_header
from atmospec.cli import main
from atmospec.errors import BadInputError
from atmospec.night.index import check_raw_file

pytestmark = pytest.mark.reliability

FAST = ["--steps", "overscan,gain,assemble"]
NAME = "AT_C_20180920_000065.fits"


# ---------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid raw, never modified."""
    return make_template_raw(tmp_path_factory.mktemp("raw") / NAME)


@pytest.fixture(scope="module")
def plain_segments(raw: Path) -> np.ndarray:
    return read_raw(raw).segments


@pytest.fixture(scope="module")
def gz_raw(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gz") / f"{NAME}.gz"
    with raw.open("rb") as src, gzip.open(path, "wb", compresslevel=1) as dst:
        shutil.copyfileobj(src, dst)
    return path


@pytest.fixture(scope="module")
def fz_raw(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tile-compressed as LATISS does (RICE, one row per tile)."""
    path = tmp_path_factory.mktemp("fz") / f"{NAME}.fz"
    with fits.open(raw) as hdul:
        hdus = [fits.CompImageHDU(h.data, header=h.header, compression_type="RICE_1",
                                  tile_shape=(1, h.data.shape[1])) for h in hdul[1:]]
        fits.HDUList([fits.PrimaryHDU(header=hdul[0].header), *hdus]).writeto(path)
    return path


def _cards(path: Path) -> list[tuple[int, int, str]]:
    """``(hdu, byte offset, keyword)`` of every card of every header, END excluded."""
    out = []
    with fits.open(path) as hdul:
        spans = [(hdul.fileinfo(i)["hdrLoc"], hdul.fileinfo(i)["datLoc"])
                 for i in range(len(hdul))]
    data = path.read_bytes()
    for i, (start, end) in enumerate(spans):
        for at in range(start, end, 80):
            keyword = data[at:at + 8].decode("ascii").rstrip()
            if keyword == "END":
                break
            out.append((i, at, keyword))
    return out


def _card_offset(path: Path, hdu: int, keyword: str) -> int:
    return next(at for i, at, key in _cards(path) if i == hdu and key == keyword)


def _damaged_copy(raw: Path, dest: Path, hdu: int, keyword: str, image: bytes) -> Path:
    """A copy of ``raw`` whose card ``keyword`` of HDU ``hdu`` is replaced by ``image``
    (padded to 80 bytes): the file keeps its length and every other byte."""
    shutil.copyfile(raw, dest)
    offset = _card_offset(raw, hdu, keyword)
    with dest.open("r+b") as f:
        f.seek(offset)
        f.write(image.ljust(80))
    return dest


def _card(keyword: str, value: str) -> bytes:
    return f"{keyword:<8}= {value:>20}".encode("latin-1")


def _run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, list]:
    """The CLI in-process: status, stderr, and every Python warning raised meanwhile."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status = main(list(args))
    _, err = capsys.readouterr()
    return status, err, caught


def _assert_refused(status: int, err: str, caught: list, path: Path, out: Path,
                    *needles: str) -> str:
    """Exit 2, one stderr line naming the file (and ``needles``), no traceback, no warning,
    nothing written."""
    assert status == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err[:3000]
    assert path.name in lines[0] and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Warning" not in err and "WARNING" not in err
    assert [str(w.message) for w in caught] == []
    assert not out.exists() or list(out.iterdir()) == []
    return lines[0]


def _assert_one_line(exc: BadInputError, path: Path, *needles: str) -> None:
    text = str(exc)
    assert "\n" not in text and str(path) in text, text
    for needle in needles:
        assert needle in text, text


def _geometry(path: Path) -> tuple:
    """Where every HDU and every amplifier's pixels lie: what a header flip must not move
    without being refused."""
    layout = check_raw_structure(path)
    return (tuple((h.index, h.name, h.data_start, h.data_size) for h in layout.fits.hdus),
            tuple(h.index for h in layout.amp_hdus), layout.segment_shape)


# ---------------------------------------------------------------------------- item 3


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("keyword", "value", "needle"), [
    ("BITPIX", "36", "BITPIX = 36"),
    ("NAXIS1", "577", "has shape (2048, 577)"),
])
def test_issue16_item3_bit_flip_in_amp_header_is_one_line(raw, tmp_path, capsys, keyword,
                                                          value, needle):
    """BITPIX 32→36 or NAXIS1 576→577 in one Segment HDU: on main no answer after 120 s and
    >260,000 warning lines. Now one line, in seconds."""
    bad = _damaged_copy(raw, tmp_path / "flip.fits", 5, keyword, _card(keyword, value))
    out = tmp_path / "out"
    start = time.perf_counter()
    status, err, caught = _run(capsys, "isr", str(bad), "--out", str(out), *FAST)
    elapsed = time.perf_counter() - start
    _assert_refused(status, err, caught, bad, out, needle)
    assert elapsed < 20, elapsed


@pytest.fixture(scope="module")
def flip_target(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list, tuple]:
    """A private copy to flip bits in (each example restores it), its cards and geometry."""
    path = tmp_path_factory.mktemp("flip") / NAME
    shutil.copyfile(raw, path)
    return path, _cards(path), _geometry(path)


def _flip_and_check(path: Path, offset: int, bit: int, geometry: tuple) -> bool:
    """Flip one bit, check the headers, restore the bit. The file is refused in one line, or
    accepted with every HDU and amplifier where it was; quietly and quickly either way.
    True if it was refused."""
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))
    try:
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                found = _geometry(path)
            except BadInputError as exc:
                _assert_one_line(exc, path)
                refused = True
            else:
                assert found == geometry
                refused = False
        assert [str(w.message) for w in caught] == []
        assert time.perf_counter() - start < 10
        return refused
    finally:
        with path.open("r+b") as f:
            f.seek(offset)
            f.write(bytes([byte]))


@pytest.mark.timeout(240)
@settings(max_examples=40, deadline=None, database=None)
@given(data=st.data())
def test_issue16_item3_bit_flips_in_amp_headers_refused_or_harmless(flip_target, data):
    path, cards, geometry = flip_target
    amp_cards = [c for c in cards if c[0] > 0]
    _, at, _ = data.draw(st.sampled_from(amp_cards), label="card")
    offset = at + data.draw(st.integers(0, 79), label="byte")
    _flip_and_check(path, offset, data.draw(st.integers(0, 7), label="bit"), geometry)


@pytest.mark.timeout(240)
@settings(max_examples=40, deadline=None, database=None)
@given(data=st.data())
def test_issue16_item3_bit_flips_in_primary_header_refused_or_harmless(flip_target, data):
    path, cards, geometry = flip_target
    primary_cards = [c for c in cards if c[0] == 0]
    _, at, _ = data.draw(st.sampled_from(primary_cards), label="card")
    offset = at + data.draw(st.integers(0, 79), label="byte")
    _flip_and_check(path, offset, data.draw(st.integers(0, 7), label="bit"), geometry)


@pytest.mark.timeout(240)
@settings(max_examples=40, deadline=None, database=None)
@given(data=st.data())
def test_issue16_item3_bit_flips_in_size_cards_are_always_refused(flip_target, data):
    """A flip in the value of a size card always changes the structure: always refused."""
    path, cards, geometry = flip_target
    size_cards = [c for c in cards if c[2] in ("BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT",
                                               "GCOUNT") and c[0] > 0]
    _, at, _ = data.draw(st.sampled_from(size_cards), label="card")
    # Columns 11-30 hold the value (right-justified integer).
    offset = at + data.draw(st.integers(10, 29), label="byte")
    bit = data.draw(st.integers(0, 7), label="bit")
    # A leading blank that becomes '0' ("  32" → " 032") leaves the value, and the
    # structure, as they were: not a change of size.
    assume(_flipped_value(path, at, offset, bit) != _flipped_value(path, at, None, 0))
    assert _flip_and_check(path, offset, bit, geometry)


def _flipped_value(path: Path, card: int, offset: int | None, bit: int) -> int | None:
    """The integer of a card's value field with one bit flipped (None: not an integer)."""
    with path.open("rb") as f:
        f.seek(card + 10)
        field = bytearray(f.read(20))
    if offset is not None:
        field[offset - card - 10] ^= 1 << bit
    try:
        return int(field.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("hdu", "keyword", "value", "needle"), [
    (3, "BITPIX", "32.0", "BITPIX = 32.0 is not an integer"),
    (3, "BITPIX", "'32'", "BITPIX = '32' is not an integer"),
    (3, "BITPIX", "T", "BITPIX = True is not an integer"),
    (3, "BITPIX", "0", "BITPIX = 0 is not a FITS pixel type"),
    (3, "BITPIX", "-16", "BITPIX = -16 is not a FITS pixel type"),
    # Legal, but then the next HDU does not start where this one's data end.
    (3, "BITPIX", "16", "no HDU starts at byte 11831040, where the data of HDU 3"),
    (3, "NAXIS", "3", "no NAXIS3 card"),
    (3, "NAXIS", "1", "not a 2D image"),
    (3, "NAXIS", "-2", "NAXIS = -2 is not in [0, 999]"),
    (3, "NAXIS", "1000", "NAXIS = 1000 is not in [0, 999]"),
    (3, "NAXIS1", "0", "has shape (2048, 0)"),
    (3, "NAXIS1", "-576", "NAXIS1 = -576 is not >= 0"),
    (3, "NAXIS1", "576.0", "NAXIS1 = 576.0 is not an integer"),
    (3, "NAXIS1", "1E9", "NAXIS1 = 1000000000.0 is not an integer"),
    (3, "NAXIS2", "99999999999", "has shape (99999999999, 576)"),
    (16, "NAXIS2", "4096", "has shape (4096, 576)"),
    (3, "GCOUNT", "0", "GCOUNT = 0 is not >= 1"),
    (3, "GCOUNT", "2", "IMAGE extension with PCOUNT = 0, GCOUNT = 2"),
    (3, "PCOUNT", "4", "IMAGE extension with PCOUNT = 4, GCOUNT = 1"),
    (3, "XTENSION", "'TABLE   '", "Segment12 is a TABLE HDU, not an image"),
    (0, "NAXIS", "1", "no NAXIS1 card"),
    (0, "SIMPLE", "F", "SIMPLE = False"),
])
def test_issue16_item3_wrong_types_and_absurd_size_cards(raw, tmp_path, hdu, keyword, value,
                                                         needle):
    bad = _damaged_copy(raw, tmp_path / "bad.fits", hdu, keyword, _card(keyword, value))
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for check in (check_raw_file, read_raw):
            with pytest.raises(BadInputError) as info:
                check(bad)
            _assert_one_line(info.value, bad, needle)
    assert [str(w.message) for w in caught] == []
    assert time.perf_counter() - start < 10


# ---------------------------------------------------------------------------- item 6


@pytest.mark.timeout(120)
def test_issue16_item6_gz_and_fz_accepted_with_the_plain_pixels(raw, gz_raw, fz_raw,
                                                                plain_segments):
    """A valid .fits.gz was always refused by the night index ("truncated: 26613647 bytes,
    the headers need 75669120": the compressed size against uncompressed offsets)."""
    expected = check_raw_file(raw)
    for path in (gz_raw, fz_raw):
        assert check_raw_file(path) == expected
        frame = read_raw(path)
        assert frame.info == expected
        np.testing.assert_array_equal(frame.segments, plain_segments)
    assert check_raw_structure(gz_raw).fits.compression == "gzip"
    assert check_raw_structure(fz_raw).amp_hdus[0].is_compressed_image


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("form", "cut", "needle"), [
    ("gz", 0.5, "truncated"),
    ("gz", -8, "truncated gzip stream"),  # only the gzip trailer (CRC, size) is missing
    ("gz", -20_000, "truncated"),
    ("fz", 0.5, "truncated"),
    ("fz", -100, "truncated"),
    ("plain", 0.5, "truncated"),
    ("plain", -2880, "truncated"),
])
def test_issue16_item6_truncated_gz_and_fz_refused(raw, gz_raw, fz_raw, tmp_path, form, cut,
                                                   needle):
    source = {"gz": gz_raw, "fz": fz_raw, "plain": raw}[form]
    data = source.read_bytes()
    end = int(len(data) * cut) if isinstance(cut, float) else len(data) + cut
    bad = tmp_path / source.name
    bad.write_bytes(data[:end])
    for check in (check_raw_file, read_raw):
        with pytest.raises(BadInputError) as info:
            check(bad)
        _assert_one_line(info.value, bad, needle)


@pytest.mark.timeout(60)
def test_issue16_item6_cut_inside_the_padding_is_truncated(raw, tmp_path):
    """Cut after an HDU's data but inside its padding: without the padding rule the file
    would end cleanly there and be reported as missing its last amplifiers."""
    last = check_raw_structure(raw).fits.hdus[8]
    bad = tmp_path / NAME
    bad.write_bytes(raw.read_bytes()[:last.data_start + last.data_size + 100])
    for check in (check_raw_file, read_raw):
        with pytest.raises(BadInputError) as info:
            check(bad)
        _assert_one_line(info.value, bad, "truncated", "inside the padding of HDU 8")


@pytest.mark.timeout(120)
def test_issue16_item6_damaged_gzip_stream_refused(gz_raw, tmp_path):
    data = bytearray(gz_raw.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / gz_raw.name
    bad.write_bytes(bytes(data))
    with pytest.raises(BadInputError) as info:
        check_raw_file(bad)
    # zlib may inflate the damaged block into other bytes: then the headers or the CRC at
    # the end of the stream tell.
    _assert_one_line(info.value, bad, "damaged")


# ---------------------------------------------------------------------------- item 7


def _rewritten(raw: Path, dest: Path, edit) -> Path:
    with fits.open(raw) as hdul:
        hdus = [hdul[0], *edit(list(hdul[1:]))]
        fits.HDUList(hdus).writeto(dest)
    return dest


@pytest.mark.timeout(90)
def test_issue16_item7_duplicated_amp_hdu_is_refused(raw, tmp_path, capsys):
    """On main the last HDU of a name silently replaced the real amplifier's data."""
    def duplicate(hdus):
        fake = fits.ImageHDU(np.zeros_like(hdus[2].data), header=hdus[2].header)
        return [*hdus, fake]

    bad = _rewritten(raw, tmp_path / "dup.fits", duplicate)
    extname = fits.getval(raw, "EXTNAME", 3)
    with pytest.raises(BadInputError) as info:
        check_raw_file(bad)
    _assert_one_line(info.value, bad, f"duplicated HDU {extname}", "HDUs 3 and 17")
    out = tmp_path / "out"
    status, err, caught = _run(capsys, "isr", str(bad), "--out", str(out), *FAST)
    _assert_refused(status, err, caught, bad, out, f"duplicated HDU {extname}")


@pytest.mark.timeout(90)
def test_issue16_item7_reordered_and_extra_hdus_are_read_by_name(raw, tmp_path,
                                                                 plain_segments):
    """Amplifiers are matched by EXTNAME: reversed order reads the same pixels; an HDU of a
    name the camera does not know (an auxiliary table) is checked as FITS and ignored."""
    reordered = _rewritten(raw, tmp_path / "reordered.fits", lambda hdus: hdus[::-1])
    extra = _rewritten(raw, tmp_path / "extra.fits", lambda hdus: [
        *hdus[:4], fits.BinTableHDU.from_columns(
            [fits.Column("TEMP", "E", array=np.arange(3.0))], name="REB_COND"), *hdus[4:]])
    for path in (reordered, extra):
        assert check_raw_file(path) == check_raw_file(raw)
        np.testing.assert_array_equal(read_raw(path).segments, plain_segments)


@pytest.mark.timeout(60)
def test_issue16_item7_missing_amp_hdu_is_refused(raw, tmp_path):
    bad = _rewritten(raw, tmp_path / "missing.fits", lambda hdus: hdus[:-1])
    extname = fits.getval(raw, "EXTNAME", 16)  # SEGMENT00; the camera says Segment00
    for check in (check_raw_file, read_raw):
        with pytest.raises(BadInputError) as info:
            check(bad)
        _assert_one_line(info.value, bad)
        assert str(info.value).lower().endswith(f"missing amplifier hdu {extname.lower()}")


# ---------------------------------------------------------------------------- item 11


@pytest.mark.timeout(120)
def test_issue16_item11_lowercase_key_is_repaired_and_noted(raw, tmp_path, capsys):
    """On main: exit 1 after the full ISR (astropy refused the output header). A keyword
    carries no case in FITS, so the card is written back upper-cased, with a HISTORY note."""
    bad = _damaged_copy(raw, tmp_path / NAME, 0, "EXPTIME", b"exptime =                 27.0")
    out = tmp_path / "out"
    status, err, _ = _run(capsys, "isr", str(bad), "--out", str(out), *FAST)
    assert status == 0, err
    assert "Traceback" not in err
    header = fits.getheader(out / "AT_C_20180920_000065_postisr.fits")
    assert header.cards["EXPTIME"].image.startswith("EXPTIME =")
    assert header["EXPTIME"] == 27.0
    assert "atmospec: repaired non-standard card EXPTIME" in header["HISTORY"]


@pytest.mark.timeout(120)
def test_issue16_item11_non_ascii_file_name_works(raw, tmp_path, capsys):
    """On main: exit 1 after the full ISR (the name in the provenance card ATMIN0)."""
    path = tmp_path / "AT_C_20180920_000065_é.fits"
    shutil.copyfile(raw, path)
    out = tmp_path / "out"
    status, err, _ = _run(capsys, "isr", str(path), "--out", str(out), *FAST)
    assert status == 0, err
    header = fits.getheader(out / "AT_C_20180920_000065_postisr.fits")
    assert header["ATMIN0"] == "AT_C_20180920_000065_%C3%A9.fits"
    assert unquote(header["ATMIN0"]) == path.name


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("hdu", "keyword", "image", "needle"), [
    (0, "EXPTIME", b"EXPTIME =                 3?.0", "card 19 (EXPTIME): unparsable value"),
    (0, "OBSID", b"OBSID   = 'AT_C_20180920_000065", "(OBSID): unparsable value"),
    (0, "EXPTIME", b"EXP@IME =                 27.0", "card 19 ('EXP@IME'): illegal keyword"),
    (0, "EXPTIME", b"EXPTIME =                 27.0 / \xe9t\xe9", "holds byte 0xe9"),
    (4, "CHANNEL", b"CHANNEL =                    4 / \x07", "HDU 4 card"),
])
def test_issue16_item11_damaged_card_is_one_line_before_the_pixels(raw, tmp_path, capsys, hdu,
                                                                   keyword, image, needle):
    bad = _damaged_copy(raw, tmp_path / "card.fits", hdu, keyword, image)
    out = tmp_path / "out"
    status, err, caught = _run(capsys, "isr", str(bad), "--out", str(out), *FAST)
    _assert_refused(status, err, caught, bad, out, "damaged header", needle)


# ---------------------------------------------------------------------------- item 12


def _header(**cards) -> dict:
    return {"INSTRUME": "LATISS", "OBSID": "AT_O_20240624_000106", **cards}


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("cards", "needle"), [
    ({"EXPTIME": -30.0}, "EXPTIME = -30.0 s is negative"),
    ({"EXPTIME": 1e300}, "EXPTIME = 1e+300 s is longer than a day"),
    ({"EXPTIME": float("inf")}, "EXPTIME = inf s is longer than a day"),
    ({"EXPTIME": 86400.5}, "longer than a day (86400 s)"),
    ({"EXPTIME": "thirty"}, "EXPTIME = 'thirty' is not a time in seconds"),
    ({"EXPTIME": True}, "EXPTIME = True is not a time in seconds"),
    ({"EXPTIME": 0.0, "IMGTYPE": "OBJECT"}, "EXPTIME = 0 s on a science frame"),
    ({"EXPTIME": 30.0, "DARKTIME": -5.0}, "DARKTIME = -5.0 s is negative"),
    ({"EXPTIME": 30.0, "DARKTIME": 1e6}, "DARKTIME = 1000000.0 s is longer than a day"),
])
def test_issue16_item12_impossible_exposure_times_are_refused(cards, needle):
    with pytest.raises(BadInputError) as info:
        translate_header(_header(**cards), "AT_O_20240624_000106.fits")
    _assert_one_line(info.value, Path("AT_O_20240624_000106.fits"), needle)


@pytest.mark.timeout(30)
def test_issue16_item12_possible_exposure_times_still_pass():
    """0 s biases, a day exactly, a 0.0 DARKTIME placeholder (2020) and NaN (missing)."""
    assert translate_header(_header(EXPTIME=0.0, IMGTYPE="BIAS")).exposure_time == 0.0
    assert translate_header(_header(EXPTIME=86400.0)).exposure_time == 86400.0
    assert translate_header(_header(EXPTIME=5.0, DARKTIME=0.0)).dark_time == 5.0
    assert translate_header(_header(EXPTIME=float("nan"))).exposure_time is None


def _with_primary(raw: Path, dest: Path, **cards) -> Path:
    with fits.open(raw) as hdul:
        hdul[0].header.update(cards)
        hdul.writeto(dest)
    return dest


@pytest.mark.timeout(90)
def test_issue16_item12_negative_exptime_refused_by_isr_index_and_extract(raw, tmp_path,
                                                                          capsys):
    """The translator's reason is the one every command gives (on main `fit-atmosphere` said
    "EXPTIME missing" for the spectrum extracted from such a raw)."""
    bad = _with_primary(raw, tmp_path / "neg.fits", EXPTIME=-20.0)
    with pytest.raises(BadInputError) as info:
        check_raw_file(bad)
    _assert_one_line(info.value, bad, "EXPTIME = -20.0 s is negative")
    out = tmp_path / "out"
    status, err, caught = _run(capsys, "isr", str(bad), "--out", str(out), *FAST)
    _assert_refused(status, err, caught, bad, out, "EXPTIME = -20.0 s is negative")
    spectrum = tmp_path / "spec" / "spectrum.fits"
    status, err, caught = _run(capsys, "extract", str(bad), "--out", str(spectrum))
    _assert_refused(status, err, caught, bad, spectrum.parent, "EXPTIME = -20.0 s is negative")
    science0 = _with_primary(raw, tmp_path / "zero.fits", EXPTIME=0.0, IMGTYPE="OBJECT")
    status, err, caught = _run(capsys, "isr", str(science0), "--out", str(out), *FAST)
    _assert_refused(status, err, caught, science0, out, "EXPTIME = 0 s on a science frame")


@pytest.mark.timeout(60)
def test_issue16_item3_damaged_post_isr_header_is_one_quiet_reason(tmp_path):
    """The same flip in a post-ISR file (`Exposure.read`): astropy then parses pixels as a
    header; its warnings are kept, not printed, and the first is the reason."""
    from atmospec.exposure import Exposure

    rng = np.random.default_rng(3)
    image = rng.normal(0.0, 1.0, (300, 256)).astype(np.float32)
    path = Exposure(image, np.zeros(image.shape, np.int32), np.ones_like(image), fits.Header(),
                    ).write(tmp_path / "postisr.fits")
    offset = _card_offset(path, 1, "NAXIS1")
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(_card("NAXIS1", "257").ljust(80))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(BadInputError) as info:
            Exposure.read(path)
    _assert_one_line(info.value, path)
    assert [str(w.message) for w in caught] == []
