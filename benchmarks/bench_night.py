"""
Benchmark of a whole night: the CCD Data Reduction Guide's ccdproc loop, `reduce_night` on
one core and on all cores, and the I/O floor, side by side; then the cost of scanning the
headers of a folder.

The night is simulated with `ccdproc_ext.simulate.simulate_night` for Palomar LFC chip 0:
20 bias frames, 5 darks at each of 7, 30 and 60 s, 7 flats (7 s) in each of V and R, and 20
science frames (60 s) in each filter, 89 raw frames of 4128 x 2080 pixels (LFC's raw width:
2048 data columns, overscan from column 2056; the Guide's LFC frames are 2080 wide too).
Flats and science frames have the exposure of a dark, so no dark is scaled.

Each timed run is a fresh Python process started after one warm-up read of the raw folder
(the page cache cannot be dropped without root, so every run reads warm files). Its time
excludes the imports. On a shared machine, each run waits (``--wait``, up to 5 minutes)
for other processes to use less than a quarter of a core, and the table says how many
cores other programs, and the kernel (writing back our outputs), used during the run.
Peak memory is reported twice: the ``VmHWM`` of the run's main process (exact), and the
largest sum of the proportional set size (PSS) of the process and all its descendants,
sampled every 0.2 s (what worker processes add).

Runs
----
guide
    The Guide's loop with plain ccdproc: `ccdproc.ImageFileCollection`; every frame read
    with ``CCDData.read(path, unit='adu')``, ``subtract_overscan(ccd, overscan=ccd[:,
    2055:], median=True)``, ``trim_image(ccd[:, :2048])``; masters combined in memory with
    ``ccdproc.combine`` (average, 5-sigma clipping around `numpy.ma.median` with
    `astropy.stats.mad_std`, float64; flats scaled by the inverse median) and written;
    science frames bias-, dark- (``scale=False``) and flat-corrected and written with
    ``CCDData.write`` (float64 data, uncertainty and mask, as the Guide writes them). The
    Guide also writes every calibrated bias, dark and flat before combining them from files
    with ``mem_limit=350e6``; this loop skips that, so it is faster than the Guide itself.
reduce_night(1), reduce_night(N)
    ``reduce_night(raw, out, "palomar-lfc", progress=False, workers=...)``. The science
    step is then timed on its own by deleting the science outputs and calling again (the
    masters are up to date, so only the header scan, the plan and the loading of masters
    come with it), and once more with everything up to date (that fixed cost alone); the
    science step is the difference.
io floor
    Every raw file read once (``fits.getdata``, float32) and one float32 image written per
    output of reduce_night (each master and each science frame), trimmed to 2048 columns:
    no arithmetic.
headers
    ``ccdproc.ImageFileCollection(folder)`` (all keywords), ``NightCollection(folder,
    profile="palomar-lfc")`` and a loop of ``fits.getheader``, on the raw folder and on a
    folder of 2000 8 x 8 frames with the same headers (the cost is per file); best of three,
    and how many times each opens every file.

Usage::

    python benchmarks/bench_night.py --quick        # 256 x 2080 frames, about 2 minutes
    BENCH_NO_REPORT=1 python benchmarks/bench_night.py --quick   # reduce_night(report=False)
    python benchmarks/bench_night.py                # 4128 x 2080 frames, 15-25 minutes
    python benchmarks/bench_night.py --shape 1024 2080 --keep /tmp/night
"""

import argparse
import inspect
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from _folders import work_folder
from _memory import memory_kib  # benchmarks/ is sys.path[0] when run as a script

PROFILE = "palomar-lfc"
FULL_SHAPE = (4128, 2080)
QUICK_SHAPE = (256, 2080)
RAW_COLUMNS = 2080  # LFC's sections are fixed columns: overscan [:, 2055:], data [:, :2048]
NIGHT = {
    "n_bias": 20,
    "dark_exposures": (7.0, 30.0, 60.0),
    "n_dark": 5,
    "filters": ("V", "R"),
    "n_flat": 7,
    "flat_exposure": 7.0,
    "n_science": 20,
    "science_exposure": 60.0,
}
N_SMALL_FILES = 2000
HEADER_REPEATS = 3

