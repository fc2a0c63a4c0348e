"""Master bias, dark and flat frames.

Each raw calibration frame goes through the profile's overscan and trim (and, for darks
and flats, the lower masters) with `~ccdproc_ext.calibrate_frame`, then the frames are
combined with `ccdproc_ext.combine`. The default combination is the CCD Data Reduction
Guide's: an average after sigma clipping around the median with a MAD-based deviation.

The master's header lists the files it was made from (``IMCMB001`` ..., as IRAF's
imcombine does), their number (``NCOMBINE``), the method (``COMBMETH``) and
``COMBINED = True``. A flat is normalised to a mean of 1 over its good pixels, its masked
pixels set to 1; the level it was divided by is ``FLATNORM``, and ``FLATMEAN``, the
``norm_value`` of `ccdproc.flat_correct` that calibrated frames are divided with, is the
mean of its good pixels as written: 1 when that mean is 1 to float32's precision (as it
is but for flats of a few pixels), so that frames are divided by the flat as written, in
float32 (see `~ccdproc_ext.MasterFrame.prepare`).

Bad frames: by default a frame that cannot be read or calibrated stops the master with
its error (`~ccdproc_ext.FrameReadError`, `~ccdproc_ext.HeaderError`...), and so does
a frame with a defect the others of its master lack (a light leak, a gradient, a streak,
a band of rows: a `~ccdproc_ext.DataQualityError`, see
`~ccdproc_ext.quality.check_calibration_frames`; groups of 3 frames or more; a frame of
another level or scale is not defective). With ``skip_bad_frames=True`` it is left out
with a `~ccdproc_ext.FrameSkippedWarning`, and listed in the master's header
(``SKIP001 = file``, ``SKIPW001 = why``); a master left without any frame fails. When the
checks would leave out more than a third of the frames they are in doubt: every frame is
kept, with a `~ccdproc_ext.CcdprocExtWarning` that says why. A master made from a single
frame is built, with a `~ccdproc_ext.DataQualityWarning`: nothing can be rejected and its
noise is that of one frame. Levels (a flat's scale, its mean, the master flat's
normalisation) are of finite pixels only: a few NaN never make a level NaN.
"""

import collections
import contextlib
import functools
import itertools
import logging
import os
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.nddata import CCDData
from astropy.stats import mad_std
from ccdproc import ImageFileCollection

from ._allocator import freed_memory_reused
from ._kernels import median_of_all
from .calibrate import calibrate_frame
from .combine import combine
from .exceptions import (
    CalibrationMatchError,
    CcdprocExtError,
    CcdprocExtWarning,
    DataQualityError,
    DataQualityWarning,
    FrameSkippedWarning,
    HeaderError,
)
from .master_frame import MasterFrame
from .outputs import PARTIAL_SUFFIX, write_atomic
from .profiles import get_profile
from .provenance import file_name_of, mark_flat_normalised, mark_master, set_file_name
from .quality import check_calibration_frames, frame_sample

__all__ = ["DEFAULT_COMBINE", "FLAT_MEAN_OF_ONE", "BuiltMaster", "LeftOut", "build_master",
           "make_master_bias", "make_master_dark", "make_master_flat"]

log = logging.getLogger(__name__)

#: How far from 1 the mean of a normalised flat as written may be for its ``FLATMEAN`` to
#: be 1: float32's resolution at 1, more than rounding each pixel to float32 moves the
#: mean by.
FLAT_MEAN_OF_ONE = float(np.finfo(np.float32).eps)

#: Default memory limit of the make_master functions, in bytes.
_MEM_LIMIT = 2e9

#: The default combination of masters: the CCD Data Reduction Guide's choice.
DEFAULT_COMBINE = {
    "method": "average",
    "sigma_clip": True,
    "sigma_clip_low_thresh": 5,
    "sigma_clip_high_thresh": 5,
    "sigma_clip_func": np.ma.median,
    "sigma_clip_dev_func": mad_std,
}



