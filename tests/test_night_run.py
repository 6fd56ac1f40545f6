"""A whole simulated night through ``atmospec night``: calibrations built from the night's
frames, every exposure processed in parallel, damaged files skipped, and a run killed
mid-way and resumed on a Dask cluster without redoing finished exposures, with identical
outputs.

One small night is simulated once (3 biases, 3 darks, 3 flats in each of two filters, 2
imaging frames, 1 dispersed exposure, 3 damaged files). The uninterrupted run builds the
calibrations; the killed run (resumed on Dask) starts from a copy of its calibration
directory (the "certified products in the repository" path) to keep the suite short.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from conftest import NIGHT
from night_outputs import assert_same_outputs

from atmospec.cli import main
from atmospec.night.calibs import read_builds
from atmospec.night.index import NightIndex
from atmospec.night.runner import NightRunConfig, run_night
from atmospec.report import ReportConfig, build_report


def _with_calibs(reference_repo: Path, repo: Path) -> Path:
    shutil.copytree(reference_repo / "calib", repo / "calib")
    return repo


def test_reference_night(night_reference, night_raw_dir):
    repo, status = night_reference
    assert status == 0
    summary = Table.read(repo / "night" / "summary.ecsv")
    on_sky = summary[summary["image_type"] == "science"]
    assert len(on_sky) == NIGHT.n_science + NIGHT.n_dispersed
    assert set(on_sky["status"]) == {"done"}
    assert set(summary["status"][summary["image_type"] != "science"]) == {"calibration"}
    # Damaged files were skipped with their reason.
    rejected = dict((p.name, r) for p, r in NightIndex(repo).rejected())
    assert len(rejected) == NIGHT.n_corrupt
    # Calibrations were built from the night and registered; the flats per filter.
    calib = sorted(p.name for p in (repo / "calib" / "night" / str(NIGHT.day_obs)).glob(
        "*.fits"))
    assert calib == ["bias.fits", "dark.fits", "flat_SDSSr_65mm.fits", "flat_empty.fits"]
    # Each with its verification report and the figure the night draws of it.
    built = repo / "calib" / "night" / str(NIGHT.day_obs)
    for name in calib:
        stem = name.removesuffix(".fits")
        assert (built / f"{stem}.verify.json").is_file()
        assert (built / f"{stem}.verify.png").read_bytes()[:4] == b"\x89PNG"
    # Image quality against truth: the FWHM of each imaging frame within 2 %.
    for row in on_sky[on_sky["disperser"] == "empty"]:
        truth = json.loads((night_raw_dir / f"{row['obs_id']}_truth.json").read_text())
        assert row["fwhm_px"] == pytest.approx(truth["fwhm_px"], rel=0.02)
        assert row["n_sources"] > 100
        assert row["sky_e"] == pytest.approx(truth["sky_e"], rel=0.02)
    # The zeroth order of the dispersed exposure within 0.1 px of truth.
    row = on_sky[on_sky["disperser"] != "empty"][0]
    truth = json.loads((night_raw_dir / f"{row['obs_id']}_truth.json").read_text())["dispersed"]
    assert abs(row["zeroth_order_x"] - truth["x0"]) < 0.1
    assert abs(row["zeroth_order_y"] - truth["y0"]) < 0.1
    # Its first-order spectrum, in Spectractor's layout, on the zeroth order found.
    from spectractor_bridge.spectrum import read_spectrum

    spectrum = read_spectrum(next(repo.glob(f"exposures/*/{row['obs_id']}_spectrum.fits")))
    assert spectrum.target == "HD142331" and spectrum.disperser == "holo4_003"
    assert spectrum.target_xy == pytest.approx((row["zeroth_order_x"], row["zeroth_order_y"]))
    assert spectrum.wavelength[0] < 400 and spectrum.wavelength[-1] > 1000
    # D2CCD fitted on the spectral features (the header's LINSPOS gives the truth here).
    assert spectrum.header["WAVECAL"] == "lines"
    assert spectrum.d2ccd == pytest.approx(115.0 + NIGHT.linspos_mm + 4.0, abs=0.5)
    # ROTANGLE in Spectractor's frame (a reflection of ours): minus the simulator's tilt.
    assert spectrum.rotation_angle == pytest.approx(-truth["tilt_deg"], abs=0.02)
    # The summary carries the spectrum's figures, equal to the file's.
    assert row["d2ccd"] == pytest.approx(spectrum.d2ccd)
    assert row["rotation_angle"] == pytest.approx(spectrum.rotation_angle)
    assert row["flux_650nm"] == pytest.approx(np.interp(650.0, spectrum.wavelength,
                                                        spectrum.flux))
    # The atmosphere fitted on that spectrum: the simulated one, within the bounds.
    model = json.loads((night_raw_dir / f"{row['obs_id']}_truth.json").read_text())[
        "dispersed"]["spectrum_model"]
    assert row["pwv_mm"] == pytest.approx(model["pwv_mm"], abs=0.5)
    assert row["ozone_du"] == pytest.approx(model["ozone_du"], abs=30.0)
    assert row["vaod"] == pytest.approx(model["vaod"], abs=0.01)
    fit = json.loads(next(repo.glob(f"exposures/*/{row['obs_id']}_atmosphere.json"))
                     .read_text())
    assert fit["values"]["pwv_mm"] == pytest.approx(row["pwv_mm"])
    assert (repo / "night" / "plots" / "atmosphere.png").is_file()
    # Parquet twin of the summary.
    import pyarrow.parquet as pq

    parquet = pq.read_table(repo / "night" / "summary.parquet")
    np.testing.assert_allclose(parquet.column("fwhm_px").to_numpy(), summary["fwhm_px"],
                               equal_nan=True)
    assert parquet.column("obs_id").to_pylist() == list(summary["obs_id"])
    for plot in ("image_quality.png", "source_positions.png"):
        assert (repo / "night" / "plots" / plot).stat().st_size > 10_000


def test_rerun_skips_everything(night_reference, night_raw_dir):
    repo, _ = night_reference
    before = {(t.obs_id, t.task): (t.started, t.attempts) for t in NightIndex(repo).tasks()}
    result = run_night(night_raw_dir, repo, NightRunConfig(workers=1, plots=False, progress=False))
    assert result.n_run == 0 and result.n_skipped == NIGHT.n_science + NIGHT.n_dispersed
    assert result.calibrations == []
    after = {(t.obs_id, t.task): (t.started, t.attempts) for t in NightIndex(repo).tasks()}
    assert after == before


def test_killed_night_resumes_on_dask_with_identical_outputs(night_reference, night_raw_dir,
                                                             tmp_path):
    """A local run killed after its first finished task, resumed on a Dask cluster: finished
    tasks are not redone, no temporary file survives, and every output equals the
    uninterrupted local run's (one re-run checks both the resume and the Dask executor)."""
    from distributed import LocalCluster

    ref_repo, _ = night_reference
    repo = _with_calibs(ref_repo, tmp_path / "repo")
    proc = subprocess.Popen(
        [sys.executable, "-m", "atmospec", "night", str(night_raw_dir), "--repo", str(repo),
         "--workers", "1", "--no-plots"], start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    done_before: dict = {}
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            if not (repo / "night" / "index.sqlite3").exists():
                continue
            done_before = {(t.obs_id, t.task): t.started for t in NightIndex(repo).tasks()
                           if t.status == "done"}
            if done_before:
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert done_before, "the night finished no task before the deadline"
    n_total = NIGHT.n_science + NIGHT.n_dispersed
    finished = {obs for obs, _ in done_before}
    assert len(finished) < n_total, "killed too late: everything was already done"

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        result = run_night(night_raw_dir, repo, NightRunConfig(
            executor="dask", scheduler=cluster.scheduler_address, plots=False,
            progress=False))
    tasks = NightIndex(repo).tasks()
    assert all(t.status == "done" for t in tasks)
    for t in tasks:
        if (t.obs_id, t.task) in done_before:  # not redone
            assert t.started == done_before[(t.obs_id, t.task)] and t.attempts == 1
    assert result.n_run == n_total - sum(
        1 for obs in finished
        if all((obs, t.task) in done_before for t in tasks if t.obs_id == obs))
    # No temporary file survives the kill.
    assert not list(repo.rglob("*.tmp"))
    assert_same_outputs(ref_repo, repo)


def test_missing_calibration_fails_the_exposures_with_a_recipe(night_raw_dir, tmp_path):
    """No bias frames, none in the repository: each on-sky exposure fails naming the missing
    product and how to build it; the night still completes."""
    only_sky = tmp_path / "raw"
    only_sky.mkdir()
    for truth in night_raw_dir.glob("*_truth.json"):
        if json.loads(truth.read_text())["kind"] == "science":
            name = truth.name.replace("_truth.json", ".fits")
            os.link(night_raw_dir / name, only_sky / name)
    repo = tmp_path / "repo"
    result = run_night(only_sky, repo, NightRunConfig(workers=1, plots=False,
                                                      progress=False))
    assert result.n_failed == NIGHT.n_science
    reasons = [o.reason for o in result.outcomes if o.task == "isr"]
    assert len(reasons) == NIGHT.n_science
    for reason in reasons:
        assert "missing calibration: no bias valid at 2025-03-02T" in reason
        assert "atmospec calib bias" in reason and "atmospec calib register" in reason
    assert {o.reason for o in result.outcomes if o.task == "characterize"} == {
        "not run: isr failed"}
    summary = Table.read(repo / "night" / "summary.ecsv")
    assert set(summary["status"]) == {"failed"}


def test_failed_calibration_build_fails_the_exposures_that_needed_it(night_raw_dir,
                                                                      tmp_path, capsys):
    """The night's dark cannot be built (its bias is not built: too few frames for the
    pipeline's minimum). The dark is not required, yet the exposures that needed it fail
    naming the failed build, and the night exits 1: never reduced without a word."""
    pipeline = tmp_path / "night.yaml"
    pipeline.write_text("calibrations:\n  build: [bias, dark]\n  require: []\n"
                        "  min_frames: {bias: 10, dark: 2}\ntasks:\n  isr:\n"
                        "    applies_to: [imaging, dispersed]\n"
                        "    config: {steps: [overscan, gain, assemble]}\n")
    repo = tmp_path / "repo"
    status = main(["night", str(night_raw_dir), "--repo", str(repo), "--workers", "1",
                   "--pipeline", str(pipeline), "--no-plots"])
    out = capsys.readouterr().out
    assert status == 1
    assert "calibration bias.fits: not built (" in out and "fewer than 10" in out
    assert "calibration dark.fits: failed (no bias for its frames)" in out
    n_science = NIGHT.n_science + NIGHT.n_dispersed
    assert f"{n_science} with a failure" in out
    reasons = {o.reason for o in NightIndex(repo).tasks()}
    assert reasons == {"calibration dark.fits failed to build (no bias for its frames)"}
    # Recorded for the report.
    assert [(b["file"], b["status"]) for b in read_builds(repo)] == [
        ("bias.fits", "not built"), ("dark.fits", "failed")]
    page = build_report(repo, ReportConfig(figures=False, workers=1)).read_text()
    assert "2 calibration product(s) of the night could not be built" in page
    assert 'id="builds"' in page and "no bias for its frames" in page


def test_night_usage_errors(capsys, tmp_path):
    assert main(["night", str(tmp_path), "--repo", str(tmp_path / "r"), "--executor",
                 "dask"]) == 2
    assert "--scheduler" in capsys.readouterr().err
    assert main(["night", str(tmp_path / "nope"), "--repo", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "no such directory" in err and "Traceback" not in err


def test_detect_cli_matches_the_night_catalogue(night_reference, night_raw_dir, tmp_path, capsys):
    """`atmospec detect` on a post-ISR image of the night gives the night's catalogue."""
    repo, _ = night_reference
    post = sorted(repo.glob("exposures/*/*_postisr.fits"))
    imaging = [p for p in post if (p.parent / p.name.replace("_postisr.fits",
                                                             "_sources.ecsv")).exists()]
    source = imaging[0]
    out = tmp_path / "cat.ecsv"
    # In a process with the night workers' thread limits: a BLAS product summed by another
    # number of threads would change the last bits of the PSF fits.
    from atmospec.parallel import WORKER_ENVIRONMENT

    run = subprocess.run([sys.executable, "-m", "atmospec", "detect", str(source), "--out",
                          str(out), "--plots"], capture_output=True, text=True,
                         env={**os.environ, **WORKER_ENVIRONMENT}, check=False)
    assert run.returncode == 0, run.stderr
    assert "sources, FWHM" in run.stdout
    mine = Table.read(out)
    night = Table.read(source.parent / source.name.replace("_postisr.fits", "_sources.ecsv"))
    assert mine.colnames == night.colnames
    for col in mine.colnames:
        np.testing.assert_array_equal(mine[col], night[col], err_msg=col)
    assert mine["xcentroid"].unit == "pix"
    assert (tmp_path / "cat_sources.png").stat().st_size > 10_000
    assert (tmp_path / "cat_psf.png").stat().st_size > 10_000
    # Bad input: a raw file is not a post-ISR image; a missing file.
    raw = next(night_raw_dir.glob("AT_O_*_000001.fits"))
    for bad in (raw, tmp_path / "missing.fits"):
        assert main(["detect", str(bad), "--out", str(tmp_path / "x.ecsv")]) == 2
        err = capsys.readouterr().err
        assert str(bad) in err and "Traceback" not in err and err.count("\n") == 1


def test_extract_cli_matches_the_night_spectrum(night_reference, night_raw_dir, tmp_path,
                                                capsys):
    """`atmospec extract` on the night's dispersed post-ISR image, at the zeroth order the
    night found, gives the night's spectrum; bad requests exit 2 with one line."""
    repo, _ = night_reference
    (night_spectrum,) = repo.glob("exposures/*/*_spectrum.fits")
    post = night_spectrum.with_name(night_spectrum.name.replace("_spectrum", "_postisr"))
    centroid = json.loads(night_spectrum.with_name(
        night_spectrum.name.replace("_spectrum.fits", "_centroid.json")).read_text())
    x, y = centroid["centroid"]
    out = tmp_path / "spec.fits"
    from atmospec.parallel import WORKER_ENVIRONMENT

    run = subprocess.run([sys.executable, "-m", "atmospec", "extract", str(post), "--xy",
                          f"{x!r},{y!r}", "--out", str(out)], capture_output=True, text=True,
                         env={**os.environ, **WORKER_ENVIRONMENT}, check=False)
    assert run.returncode == 0, run.stderr
    assert "HD142331 through holo4_003" in run.stdout
    from spectractor_bridge.spectrum import read_spectrum

    mine, night = read_spectrum(out), read_spectrum(night_spectrum)
    np.testing.assert_array_equal(mine.wavelength, night.wavelength)
    np.testing.assert_array_equal(mine.flux, night.flux)
    imaging = next(p for p in repo.glob("exposures/*/*_postisr.fits")
                   if p.with_name(p.name.replace("_postisr.fits", "_sources.ecsv")).exists())
    for args, message in (
            ([str(imaging)], "not a dispersed exposure"),
            ([str(post), "--lines", "neon"], "argument --lines: invalid choice"),
            ([str(post), "--instrument", "ctio"], "the header is from LATISS, not ctio"),
            ([str(post), "--disperser", "holo9_999"], "unknown disperser"),
            ([str(post), "--xy", "20,20"], "too close to the edge"),
            ([str(post), "--xy", "12"], "--xy wants two numbers X,Y"),
            ([str(tmp_path / "none.fits")], "no such file")):
        # In process: the CLI's error path is the same, without a Python start per case.
        assert main(["extract", *args, "--out", str(tmp_path / "x.fits")]) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err

