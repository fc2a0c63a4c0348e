"""The masters of a night: built from its frames, or found up to date, or taken from
the calibration library, bias first, then darks, then flats; here, or each as a task on
an executor (`build_master_task`), in waves by kind.

`build_masters` is stage 3 of `~ccdproc_ext.reduce_night`. Each master of the plan is
combined by `~ccdproc_ext.masters.build_master` from its usable frames (each extension
apart, for multi-extension frames) and written to ``masters/<name>.fits``; a master whose
file is up to date (its recipe: the frames, the lower masters and the settings) is read
instead. What a master left out comes back with it (`~ccdproc_ext.masters.LeftOut`),
and each frame left out is a problem of the night; a master that cannot be built is a
problem of each of its frames, and of each science frame that needed it.
"""

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ._raw_parts import extension_headers
from ._warnings import CaughtWarnings
from .exceptions import (
    CalibrationMatchError,
    CcdprocExtError,
    DataQualityWarning,
    FrameSkippedWarning,
    InternalError,
    error_class,
)
from .extensions import (
    check_extensions_readable,
    check_same_extensions,
    detector_extensions,
    extension_index,
    file_header,
    primary_header,
    read_extension,
    write_extensions,
)
from .log import (
    RecordedLog,
    files_shown,
    group_by_reason,
    plan_row_error,
    replay,
    table_of,
    without_path,
)
from .master_frame import MasterFacts, MasterFrame, MultiMaster, extensions_of, load_master
from .masters import LeftOut, build_master
from .outputs import file_stamp, inside, recipe, up_to_date, write_atomic
from .provenance import file_name_of, fits_text
from .raw import file_checksum, read_header

__all__ = ["MASTER_KINDS", "MasterJob", "MasterOutcome", "NightMasters", "build_master_task",
           "build_masters", "run_master_job"]

logger = logging.getLogger(__name__)

#: The order masters are built in: each kind needs the ones before it.
MASTER_KINDS = ("bias", "dark", "flat")


@dataclass
class NightMasters:
    """The masters of a night as they are built: in memory, on disk, or failed.

    Attributes
    ----------
    built : dict
        ``name -> MasterFrame`` (without uncertainty); ``name -> MasterFacts`` (its file's
        name, checksum and extensions) for a master made by a task on an executor.
    paths : dict
        ``(kind, name) -> path``.
    failed : dict
        ``name -> CcdprocExtError``: why a master could not be built.
    bpm_of : dict
        ``(dark name, flat name) -> name`` of the bad-pixel mask of that pair.
    """

    built: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)
    bpm_of: dict = field(default_factory=dict)

    def path(self, kind, name):
        """The file of the master ``name`` of ``kind``."""
        return self.paths[(kind, name)]

    def not_built(self, name, err, members, log, *, reason=None):
        """Record that the master ``name`` could not be built (``err``), and say it as a
        problem of each of its frames ``members`` in ``log`` (in the words of ``err``, or
        ``reason``)."""
        self.failed[name] = err
        for member in members:
            log.problem(member, type(err)(f"master {name} not built: {reason or err}"))

    def by_file_stem(self):
        """``file stem -> MasterFrame``, as ``science.prepare_masters`` looks
        masters up; a stem two files share (a library master named like one of the
        night's) maps to ``None``, and that master is read from its file."""
        stems = {}
        for (_, name), path in self.paths.items():
            stem = Path(path).stem
            stems[stem] = None if stem in stems else self.built.get(name)
        return stems