def _frames(frames):
    """Turn paths, CCDData, or a collection into a list of (name, CCDData-or-path)."""
    if isinstance(frames, ImageFileCollection):
        frames = [Path(frames.location or "", f) for f in frames.files]
    if isinstance(frames, str | Path | CCDData):
        frames = [frames]
    items = []
    for i, frame in enumerate(frames):
        if isinstance(frame, CCDData):
            items.append((file_name_of(frame.meta.get("FILENAME", f"frame {i + 1}")), frame))
        else:
            items.append((Path(frame).name, Path(frame)))
    if not items:
        raise CcdprocExtError("no frames to combine")
    return items


def _reason(err, name):
    """The words of an error, without the path of the file ``name`` it starts with."""
    text = str(err)
    head, sep, rest = text.partition(": ")
    if sep and Path(head).name == name:
        return rest
    return text


def _prepare(frames, profile, *, skip_bad_frames=False, check=None, workers=None,
             spill=None, compare_as=None, **calibration):
    """Read and calibrate each frame.

    Returns ``(names, frames, skipped [(name, error)], checked)``. ``check(ccd, name)``,
    if given, raises a `CcdprocExtError` for a calibrated frame that cannot be used;
    what it returns for each frame kept is in ``checked``. With ``compare_as`` (the kind
    of master), the frames are then compared with each other
    (`~ccdproc_ext.quality.check_calibration_frames`) and those that differ from the
    others are bad frames too (`~ccdproc_ext.DataQualityError`). ``workers`` threads read and
    calibrate frames at the same time (numpy releases the GIL while it works on
    pixels); frames are taken, left out and warned about in their order all the same.
    ``spill`` (a `_Spill`) writes the frames that do not fit in memory to temporary
    files: their place in ``frames`` is then taken by the file's path.
    """
    # Frames are combined without their uncertainties: the masters' are not needed. Each
    # master is read once here, and prepared once for all the frames.
    for key in ("master_bias", "master_dark", "master_flat"):
        master = MasterFrame.of(calibration.get(key), profile)
        if master is not None:
            calibration[key] = master.without_uncertainty()

    def calibrated(name, frame):
        # A path is read by calibrate_frame, which lets the raw pixels go after the first
        # step: a frame in the chain holds two frames' worth at most, not three.
        result = calibrate_frame(frame, profile, name=name, **calibration)
        value = None if check is None else check(result, name)
        # The sample for comparing frames is taken here, while the frame is in memory.
        return result, (value, None if compare_as is None else frame_sample(result))

    prepared, names, skipped, checked, samples = [], [], [], [], []
    # Frames left out are warned about once the threads are done: a warning given while
    # another thread is inside warnings.catch_warnings (astropy's reader is, for each
    # file) can end up in that thread's list and be lost (before Python 3.14).
    left_out = []
    workers = _workers(workers, len(frames))
    with ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
        outcomes = _in_order(pool, workers, calibrated, frames)
        try:
            first = None  # the first frame kept: a master is made of frames alike
            for (name, _), outcome in zip(frames, outcomes, strict=True):
                try:
                    frame, (value, sample) = outcome()
                    _check_alike(frame, first, name)
                    if first is None:
                        first = frame
                except CcdprocExtError as err:
                    if not skip_bad_frames:
                        raise
                    skipped.append((name, err))
                    left_out.append(FrameSkippedWarning(f"{name} left out: "
                                                        f"{_reason(err, name)}",
                                                        file=name, error=err))
                    continue
                prepared.append(frame if spill is None else spill.keep(frame, name))
                del frame  # (one spilled is not kept while the next frame is waited for)
                checked.append(value)
                samples.append(sample)
                names.append(name)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    for warning in left_out:
        warnings.warn(warning, stacklevel=5)
    if compare_as is not None:
        _leave_out_deviating(compare_as, names, prepared, checked, samples, skipped,
                             spill, skip_bad_frames, workers)
    if not prepared:
        err = skipped[0][1]
        raise type(err)(f"none of the {len(skipped)} frames could be used: " + "; ".join(
            f"{name}: {_reason(error, name)}" for name, error in skipped))
    return names, prepared, skipped, checked


