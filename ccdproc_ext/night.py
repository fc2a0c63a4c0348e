"""`reduce_night`: one call from a folder of raw frames to calibrated science frames.

The night is planned first (`~ccdproc_ext.NightCollection.plan`), so that missing
calibrations are found before any pixel is touched. Then every master the plan needs is
built (bias, then darks, then flats), and every science frame is calibrated with
`~ccdproc_ext.calibrate_frame`. Outputs go to ``masters/`` and ``science/`` under the
output folder, written atomically; ``plan.ecsv`` and ``masters.ecsv`` record the plan.

Each output carries a ``RECIPE`` card: a hash of what it was made from (the raw files'
names, sizes and modification times, the masters' checksums, the settings). A re-run skips
the outputs whose recipe is unchanged, so an interrupted night resumes where it stopped;
``overwrite=True`` redoes them all. Outputs are written under a temporary name and renamed
when complete; the temporary files a killed run leaves behind are removed when the next
run starts. Masters carry no time stamp, so a master rebuilt from the same frames is the
same file and a resumed night ends with exactly the outputs of an uninterrupted one (but
for the ``CCDPDATE`` of the science frames).

Raw data is never written: raw files are only opened read-only, the output folder may
not be the raw folder, be inside it or contain it, and every output name is made from a
raw file's name (or a master's), cleaned of anything but letters, digits and ``-_.+``,
and checked to stay in its folder.

Bad input never ends the night with a traceback: every frame that cannot be reduced is
listed in `NightResult.problems` with the kind of error and the reason, and the night
goes on with the good frames; ``strict=True`` raises that error instead, at the first
one. Things worth knowing about frames that were used (header cards repaired, pixels
masked, a master made from a single frame) are listed in `NightResult.notes`.
"""

import functools
import hashlib
import json
import logging
import os
import tempfile
import threading
import traceback
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.stats import SigmaClip, sigma_clipped_stats
from astropy.table import Table
from ccdproc import ImageFileCollection
from photutils.background import Background2D, MedianBackground

from .calibrate import MasterFrame, calibrate_frame
from .collection import NightCollection
from .exceptions import (
    CcdprocExtError,
    CcdprocExtWarning,
    FrameReadError,
    FrameSkippedWarning,
    InternalError,
    OutputError,
    error_class,
)
from .io import _read_frame_and_checksum, file_checksum, remove_partial_files, write_atomic
from .masters import make_master_bias, make_master_dark, make_master_flat
from .profiles import get_profile

__all__ = ["NightResult", "reduce_night"]

log = logging.getLogger(__name__)


@dataclass
class NightResult:
    """What `reduce_night` did.

    Attributes
    ----------
    plan : `~astropy.table.Table`
        The plan: one row per raw frame (see `~ccdproc_ext.matching.build_plan`).
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

    def summary(self):
        """A few lines for people: frames by type, masters, science frames, problems."""
        counts = {}
        for image_type in self.plan["type"]:
            counts[image_type] = counts.get(image_type, 0) + 1
        lines = ["frames: " + ", ".join(f"{n} {t}" for t, n in sorted(counts.items()))]
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
        else:
            lines.append(f"science frames: none of {self.n_science_planned} reduced")
        for name, reason in self.unbuilt_masters.items():
            lines.append(f"master {name} not built: {reason}")
        if self.problems is not None and len(self.problems):
            lines.append(f"{len(self.problems)} frame(s) skipped:")
            lines.extend(f"  {row['file']}: {row['problem']}" for row in self.problems)
        if self.notes is not None and len(self.notes):
            lines.append(f"{len(self.notes)} note(s):")
            lines.extend(f"  {row['file']}: {row['note']}" for row in self.notes)
        if self.output_dir is not None:
            lines.append(f"output: {self.output_dir}")
        return "\n".join(lines)


#: Part of every recipe: outputs of an older layout are made again.
_RECIPE_VERSION = 3


def _recipe(*parts):
    """A short hash of what an output is made from."""
    digest = hashlib.sha256(json.dumps([_RECIPE_VERSION, *parts], sort_keys=True,
                                       default=str).encode())
    return digest.hexdigest()[:16]


def _file_stamp(path):
    stat = os.stat(path)
    return [Path(path).name, stat.st_size, stat.st_mtime_ns]


def _up_to_date(path, recipe):
    if not path.exists():
        return False
    try:
        return fits.getval(path, "RECIPE") == recipe
    except (OSError, KeyError):
        return False


# ------------------------------------------------------------------- output locations
_FITS_SUFFIXES = (".fits.gz", ".fit.gz", ".fts.gz", ".fits.bz2", ".fits", ".fit", ".fts")


def _clean_name(text):
    """Letters, digits and ``-_.+`` only; no leading dot (hidden files, ``..``)."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "-_.+") else "_"
                      for c in text)
    return cleaned.lstrip(".") or "frame"


