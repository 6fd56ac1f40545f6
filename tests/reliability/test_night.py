"""Issue 16, the night runner: a night survives raws that vanish, files sharing an OBSID,
directories, FIFOs, dangling links and unreadable files in its directory, a kill of its
main process, a second run on the same repository, a damaged summary and a read-only
repository.

One small night is shared by the module: three science frames with plain pixels (the
runner's behaviour, not the pixels, is under test), reduced by a pipeline of ISR alone
(overscan, gain, assembly) without calibration products, so a run takes seconds.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import atmospec.night.index as index_module
from atmospec.calib.registry import CalibrationRegistry
from atmospec.cli import main
from atmospec.errors import BadInputError
from atmospec.io import atomic_path, is_atomic_temporary, remove_stale_temporaries
from atmospec.layout import NIGHT_LOCK_FILE
from atmospec.night.index import NightIndex
from atmospec.night.lock import night_lock
from atmospec.night.pipeline import load_pipeline
from atmospec.night.runner import (
    STALE_TEMPORARY_AGE_S,
    NightResult,
    NightRunConfig,
    plan_jobs,
    run_night,
)
from atmospec.sim.night import KINDS, NightConfig, PlannedExposure, night_plan
from atmospec.sim.rawfile import primary_header, write_raw

pytestmark = pytest.mark.reliability

NIGHT = NightConfig(day_obs=20250301, n_bias=0, n_dark=0, n_flat=0, n_science=3,
                    n_dispersed=0)

PIPELINE = """\
calibrations:
  build: []
  require: []
tasks:
  isr:
    applies_to: [imaging]
    config:
      steps: [overscan, gain, assemble]
"""


@dataclass(frozen=True)
class SmallNight:
    """The module's night."""

    raw: Path
    """Its directory of raw files."""
    pipeline: Path
    """The ISR-only pipeline definition."""
    names: tuple[str, ...]
    """Raw file names, in sequence order."""


def _segments(level: int = 20_000) -> np.ndarray:
    """Plain raw pixels with a column pattern (the overscan fit has something to fit)."""
    seg = np.full((16, 2048, 576), level, np.int32)
    return seg + (np.arange(576, dtype=np.int32) % 7)[None, None, :]


def _write(path: Path, p: PlannedExposure, obs_id: str | None = None) -> Path:
    cards = primary_header(obs_id or p.obs_id, KINDS[p.kind], p.exptime, p.darktime,
                           p.filter_name, p.disperser, p.start, p.airmass, p.ra, p.dec,
                           "field", elevation=p.elevation)
    return write_raw(path, _segments(), cards)


@pytest.fixture(scope="module")
def small_night(tmp_path_factory: pytest.TempPathFactory) -> SmallNight:
    root = tmp_path_factory.mktemp("small_night")
    raw = root / "raw"
    raw.mkdir()
    names = tuple(_write(raw / f"{p.obs_id}.fits", p).name for p in night_plan(NIGHT))
    pipeline = root / "isr.yaml"
    pipeline.write_text(PIPELINE)
    return SmallNight(raw, pipeline, names)


def _config(night: SmallNight, workers: int = 2) -> NightRunConfig:
    return NightRunConfig(workers=workers, pipeline=str(night.pipeline), plots=False,
                          progress=False)


def _night_args(night: SmallNight, raw: Path, repo: Path, workers: int = 2) -> list[str]:
    return ["night", str(raw), "--repo", str(repo), "--workers", str(workers), "--no-plots",
            "--pipeline", str(night.pipeline)]


