"""
Benchmark of ``ccdproc-ext reduce`` against the reducers people use instead: Siril's
standard mono preprocessing script and IRAF's ``noao.imred.ccdred``, on one simulated night,
each run in turn as a whole process.

The night (made here, with numpy and astropy, from a fixed seed) is ``--n-bias`` biases,
``--n-dark`` darks of ``--dark-exposure`` seconds, ``--n-flat`` flats and ``--n-light``
light frames with stars on a sky (at the darks' exposure, so that no reducer scales a dark),
uint16, no overscan; by default 20, 20, 20 and 40 frames of 2000 x 3000 pixels. Every
frame has a bias level with a column pattern, dark current with hot pixels, a flat-field
pattern (vignetting and pixel-to-pixel gains), Poisson noise and read noise. Headers carry
``IMAGETYP`` ('Bias Frame', 'Dark Frame', 'Flat Field', 'Light Frame'), ``EXPTIME`` and
``FILTER``. The raw folder has one sub-folder per kind (``biases``, ``darks``, ``flats``,
``lights``), the layout Siril's script expects; ``ccdproc-ext`` searches it recursively.

Reducers, and where each writes (all under the run's temporary folder):

ours
    ``ccdproc-ext reduce RAW OUT`` with its defaults (bias, dark, flat, bad-pixel mask,
    report; as many worker processes as cores). Science frames: ``OUT/science/*.fits``,
    named after the raw files (``lights_light_001.fits``), 32-bit float.
siril
    ``siril-cli -d WORK -s benchmarks/siril_mono.ssf``: Siril's ``Mono_Preprocessing.ssf``
    without the final registration and stacking (Siril uses all cores). ``WORK/biases``
    etc. hold symbolic links to the raw files (Siril's ``..`` must not lead back into the
    raw folder). Science frames:
    ``WORK/process/pp_light_00001.fit`` ... (32-bit float in [0, 1]; Siril numbers the
    converted frames in the order of the sorted raw names; its rows may be stored bottom-up,
    so both orientations are compared).
iraf
    ``irafcl`` (the Debian/Community IRAF command language) reading
    ``benchmarks/iraf_ccdred.cl`` on its standard input, with ``USER`` and ``HOME`` set to
    a fresh home (``HOME/.iraf/uparm``) and the instrument file
    ``benchmarks/iraf_ccdred.dat`` (``IMAGETYP`` words to ccdred's types). ``ccdproc``
    writes new files, never the raw ones: calibrated darks and flats, ``Zero.fits``,
    ``Dark.fits``, ``Flat.fits`` and the science frames ``WORK/sci_<raw name>.fits``
    (32-bit real); one process at a time. ``irafcl`` exits 0 when a task fails, so its
    log is searched for ``ERROR`` lines and for missing outputs.
chain, io
    The floors under ours, from ``benchmarks/peers_chain.py`` (see there): ``chain`` is the
    barest reduction built on ccdproc's functions (the masters combined by
    `ccdproc_ext.combine` with our defaults, calibration and science frames through
    ``subtract_bias``, ``subtract_dark`` and ``flat_correct``, the science frames in one
    process per core, written as float32 pixels; no check, mask, uncertainty, checksum,
    plan, provenance or report); ``io`` reads every raw frame and writes every science
    frame with no arithmetic. Science frames: ``OUT/science/<raw name>``. ``chain``'s are
    compared with ours like a peer's.

Each run is one process tree started by a small Python wrapper that reports the tree's
wall time, CPU time (user + system, ``getrusage(RUSAGE_CHILDREN)``) and peak memory
(``ru_maxrss`` of the children: the largest single process of the tree, not a sum). The
reducers run in turn, ``--pairs`` times; the table gives medians and ratios to ours. The
science frames of each peer are then compared with ours: one least-squares scale ``a``
over all frames (``a * peer ~ ours``), then per frame the median of ``|ours - a * peer|``
relative to the frame's sky (its median), in percent.

Usage::

    python benchmarks/bench_peers.py --shape 200 300 --n-bias 5 --n-dark 5 --n-flat 5 \\
        --n-light 4 --pairs 1          # a small night, under a minute
    python benchmarks/bench_peers.py                # the full night, 4 pairs
    python benchmarks/bench_peers.py --only siril --keep /tmp/peers
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.time import Time

HERE = Path(__file__).resolve().parent
SIRIL_SCRIPT = HERE / "siril_mono.ssf"
IRAF_SCRIPT = HERE / "iraf_ccdred.cl"
IRAF_INSTRUMENT = HERE / "iraf_ccdred.dat"
CHAIN_SCRIPT = HERE / "peers_chain.py"
KINDS = {  # folder: (file prefix, IMAGETYP)
    "biases": ("bias", "Bias Frame"),
    "darks": ("dark", "Dark Frame"),
    "flats": ("flat", "Flat Field"),
    "lights": ("light", "Light Frame"),
}
REDUCERS = ("ours", "siril", "iraf", "chain", "io")
FLOORS = ("chain", "io")  # peers_chain.py: what any reducer built on ccdproc must pay
SEED = 27

# The camera and the sky, in electrons (gain below).
GAIN = 1.5  # e-/ADU
READ_NOISE = 6.0  # e-
BIAS_LEVEL = 1000.0  # ADU
DARK_CURRENT = 0.05  # e-/s
HOT_PIXEL_FRACTION = 1e-4
HOT_PIXEL_CURRENT = 50.0  # e-/s
FLAT_EXPOSURE = 5.0  # s
FLAT_LEVEL = 30000.0  # e- at the centre
SKY_LEVEL = 1500.0  # e- per light frame
STARS_PER_MEGAPIXEL = 150
FILTER = "R"

# The wrapper that runs one reducer as a fresh process tree and reports what it cost.
WRAPPER = """
import json, resource, subprocess, sys, time
command, cwd, env, stdin, log = json.loads(sys.argv[1])
start = time.perf_counter()
with open(log, "wb") as out, open(stdin or "/dev/null", "rb") as inp:
    code = subprocess.run(command, cwd=cwd, env=env, stdin=inp, stdout=out,
                          stderr=subprocess.STDOUT).returncode
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"returncode": code, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
                  "maxrss_kib": usage.ru_maxrss}))
