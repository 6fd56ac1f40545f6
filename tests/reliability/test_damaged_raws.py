"""Damaged raw files through ``atmospec isr``: each case damages a copy of the one template
raw (truncations, bit flips in the primary and amplifier headers, wrong types and absurd
values, missing/duplicated/reordered HDUs, compressed copies, special files, odd names) and
asserts the contract: exit status 2 with one stderr line naming the file and nothing
written, or — for a valid variant — exit status 0 and the undamaged file's pixels.

The raw cases run the fast path (``--steps overscan,gain,assemble``) in process: a damaged
raw is refused before its pixels are processed, so each takes well under a second once
refused where it should be. The header fuzzing (hypothesis) holds the same contract for
damage drawn at random.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reliability import damage

pytestmark = pytest.mark.reliability

FAST = ("--steps", "overscan,gain,assemble")

#: Every case is bounded; a known hang (a one-bit flip of BITPIX or NAXIS1 in an amplifier
#: header) is cut after this many seconds.
REFUSED_TIMEOUT = 30
#: A valid variant runs the fast ISR path for real (a few seconds, more on a busy machine).
ACCEPTED_TIMEOUT = 120

Build = Callable[[Path, Path], Path]
"""A damage: (template raw, folder) -> the file to give ``atmospec isr``."""


@dataclass(frozen=True)
class RawCase:
    """One damaged (or valid) raw file and the exit status the contract asks for."""

    id: str
    build: Build
    status: int = 2

    def param(self) -> pytest.param:
        """As a pytest parameter with its own timeout."""
        timeout = REFUSED_TIMEOUT if self.status else ACCEPTED_TIMEOUT
        return pytest.param(self, id=self.id, marks=pytest.mark.timeout(timeout))


def _spans(template: Path) -> list[damage.HduSpan]:
    return damage.hdu_spans(template)


def copied(name: str, *steps: Callable[[Path], object]) -> Build:
    """Copy the template to ``folder/name`` and apply ``steps`` to the copy in turn."""

    def build(template: Path, folder: Path) -> Path:
        path = damage.copy_file(template, folder / name)
        for step in steps:
            step(path)
        return path

    return build


def char_flip(hdu: int | str, key: str, column: int, before: str, after: str
              ) -> Callable[[Path], object]:
    """Flip the one bit turning ``before`` into ``after`` in ``column`` of card ``key``
    (checked: the case damages what its name says)."""
    bits = ord(before) ^ ord(after)
    if bits.bit_count() != 1:
        raise ValueError(f"{before!r} -> {after!r} is not a one-bit flip")

    def step(path: Path) -> None:
        offset = damage.card_offset(path, hdu, key) + column
        with open(path, "rb") as f:
            f.seek(offset)
            found = f.read(1).decode("latin-1")
        assert found == before, f"{key} column {column} holds {found!r}, not {before!r}"
        damage.flip_bit(path, offset, bits.bit_length() - 1)

    return step


def cut(offset: Callable[[Path], int]) -> Build:
    """The template cut at ``offset(template)`` bytes (only those bytes are written)."""

    def build(template: Path, folder: Path) -> Path:
        n = offset(template)
        path = folder / f"cut_at_{n}.fits"
        with open(template, "rb") as f:
            path.write_bytes(f.read(n))
        return path

    return build


def replace_card(hdu: int | str, old: str, new: str, value: str) -> Callable[[Path], object]:
    """Turn card ``old`` into ``new = value`` (adds a key the template lacks, in place)."""

    def step(path: Path) -> None:
        damage.rename_card(path, hdu, old, new)
        damage.set_card(path, hdu, new, value)

    return step


# -- the cases -----------------------------------------------------------------------------

def _truncations() -> list[RawCase]:
    size = lambda t: t.stat().st_size  # noqa: E731
    at = {
        "empty": lambda t: 0,
        "1-byte": lambda t: 1,
        "one-card": lambda t: 80,
        "primary-header-minus-1": lambda t: 2879,
        "primary-header-only": lambda t: 2880,
        "primary-header-plus-1": lambda t: 2881,
        "mid-first-amp-header": lambda t: _spans(t)[1].header + 1000,
        "first-amp-header-only": lambda t: _spans(t)[1].data,
        "mid-first-amp-data": lambda t: _spans(t)[1].data + 1_000_003,
        "after-first-amp": lambda t: _spans(t)[2].header,
        "mid-file": lambda t: _spans(t)[8].data + 12345,
        "before-last-amp": lambda t: _spans(t)[16].header,
        "last-amp-header-only": lambda t: _spans(t)[16].data,
        "last-block-missing": lambda t: size(t) - 2880,
        "last-byte-missing": lambda t: size(t) - 1,
    }
    return [RawCase(f"truncated-{name}", cut(offset)) for name, offset in at.items()]


#: One-bit flips of the primary header: (id, key, column, before, after).
_PRIMARY_FLIPS = [
    ("SIMPLE-keyword", "SIMPLE", 0, "S", "R"),
    ("SIMPLE-T", "SIMPLE", 29, "T", "V"),
    ("BITPIX-8-to-9", "BITPIX", 29, "8", "9"),
    ("NAXIS-0-to-1", "NAXIS", 29, "0", "1"),
    ("SIMPLE-blank-to-non-ascii", "SIMPLE", 7, " ", "\xa0"),
    ("INSTRUME-keyword", "INSTRUME", 0, "I", "H"),
    ("INSTRUME-value", "INSTRUME", 11, "L", "M"),
    ("OBSID-opening-quote", "OBSID", 10, "'", "&"),
    ("OBSID-control-char", "OBSID", 13, "_", "\x1f"),
    ("OBSID-value-indicator", "OBSID", 8, "=", "<"),
    ("SEQNUM-digit-to-letter", "SEQNUM", 28, "6", "v"),
    ("EXPTIME-digit-to-letter", "EXPTIME", 26, "2", "r"),
    ("DAYOBS-digit-to-letter", "DAYOBS", 11, "2", "r"),
    ("END-keyword", "END", 0, "E", "D"),
]

#: One-bit flips of an amplifier header: (id, key, column, before, after); the EXTNAME
#: flip is per amplifier (its last digit), see `_amp_flips`.
_AMP_FLIPS = [
    ("XTENSION-keyword", "XTENSION", 0, "X", "Y"),
    ("BITPIX-32-to-36", "BITPIX", 29, "2", "6"),
    ("BITPIX-32-to-22", "BITPIX", 28, "3", "2"),
    ("NAXIS-2-to-3", "NAXIS", 29, "2", "3"),
    ("NAXIS1-576-to-577", "NAXIS1", 29, "6", "7"),
    ("NAXIS1-576-to-574", "NAXIS1", 29, "6", "4"),
    ("NAXIS2-2048-to-2049", "NAXIS2", 29, "8", "9"),
    ("NAXIS2-2048-to-3048", "NAXIS2", 26, "2", "3"),
    ("NAXIS1-value-indicator", "NAXIS1", 8, "=", "<"),
    ("EXTNAME-keyword", "EXTNAME", 0, "E", "D"),
    ("PCOUNT-0-to-1", "PCOUNT", 29, "0", "1"),
    ("GCOUNT-1-to-3", "GCOUNT", 29, "1", "3"),
    ("END-keyword", "END", 0, "E", "D"),
]

#: Amplifiers damaged: the first, one in the middle and the last HDU of the file; the
#: EXTNAME flip of each turns it into another amp's name (a duplicate, one missing).
_AMPS = {"SEGMENT10": ("0", "1"), "SEGMENT17": ("7", "6"), "SEGMENT00": ("0", "1")}


def _flips() -> list[RawCase]:
    cases = [RawCase(f"flip-primary-{name}",
                     copied(f"flip_primary_{key}.fits", char_flip(0, key, col, a, b)))
             for name, key, col, a, b in _PRIMARY_FLIPS]
    for amp, (a, b) in _AMPS.items():
        rows = [*_AMP_FLIPS, (f"EXTNAME-{amp}-to-{amp[:-1]}{b}", "EXTNAME", 19, a, b)]
        cases += [RawCase(f"flip-{amp}-{name}",
                          copied(f"flip_{amp}_{key}.fits", char_flip(amp, key, col, x, y)))
                  for name, key, col, x, y in rows]
    return cases


#: Wrong types and absurd values in the primary header: (id, key, raw value text).
_PRIMARY_VALUES = [
    ("EXPTIME-string", "EXPTIME", "'abc'"),
    ("EXPTIME-negative", "EXPTIME", "-5.0"),
    ("EXPTIME-NAN", "EXPTIME", "NAN"),
    ("EXPTIME-INF", "EXPTIME", "INF"),
    ("EXPTIME-logical", "EXPTIME", "T"),
    ("EXPTIME-1e30", "EXPTIME", "1.0E+30"),
    ("SEQNUM-negative", "SEQNUM", "-1"),
    ("SEQNUM-string", "SEQNUM", "'abc'"),
    ("SEQNUM-fractional", "SEQNUM", "1.5"),
    ("DAYOBS-string", "DAYOBS", "'abc'"),
    ("DAYOBS-no-such-date", "DAYOBS", "'20181399'"),
    ("INSTRUME-number", "INSTRUME", "42"),
    ("INSTRUME-empty", "INSTRUME", "''"),
    ("DATE-OBS-garbage", "DATE-OBS", "'yesterday'"),
    ("OBSID-number", "OBSID", "42"),
    ("OBSID-empty", "OBSID", "''"),
    ("OBSID-dotdot", "OBSID", damage.quoted("..")),
    ("OBSID-slash", "OBSID", damage.quoted("AT_C/20180920_000065")),
    ("OBSID-hidden", "OBSID", damage.quoted(".AT_C_20180920_000065")),
    ("OBSID-leading-dash", "OBSID", damage.quoted("-rf")),
    ("OBSID-spaces", "OBSID", damage.quoted("AT C 20180920 000065")),
    ("OBSID-non-ascii", "OBSID", damage.quoted("AT_C_2018092\xe9_000065")),
]

#: Wrong types and absurd values in an amplifier header (SEGMENT12).
_AMP_VALUES = [
    ("NAXIS1-float", "NAXIS1", "576.0"),
    ("NAXIS1-negative", "NAXIS1", "-576"),
    ("NAXIS1-string", "NAXIS1", "'576'"),
    ("NAXIS2-zero", "NAXIS2", "0"),
    ("BITPIX-string", "BITPIX", "'abc'"),
    ("BITPIX-16", "BITPIX", "16"),
    ("BITPIX-float32", "BITPIX", "-32"),
    ("EXTNAME-number", "EXTNAME", "42"),
    ("EXTNAME-unknown", "EXTNAME", damage.quoted("SEGMENT99")),
    ("EXTNAME-duplicate", "EXTNAME", damage.quoted("SEGMENT13")),
]

#: Scaling cards added to an amplifier header (in place of its HEADVER card).
_AMP_SCALING = [
    ("BZERO-1e300", "BZERO", "1.0E+300"),
    ("BZERO-string", "BZERO", "'abc'"),
    ("BSCALE-NAN", "BSCALE", "NAN"),
]


def _values() -> list[RawCase]:
    cases = [RawCase(f"value-primary-{name}",
                     copied(f"value_{name}.fits",
                            partial(damage.set_card, hdu=0, key=key, value=value)))
             for name, key, value in _PRIMARY_VALUES]
    cases += [RawCase(f"value-SEGMENT12-{name}",
                      copied(f"value_amp_{name}.fits",
                             partial(damage.set_card, hdu="SEGMENT12", key=key, value=value)))
              for name, key, value in _AMP_VALUES]
    cases += [RawCase(f"value-SEGMENT12-{name}",
                      copied(f"value_amp_{name}.fits",
                             replace_card("SEGMENT12", "HEADVER", key, value)))
              for name, key, value in _AMP_SCALING]
    cases += [
        RawCase("missing-card-INSTRUME",
                copied("no_instrume.fits", partial(damage.blank_card, hdu=0, key="INSTRUME"))),
        RawCase("missing-card-SEGMENT12-EXTNAME",
                copied("no_extname.fits",
                       partial(damage.blank_card, hdu="SEGMENT12", key="EXTNAME"))),
        RawCase("missing-card-SEGMENT12-NAXIS1",
                copied("no_naxis1.fits",
                       partial(damage.blank_card, hdu="SEGMENT12", key="NAXIS1"))),
    ]
    return cases


def _replace_amp(name: str, make: Callable[[fits.ImageHDU], fits.hdu.base.ExtensionHDU]
                 ) -> Build:
    """The template with one amplifier HDU replaced (written by astropy: a valid FITS
    file, a wrong raw)."""

    def build(template: Path, folder: Path) -> Path:
        path = folder / f"replaced_{name}.fits"
        with fits.open(template) as hdul:
            hdul[name] = make(hdul[name])
            hdul.writeto(path)
        return path

    return build


def _hdus() -> list[RawCase]:
    order = list(range(17))
    return [
        RawCase("hdu-missing-SEGMENT10", copied("drop10.fits",
                                                partial(damage.drop_hdu, hdu="SEGMENT10"))),
        RawCase("hdu-missing-SEGMENT17", copied("drop17.fits",
                                                partial(damage.drop_hdu, hdu="SEGMENT17"))),
        RawCase("hdu-missing-SEGMENT00", copied("drop00.fits",
                                                partial(damage.drop_hdu, hdu="SEGMENT00"))),
        RawCase("hdu-missing-primary", copied("drop_primary.fits",
                                              partial(damage.drop_hdu, hdu=0))),
        RawCase("hdu-duplicated-SEGMENT10",
                copied("dup10.fits", partial(damage.duplicate_hdu, hdu="SEGMENT10"))),
        RawCase("hdu-duplicated-SEGMENT00-at-end",
                copied("dup00.fits", partial(damage.duplicate_hdu, hdu="SEGMENT00"))),
        RawCase("hdu-duplicated-SEGMENT05-first",
                copied("dup05.fits", partial(damage.duplicate_hdu, hdu="SEGMENT05", at=1))),
        RawCase("hdu-duplicated-primary", copied("dup_primary.fits",
                                                 partial(damage.duplicate_hdu, hdu=0))),
        RawCase("hdu-primary-last", copied("primary_last.fits",
                                           partial(damage.reorder_hdus, order=[*order[1:], 0]))),
        RawCase("hdu-amp-is-a-table", _replace_amp(
            "SEGMENT12", lambda h: fits.BinTableHDU.from_columns(
                [fits.Column("x", "J", array=np.arange(10))], name="SEGMENT12"))),
        RawCase("hdu-amp-without-data", _replace_amp(
            "SEGMENT12", lambda h: fits.ImageHDU(header=fits.Header(), name="SEGMENT12"))),
        RawCase("hdu-amp-3d", _replace_amp(
            "SEGMENT12", lambda h: fits.ImageHDU(h.data[None], name="SEGMENT12"))),
        # Valid variants: amplifiers are found by name, not by position.
        RawCase("valid-hdu-amps-reversed",
                copied("reversed.fits", partial(damage.reorder_hdus,
                                                order=[0, *range(16, 0, -1)])), status=0),
        RawCase("valid-hdu-two-amps-swapped",
                copied("swapped.fits", partial(damage.reorder_hdus,
                                               order=[0, 2, 1, *range(3, 17)])), status=0),
    ]


def _from_fpacked(name: str, *steps: Callable[[Path], object]) -> Build:
    """A damaged copy of the session's tile-compressed template (see `fpacked_raw`)."""

    def build(template: Path, folder: Path) -> Path:
        path = damage.copy_file(template.with_name("fpacked.fits"), folder / name)
        for step in steps:
            step(path)
        return path

    return build


