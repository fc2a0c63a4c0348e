"""
What a night of many small frames costs: the plan, the first reduction, and a re-run
with everything up to date, each a fresh Python process.

The night is simulated with `ccdproc_ext.simulate.simulate_night` for the ``generic``
profile: 20 bias frames, 10 darks at each of 2 and 60 s, 20 flats (2 s) in each of V and R,
and science frames (60 s) in both filters up to ``--frames`` (2000 by default), all of
``--shape`` pixels (64 x 64 by default). With frames this small, the pixels cost little:
what is measured is the cost per file (headers, plan, masters, tasks, tables, report).

Runs, each in a fresh process (its time excludes the imports; the process's own wall
time, imports included, is printed beside it):

plan
    ``reduce_night(raw, out, dry_run=True)``: the header scan and the plan.
first
    ``reduce_night(raw, out)`` into an empty folder.
re-run
    The same call again: every output is up to date, so nothing should be redone.
one changed
    The same call after one science output is deleted: only that frame is redone.

The target: a re-run costs at most a third of the first run.

Usage::

    python benchmarks/bench_small_frames.py                 # 2000 frames of 64 x 64
    python benchmarks/bench_small_frames.py --frames 500    # a smaller night
    python benchmarks/bench_small_frames.py --profile-rerun rerun.prof   # cProfile
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _folders import work_folder
from _memory import memory_kib  # benchmarks/ is sys.path[0] when run as a script

NIGHT = {
    "n_bias": 20,
    "dark_exposures": (2.0, 60.0),
    "n_dark": 10,
    "filters": ("V", "R"),
    "n_flat": 20,
    "flat_exposure": 2.0,
    "science_exposure": 60.0,
}
TARGET_RERUN_RATIO = 1 / 3


# ------------------------------------------------------------------ in the child processes
def _worker(kind, raw, out, workers, profile_to):
    """One run in this fresh process; prints its costs as JSON."""
    from ccdproc_ext import reduce_night

    options = {"progress": False, "workers": workers}
    if kind == "plan":
        options["dry_run"] = True
    elif kind == "one changed":
        outputs = sorted((Path(out) / "science").glob("*.fits"))
        outputs[len(outputs) // 2].unlink()
    start = time.perf_counter()
    if profile_to:
        import cProfile

        with cProfile.Profile() as profiler:
            result = reduce_night(raw, out, **options)
        profiler.dump_stats(profile_to)
    else:
        result = reduce_night(raw, out, **options)
    seconds = time.perf_counter() - start
    statuses = {} if result.science is None else \
        {str(s): int(sum(result.science["status"] == s)) for s in set(result.science["status"])}
    print(json.dumps({"seconds": seconds, "statuses": statuses,
                      "problems": len(result.problems),
                      "peak_bytes": memory_kib("VmHWM") * 1024}))


# ------------------------------------------------------------------------- in the parent
def _run(kind, raw, out, workers, profile_to=None):
    start = time.perf_counter()
    command = [sys.executable, __file__, "--worker", kind, str(raw), str(out),
               json.dumps(workers), profile_to or ""]
    process = subprocess.run(command, capture_output=True, text=True)
    if process.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{process.stderr}")
    costs = json.loads(process.stdout.strip().splitlines()[-1])
    costs["process_seconds"] = time.perf_counter() - start
    return costs


def _simulate(raw, n_frames, shape):
    from ccdproc_ext.simulate import simulate_night

    n_calibrations = NIGHT["n_bias"] + NIGHT["n_dark"] * len(NIGHT["dark_exposures"]) \
        + NIGHT["n_flat"] * len(NIGHT["filters"])
    n_science = (n_frames - n_calibrations) // len(NIGHT["filters"])
    if n_science < 1:
        raise SystemExit(f"--frames {n_frames}: at least {n_calibrations + 2} are needed")
    return simulate_night(raw, "generic", shape=shape, n_science=n_science, seed=1,
                          **NIGHT).files


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].strip())
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--shape", type=int, nargs=2, default=(64, 64),
                        metavar=("ROWS", "COLS"))
    parser.add_argument("--workers", type=int, default=None,
                        help="reduce_night's workers (default: one per core)")
    parser.add_argument("--profile-rerun", metavar="FILE", default=None,
                        help="write the re-run's cProfile statistics to FILE")
    parser.add_argument("--keep", metavar="DIR", default=None,
                        help="work in DIR (empty or new) and keep the night and its outputs")
    args = parser.parse_args(argv)
    with work_folder(args.keep, "bench_small_frames_", parser) as root:
            _benchmark(root, args)


def _benchmark(root, args):
    raw, out = root / "raw", root / "out"
    start = time.perf_counter()
    files = _simulate(raw, args.frames, tuple(args.shape))
    print(f"simulated {len(files)} frames of {args.shape[1]} x {args.shape[0]} in "
          f"{time.perf_counter() - start:.0f} s (generic profile; "
          f"{int(sum(files['type'] == 'science'))} science frames)\n")
    profile_to = str(Path(args.profile_rerun).resolve()) if args.profile_rerun else None
    results = {}
    for kind in ("plan", "first", "re-run", "one changed"):
        print(f"running {kind} ...", flush=True)
        results[kind] = _run(kind, raw, out, args.workers,
                             profile_to if kind == "re-run" else None)

    header = f"{'run':<12} {'call (s)':>9} {'process (s)':>12} {'peak RSS (MB)':>14}  science"
    print("\n" + header)
    print("-" * len(header))
    for kind, costs in results.items():
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(costs["statuses"].items()))
        print(f"{kind:<12} {costs['seconds']:>9.2f} {costs['process_seconds']:>12.2f} "
              f"{costs['peak_bytes'] / 1024**2:>14.0f}  {statuses or '-'}")
    first, rerun = results["first"], results["re-run"]
    print("\nratios (calls; whole processes in brackets):")
    for name, (a, b) in {"re-run / first": ("re-run", "first"),
                         "re-run / plan": ("re-run", "plan"),
                         "one changed / re-run": ("one changed", "re-run")}.items():
        print(f"  {name:<22} {results[a]['seconds'] / results[b]['seconds']:6.2f} "
              f"({results[a]['process_seconds'] / results[b]['process_seconds']:.2f})")
    ratio = rerun["seconds"] / first["seconds"]
    print(f"\ntarget: a re-run at most {TARGET_RERUN_RATIO:.2f} of the first run: "
          f"{ratio:.2f} -> {'MET' if ratio <= TARGET_RERUN_RATIO else 'NOT MET'}")
    if rerun["statuses"].keys() != {"up to date"} or \
            results["one changed"]["statuses"].get("written") != 1:
        print("WARNING: the re-runs did not do what was expected (see the table)")
    if profile_to:
        print(f"re-run's profile: {profile_to} (python -m pstats)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5]),
                sys.argv[6] or None)
    else:
        main()
