"""Master bias, dark and flat frames.

Each raw calibration frame goes through the profile's overscan and trim (and, for darks
and flats, the lower masters) with `~ccdproc_ext.calibrate_frame`, then the frames are
combined with `ccdproc_ext.combine`. The default combination is the CCD Data Reduction
Guide's: an average after sigma clipping around the median with a MAD-based deviation.

The master's header lists the files it was made from (``IMCMB001`` ..., as IRAF's
imcombine does), their number (``NCOMBINE``), the method (``COMBMETH``) and
``COMBINED = True``. A flat is normalised to a mean of 1 over its good pixels, its masked
pixels set to 1; the level it was divided by is ``FLATNORM``, and the mean of its good
pixels as written is ``FLATMEAN``, the ``norm_value`` of `ccdproc.flat_correct` that
calibrated frames were divided with.

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
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.nddata import CCDData
from astropy.stats import mad_std
from astropy.wcs import FITSFixedWarning

from ._allocator import freed_memory_reused
from ._kernels import median_of_all
from ._warnings import ignoring
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
from .outputs import PARTIAL_SUFFIX, write_atomic
from .profiles import get_profile
from .provenance import file_name_of, mark_flat_normalised, mark_master, set_file_name
from .quality import check_calibration_frames, frame_sample
from .raw import file_checksum, header_unit, read_header

# Import order: calibrate.py imports MasterFrame from here at module level; this module
# uses calibrate_frame only inside `_prepare`, where it is imported, so that neither
# module needs the other half-built.

__all__ = ["DEFAULT_COMBINE", "MasterFrame", "make_master_bias", "make_master_dark",
           "make_master_flat"]

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class MasterFrame:
    """A master calibration frame, with the name and checksum recorded in provenance.

    `MasterFrame.of` is the one way a master becomes one (from a path, a
    `~astropy.nddata.CCDData` or a `MasterFrame`); `prepare` computes once what
    calibrating with it needs. `~ccdproc_ext.calibrate_frame` accepts any of the three.
    """

    ccd: CCDData
    name: str
    checksum: str = ""
    exposure: float | None = None
    #: Factor the dark was already scaled by (see `scaled`).
    scale: float = 1.0

    @classmethod
    def of(cls, master, profile=None, *, path=None, checksum=None):
        """``master`` as a `MasterFrame`; ``None`` stays ``None``, a `MasterFrame` itself.

        Parameters
        ----------
        master : path, `~astropy.nddata.CCDData`, `MasterFrame` or None
            A path is read (any FITS image; the unit from ``BUNIT``, else the profile's)
            and its checksum (BLAKE2b, first 16 hex) computed, unless given.
        profile : `~ccdproc_ext.InstrumentProfile` or None, optional
            Reads the exposure time (a dark's) and the default unit.
        path : str, `pathlib.Path` or None, optional
            For a `~astropy.nddata.CCDData`: the file it was written to, which names it and
            gives its checksum. Default: named by its ``FILENAME`` card, no checksum.
        checksum : str or None, optional
            The file's checksum when the caller knows it already (spares reading the
            file twice).
        """
        if master is None or isinstance(master, MasterFrame):
            return master
        if isinstance(master, CCDData):
            path = None if path is None else Path(path)
            name = path.name if path is not None else \
                str(master.meta.get("FILENAME", "in-memory CCDData"))
            if checksum is None and path is not None:
                checksum = file_checksum(path)[:16]
            return cls(ccd=master, name=name, checksum=checksum or "",
                       exposure=_exposure(master.meta, profile, path or name))
        path = Path(master)
        unit = header_unit(read_header(path), profile.unit if profile else "adu", path=path)
        # astropy.wcs notes DATE-OBS -> MJD-OBS; a master has no WCS to speak of.
        with ignoring(FITSFixedWarning):
            ccd = CCDData.read(path, unit=unit)
        ccd.data = ccd.data.astype(np.float32, copy=False)
        if checksum is None:
            checksum = file_checksum(path)[:16]
        return cls(ccd=ccd, name=path.name, checksum=checksum,
                   exposure=_exposure(ccd.meta, profile, path))

    @classmethod
    def load(cls, path, profile=None, *, checksum=None):
        """The master written at ``path``: `MasterFrame.of` for a file."""
        return cls.of(Path(path), profile, checksum=checksum)

    def scaled(self, factor):
        """This dark multiplied by ``factor``, once for every frame of one exposure time.

        The multiplication is `astropy.nddata.CCDData.multiply`, in the master's own type
        (float32 for ccdproc_ext's masters); the result's exposure is scaled too, so it is
        subtracted as it is (``ccdproc.subtract_dark(..., scale=False)``), and its `scale`
        is the factor written in ``DARKSCL``. Asked again for the same factor, the same
        object is returned.
        """
        factor = float(factor)
        if factor == 1.0:
            return self
        with _PREPARE_LOCK:
            cached = self._prepared.get(("scaled", factor))
        if cached is None:
            ccd = self.ccd.multiply(factor)
            cached = MasterFrame(ccd=ccd, name=self.name, checksum=self.checksum,
                                 exposure=None if self.exposure is None
                                 else self.exposure * factor,
                                 scale=self.scale * factor)
            with _PREPARE_LOCK:
                cached = self._prepared.setdefault(("scaled", factor), cached)
        return cached

    def without_uncertainty(self):
        """The same master without uncertainty, for frames calibrated without one.

        Its mask is kept when it masks any pixel (those pixels are masked in every frame
        calibrated with it) and dropped otherwise.
        """
        mask = self.ccd.mask
        keep_mask = mask is not None and bool(np.any(mask))
        if self.ccd.uncertainty is None and (mask is None or keep_mask):
            return self
        ccd = CCDData(self.ccd.data, unit=self.ccd.unit, meta=self.ccd.meta,
                      mask=mask if keep_mask else None)
        return MasterFrame(ccd=ccd, name=self.name, checksum=self.checksum,
                           exposure=self.exposure, scale=self.scale)

    def prepare(self, dtype=np.float32, *, flat=False, min_value=None):
        """What ccdproc's functions are given to calibrate with this master, made once.

        Parameters
        ----------
        dtype : numpy dtype, optional
            The pixel type of the frames calibrated. Default is ``float32``.
        flat : bool, optional
            This master is a flat: it is normalised (see below). Default is ``False``.
        min_value : float or None, optional
            For a flat: ``min_value`` of `ccdproc.flat_correct`, the value pixels of the
            flat below it are raised to before normalising. Default is ``None``.

        Returns
        -------
        `~astropy.nddata.CCDData`
            For a bias or dark, the master with its pixels in ``dtype``: the ``master``
            of `ccdproc.subtract_bias` or `ccdproc.subtract_dark`. For a flat, the flat
            that `ccdproc.flat_correct` divides a frame by: values below ``min_value``
            raised to it, divided by its ``FLATMEAN`` card (a master flat of
            ccdproc_ext: the mean of its good pixels as written), else by the mean of its
            good pixels, else (none masked) by its mean; masked pixels set to 1. Given to
            ``ccdproc.flat_correct(frame, prepared, norm_value=1)`` it gives, to the bit,
            ``ccdproc.flat_correct(frame, flat, min_value, norm_value)``: once per
            master, not once per frame.
            The same object is returned for the same arguments: do not change it.
        """
        key = ("flat", min_value, np.dtype(dtype)) if flat else ("data", np.dtype(dtype))
        with _PREPARE_LOCK:
            prepared = self._prepared.get(key)
        if prepared is None:
            prepared = self._normalised(dtype, min_value) if flat else \
                _in_type(self.ccd, dtype)
            with _PREPARE_LOCK:
                prepared = self._prepared.setdefault(key, prepared)
        return prepared

    @functools.cached_property
    def _prepared(self):
        # (kind, ...) -> what `prepare` and `scaled` made; filled once per key
        return {}

    def _normalised(self, dtype, min_value):
        """The steps of `ccdproc.flat_correct` that depend on the flat alone."""
        flat = _in_type(self.ccd, dtype)
        if min_value is not None:
            flat = flat.copy()
            flat.data[flat.data < min_value] = min_value
        norm_value = self._level()
        if norm_value is None:
            norm_value = _finite_mean(flat.data)
        normed = flat.divide(norm_value * flat.unit)
        if normed.mask is not None and normed.mask.any():
            normed.data[normed.mask] = 1.0  # as flat_correct does: masked pixels divide by 1
        return normed

    def _level(self):
        """The level this flat is divided by: its ``FLATMEAN`` card when it has a usable
        one; else the mean of its good, finite pixels (a masked corner does not change
        the level of the frame), or ``None`` (the mean of every finite pixel) when none
        is masked."""
        norm_value = _flat_mean_card(self.ccd.meta)
        mask = self.ccd.mask
        if norm_value is not None or mask is None or not np.any(mask):
            return norm_value
        good = ~mask & np.isfinite(self.ccd.data)
        if not good.any():
            raise DataQualityError(f"master flat {self.name}: every pixel is masked or "
                                   "not finite")
        return float(np.mean(self.ccd.data[good], dtype=np.float64))


#: Guards the prepared pixels of masters shared by the threads that calibrate frames.
_PREPARE_LOCK = threading.Lock()


def _exposure(header, profile, where):
    """A master's exposure time through the profile, or ``None`` when it gives none."""
    if profile is None:
        return None
    try:
        return profile.exposure_time(header, path=where)
    except HeaderError:
        return None


def _flat_mean_card(header):
    """The ``FLATMEAN`` of a master flat's header, or ``None`` without a usable one."""
    value = header.get("FLATMEAN")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if np.isfinite(value) and value > 0 else None


def _finite_mean(data):
    """The mean of the finite pixels of ``data`` (``data.mean()``, the same number, when
    all are): a few NaN must not make a flat's level NaN."""
    finite = np.isfinite(data)
    return data.mean() if finite.all() else data[finite].mean()


def _in_type(ccd, dtype):
    """``ccd`` with its pixels in ``dtype`` (itself when they are)."""
    if ccd.data.dtype == dtype:
        return ccd
    converted = ccd.copy()
    converted.data = converted.data.astype(dtype)
    return converted


def _frames(frames):
    """Turn paths, CCDData, or a collection into a list of (name, CCDData-or-path)."""
    from ccdproc import ImageFileCollection

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
    from .calibrate import calibrate_frame  # see the note on imports at the top

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
        warnings.warn(warning, stacklevel=4)
    if compare_as is not None:
        _leave_out_deviating(compare_as, names, prepared, checked, samples, skipped,
                             spill, skip_bad_frames)
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
                         skip_bad_frames):
    """Remove, in place, the frames that differ from the others of their master; each
    is a bad frame (`~ccdproc_ext.DataQualityError`): raised, or left out with a
    `~ccdproc_ext.FrameSkippedWarning` and listed in ``skipped``. When the checks are in
    doubt (they would leave out too many), every frame is kept and their note is a
    `~ccdproc_ext.CcdprocExtWarning`, a note of the master like its other warnings."""
    group = check_calibration_frames(samples, names, kind)
    if group.note:
        warnings.warn(CcdprocExtWarning(f"master {kind} from {_first_names(names)}: "
                                        f"{group.note}"), stacklevel=5)
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
                                          file=name, error=err), stacklevel=5)


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
            "rejected and its noise is that of one frame"), stacklevel=4)
    master = combine(prepared, **options)
    not_finite = sum(int(header.get("NNANPIX", 0)) for header in spill.headers)
    method = options["method"] + (" sigma-clipped" if options.get("sigma_clip") else "")
    mark_master(master.meta, kind, names, method, not_finite=not_finite,
                skipped=[(name, f"{type(err).__name__}: {_reason(err, name)}")
                         for name, err in skipped])
    return master


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
    profile = get_profile(profile)
    with _Spill(mem_limit / 2, _temporary_dir(temporary_dir, output_file)) as spill:
        names, prepared, skipped, _ = _prepare(_frames(frames), profile,
                                               skip_bad_frames=skip_bad_frames,
                                               workers=workers, spill=spill,
                                               compare_as="bias" if check_frames else None)
        master = _combine(names, prepared, "bias", combine_options, skipped, workers, spill)
    return _finish(master, output_file)


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
    profile = get_profile(profile)
    items = _frames(frames)
    bias = MasterFrame.of(master_bias, profile)
    with _Spill(mem_limit / 2, _temporary_dir(temporary_dir, output_file)) as spill:
        names, prepared, skipped, _ = _prepare(items, profile, master_bias=bias,
                                               skip_bad_frames=skip_bad_frames,
                                               workers=workers, spill=spill,
                                               compare_as="dark" if check_frames else None)
        exposures = {profile.exposure_time(header, path=name) for name, header in
                     zip(names, spill.headers, strict=True)}
        if len(exposures) > 1:
            raise CalibrationMatchError(f"darks of several exposure times "
                                        f"({sorted(exposures)} s) cannot be combined into "
                                        "one master dark")
        master = _combine(names, prepared, "dark", combine_options, skipped, workers, spill)
    return _finish(master, output_file)


