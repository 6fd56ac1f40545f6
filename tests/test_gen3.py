"""Gen3 middleware path: a Butler repository of the test night, ``pipetask run`` of cpBias
then ``-j 2`` of processStar, cpPtc on flat pairs, ISR with every calibration product from the
Butler, a missing flat failing only its exposure, and ``bps submit`` with Parsl's local site;
every output identical (pixel for pixel, value for value) to the native runner's.

Needs the ``gen3`` extra; without it only the clear-error tests run and the rest is skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from atmospec.errors import BadInputError
from atmospec.exposure import Exposure
from atmospec.gen3 import GEN3_HINT, gen3_available, require_gen3

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = ROOT / "pipelines" / "gen3"
NEEDS_GEN3 = pytest.mark.skipif(
    not gen3_available(), reason="the [gen3] extra (lsst-daf-butler, lsst-pipe-base, "
    "lsst-ctrl-mpexec, lsst-ctrl-bps-parsl) is not installed in this interpreter")

DAY_OBS = 20250301
IMAGING, DISPERSED = 13, 14  # seq_num of the first imaging and of the dispersed exposure
BIN = Path(sys.executable).parent


# --------------------------------------------------------------------------- without the extra


def _hide_middleware(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name.startswith("lsst") else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_missing_extra_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_middleware(monkeypatch)
    assert not gen3_available()
    with pytest.raises(BadInputError) as info:
        require_gen3()
    assert str(info.value) == GEN3_HINT
    assert "pip install 'atmospec[gen3]'" in str(info.value)


def test_cli_without_extra_exits_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from atmospec import cli
    from atmospec.cli.gen3 import add_bps_parser, add_butler_parser

    _hide_middleware(monkeypatch)
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_butler_parser(sub)
    add_bps_parser(sub)
    for argv in (["butler", "init", str(tmp_path / "repo")],
                 ["butler", "ingest", str(tmp_path / "repo"), str(tmp_path)],
                 ["bps", "submit", str(PIPELINES / "bps_parsl_local.yaml")]):
        args = parser.parse_args(argv)
        with pytest.raises(BadInputError, match=r"\[gen3\] extra"):
            args.func(args)
    # atmospec.cli.main maps BadInputError to one line and status 2.
    assert cli.EXIT_BAD_INPUT == 2
    assert not (tmp_path / "repo").exists()


# --------------------------------------------------------------------------- configs


def test_bps_config_may_be_a_package_resource() -> None:
    """``atmospec bps submit resource://atmospec.pipelines/gen3/bps_parsl_local.yaml`` finds
    the file installed with atmospec (docs/gen3.md runs from any folder)."""
    from atmospec.cli.gen3 import local_resource

    found = Path(local_resource("resource://atmospec.pipelines/gen3/bps_parsl_local.yaml"))
    assert found.is_file() and found.name == "bps_parsl_local.yaml"
    assert local_resource("pipelines/x.yaml") == "pipelines/x.yaml"
    with pytest.raises(BadInputError, match="no package 'nowhere'"):
        local_resource("resource://nowhere/x.yaml")


@NEEDS_GEN3
def test_configs_are_generated_from_the_dataclasses() -> None:
    from atmospec.calib.masters import DarkConfig
    from atmospec.gen3.config import apply_dataclass, config_class_from_dataclass, to_dataclass
    from atmospec.imaging.characterize import CharacterizeConfig
    from atmospec.isr.driver import IsrConfig
    from atmospec.spectro.chain import SpectroscopyConfig

    for dc in (IsrConfig, CharacterizeConfig, SpectroscopyConfig, DarkConfig):
        config = config_class_from_dataclass(dc)()
        config.validate()
        assert to_dataclass(config) == dc()
    config = config_class_from_dataclass(IsrConfig)()
    # Field docstrings become the config docs; nested dataclasses nested configs.
    assert "MEDIAN_PER_ROW" in type(config.overscan)._fields["method"].doc
    config.overscan.method = "poly"
    config.steps = ["overscan", "gain"]
    with pytest.raises(Exception, match=r"spline|allowed"):
        config.overscan.method = "cubic"
    back = to_dataclass(config)
    assert back.overscan.method == "poly" and back.steps == ("overscan", "gain")
    # An optional nested dataclass: a do_<name> flag.
    spectro = config_class_from_dataclass(SpectroscopyConfig)()
    spectro.do_forward_model = False
    assert to_dataclass(spectro).forward_model is None
    # A subclass's default_factory is the default of the nested config.
    assert config_class_from_dataclass(DarkConfig)().combine.scale == "darktime"
    again = config_class_from_dataclass(IsrConfig)()
    apply_dataclass(again, back)
    assert to_dataclass(again) == back


@NEEDS_GEN3
def test_init_refuses_an_existing_repository_and_updates_it(tmp_path: Path) -> None:
    from lsst.daf.butler import Butler

    from atmospec.gen3.repo import CALIB_DATASET_TYPES, init_repo

    repo = init_repo(tmp_path / "repo")
    with pytest.raises(BadInputError, match="already exists here"):
        init_repo(repo)
    with pytest.raises(BadInputError, match="no Butler repository here"):
        init_repo(tmp_path / "none", update=True)
    # An older repository without a calibration type gets it back; nothing else changes.
    with Butler.from_config(str(repo), writeable=True) as butler:
        butler.registry.removeDatasetType("crosstalk")
        collections = set(butler.registry.queryCollections())
    init_repo(repo, update=True)
    with Butler.from_config(str(repo)) as butler:
        assert {dt.name for dt in butler.registry.queryDatasetTypes()} >= set(
            CALIB_DATASET_TYPES)
        assert set(butler.registry.queryCollections()) == collections
        assert butler.query_dimension_records("detector", instrument="LATISS")[0].full_name \
            == "RXX_S00"


@NEEDS_GEN3
def test_certify_refuses_a_failed_verification_unless_forced(
        tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    """A product file whose ``.verify.json`` failed, or a pipeline's product whose
    ``cp*Verify`` dataset failed, is refused in one line (exit 2, nothing certified);
    ``--force`` certifies it with one warning line."""
    import logging

    from lsst.daf.butler import Butler, DatasetType

    from atmospec.cli import main
    from atmospec.gen3.repo import certify_run, init_repo

    repo = init_repo(tmp_path / "repo")
    defects = tmp_path / "defects.ecsv"
    shutil.copy(resources.files("atmospec.data") / "latiss_defects.ecsv", defects)
    report = {"product": "defects", "pass": False,
              "failures": ["C00:defect_fraction", "C01:defect_fraction",
                           "C02:defect_fraction", "C03:defect_fraction"]}
    (tmp_path / "defects.verify.json").write_text(json.dumps(report))
    argv = ["butler", "certify", str(repo), "defects", str(defects)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"atmospec: {defects}: verification FAILED (C00:defect_fraction, "
                   "C01:defect_fraction, C02:defect_fraction and 1 more): not certified; "
                   "certify it anyway with --force")
    with Butler.from_config(str(repo)) as butler:
        assert not butler.query_datasets("defects", collections="LATISS/calib",
                                         explain=False)
    with caplog.at_level(logging.WARNING, logger="atmospec.gen3"):
        assert main([*argv, "--force"]) == 0
    assert [r.getMessage() for r in caplog.records] == [
        f"{defects}: verification FAILED (C00:defect_fraction, C01:defect_fraction, "
        "C02:defect_fraction and 1 more): certified anyway (--force)"]
    # A passing report certifies without a word.
    crosstalk = tmp_path / "crosstalk.ecsv"
    shutil.copy(resources.files("atmospec.data") / "latiss_crosstalk.ecsv", crosstalk)
    (tmp_path / "crosstalk.verify.json").write_text(json.dumps({"pass": True}))
    caplog.clear()
    assert main(["butler", "certify", str(repo), "crosstalk", str(crosstalk)]) == 0
    assert not caplog.records

    # A pipeline's PTC and its failed cpPtcVerify.
    with Butler.from_config(str(repo), writeable=True) as butler:
        for name, storage in (("ptc", "AtmospecFitsTable"), ("cpPtcVerify", "AtmospecRecord")):
            butler.registry.registerDatasetType(DatasetType(
                name, ("instrument", "detector"), storage,
                universe=butler.dimensions, isCalibration=name == "ptc"))
        butler.registry.registerRun("u/test/cpPtc")
        data_id = {"instrument": "LATISS", "detector": 0}
        butler.put(Table({"AMP": ["C10"], "GAIN": [1.0]}), "ptc", data_id, run="u/test/cpPtc")
        butler.put({"pass": False, "failures": ["C10:gain_near_nominal"]}, "cpPtcVerify",
                   data_id, run="u/test/cpPtc")
    with pytest.raises(BadInputError, match=r"u/test/cpPtc: ptc \(instrument=LATISS, "
                       r"detector=0\): verification FAILED \(C10:gain_near_nominal\): not "
                       "certified"):
        certify_run(repo, "u/test/cpPtc", ["ptc"])
    assert len(certify_run(repo, "u/test/cpPtc", ["ptc"], force=True)) == 1


# --------------------------------------------------------------------------- end to end


def _pipetask(args: list[str], cwd: Path, log: Path, *, background: bool = False
              ) -> subprocess.Popen | int:
    """``pipetask ARGS`` with its output in ``log``: the exit status, or the running process."""
    with log.open("w") as out:
        proc = subprocess.Popen([str(BIN / "pipetask"), *args], cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT)
    return proc if background else proc.wait()


def _ok(status: int, log: Path) -> None:
    if status != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        pytest.fail(f"pipetask exited {status} ({log.name}):\n{tail}")


def _exposure_id(seq: int) -> int:
    return DAY_OBS * 100_000 + seq


#: The flat pairs of the cpPtc test: the fewest that give every amp a fit (5 pairs), on the
#: day before the night (so that no query of the night's frames picks them up).
PAIRS_DAY_OBS = 20250228


def _native(commands: list[list[str]], log: Path) -> subprocess.Popen:
    """``atmospec ARGS`` for each ARGS in turn (stopping at a failure), in one background
    process started as the native runner starts its workers: one thread per numerical
    library (a BLAS sum in another thread count changes last bits, and pipetask's processes
    run on one thread too)."""
    from atmospec.parallel import WORKER_ENVIRONMENT

    code = ("import json, sys\nfrom atmospec.cli import main\n"
            "for args in json.loads(sys.argv[1]):\n"
            "    if main(args):\n        sys.exit(f'atmospec {args[:2]} failed')\n")
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-c", code, json.dumps(commands)],
                                stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **WORKER_ENVIRONMENT})


def _wait(proc: subprocess.Popen, log: Path) -> None:
    status = proc.wait()
    assert status == 0, f"{proc.args} exited {status}:\n{log.read_text()[-3000:]}"


@pytest.fixture(scope="module")
def gen3_repo(night_raw_dir: Path, night_reference: tuple[Path, int],
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The test night (and a PTC flat-pair sequence) in a Butler repository, and four
    ``pipetask run``\\ s on it:

    1. ``cpBias``, certified with the native run's dark and flats into ``LATISS/calib``;
    2. ``processStar.yaml -j 2`` on the dispersed exposure;
    3. ``cpPtc`` on the flat pairs;
    4. ``processStar.yaml -j 2`` on the imaging and the dispersed exposure with the
       collection ``u/test/calib-ptc``: bias, dark, the native PTC, defects, linearizer,
       crosstalk, and a flat for SDSSr_65mm only, so that the dispersed exposure (band
       ``empty``) misses its flat.

    Runs 2 to 4 share the repository at the same time (the SQLite registry makes concurrent
    writers wait), and the native products are built beside them, as the two cores allow:
    the flat pairs are simulated while cpBias runs, then ``atmospec calib ptc``, ``calib
    linearity``, ``calib defects`` and ``atmospec isr`` (the imaging exposure with all of
    those products). The directory (~3 GB) is removed at the end of the module.
    """
    if not gen3_available():
        pytest.skip("the [gen3] extra is not installed")
    from atmospec.gen3.repo import certify_files, certify_run, ingest_raws, init_repo
    from atmospec.sim.sequences import PtcSequenceConfig, write_flat_pairs

    ref_repo, status = night_reference
    assert status == 0
    night_calib = ref_repo / "calib" / "night" / str(DAY_OBS)
    work = tmp_path_factory.mktemp("gen3")
    native = work / "native"
    repo = init_repo(work / "repo")
    ingested = ingest_raws(repo, [night_raw_dir], transfer="direct")
    common = ["-b", str(repo), "--register-dataset-types"]
    cp_bias = _pipetask(["run", *common, "-p", str(PIPELINES / "cpBias.yaml"),
                         "-i", "LATISS/raw/all", "-o", "u/test/cpBias", "-d",
                         f"instrument='LATISS' AND exposure.observation_type='bias' "
                         f"AND day_obs={DAY_OBS}"], work, work / "cpBias.log", background=True)
    try:
        pairs = write_flat_pairs(work / "pairs", PtcSequenceConfig(
            n_log_levels=4, n_dense_levels=1, min_level_e=1000.0, dense_from_e=115_000.0,
            max_level_e=115_000.0, day_obs=PAIRS_DAY_OBS, first_seq=200,
            start="2025-02-28T19:00:00.000", seed=3))
    finally:
        _ok(cp_bias.wait(), work / "cpBias.log")
    products = {"ptc": native / "ptc.fits", "linearizer": native / "linearizer.fits",
                "defects": native / "defects.ecsv",
                "crosstalk": Path(str(resources.files("atmospec.data") / "latiss_crosstalk.ecsv"))}
    tables = _native([
        ["calib", "ptc", *map(str, pairs), "--out", str(products["ptc"])],
        ["calib", "linearity", str(products["ptc"]), "--out", str(products["linearizer"])],
        ["calib", "defects", "--dark", str(night_calib / "dark.fits"), "--flat",
         str(night_calib / "flat_SDSSr_65mm.fits"), "--out", str(products["defects"])]],
        work / "native-tables.log")
    ingest_raws(repo, [work / "pairs"], transfer="direct")
    # The night's masters, built with the nominal gains, fail their verification (amps whose
    # true gain is 5 % off): certified anyway, as the native night uses them.
    certify_run(repo, "u/test/cpBias", ["bias"], force=True)
    certify_files(repo, "dark", [night_calib / "dark.fits"], transfer="direct", force=True)
    certify_files(repo, "flat", sorted(night_calib.glob("flat_*.fits")), transfer="direct",
                  force=True)
    runs = {
        "processStar": _pipetask(
            ["run", *common, "-p", str(PIPELINES / "processStar.yaml"), "-i",
             "LATISS/raw/all,LATISS/calib", "-o", "u/test/processStar", "-j", "2", "-d",
             f"instrument='LATISS' AND exposure={_exposure_id(DISPERSED)}"],
            work, work / "processStar.log", background=True),
        "cpPtc": _pipetask(
            ["run", *common, "-p", str(PIPELINES / "cpPtc.yaml"), "-i", "LATISS/raw/all",
             "-o", "u/test/cpPtc", "-d", f"instrument='LATISS' AND "
             f"exposure.observation_type='flat' AND day_obs={PAIRS_DAY_OBS}"],
            work, work / "cpPtc.log", background=True)}
    _wait(tables, work / "native-tables.log")
    raw = night_raw_dir / f"AT_O_{DAY_OBS}_{IMAGING:06d}.fits"
    isr = _native([["isr", str(raw), "--out", str(native / "isr"), "--overscan",
                    "median_per_row", "--bias", str(night_calib / "bias.fits"),
                    "--dark", str(night_calib / "dark.fits"),
                    "--flat", str(night_calib / "flat_SDSSr_65mm.fits"),
                    *[a for k, p in products.items() for a in (f"--{k}", str(p))]]],
                  work / "native-isr.log")
    calib = "u/test/calib-ptc"
    certify_run(repo, "u/test/cpBias", ["bias"], collection=calib, force=True)
    certify_files(repo, "dark", [night_calib / "dark.fits"], collection=calib,
                  transfer="direct", force=True)
    certify_files(repo, "flat", [night_calib / "flat_SDSSr_65mm.fits"], collection=calib,
                  transfer="direct", force=True)
    for kind in ("ptc", "defects", "linearizer", "crosstalk"):
        certify_files(repo, kind, [products[kind]], collection=calib, transfer="direct")
    both = f"instrument='LATISS' AND exposure IN ({_exposure_id(IMAGING)}, " \
           f"{_exposure_id(DISPERSED)})"
    status = _pipetask(["run", *common, "-p", str(PIPELINES / "processStar.yaml"),
                        "-i", f"LATISS/raw/all,{calib}", "-o", "u/test/all-products",
                        "-j", "2", "-d", both], work, work / "all-products.log")
    for name, proc in runs.items():
        _ok(proc.wait(), work / f"{name}.log")
    _wait(isr, work / "native-isr.log")
    yield {"repo": repo, "work": work, "ingested": ingested, "query": both,
           "raw_dir": night_raw_dir, "native": ref_repo, "products": products,
           "native_isr": native / "isr", "all_products_status": status}
    shutil.rmtree(work, ignore_errors=True)