@pytest.fixture(scope="module")
def reference(small_night: SmallNight, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run of the small night: its repository."""
    repo = tmp_path_factory.mktemp("reference") / "repo"
    result = run_night(small_night.raw, repo, _config(small_night))
    assert (result.n_run, result.n_failed) == (NIGHT.n_science, 0)
    return repo


def _linked(night: SmallNight, directory: Path, names: tuple[str, ...]) -> Path:
    directory.mkdir()
    for name in names:
        os.link(night.raw / name, directory / name)
    return directory


def _reasons(index: NightIndex) -> dict[str, str]:
    return {p.name: reason for p, reason in index.rejected()}


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _assert_same_outputs(reference: Path, repo: Path) -> None:
    """The post-ISR images of ``repo`` equal the reference run's, plane by plane."""
    ref = {p.name: p for p in reference.glob("exposures/*/*_postisr.fits")}
    got = {p.name: p for p in repo.glob("exposures/*/*_postisr.fits")}
    assert sorted(got) == sorted(ref) and len(ref) == NIGHT.n_science
    for name, path in ref.items():
        with fits.open(path) as a, fits.open(got[name]) as b:
            assert [h.name for h in a] == [h.name for h in b]
            for x, y in zip(a[1:], b[1:], strict=True):
                assert np.array_equal(x.data, y.data, equal_nan=x.data.dtype.kind == "f"), \
                    f"{name} {x.name}"


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if is_atomic_temporary(p)]


def _wait_for(condition: Callable[[], object], timeout_s: float, period_s: float = 0.02):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(period_s)
    return condition()


def _live_in_session(session: int) -> list[str]:
    """Live (not zombie) processes of a session, as ``pid cmdline``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue  # ended meanwhile
        state, sid = fields[0], int(fields[3])
        if sid == session and state not in ("Z", "X"):
            found.append(f"{entry.name} {cmdline[:120]}")
    return found


# -- unprivileged subprocesses ------------------------------------------------------------

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def _drop_file_privileges() -> None:
    """In the child before exec: as root, lose the right to ignore file permissions, so that
    a read-only repository or an unreadable file is what it is for an ordinary user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _run_unprivileged(args: list[str], timeout_s: float = 60) -> subprocess.CompletedProcess:
    if not sys.platform.startswith("linux"):
        pytest.skip("file permissions are tested on Linux")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout_s,
                          preexec_fn=_drop_file_privileges if os.geteuid() == 0 else None)


# -- item 1: a raw that vanishes ----------------------------------------------------------

@pytest.mark.timeout(90)
def test_issue16_item1_vanished_raw_is_a_recorded_skip(small_night, tmp_path, capsys):
    """A raw indexed by an earlier night and deleted since: the night runs the others and
    says which file it skipped and why; when the file is back it is indexed again."""
    kept, gone = small_night.names[:2]
    raw = _linked(small_night, tmp_path / "raw", (kept, gone))
    repo = tmp_path / "repo"
    NightIndex(repo).index_directory(raw, progress=False)
    (raw / gone).unlink()
    status = main(_night_args(small_night, raw, repo, workers=1))
    out, err = capsys.readouterr()
    assert status == 0, err
    assert ("1 exposures (0 calibration frames, 1 science): 1 processed now, 0 already "
            "done, 0 with a failure") in out
    assert f"skipped {gone}: vanished after indexing (was {Path(gone).stem})" in out
    index = NightIndex(repo)
    assert [r.path.name for r in index.raws()] == [kept]
    assert _reasons(index)[gone].startswith("vanished after indexing")
    # The record survives while the file is gone, and lets it in when it is back.
    assert index.index_directory(raw, progress=False)["rejected"] == 0
    assert gone in _reasons(index)
    os.link(small_night.raw / gone, raw / gone)
    assert index.index_directory(raw, progress=False)["added"] == 1
    assert index.rejected() == []


