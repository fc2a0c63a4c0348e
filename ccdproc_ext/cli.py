"""The ``ccdproc-ext`` command line.

Each sub-command is one small function taking the parsed arguments and returning the
exit status; `main` parses, dispatches, and turns the package's errors into a one-line
message on standard error with exit status 1 (never a traceback)::

    ccdproc-ext profiles list
    ccdproc-ext profiles show palomar-lfc
    ccdproc-ext profiles validate my-camera.toml
    ccdproc-ext profiles draft RAW -o my-camera.toml
    ccdproc-ext plan RAW --profile maxim-ccdsoft --type 'flat-*=flat'
    ccdproc-ext reduce RAW OUT --profile palomar-lfc --workers 2
    ccdproc-ext demo OUTDIR
    ccdproc-ext library list|add|remove|verify LIBRARY [FILES]
"""

import argparse
import contextlib
import logging
import signal
import sys
import threading
import warnings
from pathlib import Path

from . import __version__
from ._allocator import tune_allocator
from ._heard import HeardMessages
from ._warnings import SavedFilters
from .exceptions import CcdprocExtError
from .profiles import IMAGE_TYPES, available_profiles, get_profile, validate_profile

__all__ = ["build_parser", "main"]

_PROG = "ccdproc-ext"


# ------------------------------------------------------------------ profiles commands
def _profile_argument(text):
    """A profile name, or the path of an existing TOML file (whatever its suffix)."""
    path = Path(text)
    return path if path.is_file() else text


def _profiles_list(args):
    profiles = [get_profile(name) for name in available_profiles()]
    width = max(len(profile.name) for profile in profiles)
    for profile in profiles:
        print(f"{profile.name:<{width}}  {profile.description}")
    return 0


def _profiles_show(args):
    print(get_profile(_profile_argument(args.profile)).describe())
    return 0


def _profiles_validate(args):
    status = 0
    for path in args.files:
        problems = validate_profile(path)
        if problems:
            status = 1
            print("\n".join(problems))
        else:
            print(f"{path}: valid")
    return status


def _profiles_draft(args):
    from .profiles.draft import draft_profile_text

    text = draft_profile_text(args.raw, name=args.name)
    if args.output is None:
        print(text, end="")
        return 0
    output = Path(args.output)
    if output.exists():
        # A draft is made to be edited: never write over one.
        raise CcdprocExtError(f"{output}: the file exists; remove it or choose another name")
    output.write_text(text, encoding="utf-8")
    print(f"{output}: the draft of a profile for {args.raw}; check its values, then "
          f"'{_PROG} profiles validate {output}'")
    return 0


def _add_profiles_commands(commands):
    profiles = commands.add_parser(
        "profiles", help="list, show, validate and draft instrument profiles",
        description="List, show, validate and draft instrument profiles.")
    actions = profiles.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="the available profiles, one per line")
    listing.set_defaults(run=_profiles_list)

    show = actions.add_parser("show", help="what a profile knows about its camera")
    show.add_argument("profile", metavar="NAME|FILE",
                      help="a profile name (see 'profiles list') or a TOML file")
    show.set_defaults(run=_profiles_show)

    validate = actions.add_parser(
        "validate", help="check profile files against the schema",
        description="Check TOML profile files. Prints 'FILE: valid', or one problem per "
                    "line and exits with status 1.")
    validate.add_argument("files", metavar="FILE", nargs="+", help="a TOML profile file")
    validate.set_defaults(run=_profiles_validate)

    draft = actions.add_parser(
        "draft", help="a profile of what the default call infers from a night",
        description="Write a profile, in TOML, of what the default call (the generic "
                    "profile) infers from the frames of RAW, each value with a comment "
                    "saying what it was inferred from, for you to correct.")
    draft.add_argument("raw", metavar="RAW", help="the folder of the night's raw frames")
    draft.add_argument("-o", "--output", metavar="FILE", default=None,
                       help="the TOML file to write (it must not exist); default: print")
    draft.add_argument("--name", default=None,
                       help="the profile's name (default: from INSTRUME or the folder)")
    draft.set_defaults(run=_profiles_draft)


