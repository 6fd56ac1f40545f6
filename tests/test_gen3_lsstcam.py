"""Gen3 records of the LSST Camera family: the instruments' detector records, obs_lsst's
exposure ids of the real LSST raws, and their ingestion into Butler repositories (one
exposure per OBSID, one raw per exposure and detector, raws of another instrument refused).

Needs the ``gen3`` extra; without it the module is skipped, as tests/test_gen3.py is.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from astropy.io import fits
from astropy.time import Time

from atmospec.errors import BadInputError
from atmospec.gen3 import gen3_available

pytestmark = pytest.mark.skipif(
    not gen3_available(), reason="the [gen3] extra (lsst-daf-butler, lsst-pipe-base, "
    "lsst-ctrl-mpexec, lsst-ctrl-bps-parsl) is not installed in this interpreter")

RAW = Path(__file__).parent / "data" / "lsstcam" / "raw"
BOT = sorted(RAW.glob("lsstCam_bot_*.fits"))
COMCAM = RAW / "comCam_3019053000001-R22-S00-det000_zeroed.fits"
TS8 = RAW / "ts8_6006D_201807241028453-RTM-010-S11-det067_one_real_amp.fits"

#: obs_lsst's exposure id of each real raw. The file names are obs_lsst's test-data names,
#: ``<exposure id>-<raft>-<slot>-det<detector id>``, except the 2021 one, named by the
#: digits of its OBSID MC_C_20211212_000310 (30211212000310): obs_lsst's own ingest test
#: gives that file exposure 3021121200310 (day_obs 20211212 + 1000 years for controller C,
#: then the 5-digit sequence number).
EXPOSURE_IDS = {
    "lsstCam_bot_3019031900001-R10-S02-det029_zeroed.fits": 3019031900001,
    "lsstCam_bot_3019031900001-R22-S21-det097_zeroed.fits": 3019031900001,
    "lsstCam_bot_3019032200002-R10-S22-det035_zeroed.fits": 3019032200002,
    "lsstCam_bot_30211212000310-R22-S22-det098_zeroed.fits": 3021121200310,
    COMCAM.name: 3019053000001,
    TS8.name: 201807241028453,
}


def _translated(path: Path) -> tuple[Any, str]:
    from atmospec.camera.translator import translate_header

    header = fits.getheader(path, 0)
    return translate_header(header, str(path)), str(header["DATE-OBS"])


# --------------------------------------------------------------------------- instruments


def test_instrument_records_are_built_from_the_detector_tables() -> None:
    from atmospec.camera.description import detector_table
    from atmospec.gen3.instrument import (
        INSTRUMENTS,
        Latiss,
        LsstCam,
        LsstCamSim,
        LsstComCam,
        LsstTs8,
        instrument_for,
    )

    records = {r["full_name"]: r for r in LsstCam.detector_records()}
    assert len(records) == 205 and [r["id"] for r in LsstCam.detector_records()] == list(
        range(205))
    assert records["R22_S11"] == {"instrument": "LSSTCam", "id": 94, "full_name": "R22_S11",
                                  "raft": "R22", "name_in_raft": "S11", "purpose": "SCIENCE"}
    assert (records["R00_SW0"]["id"], records["R00_SW0"]["purpose"]) == (191, "WAVEFRONT")
    assert (records["R00_SG0"]["id"], records["R00_SG0"]["purpose"]) == (189, "GUIDER")
    assert Counter(r["purpose"] for r in records.values()) == {
        "SCIENCE": 189, "GUIDER": 8, "WAVEFRONT": 8}
    # The wavefront sensors are the ITL_WF ones of the camera description.
    assert {n for n, e in detector_table("LSSTCam").items() if e.sensor_type == "ITL_WF"} \
        == {n for n, r in records.items() if r["purpose"] == "WAVEFRONT"}
    assert LsstCam.instrument_record() == {
        "name": "LSSTCam", "detector_max": 205, "visit_max": 7050123199999,
        "exposure_max": 7050123199999, "visit_system": 0,
        "class_name": "atmospec.gen3.instrument.LsstCam"}
    assert [r["full_name"] for r in LsstComCam.detector_records()] == [
        f"R22_S{i}{j}" for i in range(3) for j in range(3)]
    assert LsstComCam.instrument_record()["detector_max"] == 9
    assert LsstCamSim.detector_records()[94]["instrument"] == "LSSTCamSim"
    ts8 = {r["full_name"]: r for r in LsstTs8.detector_records()}
    assert len(ts8) == 225 and LsstTs8.instrument_record()["detector_max"] == 225
    assert ts8["RTM-010_S11"]["raft"] == "RTM-010" and ts8["RTM-010_S11"]["name_in_raft"] \
        == "S11"
    # LATISS: the records its repositories always had.
    assert Latiss.instrument_record() == {
        "name": "LATISS", "detector_max": 1, "visit_max": 99_999_999_999_999,
        "exposure_max": 99_999_999_999_999, "visit_system": 0,
        "class_name": "atmospec.gen3.instrument.Latiss"}
    assert Latiss.detector_records() == [{
        "instrument": "LATISS", "id": 0, "full_name": "RXX_S00", "raft": "RXX",
        "name_in_raft": "S00", "purpose": "SCIENCE"}]
    assert "empty~holo4_003" in Latiss.base_physical_filters()
    # Every class is found by its translator's name, and its day starts where the
    # translator's day_obs does.
    from atmospec.camera.translator import TRANSLATORS

    offsets = {t.name: getattr(t, "day_obs_offset_hours", None) for t in TRANSLATORS}
    for name, cls in INSTRUMENTS.items():
        assert instrument_for(name) is cls and cls.getName() == name
        assert cls.day_obs_offset_hours == (offsets[name] or 12.0), name
    with pytest.raises(BadInputError) as info:
        instrument_for("LSST-TS3")
    assert str(info.value).startswith("no Gen3 instrument for 'LSST-TS3' (known: LATISS, ")


def test_exposure_ids_of_the_real_raws() -> None:
    from atmospec.gen3.instrument import exposure_record, instrument_for

    for path in sorted(RAW.glob("*.fits")):
        info, date_obs = _translated(path)
        cls = instrument_for(info.instrument)
        assert cls.exposure_number(info, date_obs) == EXPOSURE_IDS[path.name], path.name
        record = exposure_record(info, date_obs)
        # obs_id and group name the exposure, shared by its detectors, not the frame.
        assert record["obs_id"] == record["group"] == info.exposure_id != info.obs_id
        assert record["instrument"] == info.instrument
        # The detector id in obs_lsst's file name is our translator's.
        assert int(re.search(r"det(\d{3})", path.name)[1]) == info.detector_id
    # A TS8 frame read without its DATE-OBS: the start in the translator's exposure id.
    info, _ = _translated(TS8)
    assert instrument_for("LSST-TS8").exposure_number(info) == 201807241028453


def test_exposure_id_rules() -> None:
    from atmospec.gen3.instrument import LsstTs8, lsst_exposure_id, stand_exposure_id

    assert lsst_exposure_id(20190319, 1, "C") == 3019031900001
    assert lsst_exposure_id(20250601, 12, "O") == 2025060100012
    assert lsst_exposure_id(20250601, 12, None) == 2025060100012
    assert lsst_exposure_id(20220101, 7, "H") == 4022010100007
    # The C counter joined the O one after 2023-10-04, the P, Q, S ones after 2025-04-17.
    assert lsst_exposure_id(20231004, 3, "C") == 3023100400003
    assert lsst_exposure_id(20231005, 3, "C") == 2023100500003
    assert lsst_exposure_id(20250417, 3, "S") == 7025041700003
    assert lsst_exposure_id(20250418, 3, "S") == 2025041800003
    for args, match in (((20250601, 100000, "O"), "sequence number"),
                        ((20250601, 1, "X"), "CONTRLLR = 'X'"),
                        ((2025061, 1, "O"), "not YYYYMMDD")):
        with pytest.raises(BadInputError, match=match):
            lsst_exposure_id(*args)
    assert stand_exposure_id("2018-07-24T10:28:45.342") == 201807241028453
    with pytest.raises(BadInputError, match="not a time"):
        stand_exposure_id("24/07/2018")
    # TS8 takes the cameras' rule for its TS_C_ exposures from 2023-05-24 23:00 TAI on.
    info, _ = _translated(TS8)
    modern = dataclasses.replace(info, exposure_id="TS_C_20230525_000906", day_obs=20230525,
                                 seq_num=906, controller="C",
                                 datetime_begin=Time("2023-05-25T10:00:00", scale="tai"))
    assert LsstTs8.exposure_number(modern, "2023-05-25T10:00:00.000") == 3023052500906
    early = dataclasses.replace(modern, datetime_begin=Time("2023-05-24T20:00:00",
                                                            scale="tai"))
    assert LsstTs8.exposure_number(early, "2023-05-24T20:00:00.000") == 202305242000000
    with pytest.raises(BadInputError, match="needs the DATE-OBS"):
        LsstTs8.exposure_number(early)


# --------------------------------------------------------------------------- repositories


@pytest.fixture(scope="module")
def lsstcam_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An LSSTCam repository with every real raw of tests/data/lsstcam/raw ingested (in
    place): the BOT ones go in, the ComCam and TS8 ones are refused."""
    from atmospec.gen3.repo import ingest_raws, init_repo

    repo = init_repo(tmp_path_factory.mktemp("lsstcam") / "repo", instrument="LSSTCam")
    yield {"repo": repo, "result": ingest_raws(repo, [RAW], transfer="direct")}