# Targets of the project (full size).
TARGET_FLOOR_RATIO = 2.0
TARGET_GUIDE_SPEEDUP = 8.0
TARGET_PEAK_BYTES = 2 * 1024**3
TARGET_TWO_WORKERS = 1.6
SAMPLE_SECONDS = 0.2
# Before each run, wait for other processes to use less than this many cores.
QUIET_CORES = 0.25
QUIET_POLL_SECONDS = 5.0
# A run during which others used more cores than this is marked as unreliable.
BUSY_CORES = 0.5


# ------------------------------------------------------------------ in the child processes
def _run_guide(raw, out):
    """The CCD Data Reduction Guide's reduction of an LFC night, with plain ccdproc."""
    import warnings

    import astropy.units as u
    import ccdproc
    from astropy.nddata import CCDData
    from astropy.stats import mad_std

    # FITSFixedWarning (DATE-OBS -> MJD-OBS) on every read; not what is measured here.
    warnings.simplefilter("ignore")
    combine_options = {
        "method": "average",
        "sigma_clip": True,
        "sigma_clip_low_thresh": 5,
        "sigma_clip_high_thresh": 5,
        "sigma_clip_func": np.ma.median,
        "sigma_clip_dev_func": mad_std,
    }

    def inverse_median(a):
        return 1 / np.median(a)

    def overscan_and_trim(path):
        ccd = CCDData.read(path, unit="adu")
        ccd = ccdproc.subtract_overscan(ccd, overscan=ccd[:, 2055:], median=True)
        return ccdproc.trim_image(ccd[:, :2048])

    out = Path(out)
    (out / "science").mkdir(parents=True)
    start = time.perf_counter()
    collection = ccdproc.ImageFileCollection(raw)

    files = collection.files_filtered(imagetyp="bias", include_path=True)
    master_bias = ccdproc.combine([overscan_and_trim(f) for f in files], **combine_options)
    master_bias.write(out / "master_bias.fits")

    master_darks = {}
    darks = collection.summary["imagetyp"] == "DARK"
    for exposure in sorted(set(collection.summary["exptime"][darks])):
        files = collection.files_filtered(imagetyp="dark", exptime=exposure,
                                          include_path=True)
        calibrated = [ccdproc.subtract_bias(overscan_and_trim(f), master_bias) for f in files]
        master_darks[exposure] = ccdproc.combine(calibrated, **combine_options)
        master_darks[exposure].write(out / f"master_dark_{exposure:g}s.fits")

    def subtract_dark(ccd):
        return ccdproc.subtract_dark(ccd, master_darks[ccd.header["exptime"]],
                                     exposure_time="exptime", exposure_unit=u.s, scale=False)

    master_flats = {}
    flats = collection.summary["imagetyp"] == "FLATFIELD"
    for filter_name in sorted(set(collection.summary["filter"][flats])):
        files = collection.files_filtered(imagetyp="flatfield", filter=filter_name,
                                          include_path=True)
        calibrated = [subtract_dark(ccdproc.subtract_bias(overscan_and_trim(f), master_bias))
                      for f in files]
        master_flats[filter_name] = ccdproc.combine(calibrated, scale=inverse_median,
                                                    **combine_options)
        master_flats[filter_name].write(out / f"master_flat_{filter_name}.fits")

    science_start = time.perf_counter()
    for name in collection.files_filtered(imagetyp="object"):
        ccd = overscan_and_trim(Path(raw) / name)
        ccd = ccdproc.subtract_bias(ccd, master_bias)
        ccd = subtract_dark(ccd)
        ccd = ccdproc.flat_correct(ccd, master_flats[ccd.header["filter"]])
        ccd.write(out / "science" / name)
    end = time.perf_counter()
    return {"seconds": end - start, "science_seconds": end - science_start,
            "note": "masters combined in memory (the Guide writes each calibrated frame "
                    "and combines from files)"}


