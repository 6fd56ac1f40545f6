"""Butler formatters and storage classes of atmospec's file formats.

Each formatter writes and reads with the project's own I/O functions, so a dataset in a Butler
repository is the same file the native runner writes (post-ISR exposure in Rubin's ExposureF
layout, Spectractor's spectrum layout, ECSV catalogues, JSON records):

===========================  ===================================  ========================
storage class                Python type                          formatter
===========================  ===================================  ========================
``AtmospecRaw``              `atmospec.camera.raw.RawFrame`       `RawFormatter` (read)
``AtmospecExposure``         `atmospec.exposure.Exposure`         `ExposureFormatter`
``AtmospecSpectrum``         `atmospec.spectro.spectrum.Spectrum`  `SpectrumFormatter`
``AtmospecCatalog``          `astropy.table.Table` (ECSV)         `CatalogFormatter`
``AtmospecFitsTable``        `astropy.table.Table` (FITS)         `FitsTableFormatter`
``AtmospecRecord``           `dict` (JSON)                        `JsonRecordFormatter`
===========================  ===================================  ========================

`STORAGE_CLASSES` and `FORMATTERS` are the repository-configuration sections that
`atmospec.gen3.repo.init_repo` writes into the new repository's ``butler.yaml``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from atmospec.gen3 import require_gen3

require_gen3()

from lsst.daf.butler import FormatterV2  # noqa: E402
from lsst.resources import ResourcePath  # noqa: E402

__all__ = [
    "FORMATTERS",
    "STORAGE_CLASSES",
    "CatalogFormatter",
    "ExposureFormatter",
    "FitsTableFormatter",
    "JsonRecordFormatter",
    "RawFormatter",
    "SpectrumFormatter",
]

_HERE = __name__

#: Storage classes (``storageClasses`` section of a repository configuration).
STORAGE_CLASSES: Mapping[str, dict[str, Any]] = MappingProxyType({
    "AtmospecRaw": {"pytype": "atmospec.camera.raw.RawFrame"},
    "AtmospecExposure": {"pytype": "atmospec.exposure.Exposure",
                         "parameters": ["load_variance"]},
    "AtmospecSpectrum": {"pytype": "atmospec.spectro.spectrum.Spectrum"},
    "AtmospecCatalog": {"pytype": "astropy.table.Table"},
    "AtmospecFitsTable": {"pytype": "astropy.table.Table"},
    "AtmospecRecord": {"pytype": "dict"},
})

#: Storage class to formatter (``datastore.formatters`` section).
FORMATTERS: Mapping[str, str] = MappingProxyType({
    "AtmospecRaw": f"{_HERE}.RawFormatter",
    "AtmospecExposure": f"{_HERE}.ExposureFormatter",
    "AtmospecSpectrum": f"{_HERE}.SpectrumFormatter",
    "AtmospecCatalog": f"{_HERE}.CatalogFormatter",
    "AtmospecFitsTable": f"{_HERE}.FitsTableFormatter",
    "AtmospecRecord": f"{_HERE}.JsonRecordFormatter",
})


class RawFormatter(FormatterV2):
    """Raw LATISS multi-extension FITS files (read only: raws are ingested, never put)."""

    supported_extensions = frozenset({".fits", ".fits.gz", ".fz", ".fits.fz"})
    default_extension = ".fits"
    can_read_from_local_file = True
    unsupported_parameters = None

    def read_from_local_file(self, path: str, component: str | None = None,
                             expected_size: int = -1) -> Any:
        """Read the raw frame (`atmospec.camera.raw.read_raw`: header translation and checks).

        Parameters
        ----------
        path : str
            Local file.
        component : str, optional
            Not supported.
        expected_size : int, optional
            Unused.

        Returns
        -------
        atmospec.camera.raw.RawFrame
        """
        from atmospec.camera.raw import read_raw

        return read_raw(path)


class ExposureFormatter(FormatterV2):
    """`atmospec.exposure.Exposure` in Rubin's ExposureF layout (IMAGE, MASK, VARIANCE).

    Read parameter ``load_variance`` (default True): False leaves the variance plane unread
    (a read-only zero array), as ISR loads its master calibrations.
    """

    supported_extensions = frozenset({".fits"})
    default_extension = ".fits"
    can_read_from_local_file = True
    unsupported_parameters = frozenset()

    def read_from_local_file(self, path: str, component: str | None = None,
                             expected_size: int = -1) -> Any:
        """Read the exposure.

        Parameters
        ----------
        path : str
            Local file.
        component : str, optional
            Not supported.
        expected_size : int, optional
            Unused.

        Returns
        -------
        atmospec.exposure.Exposure
        """
        from atmospec.exposure import Exposure

        params = self.file_descriptor.parameters or {}
        return Exposure.read(path, load_variance=bool(params.get("load_variance", True)))

    def write_local_file(self, in_memory_dataset: Any, uri: ResourcePath) -> None:
        """Write the exposure (its metadata carries the provenance cards of the task).

        Parameters
        ----------
        in_memory_dataset : atmospec.exposure.Exposure
            The exposure.
        uri : lsst.resources.ResourcePath
            Local destination.
        """
        in_memory_dataset.write(uri.ospath)


class SpectrumFormatter(FormatterV2):
    """`atmospec.spectro.spectrum.Spectrum` in Spectractor's spectrum FITS layout."""

    supported_extensions = frozenset({".fits"})
    default_extension = ".fits"
    can_read_from_local_file = True
    unsupported_parameters = None

    def read_from_local_file(self, path: str, component: str | None = None,
                             expected_size: int = -1) -> Any:
        """Read the spectrum (`spectractor_bridge.spectrum.read_spectrum`).

        Parameters
        ----------
        path : str
            Local file.
        component : str, optional
            Not supported.
        expected_size : int, optional
            Unused.

        Returns
        -------
        atmospec.spectro.spectrum.Spectrum
        """
        from spectractor_bridge.spectrum import read_spectrum

        return read_spectrum(path)

    def write_local_file(self, in_memory_dataset: Any, uri: ResourcePath) -> None:
        """Write the spectrum; provenance cards already in its header are kept.

        Parameters
        ----------
        in_memory_dataset : atmospec.spectro.spectrum.Spectrum
            The spectrum.
        uri : lsst.resources.ResourcePath
            Local destination.
        """
        import re

        from spectractor_bridge.spectrum import write_spectrum

        stamp = re.compile(r"^ATM(VERS|STAGE|DATE|IN\d+)$")
        cards = [(c.keyword, c.value, c.comment) for c in in_memory_dataset.header.cards
                 if stamp.match(c.keyword)]
        write_spectrum(in_memory_dataset, uri.ospath, cards or None)