def build_masters(plan, collection, options, log, *, progress, executor=None):
    """Every master of the plan, bias first, each from its usable frames.

    Parameters
    ----------
    plan : `~astropy.table.Table`
        The night's plan, its masters in ``plan.meta["masters"]``.
    collection : `~ccdproc_ext.NightCollection`
        The night's frames.
    options
        The night's settings (``profile``, ``overwrite``, ``strict``, ``workers``,
        ``combine_options``, ``keeps_uncertainty``, ``settings()``).
    log : `~ccdproc_ext.log.NightLog`
        Where the problems and notes of the masters go.
    progress : bool
        Show a progress bar (on a terminal).
    executor : `concurrent.futures.Executor` or None, optional
        Where the masters are built: each is a `build_master_task` submitted to it, in
        waves (the biases, then the darks, then the flats), and only what they return is
        kept here (`~ccdproc_ext.master_frame.MasterFacts`). Default is ``None``: here,
        one after the other, each with ``options.workers`` threads.

    Returns
    -------
    `NightMasters`
    """
    table = plan.meta["masters"]
    rows = {row["file"]: row for row in plan}
    masters = NightMasters()
    with tqdm(total=len(table), desc="masters", unit="master",
              disable=None if progress else True) as bar:
        for kind in MASTER_KINDS:
            wave = []
            for master in table[table["kind"] == kind]:
                if master["origin"] == "library":
                    wave.append((None, None, master))
                    if executor is None:
                        _load_library_master(kind, master, options, log, masters)
                        bar.update(1)
                    continue
                # Said in the night's log after the masters before it, as when built here.
                said = log if executor is None else RecordedLog(options.strict,
                                                                log.output_dir)
                job = _master_job(kind, master, rows, collection, log.output_dir, said,
                                  masters)
                if executor is None and job is not None:
                    run_master_job(job, options, log, masters)
                wave.append((job, said, None))
                if executor is None:
                    bar.update(1)
            if executor is not None:
                _run_wave(kind, wave, executor, options, log, masters, bar)
    return masters


def _run_wave(kind, wave, executor, options, log, masters, bar):
    """The masters of one kind built by tasks on ``executor``: submitted together, then
    what each returned recorded in ``log`` and ``masters``, in the plan's order (a
    library's master read here in its turn)."""
    found = [None if job is None else _found_up_to_date(job, options, masters)
             for job, _, _ in wave]
    futures = [None if job is None or current is not None else executor.submit(
        build_master_task, job, _lower_of(job, masters), options)
        for (job, _, _), current in zip(wave, found, strict=True)]
    for (job, said, library), future, current in zip(wave, futures, found, strict=True):
        if library is not None:
            _load_library_master(kind, library, options, log, masters)
            bar.update(1)
            continue
        replay(said.records, log)
        if current is not None:  # found up to date here, not submitted
            current.record(log, masters)
        elif future is not None:
            try:
                outcome = future.result()
            except Exception as err:  # strict mode's error, or a worker lost: as here
                err = log.unexpected(err, f"master {job.name}")
                if options.strict:
                    raise err
                masters.not_built(job.name, err, job.members, log)
            else:
                outcome.record(log, masters)
        bar.update(1)


def _lower_of(job, masters):
    """``((kind, name, path, checksum), ...)``: the lower masters a task reads."""
    return tuple((kind, name, str(masters.paths[(kind, name)]), masters.built[name].checksum)
                 for kind, name in job.needs)


@dataclass(frozen=True)
class MasterJob:
    """One master to build, in small picklable values: what a task on an executor needs
    beside the night's settings and its lower masters.

    Attributes
    ----------
    kind, name : str
        The master's kind and name (its file is ``masters/<name>.fits``).
    members : tuple of str
        Its usable frames, as the plan names them.
    paths : tuple of str
        Their files.
    done : tuple
        ``(frame, steps)`` of its frames whose headers say a calibration was done before.
    needs : tuple
        ``(kind, name)`` of the lower masters its frames are calibrated with.
    dark_scales : tuple of float
        The plan's dark scale of each of its frames.
    output_dir : `pathlib.Path`
        The night's output folder.
    """

    kind: str
    name: str
    members: tuple
    paths: tuple
    done: tuple
    needs: tuple
    dark_scales: tuple
    output_dir: Path

    def path(self, member):
        """The file of frame ``member``."""
        return self.paths[self.members.index(member)]


