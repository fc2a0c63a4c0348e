"""One frame through ccdproc's chain: overscan, trim, bias, dark, flat, gain.

Each step is ccdproc's own function (`ccdproc.subtract_overscan`, `ccdproc.trim_image`,
`ccdproc.subtract_bias`, `ccdproc.subtract_dark`, `ccdproc.flat_correct`,
`ccdproc.gain_correct`), which writes its own history card. Two things are prepared once
per master instead of once per frame (`~ccdproc_ext.MasterFrame.scaled`,
`~ccdproc_ext.MasterFrame.prepare`), without changing ccdproc's arithmetic: the dark is
scaled to the frame's exposure once and subtracted with ``scale=False``, and the flat is
normalised once and divided with ``norm_value=1``.

What this module adds is knowing the instrument (sections, axis, gain, read noise from
the profile), writing the processing flags (`ccdproc_ext.provenance`), refusing to apply
a step twice, and masking the pixels that cannot be trusted:

- pixels that are not finite (NaN, inf) are masked and replaced by the median of the
  finite ones, so that no overscan or combined level is poisoned (``NNANPIX`` in the
  header, and a `~ccdproc_ext.DataQualityWarning`); a frame without one finite pixel is a
  `~ccdproc_ext.DataQualityError`;
- in a raw frame, pixels at or above the profile's saturation level are masked
  (``NSATUR``);
- pixels where the master flat is masked (below its ``min_value``, or not finite) are
  masked in the result and divided by 1 instead of a meaningless value; the flat is
  normalised over its good pixels only.

The overscan and trim are `ccdproc_ext.overscan`'s: a section read from a header keyword
that is not a FITS section (``BIASSEC = '[0,513:0,1536]'``) or reaches outside the frame
skips that step for the frame, with a `~ccdproc_ext.CcdprocExtWarning`; trimming moves
the WCS reference pixel (``CRPIX``) with the pixels. Without a saturation level (most
cameras write no ``SATURATE``) nothing is masked as saturated.

Masks travel through ccdproc's arithmetic (a logical or), so the result's ``mask`` holds
every pixel that could not be calibrated properly.
"""

import warnings
from pathlib import Path

import astropy.units as u
import ccdproc
import numpy as np
from astropy.nddata import CCDData

from ._warnings import ignoring
from .bpm import load_bad_pixel_mask
from .exceptions import (
    CalibrationMatchError,
    CcdprocExtWarning,
    DataQualityError,
    DataQualityWarning,
    HeaderError,
)
from .master_frame import MasterFrame
from .matcher import LONGEST_EXPOSURE, dark_scale_problem
from .overscan import overscan_and_trim, overscan_axis_for, warn_done_before
from .profiles import get_profile
from .provenance import (
    already_done,
    file_name_of,
    is_raw,
    mark_bad_pixels,
    mark_bad_pixels_applied,
    mark_gain_corrected,
    mark_processed,
    mark_step,
)
from .quality import mask_bits
from .raw import read_frame

__all__ = ["LONGEST_EXPOSURE", "MIN_FINITE_FRACTION", "apply_bad_pixel_mask", "calibrate_frame",
           "check_finite", "dark_scale_problem", "mask_bad_pixels", "raw_mask_bits"]


