"""
Side-by-side benchmark of `ccdproc.combine` and `ccdproc_ext.combine.combine`.

Writes synthetic uint16 frames of Palomar LFC size (4128 x 2048, stored as int16 with
BZERO = 32768, as cameras write them) to a temporary folder, then combines the first
N of them with both implementations, under the same ``mem_limit``, for

- ``median``: ``method="median"``,
- ``sigma``: ``method="average", sigma_clip=True`` with `numpy.ma.median` as centre
  and `astropy.stats.mad_std` as deviation.

Every run is a fresh Python process, so that its peak resident memory (``VmHWM``) is its
own; the time is that of the ``combine`` call alone. The two outputs of each case are
compared pixel by pixel.

Usage::

    python benchmarks/bench_combine.py                  # 10, 20, 40 LFC frames
    python benchmarks/bench_combine.py --quick          # small frames, a few seconds
    python benchmarks/bench_combine.py --frames 10 20 --shape 4128 2048 \\
        --mem-limits 16e9 2e9 --methods median sigma
    python benchmarks/bench_combine.py --camera-scale   # ours against the read floor:
        # 15, 30, 60 frames of 2000 x 3000 (mem_limit 1e9) and 100 of 6000 x 4000 (2e9)
    python benchmarks/bench_combine.py --camera-scale --no-large   # without the 100
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _memory import memory_kib  # benchmarks/ is sys.path[0] when run as a script

LFC_SHAPE = (4128, 2048)
QUICK_SHAPE = (516, 256)
IMPLEMENTATIONS = ("ccdproc", "ours")

# Targets of the project for the full-size run.
TARGET_FRAMES = 20
TARGET_SPEEDUP = 5.0
TARGET_MEMORY_RATIO = 4.0
# time ~ frames**k counts as roughly linear up to this k. The medians' sorting networks
# cost O(n log² n) per pixel, an exponent of about 1.25 between 10 and 40 frames;
# re-reading every file for every chunk (ccdproc issue #1012) tends to 2.
LINEAR_EXPONENT = 1.35


def _combine_options(method):
    """Keyword arguments of combine for a named case (built in the worker process)."""
    if method == "median":
        return {"method": "median"}
    if method == "sigma":
        from astropy.stats import mad_std

        return {
            "method": "average",
            "sigma_clip": True,
            "sigma_clip_func": np.ma.median,
            "sigma_clip_dev_func": mad_std,
        }
    raise ValueError(f"unknown case {method!r}")


def _worker(implementation, method, mem_limit, list_file, save_prefix):
    """Run one combine in this (fresh) process and print what it cost as JSON."""
    import ccdproc

    from ccdproc_ext.combine import combine as ours

    files = Path(list_file).read_text().split()
    if implementation == "floor":
        # The read floor: every file read once, whole, by astropy (decoded as combine
        # decodes it: big-endian int16 + BZERO to native uint16), nothing else.
        from astropy.io import fits

        baseline_kib = memory_kib("VmRSS")
        start = time.perf_counter()
        for name in files:
            with fits.open(name, memmap=False) as hdul:
                hdul[0].data  # noqa: B018 (reading is the point)
        costs = {"seconds": time.perf_counter() - start,
                 "peak_bytes": memory_kib("VmHWM") * 1024,
                 "baseline_bytes": baseline_kib * 1024}
        print(json.dumps(costs))
        return
    combine = ccdproc.combine if implementation == "ccdproc" else ours
    options = _combine_options(method)
    baseline_kib = memory_kib("VmRSS")
    start = time.perf_counter()
    result = combine(files, mem_limit=mem_limit, **options)
    seconds = time.perf_counter() - start
    peak_kib = memory_kib("VmHWM")
    if save_prefix:
        np.save(f"{save_prefix}_data.npy", result.data)
        np.save(f"{save_prefix}_uncertainty.npy", result.uncertainty.array)
        np.save(f"{save_prefix}_mask.npy", result.mask)
    costs = {"seconds": seconds, "peak_bytes": peak_kib * 1024}
    costs["baseline_bytes"] = baseline_kib * 1024
    print(json.dumps(costs))


def _write_frames(folder, n_frames, shape, seed=12345):
    """Bias-like uint16 frames: level, read noise, a slope, and cosmic rays."""
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 20, shape[1], dtype=np.float32)
    paths = []
    for index in range(n_frames):
        data = rng.standard_normal(shape, dtype=np.float32)
        data *= 8.0
        data += 1000.0 + ramp
        hits = rng.integers(0, data.size, data.size // 2000)
        data.flat[hits] += rng.uniform(200, 20000, hits.size).astype(np.float32)
        hdu = fits.PrimaryHDU(np.clip(data, 0, 65535).astype(np.uint16))
        hdu.header["BUNIT"] = "adu"
        hdu.header["IMAGETYP"] = "BIAS"
        hdu.header["EXPTIME"] = 0.0
        path = Path(folder) / f"frame_{index:03d}.fits"
        hdu.writeto(path)
        paths.append(str(path))
    return paths


def _run(implementation, method, mem_limit, files, folder, save_prefix):
    list_file = Path(folder) / "files.txt"
    list_file.write_text("\n".join(files))
    command = [
        sys.executable,
        __file__,
        "--worker",
        implementation,
        method,
        repr(mem_limit),
        str(list_file),
        save_prefix or "",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{implementation} {method} failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _compare_outputs(prefix_a, prefix_b):
    """'identical', or the largest relative difference of data and uncertainty."""
    worst = 0.0
    for part in ("data", "uncertainty", "mask"):
        a = np.load(f"{prefix_a}_{part}.npy")
        b = np.load(f"{prefix_b}_{part}.npy")
        if part == "mask":
            if not np.array_equal(a, b):
                return "MASKS DIFFER"
            continue
        if np.array_equal(a, b, equal_nan=True):
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = np.abs(a - b) / np.maximum(np.abs(a), np.abs(b))
        worst = max(worst, float(np.nanmax(relative)))
    for path in Path(prefix_a).parent.glob("*.npy"):
        path.unlink()
    return "identical" if worst == 0 else f"rel. diff {worst:.1e}"


def _gb(n_bytes):
    return f"{n_bytes / 1e9:.2f} GB"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Time ccdproc.combine and ccdproc_ext's combine side by side."
    )
    parser.add_argument("--quick", action="store_true", help=f"frames of {QUICK_SHAPE}")
    parser.add_argument("--frames", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--shape", type=int, nargs=2, default=None, metavar=("NY", "NX"))
    parser.add_argument("--mem-limits", type=float, nargs="+", default=[16e9, 2e9])
    parser.add_argument(
        "--methods", nargs="+", default=["median", "sigma"], choices=["median", "sigma"]
    )
    parser.add_argument("--no-check", action="store_true", help="do not compare the outputs")
    parser.add_argument("--camera-scale", action="store_true",
                        help="ours against the read floor at the scale of today's cameras")
    parser.add_argument("--no-large", action="store_true",
                        help="with --camera-scale: skip the 100 frames of 6000 x 4000")
    args = parser.parse_args(argv)
    if args.camera_scale:
        camera_scale(large=not args.no_large)
        return
    shape = tuple(args.shape) if args.shape else (QUICK_SHAPE if args.quick else LFC_SHAPE)
    frame_counts = sorted(args.frames)

    wall_start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_combine_") as folder:
        print(f"writing {frame_counts[-1]} uint16 frames of {shape[0]} x {shape[1]} to {folder}")
        all_files = _write_frames(folder, frame_counts[-1], shape)
        header = (
            f"{'frames':>6} {'case':>6} {'mem_limit':>9} | {'ccdproc':>8} {'ours':>7} "
            f"{'speed-up':>8} | {'ccdproc peak':>12} {'ours peak':>10} {'ratio':>6} "
            f"{'ours extra':>10} | output"
        )
        print(header)
        print("-" * len(header))
        for n_frames in frame_counts:
            for method in args.methods:
                for mem_limit in args.mem_limits:
                    results = {}
                    for implementation in IMPLEMENTATIONS:
                        prefix = None if args.no_check else str(Path(folder) / implementation)
                        results[implementation] = _run(
                            implementation, method, mem_limit, all_files[:n_frames], folder, prefix
                        )
                    same = "not checked"
                    if not args.no_check:
                        same = _compare_outputs(
                            str(Path(folder) / "ccdproc"), str(Path(folder) / "ours")
                        )
                    theirs, ours = results["ccdproc"], results["ours"]
                    row = {
                        "frames": n_frames,
                        "method": method,
                        "mem_limit": mem_limit,
                        "speedup": theirs["seconds"] / ours["seconds"],
                        "memory_ratio": theirs["peak_bytes"] / ours["peak_bytes"],
                        "seconds": {"ccdproc": theirs["seconds"], "ours": ours["seconds"]},
                        "ours_extra": ours["peak_bytes"] - ours["baseline_bytes"],
                    }
                    rows.append(row)
                    print(
                        f"{n_frames:>6} {method:>6} {mem_limit:>9.3g} | "
                        f"{theirs['seconds']:>7.2f}s {ours['seconds']:>6.2f}s "
                        f"{row['speedup']:>7.1f}x | {_gb(theirs['peak_bytes']):>12} "
                        f"{_gb(ours['peak_bytes']):>10} {row['memory_ratio']:>5.1f}x "
                        f"{_gb(row['ours_extra']):>10} | {same}",
                        flush=True,
                    )
        _check_memory_bound(args.methods, all_files, shape, folder)
    print(
        "\nspeed-up = ccdproc time / ours; ratio = ccdproc peak RSS / ours; extra = "
        "peak RSS above the RSS after imports (what mem_limit bounds)."
    )
    _report_targets(rows, shape)
    print(f"total wall time {time.perf_counter() - wall_start:.0f} s")


def _check_memory_bound(methods, files, shape, folder):
    """Ours alone, under a limit just above the float64 output image (data, uncertainty
    and mask): the bands must shrink to fit."""
    mem_limit = shape[0] * shape[1] * 17 + 32e6
    print(f"\nours alone with {len(files)} frames under mem_limit {mem_limit:.3g} bytes:")
    for method in methods:
        costs = _run("ours", method, mem_limit, files, folder, None)
        extra = costs["peak_bytes"] - costs["baseline_bytes"]
        print(
            f"  {method:>6}: {costs['seconds']:.2f}s, extra {_gb(extra)} -> "
            f"{'within' if extra <= mem_limit else 'OVER'} the limit"
        )


def _report_targets(rows, shape):
    print("\ntargets:")
    if shape == LFC_SHAPE:
        for row in rows:
            if row["frames"] == TARGET_FRAMES and row["method"] == "median":
                met = (
                    row["speedup"] >= TARGET_SPEEDUP and row["memory_ratio"] >= TARGET_MEMORY_RATIO
                )
                print(
                    f"  median of {TARGET_FRAMES} LFC frames, mem_limit "
                    f"{row['mem_limit']:.3g}: {row['speedup']:.1f}x faster (target >= "
                    f"{TARGET_SPEEDUP:g}x), 1/{row['memory_ratio']:.1f} of the peak memory "
                    f"(target <= 1/{TARGET_MEMORY_RATIO:g}) -> {'MET' if met else 'NOT MET'}"
                )
    else:
        print(f"  (the speed and memory targets are defined for {LFC_SHAPE} frames)")
    # Growth of the time with the number of frames: the exponent k of time ~ frames**k,
    # fitted in log-log; 1 is linear, 2 quadratic.
    for method in sorted({row["method"] for row in rows}):
        for mem_limit in sorted({row["mem_limit"] for row in rows}):
            case = [
                row for row in rows if row["method"] == method and row["mem_limit"] == mem_limit
            ]
            if len({row["frames"] for row in case}) < 2:
                continue
            frames = np.log([row["frames"] for row in case])
            exponents = {
                name: np.polyfit(frames, np.log([row["seconds"][name] for row in case]), 1)[0]
                for name in IMPLEMENTATIONS
            }
            verdict = "roughly linear" if exponents["ours"] <= LINEAR_EXPONENT else "NOT linear"
            print(
                f"  {method}, mem_limit {mem_limit:.3g}: time ~ frames**k with k = "
                f"{exponents['ours']:.2f} for ours ({verdict}), "
                f"{exponents['ccdproc']:.2f} for ccdproc"
            )


# ------------------------------------------------------------------- camera scale

#: Frames of a 6-megapixel camera, combined 15, 30 and 60 at a time under a 1 GB limit.
CAMERA_SHAPE = (2000, 3000)
CAMERA_FRAMES = (15, 30, 60)
CAMERA_MEM_LIMIT = 1e9
#: And 100 frames of a 24-megapixel camera under the default limit.
LARGE_SHAPE = (6000, 4000)
LARGE_FRAMES = 100
LARGE_MEM_LIMIT = 2e9
# Targets: time ~ frames**k with k at most this; ratios to the read floor; memory.
CAMERA_EXPONENT = 1.1
CAMERA_FLOOR_RATIO = {"median": 3.0, "sigma": 5.0}
MEMORY_MARGIN = 400e6


def camera_scale(*, large=True):
    """Ours alone against the read floor, each run in a fresh process (warm files)."""
    wall_start = time.perf_counter()
    cases = [(CAMERA_SHAPE, n, CAMERA_MEM_LIMIT) for n in CAMERA_FRAMES]
    if large:
        cases.append((LARGE_SHAPE, LARGE_FRAMES, LARGE_MEM_LIMIT))
    rows = []
    header = (f"{'frames':>6} {'shape':>11} {'case':>6} {'mem_limit':>9} | {'floor':>7} "
              f"{'ours':>7} {'/floor':>6} | {'extra memory':>12} {'limit+400MB':>11}")
    with tempfile.TemporaryDirectory(prefix="bench_combine_") as folder:
        written = {}
        for shape in dict.fromkeys(shape for shape, _, _ in cases):
            n_files = max(n for case_shape, n, _ in cases if case_shape == shape)
            sub = Path(folder) / f"{shape[0]}x{shape[1]}"
            sub.mkdir()
            print(f"writing {n_files} uint16 frames of {shape[0]} x {shape[1]}", flush=True)
            written[shape] = _write_frames(sub, n_files, shape)
        print(header)
        print("-" * len(header))
        for shape, n_frames, mem_limit in cases:
            files = written[shape][:n_frames]
            _run("floor", "median", mem_limit, files, folder, None)  # warms the page cache
            floor = min(_run("floor", "median", mem_limit, files, folder, None)["seconds"]
                        for _ in range(2))
            for method in ("median", "sigma"):
                ours = _run("ours", method, mem_limit, files, folder, None)
                extra = ours["peak_bytes"] - ours["baseline_bytes"]
                row = {"frames": n_frames, "shape": shape, "method": method,
                       "seconds": ours["seconds"], "floor": floor,
                       "ratio": ours["seconds"] / floor, "extra": extra,
                       "within": extra <= mem_limit + MEMORY_MARGIN}
                rows.append(row)
                print(f"{n_frames:>6} {shape[0]:>5}x{shape[1]:<5} {method:>6} "
                      f"{mem_limit:>9.3g} | {floor:>6.2f}s {row['seconds']:>6.2f}s "
                      f"{row['ratio']:>5.1f}x | {_gb(extra):>12} "
                      f"{'within' if row['within'] else 'OVER':>11}", flush=True)
    print("\nfloor = reading every file once with astropy, in a fresh process; ours = "
          "ccdproc_ext.combine with all cores; extra memory = peak RSS above the RSS "
          "after imports.")
    print("\ntargets:")
    for method in ("median", "sigma"):
        case = [row for row in rows if row["method"] == method and row["shape"] == CAMERA_SHAPE]
        exponent = np.polyfit(np.log([row["frames"] for row in case]),
                              np.log([row["seconds"] for row in case]), 1)[0]
        floor_exponent = np.polyfit(np.log([row["frames"] for row in case]),
                                    np.log([row["floor"] for row in case]), 1)[0]
        largest = case[-1]
        print(f"  {method}: time ~ frames**k, k = {exponent:.2f} (target <= "
              f"{CAMERA_EXPONENT}; the read floor's k = {floor_exponent:.2f}) -> "
              f"{'MET' if exponent <= CAMERA_EXPONENT else 'NOT MET'}")
        print(f"  {method}: {largest['frames']} frames at {largest['ratio']:.1f}x the read "
              f"floor (target <= {CAMERA_FLOOR_RATIO[method]:g}x) -> "
              f"{'MET' if largest['ratio'] <= CAMERA_FLOOR_RATIO[method] else 'NOT MET'}")
    print(f"  memory within mem_limit + 400 MB in every run: "
          f"{'MET' if all(row['within'] for row in rows) else 'NOT MET'}")
    print(f"total wall time {time.perf_counter() - wall_start:.0f} s")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(*sys.argv[2:4], float(sys.argv[4]), *sys.argv[5:7])
    else:
        main()