# CHECKSUM and DATASUM describe the file (they change with ATMDATE), not its content.
_PROVENANCE = ("ATMVERS", "ATMSTAGE", "ATMDATE", "ATMIN", "HISTORY", "COMMENT",
               "ATM CALIB ", "CHECKSUM", "DATASUM")


def _header_differences(a: fits.Header, b: fits.Header) -> list[str]:
    """Keys that differ, leaving out provenance (time, input file names)."""
    def keys(h: fits.Header) -> set[str]:
        return {k for k in h if not k.startswith(_PROVENANCE)}

    out = sorted(keys(a) ^ keys(b))
    for k in keys(a) & keys(b):
        same = a[k] == b[k] or (isinstance(a[k], float) and np.isnan(a[k]) and np.isnan(b[k]))
        if not same:
            out.append(k)
    return out


def _value_differences(a: Any, b: Any, where: str = "",
                       skip: tuple[str, ...] = ("provenance", "timings_s")) -> list[str]:
    """Paths at which two JSON documents differ (NaN equals NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}/{k}" for k in set(a) ^ set(b) if k not in skip]
        for k in set(a) & set(b):
            if k not in skip:
                out += _value_differences(a[k], b[k], f"{where}/{k}", skip)
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [where]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in _value_differences(x, y, f"{where}[{i}]", skip)]
    if a == b or (isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b)):
        return []
    return [where]


def _same_exposure(a: Exposure, b: Exposure) -> None:
    for plane in ("image", "mask", "variance"):
        assert np.array_equal(getattr(a, plane), getattr(b, plane), equal_nan=True), plane
    assert a.mask_planes == b.mask_planes
    assert _header_differences(a.metadata, b.metadata) == []


def _compare_with_native(repo: Path, collection: str, native: Path, seqs: tuple[int, ...]
                         ) -> None:
    from lsst.daf.butler import Butler

    out = native / "exposures" / str(DAY_OBS)
    with Butler.from_config(str(repo), collections=collection) as butler:
        for seq in seqs:
            obs_id = f"AT_O_{DAY_OBS}_{seq:06d}"
            data_id = {"instrument": "LATISS", "detector": 0, "exposure": _exposure_id(seq)}
            _same_exposure(butler.get("post_isr_image", data_id),
                           Exposure.read(out / f"{obs_id}_postisr.fits"))
            stats = json.loads((out / f"{obs_id}_isrstats.json").read_text())
            assert _value_differences(butler.get("isrStatistics", data_id), stats) == []
            if seq == DISPERSED:
                centroid = json.loads((out / f"{obs_id}_centroid.json").read_text())
                assert _value_differences(butler.get("atmospecCentroid", data_id),
                                          centroid) == []
                fit = json.loads((out / f"{obs_id}_atmosphere.json").read_text())
                # Only the wall time of the fit and the input's name may differ.
                assert _value_differences(
                    butler.get("spectrumAtmosphereFitParameters", data_id), fit,
                    skip=("fit_time_s", "source")) == []
                path = butler.getURI("spectractorSpectrum", data_id).ospath
                with fits.open(path) as ours, fits.open(out / f"{obs_id}_spectrum.fits") as ref:
                    assert [h.name for h in ours] == [h.name for h in ref]
                    for x, y in zip(ours, ref, strict=True):
                        assert _header_differences(x.header, y.header) == [], x.name
                        if isinstance(x, fits.BinTableHDU):
                            for col in x.columns.names:
                                assert np.array_equal(x.data[col], y.data[col],
                                                      equal_nan=x.data[col].dtype.kind == "f")
                        else:
                            assert np.array_equal(x.data, y.data, equal_nan=True), x.name
            else:
                ours = butler.get("initial_stars_detector", data_id)
                ref = Table.read(out / f"{obs_id}_sources.ecsv")
                assert ours.colnames == ref.colnames and len(ours) == len(ref) > 10
                for col in ours.colnames:
                    assert np.array_equal(np.asarray(ours[col]), np.asarray(ref[col]),
                                          equal_nan=ours[col].dtype.kind == "f"), col
                meta = [{k: v for k, v in t.meta.items() if k != "provenance"}
                        for t in (ours, ref)]
                assert _value_differences(*json.loads(json.dumps(meta, default=str))) == []



@NEEDS_GEN3
def test_ingest_uses_our_translator(gen3_repo: dict[str, Any]) -> None:
    from lsst.daf.butler import Butler

    from atmospec.night.index import NightIndex

    result = gen3_repo["ingested"]
    assert len(result.ingested) == 15 and result.skipped == []
    # The damaged and foreign files are rejected for the reasons the native index gives.
    native = {(p.name, reason) for p, reason in NightIndex(gen3_repo["native"]).rejected()}
    assert {(Path(p).name, reason) for p, reason in result.rejected} == native
    assert len(native) == 3
    with Butler.from_config(str(gen3_repo["repo"])) as butler:
        record = butler.query_dimension_records(
            "exposure", where=f"exposure = {_exposure_id(DISPERSED)}", instrument="LATISS")[0]
        assert record.obs_id == f"AT_O_{DAY_OBS}_{DISPERSED:06d}"
        assert record.physical_filter == "empty~holo4_003"
        assert record.observation_type == "science" and record.target_name == "HD142331"
        detector = butler.query_dimension_records("detector", instrument="LATISS")[0]
        assert detector.full_name == "RXX_S00"


@NEEDS_GEN3
def test_cpbias_matches_native(gen3_repo: dict[str, Any]) -> None:
    from lsst.daf.butler import Butler

    native = gen3_repo["native"] / "calib" / "night" / str(DAY_OBS) / "bias.fits"
    with Butler.from_config(str(gen3_repo["repo"]), collections="u/test/cpBias") as butler:
        bias = butler.get("bias", instrument="LATISS", detector=0)
        assert "amps" in butler.get("cpBiasVerify", instrument="LATISS", detector=0)
    _same_exposure(bias, Exposure.read(native))


@NEEDS_GEN3
def test_processstar_matches_native(gen3_repo: dict[str, Any]) -> None:
    """``pipetask run -j 2`` of processStar.yaml after cpBias: post-ISR image, ISR
    statistics, centroid, spectrum and atmosphere fit identical to the native night's."""
    _compare_with_native(gen3_repo["repo"], "u/test/processStar", gen3_repo["native"],
                         (DISPERSED,))
    log = (gen3_repo["work"] / "processStar.log").read_text()
    # Four quanta, one per task: nothing for the frames the query did not select.
    assert len(_TOOK.findall(log)) == 4, log[-2000:]