def mask_bad_pixels(ccd, profile=None, *, name="frame"):
    """Mask the pixels of a frame that cannot be trusted; returns a new `~astropy.nddata.CCDData`.

    Pixels that are not finite (NaN, inf) are masked and set to the median of the finite
    ones, their number written as ``NNANPIX``. In a raw frame (no processing flag in the
    header), pixels at or above the profile's saturation level are masked, their number
    written as ``NSATUR``. The input is returned unchanged when there is nothing to do.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The frame; not modified.
    profile : `~ccdproc_ext.InstrumentProfile` or None, optional
        Gives the saturation level (a value or a header keyword). Default is ``None``:
        no saturation masking.
    name : str, optional
        How the frame is named in messages.

    Raises
    ------
    DataQualityError
        If no pixel is finite.

    Warns
    -----
    DataQualityWarning
        When pixels that are not finite were masked.
    """
    data = ccd.data
    mask = ccd.mask
    counts = {}
    # The extremes tell, without temporaries, whether any pixel is NaN or infinite (NaN
    # propagates through both) and whether any can be saturated.
    low, high = (data.min(), data.max()) if data.size else (0, 0)
    if data.dtype.kind == "f" and not (np.isfinite(low) and np.isfinite(high)):
        bad = ~np.isfinite(data)
        n_bad = int(np.count_nonzero(bad))
        if n_bad:
            if n_bad == data.size:
                raise DataQualityError(f"{name}: no pixel is finite (all NaN or infinite)")
            data = data.copy()
            data[bad] = np.median(data[~bad])
            high = data.max()
            mask = bad if mask is None else (mask | bad)
            counts["not_finite"] = n_bad
            warnings.warn(f"{name}: {n_bad} pixel(s) are NaN or infinite; they are masked "
                          "and set to the median of the others", DataQualityWarning,
                          stacklevel=3)
    level = _saturation_level(ccd, profile, name)
    if level is not None:
        n_saturated = 0
        if high >= level:  # the mask is made only when needed
            saturated = data >= level
            n_saturated = int(np.count_nonzero(saturated))
            if _implausible_mask(n_saturated, data.size):
                # Premise: a saturation level lies above most pixels of a frame (its
                # median, the bias level at least). One at or below half of them is a
                # statistic or a mistake of the header: the rule steps aside.
                warnings.warn(f"{name}: a saturation level of {level:g} would mask "
                              f"{n_saturated / data.size:.0%} of the frame: it is not a "
                              "saturation level, no pixel is masked as saturated",
                              CcdprocExtWarning, stacklevel=3)
                level = None
            else:
                mask = saturated if mask is None else (mask | saturated)
        if level is not None:
            counts.update(saturated=n_saturated, level=level)
    if not counts:
        return ccd
    # The pixels are shared when they did not change: the steps that follow make new ones.
    header = ccd.meta.copy()
    mark_bad_pixels(header, **counts)
    return CCDData(data, unit=ccd.unit, meta=header, mask=mask, uncertainty=ccd.uncertainty,
                   wcs=ccd.wcs, copy=False)


def raw_mask_bits(ccd, profile=None, *, name="frame"):
    """The ``MASK`` bits a raw frame itself gives, in its own geometry:
    `~ccdproc_ext.quality.SATURATED` where `mask_bad_pixels` masks a pixel as saturated,
    `~ccdproc_ext.quality.NOT_FINITE` where it masks one as NaN or infinite
    (`~ccdproc_ext.quality`). An unsigned 8-bit array.
    """
    data = ccd.data
    not_finite = None
    if data.dtype.kind == "f":
        not_finite = ~np.isfinite(data)
    with ignoring(Warning):  # said once, when the frame is calibrated
        level = _saturation_level(ccd, profile, name)
    saturated = None
    if level is not None:
        with np.errstate(invalid="ignore"):
            saturated = data >= level
        if not_finite is not None:
            # A pixel that is not finite is not counted saturated (as in mask_bad_pixels).
            saturated &= ~not_finite
        if _implausible_mask(int(np.count_nonzero(saturated)), data.size):
            saturated = None  # no saturation level, as mask_bad_pixels decides
    return mask_bits(data.shape, saturated=saturated, not_finite=not_finite)


