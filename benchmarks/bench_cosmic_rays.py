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
before (as `reduce_night` does). The parts of the cosmic rays are timed too: L.A.Cosmic's
settings (the stars' FWHM measured), the boxes searched, and L.A.Cosmic in those boxes
against L.A.Cosmic over the whole frame (the same hits: the recall of both is printed).

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

from ccdproc_ext import (
    calibrate_frame,
    cosmic_rays,
    make_master_bias,
    make_master_dark,
    make_master_flat,
)
from ccdproc_ext.bpm import make_bad_pixel_mask
from ccdproc_ext.cosmic_rays import cosmic_ray_settings, detect_cosmic_rays
from ccdproc_ext.master_frame import MasterFrame
from ccdproc_ext.outputs import write_atomic
from ccdproc_ext.profiles import get_profile
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

        # The parts of cosmic_rays=True: the settings (the PSF measured), the boxes,
        # L.A.Cosmic in them and over the whole frame.
        parts = {name: [] for name in ("settings", "boxes", "in boxes", "whole frame",
                                       "covered", "recall boxes", "recall whole")}
        for raw in science:
            ccd = calibrate_frame(raw, "generic", master_bias=masters["bias"],
                                  master_dark=masters["dark"], master_flat=masters["flat"])
            sky, noise = sky_statistics(ccd.data)
            start = time.perf_counter()
            settings = cosmic_ray_settings(ccd, gain=night.gain, read_noise=night.read_noise,
                                           sky=sky, noise=noise)
            parts["settings"].append(time.perf_counter() - start)
            start = time.perf_counter()
            boxes = cosmic_rays.search_boxes(ccd.data, gain=night.gain,
                                         read_noise=night.read_noise)
            parts["boxes"].append(time.perf_counter() - start)
            parts["covered"].append(_covered(boxes, ccd.shape))
            truth = night.cosmic_rays[raw.name]
            for name, search in (("in boxes", cosmic_rays.search_boxes),
                                 ("whole frame", lambda *args, **kwargs: None)):
                cosmic_rays.search_boxes, original = search, cosmic_rays.search_boxes
                try:
                    start = time.perf_counter()
                    _, found = detect_cosmic_rays(
                        ccd, gain=settings.gain, read_noise=settings.read_noise,
                        psffwhm=settings.fwhm, objlim=settings.objlim, niter=settings.niter)
                    parts[name].append(time.perf_counter() - start)
                finally:
                    cosmic_rays.search_boxes = original
                recall = "recall boxes" if name == "in boxes" else "recall whole"
                parts[recall].append((found & truth).sum() / truth.sum())
        clear_master_cache()
        header = fits.getheader(tasks[True][0].output)

    plain = statistics.median(times[False])
    with_rays = statistics.median(times[True])
    print(f"\nper science frame ({args.size} x {args.size}, median of {len(science)}):")
    print(f"  calibration without cosmic rays   {plain:8.3f} s")
    print(f"  calibration with cosmic_rays=True {with_rays:8.3f} s")
    median = {name: statistics.median(values) for name, values in parts.items()}
    print(f"    of which the settings (FWHM)    {median['settings']:8.3f} s")
    print(f"    of which the boxes searched     {median['boxes']:8.3f} s "
          f"({median['covered']:.0%} of the frame)")
    print(f"    L.A.Cosmic in the boxes         {median['in boxes']:8.3f} s "
          f"(with the boxes' search)")
    print(f"    L.A.Cosmic over the whole frame {median['whole frame']:8.3f} s")
    print(f"  cosmic rays cost / the rest       {(with_rays - plain) / plain:8.2f} x")
    print(f"  with / without                    {with_rays / plain:8.2f} x")
    print(f"  hits found (recall), boxes        {min(parts['recall boxes']):.3f} .. "
          f"{max(parts['recall boxes']):.3f} (FWHM {header['CRFWHM']} px, "
          f"objlim {header['CROBJLIM']})")
    print(f"  hits found (recall), whole frame  {min(parts['recall whole']):.3f} .. "
          f"{max(parts['recall whole']):.3f}")


def _covered(boxes, shape):
    """The fraction of a frame the boxes cover (1 when the whole frame is searched)."""
    if boxes is None:
        return 1.0
    covered = np.zeros(shape, bool)
    for box in boxes:
        covered[box] = True
    return float(covered.mean())

if __name__ == "__main__":
    main()