def test_ingest_real_lsstcam_raws(lsstcam_repo: dict[str, Any]) -> None:
    from lsst.daf.butler import Butler

    from atmospec.gen3.repo import ingest_raws

    result, repo = lsstcam_repo["result"], lsstcam_repo["repo"]
    assert sorted(result.ingested) == sorted(_translated(p)[0].obs_id for p in BOT)
    assert result.skipped == [] and result.run == "LSSTCam/raw/all"
    assert sorted(Path(p).name for p, _ in result.rejected) == sorted([COMCAM.name, TS8.name])
    with Butler.from_config(str(repo)) as butler:
        exposures = {r.id: r for r in butler.query_dimension_records(
            "exposure", instrument="LSSTCam")}
        assert {i: r.obs_id for i, r in exposures.items()} == {
            3019031900001: "MC_C_20190319_000001", 3019032200002: "MC_C_20190322_000002",
            3021121200310: "MC_C_20211212_000310"}
        assert all(r.group == r.obs_id for r in exposures.values())
        assert exposures[3019032200002].physical_filter == "SDSSi~ND_OD0.5"
        assert exposures[3019032200002].science_program == "6489D"  # RUNNUM
        refs = butler.query_datasets("raw", collections="LSSTCam/raw/all")
        assert sorted((r.dataId["exposure"], r.dataId["detector"]) for r in refs) == [
            (3019031900001, 29), (3019031900001, 97), (3019032200002, 35),
            (3021121200310, 98)]
        detectors = {r.full_name: r for r in butler.query_dimension_records(
            "detector", instrument="LSSTCam")}
        assert len(detectors) == 205
        assert (detectors["R22_S11"].id, detectors["R22_S11"].purpose) == (94, "SCIENCE")
        assert (detectors["R00_SW0"].id, detectors["R00_SW0"].purpose) == (191, "WAVEFRONT")
        assert {"LSSTCam/raw/all", "LSSTCam/calib"} <= set(
            butler.registry.queryCollections())
        raw = butler.get("raw", instrument="LSSTCam", detector=97, exposure=3019031900001,
                         collections="LSSTCam/raw/all")
        assert raw.info.detector == "R22_S21" and raw.info.exposure_id == "MC_C_20190319_000001"
    # Again: every frame is already there.
    again = ingest_raws(repo, BOT, transfer="direct")
    assert again.ingested == [] and len(again.skipped) == 4


