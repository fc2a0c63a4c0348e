"""
Benchmark of ``cosmic_rays=True``: the cost of finding cosmic-ray hits in a science frame
against the rest of its calibration, side by side in one run.

A night is simulated with `ccdproc_ext.simulate.simulate_night` (generic profile, frames of
``--size`` x ``--size`` science pixels after a 16-column overscan, 200 stars and 300 hits
per science frame); its masters are made with ``make_master_bias``, ``make_master_dark``
and ``make_master_flat`` and a bad-pixel mask with ``make_bad_pixel_mask``. Each science
frame is then run as `reduce_night` runs it (`ccdproc_ext.science.run_task`: read,
calibrate, bad pixels, sky statistics, MASK bits, write), once without and once with
cosmic rays, alternately, in this process, with the masters read and prepared once
before (as `reduce_night` does). The L.A.Cosmic call alone and the PSF measurement are
timed too.

.. code-block:: console

    $ python benchmarks/bench_cosmic_rays.py                 # 2048 x 2048, 5 frames
    $ python benchmarks/bench_cosmic_rays.py --size 1024 --frames 3

It prints the median time per frame of each and the ratio.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from ccdproc_ext import calibrate_frame, make_master_bias, make_master_dark, make_master_flat
from ccdproc_ext.masters import MasterFrame
from ccdproc_ext.outputs import write_atomic
from ccdproc_ext.profiles import get_profile
from ccdproc_ext.quality import detect_cosmic_rays, make_bad_pixel_mask, measure_fwhm
from ccdproc_ext.science import (
    MasterRef,
    ScienceTask,
    clear_master_cache,
    prepare_masters,
    run_task,
    sky_statistics,
)
from ccdproc_ext.simulate import simulate_night


def _masters(night, folder):
    """The masters of the night, written; ``{kind: MasterFrame}``."""
    bias = make_master_bias(night.paths("bias"), output_file=folder / "bias_01.fits")
    darks = [p for p in night.paths("dark") if "60s" in p.name]
    dark = make_master_dark(darks, master_bias=bias, output_file=folder / "dark_60s_01.fits")
    flat = make_master_flat(night.paths("flat"), master_bias=bias, master_dark=dark,
                            output_file=folder / "flat_R_01.fits")
    bpm = make_bad_pixel_mask(dark, flat, dark_exposure=60.0)
    bpm.meta["FILENAME"] = "bpm_01.fits"
    write_atomic(bpm, folder / "bpm_01.fits", dtype=np.uint8)
    profile = get_profile("generic")
    return {kind: MasterFrame.of(folder / name, profile).without_uncertainty()
            for kind, name in (("bias", "bias_01.fits"), ("dark", "dark_60s_01.fits"),
                               ("flat", "flat_R_01.fits"), ("bpm", "bpm_01.fits"))}


def _task(raw, out, masters, cosmic_rays):
    refs = {kind: MasterRef.of(_PATHS[master.name], master.checksum)
            for kind, master in masters.items()}
    return ScienceTask(raw_path=raw, output=out, profile=get_profile("generic"),
                       masters=refs, dark_scale=1.0, recipe="bench",
                       cosmic_rays=cosmic_rays)


#: Master file name -> its path.
_PATHS = {}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="science pixels per side")
    parser.add_argument("--frames", type=int, default=5, help="science frames")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"simulating {args.frames} science frames of {args.size} x {args.size} ...")
        night = simulate_night(tmp / "raw", shape=(args.size, args.size + 16), n_bias=3,
                               dark_exposures=(60.0,), n_dark=3, filters=("R",), n_flat=3,
                               flat_exposure=60.0, n_science=args.frames, n_stars=200,
                               cosmic_rays=300, seed=1)
        (tmp / "masters").mkdir()
        (tmp / "out").mkdir()
        masters = _masters(night, tmp / "masters")
        for master in masters.values():
            _PATHS[master.name] = tmp / "masters" / master.name
        built = {Path(master.name).stem: master for master in masters.values()}
        science = night.paths("science")
        tasks = {flag: [_task(raw, tmp / "out" / f"{flag}_{raw.name}", masters, flag)
                        for raw in science] for flag in (False, True)}
        prepare_masters(tasks[False], built)

        times = {False: [], True: []}
        for index in range(len(science)):
            for flag in (False, True):
                start = time.perf_counter()
                run_task(tasks[flag][index])
                times[flag].append(time.perf_counter() - start)

        # The parts of cosmic_rays=True: the PSF measured, L.A.Cosmic itself.
        fwhm_times, lacosmic_times, hits = [], [], []
        for raw in science:
            ccd = calibrate_frame(raw, "generic", master_bias=masters["bias"],
                                  master_dark=masters["dark"], master_flat=masters["flat"])
            sky, noise = sky_statistics(ccd.data)
            start = time.perf_counter()
            fwhm = measure_fwhm(ccd.data, sky=sky, noise=noise) or 2.5
            fwhm_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            _, found = detect_cosmic_rays(ccd, gain=night.gain, read_noise=night.read_noise,
                                          psffwhm=fwhm)
            lacosmic_times.append(time.perf_counter() - start)
            truth = night.cosmic_rays[raw.name]
            hits.append((found & truth).sum() / truth.sum())
        clear_master_cache()
        header = fits.getheader(tasks[True][0].output)

    plain = statistics.median(times[False])
    with_rays = statistics.median(times[True])
    print(f"\nper science frame ({args.size} x {args.size}, median of {len(science)}):")
    print(f"  calibration without cosmic rays   {plain:8.3f} s")
    print(f"  calibration with cosmic_rays=True {with_rays:8.3f} s")
    print(f"    of which the PSF measured       {statistics.median(fwhm_times):8.3f} s")
    print(f"    of which L.A.Cosmic             {statistics.median(lacosmic_times):8.3f} s")
    print(f"  cosmic rays cost / the rest       {(with_rays - plain) / plain:8.2f} x")
    print(f"  with / without                    {with_rays / plain:8.2f} x")
    print(f"  hits found (recall)               {min(hits):.3f} .. {max(hits):.3f} "
          f"(FWHM {header['CRFWHM']} px)")


if __name__ == "__main__":
    main()
