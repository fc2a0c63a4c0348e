"""`reduce_night`: one call from a folder of raw frames to calibrated science frames.

The night goes through seven stages, each a function below:

1. **collect** the raw frames (`~ccdproc_ext.NightCollection`) and **plan** them
   (`~ccdproc_ext.build_plan`): missing calibrations are found before any pixel
   is touched, and a dry run stops here;
2. **write the plan** (``plan.ecsv``, ``masters.ecsv``) in the output folder;
3. **build the masters** the plan needs, bias, then darks, then flats
   (`~ccdproc_ext.make_master_bias` and friends), or find them up to date;
4. **make the science tasks**: one `~ccdproc_ext.science.ScienceTask` per science frame
   whose masters exist;
5. **run them**, here, in worker processes, or on any executor, and gather what they say;
6. **write the results**: ``science.ecsv``, ``problems.ecsv`` and ``notes.ecsv``;
7. **write the report**: ``report.html`` and its pictures (`ccdproc_ext.report`).

Outputs go to ``masters/`` and ``science/`` under the output folder (see
`ccdproc_ext.outputs` for their names, their safety and how a re-run resumes). Masters
carry no time stamp, so a master rebuilt from the same frames is the same file and a
resumed night ends with exactly the outputs of an uninterrupted one (but for the
``CCDPDATE`` of the science frames).

Bad input never ends the night with a traceback: every frame that cannot be reduced is a
`Problem` (its file and the error), listed in `NightResult.problems`, and the night goes
on with the good frames; ``strict=True`` raises that error instead, at the first one. An
error that is not the package's own (a bug) becomes an `~ccdproc_ext.InternalError` of the
frame or master, its traceback written to ``internal-errors.log``. Things worth knowing
about frames that were used (header cards repaired, a type guessed, pixels masked, a
master made from a single frame) and about the night (a calibration type missing) are
`Note` records, in `NightResult.notes`.
"""

import contextlib
import logging
import os
import traceback
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Table

from ._allocator import freed_memory_reused, give_back_freed_memory
from ._warnings import CaughtWarnings
from ._workers import start_worker
from .collection import NightCollection
from .exceptions import (
    CalibrationMatchError,
    CcdprocExtError,
    DataQualityWarning,
    FrameReadError,
    FrameSkippedWarning,
    InternalError,
    error_class,
)
from .extensions import (
    check_extensions_readable,
    check_same_extensions,
    detector_extensions,
    file_header,
    primary_header,
    read_extension,
    write_extensions,
)
from .library import CalibrationLibrary, planned_master_keys
from .master_frame import MasterFrame, MultiMaster, extensions_of, load_master
from .masters import make_master_bias, make_master_dark, make_master_flat
from .matching import build_plan
from .outputs import (
    check_output_dir,
    check_raw_files,
    file_stamp,
    inside,
    output_name,
    prepare_output_dir,
    recipe,
    recorded_header,
    up_to_date,
    write_atomic,
    write_table,
)
from .plans import PlanEdits, record_edit
from .profiles import get_profile
from .provenance import file_name_of
from .quality import cosmic_ray_rule
from .science import (
    MasterRef,
    ScienceOutcome,
    ScienceTask,
    clear_master_cache,
    prepare_masters,
    process_context,
    run_task,
    without_path,
)

__all__ = ["NightResult", "Note", "Problem", "reduce_night"]

log = logging.getLogger(__name__)

#: The ``file`` of problems and notes about the whole night rather than one frame.
NIGHT = "(night)"

#: Where the tracebacks of unexpected errors are written, in the output folder.
INTERNAL_ERRORS_LOG = "internal-errors.log"

#: The order masters are built in: each kind needs the ones before it.
MASTER_KINDS = ("bias", "dark", "flat")


# ------------------------------------------------------------------------ records
@dataclass(frozen=True)
class Problem:
    """A frame that was not reduced (or was left out of a master), and why."""

    file: str
    error: CcdprocExtError

    @property
    def kind(self):
        """The name of the error's class, e.g. ``"FrameReadError"``."""
        return type(self.error).__name__

    @property
    def text(self):
        """What is wrong, in words, without the file's full path."""
        return without_path(self.error)


@dataclass(frozen=True)
class Note:
    """Something worth knowing about a frame that was used, a master, or the night."""

    file: str
    kind: str
    text: str


