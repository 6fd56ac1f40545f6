"""``atmospec watch`` (issue 20): a night reduced as its raw files arrive.

The small simulated night of the shared fixtures (`conftest.NIGHT`) is fed into an empty
watched directory one file by one, 0.2 s apart, by a feeder thread: the calibration frames,
the night's dispersed exposure, its three damaged files (a truncated raw, an empty file, a
foreign FITS file) and, last, an imaging frame written slowly in six chunks (complete only
after ~5 s: it must not be taken half-written). The watch runs as the command a user types,
in a subprocess, and is stopped with SIGINT once that imaging exposure's job is running:
it must finish and record the exposures running, then exit 0. Its repository starts with a
copy of the reference night's calibration products (the "certified products" path, as the
night runner's resume test does: building them again would double the test's cost), so
every output can be compared plane by plane with ``atmospec night``'s on the same raws.

The dispersed exposure is the shared night's (full frame): the reference night reduced it
already, and a 2×2-binned one would cost more here, its simulation alone ~7.5 s of CPU
plus 2×2 masters the fixtures do not hold (a product must match the frame's binning). The
night's other imaging frame is not fed. The live page's alerts are tested on synthetic
summary rows; the page itself in a browser in ``tests/test_report_browser.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from night_outputs import assert_same_outputs

from atmospec.cli import main
from atmospec.night.alerts import AlertConfig, live_alerts
from atmospec.night.index import NightIndex, is_raw_path
from atmospec.night.lock import night_lock
from atmospec.night.runner import NightRunConfig, run_night
from atmospec.night.watch import WatchConfig, watch_night
from atmospec.parallel import WORKER_ENVIRONMENT

#: The frames fed, by SEQNUM: 1–12 calibration frames, 14 the dispersed exposure, 16–18 the
#: damaged files, then 13, the imaging frame, written slowly.
SLOW = "AT_O_20250301_000013.fits"
DISPERSED = "AT_O_20250301_000014.fits"
DAMAGED = ("AT_O_20250301_000016.fits", "AT_O_20250301_000017.fits",
           "CC_O_20250301_000018.fits")
CADENCE_S = 0.2
CHUNKS = 6
CHUNK_PAUSE_S = 0.8
#: A damaged file is reported this long after its last change (the default, 60 s, is for
#: transfers that stall).
TIMEOUT_S = 3.0


def _feed_order(raw: Path) -> list[str]:
    names = sorted(p.name for p in raw.glob("*.fits"))
    calibration = [n for n in names if int(n[-10:-5]) <= 12 and n.startswith("AT_")]
    return [*calibration, DISPERSED, *DAMAGED, SLOW]


class Feeder(threading.Thread):
    """Copies the raws into the watched folder at the cadence, noting when each landed, and
    samples ``live.json`` meanwhile."""

    def __init__(self, raw: Path, watched: Path, live: Path) -> None:
        super().__init__(daemon=True)
        self.raw, self.watched, self.live = raw, watched, live
        self.landed: dict[str, float] = {}
        self.latest_seen: list[str] = []
        self.error: BaseException | None = None

    def sample(self) -> None:
        try:
            latest = json.loads(self.live.read_text())["latest"]
        except (OSError, ValueError, KeyError):
            return
        if latest and (not self.latest_seen or self.latest_seen[-1] != latest):
            self.latest_seen.append(latest)

    def run(self) -> None:
        try:
            for name in _feed_order(self.raw):
                if name == SLOW:
                    data = (self.raw / name).read_bytes()
                    with open(self.watched / name, "wb") as f:
                        for i in range(CHUNKS):
                            if i:
                                time.sleep(CHUNK_PAUSE_S)
                                self.sample()
                            f.write(data[i * len(data) // CHUNKS:(i + 1) * len(data) // CHUNKS])
                            f.flush()
                else:
                    shutil.copyfile(self.raw / name, self.watched / name)
                self.landed[name] = time.time()
                time.sleep(CADENCE_S)
                self.sample()
        except BaseException as exc:  # re-raised by the test
            self.error = exc


def _started(index: NightIndex, obs_id: str) -> float:
    """When the exposure's first task started, Unix time."""
    first = min(t.started for t in index.tasks(obs_id))
    return datetime.strptime(first, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC).timestamp()