def apply_bad_pixel_mask(ccd, bad_pixel_mask, *, name="frame"):
    """Mask the pixels of a bad-pixel mask in a calibrated frame.

    Returns a new `~astropy.nddata.CCDData`.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The frame, after overscan and trim; not modified.
    bad_pixel_mask : array, `~astropy.nddata.CCDData`, `~ccdproc_ext.MasterFrame` or path
        Non-zero where a pixel is bad (a path is read with
        `~ccdproc_ext.bpm.load_bad_pixel_mask`); of the frame's shape.
    name : str, optional
        How the frame is named in messages.

    Returns
    -------
    `~astropy.nddata.CCDData`
        With the bad pixels masked (their values unchanged) and ``BPMFILE`` (the mask's
        file name, or its ``FILENAME``), ``BPMSUM`` (for a `~ccdproc_ext.MasterFrame`: its checksum)
        and ``NBADPIX`` in its header.

    Raises
    ------
    CalibrationMatchError
        If the mask is not of the frame's shape.
    """
    mask_name, checksum = "array", ""
    if isinstance(bad_pixel_mask, str | Path):
        mask_name = Path(bad_pixel_mask).name
        bad_pixel_mask = load_bad_pixel_mask(bad_pixel_mask)
    elif isinstance(bad_pixel_mask, MasterFrame):
        mask_name, checksum = bad_pixel_mask.name, bad_pixel_mask.checksum
        bad_pixel_mask = bad_pixel_mask.ccd.data
    elif isinstance(bad_pixel_mask, CCDData):
        mask_name = file_name_of(bad_pixel_mask.meta.get("FILENAME", "in-memory mask"))
        bad_pixel_mask = bad_pixel_mask.data
    bad = np.asarray(bad_pixel_mask) != 0
    if bad.shape != ccd.shape:
        raise CalibrationMatchError(
            f"{name}: the frame is {ccd.shape[0]} x {ccd.shape[1]} pixels after overscan "
            f"and trim, the bad-pixel mask {mask_name} {bad.shape[0]} x {bad.shape[1]}")
    n_bad = int(np.count_nonzero(bad))
    if _implausible_mask(n_bad, bad.size):
        # Premise: bad pixels are a minority of a detector.
        warnings.warn(f"{name}: the bad-pixel mask {mask_name} marks {n_bad / bad.size:.0%} "
                      "of the frame: implausible for a detector, not applied",
                      CcdprocExtWarning, stacklevel=2)
        return ccd
    # The pixels are shared: only the mask and the header change.
    result = CCDData(ccd.data, unit=ccd.unit, meta=ccd.meta.copy(), wcs=ccd.wcs,
                     uncertainty=ccd.uncertainty, copy=False,
                     mask=bad if ccd.mask is None else (np.asarray(ccd.mask, bool) | bad))
    mark_bad_pixels_applied(result.meta, mask_name, checksum, int(np.count_nonzero(bad)))
    return result


#: A mask covering more than this fraction of a frame is not applied: what it says of
#: the frame cannot be true of most of its pixels (see `_implausible_mask`).
MAX_MASKED_FRACTION = 0.5


def _implausible_mask(n_masked, size):
    """Whether a mask of ``n_masked`` pixels of ``size`` covers more than
    `MAX_MASKED_FRACTION` of a frame: a rule that would mask most of a frame has a wrong
    premise on it (a saturation level below the sky, a mask of another camera)."""
    return size > 0 and n_masked > MAX_MASKED_FRACTION * size


def _saturation_level(ccd, profile, name):
    """The saturation level of a raw frame in its unit, or ``None`` when the profile or
    the header does not give it (no masking then: most cameras write no SATURATE), or
    gives one that is not above 0 (``DATAMAX = 0`` means "not set"), with a warning."""
    if profile is None or not is_raw(ccd.meta):
        return None
    try:
        level = profile.saturation(ccd.meta, path=name, required=False)
    except HeaderError as err:  # not a number, or not above 0
        warnings.warn(f"{err}: saturated pixels are not masked", CcdprocExtWarning,
                      stacklevel=4)
        return None
    if level is None:
        return None
    try:
        level = level.to_value(ccd.unit) if ccd.unit is not None else level.value
    except u.UnitsError:
        return None
    return level if np.isfinite(level) else None


#: The fraction of a calibrated frame's pixels that must be finite. The raw frame's own
#: NaN and infinite pixels were replaced before the steps (`mask_bad_pixels`), so a
#: pixel that is not finite after them was made so by the arithmetic (an overflow, a
#: division by zero): a few are masked; more say the calibration itself went wrong, and
#: the frame is refused rather than written.
MIN_FINITE_FRACTION = 0.99


