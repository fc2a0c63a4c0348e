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
7. **write the report**: ``report.html`` and its pictures (`ccdproc_ext.report`), the
   masters and thumbnails drawn during stage 5 when the frames run in other processes.

Outputs go to ``masters/`` and ``science/`` under the output folder (see
`ccdproc_ext.outputs` for their names, their safety and how a re-run resumes). Masters
carry no time stamp, so a master rebuilt from the same frames is the same file and a
resumed night ends with exactly the outputs of an uninterrupted one (but for the
``CCDPDATE`` of the science frames).

Bad input never ends the night with a traceback: every frame that cannot be reduced is a
`~ccdproc_ext.log.Problem` (its file and the error), listed in `NightResult.problems`,
and the night goes on with the good frames; ``strict=True`` raises that error instead, at
the first one. An error that is not the package's own (a bug) becomes an
`~ccdproc_ext.InternalError` of the frame or master, its traceback written to
``internal-errors.log``. Things worth knowing about frames that were used (header cards
repaired, a type guessed, pixels masked, a master made from a single frame) and about the
night (a calibration type missing) are `~ccdproc_ext.log.Note` records, in
`NightResult.notes`.
"""

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Table

from ._allocator import freed_memory_reused, give_back_freed_memory
from ._warnings import ignoring
from .bpm import build_bad_pixel_masks, plan_bad_pixel_masks, quality_options
from .collection import NightCollection
from .cosmic_rays import cosmic_ray_rule
from .exceptions import CalibrationMatchError, CcdprocExtError, FrameReadError
from .library import CalibrationLibrary, planned_master_keys
from .log import NIGHT, NightLog, grouped_lines, without_path
from .matching import build_plan
from .night_masters import build_masters
from .night_science import run_tasks, science_table, science_tasks
from .outputs import check_output_dir, check_raw_files, prepare_output_dir, write_table
from .plans import PlanEdits
from .profiles import get_profile
from .report import NightReport, night_html_summary, write_report

__all__ = ["NightResult", "reduce_night"]

logger = logging.getLogger(__name__)

#: The tables a night writes beside ``plan.ecsv``: the name of each and its attribute.
RESULT_TABLES = {"science.ecsv": "science", "problems.ecsv": "problems",
                 "notes.ecsv": "notes"}


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
        Where the masters, the bad-pixel masks and the science frames are made, for work
        beyond one machine: any executor, such as a ``dask.distributed`` client's
        ``get_executor()``. Each master is a task (the biases, then the darks, then the
        flats), then each mask, then each science frame; this process only plans,
        submits and records what they return. Tasks carry file paths, so the workers
        must see the same file system. Overrides ``workers`` here (a task of a master
        uses ``workers`` threads where it runs).
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
        half a second per master and a tenth per science frame, drawn while the science
        frames are calibrated in worker processes or on the executor). Default is ``True``;
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
        low and dead pixels of the flat (`~ccdproc_ext.bpm.make_bad_pixel_mask`),
        written as ``masters/bpm_<dark>_<flat>.fits``. A path: a mask file of one's own
        (non-zero where bad), written as ``masters/bpm_<its name>.fits``. ``None``: none.
        Each science frame names its mask in ``BPMFILE``, and the pixels it masked in
        ``NBADPIX``; the ``bpm`` column of ``science`` names it too.
    cosmic_rays : bool or "clean", optional
        Find cosmic-ray hits in each calibrated science frame
        (`ccdproc.cosmicray_lacosmic`, see `~ccdproc_ext.cosmic_rays.detect_cosmic_rays`)
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
    bad_pixels, cosmic_rays = quality_options(bad_pixels, cosmic_rays)
    output_dir = check_output_dir(raw, output_dir)
    collection = _collect(raw, profile, image_types, output_dir)
    library = None if library is None else CalibrationLibrary.of(library, validity=validity)
    collection, plan = _plan_night(collection, plan, scale_darks=scale_darks, library=library)
    plan_bad_pixel_masks(plan, bad_pixels)
    # Where the raw frames are, for the report's pictures of them before calibration.
    plan.meta["raw_folder"] = str(Path(collection.location).resolve()) \
        if collection.location else ""
    if cosmic_rays:
        plan.meta["cosmic_rays"] = cosmic_ray_rule(clean=cosmic_rays == "clean")
    log = NightLog(strict, output_dir)
    log.read_plan(plan)
    _read_library_problems(log, plan)
    result = NightResult(plan=plan, output_dir=output_dir, dry_run=dry_run)
    if dry_run:
        return _finish(result, log, [], [])

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
        masters = build_masters(plan, collection, options, log, progress=progress,
                                executor=executor)
        build_bad_pixel_masks(plan, masters, options, log, executor=executor)
        give_back_freed_memory()  # not kept through the science step, nor by its workers
        if library is not None:
            _register_masters(library, plan, collection, masters, log)
        result.masters = dict(masters.paths)
        tasks, result.unbuilt_masters = science_tasks(plan, collection, masters, options,
                                                      log)
        with _ReportAhead(output_dir if report else None) as ahead:
            outcomes = run_tasks(tasks, masters, options, log, executor=executor,
                                 progress=progress, on_result=ahead.frame_done)
        _finish(result, log, tasks, outcomes)
        _write_results(result, output_dir)
        if report:
            _write_report(result, output_dir, log, ahead.report)
    return result


class _ReportAhead:
    """Stage 7 begun during stage 5: while the science frames are calibrated in other
    processes, a thread of this one draws the report's masters and the thumbnails of
    each frame calibrated (`~ccdproc_ext.report.NightReport`), so that the page is
    written soon after the last frame. Nothing is drawn while frames are calibrated in
    this process (``workers=1``), and a drawing that fails is drawn again, its error
    said, by the report written at the end."""

    def __init__(self, output_dir):
        self._output_dir = output_dir
        self._drawing = None
        self._report = None
        self._failed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self._drawing is not None:
            self._drawing.shutdown(cancel_futures=exc_info[0] is not None)
        return False

    @property
    def report(self):
        """The `~ccdproc_ext.report.NightReport` drawn ahead, or ``None``."""
        return None if self._failed else self._report

    def frame_done(self, night_task, outcome):
        """Draw the thumbnails of a science frame just calibrated (after the masters,
        the first time)."""
        if self._output_dir is None or getattr(outcome, "status", None) != "written":
            return
        if self._drawing is None:
            self._report = NightReport(self._output_dir)
            self._drawing = ThreadPoolExecutor(1, thread_name_prefix="ccdproc_ext report")
            self._drawing.submit(self._draw, self._report.draw_masters)
        output = Path(night_task.task.output).relative_to(self._output_dir).as_posix()
        self._drawing.submit(self._draw, self._report.draw_frame, night_task.file, output)

    def _draw(self, draw, *args):
        try:
            draw(*args)
        except Exception:  # the report written at the end draws it again, and says why
            self._failed = True


def _finish(result, log, tasks, outcomes):
    """Stage 6a: ``result``'s science, problems and notes tables; returns it."""
    result.science = science_table(tasks, outcomes, log)
    result.problems = log.problems_table()
    result.notes = log.notes_table()
    return result