"""


# ------------------------------------------------------------------------------ the night
def _camera(rng, shape):
    """Per-pixel bias (ADU), dark current (e-/s) and flat-field gain of the camera."""
    rows, columns = shape
    bias = BIAS_LEVEL + rng.normal(0, 3, columns)[np.newaxis, :] + np.zeros(shape)
    dark = np.full(shape, DARK_CURRENT)
    hot = rng.random(shape) < HOT_PIXEL_FRACTION
    dark[hot] = HOT_PIXEL_CURRENT * rng.uniform(0.2, 1, hot.sum())
    y, x = np.mgrid[:rows, :columns]
    radius2 = ((y - rows / 2) ** 2 + (x - columns / 2) ** 2) / (rows**2 + columns**2) * 4
    flat = (1 - 0.25 * radius2) * rng.normal(1, 0.01, shape)
    return bias, dark, flat


def _star_field(rng, shape):
    """Sky plus Gaussian stars, in electrons per light frame (before the flat)."""
    rows, columns = shape
    field = np.full(shape, SKY_LEVEL)
    n_stars = max(5, int(STARS_PER_MEGAPIXEL * rows * columns / 1e6))
    half = 8
    y, x = np.mgrid[-half:half + 1, -half:half + 1]
    for _ in range(n_stars):
        row = rng.integers(half, rows - half)
        column = rng.integers(half, columns - half)
        sigma = rng.uniform(1.2, 2.0)
        peak = 10 ** rng.uniform(2.5, 4.5)
        stamp = peak * np.exp(-(x**2 + y**2) / (2 * sigma**2))
        field[row - half:row + half + 1, column - half:column + half + 1] += stamp
    return field


def _expose(rng, camera, electrons, exposure):
    """One raw uint16 frame: Poisson(signal + dark), read noise, gain, bias."""
    bias, dark, _ = camera
    signal = rng.poisson(electrons + dark * exposure).astype(np.float32)
    signal += rng.normal(0, READ_NOISE, signal.shape).astype(np.float32)
    adu = signal / GAIN + bias
    return np.clip(np.rint(adu), 0, 65535).astype(np.uint16)


def _write_frame(path, data, imagetyp, exposure, date_obs):
    """A raw FITS frame with the keywords every reducer reads."""
    header = fits.Header()
    header["IMAGETYP"] = imagetyp
    header["EXPTIME"] = (exposure, "exposure time [s]")
    header["DARKTIME"] = (exposure, "dark time [s]")
    header["FILTER"] = FILTER if imagetyp in ("Flat Field", "Light Frame") else "None"
    header["OBJECT"] = (path.stem, "the raw frame: how outputs are matched")
    header["DATE-OBS"] = date_obs
    fits.PrimaryHDU(data, header).writeto(path)


def make_night(raw, shape, counts, dark_exposure):
    """Write the night to ``raw/<kind>/<prefix>_NNN.fits``; returns the light files' names."""
    rng = np.random.default_rng(SEED)
    camera = _camera(rng, shape)
    flat_field = camera[2]
    zero = np.zeros(shape)
    stars = _star_field(rng, shape)
    plans = {
        "biases": (zero, 0.0),
        "darks": (zero, dark_exposure),
        "flats": (FLAT_LEVEL * flat_field, FLAT_EXPOSURE),
        "lights": (stars * flat_field, dark_exposure),
    }
    start = Time("2026-01-15T01:00:00")
    minute = 0
    for folder, (prefix, imagetyp) in KINDS.items():
        (raw / folder).mkdir(parents=True)
        electrons, exposure = plans[folder]
        for index in range(1, counts[folder] + 1):
            path = raw / folder / f"{prefix}_{index:03d}.fits"
            date_obs = (start + minute * u.min).isot
            minute += 3
            _write_frame(path, _expose(rng, camera, electrons, exposure), imagetyp, exposure,
                         date_obs)
    return sorted(path.name for path in (raw / "lights").iterdir())


