"""Calibration products (Rubin's cp_pipe and cp_verify in spirit): combination, master bias,
dark and flat, defects, photon-transfer curve, linearity, crosstalk, their verification
(DMTN-101 tests), the camera team's electro-optical figures, and the calibration registry.

Nothing is imported here, so that importing one product does not pull in the others.
"""