@dataclass
class NightResult:
    """What `reduce_night` did.

    Attributes
    ----------
    plan : `~astropy.table.Table`
        The plan: one row per raw frame (see `~ccdproc_ext.build_plan`).
    masters : dict
        ``(kind, name) -> path`` of every master built or found up to date.
    science : `~astropy.table.Table`
        One row per science frame: raw file, output file, masters used, dark scale, sky
        level and noise, the number of saturated and of masked pixels, status
        (``written``, ``up to date``).
    problems : `~astropy.table.Table`
        Frames that were not reduced (or left out of a master), one row each: ``file``,
        ``kind`` (the name of the error class, e.g. ``FrameReadError``) and ``problem``
        (what is wrong, in words).
    notes : `~astropy.table.Table`
        Frames and masters that were used but deserve a look: ``file``, ``kind`` (e.g.
        ``DataQualityWarning``) and ``note`` (header cards repaired, pixels that were NaN,
        a master made from a single frame, flat pixels below the minimum).
    output_dir : `pathlib.Path`
    unbuilt_masters : dict
        ``name -> reason`` of every master the plan needed that could not be built.
    """

    plan: Table
    masters: dict = field(default_factory=dict)
    science: Table = None
    problems: Table = None
    output_dir: Path = None
    notes: Table = None
    unbuilt_masters: dict = field(default_factory=dict)
    dry_run: bool = False

    @property
    def n_science_planned(self):
        """How many frames of the night are science frames."""
        return int((self.plan["type"] == "science").sum())

    @property
    def n_science_reduced(self):
        """How many science frames were written or found up to date."""
        if self.science is None or len(self.science) == 0:
            return 0
        return int(sum(str(s) in ("written", "up to date") for s in self.science["status"]))

    def summary(self, *, verbose=False):
        """A few lines for people: frames by type, masters, science frames, problems.

        Problems and notes are grouped by reason, each file named once ("12 frames:
        truncated ..."); ``verbose=True`` gives every file's own words instead.
        """
        from .report import grouped_lines  # the report's grouping, in lines

        counts = {}
        for image_type in self.plan["type"]:
            counts[image_type] = counts.get(image_type, 0) + 1
        lines = ["frames: " + ", ".join(f"{n} {t}" for t, n in sorted(counts.items()))]
        if self.dry_run:
            planned = self.plan.meta.get("masters", ())
            lines.append(f"masters planned: {len(planned)} ("
                         + ", ".join(str(name) for name in planned["name"]) + ")"
                         if len(planned) else "masters planned: none")
        else:
            lines.append(f"masters: {len(self.masters)} ("
                         + ", ".join(sorted(name for _, name in self.masters)) + ")")
        if self.science is not None and len(self.science):
            done = {}
            for status in self.science["status"]:
                done[status] = done.get(status, 0) + 1
            lines.append("science frames: " + ", ".join(f"{n} {s}" for s, n in
                                                        sorted(done.items())))
        elif self.n_science_planned == 0:
            lines.append("science frames: none in this night (masters only)")
        elif self.dry_run:
            ready = int(((self.plan["type"] == "science") & (self.plan["status"] == "ok")).sum())
            lines.append(f"science frames: {ready} of {self.n_science_planned} can be reduced "
                         "(dry run: nothing was written)")
        else:
            lines.append(f"science frames: none of {self.n_science_planned} reduced")
        for name, reason in self.unbuilt_masters.items():
            lines.append(f"master {name} not built: {reason}")
        if self.problems is not None and len(self.problems):
            files = len(set(self.problems["file"]))
            lines.append(f"{files} frame(s) with problems:")
            lines.extend("  " + line for line in
                         grouped_lines(self.problems, "problem", verbose=verbose))
        if self.notes is not None and len(self.notes):
            lines.append("notes:")
            lines.extend("  " + line for line in
                         grouped_lines(self.notes, "note", verbose=verbose))
        if self.output_dir is not None and not self.dry_run:
            lines.append(f"output: {self.output_dir}")
        return "\n".join(lines)

    def _repr_html_(self):
        from .report import night_html_summary

        return night_html_summary(self)