def _from_gzipped(name: str, *steps: Callable[[Path], object]) -> Build:
    """A (damaged) copy of the session's gzipped template (see `gzipped_raw`)."""

    def build(template: Path, folder: Path) -> Path:
        path = damage.copy_file(template.with_name("gzipped.fits.gz"), folder / name)
        for step in steps:
            step(path)
        return path

    return build


def _gzipped(name: str, *steps: Callable[[Path], object]) -> Build:
    """The template, damaged by ``steps``, then gzipped into ``name``."""

    def build(template: Path, folder: Path) -> Path:
        plain = damage.copy_file(template, folder / "plain.fits")
        for step in steps:
            step(plain)
        path = damage.gzip_copy(plain, folder / name)
        plain.unlink()
        return path

    return build


def _half(path: Path) -> None:
    damage.truncate(path, path.stat().st_size // 2)


def _compressed() -> list[RawCase]:
    heap_byte = lambda p: damage.flip_bit(p, damage.hdu_spans(p)[3].data + 50_000, 3)  # noqa: E731
    return [
        RawCase("valid-gzip", _from_gzipped("gz.fits.gz"), status=0),
        RawCase("valid-fpack-rice", _from_fpacked("rice.fits"), status=0),
        RawCase("valid-fpack-rice-fz", _from_fpacked("rice.fits.fz"), status=0),
        RawCase("valid-fpack-gzip2", lambda t, f: damage.fpack_copy(t, f / "gzip2.fits",
                                                                    "GZIP_2"), status=0),
        RawCase("gzip-truncated-half", _from_gzipped("gz_half.fits.gz", _half)),
        RawCase("gzip-truncated-10-bytes",
                _from_gzipped("gz_10.fits.gz", partial(damage.truncate, offset=10))),
        RawCase("gzip-flipped-stream-byte",
                _from_gzipped("gz_flip.fits.gz",
                              lambda p: damage.flip_bit(p, p.stat().st_size // 2, 4))),
        RawCase("gzip-of-a-truncated-raw", _gzipped("gz_of_cut.fits.gz", _half)),
        RawCase("fpack-truncated-half", _from_fpacked("rice_half.fits", _half)),
        RawCase("fpack-ZNAXIS1-576-to-577",
                _from_fpacked("rice_znaxis1.fits",
                              char_flip("SEGMENT10", "ZNAXIS1", 29, "6", "7"))),
        RawCase("fpack-ZBITPIX-32-to-36",
                _from_fpacked("rice_zbitpix.fits",
                              char_flip("SEGMENT10", "ZBITPIX", 29, "2", "6"))),
        RawCase("fpack-flipped-heap-byte-checksum", _from_fpacked("rice_heap.fits", heap_byte)),
        RawCase("fpack-missing-SEGMENT03",
                _from_fpacked("rice_drop.fits", partial(damage.drop_hdu, hdu="SEGMENT03"))),
    ]


def _special() -> list[RawCase]:
    cases = [
        RawCase("special-directory", lambda t, f: damage.directory(f / "dir.fits")),
        RawCase("special-fifo", lambda t, f: damage.fifo(f / "pipe.fits")),
        RawCase("special-dangling-symlink",
                lambda t, f: damage.dangling_symlink(f / "dangling.fits", f / "gone.fits")),
        RawCase("special-symlink-loop", lambda t, f: damage.symlink_loop(f / "loop.fits")),
        RawCase("special-symlink-to-directory",
                lambda t, f: _symlink(f / "linkdir.fits", damage.directory(f / "a_dir"))),
        RawCase("special-character-device", lambda t, f: Path(os.devnull)),
    ]
    if os.geteuid() != 0:  # root reads a file whatever its mode
        cases.append(RawCase("special-unreadable", copied(
            "unreadable.fits", lambda p: p.chmod(0))))
    return cases


def _symlink(path: Path, target: Path) -> Path:
    path.symlink_to(target)
    return path


def _names() -> list[RawCase]:
    return [
        RawCase("valid-name-accented", copied("raw_é_ü.fits"), status=0),
        RawCase("valid-name-cjk", copied("夜の観測.fits"), status=0),
        RawCase("valid-name-spaces", copied("raw with spaces.fits"), status=0),
        RawCase("valid-name-newline", copied("raw\nnewline.fits"), status=0),
        RawCase("valid-symlink-to-raw",
                lambda t, f: _symlink(f / "link.fits", damage.copy_file(t, f / "real.fits")),
                status=0),
        RawCase("name-accented-truncated", copied("cut_é.fits", _half)),
    ]


RAW_CASES = [*_truncations(), *_flips(), *_values(), *_hdus(), *_compressed(), *_special(),
             *_names()]


@pytest.fixture(scope="session")
def fpacked_raw(template_raw: Path) -> Path:
    """The template tile-compressed once (RICE, as LATISS writes raws), beside it."""
    path = template_raw.with_name("fpacked.fits")
    if not path.exists():
        damage.fpack_copy(template_raw, path)
    return path


@pytest.fixture(scope="session")
def gzipped_raw(template_raw: Path) -> Path:
    """The template gzipped once, beside it."""
    path = template_raw.with_name("gzipped.fits.gz")
    if not path.exists():
        damage.gzip_copy(template_raw, path)
    return path


@pytest.mark.parametrize("raw_case", [c.param() for c in RAW_CASES])
def test_damaged_raw(raw_case: RawCase, case, control, template_raw, fpacked_raw,
                     gzipped_raw) -> None:
    """``atmospec isr`` on one damaged (or valid) raw file."""
    raw = raw_case.build(template_raw, case.inputs)
    run = case.run("isr", raw, "--out", case.out, *FAST)
    if raw_case.status == 0:
        case.assert_accepted(run, control.outputs)
        control.assert_same(case.out / control.outputs[0])
    else:
        # The line names the file; a name holding a newline cannot appear whole on one
        # line: its parts then must.
        case.assert_refused(run, raw.name.split("\n"))


# -- several files, one command ------------------------------------------------------------

@pytest.mark.timeout(ACCEPTED_TIMEOUT)
def test_duplicate_obsid_in_one_command(case, control, template_raw) -> None:
    """Two files with the same OBSID: the first is reduced, the second refused (its output
    would overwrite the first's), naming the second file."""
    first = damage.copy_file(template_raw, case.inputs / "first.fits")
    second = damage.copy_file(template_raw, case.inputs / "second.fits")
    run = case.run("isr", first, second, "--out", case.out, *FAST)
    assert run.status == 2, run.describe()
    assert len(run.stderr_lines) == 1 and "second.fits" in run.stderr_lines[0], run.describe()
    assert "Traceback" not in run.stderr
    assert {p.name for p in case.out.iterdir()} == set(control.outputs)
    control.assert_same(case.out / control.outputs[0])
    case.assert_clean(run)


@pytest.mark.timeout(ACCEPTED_TIMEOUT)
def test_damaged_file_among_good_ones(case, control, template_raw) -> None:
    """A truncated raw between two good ones: one line for it, the good ones written."""
    good = damage.copy_file(template_raw, case.inputs / "good.fits")
    bad = damage.truncate(damage.copy_file(template_raw, case.inputs / "bad.fits"), 5000)
    other = damage.copy_file(template_raw, case.inputs / "other.fits")
    damage.set_card(other, 0, "OBSID", damage.quoted("AT_C_20180920_000066"))
    damage.set_card(other, 0, "SEQNUM", "66")
    run = case.run("isr", good, bad, other, "--out", case.out, *FAST)
    assert run.status == 2, run.describe()
    assert len(run.stderr_lines) == 1 and "bad.fits" in run.stderr_lines[0], run.describe()
    written = {p.name for p in case.out.iterdir()}
    assert written == {*control.outputs, "AT_C_20180920_000066_postisr.fits",
                       "AT_C_20180920_000066_isrstats.json"}
    case.assert_clean(run)


@pytest.mark.timeout(REFUSED_TIMEOUT)
def test_obsid_escaping_the_output_folder(case, template_raw) -> None:
    """OBSID ``../../etc/passwd``: refused, and nothing appears outside the output folder
    (``out/../../etc`` is inside the case's folder, where the snapshot looks)."""
    raw = damage.copy_file(template_raw, case.inputs / "passwd.fits")
    damage.set_card(raw, 0, "OBSID", damage.quoted("../../etc/passwd"))
    passwd = Path("/etc/passwd")
    before = passwd.stat().st_mtime_ns if passwd.exists() else None
    run = case.run("isr", raw, "--out", case.out, *FAST)
    case.assert_refused(run, ["passwd.fits"])
    assert not list(case.root.rglob("*passwd*_*")), "an output named after the OBSID"
    assert (passwd.stat().st_mtime_ns if passwd.exists() else None) == before


@pytest.mark.timeout(REFUSED_TIMEOUT)
def test_absolute_obsid(case, template_raw) -> None:
    """An absolute OBSID (here: a folder of the case) is refused and written nowhere."""
    target = case.root / "abs"
    raw = damage.copy_file(template_raw, case.inputs / "absolute.fits")
    damage.set_card(raw, 0, "OBSID", damage.quoted(str(target / "x")))
    run = case.run("isr", raw, "--out", case.out, *FAST)
    case.assert_refused(run, ["absolute.fits"])
    assert not target.exists()


# -- bad option values ---------------------------------------------------------------------

@pytest.mark.timeout(REFUSED_TIMEOUT)
@pytest.mark.parametrize("option", ["steps-empty", "steps-unknown", "overscan-unknown",
                                    "out-is-a-file", "out-under-a-file", "bias-missing",
                                    "calibs-missing"])
def test_bad_option_value(option: str, case, template_raw) -> None:
    """A bad option value is a usage error: status 2, one line naming the value."""
    raw = damage.copy_file(template_raw, case.inputs / "raw.fits")
    a_file = case.inputs / "a_file.txt"
    a_file.write_text("not a folder\n")
    out, args, needle = case.out, list(FAST), None
    if option == "steps-empty":
        args, needle = ["--steps", ","], "--steps"
    elif option == "steps-unknown":
        args, needle = ["--steps", "overscan,nosuchstep"], "nosuchstep"
    elif option == "overscan-unknown":
        args, needle = [*FAST, "--overscan", "cubic"], "cubic"
    elif option == "out-is-a-file":
        out, needle = a_file, "a_file.txt"
    elif option == "out-under-a-file":
        out, needle = a_file / "sub", "a_file.txt"
    elif option == "bias-missing":
        args, needle = ["--bias", str(case.inputs / "nobias.fits")], "nobias.fits"
    elif option == "calibs-missing":
        args, needle = [*FAST, "--calibs", str(case.inputs / "norepo")], "norepo"
    run = case.run("isr", raw, "--out", out, *args)
    case.assert_refused(run, [needle], output=case.out)
    assert a_file.read_text() == "not a folder\n"


# -- header fuzzing ------------------------------------------------------------------------

#: Cards whose every byte matters to the file's structure, and the value columns of each.
_STRUCTURAL = [(0, "BITPIX"), (0, "NAXIS"), ("SEGMENT14", "XTENSION"),
               ("SEGMENT14", "BITPIX"), ("SEGMENT14", "NAXIS"), ("SEGMENT14", "NAXIS1"),
               ("SEGMENT14", "NAXIS2"), ("SEGMENT14", "PCOUNT"), ("SEGMENT14", "GCOUNT"),
               ("SEGMENT14", "EXTNAME")]

_FUZZ = settings(max_examples=8, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])


def _either_contract(case, run, raw: Path, control) -> None:
    """A fuzzed file is either refused cleanly or, when the damage changed nothing that
    matters, reduced to exactly the control's pixels."""
    if run.status == 0:
        case.assert_accepted(run, control.outputs)
        control.assert_same(case.out / control.outputs[0])
    else:
        case.assert_refused(run, [raw.name])


@pytest.mark.timeout(300)
@_FUZZ
@given(card=st.sampled_from(_STRUCTURAL), column=st.integers(8, 29),
       bit=st.integers(0, 7))
def test_fuzz_structural_card_bit_flip(card, column, bit, make_case, control, template_raw
                                       ) -> None:
    """One bit flipped anywhere in the value of a structural card (BITPIX, NAXISn, PCOUNT,
    GCOUNT, XTENSION, EXTNAME): refused in one line, or identical to the control."""
    case = make_case()
    hdu, key = card
    raw = damage.flip_card_bit(damage.copy_file(template_raw, case.inputs / "fuzz.fits"),
                               hdu, key, column, bit)
    run = case.run("isr", raw, "--out", case.out, *FAST)
    _either_contract(case, run, raw, control)


_OBSID_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e),
                      min_size=0, max_size=30)


@pytest.mark.timeout(300)
@_FUZZ
@given(obs_id=st.one_of(_OBSID_TEXT, st.sampled_from(
    ["..", "../x", "a/../../b", "/", ".", "x/", "~root", "-x", "a b", "AT_O_1..2"])))
def test_fuzz_obsid(obs_id: str, make_case, template_raw) -> None:
    """Any OBSID: refused in one line, or every output named ``<OBSID>_*`` directly in the
    output folder, and nothing anywhere else (no value read from a file decides where we
    write)."""
    case = make_case()
    raw = damage.copy_file(template_raw, case.inputs / "obsid.fits")
    damage.set_card(raw, 0, "OBSID", damage.quoted(obs_id))
    run = case.run("isr", raw, "--out", case.out, *FAST)
    if run.status == 0:
        case.assert_accepted(run, [])
        written = damage_free_names(case.out)
        assert written and all(n.startswith(obs_id.strip() + "_") for n in written), written
    else:
        case.assert_refused(run, ["obsid.fits"])


def damage_free_names(folder: Path) -> list[str]:
    """Names of the files in ``folder``, checked to lie directly in it."""
    files = [p for p in folder.rglob("*") if not p.is_dir()]
    assert all(p.parent == folder for p in files), files
    return [p.name for p in files]


_VALUE = st.one_of(
    st.integers(-10**20, 10**20).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: f"{x:.6E}"),
    st.sampled_from(["NAN", "INF", "-INF", "T", "F", "''", "'   '", "1E999", "0x10"]),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=20)
    .map(damage.quoted),
)