def _run_reduce_night(raw, out, workers):
    """reduce_night in full; then its science step again; then with nothing to do."""
    import ccdproc_ext
    from ccdproc_ext import reduce_night

    if hasattr(ccdproc_ext, "tune_allocator"):
        ccdproc_ext.tune_allocator()  # as the command does in its own process

    parameters = inspect.signature(reduce_night).parameters
    executor = None
    if "workers" in parameters:
        options = {"workers": workers}
        note = f"workers={workers}"
    elif workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        executor = ProcessPoolExecutor(workers)
        options = {"executor": executor}
        note = f"no workers= parameter: executor=ProcessPoolExecutor({workers})"
    else:
        options = {"executor": None}
        note = "no workers= parameter: executor=None"

    if "report" in parameters and os.environ.get("BENCH_NO_REPORT"):
        options["report"] = False  # the night without its pictures
        note += ", report=False"

    def timed_call():
        start = time.perf_counter()
        result = reduce_night(raw, out, PROFILE, progress=False, **options)
        return time.perf_counter() - start, result

    try:
        seconds, result = timed_call()
        if len(result.problems):
            raise RuntimeError(result.summary())
        costs = {"seconds": seconds, "note": note,
                 "outputs": len(result.masters) + len(result.science)}
        # What the first call wrote, before the re-runs add to it.
        costs["bytes_written"] = _bytes_under(out)
        for path in (Path(out) / "science").glob("*.fits"):
            path.unlink()
        costs["rerun_seconds"], result = timed_call()
        if set(result.science["status"]) != {"written"}:
            raise RuntimeError(f"the re-run did not redo the science frames: {result.summary()}")
        costs["noop_seconds"], result = timed_call()
        if set(result.science["status"]) != {"up to date"}:
            raise RuntimeError(f"the last run was not a no-op: {result.summary()}")
        costs["science_seconds"] = costs["rerun_seconds"] - costs["noop_seconds"]
    finally:
        if executor is not None:
            executor.shutdown()
    return costs


def _run_io_floor(raw, out, outputs_file):
    """Read every raw file once, write one float32 image per output of reduce_night."""
    from astropy.io import fits

    outputs = json.loads(Path(outputs_file).read_text())
    science = set(outputs["science"])
    n_masters = outputs["n_masters"]
    out = Path(out)
    (out / "science").mkdir(parents=True)
    (out / "masters").mkdir()
    start = time.perf_counter()
    written_masters = 0
    for name in sorted(os.listdir(raw)):
        data = fits.getdata(Path(raw) / name).astype(np.float32)
        trimmed = np.ascontiguousarray(data[:, :2048])
        if name in science:
            fits.writeto(out / "science" / name, trimmed)
        elif written_masters < n_masters:
            written_masters += 1
            fits.writeto(out / "masters" / f"master_{written_masters}.fits", trimmed)
    return {"seconds": time.perf_counter() - start}


def _run_headers(folder):
    """Best-of-three times of three header scans, and how often each opens a file."""
    import ccdproc
    from astropy.io import fits

    from ccdproc_ext import NightCollection

    def plain_loop():
        return [fits.getheader(os.path.join(folder, name))
                for name in sorted(os.listdir(folder)) if name.endswith(".fits")]

    scans = {
        "ImageFileCollection": lambda: ccdproc.ImageFileCollection(folder),
        "NightCollection": lambda: NightCollection(folder, profile=PROFILE),
        "fits.getheader loop": plain_loop,
    }
    seconds = {name: [] for name in scans}
    for _ in range(HEADER_REPEATS):
        for name, scan in scans.items():
            start = time.perf_counter()
            scan()
            seconds[name].append(time.perf_counter() - start)

    # Opens per file: every open() of a file of the folder, by astropy or anyone else
    # (builtins.open and io.open are one function, looked up where they are called).
    import builtins
    import io

    opened = []
    original_open = builtins.open
    root = os.path.abspath(folder)

    def counting_open(file, *args, **kwargs):
        if isinstance(file, str | os.PathLike) and \
                os.path.abspath(os.fspath(file)).startswith(root + os.sep):
            opened.append(file)
        return original_open(file, *args, **kwargs)

    n_files = len([n for n in os.listdir(folder) if n.endswith(".fits")])
    opens = {}
    builtins.open = io.open = counting_open
    try:
        for name, scan in scans.items():
            opened.clear()
            scan()
            opens[name] = len(opened) / n_files
    finally:
        builtins.open = io.open = original_open
    return {"seconds": {name: min(times) for name, times in seconds.items()},
            "opens_per_file": opens, "files": n_files}