def reduce_night(raw, output_dir, profile="generic", *, dry_run=False, overwrite=False,
                 strict=False, workers=None, executor=None, progress=True,
                 image_types=None,
                 scale_darks=None, combine_options=None, gain_correct=False,
                 create_deviation=False, write_uncertainty=False, dtype=np.float32,
                 library=None, validity=None, plan=None, report=True,
                 bad_pixels="auto", cosmic_rays=False):
    """Reduce a night: plan, build masters, calibrate every science frame.

    Parameters
    ----------
    raw : str, `pathlib.Path`, list of paths or `~ccdproc.ImageFileCollection`
        The raw frames: a folder (searched recursively), files, or a collection. They are
        only ever opened read-only.
    output_dir : str or `pathlib.Path`
        Where ``masters/``, ``science/``, ``plan.ecsv`` and ``masters.ecsv`` are written.
        It may not be the raw folder, be inside it or contain it, and no raw file may lie
        inside it (`~ccdproc_ext.OutputError`, before anything is read or written).
    profile : str, path or `~ccdproc_ext.InstrumentProfile`, optional
        The camera. Default is ``"generic"``.
    dry_run : bool, optional
        Only build and return the plan; nothing is written. Default is ``False``.
    overwrite : bool, optional
        Redo outputs that are up to date. Default is ``False``.
    strict : bool, optional
        Raise at the first frame that cannot be reduced instead of listing it in
        ``problems``: the error is of the kind named in the problem (a
        `~ccdproc_ext.FrameReadError` for a truncated file, a
        `~ccdproc_ext.CalibrationMatchError` for a frame no calibration matches...).
        Default is ``False``.
    workers : int or None, optional
        Processes calibrating science frames in parallel on this machine, and threads
        reading, calibrating and combining the frames of each master. Default is
        ``None``: one per core. ``1`` does everything one frame at a time in this
        process.
    executor : `concurrent.futures.Executor` or None, optional
        Where science frames are calibrated, for work beyond one machine: any executor,
        such as a ``dask.distributed`` client's ``get_executor()``. Tasks carry file paths,
        so the workers must see the same file system. Overrides ``workers``.
    progress : bool, optional
        Show progress bars (only on a terminal). Default is ``True``.
    image_types : dict or None, optional
        Frame-type overrides, see `~ccdproc_ext.NightCollection`.
    scale_darks : bool or None, optional
        Allow scaled darks. Default: the profile's setting.
    combine_options : dict or None, optional
        Options of `~ccdproc_ext.combine` for the masters.
    gain_correct, create_deviation : bool, optional
        See `~ccdproc_ext.calibrate_frame`. Default is ``False``.
    write_uncertainty : bool, optional
        Write the uncertainty and mask of science frames. Default is ``False``: the mask
        is still written (extension ``MASK``) when any pixel is masked (saturated, NaN in
        the raw frame, or masked in a master).
    dtype : numpy dtype, optional
        Pixel type of the outputs. Default is ``float32``.
    report : bool, optional
        Write ``report.html`` and its pictures (`ccdproc_ext.report.write_report`; about
        half a second per master and a tenth per science frame). Default is ``True``;
        ``ccdproc-ext report OUT`` writes it later from the files.
    library : str, `pathlib.Path`, `~ccdproc_ext.CalibrationLibrary` or None, optional
        A calibration library: the masters built are registered in it, and frames whose
        night has no fitting calibration get the library's nearest master of the same
        group keys within the validity window of its kind (see
        `~ccdproc_ext.build_plan`). Only this process reads and writes it. Default is
        ``None``.
    validity : dict or None, optional
        Validity windows in days by kind (``{"flat": 7, "bias": None}``), over the
        library's (`~ccdproc_ext.library.DEFAULT_VALIDITY`).
    plan : `~astropy.table.Table`, str, `pathlib.Path` or None, optional
        A plan to execute instead of the automatic one: a dry run's plan (written with
        `~ccdproc_ext.plans.write_plan`) or a night's ``plan.ecsv``, edited (see
        `ccdproc_ext.plans`): rows removed, types changed, masters swapped.
    bad_pixels : "auto", str, `pathlib.Path` or None, optional
        The bad pixels masked in the science frames (bits ``bad pixel`` and ``low flat``
        of their ``MASK``). ``"auto"`` (the default) builds a bad-pixel mask from each
        pair of master dark and flat the science frames use: hot pixels of the dark,
        low and dead pixels of the flat (`~ccdproc_ext.quality.make_bad_pixel_mask`),
        written as ``masters/bpm_<dark>_<flat>.fits``. A path: a mask file of one's own
        (non-zero where bad), written as ``masters/bpm_<its name>.fits``. ``None``: none.
        Each science frame names its mask in ``BPMFILE``, and the pixels it masked in
        ``NBADPIX``; the ``bpm`` column of ``science`` names it too.
    cosmic_rays : bool or "clean", optional
        Find cosmic-ray hits in each calibrated science frame
        (`ccdproc.cosmicray_lacosmic`, see `~ccdproc_ext.quality.detect_cosmic_rays`)
        and mask them (bit ``cosmic ray``); ``"clean"`` also replaces them by cleaned
        values. Default is ``False``: L.A.Cosmic costs more than the rest of a frame's
        calibration.

    Returns
    -------
    `NightResult`

    Raises
    ------
    OutputError
        If the output folder is in, is, or contains the raw folder, or cannot be written.
    CcdprocExtError
        In strict mode, the error of the first frame that cannot be reduced.
    CalibrationMatchError
        When an edited ``plan`` names a frame the night does not have, a type that is
        not one, or a master that breaks the rules: its row and column are named.
    """
    profile = get_profile(profile)
    bad_pixels, cosmic_rays = _quality_options(bad_pixels, cosmic_rays)
    output_dir = check_output_dir(raw, output_dir)
    collection = _collect(raw, profile, image_types, output_dir)
    library = None if library is None else CalibrationLibrary.of(library, validity=validity)
    collection, plan = _plan_night(collection, plan, scale_darks=scale_darks, library=library)
    _plan_bad_pixel_masks(plan, bad_pixels)
    # Where the raw frames are, for the report's pictures of them before calibration.
    plan.meta["raw_folder"] = str(Path(collection.location).resolve()) \
        if collection.location else ""
    if cosmic_rays:
        plan.meta["cosmic_rays"] = cosmic_ray_rule(clean=cosmic_rays == "clean")
    night_log = _NightLog(strict, output_dir)
    night_log.read_plan(plan)
    _read_library_problems(night_log, plan)
    result = NightResult(plan=plan, output_dir=output_dir, dry_run=dry_run)
    if dry_run:
        return night_log.finish(result, [])

    # The profile as the night's headers bear it out (a saturation keyword that is a
    # statistic of each frame is no level to mask by).
    options = _Options(profile=collection.night_profile, overwrite=overwrite, strict=strict,
                       workers=workers, combine_options=dict(combine_options or {}),
                       gain_correct=gain_correct, create_deviation=create_deviation,
                       write_uncertainty=write_uncertainty, dtype=np.dtype(dtype),
                       bad_pixels=bad_pixels, cosmic_rays=cosmic_rays)
    _write_plan(plan, output_dir)
    # Arrays of megabytes freed are reused, not faulted in again (see _allocator).
    with freed_memory_reused():
        masters = _build_masters(plan, collection, options, night_log, progress=progress)
        _build_bad_pixel_masks(plan, masters, options, night_log)
        give_back_freed_memory()  # not kept through the science step, nor by its workers
        if library is not None:
            _register_masters(library, plan, collection, masters, night_log)
        result.masters = dict(masters.paths)
        tasks = _science_tasks(plan, collection, masters, options, night_log, result)
        outcomes = _run_tasks(tasks, masters, options, night_log, executor=executor,
                              progress=progress)
        _record_plan_edits(plan, tasks, outcomes, night_log)
        night_log.finish(result, list(zip(tasks, outcomes, strict=True)))
        _write_results(result, output_dir)
        if report:
            _write_report(result, output_dir, night_log)
    return result


#: The tables a night writes beside ``plan.ecsv``: the name of each and its attribute.
RESULT_TABLES = {"science.ecsv": "science", "problems.ecsv": "problems",
                 "notes.ecsv": "notes"}


def _write_report(result, output_dir, report):
    """Stage 7: ``report.html``, from the files just written. A report that cannot be
    made is a note of the night, never the end of it."""
    from .report import write_report

    try:
        write_report(output_dir)
    except Exception as err:  # the night's outputs are complete without it
        err = report.unexpected(err, "report.html")
        text = f"report.html not written: {without_path(err)}"
        log.warning("%s", text)
        result.notes.add_row((NIGHT, type(err).__name__, text))
        write_table(result.notes, output_dir / "notes.ecsv")


def _write_results(result, output_dir):
    """Stage 6: the science, problem and note tables, as ECSV beside the plan."""
    for name, attribute in RESULT_TABLES.items():
        table = getattr(result, attribute)
        if attribute == "science":
            # Paths relative to the output folder: the folder can move with its tables.
            table = table.copy()
            table["output_file"] = [Path(f).relative_to(output_dir).as_posix()
                                    for f in table["output_file"]]
        write_table(table, output_dir / name)


# --------------------------------------------------------------------- the stages
@dataclass(frozen=True)
class _Options:
    """The settings of one reduction that the stages share."""

    profile: object
    overwrite: bool
    strict: bool
    workers: int | None
    combine_options: dict
    gain_correct: bool
    create_deviation: bool
    write_uncertainty: bool
    dtype: np.dtype
    bad_pixels: object = "auto"  # "auto", a Path, or None
    cosmic_rays: object = False  # False, True or "clean"

    @property
    def keeps_uncertainty(self):
        """Masters carry their uncertainty only when the science frames will use it."""
        return bool(self.write_uncertainty or self.create_deviation)

    def settings(self):
        """What an output's recipe records of the settings."""
        return {"profile": self.profile.name,
                "combine": repr(sorted(self.combine_options.items())),
                "dtype": self.dtype.name}


