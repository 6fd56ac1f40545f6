"""Instrument signature removal: one module per correction, applied by `driver.run_isr`."""

STEPS: tuple[str, ...] = (
    "overscan", "saturation", "linearity", "gain", "crosstalk", "assemble", "bias",
    "variance", "dark", "flat", "defects", "interpolate", "cosmic_rays", "edge",
)
"""Every ISR step, in the order they are applied (kept here, free of heavy imports, so the
command-line help can list them)."""