def make_master_flat(frames, profile="generic", *, master_bias=None, master_dark=None,
                     scale_dark=None, combine_options=None, min_value=0.1, output_file=None,
                     skip_bad_frames=False, workers=None, mem_limit=_MEM_LIMIT,
                     temporary_dir=None, check_frames=True):
    """Combine flat frames of one filter into a normalised master flat.

    Each flat is bias- and dark-corrected (the dark scaled by exposure time when the
    exposures differ and scaling is allowed), the flats are combined with inverse-median
    scaling, and the result is divided by its mean over its good pixels (written as
    ``FLATNORM``); masked pixels are set to 1, and the mean of the pixels as written is
    ``FLATMEAN``: a frame calibrated with this flat is
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
    profile = get_profile(profile)
    with _Spill(mem_limit / 2, _temporary_dir(temporary_dir, output_file)) as spill:
        names, prepared, skipped, checked = _prepare(
            _frames(frames), profile, master_bias=MasterFrame.of(master_bias, profile),
            master_dark=MasterFrame.of(master_dark, profile), scale_dark=scale_dark,
            skip_bad_frames=skip_bad_frames, check=_check_flat, workers=workers,
            spill=spill, compare_as="flat" if check_frames else None)
        filters = {profile.filter_name(header) for header in spill.headers}
        if len(filters) > 1:
            raise CalibrationMatchError(f"flats of several filters "
                                        f"({', '.join(map(str, filters))}) cannot be "
                                        "combined into one master flat")
        # Flats are scaled by their inverse median (measured by _check_flat, in the
        # threads that calibrate them, instead of by combine one after the other).
        options = {"scale": np.array(checked)}
        options.update(combine_options or {})
        master = _combine(names, prepared, "flat", options, skipped, workers, spill)
    _normalise_flat(master, names, min_value)
    return _finish(master, output_file)


def _normalise_flat(master, names, min_value):
    """Normalise a combined flat, in place, to a mean of 1 over its good pixels.

    Pixels masked by the combination, not finite, or (with ``min_value``) below
    ``min_value`` of the mean are masked and set to 1. The mean is taken over the other
    pixels, and written in ``FLATMEAN`` as the file holds them (float32): the frames are
    divided by the flat divided by ``FLATMEAN``, exactly what
    ``ccdproc.flat_correct(frame, flat, norm_value=FLATMEAN)`` does with the flat as
    read from its file. ``FLATNORM`` is the level the combined flat was divided by.
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
    mark_flat_normalised(master.meta, norm, mean, min_value, n_low)
    if min_value is not None:
        if n_low:
            warnings.warn(DataQualityWarning(
                f"master flat from {names[0]}{' ...' if len(names) > 1 else ''}: {n_low} "
                f"pixel(s) ({n_low / master.data.size:.2%}) are below {min_value:g} of the "
                "mean (zero, negative or nearly so); they are masked"), stacklevel=3)


def _first_names(names):
    """The first three of ``names``, for a message about a master."""
    return ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")


def _check_flat(ccd, name):
    """A flat frame must be lit: its mean level after bias and dark must be positive.

    Returns its scale factor: the inverse of its median. Both are of finite pixels
    only: a pixel that is NaN (masked in a lower master, for one) says nothing of the
    level of the frame, and must not make it NaN.
    """
    good = np.isfinite(ccd.data)
    if ccd.mask is not None:
        good &= ~ccd.mask
    if not good.any():
        raise DataQualityError(f"{name}: every pixel is masked (saturated or not finite)")
    level = float(np.mean(ccd.data[good], dtype=np.float64))
    if level <= 0:
        raise DataQualityError(f"{name}: its mean level after bias and dark subtraction is "
                               f"{level:g}; a flat must be positive")
    return _inverse_median(ccd.data)


def _inverse_median(data):
    """The Guide's scale of a flat: ``1 / np.median(data)``, of every finite pixel (of
    every pixel, the same number, when all are finite)."""
    finite = np.isfinite(data)
    return 1.0 / median_of_all(data if finite.all() else data[finite])