_TOOK = re.compile(r"Execution of task '(\w+)' on quantum .* took")


def _table_differences(ours: Table, ref: Table) -> list[str]:
    """Columns and metadata keys (provenance aside) in which two tables differ."""
    out = sorted(set(ours.colnames) ^ set(ref.colnames))
    for col in set(ours.colnames) & set(ref.colnames):
        a, b = np.asarray(ours[col]), np.asarray(ref[col])
        if a.shape != b.shape or not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
            out.append(col)
    meta = [fits.Header({k: v for k, v in t.meta.items() if k not in ("HISTORY", "COMMENT")})
            for t in (ours, ref)]
    return out + _header_differences(*meta)


@NEEDS_GEN3
def test_cpptc_matches_native(gen3_repo: dict[str, Any]) -> None:
    """cpPtc on the flat pairs: the product equals `build_ptc`'s, value for value, and so
    does its verification."""
    from lsst.daf.butler import Butler

    native = gen3_repo["products"]["ptc"]
    with Butler.from_config(str(gen3_repo["repo"]), collections="u/test/cpPtc") as butler:
        ptc = butler.get("ptc", instrument="LATISS", detector=0)
        verify = butler.get("cpPtcVerify", instrument="LATISS", detector=0)
    ref = Table.read(native)
    assert len(ptc) == 16 and np.all(np.isfinite(ptc["GAIN"]))
    assert _table_differences(ptc, ref) == []
    assert _value_differences(verify, json.loads(
        native.with_name("ptc.verify.json").read_text()), skip=("provenance", "file")) == []


