"""A night killed at random moments: ``atmospec night`` on the damaged night's folder, its
whole process group sent SIGKILL after a delay drawn from a seeded RNG (anywhere in what is
left of the run: indexing, calibrations, exposures, summary), the resumed run killed in turn
once per seed, then a run to the end. After every kill: no process of the killed run is
left and every file it left is whole; at the end: no temporary file and outputs equal to the
uninterrupted run's (`night_outputs.assert_same_outputs`).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from astropy.io import fits
from astropy.table import Table
from night_outputs import assert_same_calibrations, assert_same_outputs

from atmospec.night.index import NightIndex
from reliability.damaged_night import NIGHT_OPTIONS
from reliability.harness import tmp_files

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SEEDS = (1, 2, 3)

#: Environment variable marking every process of one killed run (inherited by its workers,
#: whatever process group they end up in).
MARK = "ATMOSPEC_KILL_TEST"


def _marked_processes(token: str) -> list[int]:
    """Live (not zombie) processes whose environment holds ``MARK=token``."""
    found = []
    needle = f"{MARK}={token}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours
            continue
        if state != "Z" and needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _assert_no_orphan(token: str, grace_s: float = 10.0) -> None:
    """No process of the run survives (allowing ``grace_s`` for the kernel to reap)."""
    deadline = time.monotonic() + grace_s
    while (alive := _marked_processes(token)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive, f"orphan processes: {alive}"


def _assert_whole(repo: Path) -> None:
    """Every file the killed run left (temporaries aside) reads whole."""
    for path in repo.rglob("*"):
        if path.is_dir() or path.name.endswith(".tmp") or path.suffix not in (
                ".fits", ".json", ".ecsv"):
            continue
        if path.suffix == ".fits":
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                with fits.open(path, memmap=False) as hdul:
                    for hdu in hdul:
                        _ = hdu.data
        elif path.suffix == ".json":
            json.loads(path.read_text())
        else:
            Table.read(path, format="ascii.ecsv")


def _night(raw_dir: Path, repo: Path, env: dict[str, str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "atmospec", "night", str(raw_dir),
                             "--repo", str(repo), *NIGHT_OPTIONS], env=env,
                            start_new_session=True, **kwargs)


@pytest.mark.timeout(1800)
def test_night_killed_at_random_moments(damaged_night, tmp_path: Path) -> None:
    """SIGKILL the night's process group after a seeded random delay, resume, kill the
    resumed run too, and so on for each seed; then run it to the end: after every kill no
    orphan and nothing half-written; at the end no temporary left and the uninterrupted
    run's outcome.

    The kills are successive in one repository (each run resumes what the one before left),
    so three kill points cost about one night and a half instead of three nights, and the
    later kills land in a resumed run, the case a user meets after a crash.
    """
    reference = damaged_night
    repo = tmp_path / "repo"
    env = {**os.environ}
    delays: list[float] = []
    done_s = 0.0  # the uninterrupted run's time the killed runs have covered, roughly
    for seed in SEEDS:
        # Anywhere in what is left of the run: a resumed run skips what is done.
        left_s = max(reference.wall_s - done_s, 5.0)
        delay = random.Random(seed).uniform(1.0, 0.9 * left_s)
        delays.append(delay)
        token = f"{os.getpid()}-{seed}-{time.monotonic_ns()}"
        with open(tmp_path / f"killed-{seed}.log", "w") as out:
            proc = _night(reference.raw_dir, repo, {**env, MARK: token}, stdout=out,
                          stderr=subprocess.STDOUT)
            started = time.monotonic()
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                pass
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            done_s += time.monotonic() - started
        _assert_no_orphan(token)
        if repo.exists():
            _assert_whole(repo)

    token = f"{os.getpid()}-rerun-{time.monotonic_ns()}"
    env = {**env, MARK: token}
    with open(tmp_path / "rerun.log", "w") as out:
        rerun = _night(reference.raw_dir, repo, env, stdout=out, stderr=subprocess.STDOUT)
        status = rerun.wait(timeout=1200)
    text = (tmp_path / "rerun.log").read_text()
    # The same outcome as the uninterrupted run: status, tasks, rejected files, outputs.
    assert status == reference.status, \
        f"killed after {[round(d, 1) for d in delays]} s; re-run:\n{text[-3000:]}"
    assert "Traceback" not in text
    _assert_no_orphan(token)
    assert not tmp_files(repo), tmp_files(repo)
    assert_same_outputs(reference.repo, repo, rebuilt_calibrations=True)
    assert_same_calibrations(reference.repo, repo)
    index, ref = NightIndex(repo), NightIndex(reference.repo)
    assert {(t.obs_id, t.task): t.status for t in index.tasks()} == \
        {(t.obs_id, t.task): t.status for t in ref.tasks()}
    assert {p.name for p, _ in index.rejected()} == {p.name for p, _ in ref.rejected()}
