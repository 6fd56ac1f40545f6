"""Keep freed memory for reuse: a process that handles full frames allocates and frees
arrays of 64–128 MB many times per exposure.

By default glibc serves each allocation above 32 MB with its own ``mmap`` and returns it to
the kernel on ``free``, and numpy asks for transparent huge pages on large arrays
(``madvise``); every new array is then fresh memory that the kernel zeroes on first touch.
On the virtual machines we run on (and in CI) that zeroing dominated: measured on one ISR of
a full LATISS frame with its calibrations, 2.3–4.5 s of system time against 4.3–5.2 s of
user time; a small simulated night (15 frames, 2 workers) spent 72 s in the kernel for 79 s
of computing. With freed memory kept in the process's heap and reused, the same ISR spends
~1.0 s in the kernel and the night 14.5 s, for the same peak memory (within 4 %).

`keep_freed_memory` is called at the start of each process that reduces frames: the
command line (`atmospec.cli.main`) and the local pool's workers (`atmospec.parallel`). It is
not applied on import: a program that imports atmospec as a library keeps its own policy.
"""

from __future__ import annotations

import ctypes
import logging
import sys

__all__ = ["keep_freed_memory"]

log = logging.getLogger(__name__)

#: ``mallopt`` parameters (glibc ``malloc.h``).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: Free memory at the top of the heap kept rather than returned to the kernel, bytes: the
#: largest value ``mallopt`` takes (its argument is an ``int``).
_TRIM_THRESHOLD = 2**31 - 1


def keep_freed_memory() -> bool:
    """Make large arrays come from the process's heap and freed ones be reused.

    glibc only (Linux): every allocation is served from the heap (no per-allocation
    ``mmap``), and up to 2 GiB of freed memory at its top is kept; numpy stops asking for
    transparent huge pages, whose 2 MB zeroing made each reused region costly again. The
    process's peak memory is unchanged; its resident memory no longer shrinks after a
    peak. Safe to call more than once.

    Returns
    -------
    bool
        True if the allocator took the settings (False elsewhere than glibc).
    """
    _numpy_without_huge_pages()
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    if not done:
        log.debug("mallopt refused the heap settings: freed memory is not kept")
    return done


def _numpy_without_huge_pages() -> None:
    """numpy's documented switch (``NUMPY_MADVISE_HUGEPAGE=0``), at run time."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    switch = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
    if switch is not None:
        switch(False)