def _collect(raw, profile, image_types, output_dir):
    """Stage 1: the night's frames, after checking none of them is in the output folder."""
    if isinstance(raw, NightCollection):
        collection = raw
    else:
        with warnings.catch_warnings():
            # ccdproc's words for an empty folder: said below as an error.
            warnings.filterwarnings("ignore", "no FITS files in the collection")
            collection = NightCollection(raw, profile=profile, image_types=image_types)
    check_raw_files(collection, output_dir)
    if len(collection.files) == 0 and not collection.problems:
        where = raw if isinstance(raw, str | os.PathLike) else "the raw frames given"
        raise FrameReadError(f"{where}: no FITS file found (looked for .fits, .fit, .fts "
                             "and their compressed forms)")
    return collection


def _plan_night(collection, edited, *, scale_darks, library):
    """Stage 1b: the automatic plan, or an edited one checked by the same rules.

    Returns the night as planned (frames retyped or left out by the edits) and the plan.
    """
    if edited is None:
        return collection, build_plan(collection, scale_darks=scale_darks, library=library)
    edits = PlanEdits.read(edited, collection)
    collection = edits.apply(collection)
    plan = build_plan(collection, scale_darks=scale_darks, library=library,
                      choices=edits.choices)
    return collection, edits.mark(plan)


def _read_library_problems(report, plan):
    """Library masters refused by the plan (file missing or changed) are problems."""
    for file, text in plan.meta.get("library_problems", ()):
        report.problem(file, CalibrationMatchError(text))


def _register_masters(library, plan, collection, masters, report):
    """Stage 3b: the masters built from this night's frames go into the library."""
    table = plan.meta["masters"]
    entries = [(masters.paths[(str(m["kind"]), str(m["name"]))],
                planned_master_keys(m, collection.frames))
               for m in table if m["origin"] == "night"
               and (str(m["kind"]), str(m["name"])) in masters.paths]
    if not entries:
        return
    try:
        library.add_many(entries, profile=collection.profile)
    except CcdprocExtError as err:
        report.problem(str(library.path), type(err)(f"masters not registered: {err}"))


def _record_plan_edits(plan, night_tasks, outcomes, report):
    """The edits of a user's plan, in the header of each science frame they concern."""
    edits = {str(f): str(e) for f, e in zip(plan["file"], plan["edit"], strict=True) if e}
    for night_task, outcome in zip(night_tasks, outcomes, strict=True):
        edit = edits.get(night_task.file)
        if edit and not isinstance(outcome, Exception):
            try:
                record_edit(night_task.task.output, edit)
            except CcdprocExtError as err:
                report.problem(night_task.file, err)


def _write_plan(plan, output_dir):
    """Stage 2: the output folders, ``plan.ecsv`` and ``masters.ecsv``."""
    prepare_output_dir(output_dir)
    plan_to_write = plan.copy(copy_data=False)
    plan_to_write.meta = {k: v for k, v in plan.meta.items() if k != "masters"}
    write_table(plan_to_write, output_dir / "plan.ecsv")
    write_table(plan.meta["masters"], output_dir / "masters.ecsv")


@dataclass
class _Masters:
    """The masters of a night as they are built: in memory, on disk, or failed."""

    built: dict = field(default_factory=dict)  # name -> MasterFrame (no uncertainty)
    paths: dict = field(default_factory=dict)  # (kind, name) -> Path
    failed: dict = field(default_factory=dict)  # name -> CcdprocExtError
    bpm_of: dict = field(default_factory=dict)  # (dark name, flat name) -> bpm name

    def path(self, kind, name):
        return self.paths[(kind, name)]

    def by_file_stem(self):
        """``file stem -> MasterFrame``, as `prepare_masters` looks masters up; a stem two
        files share (a library master named like one of the night's) maps to ``None``,
        and that master is read from its file."""
        stems = {}
        for (_, name), path in self.paths.items():
            stem = Path(path).stem
            stems[stem] = None if stem in stems else self.built.get(name)
        return stems


def _build_masters(plan, collection, options, report, *, progress):
    """Stage 3: every master of the plan, bias first, each from its usable frames."""
    from tqdm.auto import tqdm

    table = plan.meta["masters"]
    rows = {row["file"]: row for row in plan}
    masters = _Masters()
    with tqdm(total=len(table), desc="masters", unit="master",
              disable=None if progress else True) as bar:
        for kind in MASTER_KINDS:
            for master in table[table["kind"] == kind]:
                if master["origin"] == "library":
                    _load_library_master(kind, master, options, report, masters)
                else:
                    _build_one_master(kind, master, rows, collection, options, report,
                                      masters)
                bar.update(1)
    return masters


def _load_library_master(kind, master, options, report, masters):
    """A master of the calibration library that the plan chose: read, not built. The plan
    checked its checksum; the science tasks check it has not changed since."""
    name, path = str(master["name"]), Path(str(master["path"]))
    try:
        masters.built[name] = load_master(path, options.profile).without_uncertainty()
    except Exception as err:  # an unreadable master must not end the night
        err = report.unexpected(err, f"master {name}")
        if options.strict:
            raise err
        masters.failed[name] = err
        return
    masters.paths[(kind, name)] = path