@dataclass(frozen=True)
class MasterOutcome:
    """What a `build_master_task` returns: the master built (its facts and file) or why it
    failed, and the problems and notes it said, in order.

    Attributes
    ----------
    kind, name : str
    path : str or None
        Its file, when it was built or found up to date.
    facts : `~ccdproc_ext.master_frame.MasterFacts` or None
    failed : `~ccdproc_ext.CcdprocExtError` or None
    records : list
        The ``records`` of a `~ccdproc_ext.log.RecordedLog`.
    """

    kind: str
    name: str
    path: str | None
    facts: MasterFacts | None
    failed: Exception | None
    records: list

    def record(self, log, masters):
        """Say its problems and notes in ``log``; keep the master in ``masters``."""
        replay(self.records, log)
        if self.failed is not None:
            masters.failed[self.name] = self.failed
        if self.facts is not None:
            masters.built[self.name] = self.facts
            masters.paths[(self.kind, self.name)] = Path(self.path)


def build_master_task(job, lower, options):
    """Build one master where a task runs: a worker of an executor.

    Parameters
    ----------
    job : `MasterJob`
    lower : tuple
        ``(kind, name, path, checksum)`` of its lower masters, read here.
    options
        The night's settings.

    Returns
    -------
    `MasterOutcome`
    """
    log = RecordedLog(options.strict, job.output_dir)
    masters = NightMasters()
    for kind, name, path, checksum in lower:
        masters.built[name] = load_master(Path(path), options.profile,
                                          checksum=checksum).without_uncertainty()
        masters.paths[(kind, name)] = Path(path)
    run_master_job(job, options, log, masters)
    built = masters.built.get(job.name)
    path = masters.paths.get((job.kind, job.name))
    return MasterOutcome(job.kind, job.name, None if path is None else str(path),
                         None if built is None else MasterFacts.of(built),
                         masters.failed.get(job.name), log.records)


def _load_library_master(kind, master, options, log, masters):
    """A master of the calibration library that the plan chose: read, not built. The plan
    checked its checksum; the science tasks check it has not changed since."""
    name, path = str(master["name"]), Path(str(master["path"]))
    try:
        masters.built[name] = load_master(path, options.profile).without_uncertainty()
    except Exception as err:  # an unreadable master must not end the night
        err = log.unexpected(err, f"master {name}")
        if options.strict:
            raise err
        masters.failed[name] = err
        return
    masters.paths[(kind, name)] = path


def _master_job(kind, master, rows, collection, output_dir, log, masters):
    """The `MasterJob` of a master of the plan: its frames that can be used and the
    names of its lower masters, or ``None`` (the master failed, said in
    ``masters.failed``)."""
    name = master["name"]
    files = master["files"].split(",")
    members = [f for f in files if rows[f]["status"] == "ok"]
    if not members:  # its frames need a calibration that is missing: said in the plan
        first = rows[files[0]]
        masters.failed[name] = type(plan_row_error(first))(
            f"none of its frames could be used ({files[0]}: {first['problem']})")
        return None
    first = rows[members[0]]
    needs = {k: first[k] for k in ("bias", "dark") if kind != "bias" and first[k]}
    missing = [needs[k] for k in needs if needs[k] not in masters.built]
    if missing:
        cause = masters.failed.get(missing[0], CcdprocExtError())
        masters.not_built(name, type(cause)(f"its master {', '.join(missing)} could not be "
                                            "built"), members, log)
        return None
    done_of = dict(zip(collection.frames["file"], collection.frames["done"], strict=True))
    return MasterJob(kind, str(name), tuple(members),
                     tuple(str(collection.path(f)) for f in members),
                     tuple((m, str(done_of[m])) for m in members if done_of.get(m)),
                     tuple((k, str(v)) for k, v in needs.items()),
                     tuple(float(rows[m]["dark_scale"]) for m in members), output_dir)