@NEEDS_GEN3
def test_certify_refuses_a_product_of_another_kind(gen3_repo: dict[str, Any]) -> None:
    from atmospec.gen3.repo import certify_files

    products = gen3_repo["products"]
    for kind, wrong in (("crosstalk", "defects"), ("defects", "ptc"), ("ptc", "linearizer"),
                        ("linearizer", "crosstalk")):
        with pytest.raises(BadInputError) as info:
            certify_files(gen3_repo["repo"], kind, [products[wrong]], collection="u/test/no")
        message = str(info.value)
        assert message.startswith(f"{products[wrong]}: not a {kind} product"), message
        assert "\n" not in message


@NEEDS_GEN3
def test_isr_with_every_product_matches_native(gen3_repo: dict[str, Any]) -> None:
    """The certified PTC, defects, linearizer and crosstalk (and bias, dark, flat) are used
    by the Gen3 ISR exactly as ``atmospec isr --bias ... --crosstalk`` uses the same files
    (the bias is cpBias's, identical to the native one)."""
    from lsst.daf.butler import Butler

    native = gen3_repo["native_isr"] / f"AT_O_{DAY_OBS}_{IMAGING:06d}"
    data_id = {"instrument": "LATISS", "detector": 0, "exposure": _exposure_id(IMAGING)}
    with Butler.from_config(str(gen3_repo["repo"]), collections="u/test/all-products") as b:
        ours = b.get("post_isr_image", data_id)
        stats = b.get("isrStatistics", data_id)
    reference = Exposure.read(f"{native}_postisr.fits")
    _same_exposure(ours, reference)
    assert ours.metadata["ATM GAIN SOURCE"] == "ptc.fits"  # not the nominal gains
    assert _value_differences(stats, json.loads(Path(f"{native}_isrstats.json").read_text())) \
        == []
    assert "linearity" in stats["steps"]
    # ... and they changed the result: the night without them (nominal gains) differs.
    nominal = Exposure.read(gen3_repo["native"] / "exposures" / str(DAY_OBS)
                            / f"AT_O_{DAY_OBS}_{IMAGING:06d}_postisr.fits")
    assert not np.array_equal(ours.image, nominal.image)