def check_finite(ccd, name):
    """Mask, in place, the pixels of a calibrated frame that are not finite, and refuse
    the frame when they are more than a few (see `MIN_FINITE_FRACTION`).

    Raises
    ------
    DataQualityError
        When fewer than `MIN_FINITE_FRACTION` of the pixels are finite, naming the
        frame and the count.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(ccd.data.sum()):  # one pass; a pixel not finite makes it so
            return
    finite = np.isfinite(ccd.data)
    n_bad = finite.size - int(np.count_nonzero(finite))
    if not n_bad:  # (the sum overflowed, the pixels are finite)
        return
    if n_bad > (1 - MIN_FINITE_FRACTION) * finite.size:
        raise DataQualityError(
            f"{name}: {n_bad} of the {finite.size} calibrated pixels are not finite "
            f"(more than {1 - MIN_FINITE_FRACTION:.0%}): the calibration overflowed or "
            f"divided by zero ({_steps_said(ccd.meta)}); not written")
    ccd.mask = ~finite if ccd.mask is None else (np.asarray(ccd.mask, bool) | ~finite)


def _steps_said(header):
    """The steps a frame went through, as its flags say: ``DARKSCL = 1.7e+298`` ..."""
    cards = [f"{key} = {header[key]!r}" for key in ("ZEROCOR", "DARKCOR", "DARKSCL",
                                                      "FLATCOR") if key in header]
    return ", ".join(cards) or "no master applied"


def _dark_exposure_and_scale(header, profile, dark, name, exposure_time, scale_dark):
    """The frame's exposure and whether the dark is scaled to it."""
    exposure = exposure_time if exposure_time is not None else \
        profile.exposure_time(header, path=name)
    if dark.exposure is None:
        raise HeaderError(f"{name}: the master dark {dark.name} has no exposure time "
                          f"({', '.join(profile.exposure_time_keywords)})")
    scale = scale_dark
    if scale is None:
        scale = (abs(exposure - dark.exposure) > profile.dark_tolerance
                 and profile.scale_darks)
    return exposure, bool(scale)