# ------------------------------------------------------------------ night commands
def _image_types(pairs):
    overrides = {}
    for pair in pairs or []:
        pattern, sep, image_type = pair.rpartition("=")
        if not sep or not pattern:
            raise CcdprocExtError(f"--type {pair!r}: expected PATTERN=TYPE, e.g. 'flat-*=flat'")
        if image_type not in IMAGE_TYPES:
            raise CcdprocExtError(f"--type {pair!r}: {image_type!r} is not a frame type; "
                                  f"expected one of {', '.join(IMAGE_TYPES)}")
        overrides[pattern] = image_type
    return overrides


def _add_night_options(parser):
    parser.add_argument("--profile", default="generic",
                        help="profile name or TOML file (default: generic)")
    parser.add_argument("--type", action="append", metavar="PATTERN=TYPE", dest="types",
                        help="declare the type of matching files, e.g. 'flat-*=flat' "
                             "(repeatable)")
    parser.add_argument("--library", metavar="LIBRARY",
                        help="calibration library: masters of other nights for frames "
                             "this night has none for (reduce also registers its masters)")
    scaling = parser.add_mutually_exclusive_group()
    scaling.add_argument("--scale-darks", action="store_true", default=None,
                         help="allow darks of another exposure time, scaled by exposure "
                              "(the default of most profiles)")
    scaling.add_argument("--no-scale-darks", action="store_false", dest="scale_darks",
                         help="never scale darks: only darks within the profile's tolerance")


def _cmd_plan(args):
    from .collection import NightCollection

    collection = NightCollection(args.raw, profile=_profile_argument(args.profile),
                                 image_types=_image_types(args.types))
    plan = collection.plan(scale_darks=args.scale_darks, library=args.library)
    if args.write:
        from .plans import write_plan

        write_plan(plan, args.write)
    columns = ["file", "type", "exposure", "filter", "bias", "dark", "dark_scale", "flat",
               "status", "problem"]
    plan[columns].pprint(max_lines=-1, max_width=-1)
    unusable = plan["file"][plan["status"] != "ok"]
    _say_heard(args, plan["file"], said=unusable)
    print(f"\n{len(plan)} frames, {len(plan.meta['masters'])} masters planned, "
          f"{len(unusable)} with problems")
    return _nothing_usable_status(plan, unusable)


def _cmd_reduce(args):
    from .night import reduce_night

    # --workers 1 works one frame at a time in this process; the default uses every core
    # (threads for the masters, reduce_night's own processes for the science frames).
    result = reduce_night(args.raw, args.out, _profile_argument(args.profile),
                          dry_run=args.dry_run,
                          overwrite=args.overwrite, strict=args.strict,
                          workers=args.workers, progress=not args.quiet,
                          image_types=_image_types(args.types),
                          scale_darks=args.scale_darks,
                          library=args.library, plan=args.plan, report=args.report,
                          **_quality_arguments(args))
    if args.dry_run:
        result.plan["file", "type", "bias", "dark", "dark_scale", "flat", "status",
                    "problem"].pprint(max_lines=-1, max_width=-1)
    _say_heard(args, result.plan["file"], said=result.problems["file"])
    print(result.summary(verbose=args.verbose))
    return _reduce_status(result, dry_run=args.dry_run)


def _quality_arguments(args):
    """``bad_pixels`` and ``cosmic_rays`` of reduce_night from --bad-pixels, --cosmic-rays."""
    bad_pixels = args.bad_pixels
    if bad_pixels.lower() == "none":
        bad_pixels = None
    return {"bad_pixels": bad_pixels, "cosmic_rays": args.cosmic_rays}


def _say_heard(args, files=(), said=()):
    """Say what ccdproc and astropy said while the command ran, grouped by reason;
    nothing more about the files ``said`` (the night's problems)."""
    for line in args.heard.lines(files, said=said, verbose=getattr(args, "verbose", False)):
        print(f"{_PROG}: warning: {line}", file=sys.stderr)


def _nothing_usable_status(plan, unusable):
    """1, said on standard error, when there is no file or every file is a problem (none
    could be read, or none used); else 0."""
    files = set(plan["file"])
    if files and not files <= set(unusable):
        return 0
    if not files:
        why = "no file to reduce"
    elif all(image_type == "unreadable" for image_type in plan["type"]):
        why = f"none of the {len(files)} files could be read"
    else:
        why = f"none of the {len(files)} files could be used"
    print(f"{_PROG}: error: {why}", file=sys.stderr)
    return 1