def _write_report(result, output_dir, log, drawn_ahead=None):
    """Stage 7: ``report.html``, from the files just written (and the pictures drawn
    ahead, a `~ccdproc_ext.report.NightReport`). A report that cannot be made is a note
    of the night, never the end of it."""
    try:
        if drawn_ahead is not None:
            drawn_ahead.write()
        else:
            write_report(output_dir)
    except Exception as err:  # the night's outputs are complete without it
        err = log.unexpected(err, "report.html")
        text = f"report.html not written: {without_path(err)}"
        logger.warning("%s", text)
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
        # ccdproc's words for an empty folder: said below as an error.
        with ignoring(Warning, message="no FITS files in the collection"):
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


def _read_library_problems(log, plan):
    """Library masters refused by the plan (file missing or changed) are problems."""
    for file, text in plan.meta.get("library_problems", ()):
        log.problem(file, CalibrationMatchError(text))


def _register_masters(library, plan, collection, masters, log):
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
        log.problem(str(library.path), type(err)(f"masters not registered: {err}"))


def _write_plan(plan, output_dir):
    """Stage 2: the output folders, ``plan.ecsv`` and ``masters.ecsv``."""
    prepare_output_dir(output_dir)
    plan_to_write = plan.copy(copy_data=False)
    plan_to_write.meta = {k: v for k, v in plan.meta.items() if k != "masters"}
    write_table(plan_to_write, output_dir / "plan.ecsv")
    write_table(plan.meta["masters"], output_dir / "masters.ecsv")
