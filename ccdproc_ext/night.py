"""`reduce_night`: one call from a folder of raw frames to calibrated science frames.

The night is planned first (`~ccdproc_ext.NightCollection.plan`), so that missing
calibrations are found before any pixel is touched. Then every master the plan needs is
built (bias, then darks, then flats), and every science frame is calibrated with
`~ccdproc_ext.calibrate_frame`. Outputs go to ``masters/`` and ``science/`` under the
output folder, written atomically; ``plan.ecsv`` and ``masters.ecsv`` record the plan.

Each output carries a ``RECIPE`` card: a hash of what it was made from (the raw files'
names, sizes and modification times, the masters' checksums, the settings). A re-run skips
the outputs whose recipe is unchanged, so an interrupted night resumes where it stopped;
``overwrite=True`` redoes them all.
"""

import functools
import hashlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from ccdproc import ImageFileCollection

from .calibrate import MasterFrame, calibrate_frame
from .collection import NightCollection
from .exceptions import CcdprocExtError
from .io import file_checksum, read_frame, write_atomic
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
        level and noise, status (``written``, ``up to date``, ``skipped``).
    problems : `~astropy.table.Table`
        Frames that were not reduced, and why.
    output_dir : `pathlib.Path`
    """

    plan: Table
    masters: dict = field(default_factory=dict)
    science: Table = None
    problems: Table = None
    output_dir: Path = None

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
        if self.problems is not None and len(self.problems):
            lines.append(f"{len(self.problems)} frame(s) skipped:")
            lines.extend(f"  {row['file']}: {row['problem']}" for row in self.problems)
        if self.output_dir is not None:
            lines.append(f"output: {self.output_dir}")
        return "\n".join(lines)


def _recipe(*parts):
    """A short hash of what an output is made from."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
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


def _output_name(file, used):
    stem = "_".join(Path(file).with_suffix("").parts)
    if stem.lower().endswith(".fits"):
        stem = stem[:-5]
    name = f"{stem}.fits"
    i = 1
    while name in used:
        i += 1
        name = f"{stem}-{i}.fits"
    used.add(name)
    return name


def _check_output_dir(raw_folder, output_dir):
    output_dir = Path(output_dir).resolve()
    if raw_folder is not None:
        raw_folder = Path(raw_folder).resolve()
        if output_dir == raw_folder or raw_folder in output_dir.parents:
            raise CcdprocExtError(f"output folder {output_dir} is inside the raw folder "
                                  f"{raw_folder}: raw data is never written; choose another")
    return output_dir