@pytest.mark.timeout(300)
@_FUZZ
@given(key=st.sampled_from(["EXPTIME", "SEQNUM", "DAYOBS", "INSTRUME", "DATE-OBS", "MJD-OBS"]),
       value=_VALUE)
def test_fuzz_primary_values(key: str, value: str, make_case, template_raw) -> None:
    """Any value (number, string, garbage) in a card the translator reads: refused in one
    line, or accepted with its outputs whole and nothing written elsewhere."""
    case = make_case()
    raw = damage.copy_file(template_raw, case.inputs / "value.fits")
    damage.set_card(raw, 0, key, value)
    run = case.run("isr", raw, "--out", case.out, *FAST)
    if run.status == 0:
        case.assert_accepted(run, [])
        assert any(n.endswith("_postisr.fits") for n in damage_free_names(case.out))
    else:
        case.assert_refused(run, ["value.fits"])


@pytest.mark.timeout(10)
def test_case_table_is_what_it_says() -> None:
    """The case ids are unique and every family is there (a typo must not hide a case)."""
    ids = [c.id for c in RAW_CASES]
    assert len(ids) == len(set(ids))
    for family in ("truncated-", "flip-primary-", "flip-SEGMENT", "value-", "hdu-", "gzip-",
                   "fpack-", "special-", "valid-"):
        assert any(i.startswith(family) for i in ids), family


