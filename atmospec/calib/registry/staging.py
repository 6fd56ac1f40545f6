"""Placing product files in the repository durably.

A product is first put under a hidden temporary name beside its final place (`stage`: a
hard link, or a copy flushed to disk), hashed, and only renamed to its final name inside the
registry's write transaction; `fsync_directory` then makes the rename durable. So an
interruption leaves at worst a hidden temporary file, never an indexed name without its
bytes.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import secrets
from pathlib import Path

__all__ = ["fsync_directory", "sha256_file", "stage", "stored_stem"]

log = logging.getLogger(__name__)


def stage(source: Path, directory: Path, link: bool) -> tuple[Path, str]:
    """Put a copy (or hard link) of ``source`` under a hidden temporary name in ``directory``.

    Parameters
    ----------
    source : pathlib.Path
        File to store.
    directory : pathlib.Path
        Where it will be stored (created if needed).
    link : bool
        Hard-link when the file system allows; copy otherwise (and always when False).

    Returns
    -------
    (Path, str)
        The temporary file and the SHA-256 (hex) of its content.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{source.name}.{secrets.token_hex(8)}.tmp"
    if link:
        try:
            os.link(source, tmp)
        except OSError as exc:  # another file system, no permission, no hard links: copy
            log.debug("cannot hard-link %s (%s); copying", source, exc)
        else:
            return tmp, sha256_file(tmp)
    digest = hashlib.sha256()
    try:
        with open(source, "rb") as src, open(tmp, "xb") as dst:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
            dst.flush()
            # On disk before the rename and the index commit, so a power cut cannot leave
            # an indexed but empty file.
            os.fsync(dst.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, digest.hexdigest()


def sha256_file(path: Path) -> str:
    """SHA-256 (hex) of a file's content, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def stored_sha256(path: Path) -> str:
    """SHA-256 (hex) of a stored product, hashed once per version of the file per process.

    Selecting products checks each one against its recorded hash at every exposure; hashing
    a 195 MB master takes ~0.17 s, so a night of hundreds of exposures would spend minutes
    re-hashing the same files. A version is the file's (device, inode, size, modification
    time in ns): replacing the file (a rename) changes the inode, rewriting it in place the
    size or the time. Not caught: an in-place rewrite of the same size whose modification
    time is then set back on purpose.

    Raises
    ------
    OSError
        If the file cannot be examined or read.
    """
    st = os.stat(path)
    return _sha256_of_version(str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _sha256_of_version(path: str, device: int, inode: int, size: int, mtime_ns: int) -> str:
    """`sha256_file` of one version of a file (the arguments after ``path`` are its key)."""
    return sha256_file(Path(path))


def fsync_directory(directory: Path) -> None:
    """Make renames in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def stored_stem(name: str) -> tuple[str, str]:
    """Split a file name into stem and extension, keeping ``.fits.gz`` whole."""
    for suffix in (".fits.gz", ".fits.fz", ".fits", ".ecsv"):
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    path = Path(name)
    return path.stem, path.suffix
