"""Gen3 middleware path: a Butler repository of the test night, ``pipetask run -j 2`` of
cpBias then the night pipeline, and ``bps submit`` with Parsl's local site; every output
identical (pixel for pixel, value for value) to the native runner's on the same night.

Needs the ``gen3`` extra; without it only the clear-error tests run and the rest is skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
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
    from atmospec.gen3.cli import add_bps_parser, add_butler_parser

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


@NEEDS_GEN3
def test_configs_are_generated_from_the_dataclasses() -> None:
    from atmospec.characterize.task import CharacterizeConfig
    from atmospec.cpp.masters import DarkConfig
    from atmospec.gen3.config import apply_dataclass, config_class_from_dataclass, to_dataclass
    from atmospec.isr.driver import IsrConfig
    from spectractor_bridge.chain import SpectroscopyConfig

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


# --------------------------------------------------------------------------- end to end


def _run(cmd: list[str], cwd: Path, log: Path) -> None:
    with log.open("w") as out:
        status = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                check=False).returncode
    if status != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        pytest.fail(f"{' '.join(cmd[:3])} exited {status}:\n{tail}")


def _exposure_id(seq: int) -> int:
    return DAY_OBS * 100_000 + seq


@pytest.fixture(scope="module")
def gen3_repo(night_raw_dir: Path, night_reference: tuple[Path, int],
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The test night in a Butler repository: cpBias run by pipetask and certified with the
    native run's dark and flats, then the night pipeline run by ``pipetask run -j 2`` on one
    imaging and the dispersed exposure."""
    if not gen3_available():
        pytest.skip("the [gen3] extra is not installed")
    from atmospec.gen3.repo import certify_files, certify_run, ingest_raws, init_repo

    ref_repo, status = night_reference
    assert status == 0
    work = tmp_path_factory.mktemp("gen3")
    repo = init_repo(work / "repo")
    ingested = ingest_raws(repo, [night_raw_dir], transfer="direct")
    _run([str(BIN / "pipetask"), "run", "-b", str(repo), "-p", str(PIPELINES / "cpBias.yaml"),
          "-i", "LATISS/raw/all", "-o", "u/test/cpBias", "--register-dataset-types",
          "-d", f"instrument='LATISS' AND exposure.observation_type='bias' "
                f"AND day_obs={DAY_OBS}"], work, work / "cpBias.log")
    certify_run(repo, "u/test/cpBias", ["bias"])
    night_calib = ref_repo / "calib" / "night" / str(DAY_OBS)
    certify_files(repo, "dark", [night_calib / "dark.fits"], transfer="direct")
    certify_files(repo, "flat", sorted(night_calib.glob("flat_*.fits")), transfer="direct")
    query = (f"instrument='LATISS' AND exposure IN ({_exposure_id(IMAGING)}, "
             f"{_exposure_id(DISPERSED)})")
    _run([str(BIN / "pipetask"), "run", "-b", str(repo), "-p", str(PIPELINES / "night.yaml"),
          "-i", "LATISS/raw/all,LATISS/calib", "-o", "u/test/night", "-j", "2",
          "--register-dataset-types", "-d", query], work, work / "night.log")
    return {"repo": repo, "work": work, "ingested": ingested, "query": query,
            "native": ref_repo}


_PROVENANCE = ("ATMVERS", "ATMSTAGE", "ATMDATE", "ATMIN", "HISTORY", "COMMENT",
               "ATM CALIB ")


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
def test_pipetask_outputs_match_native(gen3_repo: dict[str, Any]) -> None:
    _compare_with_native(gen3_repo["repo"], "u/test/night", gen3_repo["native"],
                         (IMAGING, DISPERSED))


@NEEDS_GEN3
@pytest.mark.slow
def test_bps_parsl_local_matches_native(gen3_repo: dict[str, Any]) -> None:
    from atmospec.gen3.cli import bps_submit

    work = gen3_repo["work"]
    log = work / "bps.log"
    with log.open("w") as out:
        status = subprocess.run(
            [sys.executable, "-c", "import sys; from atmospec.gen3.cli import bps_submit; "
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
    from lsst.daf.butler import Butler

    repo, work = gen3_repo["repo"], gen3_repo["work"]
    for kind, jobs in (("Dark", "1"), ("Flat", "2")):
        _run([str(BIN / "pipetask"), "run", "-b", str(repo), "-p",
              str(PIPELINES / f"cp{kind}.yaml"), "-i", "LATISS/raw/all,LATISS/calib",
              "-o", f"u/test/cp{kind}", "-j", jobs, "--register-dataset-types", "-d",
              f"instrument='LATISS' AND exposure.observation_type='{kind.lower()}'"],
             work, work / f"cp{kind}.log")
    native = gen3_repo["native"] / "calib" / "night" / str(DAY_OBS)
    with Butler.from_config(str(repo), collections=["u/test/cpDark", "u/test/cpFlat"]) as b:
        _same_exposure(b.get("dark", instrument="LATISS", detector=0),
                       Exposure.read(native / "dark.fits"))
        for band, name in (("SDSSr_65mm", "flat_SDSSr_65mm.fits"), ("empty", "flat_empty.fits")):
            _same_exposure(b.get("flat", instrument="LATISS", detector=0, band=band),
                           Exposure.read(native / name))