def _sky_statistics(data):
    """Sky level and noise of a calibrated frame, sources masked (photutils)."""
    from astropy.stats import SigmaClip, sigma_clipped_stats
    from photutils.background import Background2D, MedianBackground

    ny, nx = data.shape
    box = max(8, min(64, ny // 4, nx // 4))
    try:
        # The default rms estimator is the sigma-clipped standard deviation.
        background = Background2D(data, box, filter_size=3, sigma_clip=SigmaClip(sigma=3.0),
                                  bkg_estimator=MedianBackground())
        return float(background.background_median), float(background.background_rms_median)
    except ValueError:
        _, median, std = sigma_clipped_stats(data, sigma=3.0, maxiters=5)
        return float(median), float(std)


def _raw_location(raw):
    if isinstance(raw, ImageFileCollection):
        return raw.location or None
    if isinstance(raw, list | tuple):
        return None
    return raw


def reduce_night(raw, output_dir, profile="generic", *, dry_run=False, overwrite=False,
                 strict=False, workers=None, executor=None, progress=True,
                 image_types=None,
                 scale_darks=None, combine_options=None, gain_correct=False,
                 create_deviation=False, write_uncertainty=False, dtype=np.float32):
    """Reduce a night: plan, build masters, calibrate every science frame.

    Parameters
    ----------
    raw : str, `pathlib.Path`, list of paths or `~ccdproc.ImageFileCollection`
        The raw frames: a folder (searched recursively), files, or a collection.
    output_dir : str or `pathlib.Path`
        Where ``masters/``, ``science/``, ``plan.ecsv`` and ``masters.ecsv`` are written.
        It may not be the raw folder or inside it.
    profile : str, path or `~ccdproc_ext.InstrumentProfile`, optional
        The camera. Default is ``"generic"``.
    dry_run : bool, optional
        Only build and return the plan; nothing is written. Default is ``False``.
    overwrite : bool, optional
        Redo outputs that are up to date. Default is ``False``.
    strict : bool, optional
        Raise at the first frame that cannot be reduced instead of listing it in
        ``problems``. Default is ``False``.
    workers : int or None, optional
        Processes calibrating science frames in parallel on this machine. Default is
        ``None``: one per core. ``1`` calibrates them one at a time in this process.
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
        Write the uncertainty and mask of science frames. Default is ``False``.
    dtype : numpy dtype, optional
        Pixel type of the outputs. Default is ``float32``.

    Returns
    -------
    `NightResult`
    """
    profile = get_profile(profile)
    output_dir = _check_output_dir(_raw_location(raw), output_dir)
    collection = raw if isinstance(raw, NightCollection) else \
        NightCollection(raw, profile=profile, image_types=image_types)
    plan = collection.plan(scale_darks=scale_darks)
    masters_table = plan.meta["masters"]
    problems = [(row["file"], row["problem"]) for row in plan if row["status"] != "ok"]
    if strict and problems:
        raise CcdprocExtError(f"{problems[0][0]}: {problems[0][1]}")
    result = NightResult(plan=plan, output_dir=output_dir)
    if dry_run:
        result.problems = _problems_table(problems)
        result.science = _science_table([])
        return result

    (output_dir / "masters").mkdir(parents=True, exist_ok=True)
    (output_dir / "science").mkdir(parents=True, exist_ok=True)
    plan_to_write = plan.copy(copy_data=False)
    plan_to_write.meta = {k: v for k, v in plan.meta.items() if k != "masters"}
    _write_table(plan_to_write, output_dir / "plan.ecsv")
    _write_table(masters_table, output_dir / "masters.ecsv")

    plan_rows = {row["file"]: row for row in plan}
    built = {}  # master name -> MasterFrame
    failed = {}  # master name -> reason
    settings = {"profile": profile.name, "combine": repr(sorted((combine_options or {}).items())),
                "dtype": np.dtype(dtype).name}

    from tqdm.auto import tqdm

    bar = tqdm(total=len(masters_table), desc="masters", unit="master",
               disable=None if progress else True)
    for kind in ("bias", "dark", "flat"):
        for master in masters_table[masters_table["kind"] == kind]:
            bar.update(1)
            name = master["name"]
            members = [f for f in master["files"].split(",") if plan_rows[f]["status"] == "ok"]
            if not members:
                failed[name] = "none of its frames could be used"
                continue
            first = plan_rows[members[0]]
            needs = {k: first[k] for k in ("bias", "dark") if kind != "bias" and first[k]}
            missing = [needs[k] for k in needs if needs[k] not in built]
            if missing:
                failed[name] = f"its master {', '.join(missing)} could not be built"
                continue
            path = output_dir / "masters" / f"{name}.fits"
            recipe = _recipe(settings, [_file_stamp(collection.path(f)) for f in members],
                             {k: built[v].checksum for k, v in needs.items()},
                             first["dark_scale"] if kind == "flat" else None)
            try:
                if overwrite or not _up_to_date(path, recipe):
                    scale = first["dark_scale"]
                    _build_master(kind, [collection.path(f) for f in members], profile,
                                  {k: built[v] for k, v in needs.items()}, combine_options,
                                  path, recipe,
                                  scale_dark=bool(np.isfinite(scale) and scale != 1.0))
                built[name] = MasterFrame.load(path, profile)
            except CcdprocExtError as err:
                if strict:
                    raise
                failed[name] = str(err)
                log.warning("master %s not built: %s", name, err)
                continue
            result.masters[(kind, name)] = path
    bar.close()

    science_rows = []
    used_names = set()
    tasks = []
    for row in plan:
        if row["type"] != "science" or row["status"] != "ok":
            continue
        broken = [row[k] for k in ("bias", "dark", "flat") if row[k] and row[k] not in built]
        if broken:
            reason = "; ".join(f"master {m}: {failed.get(m, 'not built')}" for m in broken)
            if strict:
                raise CcdprocExtError(f"{row['file']}: {reason}")
            problems.append((row["file"], reason))
            continue
        out = output_dir / "science" / _output_name(row["file"], used_names)
        masters_used = {k: (str(result.masters[(k, row[k])]), built[row[k]].checksum)
                        for k in ("bias", "dark", "flat") if row[k]}
        scale = row["dark_scale"] if row["dark"] else np.nan
        recipe = _recipe(settings, _file_stamp(collection.path(row["file"])),
                         {k: checksum for k, (_, checksum) in masters_used.items()},
                         None if not np.isfinite(scale) else float(scale),
                         gain_correct, create_deviation, write_uncertainty)
        tasks.append((row, out, masters_used, scale, recipe))

    bar = tqdm(total=len(tasks), desc="science", unit="frame",
               disable=None if progress else True)

    arguments = [(collection.path(row["file"]), out, profile, masters_used, scale, recipe,
                  overwrite, gain_correct, create_deviation, write_uncertainty, dtype)
                 for row, out, masters_used, scale, recipe in tasks]
    own_executor = None
    if executor is None and len(arguments) > 1:
        workers = (os.cpu_count() or 1) if workers is None else int(workers)
        if workers > 1:
            own_executor = executor = ProcessPoolExecutor(min(workers, len(arguments)))
    try:
        if executor is not None:
            pending = [executor.submit(_calibrate_task, *args) for args in arguments]
            results = (future.result for future in pending)
        else:
            results = (functools.partial(_calibrate_task, *args) for args in arguments)
        outcomes = []
        for result_of in results:
            try:
                outcomes.append(result_of())
            except CcdprocExtError as err:
                outcomes.append(err)
            bar.update(1)
    finally:
        bar.close()
        if own_executor is not None:
            own_executor.shutdown()

    for (row, out, _, scale, _), outcome in zip(tasks, outcomes, strict=True):
        if isinstance(outcome, Exception):
            if strict:
                raise outcome
            problems.append((row["file"], str(outcome)))
            continue
        status, sky, noise = outcome
        science_rows.append((row["file"], str(out), row["bias"], row["dark"], row["flat"],
                             float(scale) if np.isfinite(scale) else np.nan, sky, noise,
                             status))
    result.science = _science_table(science_rows)
    result.problems = _problems_table(problems)
    return result


def _build_master(kind, paths, profile, lower, combine_options, path, recipe, *, scale_dark):
    if kind == "bias":
        master = make_master_bias(paths, profile, combine_options=combine_options)
    elif kind == "dark":
        master = make_master_dark(paths, profile, master_bias=lower.get("bias"),
                                  combine_options=combine_options)
    else:
        master = make_master_flat(paths, profile, master_bias=lower.get("bias"),
                                  master_dark=lower.get("dark"), scale_dark=scale_dark,
                                  combine_options=combine_options)
    master.meta["RECIPE"] = (recipe, "hash of the inputs and settings")
    master.meta["FILENAME"] = path.name
    write_atomic(master, path, uncertainty=True, mask=True)


_MASTER_CACHE = {}
_MASTER_CACHE_SIZE = 8


def _prepared_master(path, checksum, profile, scale, keep_uncertainty):
    """A master read once per process, scaled once, stripped of what is not needed.

    ``checksum`` is part of the key, so a master rewritten on disk is read again.
    """
    key = (path, checksum, scale, keep_uncertainty)
    if key not in _MASTER_CACHE:
        if len(_MASTER_CACHE) >= _MASTER_CACHE_SIZE:
            _MASTER_CACHE.pop(next(iter(_MASTER_CACHE)))
        _MASTER_CACHE[key] = _prepare_master(path, checksum, profile, scale,
                                             keep_uncertainty)
    return _MASTER_CACHE[key]


def _prepare_master(path, checksum, profile, scale, keep_uncertainty):
    master = MasterFrame.load(path, profile)
    if master.checksum != checksum:
        raise CcdprocExtError(f"{path}: the master changed while the night was reduced "
                              f"(checksum {master.checksum}, expected {checksum})")
    if not keep_uncertainty:
        master = master.without_uncertainty()
    return master.scaled(scale)


def _calibrate_science(raw_path, out, profile, masters_used, scale, recipe, gain_correct,
                       create_deviation, write_uncertainty, dtype):
    keep = bool(write_uncertainty or create_deviation)
    masters = {kind: _prepared_master(path, checksum, profile,
                                      float(scale) if kind == "dark" else 1.0, keep)
               for kind, (path, checksum) in masters_used.items()}
    raw = read_frame(raw_path, profile, dtype=dtype)
    calibrated = calibrate_frame(
        raw, profile, master_bias=masters.get("bias"), master_dark=masters.get("dark"),
        master_flat=masters.get("flat"), scale_dark=False, gain_correct=gain_correct,
        create_deviation=create_deviation, dtype=dtype, name=Path(raw_path).name)
    sky, noise = _sky_statistics(calibrated.data)
    header = calibrated.meta
    header["RAWFILE"] = (Path(raw_path).name, "raw frame this was calibrated from")
    header["RAWSUM"] = (file_checksum(raw_path)[:16], "SHA-256 of the raw file (first 16 hex)")
    header["SKYLEVEL"] = (round(sky, 4), "median sky level, sources masked")
    header["SKYNOISE"] = (round(noise, 4), "sky noise (rms), sources masked")
    header["RECIPE"] = (recipe, "hash of the inputs and settings")
    write_atomic(calibrated, out, dtype=dtype, uncertainty=write_uncertainty,
                 mask=write_uncertainty)
    return "written", sky, noise


def _calibrate_task(raw_path, out, profile, masters_used, scale, recipe, overwrite,
                    gain_correct, create_deviation, write_uncertainty, dtype):
    """One science frame, as a picklable task for any executor."""
    if not overwrite and _up_to_date(out, recipe):
        header = fits.getheader(out)
        return "up to date", header.get("SKYLEVEL", np.nan), header.get("SKYNOISE", np.nan)
    return _calibrate_science(raw_path, out, profile, masters_used, scale, recipe,
                              gain_correct, create_deviation, write_uncertainty, dtype)


def _science_table(rows):
    names = ("raw_file", "output_file", "bias", "dark", "flat", "dark_scale", "sky_level",
             "sky_noise", "status")
    if not rows:
        return Table(names=names, dtype=("U", "U", "U", "U", "U", "f8", "f8", "f8", "U"))
    return Table(rows=rows, names=names)


def _problems_table(problems):
    if not problems:
        return Table(names=("file", "problem"), dtype=("U", "U"))
    return Table(rows=problems, names=("file", "problem"))


def _write_table(table, path):
    temporary = path.with_name(f".{path.name}.part")
    table.write(temporary, format="ascii.ecsv", overwrite=True)
    os.replace(temporary, path)
