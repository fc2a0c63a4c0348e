"""
The barest reduction of `bench_peers.py`'s night built on ccdproc's functions: the floor
under ``ccdproc-ext reduce`` on that night, run by ``bench_peers.py`` as the reducers
``chain`` and ``io``.

chain
    Master bias, dark and flat combined with `ccdproc_ext.combine` (``reduce_night``'s
    defaults: average of float32 frames after one 5-sigma clipping around the median,
    with the MAD's deviation), darks less the master bias, flats less the master bias
    and dark and scaled by their inverse median, each calibration frame with
    `ccdproc.subtract_bias` and `ccdproc.subtract_dark`; then each light frame, in one
    worker process per core, with `ccdproc.subtract_bias`, `ccdproc.subtract_dark` and
    `ccdproc.flat_correct`, written as float32 pixels with its raw header. Nothing else:
    no check of the calibration frames, no bad-pixel mask, no uncertainty, no checksum,
    no plan, no provenance, no report; masters kept in memory, not written.
io
    Every raw frame read once (float32) and one float32 image written per light frame,
    in one worker process per core: no arithmetic. The import of ccdproc is paid too.

Usage::

    python benchmarks/peers_chain.py RAW OUT [--io-only]

``RAW`` is a night made by ``bench_peers.py`` (``biases``, ``darks``, ``flats`` and
``lights`` folders); the light frames are written to ``OUT/science/<raw name>``.
"""

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import astropy.units as u
import ccdproc
import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.stats import mad_std

from ccdproc_ext import combine

WORKERS = os.cpu_count() or 1
MASTERS = {}  # set before the worker processes are forked, so that they inherit them


def read(path):
    """A raw frame as float32 CCDData in ADU, with its header."""
    with fits.open(path) as hdul:
        return CCDData(hdul[0].data.astype(np.float32), unit="adu",
                       meta=hdul[0].header.copy())


def _bare(master):
    """The master's pixels only, as the frames' arithmetic should see them."""
    return CCDData(master.data, unit=master.unit, meta=master.meta)


def master_of(paths, calibrate=None, scale=False):
    """Combine the frames of ``paths``, each calibrated by ``calibrate`` first."""
    def prepared(path):
        frame = read(path)
        return calibrate(frame) if calibrate else frame

    with ThreadPoolExecutor(WORKERS) as pool:
        frames = list(pool.map(prepared, paths))
    options = {"scale": [1 / np.median(frame.data) for frame in frames]} if scale else {}
    master = combine(frames, method="average", sigma_clip=True, sigma_clip_low_thresh=5,
                     sigma_clip_high_thresh=5, sigma_clip_func=np.ma.median,
                     sigma_clip_dev_func=mad_std, dtype=np.float32, **options)
    return _bare(master)


def build_masters(raw):
    """The master bias, dark and (normalised) flat of the night."""
    def kind(folder):
        return sorted((raw / folder).glob("*.fits"))

    bias = master_of(kind("biases"))
    dark = master_of(kind("darks"), lambda frame: ccdproc.subtract_bias(frame, bias))

    def flat_frame(frame):
        frame = ccdproc.subtract_bias(frame, bias)
        return ccdproc.subtract_dark(frame, dark, exposure_time="EXPTIME",
                                     exposure_unit=u.s, scale=False)

    flat = master_of(kind("flats"), flat_frame, scale=True)
    flat.data /= np.float32(np.mean(flat.data, dtype=np.float64))
    return {"bias": bias, "dark": dark, "flat": flat}


def calibrate_light(path, out):
    """Calibrate one light frame with the inherited masters and write it."""
    frame = read(path)
    frame = ccdproc.subtract_bias(frame, MASTERS["bias"])
    frame = ccdproc.subtract_dark(frame, MASTERS["dark"], exposure_time="EXPTIME",
                                  exposure_unit=u.s, scale=False)
    frame = ccdproc.flat_correct(frame, MASTERS["flat"], norm_value=1)
    fits.writeto(out / path.name, frame.data.astype(np.float32, copy=False),
                 frame.header, overwrite=True)


def copy_light(path, out):
    """Read one light frame as float32 and write it unchanged."""
    frame = read(path)
    fits.writeto(out / path.name, frame.data, frame.header, overwrite=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("raw", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--io-only", action="store_true",
                        help="read every frame and write the lights, no arithmetic")
    args = parser.parse_args(argv)
    science = args.out / "science"
    science.mkdir(parents=True)
    if args.io_only:
        with ThreadPoolExecutor(WORKERS) as pool:
            for folder in ("biases", "darks", "flats"):
                list(pool.map(read, sorted((args.raw / folder).glob("*.fits"))))
        task = copy_light
    else:
        MASTERS.update(build_masters(args.raw))
        task = calibrate_light
    lights = sorted((args.raw / "lights").glob("*.fits"))
    with ProcessPoolExecutor(WORKERS, mp_context=get_context("fork")) as pool:
        for future in [pool.submit(task, path, science) for path in lights]:
            future.result()
    return 0


if __name__ == "__main__":
    sys.exit(main())