# ---------------------------------------------------------------------------- the reducers
def _ours_command():
    """``ccdproc-ext`` of this Python's environment (or the one on PATH), or None."""
    beside = Path(sys.executable).parent / "ccdproc-ext"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("ccdproc-ext")
    return [found] if found else None


def installed(reducer):
    """The command that starts ``reducer``, or None when it is not installed."""
    if reducer == "ours":
        return _ours_command()
    if reducer in FLOORS:
        return [sys.executable, str(CHAIN_SCRIPT)]
    if reducer == "siril":
        found = shutil.which("siril-cli")
        return [found] if found else None
    found = shutil.which("irafcl")  # Debian's name for IRAF's cl/ecl
    return [found] if found else None


def version(reducer):
    """The version the reducer prints, on one line."""
    if reducer in FLOORS:
        return f"{CHAIN_SCRIPT.name}{' --io-only' if reducer == 'io' else ''} (Python " \
               f"{sys.version.split()[0]})"
    command = installed(reducer)
    flag = {"ours": "--version", "siril": "--version", "iraf": "-v"}[reducer]
    result = subprocess.run([*command, flag], capture_output=True, text=True, check=False)
    return (result.stdout or result.stderr).strip().splitlines()[-1]


def _prepare_siril(raw, work):
    """Siril's working folder: one sub-folder of links to the raw files per kind."""
    for folder in KINDS:
        (work / folder).mkdir(parents=True)
        for path in sorted((raw / folder).iterdir()):
            (work / folder / path.name).symlink_to(path)
    return {"args": ["-d", str(work), "-s", str(SIRIL_SCRIPT)], "stdin": None}


def _prepare_iraf(raw, work):
    """IRAF's working folder: a home with uparm, the instrument file and the image lists."""
    (work / "home" / ".iraf" / "uparm").mkdir(parents=True)
    shutil.copy(IRAF_INSTRUMENT, work / IRAF_INSTRUMENT.name)
    # Plain names only (no folders) in what ccdproc writes: it runs in this folder.
    outputs = {"biases": None, "darks": "c", "flats": "c", "lights": "sci_"}
    for folder, (prefix, _) in KINDS.items():
        names = sorted(path.name for path in (raw / folder).iterdir())
        (work / f"{prefix}.lis").write_text("".join(f"{raw / folder / n}\n" for n in names))
        if outputs[folder]:
            (work / f"{prefix}out.lis").write_text(
                "".join(f"{outputs[folder]}{n}\n" for n in names))
    env = {"HOME": str(work / "home"), "USER": os.environ.get("USER") or "bench",
           "TERM": "dumb"}
    return {"args": [], "stdin": str(IRAF_SCRIPT), "env": env}


def _science_outputs(reducer, work):
    """The calibrated science frames a reducer wrote, by the OBJECT of their raw frame."""
    patterns = {"ours": "science/*.fits", "chain": "science/*.fits", "io": "science/*.fits",
                "siril": "process/pp_light_*.fit",
                "iraf": "sci_*.fits"}
    return {fits.getval(path, "OBJECT"): path for path in sorted(work.glob(patterns[reducer]))}


def _check_run(reducer, work, costs, log, n_light):
    """Why a run failed ('' if it did not): exit code, errors in its log, missing frames."""
    if costs["returncode"] != 0:
        return f"exit code {costs['returncode']}"
    text = log.read_text(errors="replace")
    if reducer == "siril" and "Script execution finished successfully" not in text:
        return "Siril did not finish its script"
    if reducer == "iraf":
        errors = [line for line in text.splitlines() if line.lstrip().startswith("ERROR")]
        if errors:
            return f"IRAF reported: {errors[0].strip()}"
    found = len(_science_outputs(reducer, work))
    if found != n_light:
        return f"{found} science frames written, {n_light} expected"
    return ""