@pytest.fixture(scope="module")
def watched(night_raw_dir: Path, night_reference: tuple[Path, int],
            tmp_path_factory: pytest.TempPathFactory):
    """The watch run: (repo, raw folder, feeder, exit status, stdout, stderr, whether the
    exposure was still running when SIGINT was sent)."""
    ref_repo, status = night_reference
    assert status == 0
    work = tmp_path_factory.mktemp("watch")
    watched_dir, repo = work / "in", work / "repo"
    watched_dir.mkdir()
    shutil.copytree(ref_repo / "calib", repo / "calib")
    live = repo / "report" / "live.json"
    out_file, err_file = work / "stdout.txt", work / "stderr.txt"
    with open(out_file, "w") as stdout, open(err_file, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "atmospec", "watch", str(watched_dir), "--repo", str(repo),
             "--workers", "2", "--incomplete-timeout", str(TIMEOUT_S), "--no-report"],
            stdout=stdout, stderr=stderr, text=True, start_new_session=True,
            env={**os.environ, **WORKER_ENVIRONMENT})
    feeder = Feeder(night_raw_dir, watched_dir, live)
    try:
        deadline = time.monotonic() + 120
        while not live.is_file():  # the watch is up: its first page is written
            assert proc.poll() is None and time.monotonic() < deadline, "watch did not start"
            time.sleep(0.1)
        feeder.start()
        feeder.join(timeout=120)
        assert not feeder.is_alive() and feeder.error is None, feeder.error
        # Stop once the damaged files were reported and the slow exposure's job is running
        # (its ISR wrote the post-ISR image; characterize and the figures follow): the jobs
        # running must finish and be recorded.
        postisr = repo / "exposures" / "20250301" / f"{SLOW.removesuffix('.fits')}_postisr.fits"
        while len(json.loads(live.read_text())["rejected"]) < len(DAMAGED) or \
                not postisr.is_file():
            assert proc.poll() is None and time.monotonic() < deadline + 60
            time.sleep(0.05)
            feeder.sample()
        running = not NightIndex(repo, create=False).tasks(SLOW.removesuffix(".fits"))
        proc.send_signal(signal.SIGINT)
        while proc.poll() is None:  # the page keeps following the night until it ends
            assert time.monotonic() < deadline + 600, "the watch did not stop"
            feeder.sample()
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    feeder.sample()
    yield (repo, watched_dir, feeder, proc.returncode, out_file.read_text(),
           err_file.read_text(), running)


def test_watch_reduces_each_exposure_as_it_arrives(watched):
    """Exit 0 after SIGINT with the running exposures finished; every frame has its summary
    row, each science exposure its figures (the dispersed one its spectrum's and its
    atmosphere fit's); the live page showed them."""
    repo, watched_dir, feeder, status, out, err, running = watched
    assert status == 0, err
    assert running, "the exposure had finished before SIGINT: nothing to check"
    assert "stopping" in err and "Traceback" not in err
    assert "2 processed now" in out
    summary = Table.read(repo / "night" / "summary.ecsv")
    fed = [n.removesuffix(".fits") for n in _feed_order(watched_dir) if n not in DAMAGED]
    assert sorted(summary["obs_id"]) == sorted(fed)
    science = summary[summary["image_type"] == "science"]
    slow, dispersed = SLOW.removesuffix(".fits"), DISPERSED.removesuffix(".fits")
    assert list(science["obs_id"]) == [slow, dispersed]
    assert list(science["status"]) == ["done", "done"] and science["n_sources"][0] > 100
    # The dispersed exposure's row: its zeroth order, spectrum and atmosphere.
    row = science[1]
    assert np.isfinite(row["zeroth_order_x"]) and np.isfinite(row["zeroth_order_y"])
    assert np.isfinite(row["flux_650nm"]) and row["flux_650nm"] > 0
    assert np.isfinite(row["pwv_mm"]) and np.isfinite(row["pwv_mm_err"])
    expected = {slow: {"postisr.png", "sources.png", "psf.png"},
                dispersed: {"postisr.png", "atmosphere_fit.png", "spectrum_spectrum.png",
                            "spectrum_spectrogram.png"}}
    for obs_id, names in expected.items():
        figures = repo / "report" / "exposures" / obs_id
        manifest = json.loads((figures / "figures.json").read_text())
        drawn = [name for group in manifest.values() for name in group["files"]]
        assert names <= set(drawn), obs_id
        assert all((figures / name).stat().st_size > 1000 for name in drawn)
    # The page had no exposure, then these (the newest by SEQNUM shown: the dispersed one).
    assert feeder.latest_seen and feeder.latest_seen[-1] == dispersed
    assert set(feeder.latest_seen) <= {slow, dispersed}
    live = json.loads((repo / "report" / "live.json").read_text())
    assert live["final"] and live["latest"] == dispersed
    assert live["latest_spectrum"] == dispersed
    page = (repo / "report" / "live.html").read_text()
    assert f"Latest exposure: {dispersed}" in page
    assert f"Latest spectrum: {dispersed}" in page and "atmosphere_fit.png" in page
    assert (repo / "report" / "live" / "image_quality.png").stat().st_size > 10_000


