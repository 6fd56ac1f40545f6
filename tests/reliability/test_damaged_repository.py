"""Damaged repository files and products: the calibration registry
(``REPO/calib/registry.sqlite3``), the night index (``REPO/night/index.sqlite3``), the
night summary (``REPO/night/summary.ecsv``), a registered product, the products given to
``atmospec isr`` on the command line, a post-ISR image given to ``atmospec detect``, the
pipeline file and bad option values of ``atmospec night``.

Each case copies one small valid repository (a registry holding a certified PTC, the index
and summary of a night, built once per session), damages one file and runs every command
that reads it, asserting the contract: exit status 2, one stderr line naming the damaged
file, no traceback, nothing written outside the command's output folder, the damaged file
left as it was.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from atmospec.cli import main
from reliability import damage

pytestmark = pytest.mark.reliability

FAST = ("--steps", "overscan,gain,assemble")
TIMEOUT = 30

REGISTRY = Path("calib") / "registry.sqlite3"
INDEX = Path("night") / "index.sqlite3"
SUMMARY = Path("night") / "summary.ecsv"


def _ptc_table(n_amps: int = 16, gain: float = 1.07) -> Table:
    """A PTC table for LATISS (the columns ISR reads), one row per amp."""
    from atmospec.camera.description import load_camera

    names = list(load_camera("latiss").amp_names)[:n_amps]
    table = Table({"AMP": names, "GAIN": np.full(len(names), gain),
                   "READ_NOISE": np.full(len(names), 8.5)})
    table.meta.update({"OBSTYPE": "ptc", "INSTRUME": "LATISS",
                       "CALIBDATE": "2018-01-01T00:00:00"})
    return table


def write_ptc(path: Path, table: Table | None = None) -> Path:
    """A PTC product written as the pipeline writes one (`Ptc.write`)."""
    from atmospec.calib.products.ptc import Ptc

    return Ptc(table if table is not None else _ptc_table()).write(path)


@pytest.fixture(scope="session")
def valid_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small valid repository: a registry holding a certified PTC valid from 2018 (the
    template raw's date), and the index and summary of a night run on an empty folder."""
    from atmospec.calib.registry import CalibrationRegistry

    root = tmp_path_factory.mktemp("valid_repo")
    repo = root / "repo"
    ptc = write_ptc(root / "ptc.fits")
    CalibrationRegistry(repo, create=True).register(ptc, certify=True)
    empty = root / "empty"
    empty.mkdir()
    assert main(["night", str(empty), "--repo", str(repo), "--no-plots"]) == 0
    assert (repo / SUMMARY).is_file() and (repo / INDEX).is_file()
    return repo


def registered_ptc(repo: Path) -> Path:
    """The PTC file stored in the repository."""
    (path,) = (repo / "calib" / "ptc").glob("*.fits")
    return path


# -- damage to a file of the repository ------------------------------------------------------

Damage = Callable[[Path], None]
"""Damages one file (given its path) in place, or replaces it."""


def _garbage(path: Path) -> None:
    path.unlink()
    path.write_text("this is not a database\n" * 20)


