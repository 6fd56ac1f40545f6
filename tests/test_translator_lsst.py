"""Tests of the LSST Camera family's header translators on 32 real headers and 6 raw files.

The headers (tests/data/lsstcam/headers, from obs_lsst's test data) cover LSSTCam in the
lab (BOT, 2019-2023), on the summit (2025-2026) and simulated, ComCam (lab 2019, summit
2024, simulated), LSSTCamSim, the TS8 raft stand (2017-2023, with and without INSTRUME,
OBSID or CCDSLOT) and the single-sensor TS3 and UCD stands. Every expected value below was
read from the header itself (detector numbers from data/cameras/*_detectors.ecsv).
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from astropy.io import fits

from atmospec.camera.translator import (
    TRANSLATORS,
    ComCamTranslator,
    LsstCamTranslator,
    LsstTs8Translator,
    ObservationInfo,
    Ts3Translator,
    canonical_instrument,
    kasten_young_airmass,
    translate_header,
)
from atmospec.errors import BadInputError

DATA_DIR = Path(__file__).parent / "data" / "lsstcam"
HEADER_DIR = DATA_DIR / "headers"
RAW_DIR = DATA_DIR / "raw"

# ---------------------------------------------------------------------------- header loading


class _PropertyListLoader(yaml.SafeLoader):
    """Safe YAML loader that also reads the ``lsst.daf.base.PropertyList`` dump form."""


def _construct_property_list(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
    # A PropertyList is a sequence of [key, type, value, comment]. A key written more than
    # once (BITPIX and NAXIS of the primary and of the first extension, merged) holds the
    # list of its values: the last one is the card a FITS reader would see last.
    header: dict[str, Any] = {}
    for key, _type, value, *_comment in loader.construct_sequence(node, deep=True):
        header[key] = value[-1] if isinstance(value, list) and value else value
    return header


# The verbatim tag !<lsst.daf.base.PropertyList> reaches the loader without the "!<>".
_PropertyListLoader.add_constructor("lsst.daf.base.PropertyList", _construct_property_list)


@cache
def _read_header(name: str) -> dict[str, Any]:
    path = HEADER_DIR / name
    if path.suffix == ".json":
        header = json.loads(path.read_text())
        header.pop("__CONTENT__", None)  # dump metadata, not a FITS keyword
    else:
        header = yaml.load(path.read_text(), Loader=_PropertyListLoader)
    assert isinstance(header, dict), name
    return header


def load_header(name: str) -> dict[str, Any]:
    """A fresh copy of a stored header (a test may edit it)."""
    return dict(_read_header(name))


def translate_file(name: str) -> ObservationInfo:
    return translate_header(load_header(name), filename=name)


HEADER_FILES = sorted(p.name for p in HEADER_DIR.iterdir() if p.suffix in {".yaml", ".json"})

# ---------------------------------------------------------------------------- expected values

FIELDS = ("instrument", "detector", "detector_id", "obs_id", "exposure_id", "day_obs",
          "seq_num", "image_type", "test_type", "vendor", "detector_serial", "run",
          "test_stand", "controller", "exposure_time", "physical_filter")

EXPECTED: dict[str, tuple[Any, ...]] = {
    # UC Davis beam simulator: one sensor, so no detector although RAFTBAY/CCDSLOT are set.
    "UCD-E2V-CCD250-TS_C_20231031_000227_R21_S01.yaml": (
        "LSST-UCDCam", None, None, "TS_C_20231031_000227", "TS_C_20231031_000227",
        20231031, 227, "flat", "FLAT", "E2V", "E2V-CCD250-112-09", None,
        "LSST_Beam_Simulator", "C", 1.0, "r~empty"),
    "UCD-ITL-3800C-TS_C_20230730_000237_R22_S01.yaml": (
        "LSST-UCDCam", None, None, "TS_C_20230730_000237", "TS_C_20230730_000237",
        20230730, 237, "flat", "FLAT", "ITL", "ITL-3800C-002", None,
        "LSST_Beam_Simulator", "C", 2.0, "r~empty"),
    # INSTRUME 'LSST_CAMERA', claimed by its CC_ OBSID; no LSST_NUM, no TSTAND.
    "comCam-CC_C_20190526_000223_R22_S01.yaml": (
        "LSSTComCam", "R22_S01", 1, "CC_C_20190526_000223_R22_S01", "CC_C_20190526_000223",
        20190526, 223, "bias", "DARK", "ITL", None, None, None, "C", 0.0, "empty~empty"),
    "comCam-CC_C_20190530_000001_R22_S00.yaml": (
        "LSSTComCam", "R22_S00", 0, "CC_C_20190530_000001_R22_S00", "CC_C_20190530_000001",
        20190530, 1, "bias", "BIAS", "ITL", "ITL-3800C-229", None, "EOCCv0_IR2", "C", 0.0,
        "empty~empty"),
    "comCam-CC_H_20100217_006001_R22_S00.yaml": (
        "LSSTComCam", "R22_S00", 0, "CC_H_20100217_006001_R22_S00", "CC_H_20100217_006001",
        20100217, 6001, "science", "TEST", "ITL", "ITL-3800C-229", "9006001", None, "H",
        1.0, "g_01~empty"),
    "comCam-CC_O_20241108_000266_R22_S00.yaml": (
        "LSSTComCam", "R22_S00", 0, "CC_O_20241108_000266_R22_S00", "CC_O_20241108_000266",
        20241108, 266, "science", "OBJECT", "ITL", "ITL-3800C-229", None, "TMACCv1_SUM",
        "O", 30.0, "g_01~empty"),
    "lsstCam-MC_C_20190319_000001_R10_S02.yaml": (
        "LSSTCam", "R10_S02", 29, "MC_C_20190319_000001_R10_S02", "MC_C_20190319_000001",
        20190319, 1, "bias", "BIAS", "ITL", "ITL-3800C-041", None, "BOT", "C", 0.0,
        "empty~empty"),
    # The 2019 BOT's R22 was an ITL engineering raft; the camera's R22_S21 is an e2v CCD.
    "lsstCam-MC_C_20190319_000001_R22_S21.yaml": (
        "LSSTCam", "R22_S21", 97, "MC_C_20190319_000001_R22_S21", "MC_C_20190319_000001",
        20190319, 1, "bias", "BIAS", "ITL", "ITL-3800C-139", None, "BOT", "C", 0.0,
        "empty~empty"),
    "lsstCam-MC_C_20190322_000002_R10_S22.yaml": (
        "LSSTCam", "R10_S22", 35, "MC_C_20190322_000002_R10_S22", "MC_C_20190322_000002",
        20190322, 2, "flat", "FLAT", "ITL", "ITL-3800C-103", "6489D", "BOT", "C", 1.0,
        "SDSSi~ND_OD0.5"),
    "lsstCam-MC_C_20190406_000643_R10_S00.yaml": (
        "LSSTCam", "R10_S00", 27, "MC_C_20190406_000643_R10_S00", "MC_C_20190406_000643",
        20190406, 643, "flat", "LAMBDA", "ITL", "ITL-3800C-145", "6549D", "BOT", "C", 999.99,
        "950nm~empty"),
    "lsstCam-MC_C_20231107_000078_R01_S01.json": (
        "LSSTCam", "R01_S01", 1, "MC_C_20231107_000078_R01_S01", "MC_C_20231107_000078",
        20231107, 78, "bias", "BOT_PERSISTENCE", "ITL", "ITL-3800C-226", "13518", "BOT", "C",
        0.0, "ph_05~empty"),
    "lsstCam-MC_C_20250425_000031_R01_S01.yaml": (
        "LSSTCam", "R01_S01", 1, "MC_C_20250425_000031_R01_S01", "MC_C_20250425_000031",
        20250425, 31, "unknown", None, "ITL", "ITL-3800C-226", None, "TMAMCv1_SUM", "C",
        2.767, "empty~empty"),
    "lsstCam-MC_H_20100217_000032_R22_S00.yaml": (
        "LSSTCam", "R22_S00", 90, "MC_H_20100217_000032_R22_S00", "MC_H_20100217_000032",
        20100217, 32, "science", "PHOSIM", "E2V", "E2V-CCD250-369", "9006001", None, "H",
        15.0, "g~empty"),
    "lsstCam-MC_O_20250415_000060_R01_S01.yaml": (
        "LSSTCam", "R01_S01", 1, "MC_O_20250415_000060_R01_S01", "MC_O_20250415_000060",
        20250415, 60, "acq", "ACQ", "ITL", "ITL-3800C-226", None, "TMAMCv1_SUM", "O", 15.0,
        "i_39~empty"),
    "lsstCam-MC_O_20250415_000228_R10_S20.yaml": (
        "LSSTCam", "R10_S20", 33, "MC_O_20250415_000228_R10_S20", "MC_O_20250415_000228",
        20250415, 228, "acq", "ACQ", "ITL", "ITL-3800C-377", None, "TMAMCv1_SUM", "O", 30.0,
        "i_39~empty"),
    "lsstCam-MC_O_20250422_000250_R01_S01.yaml": (
        "LSSTCam", "R01_S01", 1, "MC_O_20250422_000250_R01_S01", "MC_O_20250422_000250",
        20250422, 250, "acq", "ACQ", "ITL", "ITL-3800C-226", None, "TMAMCv1_SUM", "O", 15.0,
        "r_57~empty"),
    "lsstCam-MC_O_20250609_000578_R01_S01.yaml": (
        "LSSTCam", "R01_S01", 1, "MC_O_20250609_000578_R01_S01", "MC_O_20250609_000578",
        20250609, 578, "science", "OBJECT", "ITL", "ITL-3800C-226", None, "TMAMCv1_SUM", "O",
        30.0, "y_10~empty"),
    # A corner wavefront sensor.
    "lsstCam-MC_O_20251121_000156_R44_SW0.json": (
        "LSSTCam", "R44_SW0", 203, "MC_O_20251121_000156_R44_SW0", "MC_O_20251121_000156",
        20251121, 156, "science", "OBJECT", "ITL", "ITL-4400B-025", None, "TMAMCv1_SUM", "O",
        30.0, "i_39~empty"),
    "lsstCam-MC_O_20260315_000051_R01_S01.yaml": (
        "LSSTCam", "R01_S01", 1, "MC_O_20260315_000051_R01_S01", "MC_O_20260315_000051",
        20260315, 51, "dark", "DARK", "ITL", "ITL-3800C-226", None, "TMAMCv1_SUM", "O", 5.0,
        "r_57~empty"),
    # DAYOBS 20290319 with OBSID MC_C_20190319_000001: DAYOBS is taken as written.
    "lsstCam-faked-future-ccs.yaml": (
        "LSSTCam", "R10_S02", 29, "MC_C_20190319_000001_R10_S02", "MC_C_20190319_000001",
        20290319, 1, "bias", "BIAS", "ITL", "ITL-3800C-041", None, "BOT", "C", 0.0,
        "empty~empty"),
    # No CCD_MANU, no TESTTYPE; RUNNUM is the integer 720.
    "lsstCamSim-MC_S_20240321_000720_R22_S11.yaml": (
        "LSSTCamSim", "R22_S11", 94, "MC_S_20240321_000720_R22_S11", "MC_S_20240321_000720",
        20240321, 720, "science", None, None, "E2V-CCD250-382", "720", None, "S", 30.0,
        "r_57~empty"),
    # FILTER 'NONE', FILTER2 null.
    "lsstCam_MC_C_20231125_000600_R12_S10.yaml": (
        "LSSTCam", "R12_S10", 48, "MC_C_20231125_000600_R12_S10", "MC_C_20231125_000600",
        20231125, 600, "flat", "FLAT", "E2V", "E2V-CCD250-244", "13593", "BOT", "C", 15.0,
        "empty~empty"),
    # TS3: no OBSID, DAYOBS, CONTRLLR; DATE-OBS 2018-11-15T12:55:11.149 (UTC) - 8 h.
    "ts3-E2V-CCD250-411_lambda_flat_1000_025_20181115075559.yaml": (
        "LSST-TS3", None, None, "TS3_E2V-CCD250-411_201811151255111",
        "TS3_E2V-CCD250-411_201811151255111", 20181115, 25, "flat", "LAMBDA", "E2V",
        "E2V-CCD250-411", None, "BNL-TS3-2-Janeway", None, 44.631, "550CutOn~empty"),
    # DATE-OBS 2016-07-22T06:07:06.784 - 8 h is still 2016-07-21.
    "ts3-ITL-3800C-098_lambda_flat_1000_067_20160722020740.yaml": (
        "LSST-TS3", None, None, "TS3_ITL-3800C-098_201607220607067",
        "TS3_ITL-3800C-098_201607220607067", 20160721, 67, "flat", "LAMBDA", "ITL",
        "ITL-3800C-098", None, "BNL-TS3-2-Janeway", None, 30.611, "550CutOn~empty"),
    # Old TS8: no INSTRUME, OBSID, DAYOBS, CCDSLOT; the slot is LSST_NUM's in RTM-010.
    "ts8-E2V-CCD250-179_lambda_bias_024_6006D_20180724104156.yaml": (
        "LSST-TS8", "RTM-010_S11", 67, "TS8_6006D_201807241041568_RTM-010_S11",
        "TS8_6006D_201807241041568", 20180724, 24, "bias", "LAMBDA", "E2V", "E2V-CCD250-179",
        "6006D", "TS8", None, 0.0, "empty~empty"),
    # LSST_NUM 'E2V-CCD250-200-Dev'.
    "ts8-E2V-CCD250-200-Dev_lambda_flat_0700_6006D_20180724102845.yaml": (
        "LSST-TS8", "RTM-010_S02", 65, "TS8_6006D_201807241028453_RTM-010_S02",
        "TS8_6006D_201807241028453", 20180724, 17, "flat", "LAMBDA", "E2V", "E2V-CCD250-200",
        "6006D", "TS8", None, 21.913, "empty~empty"),
    # Not even TSTAND: recognised by RAFTNAME 'LCA-11021_RTM-005' and REBNAME 'R00.Reb0'.
    "ts8-E2V-CCD250-220_fe55_fe55_094_6288_20171215114006.yaml": (
        "LSST-TS8", "RTM-005_S00", 27, "TS8_6288_201712151140062_RTM-005_S00",
        "TS8_6288_201712151140062", 20171215, 94, "fe55", "FE55", "E2V", "E2V-CCD250-220",
        "6288", None, None, 300.0, "empty~empty"),
    # RAFTBAY R22 is the bay, the raft is RAFTNAME's RTM-004; FILTER 'unspecified'.
    "ts8-TS_C_20220711_000174_R22_S00.yaml": (
        "LSST-TS8", "RTM-004_S00", 18, "TS_C_20220711_000174_RTM-004_S00",
        "TS_C_20220711_000174", 20220711, 174, "spot", "SPOT_FLAT", "ITL", "ITL-3800C-372",
        "7074D", "TS8", "C", 210.0, "empty~empty"),
    "ts8-TS_C_20230512_000021_R22_S02-fixed.yaml": (
        "LSST-TS8", "RTM-004_S02", 20, "TS_C_20230512_000021_RTM-004_S02",
        "TS_C_20230512_000021", 20230512, 21, "flat", "SFLAT_HI", "ITL", "ITL-3800C-380",
        "7187D", "TS8", "C", 15.0, "empty~empty"),
    "ts8-TS_C_20230512_000021_R22_S02.yaml": (
        "LSST-TS8", "RTM-004_S02", 20, "TS_C_20230512_000021_RTM-004_S02",
        "TS_C_20230512_000021", 20230512, 21, "flat", "SFLAT_HI", "ITL", "ITL-3800C-380",
        "7187D", "TS8", "C", 15.0, "empty~empty"),
    "ts8-TS_C_20230523_000127_R22_S00.yaml": (
        "LSST-TS8", "RTM-004_S00", 18, "TS_C_20230523_000127_RTM-004_S00",
        "TS_C_20230523_000127", 20230523, 127, "flat", "FLAT", "ITL", "ITL-3800C-372",
        "7220D", "TS8", "C", 15.0, "empty~empty"),
    "ts8-TS_C_20230525_000041_R22_S00.yaml": (
        "LSST-TS8", "RTM-004_S00", 18, "TS_C_20230525_000041_RTM-004_S00",
        "TS_C_20230525_000041", 20230525, 41, "flat", "FLAT", "ITL", "ITL-3800C-372",
        "7227D", "TS8", "C", 30.0, "empty~empty"),
}


def test_all_32_headers_present_and_expected() -> None:
    assert len(HEADER_FILES) == 32
    assert sorted(EXPECTED) == HEADER_FILES
    assert all(len(row) == len(FIELDS) for row in EXPECTED.values())


@pytest.mark.parametrize("name", HEADER_FILES)
def test_every_header_translates_to_expected_values(name: str) -> None:
    info = translate_file(name)
    got = tuple(getattr(info, field) for field in FIELDS)
    assert dict(zip(FIELDS, got, strict=True)) == dict(zip(FIELDS, EXPECTED[name], strict=True))
    # No LSST camera has a disperser: no frame may ever be routed to spectroscopy.
    assert info.disperser == "empty"
    assert info.is_dispersed is False
    assert info.physical_filter.split("~")[0] == info.filter
    assert info.datetime_begin is not None
    assert info.dark_time is not None and info.dark_time >= info.exposure_time
    json.dumps(info.to_dict())


# ---------------------------------------------------------------------------- times

@pytest.mark.parametrize(("name", "isot", "scale"), [
    # No TIMESYS: LSST camera times are TAI.
    ("lsstCam-MC_C_20190319_000001_R10_S02.yaml", "2019-03-19T15:50:28.145", "tai"),
    ("lsstCam-MC_O_20250609_000578_R01_S01.yaml", "2025-06-10T07:31:55.280", "tai"),
    # DATE-OBS = DATE-TRG = 17:14:45.995 is the end of a 210 s exposure (UTC: no TIMESYS).
    ("ts8-TS_C_20220711_000174_R22_S00.yaml", "2022-07-11T17:11:15.995", "utc"),
    ("ts8-TS_C_20230523_000127_R22_S00.yaml", "2023-05-23T19:36:19.477", "tai"),
    ("ts8-E2V-CCD250-179_lambda_bias_024_6006D_20180724104156.yaml",
     "2018-07-24T10:41:56.807", "utc"),
    # DATE-OBS = DATE-TRG = 19:21:15.280, EXPTIME 1 s.
    ("UCD-E2V-CCD250-TS_C_20231031_000227_R21_S01.yaml", "2023-10-31T19:21:14.280", "tai"),
    ("ts3-ITL-3800C-098_lambda_flat_1000_067_20160722020740.yaml",
     "2016-07-22T06:07:06.784", "utc"),
])
def test_start_time_and_scale(name: str, isot: str, scale: str) -> None:
    start = translate_file(name).datetime_begin
    assert start is not None
    assert (start.isot, start.scale) == (isot, scale)


def test_stand_day_obs_rolls_over_8_hours_after_midnight_utc() -> None:
    name = "ts8-E2V-CCD250-179_lambda_bias_024_6006D_20180724104156.yaml"
    header = load_header(name)
    header["DATE-OBS"] = "2018-07-24T07:59:59.900"
    assert translate_header(header).day_obs == 20180723
    header["DATE-OBS"] = "2018-07-24T08:00:00.100"
    assert translate_header(header).day_obs == 20180724
    assert translate_header(header).exposure_id == "TS8_6006D_201807240800001"


# ---------------------------------------------------------------------------- pointing

def test_summit_pointing_and_weather() -> None:
    info = translate_file("lsstCam-MC_O_20250609_000578_R01_S01.yaml")
    assert (info.ra, info.dec) == (320.62687495816675, -17.94136111150278)
    assert info.airmass == 1.0784249757326254
    assert info.altitude == 67.9926054067029
    assert info.azimuth == 60.273964256114
    assert info.rotation_angle == 131.35723576573005
    assert info.pressure == pytest.approx(742.10)  # PRESSURE 74210.0 Pa
    assert info.temperature == pytest.approx(9.7)
    assert info.relative_humidity == pytest.approx(11.175)
    assert info.target_name == "Rubin_SV_320_-15"


def test_summit_az_el_frame_uses_measured_pointing() -> None:
    # TRACKSYS AZEL: RA = DEC = 0.0 commanded, AMSTART 0.0, AZSTART slightly negative.
    info = translate_file("lsstCam-MC_O_20260315_000051_R01_S01.yaml")
    assert (info.ra, info.dec) == (84.54740362444205, 15.961814429418297)
    assert info.airmass == pytest.approx(kasten_young_airmass(43.81125182495))
    assert info.azimuth == pytest.approx(360.0 - 0.580160322058676)


def test_lab_frame_has_no_pointing() -> None:
    info = translate_file("lsstCam-MC_C_20190322_000002_R10_S22.yaml")
    pointing = (info.ra, info.dec, info.airmass, info.altitude, info.azimuth,
                info.rotation_angle, info.pressure, info.temperature)
    assert pointing == (None,) * 8


# ---------------------------------------------------------------------------- identity rules

def test_detectors_of_one_exposure_share_exposure_id() -> None:
    a = translate_file("lsstCam-MC_C_20190319_000001_R10_S02.yaml")
    b = translate_file("lsstCam-MC_C_20190319_000001_R22_S21.yaml")
    assert a.exposure_id == b.exposure_id == "MC_C_20190319_000001"
    assert a.obs_id != b.obs_id


@pytest.mark.parametrize(("raft", "slot"), [("R99", "S11"), ("R22", "S33"), (None, "S11"),
                                            ("R22", None)])
def test_unknown_raft_or_slot_is_refused_in_one_line(raft: str | None, slot: str | None
                                                     ) -> None:
    header = load_header("lsstCam-MC_C_20190319_000001_R22_S21.yaml")
    header["RAFTBAY"], header["CCDSLOT"] = raft, slot
    with pytest.raises(BadInputError) as excinfo:
        translate_header(header, "raw.fits")
    message = str(excinfo.value)
    assert excinfo.value.path == "raw.fits"
    assert "\n" not in message
    assert f"RAFTBAY = {raft!r}" in message and f"CCDSLOT = {slot!r}" in message
    assert "LSSTCam" in message


def test_ts8_slot_found_from_serial_when_ccdslot_missing() -> None:
    header = load_header("ts8-TS_C_20230512_000021_R22_S02.yaml")
    del header["CCDSLOT"]
    info = translate_header(header)
    assert (info.detector, info.detector_id) == ("RTM-004_S02", 20)  # ITL-3800C-380


def test_ts8_serial_not_in_its_raft_is_refused() -> None:
    header = load_header("ts8-E2V-CCD250-179_lambda_bias_024_6006D_20180724104156.yaml")
    header["LSST_NUM"] = "E2V-CCD250-220"  # a CCD of RTM-005, not of RTM-010
    with pytest.raises(BadInputError) as excinfo:
        translate_header(header, "ts8.fits")
    message = excinfo.value.problem
    assert "\n" not in message
    assert "RAFTNAME = 'LCA-11021_RTM-010-Dev'" in message
    assert "LSST_NUM = 'E2V-CCD250-220'" in message
    assert "RTM-010" in message


@pytest.mark.parametrize(("name", "key", "value"), [
    ("lsstCam-MC_C_20190319_000001_R22_S21.yaml", "OBSID", "../MC_C_20190319_000001"),
    ("UCD-E2V-CCD250-TS_C_20231031_000227_R21_S01.yaml", "OBSID", "TS_C/../../x"),
    # A TS8 exposure id built from RUNNUM must be as safe as an OBSID.
    ("ts8-E2V-CCD250-179_lambda_bias_024_6006D_20180724104156.yaml", "RUNNUM", "../6006D"),
])
def test_path_in_identifier_is_refused(name: str, key: str, value: str) -> None:
    header = load_header(name)
    header[key] = value
    with pytest.raises(BadInputError, match="cannot name an output file") as excinfo:
        translate_header(header, "raw.fits")
    assert "\n" not in str(excinfo.value)


def test_lsstcam_without_obsid_or_with_bad_dayobs_is_refused() -> None:
    header = load_header("lsstCam-MC_O_20250609_000578_R01_S01.yaml")
    del header["OBSID"]
    with pytest.raises(BadInputError, match="LSSTCam header has no OBSID"):
        translate_header(header)
    header = load_header("lsstCam-MC_O_20250609_000578_R01_S01.yaml")
    header["DAYOBS"] = "2025-06-09"
    with pytest.raises(BadInputError, match="DAYOBS = '2025-06-09' is not a date"):
        translate_header(header)


def test_day_and_sequence_from_obsid_when_missing() -> None:
    header = load_header("lsstCam-MC_O_20250609_000578_R01_S01.yaml")
    del header["DAYOBS"], header["SEQNUM"]
    info = translate_header(header)
    assert (info.day_obs, info.seq_num) == (20250609, 578)


# ---------------------------------------------------------------------------- claiming

def test_canonical_instrument_names() -> None:
    assert canonical_instrument("lsstCam") == "LSSTCam"
    assert canonical_instrument("comCam") == "LSSTComCam"
    assert canonical_instrument("lsst-ucdcam-itl") == "LSST-UCDCam"
    assert canonical_instrument("lsst-ts3") == "LSST-TS3"
    for translator in TRANSLATORS:
        assert canonical_instrument(translator.name) == translator.name


def test_claims_by_instrument_and_keys() -> None:
    assert LsstCamTranslator.can_translate({"INSTRUME": "LSSTCam"})
    assert not LsstCamTranslator.can_translate({"INSTRUME": "LSSTCamSim"})
    # LSST_CAMERA is ComCam's only with a CC_ OBSID.
    assert ComCamTranslator.can_translate({"INSTRUME": "LSST_CAMERA", "OBSID": "CC_C_1"})
    assert not ComCamTranslator.can_translate({"INSTRUME": "LSST_CAMERA", "OBSID": "MC_C_1"})
    assert not ComCamTranslator.can_translate({"OBSID": "CC_C_20190526_000223"})
    old_ts8 = {"RAFTNAME": "LCA-11021_RTM-005", "REBNAME": "R00.Reb0"}
    assert LsstTs8Translator.can_translate(old_ts8)
    assert not LsstTs8Translator.can_translate({**old_ts8, "REBNAME": "LCA-13574-061"})
    assert not LsstTs8Translator.can_translate({**old_ts8, "TSTAND": "BOT"})
    assert not LsstTs8Translator.can_translate({**old_ts8, "INSTRUME": "lsstCam"})
    assert Ts3Translator.can_translate({"TSTAND": "BNL-TS3-2-Janeway"})
    assert Ts3Translator.can_translate({"INSTRUME": "ArchonCCDController",
                                        "TSTAND": "BNL-TS3-2-Janeway"})
    assert not Ts3Translator.can_translate({"INSTRUME": "ArchonCCDController", "TSTAND": "X"})
    with pytest.raises(BadInputError, match="unsupported instrument"):
        translate_header({"INSTRUME": "LSST_CAMERA", "OBSID": "MC_C_20190319_000001"})


@pytest.mark.parametrize(("filter1", "filter2", "expected"), [
    (None, None, "empty~empty"),
    ("NONE", "unspecified", "empty~empty"),
    ("empty_2", "empty", "empty~empty"),
    ("SDSSi", "ND_OD0.5", "SDSSi~ND_OD0.5"),
    ("r_57", None, "r_57~empty"),
])
def test_physical_filter(filter1: str | None, filter2: str | None, expected: str) -> None:
    header = load_header("lsstCam-MC_C_20190322_000002_R10_S22.yaml")
    header["FILTER"], header["FILTER2"] = filter1, filter2
    info = translate_header(header)
    assert info.physical_filter == expected
    assert not info.is_dispersed


# ---------------------------------------------------------------------------- raw files

RAW_FILES = sorted(p.name for p in RAW_DIR.glob("*.fits"))

#: File-name prefix -> instrument: the files are named <camera>_<exposure>-<raft>-<slot>-det<id>.
RAW_INSTRUMENTS = {"comCam": "LSSTComCam", "lsstCam": "LSSTCam", "ts8": "LSST-TS8"}


def test_raw_files_present() -> None:
    assert len(RAW_FILES) == 6


@pytest.mark.parametrize("name", RAW_FILES)
def test_raw_file_translates_as_its_name_states(name: str) -> None:
    match = re.fullmatch(r"(?P<cam>[A-Za-z0-9]+)_.*-(?P<raft>R\d\d|RTM-\d{3})-(?P<slot>S\d\d)"
                         r"-det(?P<id>\d{3})_.*\.fits", name)
    assert match is not None, name
    info = translate_header(fits.getheader(RAW_DIR / name, 0), filename=name)
    assert info.instrument == RAW_INSTRUMENTS[match["cam"]]
    assert info.detector == f"{match['raft']}_{match['slot']}"
    assert info.detector_id == int(match["id"])
    assert info.obs_id == f"{info.exposure_id}_{info.detector}"
    assert not info.is_dispersed


def test_ts8_raw_shares_its_exposure_with_another_ccd_header() -> None:
    # The raw is CCD S11 (E2V-CCD250-179) of the exposure whose S02 header is stored.
    raw = translate_header(fits.getheader(
        RAW_DIR / "ts8_6006D_201807241028453-RTM-010-S11-det067_one_real_amp.fits", 0))
    header = translate_file("ts8-E2V-CCD250-200-Dev_lambda_flat_0700_6006D_20180724102845.yaml")
    assert raw.exposure_id == header.exposure_id == "TS8_6006D_201807241028453"
    assert (raw.detector, header.detector) == ("RTM-010_S11", "RTM-010_S02")
