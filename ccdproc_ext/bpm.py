"""Bad-pixel masks: the pixels of a detector that no calibration can save.

`make_bad_pixel_mask` marks hot pixels, whose dark current (the master dark per second)
is far above the median in units of its robust noise (`hot_pixels`), and dead or low
pixels, below half their neighbourhood in the master flat (`low_flat_pixels`).
`~ccdproc_ext.reduce_night` builds one per pair of master dark and flat its science
frames use (``masters/bpm_<dark>_<flat>.fits``), or reads a user's file
(`user_bad_pixel_mask`, `load_bad_pixel_mask`). A mask file holds one bit per reason:
`BPM_HOT`, `BPM_LOW`, `BPM_USER`.

In a night (``bad_pixels="auto"`` or a file), each mask is written as a master
(``masters/bpm_<its name>.fits`` for the user's) and made again only when its inputs
change. The plan's ``bpm`` column names the mask of each science frame, so that a dry run
shows it too.
"""

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import astropy.units as u
import bottleneck as bn
import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData

from ._raw_parts import first_image
from .exceptions import CalibrationMatchError, CcdprocExtError, DataQualityError, FrameReadError
from .log import without_path
from .master_frame import MasterFacts, MasterFrame, extensions_of, load_master
from .outputs import file_stamp, inside, output_name, recipe, up_to_date, write_atomic
from .provenance import mark_bad_pixel_mask
from .quality import median_and_mad_std
from .raw import file_checksum

__all__ = [
    "BPM_HOT",
    "BPM_LOW",
    "BPM_USER",
    "HOT_MIN_RATE",
    "HOT_SIGMA",
    "LOW_BOX",
    "LOW_FRACTION",
    "bad_pixel_mask_task",
    "build_bad_pixel_masks",
    "hot_pixels",
    "load_bad_pixel_mask",
    "low_flat_pixels",
    "make_bad_pixel_mask",
    "plan_bad_pixel_masks",
    "quality_options",
    "user_bad_pixel_mask",
]

#: Bits of a bad-pixel mask file: hot in the master dark, low in the master flat.
BPM_HOT = 1
BPM_LOW = 2
#: ... and bad in a mask file of the user's.
BPM_USER = 4

#: Pixels whose dark current is above the median by this many robust sigma are hot.
HOT_SIGMA = 5.0
#: ... and by at least this rate (ADU/s): a dark without noise makes no pixel hot.
HOT_MIN_RATE = 0.01
#: Pixels of a master flat below this fraction of their neighbourhood's median are low.
LOW_FRACTION = 0.5
#: Side of the boxes whose medians make a flat's neighbourhood level, in pixels.
LOW_BOX = 16


def hot_pixels(dark, exposure=None, *, sigma=HOT_SIGMA, min_rate=HOT_MIN_RATE):
    """The hot pixels of a master dark: dark current far above the median.

    Parameters
    ----------
    dark : `~astropy.nddata.CCDData` or array
        A bias-subtracted master dark.
    exposure : float or None, optional
        Its exposure in seconds: the rule is applied to the dark current per second.
        ``None`` (or 0) applies it to the dark as it is, ``min_rate`` then per frame.
    sigma : float, optional
        A pixel is hot when its rate is above the median by more than ``sigma`` times the
        robust (MAD) standard deviation of the rates, ...
    min_rate : float, optional
        ... and by more than ``min_rate`` (ADU/s).

    Returns
    -------
    bool `numpy.ndarray`
    """
    rate = np.array(getattr(dark, "data", dark), dtype=np.float64)  # (a copy)
    if exposure:
        rate /= exposure
    good = np.isfinite(rate)
    mask = getattr(dark, "mask", None)
    if mask is not None:
        good &= ~np.asarray(mask, bool)
    if not good.any():
        return np.zeros(rate.shape, bool)
    values = rate.ravel().copy() if good.all() else rate[good]
    median, noise = (float(value) for value in median_and_mad_std(values))
    threshold = median + max(sigma * noise, min_rate)
    with np.errstate(invalid="ignore"):
        return good & (rate > threshold)


def low_flat_pixels(flat, *, fraction=LOW_FRACTION, box=LOW_BOX):
    """The dead and low pixels of a master flat: below ``fraction`` of the median of
    their neighbourhood (the box of ``box`` x ``box`` pixels they fall in), not finite,
    or masked in the flat (below its minimum)."""
    data = np.asarray(getattr(flat, "data", flat))
    bad = ~np.isfinite(data)
    mask = getattr(flat, "mask", None)
    if mask is not None:
        bad |= np.asarray(mask, bool)
    # Each box's limit (in float64), compared with its pixels a band of boxes at a time.
    limits = fraction * _box_medians(data, bad, box)
    low = bad.copy()
    with np.errstate(invalid="ignore"):
        for i, band_limits in enumerate(limits):
            rows = slice(i * box, (i + 1) * box)
            low[rows] |= data[rows] < np.repeat(band_limits, box)[:data.shape[1]]
    return low


