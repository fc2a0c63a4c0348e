"""
Micro-benchmark of the kernels of `ccdproc_ext._kernels` against bottleneck and numpy,
side by side in one run: medians, medians with their absolute deviation, and the
rejections of a median/MAD sigma clipping, along the frame axis of one band of rows.

For every number of frames N and every type (uint16 as raw frames are stored, float32),
a stack of N frames of one band (``--band`` rows x columns, 200 x 3000 by default, the
size of the bands `combine` cuts) is made once, then each kernel is timed ``--repeats``
times at most on it (the best time is kept; a kernel whose runs took half a second is
not run again) in this process, one thread each:

- ``median``: ours (`integer_median` for uint16, `nanmedian` for float32) against
  ``bottleneck.median``, ``bottleneck.nanmedian`` (what ccdproc's ``median_combine``
  calls) and ``numpy.median`` along axis 0, and ``bottleneck.median`` on a copy with
  the frames last (each pixel's values contiguous, the copy timed too);
- ``median+mad``: ours with ``with_mad=True`` against two medians of bottleneck (the
  median, then the median of the absolute deviations), along axis 0 and frames last;
- ``sigma-clip``: ours (`sigma_clip_rejections` on its exact fast path, given the
  integers for uint16) against the same rejections computed with two bottleneck
  medians (along axis 0 and frames last), and against ``astropy.stats.sigma_clip``
  (``cenfunc="median"``, ``stdfunc="mad_std"``, one iteration).

Every result of ours is compared with bottleneck's first (the same values, bit for bit).
No time is asserted.

.. code-block:: console

    $ python benchmarks/bench_kernels.py                    # N = 3 ... 64, 200 x 3000
    $ python benchmarks/bench_kernels.py --quick            # a few seconds
    $ python benchmarks/bench_kernels.py --frames 25 64 128 --band 100 3000

It prints, for every kernel, type and N, our time and each other's time divided by ours
(above 1: ours is faster), then, for every kernel and type, the first N at which the best
of the others is faster than ours: where the sorting networks stop paying.
"""

import argparse
import time

import bottleneck as bn
import numpy as np
from astropy import stats

from ccdproc_ext._kernels import (
    MAD_TO_STD,
    integer_median,
    nanmedian,
    sigma_clip_rejections,
)

FRAMES = (3, 5, 7, 9, 15, 25, 40, 64)
BAND = (200, 3000)
QUICK_FRAMES = (3, 9, 25)
QUICK_BAND = (50, 1000)
DTYPES = (np.uint16, np.float32)
# Thresholds of the sigma clipping, in deviations.
SIGMA = 3.0
# Seconds of runs of one kernel after which no more are made (slow ones run once).
RUN_SECONDS = 0.5


