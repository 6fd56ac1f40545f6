"""Shared fixtures: small valid raw files built from the real LATISS header template, and one
small simulated night reduced once (``night_raw_dir``, ``night_reference``) for the night-runner
and report tests."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from threadpoolctl import threadpool_limits

from atmospec.cli import main
from atmospec.memory import keep_freed_memory
from atmospec.parallel import WORKER_ENVIRONMENT
from atmospec.sim.night import NightConfig, simulate_night

DATA = Path(__file__).parent / "data"

# The tests run the pipeline in this process too (the CLI does the same at its start).
keep_freed_memory()
# One thread per numerical library, in this process and in the commands the tests start, as
# in the night's workers: `make test` runs one pytest worker per core, and a second BLAS or
# OpenMP thread per worker only spins waiting for a core (tests/test_forward_model.py on a
# loaded 2-core machine: 13.4 s of CPU on one OpenBLAS thread, 34.8 s on two).
os.environ.update(WORKER_ENVIRONMENT)
threadpool_limits(limits=1)  # the libraries this process has loaded already


def make_template_raw(path: Path, *, seed: int = 0, level: float = 20000.0,
                      dtype: type = np.int32) -> Path:
    """Write a raw LATISS file: the real 2018 header structure, bias level plus noise."""
    rng = np.random.default_rng(seed)
    template = resources.files("atmospec.data") / "latiss_raw_template.fits.gz"
    with fits.open(str(template)) as hdul:
        out = fits.HDUList([fits.PrimaryHDU(header=hdul[0].header)])
        for hdu in hdul[1:17]:
            data = (level + rng.normal(0, 8, hdu.data.shape)).astype(dtype)
            out.append(fits.ImageHDU(data, header=hdu.header, name=hdu.name))
    out.writeto(path, overwrite=True)
    return path


@pytest.fixture(scope="session")
def template_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid (if boring) raw LATISS frame."""
    return make_template_raw(tmp_path_factory.mktemp("raw") / "AT_C_20180920_000065.fits")


#: The small night shared by the night-runner and report tests: 3 biases, 3 darks, 3 flats in
#: each of two filters, 2 imaging frames, 1 dispersed exposure, 3 damaged files.
NIGHT = NightConfig(day_obs=20250301, seed=5, n_bias=3, n_dark=3, n_flat=3,
                    flat_filters=("SDSSr_65mm", "empty_1"), n_science=2, n_dispersed=1,
                    dispersed_every=1, n_corrupt=3)


@pytest.fixture(scope="session")
def night_raw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The raw files of `NIGHT`."""
    out = tmp_path_factory.mktemp("night") / "raw"
    simulate_night(out, NIGHT)
    return out


@pytest.fixture(scope="session")
def night_reference(night_raw_dir: Path, tmp_path_factory: pytest.TempPathFactory
                    ) -> tuple[Path, int]:
    """The uninterrupted local run (2 workers) of `NIGHT` through the CLI: (repo, status)."""
    repo = tmp_path_factory.mktemp("ref") / "repo"
    status = main(["night", str(night_raw_dir), "--repo", str(repo), "--workers", "2"])
    return repo, status


@pytest.hookimpl(tryfirst=True)  # before xdist's worker hook turns the marks into nodeids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test`` runs ``-n auto --dist loadgroup``), send whole
    modules to a worker so each module fixture is built once, and keep every test of the
    shared night on one worker, sent first (the session fixtures are per worker, and the
    night's group is the longest unit: started last it would end the run alone)."""
    night: list[pytest.Item] = []
    rest: list[pytest.Item] = []
    for item in items:
        if {"night_reference", "night_raw_dir"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("night"))
            night.append(item)
        elif item.get_closest_marker("xdist_group") is not None:
            rest.append(item)  # a group of its own choosing (tests/test_docs.py: one per guide)
        else:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.partition("::")[0]))
            rest.append(item)
    rest.sort(key=_heaviness_rank)  # stable: the others keep their order
    items[:] = night + rest


#: Tests of the longest groups after the night's (measured, --durations), longest first:
#: with xdist's reordering off (`pytest_configure`) groups are handed out in the order of
#: their first test, so these start at once rather than end the run alone on one worker.
LONGEST_FIRST = (
    "tests/test_docs.py::test_guide_runs[docs/gen3.md]",
    "tests/reliability/test_damaged_raws.py",  # the damaged night, and the kill tests on it
    "tests/reliability/test_kill.py",
    "tests/test_docs.py::test_guide_runs[README.md",
    "tests/test_docs.py::test_guide_runs[docs/calibrations.md]",
    "tests/test_calib_ptc.py",
    "tests/test_calib_masters.py",
    "tests/test_eo_run.py",
    "tests/test_sim_lsstcam.py",
    "tests/test_atmosphere_chain.py",
    "tests/test_docs.py::test_guide_runs[docs/lsstcam.md]",
)


def _heaviness_rank(item: pytest.Item) -> int:
    return next((i for i, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)),
                len(LONGEST_FIRST))


def pytest_configure(config: pytest.Config) -> None:
    """Keep our order of xdist's groups: by default (``--loadscope-reorder``) xdist hands out
    the groups with the most tests first, which sends every one-test group (each guide of
    tests/test_docs.py, the longest items of the suite) last, to end the run one at a time."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False
