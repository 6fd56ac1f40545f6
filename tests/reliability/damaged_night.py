"""The small damaged night shared by the night cases (test_damaged_raws.py) and the kill
test (test_kill.py): a simulated night, damaged files mixed in, reduced once through
``atmospec night`` in a subprocess (`build_damaged_night`)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reliability import damage
from reliability.harness import Snapshot, tree_snapshot

#: The small night: 3 biases, 2 flats, 2 imaging frames, no dark (not required), RICE-compressed
#: raws as LATISS writes them.
NIGHT = dict(day_obs=20250402, seed=11, n_bias=3, n_dark=0, n_flat=2,
             flat_filters=("SDSSr_65mm",), n_science=2, n_dispersed=0, n_corrupt=0)

#: The night command of the damaged night and of the kill test.
NIGHT_OPTIONS = ("--workers", "2", "--no-plots")


def _renumbered(source: Path, dest: Path, seq: int, obs_id: str | None = None) -> Path:
    """A copy of a raw as another exposure (OBSID, SEQNUM), its primary checksum cards
    dropped (they would no longer match): the damage applied next is then its only fault."""
    path = damage.copy_file(source, dest)
    day_obs = NIGHT["day_obs"]
    damage.set_card(path, 0, "OBSID", damage.quoted(obs_id or f"AT_O_{day_obs}_{seq:06d}"))
    damage.set_card(path, 0, "SEQNUM", str(seq))
    for key in ("CHECKSUM", "DATASUM"):
        damage.blank_card(path, 0, key)
    return path


def _foreign(path: Path) -> Path:
    from astropy.io import fits

    hdu = fits.PrimaryHDU(np.zeros((8, 8), dtype=np.int16))
    hdu.header["INSTRUME"] = "ComCam"
    hdu.header["OBSID"] = "CC_O_20250402_000001"
    hdu.writeto(path)
    return path


def night_damage() -> dict[str, Callable[[Path, Path, str], object]]:
    """The damaged files mixed into the night: name -> build(science raw, night folder).
    Each copy of a science raw is renumbered first (`_renumbered`), so that its damage, not
    a duplicate OBSID, is what must get it rejected."""
    def renumbered(seq: int, *steps: Callable[[Path], object], obs_id: str | None = None):
        def build(src: Path, folder: Path, name: str) -> None:
            path = _renumbered(src, folder / name, seq, obs_id)
            for step in steps:
                step(path)
        return build

    def duplicate_pair(seq: int):
        def build(src: Path, folder: Path, name: str) -> None:
            first = _renumbered(src, folder / f"AT_O_{NIGHT['day_obs']}_{seq:06d}.fits", seq)
            damage.copy_file(first, folder / name)
        return build

    def half(p: Path) -> None:
        damage.truncate(p, p.stat().st_size // 2)

    def flip(hdu: str, key: str, column: int, bit: int) -> Callable[[Path], object]:
        return lambda p: damage.flip_card_bit(p, hdu, key, column, bit)

    def gz_of_cut(src: Path, folder: Path, name: str) -> None:
        plain = _renumbered(src, folder / "plain.tmpfile", 912)
        half(plain)
        damage.gzip_copy(plain, folder / name)
        plain.unlink()

    return {
        "AT_O_20250402_000901.fits": renumbered(901, half),
        "AT_O_20250402_000902.fits": renumbered(
            902, lambda p: damage.truncate(p, damage.hdu_spans(p)[3].header + 500)),
        "AT_O_20250402_000903.fits": lambda s, f, n: (f / n).write_bytes(b""),
        "notes.fits": lambda s, f, n: (f / n).write_text("observing notes, not FITS\n"),
        "CC_O_20250402_000001.fits": lambda s, f, n: _foreign(f / n),
        "AT_O_20250402_000906.fits": renumbered(
            906, lambda p: damage.drop_hdu(p, "SEGMENT03")),
        "AT_O_20250402_000907.fits": renumbered(
            907, lambda p: damage.duplicate_hdu(p, "SEGMENT10")),
        "AT_O_20250402_000908.fits": renumbered(908, flip("SEGMENT10", "ZBITPIX", 29, 2)),
        "AT_O_20250402_000909.fits": renumbered(909, flip("SEGMENT05", "ZNAXIS1", 29, 0)),
        "AT_O_20250402_000910.fits": renumbered(910, flip(0, "INSTRUME", 11, 0)),
        "AT_O_20250402_000911.fits": renumbered(
            911, lambda p: damage.set_card(p, 0, "EXPTIME", "-30.0")),
        "AT_O_20250402_000912.fits.gz": gz_of_cut,
        "AT_O_20250402_000913.fits": renumbered(913, obs_id="../../etc/passwd"),
        # Two files with one OBSID (not one of the good exposures: whether the first is
        # used or both are set aside is the index's policy); the later one is refused.
        "AT_O_20250402_000940_copy.fits": duplicate_pair(940),
        "dir.fits": lambda s, f, n: damage.directory(f / n),
        "pipe.fits": lambda s, f, n: damage.fifo(f / n),
        "dangling.fits": lambda s, f, n: damage.dangling_symlink(f / n, f / "gone.fits"),
    }


#: A valid exposure under a non-ASCII file name (a renumbered copy): it must be reduced.
RENAMED = ("nuit_été_観測.fits", 920)
#: A valid exposure indexed, then deleted before the night runs again (`vanish`).
VANISHED = ("AT_O_20250402_000930.fits", 930)


@dataclass(frozen=True)
class DamagedNight:
    """The damaged night, run once through ``atmospec night`` in a subprocess."""

    root: Path
    """Folder holding ``raw/`` and ``repo/`` (and nothing else the night may touch)."""
    raw_dir: Path
    repo: Path
    status: int
    stdout: str
    stderr: str
    wall_s: float
    """Wall time of the run, s (the kill test draws its moments in it)."""
    good: tuple[str, ...]
    """OBSIDs of the exposures that must be done."""
    damaged: tuple[str, ...]
    """File names that must be rejected."""
    before: Snapshot
    """The tree outside ``repo/`` before the run."""


def build_damaged_night(root: Path) -> DamagedNight:
    """A small simulated night with a dozen and a half damaged files and a valid exposure
    under a non-ASCII name, reduced once, in ``root``."""
    from atmospec.sim.night import NightConfig, simulate_night

    raw_dir, repo = root / "raw", root / "repo"
    raws = simulate_night(raw_dir, NightConfig(**NIGHT))
    for truth in raw_dir.glob("*_truth.json"):
        truth.unlink()
    science = [p for p in raws if "_O_" in p.name][-NIGHT["n_science"]:]
    good = [p.stem for p in science]
    for name, build in night_damage().items():
        build(science[0], raw_dir, name)
    _renumbered(science[0], raw_dir / RENAMED[0], RENAMED[1])
    good.append(f"AT_O_{NIGHT['day_obs']}_{RENAMED[1]:06d}")
    before = tree_snapshot(root, [repo])
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "atmospec", "night", str(raw_dir), "--repo",
                          str(repo), *NIGHT_OPTIONS], capture_output=True, text=True,
                         timeout=900, check=False, cwd=root)
    return DamagedNight(root, raw_dir, repo, run.returncode, run.stdout, run.stderr,
                        time.perf_counter() - t0, tuple(good), tuple(night_damage()),
                        before)


def vanish(night: DamagedNight, repo: Path) -> Path:
    """Index one more valid exposure (a renumbered copy, `VANISHED`) of ``night``'s folder
    into ``repo``, then delete its file: the index knows a raw that is gone."""
    from atmospec.night.index import NightIndex

    source = night.raw_dir / f"{night.good[0]}.fits"
    path = _renumbered(source, night.raw_dir / VANISHED[0], VANISHED[1])
    try:
        NightIndex(repo).index_directory(night.raw_dir, progress=False)
    finally:
        path.unlink()
    return path


def link_copy(repo: Path, dest: Path) -> Path:
    """A copy of a repository whose files are hard links (outputs are replaced by rename,
    never rewritten in place), its SQLite databases real copies."""
    import os
    import shutil

    def copy(src: str, dst: str) -> None:
        if ".sqlite3" in Path(src).name:
            shutil.copy2(src, dst)
        else:
            os.link(src, dst)

    shutil.copytree(repo, dest, copy_function=copy)
    return dest
