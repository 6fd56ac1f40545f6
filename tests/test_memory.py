"""`atmospec.memory.keep_freed_memory`: a freed full frame is reused, not zeroed again."""

from __future__ import annotations

import resource
import sys

import numpy as np
import pytest

from atmospec.memory import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_freed_frame_is_reused_without_page_faults():
    assert keep_freed_memory()
    # 128 MB: 32768 faults of 4 kB pages when fresh (numpy no longer asks for huge pages,
    # whose faults are 512 times fewer and would pass this test without reuse)
    frame = np.ones((4096, 4096))
    del frame
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    frame = np.ones((4096, 4096))
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert float(frame.sum()) == 4096 * 4096
    assert faults < 1000, f"{faults} page faults: the freed frame was returned to the kernel"