def test_watch_results_equal_the_night(watched, night_reference):
    """Every output of the watch equals the uninterrupted night's, plane by plane, and so do
    the summary's numbers (FWHM, ellipticity, sky, sources…)."""
    repo = watched[0]
    ref_repo, _ = night_reference
    assert_same_outputs(repo, ref_repo, subset=True)
    mine = Table.read(repo / "night" / "summary.ecsv")
    ref = Table.read(ref_repo / "night" / "summary.ecsv")
    ref = ref[np.isin(ref["obs_id"], mine["obs_id"])]
    assert list(mine["obs_id"]) == list(ref["obs_id"])
    for column in mine.colnames:
        if column == "duration_s":
            continue
        np.testing.assert_array_equal(mine[column], ref[column], err_msg=column)


def test_a_file_written_slowly_is_taken_whole(watched):
    """The imaging frame written in chunks is indexed once, whole, and reduced only after
    its last byte landed; it is never refused meanwhile."""
    repo, watched_dir, feeder, *_ , err, _ = watched
    index = NightIndex(repo, create=False)
    record = next(r for r in index.raws() if r.path.name == SLOW)
    assert record.path.stat().st_size == (watched_dir / SLOW).stat().st_size
    assert _started(index, SLOW.removesuffix(".fits")) > feeder.landed[SLOW]
    assert SLOW not in {p.name for p, _ in index.rejected()}
    assert SLOW not in err


def test_damaged_files_are_reported_once(watched, night_reference):
    """The damaged files are skipped with the night's reasons, each in one log line."""
    repo, *_, err, _ = watched
    ref_repo, _ = night_reference
    rejected = {p.name: r for p, r in NightIndex(repo, create=False).rejected()}
    expected = {p.name: r for p, r in NightIndex(ref_repo, create=False).rejected()}
    assert rejected == expected and sorted(rejected) == sorted(DAMAGED)
    for name in DAMAGED:
        assert sum(name in line for line in err.splitlines()) == 1, err
    live = json.loads((repo / "report" / "live.json").read_text())
    assert sorted(n for n, _ in live["rejected"]) == sorted(DAMAGED)


def test_a_later_watch_or_night_resumes_with_nothing_to_do(watched):
    """A second watch (stopped when idle) and a night on the same repository run nothing."""
    repo, watched_dir, *_ = watched
    before = {(t.obs_id, t.task): t.attempts for t in NightIndex(repo).tasks()}
    result = watch_night(watched_dir, repo, WatchConfig(workers=1, idle_exit_s=0.2,
                                                        progress=False))
    assert result.n_run == 0 and result.n_skipped == 2 and result.n_exposures == 2
    result = run_night(watched_dir, repo, NightRunConfig(workers=1, plots=False,
                                                         progress=False))
    assert result.n_run == 0 and result.n_skipped == 2
    assert {(t.obs_id, t.task): t.attempts for t in NightIndex(repo).tasks()} == before