def _half(path: Path) -> None:
    damage.truncate(path, path.stat().st_size // 2)


def _zero_page(page: int, path: Path) -> None:
    with open(path, "r+b") as f:
        f.seek(page * 4096)
        f.write(b"\0" * 4096)


def _scribble_page(page: int, path: Path) -> None:
    rng = np.random.default_rng(page)
    with open(path, "r+b") as f:
        f.seek(page * 4096)
        f.write(rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())


def _replace_with(make: Callable[[Path], object], path: Path) -> None:
    path.unlink()
    make(path)


def _foreign_sqlite(path: Path) -> None:
    path.unlink()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE foo (x INTEGER)")
        conn.execute("INSERT INTO foo VALUES (1)")
    conn.close()


def _sql(statement: str, path: Path) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(statement)
    conn.close()


def _dangling(path: Path) -> None:
    """A symbolic link to a file that does not exist, outside the repository."""
    path.unlink()
    target = path.parents[2] / "elsewhere" / path.name
    damage.dangling_symlink(path, target)


#: Damage common to both SQLite databases.
_SQLITE_DAMAGE: dict[str, Damage] = {
    "garbage": _garbage,
    "truncated-half": _half,
    "truncated-100-bytes": partial(damage.truncate, offset=100),
    "header-magic-flipped": partial(damage.flip_bit, byte_offset=0, bit=0),
    "page-size-flipped": partial(damage.flip_bit, byte_offset=16, bit=3),
    "page2-zeroed": partial(_zero_page, 1),
    "page2-scribbled": partial(_scribble_page, 1),
    "foreign-database": _foreign_sqlite,
    "directory": partial(_replace_with, damage.directory),
    "fifo": partial(_replace_with, damage.fifo),
    "dangling-symlink": _dangling,
}

_REGISTRY_DAMAGE: dict[str, Damage] = {
    **_SQLITE_DAMAGE,
    # Emptied: the products stored beside it are still there, their index is lost.
    "empty": lambda p: damage.truncate(p, 0),
    "future-schema": partial(_sql, "INSERT INTO schema_version VALUES (999, '2030-01-01')"),
    "garbage-validity": partial(_sql, "UPDATE products SET valid_from = 'not a date'"),
    "absurd-kind": partial(_sql, "UPDATE products SET kind = '../../etc'"),
    "product-path-escapes": partial(_sql, "UPDATE products SET path = '../../../etc/passwd'"),
}

_INDEX_DAMAGE: dict[str, Damage] = {
    **_SQLITE_DAMAGE,
    # The row's raw exists (the index file itself): only its JSON record is damaged.
    "raw-row-with-garbage-json": lambda p: _sql(
        f"INSERT INTO raws VALUES ('{p}', 1, 1.0, 'AT_O_20250101_000001', 'LATISS', "
        "20250101, 1, 'science', 'x', 'f', 'f', 'empty', 0, 1.0, 1.0, 60000.0, "
        "'2025-01-02T00:00:00', '{not json')", p),
    "task-row-with-garbage-json": partial(
        _sql, "INSERT INTO tasks VALUES ('AT_O_20250101_000001', 'isr', 'done', NULL, 'h', "
              "'2025-01-02T00:00:00', 1.0, 1, '{broken', '[]')"),
}


def _edit_text(edit: Callable[[str], str], path: Path) -> None:
    path.write_text(edit(path.read_text()))


def _flip_in_text(needle: str, path: Path) -> None:
    """Flip bit 0 of the first character of ``needle`` in the file."""
    offset = path.read_bytes().index(needle.encode())
    damage.flip_bit(path, offset, 0)


_SUMMARY_DAMAGE: dict[str, Damage] = {
    "garbage": _garbage,
    "empty": lambda p: damage.truncate(p, 0),
    "truncated-in-header": lambda p: damage.truncate(p, 300),
    "ecsv-magic-flipped": partial(_flip_in_text, "ECSV"),
    "yaml-broken": partial(_edit_text, lambda t: t.replace("# ---", "# --- : [", 1)),
    "unknown-datatype": partial(_edit_text, lambda t: t.replace("datatype: int64",
                                                                "datatype: int999", 1)),
    "row-too-short": partial(_edit_text, lambda t: t + "AT_O_20250101_000002 1 2\n"),
    "row-wrong-type": partial(_edit_text, lambda t: t + " ".join(
        ["AT_O_20250101_000003", "notanint"] + ["1"] * 34) + "\n"),
    "non-utf8": lambda p: p.write_bytes(p.read_bytes() + b"\xff\xfe\xfa garbage\n"),
    "directory": partial(_replace_with, damage.directory),
    "fifo": partial(_replace_with, damage.fifo),
}

_PRODUCT_DAMAGE: dict[str, Damage] = {
    "missing": lambda p: p.unlink(),
    "truncated-half": _half,
    "truncated-in-header": partial(damage.truncate, offset=1000),
    "empty": lambda p: damage.truncate(p, 0),
    "data-bit-flipped": lambda p: damage.flip_bit(p, damage.hdu_spans(p)[1].data + 20, 2),
    "replaced-by-another-ptc": lambda p: write_ptc(p, _ptc_table(gain=1.5)),
    "directory": partial(_replace_with, damage.directory),
}


# -- the commands reading each file ------------------------------------------------------------

@dataclass(frozen=True)
class Command:
    """A command reading the repository, and the folder it may write to."""

    name: str
    argv: Callable[[Path, Path, Path, Path], list[str | Path]]
    """(repo, raw, empty raw folder, output folder) -> arguments."""
    writes_repo: bool = False
    """The command's output folder is the repository itself (``night``)."""


COMMANDS = {
    "isr": Command("isr", lambda repo, raw, empty, out: ["isr", raw, "--out", out, *FAST,
                                                         "--calibs", repo]),
    "calib-list": Command("calib-list", lambda repo, raw, empty, out: ["calib", "list",
                                                                       "--repo", repo]),
    "calib-register": Command(
        "calib-register",
        lambda repo, raw, empty, out: ["calib", "register", empty.parent / "new_ptc.fits",
                                       "--repo", repo]),
    "night": Command("night", lambda repo, raw, empty, out: ["night", empty, "--repo", repo,
                                                             "--no-plots"], writes_repo=True),
    "report": Command("report", lambda repo, raw, empty, out: ["report", repo, "--out", out,
                                                               "--workers", "1"]),
}

#: (target file, damages, commands reading it).
_TARGETS = [
    (REGISTRY, _REGISTRY_DAMAGE, ("isr", "calib-list", "calib-register", "night")),
    (INDEX, _INDEX_DAMAGE, ("night", "report")),
    (SUMMARY, _SUMMARY_DAMAGE, ("report",)),
]

def _repo_cases() -> list:
    cases = []
    for target, damages, commands in _TARGETS:
        for name, harm in damages.items():
            for command in commands:
                if target == REGISTRY and name in ("garbage-validity", "absurd-kind",
                                                   "product-path-escapes") \
                        and command != "isr":
                    continue  # only selecting a product reads those fields
                cases.append(pytest.param(target, name, harm, COMMANDS[command],
                                          id=f"{target.stem}-{name}-{command}"))
    return cases


def _prepare(case, valid_repo: Path, template_raw: Path) -> tuple[Path, Path, Path]:
    """The case's copy of the repository, a raw (linked: read only), an empty night
    folder and a PTC ready to register."""
    repo = case.inputs / "repo"
    shutil.copytree(valid_repo, repo, symlinks=True)
    raw = case.inputs / "raw.fits"
    raw.hardlink_to(template_raw)
    empty = case.inputs / "night"
    empty.mkdir()
    write_ptc(case.inputs / "new_ptc.fits", _ptc_table(gain=1.08))
    return repo, raw, empty


def _fingerprint(path: Path) -> str:
    """What a path is now: its content's hash, or its kind."""
    if path.is_symlink():
        return f"link -> {path.readlink()}"
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return "dir" if path.is_dir() else "special" if path.exists() else "absent"


def _run_refused(case, command: Command, repo: Path, raw: Path, empty: Path,
                 damaged: Path, names: list) -> None:
    """Run ``command`` on the damaged repository; assert the contract, and that the damaged
    file is left as it was (neither repaired nor replaced)."""
    before = _fingerprint(damaged)
    output = repo if command.writes_repo else case.out
    run = case.run(*command.argv(repo, raw, empty, case.out), output=output)
    if command.writes_repo:
        assert run.status == 2, run.describe()
        assert len(run.stderr_lines) == 1, run.describe()
        assert all(any(n in run.stderr_lines[0] for n in (x if isinstance(x, tuple) else (x,)))
                   for x in names), run.describe()
        assert "Traceback" not in run.stderr + run.stdout
        case.assert_clean(run, output)
    else:
        case.assert_refused(run, names, output=output)
    assert _fingerprint(damaged) == before, f"{damaged.name} was changed"


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize(("target", "name", "harm", "command"), _repo_cases())
def test_damaged_repository_file(target: Path, name: str, harm: Damage, command: Command, case,
                                 valid_repo, template_raw) -> None:
    """One damaged database or summary, read by one command: refused in one line naming
    the file."""
    repo, raw, empty = _prepare(case, valid_repo, template_raw)
    damaged = repo / target
    harm(damaged)
    # A product path leaving the repository may be reported as the registry's fault or
    # the product's.
    names = [(target.name, "passwd")] if "escapes" in name else [target.name]
    _run_refused(case, command, repo, raw, empty, damaged, names)


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("harm", [pytest.param(h, id=n) for n, h in _PRODUCT_DAMAGE.items()])
def test_damaged_registered_product(harm: Damage, case, valid_repo, template_raw) -> None:
    """The registered PTC damaged, vanished or replaced behind the registry's back: the
    exposure that selects it is refused, naming the product file."""
    repo, raw, empty = _prepare(case, valid_repo, template_raw)
    product = registered_ptc(repo)
    harm(product)
    _run_refused(case, COMMANDS["isr"], repo, raw, empty, product, [product.name])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", ["isr", "calib-list", "report"])
def test_valid_repository_is_accepted(command: str, case, valid_repo, template_raw) -> None:
    """Control: the undamaged repository is read by the same commands without complaint."""
    repo, raw, empty = _prepare(case, valid_repo, template_raw)
    cmd = COMMANDS[command]
    run = case.run(*cmd.argv(repo, raw, empty, case.out))
    assert run.status == 0, run.describe()
    assert "Traceback" not in run.stderr
    case.assert_clean(run)


# -- products given on the command line ------------------------------------------------------

def _ptc_variant(edit: Callable[[Table], Table]) -> Callable[[Path], Path]:
    """A PTC file written from an edited table (bypassing `Ptc`'s checks)."""

    def build(path: Path) -> Path:
        table = edit(_ptc_table())
        fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(table)]).writeto(path)
        return path

    return build