def _build_one_master(kind, master, rows, collection, options, report, masters):
    name = master["name"]
    files = master["files"].split(",")
    members = [f for f in files if rows[f]["status"] == "ok"]
    if not members:  # its frames need a calibration that is missing: said in the plan
        first = rows[files[0]]
        masters.failed[name] = error_class(first["problem_kind"] or "CcdprocExtError")(
            f"none of its frames could be used ({files[0]}: {first['problem']})")
        return
    first = rows[members[0]]
    needs = {k: first[k] for k in ("bias", "dark") if kind != "bias" and first[k]}
    missing = [needs[k] for k in needs if needs[k] not in masters.built]
    if missing:
        cause = masters.failed.get(missing[0], CcdprocExtError())
        masters.failed[name] = type(cause)(f"its master {', '.join(missing)} could not be "
                                           "built")
        for member in members:
            report.problem(member, type(cause)(f"master {name} not built: "
                                               f"{masters.failed[name]}"))
        return
    extensions, members = _master_extensions(name, members, needs, collection, options,
                                             report, masters)
    if not members:
        return
    folder = report.output_dir / "masters"
    path = inside(folder / f"{name}.fits", folder)
    _note_steps_done(report, f"masters/{path.name}", members, collection)
    dark_scale = first["dark_scale"]
    master_recipe = recipe(dict(options.settings(), uncertainty=options.keeps_uncertainty),
                           [file_stamp(collection.path(f)) for f in members],
                           {k: masters.built[v].checksum for k, v in needs.items()},
                           dark_scale if kind == "flat" else None)
    try:
        if options.overwrite or not up_to_date(path, master_recipe):
            with CaughtWarnings() as caught:
                frame = _make_master(kind, [collection.path(f) for f in members],
                                     {k: masters.built[v] for k, v in needs.items()},
                                     path, master_recipe, options,
                                     scale_dark=bool(np.isfinite(dark_scale)
                                                     and dark_scale != 1.0),
                                     extensions=extensions)
            # Skipped frames and data quality are read from the master's header below,
            # the same whether it was built now or found up to date.
            _note_master_warnings(report, path, members, [
                message for message in caught.ours
                if not isinstance(message, FrameSkippedWarning | DataQualityWarning)])
            masters.built[name] = (load_master(path, options.profile) if extensions else
                                   MasterFrame.of(frame, options.profile, path=path)
                                   ).without_uncertainty()
        else:
            masters.built[name] = load_master(path, options.profile).without_uncertainty()
        check_same_extensions(f"masters/{path.name}", extensions_of(masters.built[name]),
                              extensions, "its frames")
    except Exception as err:  # a bug must not end the night
        err = report.unexpected(err, f"master {name}")
        if options.strict:
            raise err if not isinstance(err, InternalError) else \
                InternalError(f"master {name}: {err}") from None
        masters.failed[name] = err
        log.info("master %s not built: %s", name, err)
        for member in members:
            report.problem(member, type(err)(f"master {name} not built: {err}"))
        return
    _report_master(report, masters.built[name], path, members)
    masters.paths[(kind, name)] = path


def _note_steps_done(report, file, members, collection):
    """A master's note naming its frames whose headers say a calibration was done before
    they came (``CALSTAT``, IRAF's flags): it was not done again (see the plan)."""
    done_of = dict(zip(collection.frames["file"], collection.frames["done"], strict=True))
    by_steps = {}
    for member in members:
        if done_of.get(member):
            by_steps.setdefault(str(done_of[member]), []).append(member)
    from .report import files_shown

    for steps, files in by_steps.items():
        report.note(file, "StepsDone",
                    f"made from frames whose {' and '.join(steps.split(','))} were done "
                    f"before (their headers say so), not again: {files_shown(files)}")


def _master_extensions(name, members, needs, collection, options, report, masters):
    """The detector extensions of a master (``()`` for frames of one image) and its
    members that have them.

    The master's extensions are those most of its frames have (the profile's, when it
    names them); a frame with other extensions, or one of them unreadable, is a problem
    and left out. Lower masters with other extensions fail the master.
    """
    found = {}
    for member in members:
        try:
            found[member] = detector_extensions(collection.path(member), options.profile)
            check_extensions_readable(collection.path(member), found[member])
        except CcdprocExtError as err:
            found.pop(member, None)
            report.problem(member, err)
    extensions = Counter(found.values()).most_common(1)[0][0] if found else ()
    kept = []
    for member, names in found.items():
        try:
            check_same_extensions(member, names, extensions, f"its master {name}",
                                  path=collection.path(member))
        except CalibrationMatchError as err:
            report.problem(member, err)
            continue
        kept.append(member)
    try:
        for lower in needs.values():
            check_same_extensions(f"master {name}", extensions,
                                  extensions_of(masters.built[lower]), f"its master {lower}")
    except CalibrationMatchError as err:
        if options.strict:
            raise
        masters.failed[name] = err
        for member in kept:
            report.problem(member, CalibrationMatchError(f"master {name} not built: "
                                                         f"{without_path(err)}"))
        return extensions, []
    if not kept and members:
        masters.failed[name] = CalibrationMatchError("none of its frames could be used")
    return extensions, kept


def _make_master(kind, paths, lower, path, master_recipe, options, *, scale_dark,
                 extensions=()):
    """Combine one master and write it; its uncertainty only when it is written.

    A master of multi-extension frames is combined extension by extension
    (`_make_master_extensions`) and its file has the same extensions.
    """
    combine_options = {"compute_uncertainty": options.keeps_uncertainty,
                       **options.combine_options}
    common = {"combine_options": combine_options, "skip_bad_frames": not options.strict,
              "workers": options.workers, "temporary_dir": path.parent}
    if extensions:
        return _make_master_extensions(kind, paths, extensions, lower, path, master_recipe,
                                       options, scale_dark=scale_dark, common=common)
    master = _combine_master(kind, paths, options.profile, lower, scale_dark, common)
    master.meta["RECIPE"] = (master_recipe, "hash of the inputs and settings")
    master.meta["FILENAME"] = path.name
    write_atomic(master, path, uncertainty=options.keeps_uncertainty,
                 mask=master.mask is not None and bool(master.mask.any()))
    return master


def _combine_master(kind, frames, profile, lower, scale_dark, common):
    """One master of ``kind`` from ``frames`` (paths, or the frames of one extension)."""
    if kind == "bias":
        return make_master_bias(frames, profile, **common)
    if kind == "dark":
        return make_master_dark(frames, profile, master_bias=lower.get("bias"), **common)
    return make_master_flat(frames, profile, master_bias=lower.get("bias"),
                            master_dark=lower.get("dark"), scale_dark=scale_dark, **common)