def run_reducer(reducer, raw, work, n_light):
    """Run one reducer on ``raw`` as a fresh process tree; what it cost, or a failure."""
    command = installed(reducer)
    if reducer == "ours" or reducer in FLOORS:
        work.mkdir(parents=True)
        args = ["reduce"] if reducer == "ours" else []
        args += [str(raw), str(work / "out")] + (["--io-only"] if reducer == "io" else [])
        job = {"args": args, "stdin": None}
        outputs = work / "out"
    else:
        job = (_prepare_siril if reducer == "siril" else _prepare_iraf)(raw, work)
        outputs = work
    env = dict(os.environ, **job.get("env", {}))
    log = work / f"{reducer}.log"
    request = [[*command, *job["args"]], str(work), env, job["stdin"], str(log)]
    result = subprocess.run([sys.executable, "-c", WRAPPER, json.dumps(request)],
                            capture_output=True, text=True, check=True)
    costs = json.loads(result.stdout)
    costs["failure"] = _check_run(reducer, outputs, costs, log, n_light)
    costs["outputs"] = outputs
    costs["log"] = log
    return costs


# ------------------------------------------------------------------------ the comparison
def _pixels(path):
    """The primary image of a FITS file, as float64."""
    return fits.getdata(path, ext=0).astype(np.float64)


def _orientation(ours, peer):
    """The peer's first frame as stored or upside down, whichever matches ours better."""
    best = None
    for flipped in (False, True):
        candidate = peer[::-1] if flipped else peer
        good = np.isfinite(ours) & np.isfinite(candidate)
        scale = np.sum(ours[good] * candidate[good]) / np.sum(candidate[good] ** 2)
        residual = np.median(np.abs(ours[good] - scale * candidate[good]))
        if best is None or residual < best[1]:
            best = (flipped, residual)
    return best[0]


def compare_outputs(ours, peer):
    """One global scale ``a`` (``a * peer ~ ours``, least squares over all frames), then
    per frame the median ``|ours - a * peer|`` over the median of ours, in percent.

    ``ours`` and ``peer`` map the raw frames' OBJECT to an output file. Returns (scale,
    flipped, {object: percent}); frames only one of them wrote are left out.
    """
    names = sorted(set(ours) & set(peer))
    flipped = _orientation(_pixels(ours[names[0]]), _pixels(peer[names[0]]))
    product = square = 0.0
    for name in names:
        mine, theirs = _pixels(ours[name]), _pixels(peer[name])
        theirs = theirs[::-1] if flipped else theirs
        good = np.isfinite(mine) & np.isfinite(theirs)
        product += np.sum(mine[good] * theirs[good])
        square += np.sum(theirs[good] ** 2)
    scale = product / square
    residuals = {}
    for name in names:
        mine, theirs = _pixels(ours[name]), _pixels(peer[name])
        theirs = theirs[::-1] if flipped else theirs
        good = np.isfinite(mine) & np.isfinite(theirs)
        sky = np.median(mine[good])
        residuals[name] = 100 * np.median(np.abs(mine[good] - scale * theirs[good])) / sky
    return scale, flipped, residuals


# ---------------------------------------------------------------------------- the report
def _median(runs, key):
    """The median of one cost over a reducer's runs."""
    return statistics.median(run[key] for run in runs)


def print_table(results):
    """Medians of wall, CPU and peak memory per reducer, with their ratios to ours."""
    ours = results.get("ours")
    print(f"\n{'reducer':<8} {'runs':>4} {'wall s':>8} {'x ours':>7} {'CPU s':>8} "
          f"{'x ours':>7} {'peak MB':>8} {'x ours':>7}")
    for reducer, runs in results.items():
        if not runs:
            print(f"{reducer:<8} no successful run")
            continue
        cells = [f"{reducer:<8} {len(runs):>4}"]
        for key, scale in (("wall", 1), ("cpu", 1), ("maxrss_kib", 1 / 1024)):
            value = _median(runs, key)
            ratio = f"{value / _median(ours, key):.2f}x" if ours else "-"
            cells.append(f"{value * scale:>8.1f} {ratio:>7}")
        print(" ".join(cells))
    print("wall: the process tree's time; CPU: user + system of the tree; peak: the largest "
          "single process of the tree (ru_maxrss); medians; x ours: reducer / ours")