def _bytes_under(folder):
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def _worker(kind, arguments):
    """Run one case in this fresh process and print what it cost as JSON."""
    import resource

    arguments = json.loads(arguments)
    baseline_kib = memory_kib("VmRSS")
    if kind == "guide":
        costs = _run_guide(**arguments)
    elif kind == "reduce_night":
        costs = _run_reduce_night(**arguments)
    elif kind == "io_floor":
        costs = _run_io_floor(**arguments)
    elif kind == "headers":
        costs = _run_headers(**arguments)
    else:
        raise ValueError(f"unknown case {kind!r}")
    costs["peak_bytes"] = memory_kib("VmHWM") * 1024
    costs["baseline_bytes"] = baseline_kib * 1024
    # ru_maxrss of the children: the largest single worker process, if any (KiB on Linux).
    costs["largest_child_bytes"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps(costs))


# ------------------------------------------------------------------------- in the parent
def _process_tree_pss(root_pid):
    """Sum of the PSS of a process and all its descendants, in bytes (0 once gone)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # The command name is in parentheses and may hold spaces: split after it.
                parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        pid = frontier.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        tree.update(children)
        frontier.extend(children)
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                for line in rollup:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


def _warm_up(folder):
    """Read every file once, so that every run starts with the same (warm) page cache."""
    for path in sorted(Path(folder).iterdir()):
        with open(path, "rb") as stream:
            while stream.read(1 << 24):
                pass


def _cpu_snapshot():
    """CPU seconds so far: the machine's (user, kernel), and ours (user, kernel).

    Ours is this process and its children that have ended. Time the hypervisor gave to
    other machines (steal) counts as user time of others.
    """
    import resource

    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(
            int, stat.readline().split()[1:9])
    tick = os.sysconf("SC_CLK_TCK")
    usages = [resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                  resource.RUSAGE_CHILDREN)]
    return ((user + nice + steal) / tick, (system + irq + softirq) / tick,
            sum(u.ru_utime for u in usages), sum(u.ru_stime for u in usages))


def _others(before, after, seconds):
    """Cores used meanwhile, outside our processes: (by other programs, by the kernel).

    The kernel's share is mostly the writeback of the files we write and page reclaim.
    """
    machine_user, machine_kernel, own_user, own_kernel = (
        b - a for a, b in zip(before, after, strict=True))
    return (max(0.0, machine_user - own_user) / seconds,
            max(0.0, machine_kernel - own_kernel) / seconds)


def _wait_for_quiet(limit_seconds):
    """Wait (up to ``limit_seconds``) until other programs use less than QUIET_CORES.

    Returns the cores they used in the last second measured.
    """
    deadline = time.perf_counter() + limit_seconds
    while True:
        before = _cpu_snapshot()
        time.sleep(1.0)
        others, _ = _others(before, _cpu_snapshot(), 1.0)
        if others < QUIET_CORES or time.perf_counter() > deadline:
            return others
        time.sleep(QUIET_POLL_SECONDS)


def _run(kind, **arguments):
    """One case in a fresh process; its costs, with the sampled peak of its process tree
    and the CPU that other processes of the machine used meanwhile (in cores)."""
    start, before = time.perf_counter(), _cpu_snapshot()
    command = [sys.executable, __file__, "--worker", kind, json.dumps(arguments)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    tree_peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            tree_peak[0] = max(tree_peak[0], _process_tree_pss(process.pid))
            done.wait(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{stderr}")
    costs = json.loads(stdout.strip().splitlines()[-1])
    costs["other_cores"], costs["kernel_cores"] = _others(before, _cpu_snapshot(),
                                                          time.perf_counter() - start)
    costs["tree_peak_bytes"] = max(tree_peak[0], costs["peak_bytes"])
    return costs


def _first_science_frame(output):
    """The pixels of the first science output, or None."""
    from astropy.io import fits

    files = sorted((Path(output) / "science").glob("*.fits"))
    return fits.getdata(files[0]).astype(np.float64) if files else None


def _simulate(folder, shape):
    """Write the night; return its table of files (the truth images are not kept: the sky
    of 40 full-size frames alone is 2.7 GB)."""
    from ccdproc_ext.simulate import simulate_night

    return simulate_night(folder, PROFILE, shape=shape, seed=1, **NIGHT).files


def _write_small_frames(raw, folder, n_files):
    """``n_files`` 8 x 8 frames carrying the raw frames' headers, in turn."""
    from astropy.io import fits

    sources = sorted(Path(raw).glob("*.fits"))
    headers = [fits.getheader(path) for path in sources]
    folder.mkdir()
    for i in range(n_files):
        # One pixel differs from file to file: no file is a copy of another.
        data = np.full((8, 8), i % 65536, dtype=np.uint16)
        hdu = fits.PrimaryHDU(data, header=headers[i % len(headers)])
        hdu.writeto(folder / f"{i:05d}_{sources[i % len(sources)].name}")