# -- a night with damaged files ------------------------------------------------------------------

NIGHT_TIMEOUT = 1200  # the first test using the night builds it (simulation + reduction)


def _mentions(night, name: str) -> int:
    """Lines of the night's output (stdout and stderr) naming ``name``."""
    return sum(name in line for line in (night.stdout + night.stderr).splitlines())


@pytest.mark.timeout(NIGHT_TIMEOUT)
def test_night_finishes_without_traceback(damaged_night) -> None:
    """The night ends with the documented status (1 only when an exposure failed: none
    here), no traceback and no Python warning on its output."""
    from atmospec.night.index import NightIndex

    failed = {t.obs_id for t in NightIndex(damaged_night.repo).tasks() if t.status == "failed"}
    assert damaged_night.status == (1 if failed else 0), damaged_night.stderr[-2000:]
    for stream in (damaged_night.stdout, damaged_night.stderr):
        assert "Traceback" not in stream, stream[-3000:]
        assert "Warning" not in stream, stream[-3000:]


@pytest.mark.timeout(NIGHT_TIMEOUT)
@pytest.mark.parametrize("index", range(3))
def test_night_good_exposure_done(index: int, damaged_night) -> None:
    """Every good exposure (the two imaging frames, and a copy under a non-ASCII file name)
    has all its tasks done and its outputs written."""
    from atmospec.night.index import NightIndex

    obs_id = damaged_night.good[index]
    tasks = NightIndex(damaged_night.repo).tasks(obs_id)
    assert {t.task for t in tasks} == {"isr", "characterize"}, tasks
    assert all(t.status == "done" for t in tasks), [(t.task, t.reason) for t in tasks]
    folder = damaged_night.repo / "exposures" / "20250402"
    for suffix in ("postisr.fits", "sources.ecsv", "isrstats.json"):
        assert (folder / f"{obs_id}_{suffix}").is_file(), suffix