def _in_order(pool, workers, function, items):
    """A callable giving ``function(*item)`` for each of ``items``, in order; with a
    ``pool``, computed by its ``workers`` threads ahead of the caller.

    At most ``workers`` items are computed ahead, and the next is started when the
    caller comes back for it: calibrated frames wait in memory until they are taken
    (held, or spilled to a file) a few at a time, not all of them until the last is done.
    """
    if pool is None:
        for item in items:
            yield functools.partial(function, *item)
        return
    items = iter(items)
    pending = collections.deque(pool.submit(function, *item)
                                for item in itertools.islice(items, workers))
    while pending:
        yield pending.popleft().result
        pending.extend(pool.submit(function, *item) for item in itertools.islice(items, 1))


def _check_alike(frame, first, name):
    """Frames of one master have the first one's shape and unit (else the combination
    fails): a frame whose section keywords or ``BUNIT`` differ is left out, named."""
    if first is None:
        return
    if frame.shape != first.shape:
        raise CalibrationMatchError(
            f"{name}: {frame.shape[0]}x{frame.shape[1]} pixels after overscan and trim, "
            f"the first frame of its master {first.shape[0]}x{first.shape[1]} (do their "
            "section keywords differ?)")
    if frame.unit != first.unit:
        raise HeaderError(f"{name}: its pixels are in {frame.unit} (BUNIT), those of the "
                          f"first frame of its master in {first.unit}")


def _leave_out_deviating(kind, names, prepared, checked, samples, skipped, spill,
                         skip_bad_frames, workers):
    """Remove, in place, the frames that differ from the others of their master; each
    is a bad frame (`~ccdproc_ext.DataQualityError`): raised, or left out with a
    `~ccdproc_ext.FrameSkippedWarning` and listed in ``skipped``. When the checks are in
    doubt (they would leave out too many), every frame is kept and their note is a
    `~ccdproc_ext.CcdprocExtWarning`, a note of the master like its other warnings."""
    group = check_calibration_frames(samples, names, kind, workers=workers)
    if group.note:
        warnings.warn(CcdprocExtWarning(f"master {kind} from {_first_names(names)}: "
                                        f"{group.note}"), stacklevel=6)
    deviating = group.left_out
    left_out = [(names[index], DataQualityError(f"{names[index]}: {reason}"))
                for index, reason in deviating]
    if left_out and not skip_bad_frames:
        raise left_out[0][1]
    for index, _ in sorted(deviating, reverse=True):
        for kept in (names, prepared, checked, samples, spill.headers if spill else []):
            if kept:
                del kept[index]
    for name, err in left_out:
        skipped.append((name, err))
        warnings.warn(FrameSkippedWarning(f"{name} left out: {_reason(err, name)}",
                                          file=name, error=err), stacklevel=6)


class _Spill:
    """Calibrated frames kept in memory up to ``limit`` bytes, the others written to
    temporary float32 files (with their mask) in a private folder, removed on exit.

    The first frame always stays in memory: the master's header is a copy of its.

    Why frames are held (or spilled) whole rather than calibrated piece by piece as they
    stream into `~ccdproc_ext.combine`: each frame is needed whole before the first
    piece can be combined (its checks against the other frames, a flat's scale, an
    overscan fitted over all rows), so streaming would read and calibrate every frame a
    second time. ``benchmarks/bench_masters.py`` measures the three: holding costs
    nothing more, spilling a write and a read of the calibrated frame, streaming a read
    and a calibration of the raw one, about twice what spilling costs.
    """

    def __init__(self, limit, folder=None):
        self.limit = limit
        self.held = 0
        self.headers = []
        self._stack = contextlib.ExitStack()
        self._parent = folder
        self._folder = None

    def __enter__(self):
        # While a master is made, frames freed are reused by the next (see _allocator).
        self._stack.enter_context(freed_memory_reused())
        return self

    def __exit__(self, *exc_info):
        self._stack.close()
        return False

    def keep(self, frame, name):
        self.headers.append(frame.meta)
        size = frame.data.nbytes + (0 if frame.mask is None else frame.mask.nbytes)
        if not self.headers[1:] or self.held + size <= self.limit:
            self.held += size
            return frame
        if self._folder is None:
            # A hidden ".part" folder: what a killed run leaves, the next one removes
            # (see ccdproc_ext.outputs.remove_partial_files).
            self._folder = Path(self._stack.enter_context(tempfile.TemporaryDirectory(
                prefix=".frames-", suffix=PARTIAL_SUFFIX, dir=self._parent)))
            log.info("calibrated frames beyond %d bytes are kept in %s while combined",
                     self.limit, self._folder)
        path = self._folder / f"{len(self.headers):05d}.fits"
        write_atomic(frame, path, mask=frame.mask is not None)
        return path