def run_master_job(job, options, log, masters):
    """Build the master of ``job`` (or find it up to date), its lower masters in
    ``masters``; it is added to them, or its failure is, and its problems and notes go to
    ``log``.

    Parameters
    ----------
    job : `MasterJob`
    options
        The night's settings.
    log : `~ccdproc_ext.log.NightLog`
    masters : `NightMasters`
    """
    kind, name, needs = job.kind, job.name, dict(job.needs)
    extensions, members = _master_extensions(job, options, log, masters)
    if not members:
        return
    path = _master_path(job)
    _note_steps_done(log, f"masters/{path.name}", job.done, members)
    dark_scale = job.dark_scales[job.members.index(members[0])]
    master_recipe = _master_recipe(job, members, options, masters)
    try:
        if options.overwrite or not up_to_date(path, master_recipe):
            with CaughtWarnings() as caught:
                frame, left_out = _make_master(
                    kind, [job.path(f) for f in members],
                    {k: masters.built[v] for k, v in needs.items()}, path, master_recipe,
                    options, scale_dark=bool(np.isfinite(dark_scale) and dark_scale != 1.0),
                    extensions=extensions)
            # Frames left out come back with the master; data quality is read from the
            # master's header below, the same whether it was built now or found up to date.
            _note_master_warnings(log, path, members, [
                message for message in caught.ours
                if not isinstance(message, FrameSkippedWarning | DataQualityWarning)])
            masters.built[name] = (load_master(path, options.profile) if extensions else
                                   MasterFrame.of(frame, options.profile, path=path)
                                   ).without_uncertainty()
        else:
            masters.built[name] = load_master(path, options.profile).without_uncertainty()
            left_out = _recorded_left_out(_headers_of(masters.built[name]))
        check_same_extensions(f"masters/{path.name}", extensions_of(masters.built[name]),
                              extensions, "its frames")
    except Exception as err:  # a bug must not end the night
        err = log.unexpected(err, f"master {name}")
        if options.strict:
            raise err if not isinstance(err, InternalError) else \
                InternalError(f"master {name}: {err}") from None
        logger.info("master %s not built: %s", name, err)
        masters.not_built(name, err, members, log)
        return
    _report_master(log, _headers_of(masters.built[name]), path, members, left_out)
    masters.paths[(kind, name)] = path


def _master_path(job):
    """The file of the master of ``job``: ``masters/<name>.fits``."""
    folder = job.output_dir / "masters"
    return inside(folder / f"{job.name}.fits", folder)


def _master_recipe(job, members, options, masters):
    """The recipe of the master of ``job`` made from ``members``: its frames, its lower
    masters (their checksums, in ``masters``) and the night's settings."""
    dark_scale = job.dark_scales[job.members.index(members[0])]
    return recipe(dict(options.settings(), uncertainty=options.keeps_uncertainty),
                  [file_stamp(job.path(f)) for f in members],
                  {k: masters.built[v].checksum for k, v in job.needs},
                  dark_scale if job.kind == "flat" else None)


def _found_up_to_date(job, options, masters):
    """The `MasterOutcome` of a master whose file is up to date, told here from headers
    (its frames', its own) and its checksum, without reading pixels; ``None`` when it is
    to be built (or its frames have a problem: the task that builds it says it)."""
    if options.overwrite:
        return None
    log = RecordedLog(options.strict, job.output_dir)
    scratch = NightMasters(built=dict(masters.built), paths=dict(masters.paths))
    extensions, members = _master_extensions(job, options, log, scratch)
    path = _master_path(job)
    if not members or not up_to_date(path, _master_recipe(job, members, options, scratch)):
        return None
    _note_steps_done(log, f"masters/{path.name}", job.done, members)
    try:
        names = detector_extensions(path)
        headers = (extension_headers(path, {n: extension_index(n) for n in names}) if names
                   else {None: read_header(path)})
        checksum = file_checksum(path)[:16]
    except Exception:  # the task that builds it says what is wrong
        return None
    if tuple(names) != tuple(extensions):
        return None  # said by the task, as when it is built here
    _report_master(log, headers, path, members, _recorded_left_out(headers))
    return MasterOutcome(job.kind, job.name, str(path),
                         MasterFacts(path.name, checksum, tuple(names)),
                         None, log.records)