def _night_damage_names() -> list[str]:
    from reliability.damaged_night import night_damage

    return list(night_damage())


@pytest.mark.timeout(NIGHT_TIMEOUT)
@pytest.mark.parametrize("name", _night_damage_names())
def test_night_damaged_file_rejected(name: str, damaged_night) -> None:
    """Every damaged file of the night is in the index's rejected list with a reason, is
    reported, and is not reported over and over (no flood)."""
    from atmospec.night.index import NightIndex

    rejected = {p.name: reason for p, reason in NightIndex(damaged_night.repo).rejected()}
    assert name in rejected, sorted(rejected)
    assert rejected[name].strip()
    assert 1 <= _mentions(damaged_night, name) <= 6, (damaged_night.stdout
                                                      + damaged_night.stderr)[-3000:]


@pytest.mark.timeout(NIGHT_TIMEOUT)
def test_night_writes_only_in_its_repository(damaged_night) -> None:
    """The raw folder (and everything beside the repository) is as it was; no temporary
    file is left; no output is named after the OBSID ``../../etc/passwd``."""
    from reliability.harness import tree_snapshot

    after = tree_snapshot(damaged_night.root, [damaged_night.repo])
    assert after == damaged_night.before
    assert not list(damaged_night.root.rglob("*.tmp"))
    assert not [p for p in damaged_night.root.rglob("*passwd*")]


