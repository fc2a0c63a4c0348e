"""
Peak memory of the masters and of a whole night with large frames.

A night of 8000 x 8000 frames (uint16 on disk; float32 once read, 256 MB each) for the
``generic`` profile: 3 bias frames, 3 darks of 60 s, 3 flats of 2 s (V), 2 science frames of
60 s (V). Each frame is a flat level with Gaussian noise (and dark current, light), written
once to a temporary folder. Then, each in a fresh Python process whose peak resident memory
(``VmHWM``) is read at its end, above what the process held before the call (imports, the
masters it was given):

master bias, master dark, master flat
    ``make_master_bias`` (then dark, with the master bias; then flat, with both) of the
    three frames, with the options `~ccdproc_ext.reduce_night` gives it (no uncertainty
    computed, the default ``mem_limit`` unless ``--mem-limit``), ``workers`` threads;
reduce_night
    the whole night with ``workers=1`` (one process: its peak is the night's) and with the
    default workers (the main process, and the largest of its worker processes).

Each peak is printed in MB and in frames (float32 frames of the trimmed size), with the
target: a master's peak at most ``mem_limit`` plus three frames.

Usage::

    python benchmarks/bench_memory.py                     # 8000 x 8000, a few minutes
    python benchmarks/bench_memory.py --shape 2000 2000   # the same night, 16 times smaller
    python benchmarks/bench_memory.py --mem-limit 5e8     # masters under a smaller limit
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _memory import memory_kib  # benchmarks/ is sys.path[0] when run as a script

#: (image type, exposure, filter, level in ADU, how many)
NIGHT = (("bias", 0.0, "", 1000.0, 3), ("dark", 60.0, "", 1030.0, 3),
         ("flat", 2.0, "V", 21000.0, 3), ("object", 60.0, "V", 1400.0, 2))
READ_NOISE = 8.0
ROWS_AT_ONCE = 500  # the generator's own memory: a few rows of float32 at a time
DEFAULT_MEM_LIMIT = 2e9  # make_master_*'s default, which reduce_night uses


# ----------------------------------------------------------------------- the night
def _write_night(folder, shape, seed=1):
    """Write the frames of NIGHT; returns ``{type: [paths]}``."""
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    files = {}
    for image_type, exposure, filter_name, level, count in NIGHT:
        for i in range(count):
            data = np.empty(shape, np.uint16)
            for start in range(0, shape[0], ROWS_AT_ONCE):
                rows = data[start:start + ROWS_AT_ONCE]
                noise = rng.standard_normal(rows.shape, dtype=np.float32)
                sigma = np.sqrt(READ_NOISE ** 2 + max(level - 1000.0, 0.0))
                np.clip(level + sigma * noise, 0, 65535, out=noise)
                rows[...] = noise
            header = fits.Header()
            header["IMAGETYP"] = image_type
            header["EXPTIME"] = exposure
            if filter_name:
                header["FILTER"] = filter_name
            header["DATE-OBS"] = f"2024-03-05T0{len(files)}:{10 + i:02d}:00"
            path = Path(folder) / f"{image_type}_{i + 1:02d}.fits"
            fits.PrimaryHDU(data, header=header).writeto(path)
            files.setdefault(image_type, []).append(path)
    return files


# ------------------------------------------------------------------ in the child processes
def _run_master(kind, frames, masters, output, mem_limit, workers):
    from ccdproc_ext import make_master_bias, make_master_dark, make_master_flat

    make = {"bias": make_master_bias, "dark": make_master_dark,
            "flat": make_master_flat}[kind]
    options = {"combine_options": {"compute_uncertainty": False}, "workers": workers,
               "output_file": output, "temporary_dir": Path(output).parent,
               "mem_limit": mem_limit, "skip_bad_frames": True}
    options.update({f"master_{k}": v for k, v in masters.items()})
    if kind == "flat":
        options["scale_dark"] = True
    make(frames, "generic", **options)


def _run_night(raw, out, workers):
    from ccdproc_ext import reduce_night

    result = reduce_night(raw, out, "generic", progress=False, workers=workers)
    if len(result.problems):
        raise RuntimeError(result.summary())


def _warm_up(kind):
    """The same call on a tiny night: the modules it imports are not what is measured."""
    from ccdproc_ext import reduce_night

    with tempfile.TemporaryDirectory() as folder:
        raw = Path(folder) / "raw"
        raw.mkdir()
        _write_night(raw, (16, 16))
        reduce_night(raw, Path(folder) / "out", "generic", progress=False, workers=1,
                     report=kind == "night")


def _worker(kind, arguments):
    """One run in this fresh process; prints its peak memory as JSON."""
    import resource

    arguments = json.loads(arguments)
    _warm_up(kind)
    baseline = memory_kib("VmRSS") * 1024
    start = time.perf_counter()
    if kind == "night":
        _run_night(**arguments)
    else:
        _run_master(kind, **arguments)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps({"seconds": time.perf_counter() - start, "baseline": baseline,
                      "peak": memory_kib("VmHWM") * 1024, "largest_child": children}))


# ------------------------------------------------------------------------- in the parent
def _run(kind, **arguments):
    command = [sys.executable, __file__, "--worker", kind, json.dumps(arguments)]
    process = subprocess.run(command, capture_output=True, text=True)
    if process.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{process.stderr}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].strip())
    parser.add_argument("--shape", type=int, nargs=2, default=(8000, 8000),
                        metavar=("ROWS", "COLS"))
    parser.add_argument("--mem-limit", type=float, default=DEFAULT_MEM_LIMIT,
                        help="mem_limit of the masters (default: make_master_*'s, 2e9)")
    parser.add_argument("--workers", type=int, default=None,
                        help="threads of the masters (default: one per core)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    try:
        _benchmark(root, tuple(args.shape), args.mem_limit, args.workers)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _benchmark(root, shape, mem_limit, workers):
    raw = root / "raw"
    raw.mkdir()
    start = time.perf_counter()
    files = _write_night(raw, shape)
    frame = shape[0] * shape[1] * 4  # a float32 frame
    print(f"wrote {sum(map(len, files.values()))} frames of {shape[1]} x {shape[0]} "
          f"(uint16) in {time.perf_counter() - start:.0f} s; a float32 frame is "
          f"{frame / 1e6:.0f} MB", flush=True)

    results = {}
    masters = {}
    for kind, image_type in (("bias", "bias"), ("dark", "dark"), ("flat", "flat")):
        output = root / f"master_{kind}.fits"
        print(f"running master {kind} ...", flush=True)
        results[f"master {kind}"] = _run(kind, frames=[str(p) for p in files[image_type]],
                                         masters=dict(masters), output=str(output),
                                         mem_limit=mem_limit, workers=workers)
        masters[kind] = str(output)
    for label, night_workers in (("reduce_night(1)", 1), ("reduce_night()", None)):
        print(f"running {label} ...", flush=True)
        out = root / f"out-{night_workers}"
        results[label] = _run("night", raw=str(raw), out=str(out), workers=night_workers)
        shutil.rmtree(out)

    header = (f"{'run':<16} {'time (s)':>9} {'peak (MB)':>10} {'above start (MB)':>17} "
              f"{'frames':>7} {'largest worker (MB)':>20}")
    print("\n" + header)
    print("-" * len(header))
    for label, costs in results.items():
        above = costs["peak"] - costs["baseline"]
        child = costs["largest_child"]
        print(f"{label:<16} {costs['seconds']:>9.1f} {costs['peak'] / 1e6:>10.0f} "
              f"{above / 1e6:>17.0f} {above / frame:>7.2f} "
              f"{child / 1e6 if child else 0:>20.0f}")
    print(f"\nframes: MB above the start of the call / {frame / 1e6:.0f} MB (one float32 "
          "frame); 'above start' excludes the imports and, for a master, nothing else")
    limit = mem_limit + 3 * frame
    print(f"target: a master's peak at most mem_limit ({mem_limit / 1e6:.0f} MB) plus three "
          f"frames = {limit / 1e6:.0f} MB:")
    for kind in ("bias", "dark", "flat"):
        costs = results[f"master {kind}"]
        above = costs["peak"] - costs["baseline"]
        print(f"  master {kind}: {above / 1e6:.0f} MB -> "
              f"{'MET' if above <= limit else 'NOT MET'}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], sys.argv[3])
    else:
        main()