def _mb(n_bytes):
    return f"{n_bytes / 1024**2:,.0f}"


def _verdict(met):
    return "MET" if met else "NOT MET"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Time the Guide's ccdproc loop, reduce_night and the I/O floor on a "
                    "simulated LFC night."
    )
    parser.add_argument("--quick", action="store_true",
                        help=f"frames of {QUICK_SHAPE[0]} x {QUICK_SHAPE[1]}")
    parser.add_argument("--shape", type=int, nargs=2, default=None, metavar=("ROWS", "COLS"),
                        help=f"raw frame shape; LFC's columns are fixed at {RAW_COLUMNS}")
    parser.add_argument("--keep", metavar="DIR", default=None,
                        help="work in DIR and keep the raw night and every output")
    parser.add_argument("--wait", type=float, default=300.0, metavar="SECONDS",
                        help="before each run, wait up to this long for the machine to be "
                             f"quiet (others below {QUIET_CORES:g} cores); default 300")
    args = parser.parse_args(argv)
    shape = tuple(args.shape) if args.shape else (QUICK_SHAPE if args.quick else FULL_SHAPE)
    if shape[1] != RAW_COLUMNS:
        parser.error(f"palomar-lfc frames have {RAW_COLUMNS} columns (overscan and trim are "
                     f"fixed columns); only the rows may change, got {shape[1]}")
    workers_all = os.cpu_count() or 1

    with work_folder(args.keep, "bench_night_", parser) as root:
            _benchmark(root, shape, workers_all, keep=bool(args.keep), wait=args.wait)