@pytest.mark.timeout(60)
def test_issue16_item1_raw_vanishing_while_planning_is_a_recorded_skip(small_night,
                                                                        tmp_path):
    """The crash site on main: `plan_jobs` stats a raw deleted after indexing."""
    raw = _linked(small_night, tmp_path / "raw", small_night.names)
    repo = tmp_path / "repo"
    index = NightIndex(repo)
    index.index_directory(raw, progress=False)
    gone = small_night.names[1]
    (raw / gone).unlink()
    jobs, complete = plan_jobs(index, CalibrationRegistry(repo, create=True),
                               load_pipeline(str(small_night.pipeline)), repo)
    assert complete == 0
    assert [Path(j.raw).name for j in jobs] == [small_night.names[0], small_night.names[2]]
    assert _reasons(index) == {gone: f"vanished after indexing (was {Path(gone).stem})"}


@pytest.mark.timeout(60)
def test_issue16_item1_raw_vanishing_while_indexing_is_a_recorded_skip(small_night, tmp_path,
                                                                        monkeypatch):
    """A file that disappears between the directory listing and its reading."""
    raw = _linked(small_night, tmp_path / "raw", small_night.names[:2])
    victim = raw / small_night.names[0]
    real_check = index_module.check_raw_file

    def vanishing(path: Path):
        if path == victim.resolve():
            victim.unlink()
        return real_check(path)

    monkeypatch.setattr(index_module, "check_raw_file", vanishing)
    index = NightIndex(tmp_path / "repo")
    assert index.index_directory(raw, progress=False) == {"added": 1, "unchanged": 0,
                                                          "rejected": 1}
    assert _reasons(index) == {victim.name: "vanished while indexing"}
    # Gone for good: nothing is left to skip at the next indexing.
    index.index_directory(raw, progress=False)
    assert index.rejected() == []


# -- item 8: two files with one OBSID ---------------------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("resolution", ["removed", "fixed"])
def test_issue16_item8_duplicate_obsid_holds_back_both_files(tmp_path, resolution):
    """A stray file carrying a flat's OBSID (named to sort first, arriving after the flat
    was indexed) holds back both, each naming the other; once the stray is removed or
    given its own OBSID, a re-index lets the flat in."""
    plan = night_plan(NightConfig(day_obs=20250301, n_bias=0, n_dark=0, n_flat=2,
                                  n_science=0))
    raw = tmp_path / "raw"
    raw.mkdir()
    genuine = _write(raw / f"{plan[0].obs_id}.fits", plan[0])
    other = _write(raw / f"{plan[1].obs_id}.fits", plan[1])
    index = NightIndex(tmp_path / "repo")
    assert index.index_directory(raw, progress=False)["added"] == 2

    stray = _write(raw / "AAA_stray.fits", plan[1], obs_id=plan[0].obs_id)
    counts = index.index_directory(raw, progress=False)
    assert counts == {"added": 0, "unchanged": 1, "rejected": 2}
    assert [r.path for r in index.raws()] == [other.resolve()]
    reasons = _reasons(index)
    assert set(reasons) == {genuine.name, stray.name}
    for path, partner in ((genuine, stray), (stray, genuine)):
        assert reasons[path.name].startswith(f"duplicate OBSID {plan[0].obs_id}: also in "
                                             f"{partner.name}")
    # Still both held back at the next indexing (not first come, not first by name).
    assert index.index_directory(raw, progress=False)["added"] == 0
    assert set(_reasons(index)) == {genuine.name, stray.name}

    if resolution == "removed":
        stray.unlink()
        expected = [genuine.resolve(), other.resolve()]
    else:
        fixed = NightConfig(day_obs=20250301, n_bias=0, n_dark=0, n_flat=3, n_science=0)
        _write(stray, night_plan(fixed)[2])
        expected = [genuine.resolve(), other.resolve(), stray.resolve()]
    index.index_directory(raw, progress=False)
    assert [r.path for r in index.raws()] == expected
    assert index.rejected() == []


# -- item 9: a killed night -----------------------------------------------------------------