def test_watch_bad_input_is_one_line(tmp_path, capsys):
    """A missing folder, a file for a folder and a repository another night holds: one
    line naming the problem, exit status 2, nothing created."""
    raw = tmp_path / "raw"
    repo = tmp_path / "repo"
    assert main(["watch", str(raw), "--repo", str(repo)]) == 2
    assert capsys.readouterr().err.strip() == f"atmospec: {raw}: no such directory"
    assert not repo.exists()
    raw.write_text("not a folder")
    assert main(["watch", str(raw), "--repo", str(repo)]) == 2
    assert capsys.readouterr().err.strip() == f"atmospec: {raw}: not a directory"
    raw.unlink()
    raw.mkdir()
    with night_lock(repo):
        assert main(["watch", str(raw), "--repo", str(repo), "--idle-exit", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another atmospec night is running" in err[0]
    for argv in (["--workers", "0"], ["--idle-exit", "-1"], ["--serve", "70000"]):
        assert main(["watch", str(raw), "--repo", str(repo), *argv]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_is_raw_path_follows_the_walk(tmp_path):
    """An event's path is a raw exactly when the night's walk would list it."""
    root = tmp_path / "night"
    assert is_raw_path(root, root / "AT_O_1.fits")
    assert is_raw_path(root, root / "20250301" / "AT_O_1.fits.fz")
    assert not is_raw_path(root, root / "AT_O_1_truth.json")
    assert not is_raw_path(root, root / ".cache" / "AT_O_1.fits")  # a hidden folder
    assert not is_raw_path(root, root / "repo" / "x_postisr.fits", skip=(root / "repo",))
    assert not is_raw_path(root, tmp_path / "elsewhere.fits")
    assert not is_raw_path(root, root / "a.fits" / "b.fits")  # inside a folder named so
    deep = root.joinpath(*"abcdefg") / "AT_O_1.fits"  # 7 levels: deeper than the walk
    assert not is_raw_path(root, deep)
    assert is_raw_path(root, root / "raw" / "x.dat", patterns=("raw/*.dat",))


# --- alerts -------------------------------------------------------------------------------


def _imaging(seq: int, fwhm: float, filt: str = "SDSSr_65mm", **extra) -> dict:
    return {"obs_id": f"AT_O_20250301_{seq:06d}", "image_type": "science", "filter": filt,
            "disperser": "empty", "status": "done", "reason": "", "fwhm_arcsec": fwhm,
            "zeroth_order_x": float("nan"), "zeroth_order_saturated": float("nan"),
            "target": "field", **extra}


def _dispersed(seq: int, **extra) -> dict:
    return {**_imaging(seq, float("nan")), "disperser": "holo4_003", "target": "HD142331",
            "zeroth_order_x": 1700.0, "zeroth_order_saturated": 0.0, **extra}


def test_alerts_quiet_night():
    rows = [_imaging(i, 1.0 + 0.02 * (-1) ** i) for i in range(1, 9)] + [_dispersed(9)]
    assert live_alerts(rows) == []


def test_alert_seeing_jump_against_the_median_of_the_same_filter():
    rows = [_imaging(i, f) for i, f in enumerate((1.0, 1.1, 0.9, 1.05, 1.0), start=1)]
    rows.append(_imaging(6, 0.6, filt="SDSSg_65mm"))  # another filter: not compared
    rows.append(_imaging(7, 1.30))  # +30 % over the median 1.0 of the 5 before it
    alerts = live_alerts(rows)
    assert len(alerts) == 1
    assert alerts[0].startswith("Seeing jump on AT_O_20250301_000007: PSF FWHM 1.30″, 30 % "
                                "above the median 1.00″ of the 5 exposures before it")
    rows[-1] = _imaging(7, 1.24)  # +24 %: below the 25 % threshold
    assert live_alerts(rows) == []
    assert live_alerts(rows, AlertConfig(seeing_jump=0.2))[0].startswith("Seeing jump")
    # Too little history: no verdict.
    assert live_alerts([_imaging(1, 1.0), _imaging(2, 2.0)]) == []


def test_alert_focus_drift_is_a_steady_rise():
    rising = [_imaging(i, f) for i, f in enumerate((1.0, 1.04, 1.08, 1.13), start=1)]
    alerts = live_alerts(rising)
    assert len(alerts) == 1 and alerts[0].startswith("Focus drift? The PSF FWHM rose in each "
                                                     "of the last 4 exposures")
    assert "+13 %" in alerts[0]
    wobble = [_imaging(i, f) for i, f in enumerate((1.0, 1.08, 1.04, 1.13), start=1)]
    assert live_alerts(wobble) == []  # seeing wanders: not a drift
    small = [_imaging(i, f) for i, f in enumerate((1.0, 1.02, 1.04, 1.06), start=1)]
    assert live_alerts(small) == []  # +6 %: under the 10 % threshold


def test_alerts_of_dispersed_frames_and_failures():
    rows = [_imaging(1, 1.0),
            _dispersed(2, status="failed",
                       reason="zeroth_order: no star found near the expected zeroth-order "
                              "position"),
            _dispersed(3, zeroth_order_saturated=1.0),
            _imaging(4, float("nan"), status="failed",
                     reason="characterize: too few stars for a PSF")]
    assert live_alerts(rows) == [
        "No star found in dispersed exposure AT_O_20250301_000002: no star found near the "
        "expected zeroth-order position; check the pointing and the target.",
        "Saturated target in AT_O_20250301_000003: the zeroth order of HD142331 has "
        "saturated pixels (centroid from the wings, flux biased); shorten the exposure.",
        "Task characterize failed on AT_O_20250301_000004: too few stars for a PSF"]
    # Only the latest exposures are reported; calibration frames never are.
    assert live_alerts(rows, AlertConfig(recent=1)) == [
        "Task characterize failed on AT_O_20250301_000004: too few stars for a PSF"]
    bias = {**_imaging(5, float("nan")), "image_type": "bias", "status": "failed",
            "reason": "isr: broken"}
    assert live_alerts([bias]) == []


def test_arrivals_take_a_closed_file_at_once(tmp_path):
    """A file whose writer closed it (or that was moved in) is due at its first look; one
    only seen changing waits `settle_s` with the same size and time; a closed file that
    fails the completeness check waits for a change, not for the next look."""
    from atmospec.night.arrivals import Arrivals

    closed, written = tmp_path / "a.fits", tmp_path / "b.fits"
    for p in (closed, written):
        p.write_bytes(b"x" * 2880)
    files = Arrivals(settle_s=0.3, timeout_s=60.0)
    t0 = time.monotonic()  # `Arrivals.defer` reads the clock itself
    files.note(closed, t0, closed=True)
    files.note(written, t0)
    assert files.due(t0 + 0.05) == [closed]
    assert files.defer(closed, "truncated")  # the check failed: wait for it
    assert files.due(t0 + 0.2) == []
    assert files.due(t0 + 0.4) == [written]  # unchanged for 0.35 s
    closed.write_bytes(b"x" * 5760)  # the writer went on: changed, then closed again
    files.note(closed, t0 + 0.5, closed=True)
    assert closed in files.due(t0 + 0.55)


def test_event_queue_says_which_events_finish_a_file(tmp_path):
    from watchdog.events import FileClosedEvent, FileModifiedEvent, FileMovedEvent

    from atmospec.night.arrivals import EventQueue

    events = EventQueue()
    a = str(tmp_path / "a.fits")
    events.dispatch(FileModifiedEvent(a))
    events.dispatch(FileClosedEvent(a))
    events.dispatch(FileMovedEvent(str(tmp_path / ".a.part"), a))
    assert list(events.drain()) == [(Path(a), False), (Path(a), True), (Path(a), True)]


def test_summary_files_coalesced_while_a_backlog_waits(tmp_path, monkeypatch):
    """While exposures wait for a worker the summary files are written at most every
    `summary_interval_s`; the update left out is written once none waits (or when due)."""
    from collections import deque

    from atmospec.night import watch as watch_module
    from atmospec.night.pipeline import load_pipeline

    written: list[int] = []
    monkeypatch.setattr(watch_module, "write_summary",
                        lambda index, repo, plots, table: written.append(len(table)) or {})
    raw = tmp_path / "raw"
    raw.mkdir()
    w = watch_module._Watch(raw, tmp_path / "repo", WatchConfig(summary_interval_s=3600.0),
                            load_pipeline(), None, threading.Event())
    w._publish(())  # nothing waits: written at once
    assert len(written) == 1 and not w.summary_stale
    w.jobs = deque(["an exposure waiting"])
    w._publish(())
    w._publish(())
    assert len(written) == 1 and w.summary_stale  # a backlog within the interval: coalesced
    w._write_summary()
    assert len(written) == 1  # still waiting, still not due
    w.jobs.clear()
    w._write_summary()  # the backlog drained: the last update is written
    assert len(written) == 2 and not w.summary_stale
    w.jobs = deque(["an exposure waiting"])
    w.summary_at -= 3600.0  # the interval has passed: due even with a backlog
    w._publish(())
    assert len(written) == 3
