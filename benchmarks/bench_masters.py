"""
What it costs to hold calibrated frames while a master is combined, against the
alternatives: spilling them to temporary files, or calibrating them again as they stream
into the combination.

A master needs each calibrated frame whole before it can be combined: the frames are
compared with each other (`ccdproc_ext.quality.check_calibration_frames`), flats are
scaled by the inverse median of the whole frame, and an overscan fitted with a model
needs every row. So calibrating frames "as they stream into the combination" means a
second read and a second calibration of every frame, piece by piece, while holding means
one of each, in memory up to ``mem_limit / 2`` and in temporary float32 files beyond.
This script measures, per frame, the four costs that decide between them (reading a raw
frame, calibrating it through ccdproc's functions, writing it to a temporary file and
reading it back), and builds the same master bias held in memory and spilled.

Frames are uint16, 4128 x 2080 (Palomar LFC chip 0: 2048 data columns, overscan from
column 2056), bias-like; the profile is ``palomar-lfc``. All files are warm in the page
cache.

Usage::

    python benchmarks/bench_masters.py               # 20 frames
    python benchmarks/bench_masters.py --frames 40 --shape 4128 2080
"""

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from bench_combine import _write_frames  # benchmarks/ is sys.path[0] when run as a script


def _best(function, repeat=3):
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None):
    from ccdproc_ext import calibrate_frame, get_profile, make_master_bias
    from ccdproc_ext.outputs import write_atomic
    from ccdproc_ext.raw import read_frame

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--shape", type=int, nargs=2, default=(4128, 2080))
    args = parser.parse_args(argv)
    profile = get_profile("palomar-lfc")
    with tempfile.TemporaryDirectory(prefix="bench_masters_") as folder:
        folder = Path(folder)
        (folder / "raw").mkdir()
        files = _write_frames(folder / "raw", args.frames, tuple(args.shape))

        raw = read_frame(files[0], profile)
        calibrated = calibrate_frame(raw, profile)
        spilled = folder / "spilled.fits"
        per_frame = {
            "read a raw frame": _best(lambda: read_frame(files[0], profile)),
            "calibrate it (ccdproc chain)": _best(lambda: calibrate_frame(raw, profile)),
            "write it, float32": _best(lambda: write_atomic(calibrated, spilled)),
        }
        # combine reads a spilled frame's pixels with astropy, in large pieces
        per_frame["read it back"] = _best(lambda: fits.getdata(spilled, memmap=False))
        print(f"per frame of {args.shape[0]} x {args.shape[1]} (best of 3):")
        for what, seconds in per_frame.items():
            print(f"  {what:<30} {seconds * 1e3:7.1f} ms")
        stream = per_frame["read a raw frame"] + per_frame["calibrate it (ccdproc chain)"]
        spill = per_frame["write it, float32"] + per_frame["read it back"]
        print(f"  streaming adds a second read and calibration: {stream * 1e3:.1f} ms; "
              f"spilling adds a write and a read: {spill * 1e3:.1f} ms "
              f"({stream / spill:.1f}x less)")

        frame_bytes = calibrated.data.nbytes
        # Half of mem_limit holds calibrated frames, the other half is combine's.
        held_limit = 4 * frame_bytes * args.frames  # every frame fits
        spill_limit = frame_bytes * args.frames  # half of the frames are spilled
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            times = {}
            results = {}
            for name, limit in (("held", held_limit), ("spilled", spill_limit)):
                start = time.perf_counter()
                results[name] = make_master_bias(files, profile, mem_limit=limit,
                                                 temporary_dir=folder)
                times[name] = time.perf_counter() - start
        same = np.array_equal(results["held"].data, results["spilled"].data)
        print(f"\nmaster bias of {args.frames} frames: held {times['held']:.2f} s, half spilled "
              f"{times['spilled']:.2f} s ({times['spilled'] / times['held']:.2f}x); same "
              f"pixels: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