def _output_name(file, used):
    """The output file name of a raw file: its path (relative parts) joined with ``_``.

    Only the raw file's own name and the sub-folders it was found in are used (for an
    absolute path, its name alone), never a header value, and every character other than
    letters, digits and ``-_.+`` becomes ``_``: the name cannot leave its folder. Names
    already in ``used`` (compared without case) get ``-2``, ``-3``...
    """
    path = PurePath(file)
    parts = [path.name] if path.is_absolute() else \
        [part for part in path.parts if part not in ("", ".", "..")]
    stem = "_".join(parts) or "frame"
    lower = stem.lower()
    for suffix in _FITS_SUFFIXES:
        if lower.endswith(suffix):
            stem = stem[:-len(suffix)]
            break
    stem = _clean_name(stem)
    name = f"{stem}.fits"
    i = 1
    while name.lower() in used:
        i += 1
        name = f"{stem}-{i}.fits"
    used.add(name.lower())
    return name


def _inside(path, folder):
    """``path``, after checking that it is a file directly in ``folder``."""
    if Path(path).parent.resolve() != Path(folder).resolve() or \
            Path(path).name in ("", ".", ".."):
        raise OutputError(f"{path}: an output must be written in {folder}")
    return path


def _raw_location(raw):
    if isinstance(raw, ImageFileCollection):
        return raw.location or None
    if isinstance(raw, list | tuple):
        return None
    return raw


def _check_raw_and_output(raw_folder, output_dir):
    """Refuse an output folder in, equal to, or around the raw folder."""
    output_dir = Path(output_dir).expanduser().resolve()
    if raw_folder is not None:
        raw_folder = Path(raw_folder).expanduser().resolve()
        if output_dir == raw_folder:
            raise OutputError(f"output folder {output_dir} is the raw folder: raw data is "
                              "never written; choose another")
        if raw_folder in output_dir.parents:
            raise OutputError(f"output folder {output_dir} is inside the raw folder "
                              f"{raw_folder}: raw data is never written; choose another")
        if output_dir in raw_folder.parents:
            raise OutputError(f"output folder {output_dir} contains the raw folder "
                              f"{raw_folder}: raw data is never written, and no output may "
                              "land in or above it; choose a folder beside it")
    return output_dir


def _check_raw_files(collection, output_dir):
    """Refuse a raw file (a listed one, or a link) that lies inside the output folder."""
    for file in collection.files:
        if output_dir in collection.path(file).resolve().parents:
            raise OutputError(f"raw file {file} is inside the output folder {output_dir}: "
                              "raw data is never written; choose another output folder")


def _check_not_empty(raw, collection):
    """A night without a single file to read is an error, not an empty result."""
    if len(collection.files) == 0 and not collection.problems:
        where = raw if isinstance(raw, str | os.PathLike) else "the raw frames given"
        raise FrameReadError(f"{where}: no FITS file found (looked for .fits, .fit, .fts "
                             "and their compressed forms)")