def _make_master_extensions(kind, paths, extensions, lower, path, master_recipe, options, *,
                            scale_dark, common):
    """A master of multi-extension frames: each extension combined from the same
    extension of its frames (calibrated with the same extension of the lower masters,
    through the profile as it applies to that extension), written as one file with the
    frames' extensions, in their order."""
    frames = {}
    for extension in extensions:
        profile = options.profile.for_extension(extension)
        ccds = [read_extension(p, extension, options.profile) for p in paths]
        own_lower = {k: m.extension(extension, file=f"master {path.stem}")
                     for k, m in lower.items()}
        frames[extension] = _combine_master(kind, ccds, profile, own_lower, scale_dark,
                                            common)
    first = next(iter(frames.values()))
    header = file_header(primary_header(paths[0]), first.meta,
                         RECIPE=(master_recipe, "hash of the inputs and settings"),
                         FILENAME=path.name)
    for frame in frames.values():
        frame.meta["RECIPE"] = (master_recipe, "hash of the inputs and settings")
        frame.meta["FILENAME"] = path.name
    masks = {n: f.mask for n, f in frames.items() if f.mask is not None}
    write_extensions(path, header, frames, uncertainty=options.keeps_uncertainty,
                     masks=masks if any(m.any() for m in masks.values()) else None)
    return first


def _quality_options(bad_pixels, cosmic_rays):
    """``bad_pixels`` and ``cosmic_rays`` of `reduce_night`, checked before any work."""
    if isinstance(cosmic_rays, str) and cosmic_rays.strip().lower() == "clean":
        cosmic_rays = "clean"
    elif not isinstance(cosmic_rays, bool | np.bool_):
        raise CcdprocExtError(f"cosmic_rays={cosmic_rays!r}: expected False, True or "
                              "'clean'")
    if isinstance(bad_pixels, str) and bad_pixels.strip().lower() == "auto":
        return "auto", cosmic_rays
    if bad_pixels is None or bad_pixels is False:
        return None, cosmic_rays
    if not isinstance(bad_pixels, str | os.PathLike):
        raise CcdprocExtError(f"bad_pixels={bad_pixels!r}: expected 'auto', None or the "
                              "path of a mask file")
    path = Path(bad_pixels).expanduser()
    if not path.is_file():
        raise FrameReadError(f"{path}: bad-pixel mask file not found (bad_pixels=)")
    return path.resolve(), cosmic_rays


def _build_bad_pixel_masks(plan, masters, options, report):
    """Stage 3b: the bad-pixel mask of each (dark, flat) pair the science frames use, or
    the user's mask file, written as a master (``masters/bpm_*.fits``)."""
    if options.bad_pixels is None:
        return
    pairs = dict.fromkeys((row["dark"], row["flat"]) for row in plan
                          if row["type"] == "science" and row["status"] == "ok")
    folder = report.output_dir / "masters"
    to_make = {}  # name: (path, masters, pairs)
    for dark, flat in pairs:
        lower = {k: masters.built.get(v) for k, v in (("dark", dark), ("flat", flat)) if v}
        if any(master is None for master in lower.values()):
            continue  # a master not built: its science frames are problems already
        name = _bpm_name(dark, flat, options.bad_pixels)
        if name is None:
            continue  # no dark nor flat to find bad pixels in
        if any(isinstance(master, MultiMaster) for master in lower.values()):
            report.note(f"masters/{name}.fits", "CcdprocExtWarning", "no bad-pixel mask: "
                        "not made for multi-extension frames (their masters' masks are "
                        "used)")
            continue
        path = inside(folder / f"{name}.fits", folder)
        to_make.setdefault(name, (path, lower, []))[2].append((dark, flat))

    def make(job):
        path, lower, _ = job
        try:
            return _bad_pixel_mask(path, lower, options)
        except CcdprocExtError as err:  # said below, in order
            return err

    # The masks are made at the same time (numpy's medians release the GIL).
    workers = min(len(to_make), (os.cpu_count() or 1) if options.workers is None
                  else int(options.workers))
    with ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
        made = list((pool.map if pool else map)(make, to_make.values()))
    for (name, (path, _, used_by)), mask in zip(to_make.items(), made, strict=True):
        if isinstance(mask, CcdprocExtError):
            if options.strict:
                raise mask
            report.note(f"masters/{path.name}", type(mask).__name__,
                        f"no bad-pixel mask: {without_path(mask)}")
            continue
        masters.built[name] = mask
        masters.paths[("bpm", name)] = path
        masters.bpm_of.update(dict.fromkeys(used_by, name))


def _bpm_name(dark, flat, bad_pixels):
    """The name of the bad-pixel mask of science frames calibrated with ``dark`` and
    ``flat`` (master names, ``""`` for none), or ``None`` when they get none."""
    if bad_pixels is None:
        return None
    if isinstance(bad_pixels, Path):
        return "bpm_" + _safe_stem(bad_pixels.name)
    if not (dark or flat):
        return None
    return "bpm_" + "_".join(v for v in (dark, flat) if v)


def _plan_bad_pixel_masks(plan, bad_pixels):
    """The plan's ``bpm`` column: the mask each science frame will get, so that a dry run
    shows it too."""
    plan["bpm"] = [
        (_bpm_name(str(row["dark"]), str(row["flat"]), bad_pixels) or "")
        if row["type"] == "science" and row["status"] == "ok" else ""
        for row in plan]


def _safe_stem(file_name):
    stem = output_name(file_name, set())[:-len(".fits")]
    return stem or "user"


def _bad_pixel_mask(path, lower, options):
    """Make (or find up to date) one bad-pixel mask; returns it as a `MasterFrame`."""
    from .quality import (
        HOT_MIN_RATE,
        HOT_SIGMA,
        LOW_BOX,
        LOW_FRACTION,
        make_bad_pixel_mask,
        user_bad_pixel_mask,
    )

    if isinstance(options.bad_pixels, Path):
        mask_recipe = recipe("bpm", file_stamp(options.bad_pixels))
        if options.overwrite or not up_to_date(path, mask_recipe):
            _write_bpm(user_bad_pixel_mask(options.bad_pixels), path, mask_recipe)
        return MasterFrame.of(path, options.profile)
    dark, flat = lower.get("dark"), lower.get("flat")
    mask_recipe = recipe("bpm", {k: m.checksum for k, m in lower.items()}, HOT_SIGMA,
                         HOT_MIN_RATE, LOW_FRACTION, LOW_BOX)
    if options.overwrite or not up_to_date(path, mask_recipe):
        mask = make_bad_pixel_mask(
            None if dark is None else dark.ccd, None if flat is None else flat.ccd,
            dark_exposure=None if dark is None else dark.exposure,
            dark_name=None if dark is None else dark.name,
            flat_name=None if flat is None else flat.name)
        _write_bpm(mask, path, mask_recipe)
    return MasterFrame.of(path, options.profile)


