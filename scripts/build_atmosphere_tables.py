"""Rebuild ``atmosphere_tables.npz`` from the upstream libRadtran products.

Run from the repository root with the shared data directory as argument::

    python scripts/build_atmosphere_tables.py ../shared/data/atmosphere

Inputs (see ``data/ATTRIBUTION.md``): getObsAtmo LSST grids (Rayleigh, ozone), the
PhotomCorrectAuxTel ``absorption_pattern.csv`` (O2 versus airmass) and
``lsst_atm_10year_01.fits`` (365 libRadtran atmospheres used to fit the aerosol spectral
shape and the water-vapour curve of growth).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits

#: Reference pressure of the getObsAtmo LSST grids [hPa].
P_REF = 731.5
#: Airmass of the 365 libRadtran atmospheres.
SIM_AIRMASS = 1.2


def build(src: Path, out: Path) -> None:
    """Derive the compact tables and write them to ``out``."""
    g = src / "getobsatmo_LSST" / "LSST_atmospherictransparencygrid_"
    par = json.loads(Path(f"{g}params.json").read_text())
    wl_g = np.asarray(par["WL"])
    am_g = np.asarray(par["AIRMASS"])
    oz_g = np.asarray(par["OZ"])
    lam = np.arange(300.0, 1101.0, 1.0)

    # Rayleigh: optical depth exactly linear in airmass in the grid -> one curve.
    tau_r = -np.log(np.load(f"{g}rayleigh.npy")) / am_g[None, :]
    tau_r = np.interp(lam, wl_g, tau_r.mean(axis=1))

    # Ozone: least-squares optical depth per (DU x airmass) over all grid nodes.
    tau_o = -np.log(np.load(f"{g}OZabs.npy"))
    x = am_g[None, :, None] * oz_g[None, None, :]
    k_o3 = np.interp(lam, wl_g, (tau_o * x).sum((1, 2)) / (x**2).sum((1, 2)))

    # O2 versus airmass on libRadtran's native 1 nm grid.
    rows = list(csv.reader((src / "photomcorrectauxtel" / "absorption_pattern.csv").open()))
    cols = {h: i for i, h in enumerate(rows[0]) if h}
    tab = np.asarray(rows[1:], dtype=float)
    o2_am = np.arange(10, 26) / 10.0
    t_o2 = np.stack([tab[:, cols[f"o2_{int(a * 10)}"]] for a in o2_am], axis=1)
    tau_o2 = -np.log(np.clip(t_o2, 1e-12, None))
    tau_o2 = np.stack([np.interp(lam, tab[:, cols["wl"]], c) for c in tau_o2.T], axis=1)

    # 365 atmospheres: aerosol shape and water curve of growth, per wavelength.
    d = fits.getdata(src / "photomcorrectauxtel" / "lsst_atm_10year_01.fits")
    slam = d[0, 7:]
    keep = (slam >= lam[0]) & (slam <= lam[-1])
    assert np.allclose(slam[keep], lam)
    t_sim = d[1:, 7:][:, keep]
    vaod, pwv, o3 = d[1:, 3], d[1:, 4], d[1:, 5]
    i12 = int(np.argmin(np.abs(o2_am - SIM_AIRMASS)))
    known = SIM_AIRMASS * (tau_r + k_o3 * o3[:, None]) + tau_o2[:, i12]
    resid = -np.log(np.clip(t_sim, 1e-12, None)) - known
    w = SIM_AIRMASS * pwv
    best = np.full(lam.size, np.inf)
    aer = np.zeros(lam.size)
    a_w = np.zeros(lam.size)
    b_w = np.zeros(lam.size)
    for b in np.linspace(0.2, 1.0, 161):
        design = np.vstack([SIM_AIRMASS * vaod, w**b]).T
        coef = np.linalg.lstsq(design, resid, rcond=None)[0]
        chi2 = ((resid - design @ coef) ** 2).sum(0)
        better = chi2 < best
        best[better] = chi2[better]
        aer[better], a_w[better], b_w[better] = coef[0, better], coef[1, better], b
    a_w = np.clip(a_w, 0.0, None)

    np.savez_compressed(
        out,
        wavelength_nm=lam,
        rayleigh_tau=tau_r,
        p_ref_hpa=np.array(P_REF),
        o2_airmass=o2_am,
        o2_tau=tau_o2,
        ozone_tau_per_du=k_o3,
        aerosol_shape=aer,
        water_a=a_w,
        water_b=b_w,
    )


if __name__ == "__main__":
    build(Path(sys.argv[1]),
          Path(__file__).resolve().parents[1] / "data" / "atmosphere" / "atmosphere_tables.npz")