def _headers_of(master):
    """``extension -> header`` of a master in memory (``None`` for one of one image)."""
    frames = master.frames if isinstance(master, MultiMaster) else {None: master}
    return {extension: frame.ccd.meta for extension, frame in frames.items()}


def _recorded_left_out(headers):
    """The frames a master found up to date left out, ``extension -> (LeftOut, ...)``
    (``None`` for a master of one image), from its headers (``extension -> header``).

    A master built by an earlier run is only its file: what it left out is what its
    header lists (``SKIP001``, ``SKIPW001 = 'kind: why'`` ...), read here and nowhere
    else, so that a resumed night has the problems of an uninterrupted one.
    """
    recorded = {}
    for extension, header in headers.items():
        left_out, i = [], 1
        while f"SKIP{i:03d}" in header:
            kind, _, why = str(header.get(f"SKIPW{i:03d}", "")).partition(": ")
            left_out.append(LeftOut(file_name_of(header[f"SKIP{i:03d}"]),
                                    error_class(kind or "CcdprocExtError")(why), why))
            i += 1
        recorded[extension] = tuple(left_out)
    return recorded


def _note_steps_done(log, file, done, members):
    """A master's note naming its frames whose headers say a calibration was done before
    they came (``CALSTAT``, IRAF's flags; ``done``: ``(frame, steps)``): it was not done
    again (see the plan)."""
    done_of = dict(done)
    by_steps = {}
    for member in members:
        if done_of.get(member):
            by_steps.setdefault(str(done_of[member]), []).append(member)
    for steps, files in by_steps.items():
        log.note(file, "StepsDone",
                 f"made from frames whose {' and '.join(steps.split(','))} were done "
                 f"before (their headers say so), not again: {files_shown(files)}")


def _master_extensions(job, options, log, masters):
    """The detector extensions of a master (``()`` for frames of one image) and its
    members that have them.

    The master's extensions are those most of its frames have (the profile's, when it
    names them); a frame with other extensions, or one of them unreadable, is a problem
    and left out. Lower masters with other extensions fail the master.
    """
    name, members, needs = job.name, job.members, dict(job.needs)
    found = {}
    for member in members:
        try:
            found[member] = detector_extensions(job.path(member), options.profile)
            check_extensions_readable(job.path(member), found[member])
        except CcdprocExtError as err:
            found.pop(member, None)
            log.problem(member, err)
    extensions = Counter(found.values()).most_common(1)[0][0] if found else ()
    kept = []
    for member, names in found.items():
        try:
            check_same_extensions(member, names, extensions, f"its master {name}",
                                  path=job.path(member))
        except CalibrationMatchError as err:
            log.problem(member, err)
            continue
        kept.append(member)
    try:
        for lower in needs.values():
            check_same_extensions(f"master {name}", extensions,
                                  extensions_of(masters.built[lower]), f"its master {lower}")
    except CalibrationMatchError as err:
        if options.strict:
            raise
        masters.not_built(name, err, kept, log, reason=without_path(err))
        return extensions, []
    if not kept and members:
        masters.failed[name] = CalibrationMatchError("none of its frames could be used")
    return extensions, kept