def _temporary_dir(temporary_dir, output_file):
    if temporary_dir is not None:
        return temporary_dir
    return None if output_file is None else Path(output_file).parent


def _workers(workers, n_tasks):
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    return max(1, min(workers, n_tasks))


def _combine(names, prepared, kind, combine_options, skipped, workers, spill):
    options = dict(DEFAULT_COMBINE)
    options.update(combine_options or {})
    options.setdefault("dtype", np.float32)
    options.setdefault("workers", workers)
    options.setdefault("mem_limit", spill.limit)
    if len(prepared) == 1:
        warnings.warn(DataQualityWarning(
            f"master {kind} made from a single frame ({names[0]}): nothing can be "
            "rejected and its noise is that of one frame"), stacklevel=5)
    master = combine(prepared, **options)
    not_finite = sum(int(header.get("NNANPIX", 0)) for header in spill.headers)
    method = options["method"] + (" sigma-clipped" if options.get("sigma_clip") else "")
    left_out = tuple(LeftOut(name, err, _reason(err, name)) for name, err in skipped)
    mark_master(master.meta, kind, names, method, not_finite=not_finite,
                skipped=[(item.file, f"{item.kind}: {item.reason}") for item in left_out])
    return BuiltMaster(master, left_out)


def _finish(master, output_file):
    if output_file is not None:
        output_file = Path(output_file)
        set_file_name(master.meta, "FILENAME", output_file.name)
        write_atomic(master, output_file, uncertainty=True, mask=True)
    return master


def make_master_bias(frames, profile="generic", *, combine_options=None, output_file=None,
                     skip_bad_frames=False, workers=None, mem_limit=_MEM_LIMIT,
                     temporary_dir=None, check_frames=True):
    """Combine bias frames into a master bias.

    Parameters
    ----------
    frames : list of paths or `~astropy.nddata.CCDData`, or `~ccdproc.ImageFileCollection`
        The raw bias frames.
    profile : str or `~ccdproc_ext.InstrumentProfile`, optional
        Gives the overscan and trim. Default is ``"generic"``.
    combine_options : dict or None, optional
        Keyword arguments of `ccdproc_ext.combine` replacing the defaults
        (``DEFAULT_COMBINE``).
    output_file : str, `pathlib.Path` or None, optional
        Where to write the master (atomically, with its uncertainty and mask).
    skip_bad_frames : bool, optional
        Leave out the frames that cannot be read or calibrated, each with a
        `~ccdproc_ext.FrameSkippedWarning`, instead of raising. Default is ``False``.
    workers : int or None, optional
        Threads reading and calibrating frames, and combining bands of rows, at the
        same time. Default is ``None``: one per core.
    mem_limit : float, optional
        Memory, in bytes, for the calibrated frames and their combination: half for
        the frames (those beyond it wait in temporary files), half for
        `~ccdproc_ext.combine`. Default is ``2e9``.
    temporary_dir : str, `pathlib.Path` or None, optional
        Where the calibrated frames that do not fit in ``mem_limit`` wait, in a hidden
        folder removed afterwards. Default is ``None``: the folder of ``output_file``
        if given, else the system's (`tempfile.gettempdir`).
    check_frames : bool, optional
        Compare each frame with the others first (groups of 3 frames or more, see
        `~ccdproc_ext.quality.check_calibration_frames`): a frame with structure the
        others lack (a light leak, a gradient, a streak, a band of rows), whatever its
        level, is a bad frame, a `~ccdproc_ext.DataQualityError` (left out with
        ``skip_bad_frames``); checks that would leave out more than a third of the frames
        keep them all, with a `~ccdproc_ext.CcdprocExtWarning`. Default is ``True``.

    Returns
    -------
    `~astropy.nddata.CCDData`
        The master bias, float32, with an uncertainty and a mask.

    Raises
    ------
    CcdprocExtError
        The error of the first bad frame (`~ccdproc_ext.FrameReadError` for a truncated
        file...), or, with ``skip_bad_frames``, when no frame is left.

    Warns
    -----
    DataQualityWarning
        When the master is made from a single frame.
    """
    built = _build("bias", frames, get_profile(profile), combine_options=combine_options,
                   skip_bad_frames=skip_bad_frames, workers=workers, mem_limit=mem_limit,
                   temporary_dir=_temporary_dir(temporary_dir, output_file),
                   check_frames=check_frames)
    return _finish(built.ccd, output_file)