@pytest.mark.timeout(30)
def test_issue16_item9_only_stale_atomic_temporaries_are_removed(tmp_path):
    """`remove_stale_temporaries` knows `atomic_path`'s names: it removes old ones only,
    never a fresh one (a live writer's), another hidden file or a link."""
    target = tmp_path / "a" / "AT_O_20250301_000001_postisr.fits"
    with atomic_path(target) as tmp:
        made = tmp
        assert is_atomic_temporary(tmp)
        shutil.copy(tmp, tmp.with_name(tmp.name.replace(".tmp", "")))  # not a temporary
    old = time.time() - 3600
    stale = target.parent / f".{target.name}.ab_cd123.tmp"
    fresh = target.parent / f".{target.name}.zz99zz99.tmp"
    others = [target.parent / ".notes.tmp", target.parent / "plain.fits.ab_cd123.tmp",
              target.parent / f".{target.name}.short.tmp"]
    for path in (stale, fresh, *others):
        path.write_bytes(b"x" * 100)
    link = target.parent / f".{target.name}.lnk45678.tmp"
    link.symlink_to(target)
    for path in (stale, *others):
        os.utime(path, (old, old))
    os.utime(link, (old, old), follow_symlinks=False)
    assert not made.exists()
    assert remove_stale_temporaries(tmp_path, older_than_s=60) == [stale]
    assert fresh.exists() and link.is_symlink() and all(p.exists() for p in others)


@pytest.mark.timeout(180)
def test_issue16_item9_killed_night_leaves_no_worker_and_next_run_cleans_up(
        small_night, reference, tmp_path):
    """SIGKILL on a night's main process while a worker writes a post-ISR image: no worker
    survives it, and the next run removes the half-written temporary file and ends with the
    outputs of an uninterrupted run."""
    repo = tmp_path / "repo"
    proc = subprocess.Popen([sys.executable, "-m", "atmospec",
                             *_night_args(small_night, small_night.raw, repo)],
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        writing = _wait_for(lambda: _temporaries(repo), 90)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the main process only, not its group
        proc.wait()
    assert writing, "no worker wrote anything before the deadline"
    gone = _wait_for(lambda: not _live_in_session(proc.pid), 5, 0.1)
    assert gone, f"workers outlived the killed night: {_live_in_session(proc.pid)}"
    left = _temporaries(repo)
    assert left, "the kill left no half-written file (killed between two writes?)"
    # Only temporaries nobody touched for STALE_TEMPORARY_AGE_S are taken for dead ones.
    newest = max(p.stat().st_mtime for p in left)
    time.sleep(max(0.0, newest + STALE_TEMPORARY_AGE_S + 0.5 - time.time()))

    result = run_night(small_night.raw, repo, _config(small_night))
    assert result.n_failed == 0 and result.n_exposures == NIGHT.n_science
    assert _temporaries(repo) == []
    _assert_same_outputs(reference, repo)


@pytest.mark.timeout(60)
def test_issue16_item9_watchdog_ends_an_orphan_where_the_kernel_would_not(tmp_path):
    """The portable fallback of `atmospec.parallel` (no PR_SET_PDEATHSIG): a process
    watching its parent ends within a watchdog period of becoming an orphan."""
    child_code = ("import os, sys, threading, time\n"
                  "from atmospec.parallel import _watch_parent\n"
                  "threading.Thread(target=_watch_parent, args=(os.getppid(),), "
                  "daemon=True).start()\n"
                  "print(os.getpid(), flush=True)\n"
                  "time.sleep(60)\n")
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time\n"
         f"subprocess.Popen([sys.executable, '-c', {child_code!r}])\n"
         "time.sleep(60)\n"], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        child = int(parent.stdout.readline())
        assert _live_in_session(parent.pid)  # both run
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
    assert _wait_for(lambda: not _live_in_session(parent.pid), 5, 0.1), \
        f"the orphan {child} outlived its parent"


# -- item 10: two nights on one repository --------------------------------------------------

