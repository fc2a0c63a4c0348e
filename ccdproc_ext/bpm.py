"""Bad-pixel masks: making them for a night.

`reduce_night` masks the bad pixels of its science frames with one mask per pair of
master dark and flat they use (``bad_pixels="auto"``: the hot pixels of the dark, the low
and dead pixels of the flat, `~ccdproc_ext.quality.make_bad_pixel_mask`), or with the
user's own mask file. Each mask is written as a master, ``masters/bpm_<dark>_<flat>.fits``
(``masters/bpm_<its name>.fits`` for the user's), and made again only when its inputs
change. The plan's ``bpm`` column names the mask of each science frame, so that a dry run
shows it too.
"""

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .exceptions import CcdprocExtError, FrameReadError
from .extensions import MultiMaster
from .log import without_path
from .masters import MasterFrame
from .outputs import file_stamp, inside, output_name, recipe, up_to_date, write_atomic
from .quality import (
    HOT_MIN_RATE,
    HOT_SIGMA,
    LOW_BOX,
    LOW_FRACTION,
    make_bad_pixel_mask,
    user_bad_pixel_mask,
)

__all__ = ["build_bad_pixel_masks", "plan_bad_pixel_masks", "quality_options"]


def quality_options(bad_pixels, cosmic_rays):
    """``bad_pixels`` and ``cosmic_rays`` of `~ccdproc_ext.reduce_night`, checked before
    any work.

    Parameters
    ----------
    bad_pixels : "auto", str, `pathlib.Path` or None
        As `~ccdproc_ext.reduce_night` takes it.
    cosmic_rays : bool or "clean"
        As `~ccdproc_ext.reduce_night` takes it.

    Returns
    -------
    bad_pixels : "auto", `pathlib.Path` or None
        The mask file resolved.
    cosmic_rays : bool or "clean"

    Raises
    ------
    CcdprocExtError
        A value that is none of those.
    FrameReadError
        A mask file that does not exist.
    """
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


def plan_bad_pixel_masks(plan, bad_pixels):
    """Fill the plan's ``bpm`` column, in place: the mask each science frame will get.

    Parameters
    ----------
    plan : `~astropy.table.Table`
        The night's plan (`~ccdproc_ext.build_plan`).
    bad_pixels : "auto", `pathlib.Path` or None
        As `quality_options` returns it.
    """
    plan["bpm"] = [
        (_bpm_name(str(row["dark"]), str(row["flat"]), bad_pixels) or "")
        if row["type"] == "science" and row["status"] == "ok" else ""
        for row in plan]


def build_bad_pixel_masks(plan, masters, options, log):
    """The bad-pixel mask of each (dark, flat) pair the science frames use, or the user's
    mask file, written as a master (``masters/bpm_*.fits``).

    Parameters
    ----------
    plan : `~astropy.table.Table`
        The night's plan.
    masters : `~ccdproc_ext.night_masters.NightMasters`
        The night's masters; each mask made is added to them (``built``, ``paths`` and
        ``bpm_of``, the mask of each (dark, flat) pair).
    options
        The night's settings (``bad_pixels``, ``overwrite``, ``strict``, ``workers``,
        ``profile``).
    log : `~ccdproc_ext.log.NightLog`
        Where a mask that cannot be made is noted (raised, in strict mode).
    """
    if options.bad_pixels is None:
        return
    to_make = _masks_to_make(plan, masters, options, log)

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
            log.note(f"masters/{path.name}", type(mask).__name__,
                     f"no bad-pixel mask: {without_path(mask)}")
            continue
        masters.built[name] = mask
        masters.paths[("bpm", name)] = path
        masters.bpm_of.update(dict.fromkeys(used_by, name))


def _masks_to_make(plan, masters, options, log):
    """``name -> (path, lower masters, (dark, flat) pairs)`` of the masks to make."""
    pairs = dict.fromkeys((row["dark"], row["flat"]) for row in plan
                          if row["type"] == "science" and row["status"] == "ok")
    folder = log.output_dir / "masters"
    to_make = {}
    for dark, flat in pairs:
        lower = {k: masters.built.get(v) for k, v in (("dark", dark), ("flat", flat)) if v}
        if any(master is None for master in lower.values()):
            continue  # a master not built: its science frames are problems already
        name = _bpm_name(dark, flat, options.bad_pixels)
        if name is None:
            continue  # no dark nor flat to find bad pixels in
        if any(isinstance(master, MultiMaster) for master in lower.values()):
            log.note(f"masters/{name}.fits", "CcdprocExtWarning", "no bad-pixel mask: "
                     "not made for multi-extension frames (their masters' masks are used)")
            continue
        path = inside(folder / f"{name}.fits", folder)
        to_make.setdefault(name, (path, lower, []))[2].append((dark, flat))
    return to_make


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


def _safe_stem(file_name):
    stem = output_name(file_name, set())[:-len(".fits")]
    return stem or "user"


def _bad_pixel_mask(path, lower, options):
    """Make (or find up to date) one bad-pixel mask; returns it as a `MasterFrame`."""
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