def _reduce_status(result, *, dry_run):
    """1 when science frames were planned and none could be reduced, when no file could
    be used, when an output could not be written, or when a master that science frames
    need could not be built; else 0. The first of these that holds is said: the science
    frames, when there are some, are what a night is for."""
    if dry_run:
        planned = result.plan[result.plan["type"] == "science"]
        if len(planned) and not (planned["status"] == "ok").any():
            print(f"{_PROG}: error: none of the {len(planned)} science frames can be reduced",
                  file=sys.stderr)
            return 1
        return _nothing_usable_status(result.plan, result.problems["file"])
    if result.n_science_planned and result.n_science_reduced == 0:
        print(f"{_PROG}: error: none of the {result.n_science_planned} science frames could "
              "be reduced", file=sys.stderr)
        return 1
    if _nothing_usable_status(result.plan, result.problems["file"]):
        return 1
    unwritten = [str(p["file"]) for p in result.problems if p["kind"] == "OutputError"]
    if unwritten:  # an output left as it was may be an older one: never a success
        print(f"{_PROG}: error: {len(unwritten)} output(s) could not be written: "
              + ", ".join(unwritten), file=sys.stderr)
        return 1
    if result.unbuilt_masters:
        print(f"{_PROG}: error: {len(result.unbuilt_masters)} master(s) that science frames "
              "need could not be built: " + ", ".join(result.unbuilt_masters), file=sys.stderr)
        return 1
    return 0


def _cmd_demo(args):
    from .night import reduce_night
    from .simulate import simulate_night

    out = Path(args.outdir)
    print(f"simulating a night for profile {args.profile!r} in {out / 'raw'} ...")
    night = simulate_night(out / "raw", args.profile, shape=_demo_shape(args.profile),
                           n_bias=5, dark_exposures=(2.0, 60.0), n_dark=5,
                           filters=("V", "R"), n_flat=5, science_exposure=60.0,
                           n_science=3)
    print(f"{len(night.files)} raw frames written")
    result = reduce_night(out / "raw", out / "reduced", args.profile,
                          progress=not args.quiet)
    _print_table(result.plan["file", "type", "bias", "dark", "flat", "status"])
    print()
    _print_table(result.science["raw_file", "output_file", "sky_level", "sky_noise",
                                "status"])
    print()
    print(result.summary())
    return 0 if len(result.science) else 1


def _print_table(table):
    table.pprint(max_lines=-1, max_width=-1)


def _demo_shape(profile_name):
    from .profiles import get_profile

    profile = get_profile(profile_name)
    if profile.shape:
        return (256, profile.shape[1])
    return (256, 256)


def _cmd_report(args):
    from .report import write_report

    print(write_report(args.out))
    return 0