def calibrate_frame(ccd, profile=None, *, master_bias=None, master_dark=None,
                    master_flat=None, scale_dark=None, exposure_time=None,
                    min_flat_value=None, gain_correct=False, create_deviation=False,
                    dtype=np.float32, name=None, bad_pixel_mask=None):
    """Calibrate one frame: overscan, trim, bias, dark, flat, through ccdproc.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData` or path
        The raw frame. A `~astropy.nddata.CCDData` is never modified; a path is read read-only.
    profile : str, `~ccdproc_ext.InstrumentProfile` or None, optional
        The camera: sections, overscan axis and method, gain and read noise. Default is
        ``None``: the ``generic`` profile.
    master_bias, master_dark, master_flat : `~astropy.nddata.CCDData`, path or None, optional
        Masters to apply; a step whose master is ``None`` is skipped. The master bias and
        dark must already be overscan-subtracted and trimmed (as ccdproc_ext's masters
        are); the master dark must be bias-subtracted. A `~ccdproc_ext.MasterFrame` given
        for many frames is prepared once (`~ccdproc_ext.MasterFrame.prepare`,
        `~ccdproc_ext.MasterFrame.scaled`).
    scale_dark : bool or None, optional
        Scale the dark by the ratio of exposure times. Default (``None``): scale when the
        exposure times differ by more than the profile's ``dark_tolerance`` and the
        profile allows scaling; otherwise subtract it as it is.
    exposure_time : float or None, optional
        The frame's exposure in seconds; default is read through the profile.
    min_flat_value : float or None, optional
        Passed to `ccdproc.flat_correct` as ``min_value``. Default is ``None``.
    gain_correct : bool, optional
        Convert the result to electrons with the profile's gain. Default is ``False``.
    create_deviation : bool, optional
        Attach an uncertainty from read noise and Poisson noise
        (`ccdproc.create_deviation`, after trimming). Default is ``False``.
    dtype : numpy dtype, optional
        Pixel type of the result. Default is ``float32``.
    name : str or None, optional
        How the frame is named in messages. Default: the file name or ``"frame"``.
    bad_pixel_mask : array, `~astropy.nddata.CCDData`, path or None, optional
        Bad pixels (non-zero) to mask in the result, of its shape after trimming (see
        `~ccdproc_ext.calibrate.apply_bad_pixel_mask`). Default is ``None``.

    Returns
    -------
    `~astropy.nddata.CCDData`
        A new frame with the processing flags in its header.

    Warns
    -----
    CcdprocExtWarning
        When a step's flag is already set (the step is not applied again).

    Notes
    -----
    A scaled dark is multiplied by the ratio of exposure times in its own type
    (`~ccdproc_ext.MasterFrame.scaled`; float32 for ccdproc_ext's masters), where
    ``ccdproc.subtract_dark(..., scale=True)`` multiplies in float64: the two differ by
    the rounding of that product to float32.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import CCDData
    >>> from ccdproc_ext import calibrate_frame, get_profile
    >>> raw = CCDData(np.full((10, 2080), 1000.0), unit="adu")
    >>> calibrated = calibrate_frame(raw, "palomar-lfc")
    >>> calibrated.shape, calibrated.header["TRIM"]
    ((10, 2048), '[1:2048,1:10]')
    """
    profile = get_profile(profile if profile is not None else "generic")
    # A frame read (or converted) here is this function's own: it is not copied before
    # the steps, and it is freed as soon as a step has made new pixels.
    own = True
    if not isinstance(ccd, CCDData):
        name = name or Path(ccd).name
        ccd = read_frame(ccd, profile, dtype=dtype)
    else:
        name = name or file_name_of(ccd.meta.get("FILENAME", "frame"))
        own = ccd.data.dtype != dtype
        if own:
            ccd = ccd.copy()
            ccd.data = ccd.data.astype(dtype)
    ccd = mask_bad_pixels(ccd, profile, name=name)
    profile = overscan_axis_for(ccd, profile, name=name)
    raw_header = ccd.meta
    bias, dark, flat = (MasterFrame.of(master, profile)
                        for master in (master_bias, master_dark, master_flat))
    _check_units(ccd, (bias, dark), name)

    result = overscan_and_trim(ccd, profile, name=name)
    if result is ccd and not own:
        result = ccd.copy()  # never hand back (or later change) the caller's object
    result = _zero_based(result, name)
    del ccd
    if create_deviation:
        gain = profile.gain(raw_header, path=name, needed_by="create_deviation")
        read_noise = profile.read_noise(raw_header, path=name, needed_by="create_deviation")
        result = ccdproc.create_deviation(result, gain=gain, readnoise=read_noise,
                                          disregard_nan=True)
    if bias is not None and _not_done("ZEROCOR", result.meta, name):
        result = _subtract_bias(result, bias, name, dtype)
    if dark is not None and _not_done("DARKCOR", result.meta, name):
        exposure, scale = _dark_exposure_and_scale(raw_header, profile, dark, name,
                                                   exposure_time, scale_dark)
        result = _subtract_dark(result, dark, exposure, scale, name, dtype)
    if flat is not None and _not_done("FLATCOR", result.meta, name):
        result = _flat_correct(result, flat, min_flat_value, name, dtype)
    if gain_correct:
        result = _to_electrons(result, profile, raw_header, name)
    if bad_pixel_mask is not None:
        result = apply_bad_pixel_mask(result, bad_pixel_mask, name=name)

    if "BUNIT" in result.meta:  # the raw frame's card says what it was, not what it is
        result.meta["BUNIT"] = result.unit.to_string()
    if result.data.dtype != dtype:
        result.data = result.data.astype(dtype)
    check_finite(result, name)
    mark_processed(result.meta, profile.name)
    return result


def _zero_based(ccd, name):
    """``ccd`` plus MaxIm DL's ``PEDESTAL``, in place, when MaxIm calibrated the frame as
    it saved it (``CALSTAT``): it adds an offset (``PEDESTAL = -100`` for 100 ADU added)
    so that no pixel goes below 0, and the steps after it expect zero-based counts. The
    card is set to 0 once applied, so it is never applied twice."""
    pedestal = ccd.meta.get("PEDESTAL", 0)
    if "CALSTAT" not in ccd.meta or isinstance(pedestal, bool) or \
            not isinstance(pedestal, int | float) or not pedestal:
        return ccd
    ccd.data = ccd.data + np.asarray(pedestal, dtype=ccd.data.dtype)
    ccd.meta["PEDESTAL"] = 0
    ccd.meta["HISTORY"] = f"PEDESTAL {pedestal:g} added: counts made zero-based again"
    warnings.warn(f"{name}: PEDESTAL = {pedestal:g} of a frame calibrated when it was saved "
                  f"(CALSTAT = {str(ccd.meta['CALSTAT']).strip()!r}) added to its pixels",
                  CcdprocExtWarning, stacklevel=3)
    return ccd


def _not_done(flag, header, name):
    """Whether the step of ``flag`` is still to do; a warning when it was done."""
    if already_done(header, flag):
        warn_done_before(flag, header, name)
        return False
    return True


