"""The BOT photodiode: reading, integration against a known truth and on the real record, and
pairing exposures with their readings files."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from atmospec.calib.photodiode import (
    PhotodiodeConfig,
    PhotodiodeReadings,
    integrate_photodiode,
    photodiode_file_for,
    read_photodiode,
)
from atmospec.errors import BadInputError

RAW_DIR = Path(__file__).parent / "data" / "lsstcam" / "raw"
READINGS = RAW_DIR / "Photodiode_Readings_20211212_000310.txt"
RAW = RAW_DIR / "lsstCam_bot_30211212000310-R22-S22-det098_zeroed.fits"

# Like the real record: 649 readings 0.0167 s apart, a ~2 nA plateau for ~7.9 s.
DT = 0.0167
N = 649
AMPLITUDE = 2.0e-9
BASELINE = 2.0e-11  # 200 × the real one, so that the direct method's bias is plain
T_ON = 0.3251  # between two readings
DURATION = 7.9


def simulate(seed: int = 1, *, amplitude: float = AMPLITUDE,
             spike: tuple[int | slice, float] | None = None) -> PhotodiodeReadings:
    """A box of light on a baseline, read as the ammeter does: each reading is the mean
    current over the 1/60 s before it, so the edge readings are partial. Noise: 8e-14 A on
    every reading (ammeter), 2.6e-13 A more while lit (lamp), both as in the real record.
    ``spike``: (index or slice, value) replaces readings."""
    rng = np.random.default_rng(seed)
    t = np.arange(N) * DT
    lit = np.clip(np.minimum(t, T_ON + DURATION) - np.maximum(t - DT, T_ON), 0.0, DT) / DT
    current = (BASELINE + amplitude * lit + rng.normal(0.0, 8e-14, N)
               + rng.normal(0.0, 2.6e-13, N) * (lit > 0))
    if spike is not None:
        current[spike[0]] = spike[1]
    return PhotodiodeReadings(t, current)


@pytest.mark.parametrize(("spike", "n_spikes", "flags"), [
    (None, 0, ()),
    ((580, 3 * AMPLITUDE), 1, ()),  # after the exposure, above the plateau
    ((250, 3 * AMPLITUDE), 1, ()),  # on the plateau, upwards
    ((250, BASELINE), 1, ()),  # on the plateau, a dropout
    ((10, -AMPLITUDE), 1, ()),  # before the exposure, downwards
    # Two readings are no spike: a second lit run, flagged, out of charge and baseline.
    ((slice(600, 602), 3 * AMPLITUDE), 0, ("several_runs",)),
], ids=["none", "baseline-up", "plateau-up", "plateau-dropout", "baseline-down",
        "two-readings"])
def test_box_charge_baseline_and_interval(spike: tuple[int | slice, float] | None,
                                          n_spikes: int, flags: tuple[str, ...]) -> None:
    result = integrate_photodiode(simulate(spike=spike))
    truth = AMPLITUDE * DURATION
    assert result.illuminated and result.method == "baseline" and result.flags == flags
    assert abs(result.charge / truth - 1) < 0.002
    # In fact to ~1e-5: the partial edge readings carry exactly their share of the edge.
    assert abs(result.charge / truth - 1) < 5e-5
    assert result.charge_err < 1e-4 * truth
    assert result.n_spikes == n_spikes
    # Baseline: median of ~170 readings of σ 8e-14 A.
    assert result.baseline == pytest.approx(BASELINE, abs=3e-14)
    assert result.baseline_err == pytest.approx(1.2533 * 8e-14 / math.sqrt(result.n_baseline),
                                                rel=0.3)
    # Half-maximum crossings of trailing-window readings lag the light by half a reading.
    start, end = result.on_interval
    assert start == pytest.approx(T_ON + DT / 2, abs=DT / 4)
    assert end == pytest.approx(T_ON + DURATION + DT / 2, abs=DT / 4)
    assert result.plateau == pytest.approx(AMPLITUDE, rel=1e-3)


def test_wider_spikes_and_short_exposures() -> None:
    glitch = simulate(spike=(slice(600, 602), 3 * AMPLITUDE))
    wide = integrate_photodiode(glitch, PhotodiodeConfig(spike_samples=2))
    assert wide.n_spikes == 2 and wide.flags == ()
    assert wide.charge == pytest.approx(AMPLITUDE * DURATION, rel=1e-4)
    # 0.05 s lit: two full readings and two partial ones.
    t = np.arange(N) * DT
    lit = np.clip(np.minimum(t, T_ON + 0.05) - np.maximum(t - DT, T_ON), 0.0, DT) / DT
    short = integrate_photodiode(PhotodiodeReadings(t, BASELINE + AMPLITUDE * lit))
    assert short.charge == pytest.approx(AMPLITUDE * 0.05, rel=1e-6)


def test_direct_method_biased_by_baseline_times_record_length() -> None:
    readings = simulate()
    direct = integrate_photodiode(readings, PhotodiodeConfig(method="direct"))
    default = integrate_photodiode(readings)
    truth = AMPLITUDE * DURATION
    bias = BASELINE * (N - 1) * DT  # 2e-11 A × 10.8216 s = 2.164e-10 C, 1.4 % of the charge
    assert bias == pytest.approx(2.164e-10, rel=1e-4)
    assert direct.charge - truth == pytest.approx(bias, rel=0.005)
    assert direct.charge - default.charge == pytest.approx(bias, rel=0.005)
    assert direct.method == "direct" and direct.baseline == 0.0 and direct.n_samples == N


def test_dark_record_gives_zero_charge_with_a_flag() -> None:
    dark = simulate(amplitude=0.0, spike=(300, 1e-9))
    result = integrate_photodiode(dark)
    assert not result.illuminated and result.flags == ("no_illumination",)
    assert result.charge == 0.0 and math.isnan(result.charge_err)
    assert result.on_interval is None and result.n_samples == 0
    assert result.baseline == pytest.approx(BASELINE, abs=3e-14)
    flat = integrate_photodiode(PhotodiodeReadings(np.arange(10.0), np.full(10, 1e-13)))
    assert not flat.illuminated and flat.charge == 0.0


def test_real_record_against_exptime_and_a_plain_sum() -> None:
    readings = read_photodiode(READINGS)
    assert len(readings) == 649 and readings.sample_interval == pytest.approx(0.0167)
    result = integrate_photodiode(readings)
    assert result.illuminated and result.flags == () and result.n_spikes == 0

    # The light is on 7.909 s at half maximum (0.3295 s to 8.2387 s of the record); the raw
    # says EXPTIME 7.83172 s: the diode sees 0.0775 s (1 %, 4.6 readings) more light than the
    # requested exposure, a shutter overhead the sampling cannot explain.
    exptime = fits.getheader(RAW, 0)["EXPTIME"]
    assert exptime == pytest.approx(7.83172)
    assert result.duration == pytest.approx(7.9092, abs=0.002)
    assert result.duration - exptime == pytest.approx(0.0775, abs=0.002)
    assert result.duration - exptime > 4 * readings.sample_interval
    assert result.effective_duration == pytest.approx(7.9064, abs=0.002)

    # The charge: 1.5794e-8 C, against an independent plain sum over the lit readings (above
    # 1 % of the peak) of the current minus the median of the others, times 0.0167 s.
    assert result.charge == pytest.approx(1.57937e-8, rel=1e-4)
    current = np.loadtxt(READINGS)[:, 1]
    lit = current > 0.01 * current.max()
    plain = (current[lit] - np.median(current[~lit])).sum() * 0.0167
    assert result.charge == pytest.approx(plain, rel=0.005)
    assert result.charge == pytest.approx(plain, rel=1e-4)  # what it is in fact
    assert result.baseline == pytest.approx(1.0e-13, abs=2e-14)

    # The direct sum adds the baseline over the whole record: here only 7e-5 of the charge.
    direct = integrate_photodiode(readings, PhotodiodeConfig(method="direct"))
    assert direct.charge - result.charge == pytest.approx(
        result.baseline * readings.record_length, rel=0.05)


def test_readings_file_of_an_exposure(tmp_path: Path) -> None:
    assert photodiode_file_for("MC_C_20211212_000310", RAW_DIR) == READINGS
    assert photodiode_file_for(RAW, RAW_DIR) == READINGS
    assert photodiode_file_for("MC_C_20211212_000311", RAW_DIR) is None
    assert photodiode_file_for(RAW, tmp_path) is None
    # The BOT's storage layout: <day>/<OBSID>/Photodiode_Readings_<day>_<seq>.txt
    nested = tmp_path / "20211212" / "MC_C_20211212_000310"
    nested.mkdir(parents=True)
    shutil.copy(READINGS, nested)
    assert photodiode_file_for("MC_C_20211212_000310", tmp_path) == nested / READINGS.name
    with pytest.raises(BadInputError, match="no such folder"):
        photodiode_file_for(RAW, tmp_path / "absent")
    with pytest.raises(BadInputError, match="MC_C_2021"):
        photodiode_file_for("not_an_exposure", RAW_DIR)


@pytest.mark.parametrize(("content", "problem"), [
    (b"", "empty file"),
    (b"time current\nthe diode was off\n", "line 1: not two numbers"),
    (b"0.0\n0.0167\n0.0334\n0.0501\n0.0668\n0.0835\n", "line 1: 1 column, expected 2"),
    (b"0.0 1e-13 7\n", "line 1: 3 columns"),
    (b"0.0 1e-13\n0.1 1e-13\n0.05 1e-13\n0.2 1e-13\n0.3 1e-13\n", "line 3: times do not"),
    (b"0.0 1e-13\n0.1 nan\n0.2 1e-13\n0.3 1e-13\n0.4 1e-13\n", "line 2: current is nan"),
    (b"0.0 1e-13\n0.1 1e-13\n", "only 2 readings"),
    (b"\x00\x01\x02binary", "not a text file"),
])
def test_bad_readings_files(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "Photodiode_Readings_20211212_000001.txt"
    path.write_bytes(content)
    with pytest.raises(BadInputError) as err:
        read_photodiode(path)
    message = str(err.value)
    assert message.startswith(str(path)) and problem in message and "\n" not in message


def test_missing_readings_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such file"):
        read_photodiode(tmp_path / "Photodiode_Readings_20211212_000002.txt")
    with pytest.raises(BadInputError, match="is a folder"):
        read_photodiode(tmp_path)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="method"):
        PhotodiodeConfig(method="trimmed")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold_fraction"):
        PhotodiodeConfig(threshold_fraction=1.5)
