"""Night index (SQLite) and pipeline definitions: indexing real-layout raws, rejecting damaged
and foreign files, queries, task records, pipeline YAML validation and overrides."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from atmospec.cli import main
from atmospec.errors import BadInputError
from atmospec.isr.driver import IsrConfig
from atmospec.night.index import NightIndex, check_raw_file, raw_files
from atmospec.night.pipeline import load_pipeline, with_overrides
from atmospec.sim.night import NightConfig, night_plan, write_damaged_files
from atmospec.sim.rawfile import primary_header, write_raw

NIGHT = NightConfig(day_obs=20250301, n_bias=2, n_dark=1, n_flat=1, n_science=2,
                    n_dispersed=1, dispersed_every=1)


@pytest.fixture(scope="module")
def night_dir(tmp_path_factory) -> Path:
    """Raw files with the night plan's headers (blank pixels: the index reads headers only),
    plus a truncated, an empty, a foreign and a non-FITS file."""
    out = tmp_path_factory.mktemp("night")
    segments = np.zeros((16, 2048, 576), dtype=np.int32)
    raws = []
    for p in night_plan(NIGHT):
        cards = primary_header(p.obs_id, {"science": "OBJECT", "dispersed": "OBJECT"}.get(
            p.kind, p.kind.upper()), p.exptime, p.darktime, p.filter_name, p.disperser,
            p.start, p.airmass, p.ra, p.dec, "field", elevation=p.elevation)
        raws.append(write_raw(out / f"{p.obs_id}.fits", segments, cards, compress=True))
    write_damaged_files(out, raws, NightConfig(day_obs=NIGHT.day_obs, n_corrupt=3))
    (out / "notes.fits").write_text("not a FITS file\n")
    return out


def test_index_accepts_raws_and_rejects_damaged_files(night_dir, tmp_path):
    index = NightIndex(tmp_path / "repo")
    counts = index.index_directory(night_dir, progress=False)
    plan = night_plan(NIGHT)
    assert counts == {"added": len(plan), "unchanged": 0, "rejected": 4}
    reasons = {p.name: r for p, r in index.rejected()}
    assert "truncated" in reasons[f"AT_O_{NIGHT.day_obs}_{len(plan) + 1:06d}.fits"]
    assert reasons[f"AT_O_{NIGHT.day_obs}_{len(plan) + 2:06d}.fits"] == "empty file"
    assert "ComCam" in reasons[f"CC_O_{NIGHT.day_obs}_{len(plan) + 3:06d}.fits"]
    assert "not a readable FITS file" in reasons["notes.fits"]
    # A second pass reads nothing again.
    assert index.index_directory(night_dir, progress=False) == {
        "added": 0, "unchanged": len(plan) + 4, "rejected": 0}


def test_nested_folders_and_patterns(night_dir, tmp_path):
    """Raws in a Butler-style tree (instrument/raw/day_obs/exposure/file) are all found; a
    --pattern of the file name or of the path below the folder chooses among them."""
    plan = night_plan(NIGHT)
    tree = tmp_path / "tree"
    for p in plan:
        folder = tree / "LATISS" / "raw" / str(NIGHT.day_obs) / p.obs_id
        folder.mkdir(parents=True)
        os.link(night_dir / f"{p.obs_id}.fits", folder / f"{p.obs_id}.fits")
    (tree / "LATISS" / "README.txt").write_text("not a raw\n")
    index = NightIndex(tmp_path / "repo")
    assert index.index_directory(tree, progress=False) == {
        "added": len(plan), "unchanged": 0, "rejected": 0}
    assert sorted(r.obs_id for r in index.raws()) == sorted(p.obs_id for p in plan)

    first_two = tuple(f"{p.obs_id}.fits" for p in plan[:2])
    assert [p.name for p in raw_files(tree, patterns=first_two)] == list(first_two)
    by_path = raw_files(tree, patterns=(f"LATISS/raw/*/{plan[-1].obs_id}/*.fits",))
    assert [p.name for p in by_path] == [f"{plan[-1].obs_id}.fits"]


def test_night_on_a_folder_without_raws_says_so(tmp_path, capsys):
    """No file matches: the night says what it searched (it used to say only "0 exposures"
    and write an empty report); --pattern finds what the defaults do not."""
    raw = tmp_path / "raw" / "20250301"
    raw.mkdir(parents=True)
    (raw / "log.txt").write_text("nothing here\n")
    repo = tmp_path / "repo"
    assert main(["night", str(tmp_path / "raw"), "--repo", str(repo), "--no-plots"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("0 exposures") and "0 with a failure" in out[0]
    assert out[1:2] == [f"no raw file in {tmp_path / 'raw'}: nothing matches *.fits, "
                       "*.fits.gz, *.fits.fz, *.fz in it or its sub-folders (6 levels down; "
                       "--pattern chooses the files)"]
    assert main(["night", str(tmp_path / "raw"), "--repo", str(repo), "--pattern",
                 "*.txt", "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "no raw file" not in out
    assert "skipped log.txt: not a readable FITS file" in out


def test_index_queries(night_dir, tmp_path):
    index = NightIndex(tmp_path / "repo")
    index.index_directory(night_dir, progress=False)
    plan = night_plan(NIGHT)
    assert [r.info.seq_num for r in index.raws()] == [p.seq for p in plan]
    assert len(index.raws(image_type="bias")) == NIGHT.n_bias
    assert len(index.raws(image_type=["bias", "dark"])) == NIGHT.n_bias + NIGHT.n_dark
    science = index.raws(image_type="science")
    assert len(science) == NIGHT.n_science + NIGHT.n_dispersed
    dispersed = index.raws(dispersed=True)
    assert [r.info.disperser for r in dispersed] == ["holo4_003"]
    assert len(index.raws(disperser="holo4_003")) == 1
    assert len(index.raws(filter="SDSSr_65mm", image_type="science")) == NIGHT.n_science
    # Time window: only the on-sky frames start after the science start time.
    on_sky = [p for p in plan if p.kind in ("science", "dispersed")]
    got = index.raws(start=on_sky[0].start, end=on_sky[-1].start)
    assert [r.info.seq_num for r in got] == [p.seq for p in on_sky[:-1]]


def test_index_notices_a_changed_file(night_dir, tmp_path):
    index = NightIndex(tmp_path / "repo")
    index.index_directory(night_dir, progress=False)
    victim = sorted(night_dir.glob("AT_O_*_000001.fits"))[0]
    copy = tmp_path / "night"
    copy.mkdir()
    target = copy / victim.name
    target.write_bytes(victim.read_bytes()[:100_000])
    other = NightIndex(tmp_path / "repo2")
    assert other.index_directory(copy, progress=False)["rejected"] == 1
    target.write_bytes(victim.read_bytes())
    os.utime(target, (1e9, 1e9))
    assert other.index_directory(copy, progress=False)["added"] == 1
    assert other.rejected() == []


def test_check_raw_file_names_the_problem(tmp_path):
    path = tmp_path / "few.fits"
    fits.HDUList([fits.PrimaryHDU(header=fits.Header({"INSTRUME": "LATISS"})),
                  fits.ImageHDU(np.zeros((2, 2)))]).writeto(path)
    with pytest.raises(BadInputError) as info:
        check_raw_file(path)
    assert str(path) in str(info.value)


def test_task_records_count_attempts(tmp_path):
    from datetime import UTC, datetime

    index = NightIndex(tmp_path / "repo")
    now = datetime.now(UTC)
    index.record_task("AT_O_1_000001", "isr", status="failed", config_hash="a", started=now,
                      duration_s=1.0, reason="boom")
    index.record_task("AT_O_1_000001", "isr", status="done", config_hash="a", started=now,
                      duration_s=2.0, outputs={"postisr": "x.fits"}, metrics={"fwhm_px": 9.5})
    (rec,) = index.tasks()
    assert (rec.status, rec.attempts, rec.reason, rec.metrics) == ("done", 2, None,
                                                                    {"fwhm_px": 9.5})
    with pytest.raises(ValueError):
        index.record_task("x", "isr", status="maybe", config_hash="a", started=now,
                          duration_s=0.0)


def test_default_pipeline_loads():
    pipeline = load_pipeline()
    assert [t.name for t in pipeline.tasks] == ["isr", "characterize", "zeroth_order",
                                                 "extract", "fit_atmosphere"]
    assert [t.name for t in pipeline.tasks_for("imaging")] == ["isr", "characterize"]
    assert [t.name for t in pipeline.tasks_for("dispersed")] == ["isr", "zeroth_order",
                                                                  "extract", "fit_atmosphere"]
    assert pipeline.calibrations.require == ("bias", "flat")
    assert pipeline.tasks[0].config.overscan.method == "median_per_row"


def test_overrides_reach_nested_configs():
    config = with_overrides(IsrConfig(), {"steps": ["overscan", "gain"],
                                          "cosmic_rays": {"niter": 1}})
    assert config.steps == ("overscan", "gain")
    assert config.cosmic_rays.niter == 1
    with pytest.raises(ValueError, match=r"cosmic_rays\.nitre: unknown option"):
        with_overrides(IsrConfig(), {"cosmic_rays": {"nitre": 1}})
    with pytest.raises(ValueError, match="expected an integer"):
        with_overrides(IsrConfig(), {"cosmic_rays": {"niter": "two"}})
    with pytest.raises(ValueError, match="is not one of"):
        with_overrides(IsrConfig(), {"overscan": {"method": "mean"}})


@pytest.mark.parametrize("text, message", [
    ("tasks: {isr: {}, detect: {}}", "tasks.detect: unknown task"),
    ("tasks: {characterize: {inputs: [isr]}}", "isr does not run before characterize"),
    ("tasks: {isr: {applies_to: [imaging]}, zeroth_order: {}}", "its input isr only on"),
    ("tasks: {isr: {config: {overscan: {method: mean}}}}", "tasks.isr.config.overscan.method"),
    ("calibrations: {build: [ptc]}\ntasks: {isr: {}}", "can build only"),
    ("tasks: [isr]", "needs a 'tasks' mapping"),
    ("tasks: {isr: {applies_to: [flats]}}", "unknown exposure class"),
])
def test_bad_pipeline_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(BadInputError) as info:
        load_pipeline(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_index_identity_adopts_old_indexes_and_refuses_foreign_databases(tmp_path):
    """An index written before the identity mark is adopted by the night and left untouched
    by a reader; a database with another application id is refused, not filled."""
    import sqlite3

    from atmospec.layout import INDEX_FILE
    from atmospec.night.index import APPLICATION_ID

    repo = tmp_path / "repo"
    NightIndex(repo)
    db = repo / INDEX_FILE
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA application_id = 0")
    conn.close()
    before = db.read_bytes()
    NightIndex(repo, create=False)  # the report: reads, never writes
    assert db.read_bytes() == before
    NightIndex(repo)  # the night: adopts it
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    conn.close()

    foreign = tmp_path / "foreign"
    (foreign / INDEX_FILE).parent.mkdir(parents=True)
    with sqlite3.connect(foreign / INDEX_FILE) as conn:
        conn.execute("PRAGMA application_id = 1234")
        conn.execute("CREATE TABLE raws (x)")
    conn.close()
    with pytest.raises(BadInputError, match="not an atmospec night index"):
        NightIndex(foreign)


def test_atmosphere_fit_of_a_target_without_sed_is_skipped_with_a_note(night_dir, tmp_path):
    """A night's dispersed exposure of a target that is neither a CALSPEC standard nor given
    an SED: its atmosphere fit is recorded ``done`` with a ``skipped: …`` note (no file, no
    failure), and the summary's row is ``done`` with that note as its reason."""
    from datetime import UTC, datetime

    from atmospec.atmosphere.spectrum_fit import AtmosphereFitConfig
    from atmospec.calib.isr_inputs import CalibrationFiles
    from atmospec.night.summary import summary_table
    from atmospec.night.tasks import ExposureJob, TaskSpec, run_job
    from atmospec.spectro.spectrum import Spectrum
    from spectractor_bridge.spectrum import write_spectrum

    index = NightIndex(tmp_path / "repo")
    index.index_directory(night_dir, progress=False)
    (record,) = index.raws(dispersed=True)
    obs_id = record.info.obs_id
    lam = np.linspace(400.0, 1000.0, 50)
    spectrum = write_spectrum(Spectrum(
        wavelength=lam, flux=np.ones(50), flux_err=np.ones(50), flux_unit="electron/nm",
        header=fits.Header({"TARGET": "NGC 7009", "AIRMASS": 1.2, "EXPTIME": 30.0})),
        tmp_path / "pn_spectrum.fits")
    job = ExposureJob(obs_id=obs_id, raw=str(record.path), out_dir=str(tmp_path / "out"),
                      tasks=(TaskSpec("fit_atmosphere", AtmosphereFitConfig(), "h",
                                      ("extract",)),),
                      calibs=CalibrationFiles(),
                      done_outputs={"extract": {"spectrum": str(spectrum)}})
    (outcome,) = run_job(job)
    assert outcome.status == "done" and outcome.outputs == {}
    assert outcome.reason.startswith("skipped: target 'NGC 7009' is not a CALSPEC standard")
    assert "\n" not in outcome.reason and not list((tmp_path / "out").iterdir())
    now = datetime.now(UTC)
    index.record_task(obs_id, "extract", status="done", config_hash="e", started=now,
                      duration_s=1.0, outputs={"spectrum": str(spectrum)})
    index.record_task(obs_id, outcome.task, status=outcome.status, reason=outcome.reason,
                      config_hash="h", started=now, duration_s=outcome.duration_s)
    (row,) = [r for r in summary_table(index) if r["obs_id"] == obs_id]
    assert row["status"] == "done"
    assert row["reason"].startswith("fit_atmosphere: skipped: target 'NGC 7009'")
    assert np.isnan(row["pwv_mm"])