def test_raws_of_another_instrument_are_refused(lsstcam_repo: dict[str, Any],
                                                tmp_path: Path) -> None:
    from atmospec.gen3.repo import certify_files, ingest_raws, init_repo

    repo = lsstcam_repo["repo"]
    # The LATISS test raw: the real 2018 frame our simulator's files are made from.
    template_raw = Path(str(resources.files("atmospec.data") / "latiss_raw_template.fits.gz"))
    result = ingest_raws(repo, [template_raw], transfer="direct")
    assert result.ingested == [] and len(result.rejected) == 1
    path, reason = result.rejected[0]
    message = str(BadInputError(path, reason))
    assert message == (f"{template_raw}: instrument LATISS, not LSSTCam of this repository "
                       "(make one for it: atmospec butler init REPO --instrument LATISS)")
    for _, reason in lsstcam_repo["result"].rejected:
        assert reason.startswith("instrument LSST") and "\n" not in reason
    # Another OBSID on an exposure id of the repository (its CONTRLLR contradicts it).
    with fits.open(BOT[1]) as hdul:
        hdul[0].header["OBSID"] = "MC_O_20190319_000001"
        hdul.writeto(tmp_path / "other.fits")
    result = ingest_raws(repo, [tmp_path / "other.fits"], transfer="direct")
    assert result.rejected == [(str(tmp_path / "other.fits"), (
        "exposure id 3019031900001 of MC_O_20190319_000001 is already exposure "
        "MC_C_20190319_000001 in this repository"))]
    # --update keeps the repository's instrument and refuses another.
    init_repo(repo, update=True)
    with pytest.raises(BadInputError, match="this repository is for LSSTCam, not LATISS"):
        init_repo(repo, instrument="LATISS", update=True)
    # Product files are LATISS's only (checked with its camera, named by its detector).
    with pytest.raises(BadInputError, match=r"for LSSTCam .*--from-collection"):
        certify_files(repo, "bias", [template_raw])


