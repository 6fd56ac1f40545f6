"""Verification reports of calibration products (DMTN-101 style, as Rubin's cp_verify).

Every product gets ``<product stem>.verify.json`` beside it::

    {"product": "bias", "file": "bias.fits", "obstype": "bias", "pass": false,
     "amps": {"C10": {"pass": true,
                      "tests": {"mean_below_sigma": {"value": 0.3, "threshold": 8.1,
                                                      "comparison": "|value| <= threshold",
                                                      "pass": true, "unit": "electron"}}}},
     "detector": {"tests": {...}, "pass": true}}

A product passes when every test of every amp (and of the detector) passes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from atmospec.io import write_text_atomic

Comparison = Literal["value <= threshold", "value >= threshold", "|value| <= threshold"]


@dataclass(frozen=True)
class TestResult:
    """One verification test on one amplifier (or the whole detector)."""

    __test__ = False  # not a pytest test class

    name: str
    """Short test name, e.g. ``noise_matches_read_noise``."""
    value: float
    """Measured value."""
    threshold: float
    """Limit the value is compared with."""
    comparison: Comparison
    """How value and threshold compare for a pass."""
    unit: str = ""
    """Unit of value and threshold."""

    @property
    def passed(self) -> bool:
        """Whether the test passes (a non-finite value fails)."""
        if not np.isfinite(self.value):
            return False
        if self.comparison == "value <= threshold":
            return self.value <= self.threshold
        if self.comparison == "value >= threshold":
            return self.value >= self.threshold
        return abs(self.value) <= self.threshold

    def to_dict(self) -> dict:
        """JSON form (``pass`` added)."""
        d = asdict(self)
        d.pop("name")
        d["value"] = float(self.value)
        d["threshold"] = float(self.threshold)
        d["pass"] = bool(self.passed)
        return d


@dataclass
class VerificationReport:
    """All tests of one product."""

    product: str
    """Product kind: bias, dark, flat, defects, ptc, linearity."""
    file: str
    """Product file name."""
    amps: dict[str, list[TestResult]] = field(default_factory=dict)
    """Tests per amplifier name."""
    detector: list[TestResult] = field(default_factory=list)
    """Detector-wide tests."""

    def add(self, amp: str | None, result: TestResult) -> None:
        """Record a test for ``amp`` (``None``: detector-wide)."""
        if amp is None:
            self.detector.append(result)
        else:
            self.amps.setdefault(amp, []).append(result)

    @property
    def passed(self) -> bool:
        """True when every test passes."""
        return all(t.passed for tests in self.amps.values() for t in tests) and all(
            t.passed for t in self.detector)

    def failures(self) -> list[str]:
        """``amp:test`` names of the failed tests."""
        out = [f"{amp}:{t.name}" for amp, tests in self.amps.items() for t in tests
               if not t.passed]
        return out + [f"detector:{t.name}" for t in self.detector if not t.passed]

    def to_dict(self) -> dict:
        """The JSON document described in the module docstring."""
        return {
            "product": self.product,
            "file": self.file,
            "pass": self.passed,
            "failures": self.failures(),
            "amps": {amp: {"pass": all(t.passed for t in tests),
                           "tests": {t.name: t.to_dict() for t in tests}}
                     for amp, tests in self.amps.items()},
            "detector": {"pass": all(t.passed for t in self.detector),
                         "tests": {t.name: t.to_dict() for t in self.detector}},
        }

    def write(self, product_path: str | Path) -> Path:
        """Write ``<product stem>.verify.json`` beside the product (atomically)."""
        product_path = Path(product_path)
        path = product_path.with_name(verification_name(product_path))
        return write_text_atomic(json.dumps(self.to_dict(), indent=1), path)


def verification_name(product_path: str | Path) -> str:
    """File name of the verification report of a product (``FILE`` stem + ``.verify.json``)."""
    name = Path(product_path).name
    for suffix in (".fits.gz", ".fits", ".ecsv"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return f"{name}.verify.json"
