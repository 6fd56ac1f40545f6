"""Calibration products: combine, bias, dark, flat, defects, PTC, linearity, verification."""