class CatalogFormatter(FormatterV2):
    """Source catalogues (`astropy.table.Table`) as ECSV, units and metadata kept."""

    supported_extensions = frozenset({".ecsv"})
    default_extension = ".ecsv"
    can_read_from_local_file = True
    unsupported_parameters = None

    def read_from_local_file(self, path: str, component: str | None = None,
                             expected_size: int = -1) -> Any:
        """Read the catalogue (`atmospec.imaging.catalog.read_catalog`).

        Parameters
        ----------
        path : str
            Local file.
        component : str, optional
            Not supported.
        expected_size : int, optional
            Unused.

        Returns
        -------
        astropy.table.Table
        """
        from atmospec.imaging.catalog import read_catalog

        return read_catalog(path)

    def write_local_file(self, in_memory_dataset: Any, uri: ResourcePath) -> None:
        """Write the table as ECSV.

        Parameters
        ----------
        in_memory_dataset : astropy.table.Table
            The catalogue (its ``meta`` holds the provenance).
        uri : lsst.resources.ResourcePath
            Local destination.
        """
        in_memory_dataset.write(uri.ospath, format="ascii.ecsv", overwrite=True)


class FitsTableFormatter(FormatterV2):
    """Tables stored as a FITS binary table (e.g. the PTC product: one row per amp)."""

    supported_extensions = frozenset({".fits"})
    default_extension = ".fits"
    can_read_from_local_file = True
    unsupported_parameters = None

    def read_from_local_file(self, path: str, component: str | None = None,
                             expected_size: int = -1) -> Any:
        """Read the first table HDU.

        Parameters
        ----------
        path : str
            Local file.
        component : str, optional
            Not supported.
        expected_size : int, optional
            Unused.

        Returns
        -------
        astropy.table.Table
        """
        from astropy.table import Table

        return Table.read(path, format="fits")

    def write_local_file(self, in_memory_dataset: Any, uri: ResourcePath) -> None:
        """Write the table as a FITS binary table.

        Parameters
        ----------
        in_memory_dataset : astropy.table.Table
            The table.
        uri : lsst.resources.ResourcePath
            Local destination.
        """
        from astropy.io import fits

        from atmospec.io import write_hdul_atomic

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            # As Table.write(format="fits") lays it out, but through the one FITS writer
            # (atomic, with checksums).
            hdu = fits.table_to_hdu(in_memory_dataset, character_as_bytes=True)
            write_hdul_atomic(fits.HDUList([fits.PrimaryHDU(), hdu]), uri.ospath)


class JsonRecordFormatter(FormatterV2):
    """JSON records (centroid, atmosphere fit, ISR statistics, verification): a `dict`."""

    supported_extensions = frozenset({".json"})
    default_extension = ".json"
    can_read_from_local_file = True
    unsupported_parameters = None

    def read_from_local_file(self, path: str, component: str | None = None,
                             expected_size: int = -1) -> Any:
        """Read the record.

        Parameters
        ----------
        path : str
            Local file.
        component : str, optional
            Not supported.
        expected_size : int, optional
            Unused.

        Returns
        -------
        dict
        """
        with open(path) as stream:
            return json.load(stream)

    def to_bytes(self, in_memory_dataset: Any) -> bytes:
        """Serialise the record as indented JSON (as the native runner writes it).

        Parameters
        ----------
        in_memory_dataset : dict
            The record.

        Returns
        -------
        bytes
        """
        from atmospec.io import to_jsonable

        return (json.dumps(to_jsonable(in_memory_dataset), indent=1) + "\n").encode()