def test_comcam_repository_through_the_cli(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from atmospec.cli import main

    repo = tmp_path / "comcam"
    assert main(["butler", "init", str(repo), "--instrument", "LSSTComCam"]) == 0
    assert main(["butler", "ingest", str(repo), str(COMCAM), "--transfer", "direct"]) == 0
    out = capsys.readouterr().out
    assert f"created Butler repository {repo} (instrument LSSTComCam, 9 detectors)" in out
    assert "ingested 1 raws into LSSTComCam/raw/all (0 already there, 0 rejected)" in out
    from lsst.daf.butler import Butler

    with Butler.from_config(str(repo), collections="LSSTComCam/raw/all") as butler:
        (ref,) = butler.query_datasets("raw")
        assert (ref.dataId["exposure"], ref.dataId["detector"]) == (3019053000001, 0)


def test_empty_repository_takes_the_instrument_of_its_raws(tmp_path: Path) -> None:
    """A repository without an instrument (made by ``butler create``) registers the one of
    the first raw: here TS8, whose day starts at 08:00 UTC."""
    from lsst.daf.butler import Butler

    from atmospec.gen3.repo import ingest_raws, repo_config

    Butler.makeRepo(str(tmp_path), config=repo_config())
    result = ingest_raws(tmp_path, [TS8, BOT[0]], transfer="direct")
    assert result.ingested == ["TS8_6006D_201807241028453_RTM-010_S11"]
    assert result.rejected[0][1].startswith("instrument LSSTCam, not LSST-TS8 of this")
    with Butler.from_config(str(tmp_path), collections="LSST-TS8/raw/all") as butler:
        (ref,) = butler.query_datasets("raw")
        assert (ref.dataId["exposure"], ref.dataId["detector"]) == (201807241028453, 67)
        (day,) = butler.query_dimension_records("day_obs", instrument="LSST-TS8")
        assert day.id == 20180724
        assert day.timespan.begin.utc.isot.startswith("2018-07-24T08:00:00.000")
        assert "LSST-TS8/calib" in butler.registry.queryCollections()
