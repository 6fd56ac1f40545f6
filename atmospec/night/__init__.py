"""Night processing: raw index, calibration selection, pipeline runner, summary."""