@pytest.mark.timeout(180)
def test_issue16_item10_second_night_on_a_repository_exits_2_naming_the_holder(
        small_night, reference, tmp_path, capsys):
    """While a night runs, a second one on its repository exits 2 with one line naming the
    lock and the first run's pid and start, and touches nothing (not even old temporaries);
    after the first ends a rerun works and every exposure was processed once."""
    repo = tmp_path / "repo"
    lock = repo / NIGHT_LOCK_FILE
    first = subprocess.Popen([sys.executable, "-m", "atmospec",
                              *_night_args(small_night, small_night.raw, repo)],
                             start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        holder = _wait_for(lambda: lock.is_file() and lock.read_text().strip()
                           and json.loads(lock.read_text()), 60)
        assert holder and holder["pid"] == first.pid
        stale = repo / "exposures" / ".AT_O_20250301_000009_postisr.fits.dead0000.tmp"
        stale.parent.mkdir(parents=True, exist_ok=True)
        stale.write_bytes(b"half")
        os.utime(stale, (time.time() - 3600,) * 2)

        status = main(_night_args(small_night, small_night.raw, repo))
        line = _one_line(capsys.readouterr().err)
        assert first.poll() is None, "the first run ended before the second was tried"
        assert status == 2
        assert line.startswith(f"atmospec: {lock}: another atmospec night is running")
        assert f"pid {first.pid}" in line and holder["started"] in line
        assert stale.exists()
    finally:
        _, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err

    result = run_night(small_night.raw, repo, _config(small_night))
    assert (result.n_run, result.n_skipped) == (0, NIGHT.n_science)
    tasks = NightIndex(repo).tasks()
    assert len(tasks) == NIGHT.n_science
    assert {(t.status, t.attempts) for t in tasks} == {("done", 1)}
    assert not stale.exists()
    _assert_same_outputs(reference, repo)


@pytest.mark.timeout(60)
def test_issue16_item10_lock_of_a_killed_run_does_not_block(tmp_path):
    """A run killed while holding the lock leaves its lock file, which never blocks the next
    run: the kernel released the lock with the process."""
    repo = tmp_path / "repo"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from atmospec.night.lock import night_lock\n"
         f"with night_lock({str(repo)!r}):\n"
         "    print('locked', flush=True)\n"
         "    time.sleep(60)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(BadInputError) as info, night_lock(repo):
            pass
        assert f"pid {holder.pid} on " in str(info.value)
    finally:
        holder.kill()
        holder.wait()
    assert json.loads((repo / NIGHT_LOCK_FILE).read_text())["pid"] == holder.pid  # left
    with night_lock(repo) as me:
        assert me.pid == os.getpid()
        assert json.loads((repo / NIGHT_LOCK_FILE).read_text())["pid"] == os.getpid()


# -- item 11: damaged summary, read-only repository -----------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("damage", [b"\x8f\x00\xff binary", b"# %ECSV 1.0\n# ---\n# x: [\n",
                                    b"# %ECSV 1.0\n# ---\n# datatype:\n# - {name: a, "
                                    b"datatype: int64}\n# schema: astropy-2.0\na\n1\n"],
                         ids=["binary", "broken_header", "another_table"])
def test_issue16_item11_corrupt_summary_report_is_one_line_exit_2(small_night, tmp_path,
                                                                  capsys, damage):
    repo = tmp_path / "repo"
    NightIndex(repo).index_directory(small_night.raw, progress=False)
    summary = repo / "night" / "summary.ecsv"
    summary.write_bytes(damage)
    status = main(["report", str(repo), "--out", str(tmp_path / "report")])
    line = _one_line(capsys.readouterr().err)
    assert status == 2
    assert line.startswith(f"atmospec: {summary}: ")
    assert "summary" in line.split(": ", 2)[2]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("read_only", ["repository", "index"])