def _prepare_output_dir(output_dir):
    """Create the output folders, check they can be written, clear stale temporary files."""
    folders = (output_dir, output_dir / "masters", output_dir / "science")
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=".part", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise OutputError(f"output folder {folder} cannot be written: "
                              f"{err.strerror or err}") from None
    for folder in folders:
        for path in remove_partial_files(folder):
            log.info("removed %s, left by an interrupted run", path)


#: Sky statistics look at about this many pixels: a regular subsample of large frames.
_SKY_SAMPLE_PIXELS = 1 << 17


def _sky_statistics(data, mask=None):
    """Sky level and noise of a calibrated frame, sources and masked pixels left out.

    Large frames are subsampled on a regular grid (every ``step``-th row and column):
    the sky's level and per-pixel noise are the same in the subsample, at a fraction of
    the cost of photutils' background meshes over every pixel.
    """
    step = max(1, int(np.ceil(np.sqrt(data.size / _SKY_SAMPLE_PIXELS))))
    data = data[::step, ::step]
    mask = None if mask is None else mask[::step, ::step]
    ny, nx = data.shape
    box = max(8, min(64, ny // 4, nx // 4))
    bad = ~np.isfinite(data)
    if mask is not None:
        bad |= mask
    if bad.all():
        return np.nan, np.nan
    try:
        # The default rms estimator is the sigma-clipped standard deviation.
        background = Background2D(data, box, filter_size=3, sigma_clip=SigmaClip(sigma=3.0),
                                  bkg_estimator=MedianBackground(),
                                  mask=bad if bad.any() else None)
        return float(background.background_median), float(background.background_rms_median)
    except ValueError:
        _, median, std = sigma_clipped_stats(data, mask=bad, sigma=3.0, maxiters=5)
        return float(median), float(std)


#: The ``file`` of problems and notes about the whole night rather than one frame.
NIGHT = "(night)"

#: Where the tracebacks of unexpected errors are written, in the output folder.
INTERNAL_ERRORS_LOG = "internal-errors.log"


class _Report:
    """The problems and notes of a night, in the order they were found."""

    def __init__(self, strict, output_dir=None):
        self.strict = strict
        self.output_dir = output_dir
        self.problems = []  # (file, kind, problem)
        self.notes = []  # (file, kind, note)

    def unexpected(self, err, what):
        """``err`` itself if it is the package's own; otherwise an `InternalError` naming
        ``what`` and the original error, its traceback logged and written to
        ``internal-errors.log`` in the output folder."""
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

    def problem(self, file, kind, text, *, logged=False):
        """A frame that is not reduced: raise in strict mode, else list it (and log it,
        unless it was ``logged`` already)."""
        if self.strict:
            raise error_class(kind)(f"{file}: {text}")
        if (file, kind, text) not in self.problems:
            self.problems.append((file, kind, text))
            if not logged:
                log.warning("%s: %s", file, text)

    def note(self, file, kind, text):
        if (file, kind, text) not in self.notes:
            self.notes.append((file, kind, text))

    def tables(self):
        return (_table(self.problems, ("file", "kind", "problem")),
                _table(self.notes, ("file", "kind", "note")))


def _table(rows, names):
    if not rows:
        return Table(names=names, dtype=("U",) * len(names))
    return Table(rows=rows, names=names)


class _CaughtWarnings(warnings.catch_warnings):
    """Record the package's own warnings; let every other warning through as it was."""

    def __init__(self):
        super().__init__(record=True)

    def __enter__(self):
        self.caught = super().__enter__()
        warnings.simplefilter("always", CcdprocExtWarning)
        return self

    def __exit__(self, *exc_info):
        super().__exit__(*exc_info)
        self.ours = []
        for caught in self.caught:
            if issubclass(caught.category, CcdprocExtWarning):
                self.ours.append(caught.message)
            else:
                warnings.warn_explicit(caught.message, caught.category, caught.filename,
                                       caught.lineno, source=caught.source)
        return False


def reduce_night(raw, output_dir, profile="generic", *, dry_run=False, overwrite=False,
                 strict=False, workers=None, executor=None, progress=True,
                 image_types=None,
                 scale_darks=None, combine_options=None, gain_correct=False,
                 create_deviation=False, write_uncertainty=False, dtype=np.float32):
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

    Returns
    -------
    `NightResult`

    Raises
    ------
    OutputError
        If the output folder is in, is, or contains the raw folder, or cannot be written.
    CcdprocExtError
        In strict mode, the error of the first frame that cannot be reduced.
    """
    profile = get_profile(profile)
    output_dir = _check_raw_and_output(_raw_location(raw), output_dir)
    if isinstance(raw, NightCollection):
        collection = raw
    else:
        with warnings.catch_warnings():
            # ccdproc's words for an empty folder; _check_not_empty says it as an error.
            warnings.filterwarnings("ignore", "no FITS files in the collection")
            collection = NightCollection(raw, profile=profile, image_types=image_types)
    _check_raw_files(collection, output_dir)
    _check_not_empty(raw, collection)
    plan = collection.plan(scale_darks=scale_darks)
    masters_table = plan.meta["masters"]
    report = _Report(strict, output_dir)
    for text in plan.meta.get("notes", ()):
        report.note(NIGHT, "NightNote", text)
    for row in plan:
        if row["status"] != "ok":
            # NightCollection has logged the files it could not read
            report.problem(row["file"], row["problem_kind"] or "CcdprocExtError",
                           row["problem"], logged=row["type"] == "unreadable")
        elif row["notes"]:
            report.note(row["file"], "HeaderNote", row["notes"])
    result = NightResult(plan=plan, output_dir=output_dir)
    if dry_run:
        result.problems, result.notes = report.tables()
        result.science = _science_table([])
        return result

    _prepare_output_dir(output_dir)
    plan_to_write = plan.copy(copy_data=False)
    plan_to_write.meta = {k: v for k, v in plan.meta.items() if k != "masters"}
    _write_table(plan_to_write, output_dir / "plan.ecsv")
    _write_table(masters_table, output_dir / "masters.ecsv")

    plan_rows = {row["file"]: row for row in plan}
    built = {}  # master name -> MasterFrame
    failed = {}  # master name -> (kind, reason)
    settings = {"profile": profile.name, "combine": repr(sorted((combine_options or {}).items())),
                "dtype": np.dtype(dtype).name}
    # Masters carry their uncertainty only when the science frames will use it.
    keep_uncertainty = bool(write_uncertainty or create_deviation)
    master_settings = dict(settings, uncertainty=keep_uncertainty)

    from tqdm.auto import tqdm

    bar = tqdm(total=len(masters_table), desc="masters", unit="master",
               disable=None if progress else True)
    for kind in ("bias", "dark", "flat"):
        for master in masters_table[masters_table["kind"] == kind]:
            bar.update(1)
            name = master["name"]
            files = master["files"].split(",")
            members = [f for f in files if plan_rows[f]["status"] == "ok"]
            if not members:  # its frames need a calibration that is missing
                failed[name] = (plan_rows[files[0]]["problem_kind"] or "CcdprocExtError",
                                f"none of its frames could be used ({files[0]}: "
                                f"{plan_rows[files[0]]['problem']})")
                continue
            first = plan_rows[members[0]]
            needs = {k: first[k] for k in ("bias", "dark") if kind != "bias" and first[k]}
            missing = [needs[k] for k in needs if needs[k] not in built]
            if missing:
                failed[name] = (failed.get(missing[0], ("CcdprocExtError",))[0],
                                f"its master {', '.join(missing)} could not be built")
                for member in members:
                    report.problem(member, failed[name][0],
                                   f"master {name} not built: {failed[name][1]}")
                continue
            path = _inside(output_dir / "masters" / f"{name}.fits", output_dir / "masters")
            recipe = _recipe(master_settings,
                             [_file_stamp(collection.path(f)) for f in members],
                             {k: built[v].checksum for k, v in needs.items()},
                             first["dark_scale"] if kind == "flat" else None)
            try:
                if overwrite or not _up_to_date(path, recipe):
                    scale = first["dark_scale"]
                    with _CaughtWarnings() as caught:
                        master = _build_master(
                            kind, [collection.path(f) for f in members], profile,
                            {k: built[v] for k, v in needs.items()}, combine_options, path,
                            recipe, scale_dark=bool(np.isfinite(scale) and scale != 1.0),
                            skip_bad_frames=not strict, uncertainty=keep_uncertainty,
                            workers=workers)
                    for message in caught.ours:
                        if not isinstance(message, FrameSkippedWarning):
                            log.warning("master %s: %s", name, message)
                    built[name] = _kept_master(master, path, profile)
                else:
                    built[name] = MasterFrame.load(path, profile).without_uncertainty()
            except Exception as err:  # noqa: BLE001 - a bug must not end the night
                err = report.unexpected(err, f"master {name}")
                if strict:
                    if isinstance(err, InternalError):
                        raise InternalError(f"master {name}: {err}") from None
                    raise err
                failed[name] = (type(err).__name__, str(err))
                log.warning("master %s not built: %s", name, err)
                for member in members:
                    report.problem(member, type(err).__name__,
                                   f"master {name} not built: {err}")
                continue
            _report_master(report, built[name], path, members)
            result.masters[(kind, name)] = path
    bar.close()

    science_rows = []
    used_names = set()
    tasks = []
    science_folder = output_dir / "science"
    for row in plan:
        if row["type"] != "science" or row["status"] != "ok":
            continue
        broken = [row[k] for k in ("bias", "dark", "flat") if row[k] and row[k] not in built]
        for master in broken:
            result.unbuilt_masters.setdefault(master, failed.get(master, ("", "not built"))[1])
        if broken:
            kind_of = failed.get(broken[0], ("CcdprocExtError", ""))[0]
            reason = "; ".join(f"master {m}: {failed.get(m, ('', 'not built'))[1]}"
                               for m in broken)
            report.problem(row["file"], kind_of, reason)
            continue
        out = _inside(science_folder / _output_name(row["file"], used_names), science_folder)
        masters_used = {k: (str(result.masters[(k, row[k])]), built[row[k]].checksum,
                            _file_stamp(result.masters[(k, row[k])]))
                        for k in ("bias", "dark", "flat") if row[k]}
        scale = row["dark_scale"] if row["dark"] else np.nan
        recipe = _recipe(settings, _file_stamp(collection.path(row["file"])),
                         {k: checksum for k, (_, checksum, _) in masters_used.items()},
                         None if not np.isfinite(scale) else float(scale),
                         gain_correct, create_deviation, write_uncertainty)
        tasks.append((row, out, masters_used, scale, recipe))

    bar = tqdm(total=len(tasks), desc="science", unit="frame",
               disable=None if progress else True)

    # Outputs already up to date are read here; only the others become tasks.
    outcomes = [None] * len(tasks)
    to_do = []
    for index, (_, out, _, _, recipe) in enumerate(tasks):
        if not overwrite and _up_to_date(out, recipe):
            outcomes[index] = _science_outcome("up to date", fits.getheader(out))
            bar.update(1)
        else:
            to_do.append(index)
    arguments = {}
    for index in to_do:
        row, out, masters_used, scale, recipe = tasks[index]
        arguments[index] = (collection.path(row["file"]), out, profile, masters_used, scale,
                            recipe, True, gain_correct, create_deviation, write_uncertainty,
                            dtype)
    own_executor = None
    if executor is None and to_do:
        # The masters are in memory already: prepared here once, they reach this
        # process's calibrations and, through fork, the worker processes' without being
        # read again. (Other executors' workers read them from disk, once each.)
        _MASTER_CACHE.clear()
        for index in to_do:
            _, _, masters_used, scale, _ = tasks[index]
            for kind, (path, checksum, stamp) in masters_used.items():
                master = _prepared_master(
                    path, checksum, stamp, profile, float(scale) if kind == "dark" else 1.0,
                    keep_uncertainty, loaded=None if keep_uncertainty else built[Path(path).stem])
                if not keep_uncertainty:  # what calibrate_frame will use, computed once
                    if kind == "flat":
                        master._normalised_flat(None, dtype)
                    else:
                        master._array(dtype)
        workers = (os.cpu_count() or 1) if workers is None else int(workers)
        if workers > 1 and len(to_do) > 1:
            own_executor = executor = ProcessPoolExecutor(min(workers, len(to_do)),
                                                          mp_context=_process_context())
    try:
        if executor is not None:
            pending = [executor.submit(_calibrate_task, *arguments[index]) for index in to_do]
            results = (future.result for future in pending)
        else:
            results = (functools.partial(_calibrate_task, *arguments[index])
                       for index in to_do)
        for index, result_of in zip(to_do, results, strict=False):
            try:
                outcomes[index] = result_of()
            except Exception as err:  # noqa: BLE001 - a bug must not end the night
                file = tasks[index][0]["file"]
                err = report.unexpected(err, file)
                if strict:
                    if isinstance(err, InternalError):
                        raise InternalError(f"{file}: {err}") from None
                    raise err
                outcomes[index] = err
            bar.update(1)
    finally:
        bar.close()
        if own_executor is not None:
            own_executor.shutdown(cancel_futures=True)
        _MASTER_CACHE.clear()

    for (row, out, _, scale, _), outcome in zip(tasks, outcomes, strict=True):
        if isinstance(outcome, Exception):
            report.problem(row["file"], type(outcome).__name__, _without_path(outcome))
            continue
        status, sky, noise, n_saturated, n_masked, notes = outcome
        for kind, text in notes:
            report.note(row["file"], kind, text)
        science_rows.append((row["file"], str(out), row["bias"], row["dark"], row["flat"],
                             float(scale) if np.isfinite(scale) else np.nan, sky, noise,
                             n_saturated, n_masked, status))
    result.science = _science_table(science_rows)
    result.problems, result.notes = report.tables()
    return result


def _without_path(err):
    """An error's words without the full path of the file it starts with."""
    text = str(err)
    head, sep, rest = text.partition(": ")
    return rest if sep and os.sep in head else text


def _report_master(report, master, path, members):
    """Problems and notes read from a master's header: the same on every run."""
    header = master.ccd.meta
    file = f"masters/{path.name}"
    by_name = {}
    for member in members:
        by_name.setdefault(Path(member).name, member)
    i = 1
    while f"SKIP{i:03d}" in header:
        left_out = str(header[f"SKIP{i:03d}"])
        kind, _, why = str(header.get(f"SKIPW{i:03d}", "")).partition(": ")
        report.problem(by_name.get(left_out, left_out), kind or "CcdprocExtError",
                       f"left out of master {path.stem}: {why}")
        i += 1
    if header.get("NCOMBINE", 0) == 1:
        report.note(file, "DataQualityWarning",
                    f"made from a single frame ({header.get('IMCMB001', '?')}): nothing "
                    "could be rejected and its noise is that of one frame")
    if header.get("NLOWPIX", 0):
        report.note(file, "DataQualityWarning",
                    f"{header['NLOWPIX']} pixel(s) below the minimum of the flat, masked")
    if header.get("NNANPIX", 0):
        report.note(file, "DataQualityWarning",
                    f"{header['NNANPIX']} pixel(s) of its frames were NaN or infinite, "
                    "masked")


def _build_master(kind, paths, profile, lower, combine_options, path, recipe, *, scale_dark,
                  skip_bad_frames, uncertainty, workers):
    # A master's uncertainty is only computed when it is written.
    combine_options = {"compute_uncertainty": uncertainty, **(combine_options or {})}
    options = {"combine_options": combine_options, "skip_bad_frames": skip_bad_frames,
               "workers": workers, "temporary_dir": path.parent}
    if kind == "bias":
        master = make_master_bias(paths, profile, **options)
    elif kind == "dark":
        master = make_master_dark(paths, profile, master_bias=lower.get("bias"), **options)
    else:
        master = make_master_flat(paths, profile, master_bias=lower.get("bias"),
                                  master_dark=lower.get("dark"), scale_dark=scale_dark,
                                  **options)
    master.meta["RECIPE"] = (recipe, "hash of the inputs and settings")
    master.meta["FILENAME"] = path.name
    write_atomic(master, path, uncertainty=uncertainty,
                 mask=master.mask is not None and bool(master.mask.any()))
    return master


def _kept_master(master, path, profile):
    """The master just written, kept in memory for what follows (without uncertainty):
    the same pixels and mask as read back from ``path``, whose checksum is taken once."""
    mask = master.mask if master.mask is not None and master.mask.any() else None
    header = fits.Header(master.meta) if not isinstance(master.meta, fits.Header) \
        else master.meta
    ccd = CCDData(master.data, unit=master.unit, meta=header, mask=mask)
    try:
        exposure = profile.exposure_time(header, path=path)
    except CcdprocExtError:
        exposure = None
    return MasterFrame(ccd=ccd, name=path.name, checksum=file_checksum(path)[:16],
                       exposure=exposure)


def _process_context():
    """How worker processes start.

    On Linux before Python 3.12, by fork: workers inherit the imported modules and the
    prepared masters. From 3.12 on, forking a process that runs threads (a progress
    bar's monitor, say) is deprecated: a fork server is used, which imports this module
    once; each worker then reads the masters itself.
    """
    import multiprocessing
    import sys

    if sys.platform.startswith("linux") and sys.version_info < (3, 12):
        return multiprocessing.get_context("fork")
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context()


#: Masters prepared for science frames in this process: (path, checksum, scale,
#: uncertainty) -> MasterFrame. Filled before worker processes are forked.
_MASTER_CACHE = {}
_MASTER_CACHE_SIZE = 16
_MASTER_CACHE_LOCK = threading.Lock()


def _prepared_master(path, checksum, stamp, profile, scale, keep_uncertainty, *,
                     loaded=None):
    """A master read once per process, scaled once, stripped of what is not needed.

    ``checksum`` is part of the key, and the file's size and modification time must
    still be ``stamp``: a master rewritten on disk is not used unnoticed.
    """
    key = (path, checksum, scale, keep_uncertainty)
    with _MASTER_CACHE_LOCK:  # thread executors share this process's cache
        master = _MASTER_CACHE.get(key)
    if master is None:
        master = _prepare_master(path, checksum, stamp, profile, scale, keep_uncertainty,
                                 loaded)
        with _MASTER_CACHE_LOCK:
            while len(_MASTER_CACHE) >= _MASTER_CACHE_SIZE:
                _MASTER_CACHE.pop(next(iter(_MASTER_CACHE)))
            master = _MASTER_CACHE.setdefault(key, master)
    return master


def _prepare_master(path, checksum, stamp, profile, scale, keep_uncertainty, loaded=None):
    if _file_stamp(path) != list(stamp):
        raise OutputError(f"{path}: the master changed while the night was reduced")
    master = loaded if loaded is not None else \
        MasterFrame.load(path, profile, checksum=checksum)
    if not keep_uncertainty:
        master = master.without_uncertainty()
    return master.scaled(scale)


def _calibrate_science(raw_path, out, profile, masters_used, scale, recipe, gain_correct,
                       create_deviation, write_uncertainty, dtype):
    keep = bool(write_uncertainty or create_deviation)
    masters = {kind: _prepared_master(path, checksum, stamp, profile,
                                      float(scale) if kind == "dark" else 1.0, keep)
               for kind, (path, checksum, stamp) in masters_used.items()}
    raw, raw_checksum = _read_frame_and_checksum(raw_path, profile, dtype=dtype)
    calibrated = calibrate_frame(
        raw, profile, master_bias=masters.get("bias"), master_dark=masters.get("dark"),
        master_flat=masters.get("flat"), scale_dark=False, gain_correct=gain_correct,
        create_deviation=create_deviation, dtype=dtype, name=Path(raw_path).name)
    mask = calibrated.mask
    n_masked = 0 if mask is None else int(np.count_nonzero(mask))
    sky, noise = _sky_statistics(calibrated.data, mask if n_masked else None)
    header = calibrated.meta
    header["RAWFILE"] = (Path(raw_path).name, "raw frame this was calibrated from")
    header["RAWSUM"] = (raw_checksum[:16], "BLAKE2b of the raw file (first 16 hex)")
    if np.isfinite(sky) and np.isfinite(noise):
        header["SKYLEVEL"] = (round(sky, 4), "median sky level, sources masked")
        header["SKYNOISE"] = (round(noise, 4), "sky noise (rms), sources masked")
    header["NMASKED"] = (n_masked, "masked pixels (extension MASK)")
    header["RECIPE"] = (recipe, "hash of the inputs and settings")
    write_atomic(calibrated, out, dtype=dtype, uncertainty=write_uncertainty,
                 mask=write_uncertainty or n_masked > 0)
    return header


def _science_outcome(status, header, notes=()):
    """What the night records of a science frame, read from its header."""
    notes = list(notes)
    if header.get("NNANPIX", 0):
        notes.insert(0, ("DataQualityWarning", f"{header['NNANPIX']} pixel(s) of the raw "
                                               "frame were NaN or infinite, masked"))
    return (status, header.get("SKYLEVEL", np.nan), header.get("SKYNOISE", np.nan),
            header.get("NSATUR", -1), header.get("NMASKED", -1), notes)


def _calibrate_task(raw_path, out, profile, masters_used, scale, recipe, overwrite,
                    gain_correct, create_deviation, write_uncertainty, dtype):
    """One science frame, as a picklable task for any executor.

    Returns ``(status, sky, noise, n_saturated, n_masked, notes)``; the package's warnings
    become notes ``(kind, words)`` instead of being lost in a worker process.
    """
    if not overwrite and _up_to_date(out, recipe):
        return _science_outcome("up to date", fits.getheader(out))
    try:
        with _CaughtWarnings() as caught:
            header = _calibrate_science(raw_path, out, profile, masters_used, scale, recipe,
                                        gain_correct, create_deviation, write_uncertainty,
                                        dtype)
    except CcdprocExtError:
        raise
    except Exception as err:  # noqa: BLE001 - reported as a problem, not a crash
        # Tracebacks do not travel back from worker processes: their text does.
        internal = InternalError(f"unexpected {type(err).__name__}: {err}")
        internal.details = traceback.format_exc()
        raise internal from None
    # NaN pixels are noted from the header (NNANPIX), as for a frame found up to date.
    notes = [(type(message).__name__, _without_path(message)) for message in caught.ours
             if "NaN or infinite" not in str(message)]
    return _science_outcome("written", header, notes)


def _science_table(rows):
    names = ("raw_file", "output_file", "bias", "dark", "flat", "dark_scale", "sky_level",
             "sky_noise", "n_saturated", "n_masked", "status")
    if not rows:
        return Table(names=names,
                     dtype=("U", "U", "U", "U", "U", "f8", "f8", "f8", "i8", "i8", "U"))
    table = Table(rows=rows, names=names)
    for name in ("dark_scale", "sky_level", "sky_noise"):
        table[name].format = ".4g"
    return table


def _write_table(table, path):
    temporary = path.with_name(f".{path.name}.part")
    table.write(temporary, format="ascii.ecsv", overwrite=True)
    os.replace(temporary, path)