def make_master_dark(frames, profile="generic", *, master_bias=None, combine_options=None,
                     output_file=None, skip_bad_frames=False, workers=None,
                     mem_limit=_MEM_LIMIT, temporary_dir=None, check_frames=True):
    """Combine dark frames of one exposure time into a bias-subtracted master dark.

    Parameters
    ----------
    frames : list of paths or `~astropy.nddata.CCDData`, or `~ccdproc.ImageFileCollection`
        The raw darks, all of one exposure time.
    profile : str or `~ccdproc_ext.InstrumentProfile`, optional
        Default is ``"generic"``.
    master_bias : `~astropy.nddata.CCDData`, path or None, optional
        Subtracted from each dark. Default is ``None`` (darks that include the bias).
    combine_options, output_file, skip_bad_frames, workers, mem_limit, temporary_dir
        As for `make_master_bias`.
    check_frames : bool, optional
        As for `make_master_bias`. Default is ``True``.

    Returns
    -------
    `~astropy.nddata.CCDData`
        The master dark in ADU for its exposure time (written in the profile's exposure
        keyword).
    """
    built = _build("dark", frames, get_profile(profile), master_bias=master_bias,
                   combine_options=combine_options, skip_bad_frames=skip_bad_frames,
                   workers=workers, mem_limit=mem_limit,
                   temporary_dir=_temporary_dir(temporary_dir, output_file),
                   check_frames=check_frames)
    return _finish(built.ccd, output_file)


def make_master_flat(frames, profile="generic", *, master_bias=None, master_dark=None,
                     scale_dark=None, combine_options=None, min_value=0.1, output_file=None,
                     skip_bad_frames=False, workers=None, mem_limit=_MEM_LIMIT,
                     temporary_dir=None, check_frames=True):
    """Combine flat frames of one filter into a normalised master flat.

    Each flat is bias- and dark-corrected (the dark scaled by exposure time when the
    exposures differ and scaling is allowed), the flats are combined with inverse-median
    scaling, and the result is divided by its mean over its good pixels (written as
    ``FLATNORM``); masked pixels are set to 1, and the mean of the pixels as written is
    ``FLATMEAN`` (1 when it is 1 to float32's precision): a frame calibrated with this
    flat is
    ``ccdproc.flat_correct(frame, flat, norm_value=flat.header["FLATMEAN"])``.

    Parameters
    ----------
    frames : list of paths or `~astropy.nddata.CCDData`, or `~ccdproc.ImageFileCollection`
        The raw flats of one filter.
    profile : str or `~ccdproc_ext.InstrumentProfile`, optional
        Default is ``"generic"``.
    master_bias, master_dark : `~astropy.nddata.CCDData`, path or None, optional
        Lower masters. Default is ``None``.
    scale_dark : bool or None, optional
        See `~ccdproc_ext.calibrate_frame`.
    combine_options, output_file, skip_bad_frames, workers, check_frames
        As for `make_master_bias`; the default adds ``scale`` (inverse median, of the
        finite pixels). The flats are compared with each other whatever their levels (a
        flat at half the illumination of the others is kept).
    min_value : float or None, optional
        Pixels of the normalised flat below this (zero, negative, or nearly so) are
        masked, and counted in ``NLOWPIX``. Default is 0.1.

    Returns
    -------
    `~astropy.nddata.CCDData`
        The master flat, mean 1 over its good pixels, float32, with uncertainty and mask.

    Raises
    ------
    DataQualityError
        If a flat frame's mean level after bias and dark subtraction is zero or negative
        (an unlit frame; with ``skip_bad_frames`` it is left out), or the combined flat's
        is.

    Warns
    -----
    DataQualityWarning
        When pixels are below ``min_value`` (masked), or the flat is a single frame.
    """
    built = _build("flat", frames, get_profile(profile), master_bias=master_bias,
                   master_dark=master_dark, scale_dark=scale_dark,
                   combine_options=combine_options, min_value=min_value,
                   skip_bad_frames=skip_bad_frames, workers=workers, mem_limit=mem_limit,
                   temporary_dir=_temporary_dir(temporary_dir, output_file),
                   check_frames=check_frames)
    return _finish(built.ccd, output_file)