@pytest.mark.timeout(NIGHT_TIMEOUT)
def test_night_summary_lists_the_exposures(damaged_night) -> None:
    """The summary holds the good exposures, done, and no row for a rejected file."""
    summary = Table.read(damaged_night.repo / "night" / "summary.ecsv")
    science = summary[summary["image_type"] == "science"]
    rows = {r["obs_id"]: r["status"] for r in science}
    for obs_id in damaged_night.good:
        assert rows.get(obs_id) == "done", rows
    extra = set(rows) - set(damaged_night.good) - {"AT_O_20250402_000940"}
    assert not extra, extra


@pytest.mark.timeout(NIGHT_TIMEOUT)
def test_night_vanished_file(damaged_night, tmp_path: Path) -> None:
    """A raw indexed, then deleted before the night runs again: the night goes on (that
    exposure rejected, or failed naming the file; the status says whether a task failed),
    the good exposures are done, no traceback. (The repository is a copy in another folder,
    so whether finished tasks are redone is not asked here.)"""
    import subprocess
    import sys

    from atmospec.night.index import NightIndex
    from reliability.damaged_night import NIGHT_OPTIONS, VANISHED, link_copy, vanish

    repo = link_copy(damaged_night.repo, tmp_path / "repo")
    vanish(damaged_night, repo)
    run = subprocess.run([sys.executable, "-m", "atmospec", "night",
                          str(damaged_night.raw_dir), "--repo", str(repo), *NIGHT_OPTIONS],
                         capture_output=True, text=True, timeout=600, check=False)
    assert "Traceback" not in run.stderr + run.stdout, run.stderr[-3000:]
    index = NightIndex(repo)
    name, seq = VANISHED
    rejected = {p.name for p, _ in index.rejected()}
    tasks = index.tasks(f"AT_O_20250402_{seq:06d}")
    failed = bool(tasks) and all(t.status == "failed" for t in tasks) and any(
        name in (t.reason or "") for t in tasks)
    assert name in rejected or failed, (run.returncode, run.stderr[-2000:], tasks)
    any_failed = any(t.status == "failed" for t in index.tasks())
    assert run.returncode == (1 if any_failed else 0), run.stderr[-2000:]
    for obs_id in damaged_night.good:
        assert {t.status for t in index.tasks(obs_id)} == {"done"}, obs_id
    assert (repo / "night" / "summary.ecsv").is_file()