@NEEDS_GEN3
def test_missing_flat_fails_only_its_exposure(gen3_repo: dict[str, Any]) -> None:
    """No flat for the dispersed exposure's band: its ISR fails with the native runner's
    message, its later quanta are skipped, and the imaging exposure still runs."""
    from lsst.daf.butler import Butler

    from atmospec.camera.raw import read_raw
    from atmospec.night.calibs import missing_message

    log = (gen3_repo["work"] / "all-products.log").read_text()
    assert gen3_repo["all_products_status"] != 0
    raw = read_raw(gen3_repo["raw_dir"] / f"AT_O_{DAY_OBS}_{DISPERSED:06d}.fits")
    message = missing_message("flat", raw.info, "the input collections",
                              register="atmospec butler certify REPO flat FILE")
    assert message.startswith("missing calibration: no flat for empty valid at 2025-03-0")
    failed = [line for line in log.splitlines() if "failed. Exception BadInputError" in line]
    assert len(failed) == 1 and f"{raw.path}: {message}" in failed[0], failed
    assert f"exposure: {_exposure_id(DISPERSED)}" in failed[0]
    # Quanta that ran: the two ISRs; the imaging exposure's zeroth order was never in the
    # graph, and the dispersed exposure's later tasks were skipped.
    assert sorted(_TOOK.findall(log)) == ["isr"]
    with Butler.from_config(str(gen3_repo["repo"]), collections="u/test/all-products") as b:
        found = {(ref.datasetType.name, ref.dataId["exposure"])
                 for name in ("post_isr_image", "atmospecCentroid")
                 for ref in b.query_datasets(name, instrument="LATISS", explain=False)}
    assert found == {("post_isr_image", _exposure_id(IMAGING))}


