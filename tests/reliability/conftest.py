"""Fixtures of the reliability suite: a folder per case (`harness.Case`), the control run of
the template raw, the damaged night; and the grouping of the night's tests under xdist.
The contract the cases assert is described in harness.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from atmospec.cli import main
from reliability.damaged_night import DamagedNight, build_damaged_night
from reliability.harness import FAST, Case, Control, remove_tree


@pytest.fixture
def make_case(tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture,
              caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], Case]]:
    """A factory of case folders (several per test: the hypothesis examples), all removed
    when the test ends."""
    made: list[Path] = []

    def factory() -> Case:
        root = tmp_path_factory.mktemp("case")
        made.append(root)
        return Case(root, capsys, caplog)

    yield factory
    for root in made:
        remove_tree(root)


@pytest.fixture
def case(make_case: Callable[[], Case]) -> Case:
    """One case folder (removed after the test)."""
    return make_case()


@pytest.fixture(scope="session")
def control(template_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Control:
    """The template raw reduced by the fast path, once (it also checks the template is
    accepted: every damaged copy starts from a valid file)."""
    from atmospec.exposure import Exposure

    out = tmp_path_factory.mktemp("control")
    status = main(["isr", str(template_raw), "--out", str(out), *FAST])
    assert status == 0, "the undamaged template raw is refused"
    (post,) = out.glob("*_postisr.fits")
    exp = Exposure.read(post)
    control = Control(post.name.removesuffix("_postisr.fits"), exp.image.copy(),
                      exp.variance.copy())
    remove_tree(out)
    return control


# -- grouping under pytest-xdist -------------------------------------------------------------

#: Session fixtures of this folder costly enough that every test using one must run on the
#: same xdist worker (a fixture is built once per worker).
_SHARED = ("damaged_night",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep the tests sharing the damaged night on one xdist worker: the marker is put
    first, ahead of the per-module group the top-level conftest gives every test."""
    for item in items:
        if set(_SHARED) & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("reliability-night"), append=False)


@pytest.fixture(scope="session")
def damaged_night(tmp_path_factory: pytest.TempPathFactory) -> DamagedNight:
    """The damaged night (`damaged_night.build_damaged_night`), reduced once per session."""
    return build_damaged_night(tmp_path_factory.mktemp("damaged_night"))
