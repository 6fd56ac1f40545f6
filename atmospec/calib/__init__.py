"""Calibration products (Rubin's cp_pipe and cp_verify in spirit).

`products`: the product classes (`Bias`, `Dark`, `Flat`, `Defects`, `Ptc`, `Linearizer`,
`Crosstalk`), which own their file format and checks. The builders work in memory and
return ``(product, verification)``: `masters` (bias, dark, flat, combined by `combine`),
`ptc`, `linearity`, `defects`; `crosstalk` measures a matrix and `eo` the camera team's
electro-optical figures. `verify` and `verification`: the DMTN-101 tests and their report.
`files`: the file-level builds of the command line and the night runner (read the input
products, build, write product and ``<stem>.verify.json``). `isr_inputs`: the products of an
ISR run read into what the ISR driver takes. `registry`: the calibration repository.

Nothing is imported here, so that importing one product does not pull in the others.
"""