def _box_medians(data, bad, box):
    """The median of each box of ``box`` x ``box`` pixels of ``data`` (in float64), the
    ``bad`` pixels left out (NaN for a box of bad pixels only), as `numpy.nanmedian`
    gives it (bottleneck's, six times faster); a band of boxes at a time."""
    ny, nx = data.shape
    by, bx = -(-ny // box), -(-nx // box)
    medians = np.empty((by, bx))
    band = np.empty((box, bx * box))
    for i in range(by):
        rows = slice(i * box, min(ny, (i + 1) * box))
        band.fill(np.nan)
        within = band[:rows.stop - rows.start, :nx]
        within[...] = data[rows]
        within[bad[rows]] = np.nan
        blocks = band.reshape(box, bx, box).swapaxes(0, 1).reshape(bx, box * box)
        medians[i] = bn.nanmedian(blocks, axis=1)
    return medians


def make_bad_pixel_mask(master_dark=None, master_flat=None, *, dark_exposure=None,
                        hot_sigma=HOT_SIGMA, hot_min_rate=HOT_MIN_RATE,
                        low_fraction=LOW_FRACTION, dark_name=None, flat_name=None):
    """A bad-pixel mask from a night's master dark and master flat.

    Parameters
    ----------
    master_dark, master_flat : `~astropy.nddata.CCDData` or None
        The masters (at least one): hot pixels come from the dark (`hot_pixels`), low
        and dead ones from the flat (`low_flat_pixels`).
    dark_exposure : float or None, optional
        The dark's exposure time (s): hot pixels are judged on the rate.
    hot_sigma, hot_min_rate, low_fraction : float, optional
        The thresholds of `hot_pixels` and `low_flat_pixels`.
    dark_name, flat_name : str or None, optional
        The masters' file names, written in the header (``BPMDARK``, ``BPMFLAT``).

    Returns
    -------
    `~astropy.nddata.CCDData`
        Unsigned 8-bit, unit ``""``: `BPM_HOT` (1) on hot pixels, `BPM_LOW` (2) on low
        ones, 0 on good ones; the header says how it was made (``NHOTPIX``, ``NLOWFLAT``,
        ``BPMHOTSG``, ``BPMHOTMR``, ``BPMLOWFR``, ``BPMB1``, ``BPMB2``).
    """
    if master_dark is None and master_flat is None:
        raise DataQualityError("a bad-pixel mask needs a master dark or a master flat")
    shapes = {m.shape for m in (master_dark, master_flat) if m is not None}
    if len(shapes) > 1:
        raise CalibrationMatchError(f"the master dark {dark_name} and flat {flat_name} "
                                    "differ in shape: no bad-pixel mask can serve both")
    bits = np.zeros(shapes.pop(), np.uint8)
    n_hot = n_low = None
    if master_dark is not None:
        hot = hot_pixels(master_dark, dark_exposure, sigma=hot_sigma, min_rate=hot_min_rate)
        bits[hot] |= BPM_HOT
        n_hot = int(np.count_nonzero(hot))
    if master_flat is not None:
        low = low_flat_pixels(master_flat, fraction=low_fraction)
        bits[low] |= BPM_LOW
        n_low = int(np.count_nonzero(low))
    header = fits.Header()
    mark_bad_pixel_mask(header, dark=dark_name, flat=flat_name, n_hot=n_hot, n_low=n_low,
                        hot_sigma=hot_sigma, hot_min_rate=hot_min_rate,
                        dark_exposure=dark_exposure, low_fraction=low_fraction)
    return CCDData(bits, unit=u.dimensionless_unscaled, meta=header)


def user_bad_pixel_mask(path):
    """A user's mask file (non-zero where bad, see `load_bad_pixel_mask`) as a bad-pixel
    mask of ccdproc_ext: `BPM_USER` (4) on its bad pixels, ``BPMUSER`` naming the file."""
    values = load_bad_pixel_mask(path)
    header = fits.Header()
    mark_bad_pixel_mask(header, user=Path(path).name, n_user=int(np.count_nonzero(values)))
    return CCDData(np.where(values != 0, BPM_USER, 0).astype(np.uint8),
                   unit=u.dimensionless_unscaled, meta=header)


def load_bad_pixel_mask(path):
    """The bad pixels of a mask file: the first image in it, non-zero where bad.

    Returns
    -------
    `numpy.ndarray`
        The mask as stored (unsigned 8-bit when it fits): a bad-pixel mask of
        ccdproc_ext keeps its `BPM_HOT` and `BPM_LOW` bits.

    Raises
    ------
    FrameReadError
        If the file cannot be read or holds no image.
    """
    data = np.asarray(first_image(path, what="bad-pixel mask"))
    bad = ~np.isfinite(data) if data.dtype.kind == "f" else np.zeros(data.shape, bool)
    values = np.where(bad, 1, data)
    if values.min() >= 0 and values.max() <= 255 and np.all(values == np.rint(values)):
        return values.astype(np.uint8)
    return (values != 0).astype(np.uint8)

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


def build_bad_pixel_masks(plan, masters, options, log, *, executor=None):
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
    executor : `concurrent.futures.Executor` or None, optional
        Where the masks are made: each is a `bad_pixel_mask_task` submitted to it, which
        reads its master dark and flat there, and only its facts come back
        (`~ccdproc_ext.master_frame.MasterFacts`). Default is ``None``: here, in threads.
    """
    if options.bad_pixels is None:
        return
    to_make = _masks_to_make(plan, masters, options, log)
    if executor is not None:
        # Masks up to date are told here from their headers and checksums, not submitted.
        made = [_found_up_to_date(path, lower, options) for path, lower, _ in
                to_make.values()]
        futures = [None if found is not None else executor.submit(
            bad_pixel_mask_task, path, _lower_files(used_by[0], masters), options)
            for found, (path, _, used_by) in zip(made, to_make.values(), strict=True)]
        made = [found if future is None else future.result()
                for found, future in zip(made, futures, strict=True)]
    else:
        # The masks are made at the same time (numpy's medians release the GIL).
        workers = min(len(to_make), (os.cpu_count() or 1) if options.workers is None
                      else int(options.workers))
        with ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
            made = list((pool.map if pool else map)(
                lambda job: _mask_or_error(job[0], job[1], options), to_make.values()))
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


def bad_pixel_mask_task(path, lower, options):
    """Make (or find up to date) one bad-pixel mask where a task runs: a worker of an
    executor.

    Parameters
    ----------
    path : `pathlib.Path`
        The mask's file.
    lower : dict
        ``kind -> (path, checksum)`` of its master dark and flat, read here.
    options
        The night's settings.

    Returns
    -------
    `~ccdproc_ext.master_frame.MasterFacts` or `~ccdproc_ext.CcdprocExtError`
        The mask made, or why it could not be.
    """
    masters = {} if isinstance(options.bad_pixels, Path) else {  # the user's: not needed
        kind: load_master(Path(file), options.profile, checksum=checksum).without_uncertainty()
        for kind, (file, checksum) in lower.items()}
    made = _mask_or_error(path, masters, options)
    return made if isinstance(made, CcdprocExtError) else MasterFacts.of(made)


def _mask_or_error(path, lower, options):
    """`_bad_pixel_mask`, or the package's error that kept it from being made."""
    try:
        return _bad_pixel_mask(path, lower, options)
    except CcdprocExtError as err:  # said by the caller, in order
        return err


def _found_up_to_date(path, lower, options):
    """The `~ccdproc_ext.master_frame.MasterFacts` of a mask whose file is up to date
    (its recipe from the checksums of ``lower``), or ``None``."""
    if options.overwrite or not up_to_date(path, _mask_recipe(lower, options)):
        return None
    return MasterFacts(path.name, file_checksum(path)[:16])


def _lower_files(pair, masters):
    """``kind -> (path, checksum)`` of the master dark and flat of ``pair``."""
    return {kind: (str(masters.path(kind, name)), masters.built[name].checksum)
            for kind, name in zip(("dark", "flat"), pair, strict=True) if name}


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
        if any(extensions_of(master) for master in lower.values()):
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
    mask_recipe = _mask_recipe(lower, options)
    if isinstance(options.bad_pixels, Path):
        if options.overwrite or not up_to_date(path, mask_recipe):
            _write_bpm(user_bad_pixel_mask(options.bad_pixels), path, mask_recipe)
        return MasterFrame.of(path, options.profile)
    dark, flat = lower.get("dark"), lower.get("flat")
    if options.overwrite or not up_to_date(path, mask_recipe):
        mask = make_bad_pixel_mask(
            None if dark is None else dark.ccd, None if flat is None else flat.ccd,
            dark_exposure=None if dark is None else dark.exposure,
            dark_name=None if dark is None else dark.name,
            flat_name=None if flat is None else flat.name)
        _write_bpm(mask, path, mask_recipe)
    return MasterFrame.of(path, options.profile)


def _mask_recipe(lower, options):
    """The recipe of a mask: the user's file, or the checksums of its master dark and
    flat (``lower``, ``kind -> master``) and the thresholds."""
    if isinstance(options.bad_pixels, Path):
        return recipe("bpm", file_stamp(options.bad_pixels))
    return recipe("bpm", {k: m.checksum for k, m in lower.items()}, HOT_SIGMA,
                  HOT_MIN_RATE, LOW_FRACTION, LOW_BOX)


def _write_bpm(mask, path, mask_recipe):
    mask.meta["RECIPE"] = (mask_recipe, "hash of the inputs and settings")
    mask.meta["FILENAME"] = path.name
    write_atomic(mask, path, dtype=np.uint8)