def build_master(kind, frames, profile, *, master_bias=None, master_dark=None,
                 scale_dark=None, combine_options=None, skip_bad_frames=False, workers=None,
                 temporary_dir=None):
    """A master of ``kind`` and the frames it left out, not written.

    What `make_master_bias`, `make_master_dark` and `make_master_flat` make, with the
    frames left out returned beside it rather than read back from its header.

    Parameters
    ----------
    kind : {"bias", "dark", "flat"}
        The kind of master.
    frames : list of paths or `~astropy.nddata.CCDData`
        Its raw frames.
    profile : `~ccdproc_ext.InstrumentProfile`
        The camera.
    master_bias, master_dark, scale_dark, combine_options, skip_bad_frames, workers, \
temporary_dir
        As for `make_master_flat` (a bias takes no lower master, a dark no master dark
        and no ``scale_dark``). Default is ``None`` (``False`` for ``skip_bad_frames``).

    Returns
    -------
    `BuiltMaster`
    """
    lower = {"bias": {}, "dark": {"master_bias": master_bias},
             "flat": {"master_bias": master_bias, "master_dark": master_dark,
                      "scale_dark": scale_dark}}[kind]
    return _build(kind, frames, profile, combine_options=combine_options,
                  skip_bad_frames=skip_bad_frames, workers=workers, mem_limit=_MEM_LIMIT,
                  temporary_dir=temporary_dir, check_frames=True, **lower)


def _build(kind, frames, profile, *, combine_options, skip_bad_frames, workers, mem_limit,
           temporary_dir, check_frames, min_value=0.1, **lower):
    """The master of ``kind`` (``lower``: its lower masters, and a flat's
    ``scale_dark``), not written: a `BuiltMaster`."""
    items = _frames(frames)
    for key in ("master_bias", "master_dark"):
        if key in lower:
            lower[key] = MasterFrame.of(lower[key], profile)
    with _Spill(mem_limit / 2, temporary_dir) as spill:
        names, prepared, skipped, checked = _prepare(
            items, profile, skip_bad_frames=skip_bad_frames,
            check=_check_flat if kind == "flat" else None, workers=workers, spill=spill,
            compare_as=kind if check_frames else None, **lower)
        if kind == "dark":
            exposures = {profile.exposure_time(header, path=name) for name, header in
                         zip(names, spill.headers, strict=True)}
            if len(exposures) > 1:
                raise CalibrationMatchError(f"darks of several exposure times "
                                            f"({sorted(exposures)} s) cannot be combined "
                                            "into one master dark")
        if kind == "flat":
            filters = {profile.filter_name(header) for header in spill.headers}
            if len(filters) > 1:
                raise CalibrationMatchError(f"flats of several filters "
                                            f"({', '.join(map(str, filters))}) cannot be "
                                            "combined into one master flat")
            # Flats are scaled by their inverse median (measured by _check_flat, in the
            # threads that calibrate them, instead of by combine one after the other).
            combine_options = {"scale": np.array(checked), **(combine_options or {})}
        built = _combine(names, prepared, kind, combine_options, skipped, workers, spill)
    if kind == "flat":
        _normalise_flat(built.ccd, names, min_value)
    return built