def _add_night_commands(commands):
    plan = commands.add_parser(
        "plan", help="which calibrations each raw frame gets, and why",
        description="Classify the raw frames and print the calibration plan: for each "
                    "frame the master bias, dark (and scale) and flat it gets, or the "
                    "problem that stops it. Nothing is written.")
    plan.add_argument("raw", metavar="RAW", help="folder of raw frames (searched recursively)")
    _add_night_options(plan)
    plan.add_argument("--write", metavar="PLAN",
                      help="also write the plan to this ECSV file, to edit and give to "
                           "'reduce --plan'")
    plan.set_defaults(run=_cmd_plan)

    reduce = commands.add_parser(
        "reduce", help="reduce a night: masters and calibrated science frames",
        description="Plan the night, build the masters, calibrate every science frame. "
                    "Writes masters/, science/, plan.ecsv and masters.ecsv under OUT.")
    reduce.add_argument("raw", metavar="RAW", help="folder of raw frames")
    reduce.add_argument("out", metavar="OUT", help="output folder (not inside RAW)")
    _add_night_options(reduce)
    reduce.add_argument("--dry-run", action="store_true", help="print the plan only")
    reduce.add_argument("--no-report", action="store_false", dest="report",
                        help="do not write report.html (see 'ccdproc-ext report OUT')")
    reduce.add_argument("--overwrite", action="store_true",
                        help="redo outputs that are already up to date")
    reduce.add_argument("--strict", action="store_true",
                        help="stop at the first frame that cannot be reduced")
    reduce.add_argument("--workers", type=int, default=None, metavar="N",
                        help="build masters with N threads and calibrate science frames "
                             "in N processes (default: one per core; 1: one frame at a "
                             "time)")
    reduce.add_argument("--plan", metavar="PLAN",
                        help="execute this plan (an edited 'plan --write' or plan.ecsv) "
                             "instead of the automatic one")
    reduce.add_argument("--cosmic-rays", nargs="?", const=True, default=False,
                        choices=[True, "clean"], metavar="clean",
                        help="find and mask cosmic-ray hits in the science frames "
                             "(L.A.Cosmic; slow); '--cosmic-rays clean' also replaces them")
    reduce.add_argument("--bad-pixels", default="auto", metavar="auto|none|FILE",
                        help="bad-pixel mask: built from the masters (auto, the default), "
                             "none, or a mask FITS file of your own (non-zero = bad)")
    _add_verbosity(reduce)
    reduce.set_defaults(run=_cmd_reduce)

    report = commands.add_parser(
        "report", help="write OUT/report.html again from the files of a reduced night",
        description="Make the night report (report.html and its pictures in report/) "
                    "from the tables and frames reduce_night wrote under OUT.")
    report.add_argument("out", metavar="OUT", help="output folder of 'ccdproc-ext reduce'")
    report.set_defaults(run=_cmd_report)

    demo = commands.add_parser(
        "demo", help="simulate a night and reduce it",
        description="Write a simulated raw night to OUTDIR/raw and reduce it into "
                    "OUTDIR/reduced, printing the plan, the science frames and a summary.")
    demo.add_argument("outdir", metavar="OUTDIR")
    demo.add_argument("--profile", default="palomar-lfc",
                      help="camera to simulate (default: palomar-lfc)")
    _add_verbosity(demo)
    demo.set_defaults(run=_cmd_demo)


# ------------------------------------------------------------------ library commands
def _library_list(args):
    from .library import CalibrationLibrary

    table = CalibrationLibrary(args.library).table()
    if not len(table):
        print(f"{args.library}: no masters")
        return 0
    table["first"] = [_date_of(m) for m in table["mjd_first"]]
    table["last"] = [_date_of(m) for m in table["mjd_last"]]
    table["id", "kind", "profile", "name", "shape", "xbin", "ybin", "temperature", "exposure",
          "filter", "first", "last", "n_frames", "path"].pprint(max_lines=-1, max_width=-1)
    return 0


def _date_of(mjd):
    from .library import night_date

    return night_date(mjd)


def _library_add(args):
    from .library import CalibrationLibrary

    library = CalibrationLibrary(args.library)
    keys = {"shape": args.shape} if args.shape else {}
    for path in args.files:
        row = library.add(path, profile=_profile_argument(args.profile) if args.profile
                          else None, **keys)
        print(f"added {row['kind']} {path}")
    return 0


def _library_remove(args):
    from .library import CalibrationLibrary

    library = CalibrationLibrary(args.library)
    status = 0
    for path in args.files:
        if library.remove(path):
            print(f"removed {path}")
        else:
            print(f"{_PROG}: error: {path} is not in {args.library}", file=sys.stderr)
            status = 1
    return status


def _library_verify(args):
    from .library import CalibrationLibrary

    problems = CalibrationLibrary(args.library).verify()
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{args.library}: every master is there, unchanged")
    return 1 if problems else 0


