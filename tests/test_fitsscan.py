"""The header scanner (`atmospec.fitsscan`): a card value it takes as plain without
astropy's parser is one astropy reads without an error or a warning; its data sums are
astropy's ``DATASUM``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st

from atmospec.fitsscan import (
    _PLAIN_VALUE,
    _card_problem,
    data_sum,
    data_sum_matches,
    scan_fits,
)

#: What the value field of a card is made of, with the characters that make or break one.
_VALUE_TEXT = st.text(alphabet="0123456789+-.EeDd TFtf'/ab&()=,", max_size=30)


@settings(max_examples=1500, deadline=None)
@given(_VALUE_TEXT | st.from_regex(_PLAIN_VALUE, fullmatch=True).filter(
    lambda v: len(v) <= 70 and v.isascii() and v.isprintable()))
def test_a_plain_value_is_one_astropy_reads_quietly(value: str) -> None:
    image = f"{'KEY':8s}= {value}".ljust(80)[:80]
    if not _PLAIN_VALUE.fullmatch(image, 10):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fits.Card.fromstring(image).value  # noqa: B018 - astropy parses a value when read


def test_plain_values_and_the_others():
    plain = ["'SDSSr_65mm'", "'O''Brien' / an escaped quote", "T", "F / flag", "42",
             "-7", "+3.5E-02", "1.", ".5", "6.02D+23 / D exponent", "'' / empty string"]
    for value in plain:
        image = f"{'KEY':8s}= {value}".ljust(80)
        assert _PLAIN_VALUE.fullmatch(image, 10), value
        assert _card_problem(image) is None, value
    # Left to astropy: an undefined value, a complex one, a lower-case exponent (astropy
    # reads them), and damage (it refuses).
    for value, problem in (("/ no value", False), ("(1.0, 2.0)", False), ("1.5e3", False),
                           ("'unterminated", True), ("1.2.3", True), ("12 34", True)):
        image = f"{'KEY':8s}= {value}".ljust(80)
        assert not _PLAIN_VALUE.fullmatch(image, 10), value
        assert (_card_problem(image) is not None) == problem, value


@pytest.mark.parametrize("n_bytes", [0, 3, 4, 2880, 12345, 1 << 20])
def test_data_sum_is_astropys(tmp_path, n_bytes):
    """The sum of a binary table's data (a heap of any length, as a compressed image's)
    equals the DATASUM astropy writes, and a changed byte is caught on the file's bytes."""
    rng = np.random.default_rng(n_bytes)
    raw = rng.integers(0, 256, n_bytes, dtype=np.uint8)
    column = fits.Column(name="B", format=f"{max(n_bytes, 1)}B",
                         array=raw.reshape(1, -1) if n_bytes else np.zeros((1, 1), np.uint8))
    path = tmp_path / "t.fits"
    fits.BinTableHDU.from_columns([column]).writeto(path, checksum=True)
    layout = scan_fits(path)
    hdu = layout.hdus[1]
    data = path.read_bytes()[hdu.data_start:hdu.data_start + hdu.data_size]
    assert data_sum(data) == int(hdu.header["DATASUM"])
    assert data_sum_matches(path, path, hdu) is True
    damaged = bytearray(path.read_bytes())
    damaged[hdu.data_start] ^= 0x10
    path.write_bytes(bytes(damaged))
    assert data_sum_matches(path, path, hdu) is False


def test_data_sum_folds_the_carries():
    # Two words of all ones: 0x1FFFFFFFE folds to 0xFFFFFFFF (ones' complement -0).
    assert data_sum(b"\xff" * 8) == 0xFFFFFFFF
    assert data_sum(b"\x00\x00\x00\x01" * 3 + b"\x80") == 3 + 0x80000000