def _normalise_flat(master, names, min_value):
    """Normalise a combined flat, in place, to a mean of 1 over its good pixels.

    Pixels masked by the combination, not finite, or (with ``min_value``) below
    ``min_value`` of the mean are masked and set to 1. The mean is taken over the other
    pixels, and written in ``FLATMEAN`` as the file holds them (float32), or 1 when it
    is within float32's resolution of 1 (`FLAT_MEAN_OF_ONE`): the frames are divided by
    the flat divided by ``FLATMEAN``, exactly what
    ``ccdproc.flat_correct(frame, flat, norm_value=FLATMEAN)`` does with the flat as
    read from its file. ``FLATNORM`` is the level the combined flat was divided by.

    A mean that is 1 to float32's precision differs from 1 by less than the rounding
    of one pixel to float32; dividing by 1 rather than by it changes a calibrated pixel
    by one unit in the last place at most, and lets a float32 frame be divided by the
    flat as written, in float32: `ccdproc.flat_correct`'s own float64 result to the bit
    (`~ccdproc_ext.MasterFrame.prepare`), without the float64 copies of the frame and
    the flat that a float64 level makes (numpy's promotion).
    """
    what = f"master flat from {_first_names(names)}"
    good = ~master.mask if master.mask is not None else np.ones(master.shape, bool)
    good &= np.isfinite(master.data)
    norm = float(np.mean(master.data[good], dtype=np.float64)) if good.any() else np.nan
    if not np.isfinite(norm) or norm <= 0:
        raise DataQualityError(f"{what}: its mean level is {norm:g}, a flat must be "
                               "positive")
    data = (master.data / norm).astype(np.float32)
    low = np.zeros(master.shape, bool)
    if min_value is not None:
        # NaN compares False: not-finite pixels are masked through ~good.
        low = (data < min_value) & good
    n_low = int(np.count_nonzero(low))
    if n_low:
        # The level of the flat is that of the pixels kept, not of those masked.
        if not (good & ~low).any():
            raise DataQualityError(f"{what}: every pixel is below {min_value:g} of the mean")
        norm = float(np.mean(master.data[good & ~low], dtype=np.float64))
        data = (master.data / norm).astype(np.float32)
    bad = ~good | low
    if bad.any():
        data[bad] = 1.0
        master.mask = bad if master.mask is None else (master.mask | bad)
    master.data = data
    if master.uncertainty is not None:
        master.uncertainty.array = (master.uncertainty.array / norm).astype(np.float32)
    mean = float(np.mean(data[~bad], dtype=np.float64))
    if abs(mean - 1) <= FLAT_MEAN_OF_ONE:
        mean = 1.0
    mark_flat_normalised(master.meta, norm, mean, min_value, n_low)
    if min_value is not None:
        if n_low:
            warnings.warn(DataQualityWarning(
                f"master flat from {names[0]}{' ...' if len(names) > 1 else ''}: {n_low} "
                f"pixel(s) ({n_low / master.data.size:.2%}) are below {min_value:g} of the "
                "mean (zero, negative or nearly so); they are masked"), stacklevel=4)


def _first_names(names):
    """The first three of ``names``, for a message about a master."""
    return ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")


def _check_flat(ccd, name):
    """A flat frame must be lit: its mean level after bias and dark must be positive.

    Returns its scale factor: the inverse of its median. Both are of finite pixels
    only: a pixel that is NaN (masked in a lower master, for one) says nothing of the
    level of the frame, and must not make it NaN.
    """
    data = ccd.data
    finite = np.isfinite(data)
    good = finite if ccd.mask is None else finite & ~ccd.mask
    if not good.any():
        raise DataQualityError(f"{name}: every pixel is masked (saturated or not finite)")
    # (the pixels themselves, not a copy of them, when every one is good)
    level = float(np.mean(data if good.all() else data[good], dtype=np.float64))
    if level <= 0:
        raise DataQualityError(f"{name}: its mean level after bias and dark subtraction is "
                               f"{level:g}; a flat must be positive")
    # The Guide's scale: 1 / np.median(data), of the finite pixels (all: the same number)
    return 1.0 / median_of_all(data if finite.all() else data[finite])


@dataclass(frozen=True)
class LeftOut:
    """A frame left out of a master: its ``file`` (name), the ``error`` that says why,
    and the ``reason`` in words, without the file's name."""

    file: str
    error: CcdprocExtError
    reason: str

    @property
    def kind(self):
        """The name of the error's class, e.g. ``"FrameReadError"``."""
        return type(self.error).__name__


@dataclass(frozen=True)
class BuiltMaster:
    """A master as `build_master` returns it: the frame (``ccd``, a
    `~astropy.nddata.CCDData`) and the frames it left out (``left_out``, `LeftOut`
    records, also written in its header as ``SKIP001``, ``SKIPW001`` ... for people)."""

    ccd: CCDData
    left_out: tuple = ()