def print_comparison(reducer, ours_outputs, peer_outputs):
    """The residuals of one peer's science frames against ours."""
    scale, flipped, residuals = compare_outputs(ours_outputs, peer_outputs)
    values = list(residuals.values())
    print(f"{reducer}: {len(values)} frames, scale a = {scale:.6g}"
          f"{', rows flipped' if flipped else ''}; median |ours - a*{reducer}| / sky: "
          f"median {statistics.median(values):.4f}%, largest {max(values):.4f}%")


# --------------------------------------------------------------------------------- main
def parse_arguments(argv=None):
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Time ccdproc-ext reduce, Siril and IRAF ccdred on one simulated night, "
                    "each as a whole process in turn, and compare their science frames.")
    parser.add_argument("--shape", type=int, nargs=2, default=(2000, 3000),
                        metavar=("ROWS", "COLUMNS"), help="frame size (default: 2000 3000)")
    parser.add_argument("--n-bias", type=int, default=20, help="bias frames (default: 20)")
    parser.add_argument("--n-dark", type=int, default=20, help="dark frames (default: 20)")
    parser.add_argument("--n-flat", type=int, default=20, help="flat frames (default: 20)")
    parser.add_argument("--n-light", type=int, default=40,
                        help="light frames, at the darks' exposure (default: 40)")
    parser.add_argument("--dark-exposure", type=float, default=120.0,
                        help="exposure of darks and lights in seconds (default: 120)")
    parser.add_argument("--pairs", type=int, default=4,
                        help="how many times each reducer runs, in turn; medians are shown "
                             "(default: 4)")
    parser.add_argument("--only", action="append", choices=REDUCERS,
                        help="run only this reducer (may be repeated)")
    parser.add_argument("--keep", metavar="FOLDER",
                        help="work in this (new) folder and keep it, instead of a temporary "
                             "folder that is removed")
    return parser.parse_args(argv)


def _available(selected):
    """The selected reducers that are installed; a line for each that is not."""
    available = []
    for reducer in selected:
        if installed(reducer) is None:
            print(f"{reducer}: not installed, skipped")
        else:
            print(f"{reducer}: {version(reducer)}")
            available.append(reducer)
    return available


def _warm_up(raw):
    """Read every raw file once, so that every run starts with them in the page cache."""
    for path in sorted(raw.rglob("*.fits")):
        path.read_bytes()


def run_all(args, root):
    """Make the night, run the reducers in turn, print the table and the residuals."""
    reducers = _available(args.only or REDUCERS)
    if not reducers:
        print("nothing to run")
        return
    raw = root / "raw"
    counts = {"biases": args.n_bias, "darks": args.n_dark, "flats": args.n_flat,
              "lights": args.n_light}
    make_night(raw, tuple(args.shape), counts, args.dark_exposure)
    print(f"night: {sum(counts.values())} frames of {args.shape[0]} x {args.shape[1]} uint16 "
          f"({args.n_bias} bias, {args.n_dark} dark at {args.dark_exposure:g} s, "
          f"{args.n_flat} flat, {args.n_light} light) in {raw}")
    _warm_up(raw)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results = {reducer: [] for reducer in reducers}
    kept = {}
    for pair in range(1, args.pairs + 1):
        for reducer in reducers:
            work = root / f"{reducer}_{pair}"
            costs = run_reducer(reducer, raw, work, args.n_light)
            status = costs["failure"] or "ok"
            print(f"run {pair} {reducer:<6} wall {costs['wall']:7.1f} s  CPU "
                  f"{costs['cpu']:7.1f} s  peak {costs['maxrss_kib'] / 1024:7.0f} MB  "
                  f"{status} (log: {costs['log']})", flush=True)
            if costs["failure"]:
                continue
            results[reducer].append(costs)
            if reducer in kept:
                shutil.rmtree(work)  # the first good run's outputs are compared
            else:
                kept[reducer] = _science_outputs(reducer, costs["outputs"])
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print_table(results)
    if "ours" in kept:
        for reducer in ("siril", "iraf", "chain"):
            if reducer in kept:
                print_comparison(reducer, kept["ours"], kept[reducer])


def main(argv=None):
    """Run the benchmark in a temporary folder (or ``--keep``'s)."""
    args = parse_arguments(argv)
    if args.keep:
        root = Path(args.keep).resolve()
        root.mkdir(parents=True)
        run_all(args, root)
        return
    with tempfile.TemporaryDirectory(prefix="bench_peers_") as folder:
        run_all(args, Path(folder))


if __name__ == "__main__":
    main()