def _stack(n_frames, band, dtype, rng):
    """A bias-like stack: a level, read noise and a few cosmic-ray hits."""
    values = rng.normal(1000.0, 8.0, (n_frames, *band))
    hits = rng.integers(0, values.size, values.size // 2000)
    values.flat[hits] += rng.uniform(200, 20000, hits.size)
    return np.round(values).astype(dtype)


def _best_time(function, prepare, repeats):
    """The best of up to ``repeats`` runs of ``function(*prepare())``, ``prepare``
    untimed (fewer once the runs took `RUN_SECONDS`); and the last result."""
    best = np.inf
    spent = 0.0
    result = None
    for _ in range(repeats):
        arguments = prepare()
        start = time.perf_counter()
        result = function(*arguments)
        elapsed = time.perf_counter() - start
        best = min(best, elapsed)
        spent += elapsed
        if spent > RUN_SECONDS:
            break
    return best, result


# ---------------------------------------------------------------------------- medians


def _ours_median(stack, with_mad):
    if stack.dtype.kind in "iu":
        # Reorders its input: given a copy made outside the timer.
        return integer_median(stack, result_dtype=np.dtype(np.float64), with_mad=with_mad)
    return nanmedian(stack, None, order_dtype=np.dtype(np.float32),
                     result_dtype=np.dtype(np.float32), with_mad=with_mad)


def _median_and_mad(median_function, stack, with_mad):
    median = median_function(stack, axis=0)
    if not with_mad:
        return median, None
    # In the median's type (float64 for integers: no wrap-around, no truncated .5).
    return median, median_function(np.abs(stack - median), axis=0)


def _frames_last(stack):
    """The stack as ``(pixels, n_frames)``, contiguous: each pixel's values together, as
    bottleneck reduces fastest (the copy is part of the time)."""
    return np.ascontiguousarray(stack.reshape(stack.shape[0], -1).T)


def _frames_last_median_and_mad(stack, with_mad):
    pixels = _frames_last(stack)
    median = bn.median(pixels, axis=1)
    mad = None
    if with_mad:
        mad = bn.median(np.abs(pixels - median[:, np.newaxis]), axis=1).reshape(stack.shape[1:])
    return median.reshape(stack.shape[1:]), mad


def _median_cases(with_mad):
    """``{name: function(stack)}``; ccdproc's median_combine calls bottleneck's
    nanmedian along axis 0, its sigma_func the same twice."""
    cases = {
        "ours": lambda stack: _ours_median(stack, with_mad),
        "bn.median": lambda stack: _median_and_mad(bn.median, stack, with_mad),
        "bn, frames last": lambda stack: _frames_last_median_and_mad(stack, with_mad),
    }
    if not with_mad:  # the slowest, with half the work: enough to place them
        cases["bn.nanmedian"] = lambda stack: _median_and_mad(bn.nanmedian, stack, False)
        cases["np.median"] = lambda stack: _median_and_mad(np.median, stack, False)
    return cases


# --------------------------------------------------------------------- sigma clipping


def _ours_sigma_clip(stack, integers):
    return sigma_clip_rejections(
        stack,
        low_thresh=SIGMA,
        high_thresh=SIGMA,
        centre_function=np.ma.median,
        deviation_function=stats.mad_std,
        order_dtype=np.dtype(np.float32),
        result_dtype=stack.dtype,
        finite=True,
        integers=integers,
    )


def _bottleneck_sigma_clip(stack, integers):
    centre = bn.median(stack, axis=0)
    deviation = bn.median(np.abs(stack - centre), axis=0) * MAD_TO_STD
    return (stack < centre - SIGMA * deviation) | (stack > centre + SIGMA * deviation)


def _frames_last_sigma_clip(stack, integers):
    pixels = _frames_last(stack)
    centre = bn.median(pixels, axis=1)[:, np.newaxis]
    deviation = bn.median(np.abs(pixels - centre), axis=1)[:, np.newaxis] * MAD_TO_STD
    rejected = (pixels < centre - SIGMA * deviation) | (pixels > centre + SIGMA * deviation)
    return rejected.T.reshape(stack.shape)


def _astropy_sigma_clip(stack, integers):
    return stats.sigma_clip(stack, sigma=SIGMA, maxiters=1, axis=0, cenfunc="median",
                            stdfunc="mad_std", masked=True).mask


SIGMA_CLIP_CASES = {
    "ours": _ours_sigma_clip,
    "bn.median": _bottleneck_sigma_clip,
    "bn, frames last": _frames_last_sigma_clip,
    "astropy": _astropy_sigma_clip,
}


# ------------------------------------------------------------------------------ runs


def _time_kernel(kernel, stack, repeats):
    """``{implementation: seconds}`` of one kernel on one stack, ours checked."""
    times = {}
    results = {}
    if kernel == "sigma-clip":
        # The stack as combine holds it (float32), and the integers for the fast path.
        values = stack.astype(np.float32)
        for name, function in SIGMA_CLIP_CASES.items():
            prepare = (lambda: (values, stack.copy())) if stack.dtype.kind in "iu" \
                else (lambda: (values, None))
            times[name], results[name] = _best_time(function, prepare, repeats)
        if not np.array_equal(results["ours"], results["bn.median"]):
            raise AssertionError(f"sigma-clip, {stack.shape[0]} frames: not bottleneck's")
        return times
    for name, function in _median_cases(kernel == "median+mad").items():
        times[name], results[name] = _best_time(function, lambda: (stack.copy(),), repeats)
    for ours, theirs in zip(results["ours"], results["bn.median"], strict=True):
        if ours is not None and not np.array_equal(ours, theirs):
            raise AssertionError(f"{kernel}, {stack.shape[0]} frames: not bottleneck's")
    return times


def _print_table(kernel, dtype, rows):
    others = [name for name in rows[0][1] if name != "ours"]
    print(f"\n{kernel}, {np.dtype(dtype).name}: our time, and each other's time / ours "
          "(above 1: ours is faster)")
    widths = [max(12, len(name)) for name in others]
    print(f"{'N':>4} {'ours (ms)':>10}  "
          + "  ".join(f"{name:>{width}}" for name, width in zip(others, widths, strict=True)))
    for n_frames, times in rows:
        ratios = "  ".join(f"{times[name] / times['ours']:{width}.2f}"
                           for name, width in zip(others, widths, strict=True))
        print(f"{n_frames:4d} {1e3 * times['ours']:10.1f}  {ratios}")


def _stops_paying(rows):
    """The first N at which the best of the others is faster than ours, or None."""
    for n_frames, times in rows:
        if min(t for name, t in times.items() if name != "ours") < times["ours"]:
            return n_frames
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=None,
                        help=f"numbers of frames (default {' '.join(map(str, FRAMES))})")
    parser.add_argument("--band", type=int, nargs=2, default=None, metavar=("ROWS", "COLUMNS"),
                        help=f"band size (default {BAND[0]} {BAND[1]})")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each kernel at most (the best kept; fewer after "
                             f"{RUN_SECONDS} s)")
    parser.add_argument("--kernels", nargs="+", default=["median", "median+mad", "sigma-clip"],
                        choices=["median", "median+mad", "sigma-clip"])
    parser.add_argument("--quick", action="store_true", help="small band, few frame counts")
    args = parser.parse_args(argv)
    frames = args.frames or (QUICK_FRAMES if args.quick else FRAMES)
    band = tuple(args.band or (QUICK_BAND if args.quick else BAND))

    print(f"bands of {band[0]} x {band[1]} pixels, best of up to {args.repeats} runs, "
          "one thread")
    rng = np.random.default_rng(1)
    tables = {}
    for dtype in DTYPES:
        for n_frames in frames:
            stack = _stack(n_frames, band, dtype, rng)
            for kernel in args.kernels:
                times = _time_kernel(kernel, stack, args.repeats)
                tables.setdefault((kernel, dtype), []).append((n_frames, times))
            del stack
    for (kernel, dtype), rows in tables.items():
        _print_table(kernel, dtype, rows)

    print("\nwhere the sorting networks stop paying (first N at which another is faster):")
    for (kernel, dtype), rows in tables.items():
        n_frames = _stops_paying(rows)
        where = f"N = {n_frames}" if n_frames else f"not up to N = {max(frames)}"
        print(f"  {kernel:>11}, {np.dtype(dtype).name:>7}: {where}")


if __name__ == "__main__":
    main()
