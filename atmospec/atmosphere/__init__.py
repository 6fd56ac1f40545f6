"""The atmosphere's transmission and its fits on spectra of standard stars.

``transmission``
    The transmission model on libRadtran's scale without libRadtran: Rayleigh, O2, ozone and
    water-vapour grids and an Ångström aerosol law.
``spectrum_fit``
    PWV, ozone and aerosols of one extracted spectrum against its CALSPEC SED.
``spectrogram_fit``
    The same fit on the spectrogram's pixels (orders 1 and 2).
``joint_fit``
    The spectra of a night fitted together (shared throughput correction).

Nothing is imported here, so that importing one fit does not pull in the others.
"""