def _make_master(kind, paths, lower, path, master_recipe, options, *, scale_dark,
                 extensions=()):
    """Combine one master and write it; its uncertainty only when it is written.

    Returns the master (its first extension's, for multi-extension frames) and the frames
    it left out, ``extension -> (LeftOut, ...)`` (``None`` for a master of one image).
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
    built = _combine_master(kind, paths, options.profile, lower, scale_dark, common)
    master = built.ccd
    master.meta["RECIPE"] = (master_recipe, "hash of the inputs and settings")
    master.meta["FILENAME"] = path.name
    write_atomic(master, path, uncertainty=options.keeps_uncertainty,
                 mask=master.mask is not None and bool(master.mask.any()))
    return master, {None: built.left_out}


def _combine_master(kind, frames, profile, lower, scale_dark, common):
    """One master of ``kind`` from ``frames`` (paths, or the frames of one extension): a
    `~ccdproc_ext.masters.BuiltMaster`."""
    if kind == "flat":
        return build_master(kind, frames, profile, master_bias=lower.get("bias"),
                            master_dark=lower.get("dark"), scale_dark=scale_dark, **common)
    return build_master(kind, frames, profile, master_bias=lower.get("bias"), **common)


def _make_master_extensions(kind, paths, extensions, lower, path, master_recipe, options, *,
                            scale_dark, common):
    """A master of multi-extension frames: each extension combined from the same
    extension of its frames (calibrated with the same extension of the lower masters,
    through the profile as it applies to that extension), written as one file with the
    frames' extensions, in their order."""
    frames, left_out = {}, {}
    for extension in extensions:
        profile = options.profile.for_extension(extension)
        ccds = [read_extension(p, extension, options.profile) for p in paths]
        own_lower = {k: m.extension(extension, file=f"master {path.stem}")
                     for k, m in lower.items()}
        built = _combine_master(kind, ccds, profile, own_lower, scale_dark, common)
        frames[extension], left_out[extension] = built.ccd, built.left_out
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
    return first, left_out


def _report_master(log, headers, path, members, left_out):
    """The problems and notes of a master: the frames it left out (``left_out``, by
    extension), and what its headers (``extension -> header``) say of its pixels (each
    extension's, for a master of multi-extension frames): the same on every run."""
    file = f"masters/{path.name}"
    # The first extension's: the frames combined are the same.
    header = next(iter(headers.values()))
    if header.get("NCOMBINE", 0) == 1:
        single = file_name_of(header.get("IMCMB001", "?"))
        log.note(file, "DataQualityWarning",
                 f"made from a single frame ({single}): nothing could be rejected "
                 "and its noise is that of one frame")
    by_name = {}
    for member in members:
        by_name.setdefault(Path(member).name, member)
    for extension, header in headers.items():
        words = "" if extension is None else f" (extension {extension})"
        for item in left_out.get(extension, ()):
            log.problem(by_name.get(item.file, item.file), type(item.error)(
                f"left out of master {path.stem}{words}: {fits_text(item.reason)}"))
        if header.get("NLOWPIX", 0):
            log.note(file, "DataQualityWarning",
                     f"{header['NLOWPIX']} pixel(s){words} below the minimum of the "
                     "flat, masked")
        if header.get("NNANPIX", 0):
            log.note(file, "DataQualityWarning",
                     f"{header['NNANPIX']} pixel(s){words} of its frames were NaN or "
                     "infinite, masked")


def _note_master_warnings(log, path, members, messages):
    """The warnings given while a master was made, as its notes. What several of its
    frames said for one reason is one note naming them
    (`~ccdproc_ext.log.group_by_reason`), not one per frame, nor one line of every
    frame's words."""
    file = f"masters/{path.name}"
    by_name = {}
    for member in members:
        by_name.setdefault(Path(member).name, member)
    of_frames = []
    for message in messages:
        head, sep, rest = str(message).partition(": ")
        frame = by_name.get(Path(head).name) if sep else None
        if frame is None:  # about the master, not one of its frames
            log.note(file, type(message).__name__, without_path(message))
        else:
            of_frames.append((frame, type(message).__name__, rest))
    for group in group_by_reason(table_of(sorted(of_frames), ("file", "kind", "note")),
                                 "note"):
        frames, texts = group["files"], set(group["texts"].values())
        text = texts.pop() if len(texts) == 1 else group["reason"]
        count = f"{len(frames)} frames: " if len(frames) > 1 else ""
        log.note(file, group["kind"], f"{text} ({count}{files_shown(frames)})")