def test_issue16_item11_read_only_repository_is_one_line_exit_2(small_night, tmp_path,
                                                                read_only):
    """A repository (or its index) that cannot be written: one line saying so, exit 2, not
    'damaged night index'."""
    repo = tmp_path / "repo"
    raw = _linked(small_night, tmp_path / "raw", small_night.names[:1])
    NightIndex(repo).index_directory(raw, progress=False)
    _linked(small_night, tmp_path / "more", small_night.names[1:2])
    os.link(tmp_path / "more" / small_night.names[1], raw / small_night.names[1])  # new
    index_file = repo / "night" / "index.sqlite3"
    targets = [index_file] if read_only == "index" else [
        p for p in (repo, *repo.rglob("*"))]
    modes = {p: p.stat().st_mode for p in targets}
    try:
        for p in targets:
            p.chmod(stat.S_IMODE(modes[p]) & ~0o222)
        done = _run_unprivileged(["-m", "atmospec", *_night_args(small_night, raw, repo)])
    finally:
        for p, mode in modes.items():
            p.chmod(stat.S_IMODE(mode))
    line = _one_line(done.stderr)
    assert done.returncode == 2, done.stderr
    assert "not writable" in line and "damaged" not in line
    where = repo if read_only == "repository" else index_file
    assert line.startswith(f"atmospec: {where}: ")


# -- item 12: what a night directory holds besides raws -------------------------------------

@pytest.mark.timeout(60)
def test_issue16_item12_directories_fifos_and_dangling_links_are_recorded_skips(
        small_night, tmp_path):
    raw = _linked(small_night, tmp_path / "raw", small_night.names[:1])
    (raw / "folder.fits").mkdir()
    os.mkfifo(raw / "pipe.fits")
    (raw / "dangling.fits").symlink_to(tmp_path / "nowhere.fits")
    (raw / "loop.fits").symlink_to(raw / "loop.fits")
    (raw / "alias.fits").symlink_to(raw / small_night.names[0])  # the same raw: one record
    index = NightIndex(tmp_path / "repo")
    assert index.index_directory(raw, progress=False) == {"added": 1, "unchanged": 0,
                                                          "rejected": 4}
    assert _reasons(index) == {
        "folder.fits": "a directory, not a regular file",
        "pipe.fits": "a FIFO (named pipe), not a regular file",
        "dangling.fits": f"dangling symbolic link (to {tmp_path / 'nowhere.fits'})",
        "loop.fits": "unreadable: Too many levels of symbolic links"}
    assert index.index_directory(raw, progress=False) == {"added": 0, "unchanged": 5,
                                                          "rejected": 0}
    # What the night prints, the summary and the report list: every skipped file.
    from atmospec.cli.night import night_report_text

    text = night_report_text(NightResult(rejected=index.rejected()))
    for name in ("folder.fits", "pipe.fits", "dangling.fits", "loop.fits"):
        assert f"skipped {name}: " in text


@pytest.mark.timeout(60)
def test_issue16_item12_unreadable_raw_is_a_recorded_skip_until_readable(small_night,
                                                                         tmp_path):
    """A raw without read permission (as an ordinary user sees it) is a recorded skip, and
    is indexed once readable although its size and time did not change."""
    raw = tmp_path / "raw"
    raw.mkdir()
    locked = raw / small_night.names[0]
    shutil.copy2(small_night.raw / small_night.names[0], locked)
    locked.chmod(0)
    repo = tmp_path / "repo"
    NightIndex(repo)  # created here: the unprivileged run only writes into it
    done = _run_unprivileged(["-c", "from atmospec.night.index import NightIndex\n"
                              f"NightIndex({str(repo)!r}).index_directory({str(raw)!r}, "
                              "progress=False)\n"])
    assert done.returncode == 0, done.stderr
    index = NightIndex(repo)
    assert _reasons(index) == {locked.name: "unreadable: permission denied"}
    locked.chmod(0o644)
    assert index.index_directory(raw, progress=False)["added"] == 1
    assert index.rejected() == []