@NEEDS_GEN3
def test_task_modules_import_only_their_algorithms() -> None:
    """A quantum process imports the middleware and its own task's code: ISR does not pull
    in photutils, lmfit or the spectroscopy."""
    code = ("import sys; from atmospec.gen3.tasks import IsrTask, CpBiasTask; "
            "print(sorted(m for m in ('photutils', 'lmfit', 'spectractor_bridge', "
            "'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")[-2]
    assert out == "[]"
    from atmospec.camera.translator import _NOT_DISPERSED
    from atmospec.gen3.tasks import IsrTask, exposure_class

    assert IsrTask.__module__ == "atmospec.gen3.tasks.isr"
    assert {"empty", "none"} <= _NOT_DISPERSED
    assert exposure_class({"physical_filter": "SDSSr_65mm~holo4_003"}) == "dispersed"
    assert exposure_class({"physical_filter": "SDSSr_65mm~empty"}) == "imaging"
    with pytest.raises(AttributeError):
        import atmospec.gen3.tasks as tasks

        tasks.NoSuchTask  # noqa: B018


@NEEDS_GEN3
@pytest.mark.slow
def test_bps_parsl_local_matches_native(gen3_repo: dict[str, Any]) -> None:
    """``bps submit`` (Parsl local site) of night.yaml on the imaging and the dispersed
    exposure: every output identical to the native night's (characterization included)."""
    from atmospec.cli.gen3 import bps_submit

    work = gen3_repo["work"]
    log = work / "bps.log"
    with log.open("w") as out:
        status = subprocess.run(
            [sys.executable, "-c", "import sys; from atmospec.cli.gen3 import bps_submit; "
             "sys.exit(bps_submit(sys.argv[1], sys.argv[2:]))",
             str(PIPELINES / "bps_parsl_local.yaml"), "-b", str(gen3_repo["repo"]),
             "-p", str(PIPELINES / "night.yaml"), "-i", "LATISS/raw/all,LATISS/calib",
             "-o", "u/test/bps", "-d", gen3_repo["query"]],
            cwd=work, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    assert status == 0, "\n".join(log.read_text().splitlines()[-40:])
    assert any((work / "submit" / "u" / "test" / "bps").iterdir())  # not under the caller's PWD
    assert callable(bps_submit)
    _compare_with_native(gen3_repo["repo"], "u/test/bps", gen3_repo["native"],
                         (IMAGING, DISPERSED))


@NEEDS_GEN3
@pytest.mark.slow
def test_cpdark_cpflat_match_native(gen3_repo: dict[str, Any]) -> None:
    """cpDark with the certified PTC equals ``atmospec calib dark --ptc`` (built beside it);
    cpFlat (per filter, ``-j 2``) equals the native night's flats."""
    from lsst.daf.butler import Butler

    repo, work = gen3_repo["repo"], gen3_repo["work"]
    night = gen3_repo["native"] / "calib" / "night" / str(DAY_OBS)
    with Butler.from_config(str(repo), collections="LATISS/raw/all") as b:
        darks = sorted(b.getURI(ref).ospath for ref in b.query_datasets(
            "raw", where=f"instrument='LATISS' AND exposure.observation_type='dark' "
                         f"AND day_obs={DAY_OBS}"))
    native_dark = work / "native" / "dark_ptc.fits"
    native = _native([["calib", "dark", *darks, "--bias", str(night / "bias.fits"), "--ptc",
                       str(gen3_repo["products"]["ptc"]), "--skip-bad", "--out",
                       str(native_dark)]], work / "native-dark.log")
    # Both at once (the flats use the certified dark, not this one): the SQLite registry
    # makes the two writers take turns.
    runs = {kind: _pipetask(
        ["run", "-b", str(repo), "-p", str(PIPELINES / f"cp{kind}.yaml"), "-i",
         f"LATISS/raw/all,{inputs}", "-o", f"u/test/cp{kind}", "-j", jobs,
         "--register-dataset-types", "-d", f"instrument='LATISS' AND "
         f"exposure.observation_type='{kind.lower()}' AND day_obs={DAY_OBS}"],
        work, work / f"cp{kind}.log", background=True)
        for kind, jobs, inputs in (("Dark", "1", "u/test/calib-ptc"),
                                   ("Flat", "2", "LATISS/calib"))}
    for kind, proc in runs.items():
        _ok(proc.wait(), work / f"cp{kind}.log")
    _wait(native, work / "native-dark.log")
    with Butler.from_config(str(repo), collections=["u/test/cpDark", "u/test/cpFlat"]) as b:
        dark = b.get("dark", instrument="LATISS", detector=0)
        _same_exposure(dark, Exposure.read(native_dark))
        assert dark.metadata["GAINSRC"] == "ptc.fits"  # not the nominal gains
        # The PTC's gains were used: the night's dark (nominal gains) differs.
        assert not np.array_equal(dark.image, Exposure.read(night / "dark.fits").image)
        for band, name in (("SDSSr_65mm", "flat_SDSSr_65mm.fits"), ("empty", "flat_empty.fits")):
            _same_exposure(b.get("flat", instrument="LATISS", detector=0, band=band),
                           Exposure.read(night / name))
