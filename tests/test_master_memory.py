"""The memory a master holds at once, counted by tracemalloc (numpy's arrays are traced).

Half of ``mem_limit`` holds calibrated frames (the others wait in temporary files); each
thread that reads and calibrates a frame holds at most two frames of the chain (a step's
input and its output); one frame more is being written to its temporary file. Frames
calibrated ahead by the threads must not pile up in memory beyond that, nor the raw
frame stay beside its calibrated copies.

The frames are large enough (8 MiB in float32) that what does not grow with them is small
beside them; the samples the calibration-frame checks keep (2**18 pixels, 1 MiB, a frame)
are counted in the bound.
"""

import tracemalloc

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

from ccdproc_ext import make_master_dark

SHAPE = (1024, 2048)
FRAME = SHAPE[0] * SHAPE[1] * 4  # one calibrated frame, float32
N_DARKS = 6
BIAS_LEVEL = 1000.0
SAMPLE = 2**18 * 4  # what the checks keep of each frame


@pytest.fixture(scope="module")
def darks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("darks")
    rng = np.random.default_rng(7)
    paths = []
    for i in range(N_DARKS):
        data = np.round(BIAS_LEVEL + 30 + rng.normal(0, 8, SHAPE)).astype(np.uint16)
        path = folder / f"dark_{i}.fits"
        fits.PrimaryHDU(data, fits.Header({"IMAGETYP": "dark", "EXPTIME": 60.0})).writeto(path)
        paths.append(path)
    return paths


#: The caller's master bias: held before the master is made, not counted.
MASTER_BIAS = CCDData(np.full(SHAPE, BIAS_LEVEL, np.float32), unit="adu",
                      meta={"EXPTIME": 0.0})


def _master(darks, folder, *, workers, mem_limit):
    return make_master_dark(darks, "generic", master_bias=MASTER_BIAS, workers=workers,
                            mem_limit=mem_limit, temporary_dir=folder,
                            combine_options={"compute_uncertainty": False})


@pytest.mark.parametrize("workers", [1, 2])
def test_a_master_holds_half_its_limit_and_two_frames_a_thread(darks, tmp_path, workers):
    mem_limit = 4 * FRAME  # two calibrated frames held, four spilled
    _master(darks[:3], tmp_path, workers=workers, mem_limit=mem_limit)  # (imports)
    tracemalloc.start()
    try:
        master = _master(darks, tmp_path, workers=workers, mem_limit=mem_limit)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # (with two threads: mem_limit plus three frames, and the samples)
    bound = mem_limit / 2 + (2 * workers + 1) * FRAME + N_DARKS * SAMPLE
    assert peak <= bound, f"{peak / FRAME:.2f} frames held at once, {bound / FRAME:g} allowed"
    # Frames spilled to files make the same master as frames all held.
    held = _master(darks, tmp_path, workers=workers, mem_limit=1e9)
    np.testing.assert_array_equal(master.data, held.data)