def _add_library_commands(commands):
    library = commands.add_parser(
        "library", help="a calibration library: masters of many nights",
        description="List, add, remove and verify the masters of a calibration library "
                    "(an SQLite file). 'reduce --library' registers the masters it builds.")
    actions = library.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, run, text, files in (
            ("list", _library_list, "the masters, one per line", None),
            ("add", _library_add, "register master files (keys read from their headers)",
             "+"),
            ("remove", _library_remove, "forget master files (the files are kept)", "+"),
            ("verify", _library_verify, "check every master is there, unchanged (exit "
             "status 1 when one is not)", None)):
        action = actions.add_parser(name, help=text, description=text[0].upper() + text[1:]
                                    + ".")
        action.add_argument("library", metavar="LIBRARY", help="the library file")
        if files:
            action.add_argument("files", metavar="FILE", nargs=files, help="a master file")
        if name == "add":
            action.add_argument("--profile", default=None,
                                help="profile name or TOML file (default: the header's "
                                     "PROFILE)")
            action.add_argument("--shape", metavar="ROWSxCOLUMNS", default=None,
                                help="shape of the raw frames of a trimmed master")
        action.set_defaults(run=run)


def _add_verbosity(parser):
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true",
                          help="no progress bars, errors only")
    loudness.add_argument("-v", "--verbose", action="store_true",
                          help="also print what is noted while reading and reducing")


# ------------------------------------------------------------------------ the parser
def build_parser():
    """The `argparse.ArgumentParser` of ``ccdproc-ext`` with all its sub-commands."""
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Instrument profiles, calibration matching and whole-night CCD "
                    "reduction on top of ccdproc.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_profiles_commands(commands)
    _add_night_commands(commands)
    _add_library_commands(commands)
    return parser


class _OneLine(logging.Formatter):
    """``ccdproc-ext: warning: words``: one line, never a traceback."""

    def format(self, record):
        return f"{_PROG}: {record.levelname.lower()}: {record.getMessage()}"


class _AboveTheBars(logging.Handler):
    """Writes through tqdm, so that messages go above the progress bars, not over them."""

    def emit(self, record):
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # a message must never end the command
            self.handleError(record)


def _configure_logging(args):
    """The command line's own handler for the package's log: the library sets none."""
    if getattr(args, "quiet", False):
        level = logging.ERROR
    elif getattr(args, "verbose", False):
        level = logging.INFO
    else:
        level = logging.WARNING
    handler = _AboveTheBars()
    handler.setFormatter(_OneLine())
    logger = logging.getLogger("ccdproc_ext")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    return logger, saved


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is."""


def _raise_terminated(signum, frame):
    raise _Terminated


@contextlib.contextmanager
def _terminate_as_interrupt():
    """Within this block, SIGTERM (``kill``, a batch system's time limit) stops the
    command as Ctrl-C does: outputs whole or absent, the worker processes shut down."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may handle signals
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None):
    """Run ``ccdproc-ext`` with ``argv`` (default: the process arguments).

    Returns
    -------
    int
        The exit status: 0 on success, 1 when the command failed, 2 for a usage error,
        130 when interrupted (Ctrl-C), 143 when terminated (SIGTERM).
    """
    tune_allocator()  # the command owns its process (see ccdproc_ext.tune_allocator)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # --help, --version or a usage error, already printed
        return exit.code
    logger, saved = _configure_logging(args)
    quiet = getattr(args, "quiet", False)
    # What ccdproc logs and warnings say is heard, and said at the end, grouped.
    args.heard = HeardMessages(level=logging.ERROR if quiet else logging.WARNING,
                               prefix=f"{_PROG}: warning: ")
    with SavedFilters(), _terminate_as_interrupt(), args.heard:
        if quiet:
            warnings.simplefilter("ignore")
        try:
            return args.run(args)
        except (CcdprocExtError, OSError) as err:
            print(f"{_PROG}: error: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt as interrupt:
            # Outputs are written whole or not at all: the same command resumes the night.
            terminated = isinstance(interrupt, _Terminated)
            print(f"{_PROG}: {'terminated' if terminated else 'interrupted'}; run the same "
                  "command again to resume", file=sys.stderr)
            return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
        except Exception as err:  # no traceback reaches the terminal
            print(f"{_PROG}: internal error: {type(err).__name__}: {err}\n"
                  f"{_PROG}: this is a bug; please report it with the command and the "
                  "versions printed by 'ccdproc-ext --version'", file=sys.stderr)
            return 1
        finally:
            _say_heard(args)  # what the command did not say itself
            logger.handlers[:], _, logger.propagate = saved
            logger.setLevel(saved[1])


if __name__ == "__main__":
    sys.exit(main())