def _benchmark(root, shape, workers_all, *, keep, wait):
    wall_start = time.perf_counter()
    raw = root / "raw"
    start = time.perf_counter()
    files = _simulate(raw, shape)
    n_frames = len(files)
    raw_bytes = _bytes_under(raw)
    counts = {t: int(np.sum(files["type"] == t))
              for t in ("bias", "dark", "flat", "science")}
    exposures = ", ".join(f"{e:g}" for e in NIGHT["dark_exposures"])
    print(f"simulated a {PROFILE} night in {time.perf_counter() - start:.0f} s: "
          f"{counts['bias']} bias, {counts['dark']} darks ({exposures} s), "
          f"{counts['flat']} flats ({', '.join(NIGHT['filters'])}), {counts['science']} science "
          f"frames of {shape[1]} x {shape[0]} pixels (columns x rows; the target night's "
          f"frames are 2105 x 4128, LFC's are {RAW_COLUMNS} wide), uint16, "
          f"{raw_bytes / 1e9:.2f} GB in {raw}")
    print(f"machine: {os.cpu_count()} cores; every run is a fresh process started after a "
          "warm-up read of the raw folder (page cache not dropped: no root)\n")

    from ccdproc_ext import reduce_night

    plan = reduce_night(raw, root / "dry-run", PROFILE, dry_run=True, progress=False).plan
    science = sorted(str(f) for f in plan["file"][plan["type"] == "science"])
    outputs_file = root / "outputs.json"
    outputs_file.write_text(json.dumps({"science": science,
                                        "n_masters": len(plan.meta["masters"])}))

    cases = [
        ("io floor", "io_floor", {"outputs_file": str(outputs_file)}),
        ("reduce_night(1)", "reduce_night", {"workers": 1}),
        (f"reduce_night({workers_all})", "reduce_night", {"workers": workers_all}),
        ("guide", "guide", {}),
    ]
    results, frames = {}, {}
    for label, kind, arguments in cases:
        output = root / f"out-{kind}-{arguments.get('workers', '')}".rstrip("-")
        others = _wait_for_quiet(wait)
        _warm_up(raw)
        print(f"running {label} (other processes using {others:.2f} cores before) ...",
              flush=True)
        costs = _run(kind, raw=str(raw), out=str(output), **arguments)
        costs.setdefault("bytes_written", _bytes_under(output))
        frames[label] = _first_science_frame(output)
        os.sync()  # its dirty pages are written now, not during the next run
        if not keep:
            shutil.rmtree(output)
        results[label] = costs

    label_1, label_all = "reduce_night(1)", f"reduce_night({workers_all})"
    print()
    header = (f"{'run':<18} {'time (s)':>9} {'science (s)':>12} {'peak RSS (MB)':>14} "
              f"{'all procs (MB)':>15} {'written (MB)':>13} {'others':>7} {'kernel':>7}")
    print(header)
    print("-" * len(header))
    for label, costs in results.items():
        science_seconds = costs.get("science_seconds")
        print(f"{label:<18} {costs['seconds']:>9.2f} "
              f"{'' if science_seconds is None else f'{science_seconds:.2f}':>12} "
              f"{_mb(costs['peak_bytes']):>14} {_mb(costs['tree_peak_bytes']):>15} "
              f"{_mb(costs['bytes_written']):>13} {costs['other_cores']:>7.2f} "
              f"{costs['kernel_cores']:>7.2f}"
              f"{' *' if costs['other_cores'] > BUSY_CORES else ''}")
    for label in (label_1, label_all):
        costs = results[label]
        print(f"  {label}: {costs['note']}; {costs['outputs']} outputs; science re-run "
              f"{costs['rerun_seconds']:.2f} s, no-op re-run {costs['noop_seconds']:.2f} s "
              "(header scan, plan, masters loaded): science = the difference")
    print(f"  guide: science loop alone {results['guide']['science_seconds']:.2f} s; "
          f"{results['guide']['note']}")
    print("  peak RSS: VmHWM of the run's main process; all procs: largest sampled sum of the "
          "PSS of the process and its workers; others: cores used by other programs during "
          "the run (0 on a quiet machine); kernel: cores the kernel used outside our "
          "processes (mostly writing back what the run wrote)")
    if any(costs["other_cores"] > BUSY_CORES for costs in results.values()):
        print(f"  * other processes used more than {BUSY_CORES:g} cores during this run: its "
              "time is not reliable")

    reference = frames[label_1]
    if reference is not None:
        print("\nfirst science frame compared with reduce_night(1):")
        noise = float(np.std(reference))
        for label in (label_all, "guide"):
            if frames.get(label) is None:
                continue
            difference = np.abs(frames[label] - reference)
            print(f"  {label:<16}: max |difference| {difference.max():.3g} ADU, median "
                  f"{np.median(difference):.3g} ADU (frame std {noise:.3g} ADU)")

    guide = results["guide"]["seconds"]
    floor = results["io floor"]["seconds"]
    one, every = results[label_1], results[label_all]
    print("\nratios:")
    ratios = {
        f"guide / {label_1}": guide / one["seconds"],
        f"guide / {label_all}": guide / every["seconds"],
        f"{label_1} / io floor": one["seconds"] / floor,
        f"{label_all} / io floor": every["seconds"] / floor,
        f"{label_1} / {label_all} (whole call)": one["seconds"] / every["seconds"],
        f"{label_1} / {label_all} (science step)": one["science_seconds"]
        / every["science_seconds"],
        f"guide science loop / {label_all} science step": results["guide"]["science_seconds"]
        / every["science_seconds"],
    }
    for name, value in ratios.items():
        print(f"  {name:<52} {value:6.2f}")

    print("\ntargets" + ("" if shape == FULL_SHAPE else
                         f" (defined for {FULL_SHAPE[1]} x {FULL_SHAPE[0]} frames; this run "
                         f"is {shape[1]} x {shape[0]}, indicative only)") + ":")
    for label in (label_1, label_all):
        ratio = results[label]["seconds"] / floor
        print(f"  {label} within {TARGET_FLOOR_RATIO:g}x of the I/O floor: {ratio:.2f}x -> "
              f"{_verdict(ratio <= TARGET_FLOOR_RATIO)}")
    for label in (label_1, label_all):
        speedup = guide / results[label]["seconds"]
        print(f"  {label} >= {TARGET_GUIDE_SPEEDUP:g}x faster than the Guide loop: "
              f"{speedup:.1f}x -> {_verdict(speedup >= TARGET_GUIDE_SPEEDUP)}")
    for label in (label_1, label_all):
        peak = results[label]["tree_peak_bytes"]
        print(f"  {label} peak memory under {_mb(TARGET_PEAK_BYTES)} MB: {_mb(peak)} MB (all "
              f"processes) -> {_verdict(peak < TARGET_PEAK_BYTES)}")
    if workers_all >= 2:
        speedup = one["science_seconds"] / every["science_seconds"]
        print(f"  {workers_all} workers >= {TARGET_TWO_WORKERS:g}x faster than 1 on the "
              f"science step: {speedup:.2f}x -> {_verdict(speedup >= TARGET_TWO_WORKERS)}")
    else:
        print("  one core only: the parallel target cannot be measured")

    _header_scan(raw, root, n_frames, wait)
    print(f"\ntotal wall time {time.perf_counter() - wall_start:.0f} s")