def _subtract_bias(ccd, bias, name, dtype):
    """`ccdproc.subtract_bias`, flagged ``ZEROCOR`` with the master's name and checksum."""
    _check_shape(ccd.shape, bias, name)
    result = ccdproc.subtract_bias(ccd, bias.prepare(dtype))
    mark_step(result.meta, "ZEROCOR", bias.name, ZEROSUM=bias.checksum)
    return result


def _subtract_dark(ccd, dark, exposure, scale, name, dtype):
    """`ccdproc.subtract_dark` with the dark scaled once to ``exposure`` when ``scale``
    (`~ccdproc_ext.MasterFrame.scaled`), flagged ``DARKCOR``, the factor in ``DARKSCL``."""
    _check_shape(ccd.shape, dark, name)
    if scale:
        problem = dark_scale_problem(exposure, dark.exposure)
        if problem:
            raise DataQualityError(f"{name}: {problem}")
    # A product beyond the pixel type (a dark of 1e-300 s scaled) is not warned about
    # here: check_finite refuses the frame, naming it.
    with np.errstate(over="ignore", invalid="ignore"):
        if scale:
            dark = dark.scaled(exposure / dark.exposure)
        # The dark is not scaled again: its exposure is given for the history card.
        result = ccdproc.subtract_dark(ccd, dark.prepare(dtype),
                                       dark_exposure=dark.exposure * u.s,
                                       data_exposure=exposure * u.s, scale=False)
    mark_step(result.meta, "DARKCOR", dark.name, DARKSUM=dark.checksum,
              DARKSCL=round(float(dark.scale), 6))
    return result


def _flat_correct(ccd, flat, min_value, name, dtype):
    """`ccdproc.flat_correct` by the flat normalised once (`~ccdproc_ext.MasterFrame.prepare`),
    flagged ``FLATCOR`` with the master's name and checksum."""
    _check_shape(ccd.shape, flat, name)
    normalised = flat.prepare(dtype, flat=True, min_value=min_value)
    # A float64 1 would make the quotient by a float32 flat float64 (numpy's promotion).
    result = ccdproc.flat_correct(ccd, normalised,
                                  norm_value=normalised.data.dtype.type(1))
    mark_step(result.meta, "FLATCOR", flat.name, FLATSUM=flat.checksum)
    return result

def _to_electrons(result, profile, header, name):
    """``result`` multiplied by the gain (`ccdproc.gain_correct`), in electrons.

    The gain cards of the header (``GAIN``, ``EGAIN`` ... whichever the profile reads)
    are set to 1, the gain of pixels in electrons, and the gain applied is kept in
    ``GAINCOR``. A frame already in electrons is left as it is, with a warning.
    """
    if result.unit is not None and result.unit.is_equivalent(u.electron):
        warnings.warn(f"{name}: the pixels are in {result.unit} already: the gain is not "
                      "applied", CcdprocExtWarning, stacklevel=3)
        return result
    gain = profile.gain(header, path=name, needed_by="gain_correct")
    result = ccdproc.gain_correct(result, gain)
    keywords = {*(profile.gain_spec.keywords if profile.gain_spec else ()), "GAIN", "EGAIN"}
    mark_gain_corrected(result.meta, gain, keywords)
    return result


def _check_shape(shape, master, name):
    """The frame (overscan-subtracted and trimmed) and a master must have one shape."""
    if tuple(shape) != tuple(master.ccd.shape):
        raise CalibrationMatchError(
            f"{name}: the frame is {shape[0]} x {shape[1]} pixels after overscan and trim, "
            f"the master {master.name} {master.ccd.shape[0]} x {master.ccd.shape[1]}: it "
            "cannot calibrate this frame")


def _check_units(ccd, masters, name):
    """A master bias or dark must be in a unit the frame's pixels convert to."""
    for master in masters:
        if master is None or master.ccd.unit is None or ccd.unit is None:
            continue
        if not master.ccd.unit.is_equivalent(ccd.unit):
            raise HeaderError(f"{name}: the frame is in {ccd.unit.to_string()} (BUNIT) and "
                              f"the master {master.name} in {master.ccd.unit.to_string()}: "
                              "one cannot be subtracted from the other")