def _set_column(name: str, values) -> Callable[[Table], Table]:
    def edit(table: Table) -> Table:
        table.replace_column(name, values)
        return table

    return edit


def _text_file(text: str) -> Callable[[Path], Path]:
    def build(path: Path) -> Path:
        path.write_text(text)
        return path

    return build


def _ptc_then(harm: Damage) -> Callable[[Path], Path]:
    def build(path: Path) -> Path:
        write_ptc(path)
        harm(path)
        return path

    return build


def _defects(text_edit: Callable[[str], str]) -> Callable[[Path], Path]:
    """The shipped LATISS defects list, its ECSV text edited."""

    from atmospec.camera.description import load_camera, shipped_product

    def build(path: Path) -> Path:
        text = shipped_product(load_camera("latiss"), "defects").read_text()
        path.write_text(text_edit(text))
        return path

    return build


def _crosstalk(n: int) -> Callable[[Path], Path]:
    def build(path: Path) -> Path:
        from atmospec.calib.products.crosstalk import Crosstalk

        table = Table({"CT_COEFFS": [np.zeros(n * n)]})
        table.meta["OBSTYPE"] = "crosstalk"
        Crosstalk(table).write(path)
        return path

    return build


#: (id, option, steps, file name, builder).
_PRODUCTS = [
    ("ptc-truncated-half", "--ptc", FAST, "ptc.fits", _ptc_then(_half)),
    ("ptc-truncated-in-header", "--ptc", FAST, "ptc.fits",
     _ptc_then(partial(damage.truncate, offset=3000))),
    ("ptc-NAXIS2-flipped", "--ptc", FAST, "ptc.fits",
     _ptc_then(lambda p: damage.flip_card_bit(p, "PTC", "NAXIS2", 29, 0))),
    ("ptc-data-bit-flipped", "--ptc", FAST, "ptc.fits",
     _ptc_then(lambda p: damage.flip_bit(p, damage.hdu_spans(p)[1].data + 5, 1))),
    ("ptc-empty", "--ptc", FAST, "ptc.fits", _text_file("")),
    ("ptc-not-fits", "--ptc", FAST, "ptc.fits", _text_file("AMP GAIN\nC10 1.0\n")),
    ("ptc-no-GAIN", "--ptc", FAST, "ptc.fits",
     _ptc_variant(lambda t: t[[c for c in t.colnames if c != "GAIN"]])),
    ("ptc-NaN-gain", "--ptc", FAST, "ptc.fits",
     _ptc_variant(_set_column("GAIN", np.full(16, np.nan)))),
    ("ptc-negative-gain", "--ptc", FAST, "ptc.fits",
     _ptc_variant(_set_column("GAIN", np.full(16, -1.07)))),
    ("ptc-zero-read-noise-and-absurd-gain", "--ptc", FAST, "ptc.fits",
     _ptc_variant(_set_column("GAIN", np.full(16, 1e30)))),
    ("ptc-string-gain", "--ptc", FAST, "ptc.fits",
     _ptc_variant(_set_column("GAIN", ["abc"] * 16))),
    ("ptc-15-amps", "--ptc", FAST, "ptc.fits", _ptc_variant(lambda t: t[:15])),
    ("ptc-duplicate-amp", "--ptc", FAST, "ptc.fits",
     _ptc_variant(_set_column("AMP", ["C10"] * 2 + list(_ptc_table()["AMP"][2:])))),
    ("ptc-directory", "--ptc", FAST, "ptc.fits", damage.directory),
    ("ptc-fifo", "--ptc", FAST, "ptc.fits", damage.fifo),
    ("defects-garbage", "--defects", ("--steps", "overscan,gain,assemble,defects"),
     "defects.ecsv", _text_file("# %ECSV 1.0\n# ---\n# [[[\n")),
    ("defects-truncated", "--defects", ("--steps", "overscan,gain,assemble,defects"),
     "defects.ecsv", _defects(lambda t: t[: len(t) // 3])),
    ("defects-string-in-x0", "--defects", ("--steps", "overscan,gain,assemble,defects"),
     "defects.ecsv", _defects(lambda t: t.rstrip("\n") + "\nabc 1 1 1\n")),
    ("crosstalk-15x15", "--crosstalk", ("--steps", "overscan,crosstalk,gain,assemble"),
     "crosstalk.ecsv", _crosstalk(15)),
    ("crosstalk-garbage", "--crosstalk", ("--steps", "overscan,crosstalk,gain,assemble"),
     "crosstalk.ecsv", _text_file("\x00\x01 not a table")),
]


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize(("option", "steps", "name", "build"),
                         [pytest.param(o, s, n, b, id=i) for i, o, s, n, b in _PRODUCTS])
def test_damaged_product_option(option, steps, name, build, case, template_raw) -> None:
    """A damaged product given to ``atmospec isr``: refused in one line naming it, the raw
    not reduced."""
    product = build(case.inputs / name)
    raw = case.inputs / "raw.fits"
    raw.hardlink_to(template_raw)
    run = case.run("isr", raw, "--out", case.out, *steps, option, product)
    case.assert_refused(run, [name])


@pytest.fixture(scope="session")
def master_bias(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full-size master bias (zeros, in electrons) as the pipeline writes one."""
    from atmospec.calib.products.images import Bias
    from atmospec.exposure import Exposure

    header = fits.Header({"OBSTYPE": "bias", "INSTRUME": "LATISS",
                          "CALIBDATE": "2018-01-01T00:00:00"})
    exposure = Exposure.from_image(np.zeros((4000, 4072), np.float32), header)
    path = tmp_path_factory.mktemp("bias") / "bias.fits"
    return Bias(exposure).write(path)


_BIAS_DAMAGE: dict[str, Damage] = {
    "truncated-half": _half,
    "IMAGE-NAXIS1-flipped": lambda p: damage.flip_card_bit(p, "IMAGE", "NAXIS1", 29, 0),
    "data-bit-flipped": lambda p: damage.flip_bit(p, damage.hdu_spans(p)[1].data + 4 * 4072 *
                                                  2000 + 2, 6),
    "IMAGE-missing": partial(damage.drop_hdu, hdu="IMAGE"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("harm", [pytest.param(h, id=n) for n, h in _BIAS_DAMAGE.items()])
def test_damaged_master_bias(harm: Damage, case, template_raw, master_bias) -> None:
    """A damaged full-size master bias given with ``--bias``: refused, naming it."""
    bias = damage.copy_file(master_bias, case.inputs / "bias.fits")
    harm(bias)
    raw = case.inputs / "raw.fits"
    raw.hardlink_to(template_raw)
    run = case.run("isr", raw, "--out", case.out, "--steps",
                   "overscan,gain,assemble,bias", "--bias", bias)
    case.assert_refused(run, ["bias.fits"])


@pytest.fixture(scope="session")
def postisr(template_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template's post-ISR image (the fast path)."""
    out = tmp_path_factory.mktemp("postisr")
    assert main(["isr", str(template_raw), "--out", str(out), *FAST]) == 0
    (path,) = out.glob("*_postisr.fits")
    return path


_POSTISR_DAMAGE: dict[str, Damage] = {
    "truncated-half": _half,
    "MASK-missing": partial(damage.drop_hdu, hdu="MASK"),
    "IMAGE-NAXIS2-flipped": lambda p: damage.flip_card_bit(p, "IMAGE", "NAXIS2", 29, 0),
    "data-bit-flipped": lambda p: damage.flip_bit(p, damage.hdu_spans(p)[1].data + 1000, 6),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("harm", [pytest.param(h, id=n) for n, h in _POSTISR_DAMAGE.items()])
def test_damaged_postisr_to_detect(harm: Damage, case, postisr) -> None:
    """A damaged post-ISR image given to ``atmospec detect``: refused, naming it."""
    image = damage.copy_file(postisr, case.inputs / "image_postisr.fits")
    harm(image)
    run = case.run("detect", image, "--out", case.out / "cat.ecsv")
    case.assert_refused(run, ["image_postisr.fits"])


# -- the pipeline file and bad option values of a night ------------------------------------------

_PIPELINES = {
    "garbage": "\x00\x01\x02 not yaml: [",
    "empty": "",
    "a-list": "- isr\n- characterize\n",
    "unknown-task-option": "tasks:\n  isr:\n    applies_to: [imaging]\n    config:\n"
                           "      overscan: {method: nosuchmethod}\n",
    "wrong-type": "calibrations:\n  min_frames: {bias: many}\n",
    "input-runs-later": "tasks:\n  characterize:\n    applies_to: [imaging]\n"
                        "    inputs: [isr]\n  isr:\n    applies_to: [imaging]\n",
}


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("text", [pytest.param(t, id=n) for n, t in _PIPELINES.items()])
def test_damaged_pipeline_file(text: str, case) -> None:
    """A bad ``--pipeline`` file: refused before anything runs, naming the file."""
    pipeline = case.inputs / "pipeline.yaml"
    pipeline.write_text(text)
    raw = case.inputs / "night"
    raw.mkdir()
    repo = case.root / "work" / "repo"
    run = case.run("night", raw, "--repo", repo, "--pipeline", pipeline, "--no-plots",
                   output=repo)
    case.assert_refused(run, ["pipeline.yaml"], output=repo)


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize(("args", "needle"), [
    pytest.param(["--workers", "0"], "--workers", id="workers-zero"),
    pytest.param(["--workers", "-3"], "--workers", id="workers-negative"),
    pytest.param(["--workers", "two"], "two", id="workers-not-a-number"),
    pytest.param(["--executor", "threads"], "threads", id="executor-unknown"),
    pytest.param(["--pipeline", "PIPE_DIR"], "pipe_dir", id="pipeline-is-a-directory"),
    pytest.param(["--pipeline", "MISSING"], "missing.yaml", id="pipeline-missing"),
])
def test_bad_night_option(args: list[str], needle: str, case) -> None:
    """A bad option value of ``atmospec night``: status 2, one line, nothing run."""
    raw = case.inputs / "night"
    raw.mkdir()
    (case.inputs / "pipe_dir").mkdir()
    args = [str(case.inputs / "pipe_dir") if a == "PIPE_DIR" else
            str(case.inputs / "missing.yaml") if a == "MISSING" else a for a in args]
    repo = case.root / "work" / "repo"
    run = case.run("night", raw, "--repo", repo, "--no-plots", *args, output=repo)
    case.assert_refused(run, [needle], output=repo)


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("kind", ["file", "fifo", "dangling-symlink"])
def test_night_rawdir_not_a_folder(kind: str, case) -> None:
    """The night's raw folder is a file, a FIFO or a dangling link: refused, naming it."""
    raw = case.inputs / "rawdir"
    if kind == "file":
        raw.write_text("x")
    elif kind == "fifo":
        damage.fifo(raw)
    else:
        damage.dangling_symlink(raw, case.inputs / "gone")
    repo = case.root / "work" / "repo"
    run = case.run("night", raw, "--repo", repo, "--no-plots", output=repo)
    case.assert_refused(run, ["rawdir"], output=repo)