def _header_scan(raw, root, n_frames, wait):
    small = root / "small"
    _write_small_frames(raw, small, N_SMALL_FILES)
    print("\nheader scan (best of three, warm cache):")
    header = (f"{'folder':<28} {'scan':<20} {'time (s)':>9} {'ms / file':>10} "
              f"{'opens / file':>13} {'/ getheader':>12}")
    print(header)
    print("-" * len(header))
    verdicts = []
    for folder, description in ((raw, f"raw night ({n_frames} files)"),
                                (small, f"{N_SMALL_FILES} files of 8 x 8")):
        _wait_for_quiet(wait)
        _warm_up(folder)
        costs = _run("headers", folder=str(folder))
        plain = costs["seconds"]["fits.getheader loop"]
        for name, seconds in costs["seconds"].items():
            print(f"{description:<28} {name:<20} {seconds:>9.3f} "
                  f"{1e3 * seconds / costs['files']:>10.2f} "
                  f"{costs['opens_per_file'][name]:>13.1f} {seconds / plain:>12.2f}")
        print(f"{'':<28} (other processes used {costs['other_cores']:.2f} cores meanwhile)")
        verdicts.append((description, costs["seconds"]["NightCollection"] / plain,
                         costs["opens_per_file"]))
    for description, ratio, opens in verdicts:
        print(f"  {description}: ImageFileCollection opens each file "
              f"{opens['ImageFileCollection']:.1f} times, NightCollection "
              f"{opens['NightCollection']:.1f}; NightCollection costs {ratio:.2f}x a plain "
              f"header scan -> {'no more' if ratio <= 1.2 else 'MORE'} (no more = within 20%)")
    shutil.rmtree(small)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], sys.argv[3])
    else:
        main()
