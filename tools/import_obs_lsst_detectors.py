"""Build atmospec's detector tables from obs_lsst's camera policy (run once, by hand).

The per-raft policy files of ``lsst/obs_lsst`` (GPL-3.0) give, per detector, the CCD
serial and, per amplifier, the nominal gain, read noise and (LSSTCam) saturation. This
script flattens them into one ECSV table per instrument, one row per amplifier, written to
``data/cameras/<instrument>_detectors.ecsv``: the shipped tables are the facts, this script
only says where they came from. Usage::

    python tools/import_obs_lsst_detectors.py ../shared/data/lsstcam_format/policy

Detector numbers follow obs_lsst: LSSTCam science rafts in the order R01 … R43 (9 ids
each, 0–188), then the corner rafts R00, R04, R40, R44 with SG0, SG1, SW0, SW1 (189–204);
ComCam's R22 is 0–8; TS8 rafts take the ``id0`` of ``policy/ts8/rafts.yaml``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import yaml
from astropy.table import Table

SLOTS = ("S00", "S01", "S02", "S10", "S11", "S12", "S20", "S21", "S22")
SCIENCE_RAFTS = ("R01", "R02", "R03", "R10", "R11", "R12", "R13", "R14", "R20", "R21",
                 "R22", "R23", "R24", "R30", "R31", "R32", "R33", "R34", "R41", "R42", "R43")
CORNER_RAFTS = ("R00", "R04", "R40", "R44")
CORNER_SLOTS = ("SG0", "SG1", "SW0", "SW1")
#: obs_lsst's ``detectorType`` of a raft → our sensor type (data/cameras/sensors.yaml).
SENSOR_TYPES = {"ITL": "ITL", "E2V": "E2V", "ITL_G": "ITL", "ITL_WF": "ITL_WF"}
AMPS = ("C10", "C11", "C12", "C13", "C14", "C15", "C16", "C17",
        "C07", "C06", "C05", "C04", "C03", "C02", "C01", "C00")


def _raft(policy: Path, name: str) -> dict:
    doc = yaml.safe_load(policy.read_text())
    (_key, raft), = doc.items()
    return raft


def _rows(instrument: str, raft_name: str, raft: dict, ids: dict[str, int]) -> list[dict]:
    rows = []
    sensor_type = SENSOR_TYPES[raft["detectorType"]]
    for slot, det_id in ids.items():
        serial = raft["ccdSerials"][slot]
        amps = raft["amplifiers"][slot]
        # ComCam and TS8 name the raft's CCDs by slot; LSSTCam corner rafts likewise.
        names = AMPS if sensor_type != "ITL_WF" else AMPS[:8]
        for amp in names:
            values = amps.get(amp)
            if values is None:
                raise SystemExit(f"{instrument} {raft_name} {slot}: no amp {amp}")
            rows.append({
                "detector": f"{raft_name}_{slot}", "detector_id": det_id,
                "raft": raft_name, "slot": slot, "serial": str(serial).removesuffix("-Dev"),
                "sensor_type": sensor_type, "amp": amp,
                "gain": float(values["gain"]), "read_noise": float(values["readNoise"]),
                "saturation_adu": float(values.get("saturation", np.nan)),
            })
    return rows


def lsstcam(policy: Path) -> list[dict]:
    rows = []
    for i, raft in enumerate(SCIENCE_RAFTS):
        ids = {slot: 9 * i + j for j, slot in enumerate(SLOTS)}
        rows += _rows("LSSTCam", raft, _raft(policy / "lsstCam" / f"{raft}.yaml", raft), ids)
    for i, raft in enumerate(CORNER_RAFTS):
        base = 189 + 4 * i
        rows += _rows("LSSTCam", raft, _raft(policy / "lsstCam" / f"{raft}.yaml", raft),
                      {"SG0": base, "SG1": base + 1})
        rows += _rows("LSSTCam", raft, _raft(policy / "lsstCam" / f"{raft}W.yaml", raft),
                      {"SW0": base + 2, "SW1": base + 3})
    return rows


def comcam(policy: Path) -> list[dict]:
    raft = _raft(policy / "comCam" / "R22.yaml", "R22")
    return _rows("LSSTComCam", "R22", raft, {slot: j for j, slot in enumerate(SLOTS)})


def ts8(policy: Path) -> list[dict]:
    rafts = yaml.safe_load((policy / "ts8" / "rafts.yaml").read_text())["rafts"]
    rows = []
    for name, entry in rafts.items():
        path = policy / "ts8" / f"{name}.yaml"
        if not path.is_file():
            continue
        ids = {slot: int(entry["id0"]) + j for j, slot in enumerate(SLOTS)}
        rows += _rows("LSST-TS8", name, _raft(path, name), ids)
    return rows


def main(policy: Path, out: Path) -> None:
    for name, rows in (("lsstcam", lsstcam(policy)), ("lsstcomcam", comcam(policy)),
                       ("lsst-ts8", ts8(policy))):
        table = Table(rows=rows)
        table.meta["source"] = ("lsst/obs_lsst policy (GPL-3.0), flattened by "
                                "tools/import_obs_lsst_detectors.py; one row per amplifier")
        table["gain"].unit = "electron/adu"
        table["read_noise"].unit = "electron"
        table.write(out / f"{name}_detectors.ecsv", overwrite=True, format="ascii.ecsv")
        print(name, len(table), "amps,", len(set(table["detector"])), "detectors")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).resolve().parents[1] / "data" / "cameras")