def _write_bpm(mask, path, mask_recipe):
    mask.meta["RECIPE"] = (mask_recipe, "hash of the inputs and settings")
    mask.meta["FILENAME"] = path.name
    write_atomic(mask, path, dtype=np.uint8)


def _report_master(report, master, path, members):
    """Problems and notes read from a master's header (each extension's, for a master
    of multi-extension frames): the same on every run."""
    header = master.ccd.meta  # the first extension's: the frames combined are the same
    if header.get("NCOMBINE", 0) == 1:
        single = file_name_of(header.get("IMCMB001", "?"))
        report.note(f"masters/{path.name}", "DataQualityWarning",
                    f"made from a single frame ({single}): nothing could be rejected and "
                    "its noise is that of one frame")
    if isinstance(master, MultiMaster):
        for extension, frame in master.frames.items():
            _report_master_header(report, frame.ccd.meta, path, members,
                                  f" (extension {extension})")
    else:
        _report_master_header(report, header, path, members, "")


def _report_master_header(report, header, path, members, extension):
    """`_report_master` for one header (``extension``: the words naming it, or "")."""
    file = f"masters/{path.name}"
    by_name = {}
    for member in members:
        by_name.setdefault(Path(member).name, member)
    i = 1
    while f"SKIP{i:03d}" in header:
        left_out = file_name_of(header[f"SKIP{i:03d}"])
        kind, _, why = str(header.get(f"SKIPW{i:03d}", "")).partition(": ")
        report.problem(by_name.get(left_out, left_out),
                       error_class(kind or "CcdprocExtError")(
                           f"left out of master {path.stem}{extension}: {why}"))
        i += 1
    if header.get("NLOWPIX", 0):
        report.note(file, "DataQualityWarning",
                    f"{header['NLOWPIX']} pixel(s){extension} below the minimum of the "
                    "flat, masked")
    if header.get("NNANPIX", 0):
        report.note(file, "DataQualityWarning",
                    f"{header['NNANPIX']} pixel(s){extension} of its frames were NaN or "
                    "infinite, masked")


def _note_master_warnings(report, path, members, messages):
    """The warnings given while a master was made, as its notes. What several of its
    frames said for one reason is one note naming them (`~ccdproc_ext.report.group_by_reason`),
    not one per frame, nor one line of every frame's words."""
    from .report import files_shown, group_by_reason

    file = f"masters/{path.name}"
    by_name = {}
    for member in members:
        by_name.setdefault(Path(member).name, member)
    of_frames = []
    for message in messages:
        head, sep, rest = str(message).partition(": ")
        frame = by_name.get(Path(head).name) if sep else None
        if frame is None:  # about the master, not one of its frames
            report.note(file, type(message).__name__, without_path(message))
        else:
            of_frames.append((frame, type(message).__name__, rest))
    for group in group_by_reason(_table(sorted(of_frames), ("file", "kind", "note")), "note"):
        frames, texts = group["files"], set(group["texts"].values())
        text = texts.pop() if len(texts) == 1 else group["reason"]
        count = f"{len(frames)} frames: " if len(frames) > 1 else ""
        report.note(file, group["kind"], f"{text} ({count}{files_shown(frames)})")


def _science_tasks(plan, collection, masters, options, report, result):
    """Stage 4: a task for every usable science frame whose masters were built."""
    tasks, used_names = [], set()
    folder = report.output_dir / "science"
    for row in plan:
        if row["type"] != "science" or row["status"] != "ok":
            continue
        broken = [row[k] for k in MASTER_KINDS if row[k] and row[k] not in masters.built]
        if broken:
            for name in broken:
                cause = masters.failed.get(name, CcdprocExtError("not built"))
                result.unbuilt_masters.setdefault(name, str(cause))
            cause = masters.failed.get(broken[0], CcdprocExtError())
            report.problem(row["file"], type(cause)("; ".join(
                f"master {m}: {masters.failed.get(m, 'not built')}" for m in broken)))
            continue
        output = inside(folder / output_name(row["file"], used_names), folder)
        refs = {k: MasterRef.of(masters.path(k, row[k]), masters.built[row[k]].checksum)
                for k in MASTER_KINDS if row[k]}
        bpm = masters.bpm_of.get((row["dark"], row["flat"]), "")
        if bpm:
            refs["bpm"] = MasterRef.of(masters.path("bpm", bpm), masters.built[bpm].checksum)
        scale = float(row["dark_scale"]) if row["dark"] else np.nan
        task_recipe = recipe(options.settings(), file_stamp(collection.path(row["file"])),
                             {k: ref.checksum for k, ref in refs.items()},
                             None if not np.isfinite(scale) else scale,
                             options.gain_correct, options.create_deviation,
                             options.write_uncertainty, str(options.cosmic_rays))
        tasks.append(_NightTask(row["file"], row["bias"], row["dark"], row["flat"], ScienceTask(
            raw_path=collection.path(row["file"]), output=output, profile=options.profile,
            masters=refs, dark_scale=scale, recipe=task_recipe,
            gain_correct=options.gain_correct, create_deviation=options.create_deviation,
            write_uncertainty=options.write_uncertainty, dtype=options.dtype,
            cosmic_rays=options.cosmic_rays), bpm=bpm))
    return tasks


@dataclass(frozen=True)
class _NightTask:
    """A science task with the plan's names of its raw file and masters."""

    file: str
    bias: str
    dark: str
    flat: str
    task: ScienceTask
    bpm: str = ""


def _run_tasks(night_tasks, masters, options, report, *, executor, progress):
    """Stage 5: run the tasks; returns one `ScienceOutcome` or error per task.

    Outputs already up to date are read here; only the others are run. Without an
    executor, the masters are prepared here once, and reach the worker processes through
    fork without being read again.
    """
    from tqdm.auto import tqdm

    outcomes = [None] * len(night_tasks)
    to_do = []
    for index, night_task in enumerate(night_tasks):
        task = night_task.task
        # Decided from the output's recorded recipe, its header read once.
        header = None if options.overwrite else recorded_header(task.output, task.recipe)
        if header is not None:
            outcomes[index] = ScienceOutcome.from_header("up to date", header)
        else:
            to_do.append(index)
    if not to_do:
        return outcomes
    own_executor = None
    if executor is None:
        prepare_masters([night_tasks[i].task for i in to_do], masters.by_file_stem())
        workers = (os.cpu_count() or 1) if options.workers is None else int(options.workers)
        if workers > 1 and len(to_do) > 1:
            own_executor = executor = ProcessPoolExecutor(
                min(workers, len(to_do)), mp_context=process_context(),
                initializer=start_worker, initargs=(os.getpid(),))  # they end with it
    bar = tqdm(total=len(to_do), desc="science", unit="frame",
               disable=None if progress else True)
    try:
        if executor is not None:
            pending = [executor.submit(run_task, night_tasks[i].task) for i in to_do]
            results = (future.result for future in pending)
        else:
            results = (lambda task=night_tasks[i].task: run_task(task) for i in to_do)
        for index, result_of in zip(to_do, results, strict=False):
            try:
                outcomes[index] = result_of()
            except Exception as err:  # a bug must not end the night
                file = night_tasks[index].file
                err = report.unexpected(err, file)
                if options.strict:
                    raise err if not isinstance(err, InternalError) else \
                        InternalError(f"{file}: {err}") from None
                outcomes[index] = err
            bar.update(1)
    finally:
        bar.close()
        if own_executor is not None:
            own_executor.shutdown(cancel_futures=True)
        clear_master_cache()
    return outcomes


# ----------------------------------------------------------------- the night's log
class _NightLog:
    """The problems and notes of a night, in the order they were found."""

    def __init__(self, strict, output_dir=None):
        self.strict = strict
        self.output_dir = output_dir
        self.problems = []  # Problem
        self.notes = []  # Note

    def read_plan(self, plan):
        """The plan's problems, its frames' notes and the night's notes."""
        night_notes = list(plan.meta.get("notes", ()))
        for text in night_notes:
            self.note(NIGHT, "NightNote", text)
        for row in plan:
            if row["status"] != "ok":
                error = error_class(row["problem_kind"] or "CcdprocExtError")(row["problem"])
                # NightCollection has logged the files it could not read
                self.problem(row["file"], error, logged=row["type"] == "unreadable")
                continue
            # What is said of the whole night is said once, not again for each frame.
            own = [part for part in str(row["notes"]).split("; ")
                   if part and part not in night_notes]
            if own:
                self.note(row["file"], "HeaderNote", "; ".join(own))

    def problem(self, file, error, *, logged=False):
        """A frame that is not reduced: raise in strict mode, else list it (and log it,
        unless it was ``logged`` already)."""
        problem = Problem(str(file), error)
        if self.strict:
            raise type(error)(f"{file}: {problem.text}")
        if all((p.file, p.kind, p.text) != (problem.file, problem.kind, problem.text)
               for p in self.problems):
            self.problems.append(problem)
            if not logged:  # said once, grouped, in the result's summary
                log.info("%s: %s", file, problem.text)

    def note(self, file, kind, text):
        note = Note(str(file), kind, str(text))
        if note not in self.notes:
            self.notes.append(note)

    def unexpected(self, err, what):
        """``err`` itself if it is the package's own; otherwise an `InternalError`, its
        traceback logged and written to ``internal-errors.log`` in the output folder."""
        if isinstance(err, CcdprocExtError) and not isinstance(err, InternalError):
            return err
        details = getattr(err, "details", None) or "".join(
            traceback.format_exception(type(err), err, err.__traceback__))
        if not isinstance(err, InternalError):
            err = InternalError(f"unexpected {type(err).__name__}: {err}")
        log.debug("%s: traceback of an unexpected error:\n%s", what, details)
        if self.output_dir is not None and self.output_dir.is_dir():
            with open(self.output_dir / INTERNAL_ERRORS_LOG, "a", encoding="utf-8") as out:
                out.write(f"--- {what}\n{details}\n")
        return err

    def finish(self, result, done):
        """Fill ``result``'s science, problems and notes tables; returns it."""
        rows = []
        for night_task, outcome in done:
            if isinstance(outcome, Exception):
                self.problem(night_task.file, outcome)
                continue
            for kind, text in outcome.notes:
                self.note(night_task.file, kind, text)
            task = night_task.task
            rows.append((night_task.file, str(task.output), night_task.bias, night_task.dark,
                         night_task.flat, task.dark_scale, outcome.sky_level,
                         outcome.sky_noise, outcome.n_saturated, outcome.n_masked,
                         outcome.status, night_task.bpm, outcome.n_cosmic_rays))
        result.science = _science_table(rows)
        result.problems = _table([(p.file, p.kind, p.text) for p in self.problems],
                                 ("file", "kind", "problem"))
        result.notes = _table([(n.file, n.kind, n.text) for n in self.notes],
                              ("file", "kind", "note"))
        return result


def _table(rows, names):
    if not rows:
        return Table(names=names, dtype=("U",) * len(names))
    return Table(rows=rows, names=names)


def _science_table(rows):
    names = ("raw_file", "output_file", "bias", "dark", "flat", "dark_scale", "sky_level",
             "sky_noise", "n_saturated", "n_masked", "status", "bpm", "n_cosmic_rays")
    if not rows:
        return Table(names=names,
                     dtype=("U", "U", "U", "U", "U", "f8", "f8", "f8", "i8", "i8", "U", "U",
                            "i8"))
    table = Table(rows=rows, names=names)
    for name in ("dark_scale", "sky_level", "sky_noise"):
        table[name].format = ".4g"
    return table
