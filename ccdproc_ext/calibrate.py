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

A section read from a header keyword that is not a FITS section (``BIASSEC =
'[0,513:0,1536]'``) or reaches outside the frame skips that step for the frame, with a
`~ccdproc_ext.CcdprocExtWarning`; trimming moves the WCS reference pixel (``CRPIX``) with
the pixels. Without a saturation level (most cameras write no ``SATURATE``) nothing is
masked as saturated.

Masks travel through ccdproc's arithmetic (a logical or), so the result's ``mask`` holds
every pixel that could not be calibrated properly.
"""

import dataclasses
import re
import warnings
from pathlib import Path

import astropy.units as u
import ccdproc
import numpy as np
from astropy.io import fits
from astropy.modeling import models
from astropy.nddata import CCDData
from ccdproc.utils.slices import slice_from_string

from .bpm import load_bad_pixel_mask
from .exceptions import (
    CalibrationMatchError,
    CcdprocExtWarning,
    DataQualityError,
    DataQualityWarning,
    HeaderError,
)
from .master_frame import MasterFrame
from .profiles import get_profile
from .profiles.sections import parse_fits_section
from .provenance import (
    already_done,
    done_by,
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
           "check_finite", "dark_scale_problem", "mask_bad_pixels", "overscan_and_trim",
           "raw_mask_bits", "shift_reference_pixel"]


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
    """The ``MASK`` bits a raw frame itself gives, in its own geometry: `SATURATED`
    where `mask_bad_pixels` masks a pixel as saturated, `NOT_FINITE` where it masks one
    as NaN or infinite (`~ccdproc_ext.quality`). An unsigned 8-bit array.
    """
    data = ccd.data
    not_finite = None
    if data.dtype.kind == "f":
        not_finite = ~np.isfinite(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # said once, when the frame is calibrated
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
    bad_pixel_mask : array, `~astropy.nddata.CCDData`, `MasterFrame` or path
        Non-zero where a pixel is bad (a path is read with
        `~ccdproc_ext.quality.load_bad_pixel_mask`); of the frame's shape.
    name : str, optional
        How the frame is named in messages.

    Returns
    -------
    `~astropy.nddata.CCDData`
        With the bad pixels masked (their values unchanged) and ``BPMFILE`` (the mask's
        file name, or its ``FILENAME``), ``BPMSUM`` (for a `MasterFrame`: its checksum)
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
    if profile is None or profile.saturation is None or not is_raw(ccd.meta):
        return None
    try:
        level = profile.saturation.get(ccd.meta, path=name)
    except HeaderError as err:
        warnings.warn(f"{err}: saturated pixels are not masked", CcdprocExtWarning,
                      stacklevel=4)
        return None
    if level is None:
        return None
    try:
        level = level.to_value(ccd.unit) if ccd.unit is not None else level.value
    except u.UnitsError:
        return None
    if np.isfinite(level) and level <= 0:
        # Premise: a saturation level is a positive number of counts.
        warnings.warn(f"{name}: a saturation level of {level:g} is not a saturation "
                      "level (not above 0): saturated pixels are not masked",
                      CcdprocExtWarning, stacklevel=4)
        return None
    return level if np.isfinite(level) else None


def _skip(flag, header, name):
    warnings.warn(f"{name}: {done_by(header, flag)} is already in the header; the step is "
                  "not applied again", CcdprocExtWarning, stacklevel=3)


def overscan_and_trim(ccd, profile, *, name="frame"):
    """Subtract the overscan and trim, per the profile; returns a new `~astropy.nddata.CCDData`.

    Steps already flagged in the header are skipped with a warning.
    """
    header = ccd.meta
    result = ccd
    if profile.amplifiers:
        return _amplifiers_overscan_and_trim(ccd, profile, name=name)
    binning = _binning(profile, header)
    section = _section_to_apply(profile.overscan, "OVERSCAN", ccd, header, name, "overscan",
                                binning)
    if section is not None:
        result = _subtract_overscan(result, profile, profile.overscan, section, binning)
    section = _section_to_apply(profile.trim, "TRIM", result, result.meta, name, "trim",
                                binning)
    if section is not None:
        result = _trim(result, section)
    return result


def _binning(profile, header):
    """The frame's ``(x, y)`` binning, by which a header's sections in unbinned pixels are
    divided; ``(1, 1)`` when the header's cannot be read (said when the night is
    collected)."""
    try:
        return profile.binning(header)
    except HeaderError:
        return (1, 1)


def _section_to_apply(section, flag, ccd, header, name, what, binning=(1, 1)):
    """The section of a step to apply to ``ccd``, resolved; or None when the profile has
    no such section, the frame does not have it, or ``flag`` says the step was done
    (with a warning)."""
    if section is None:
        return None
    if already_done(header, flag):
        _skip(flag, header, name)
        return None
    return _resolve(section, ccd, name, what, binning)


#: What is not done when a step's section cannot be used, in warnings.
_NOT_DONE = {"overscan": "overscan not subtracted", "trim": "not trimmed"}


def _resolve(section, ccd, name, what, binning=(1, 1)):
    """``section`` resolved for ``ccd`` (see `_section_or_skip`), or ``None``."""
    return _section_or_skip(lambda shape, header: section.resolved(shape, header, binning),
                            ccd, name, what, (section,))


def _section_or_skip(read, ccd, name, what, sections):
    """What ``read(shape, header)`` gives, or ``None`` (with a `CcdprocExtWarning`) when a
    section keyword of the header cannot be used.

    A section read from a header keyword (``BIASSEC``, ``DATASEC`` ...) that is not a
    FITS section (``'[0,513:0,1536]'``) or reaches outside the frame is the camera's
    mistake: the step is skipped for this frame, with a warning naming the keyword and
    its value. A required keyword that is missing, or a section fixed in the profile
    that does not fit the frame, is a `~ccdproc_ext.HeaderError`. ``sections`` lists the
    `DetectorSection` objects read.
    """
    try:
        return read(ccd.shape, ccd.meta)
    except KeyError as err:
        raise HeaderError(f"{name}: the {what} section is read from header keyword "
                          f"{err.args[0]}, which is missing") from None
    except ValueError as err:
        keyword = _keyword_used(sections, ccd.meta)
        if keyword is None:
            raise HeaderError(f"{name}: {what} section: {err}") from None
        value = ccd.meta[keyword]
        text = str(err)
        why = "is not a FITS section" if "is not a FITS section" in text or \
            "must count up" in text or "must be a string" in text else \
            f"does not fit the frame ({text})"
        warnings.warn(f"{name}: {keyword} = {value!r} {why}: {_NOT_DONE[what]}",
                      CcdprocExtWarning, stacklevel=4)
        return None


def _keyword_used(sections, header):
    """The header keyword that gives one of ``sections`` a value that is not a FITS
    section, else the first that gives one at all; ``None`` when no keyword does (the
    sections are the profile's own)."""
    used = [next((key for key in section.keywords if key in header), None)
            for section in sections if section is not None]
    used = [key for key in used if key is not None]
    for key in used:
        try:
            parse_fits_section(str(header[key]).strip())
        except ValueError:
            return key
    return used[0] if used else None


def _overscan_axis_for(ccd, profile, name):
    """The profile, with an overscan axis the frame's overscan section can serve.

    One level per row (axis 1) needs an overscan spanning every row of the frame, one per
    column (axis 0) every column. A section read from the header that does neither (a
    corner, as IFUM writes ``BIASSEC = '[2049:2176,1029:1156]'``) gives one level for the
    whole frame, with a warning, instead of failing the frame.
    """
    if profile.amplifiers or profile.overscan is None or profile.overscan_axis == "frame" \
            or already_done(ccd.meta, "OVERSCAN"):
        return profile
    try:
        sections = profile.overscan.slices(ccd.shape, ccd.meta, _binning(profile, ccd.meta))
    except (KeyError, ValueError):
        return profile  # missing or unusable: said where the section is applied
    if sections is None:
        return profile
    rows, cols = sections
    ny, nx = ccd.shape
    spans_rows = (rows.start or 0) == 0 and rows.stop >= ny
    spans_cols = (cols.start or 0) == 0 and cols.stop >= nx
    axis = profile.overscan_axis
    if (axis == 1 and spans_rows) or (axis == 0 and spans_cols):
        return profile
    fitted = 0 if (axis == 1 and spans_cols) else "frame"
    warnings.warn(CcdprocExtWarning(
        f"{name}: the overscan section {_fits_of(rows, cols)} does not span every "
        f"{'row' if axis == 1 else 'column'} of the frame: "
        + ("one level per column" if fitted == 0 else "one level for the whole frame")),
        stacklevel=3)
    return dataclasses.replace(profile, overscan_axis=fitted)


def _fits_of(rows, cols):
    return f"[{cols.start + 1}:{cols.stop},{rows.start + 1}:{rows.stop}]"


def _subtract_overscan(ccd, profile, section_spec, section, binning):
    median = profile.overscan_method == "median"
    if profile.overscan_axis == "frame":
        # One level for the whole frame (a corner bias section covers no data row).
        rows, cols = section_spec.slices(ccd.shape, ccd.meta, binning)
        region = ccd.data[rows, cols]
        level = float(np.median(region) if median else np.mean(region))
        result = ccd.copy()
        result.data = ccd.data - np.asarray(level, dtype=ccd.data.dtype)
        mark_step(result.meta, "OVERSCAN", f"{section} {profile.overscan_method} level "
                                           f"{level:.2f}")
        return result
    model = None
    if profile.overscan_model_degree is not None:
        model = models.Polynomial1D(degree=profile.overscan_model_degree)
    result = ccdproc.subtract_overscan(ccd, fits_section=section,
                                       overscan_axis=profile.overscan_axis, median=median,
                                       model=model)
    how = profile.overscan_method + (f", polynomial degree {profile.overscan_model_degree}"
                                     if model is not None else "")
    mark_step(result.meta, "OVERSCAN", f"{section} {how}")
    return result


def _amplifier_slices(ccd, profile, name, what):
    """``[(amplifier, data slices, overscan slices or None)]`` for ``ccd``, or ``None``
    when a section of the header cannot be used (with a warning, see `_section_or_skip`)
    or an amplifier's optional section keyword is not in the header."""
    binning = _binning(profile, ccd.meta)

    def read(shape, header):
        slices = []
        for amp in profile.amplifiers:
            data = amp.data_section.slices(shape, header, binning)
            overscan = None
            if what == "overscan" and amp.overscan_section is not None:
                overscan = amp.overscan_section.slices(shape, header, binning)
                if overscan is None:
                    return None
            if data is None:
                return None
            slices.append((amp, data, overscan))
        return slices

    sections = [amp.data_section for amp in profile.amplifiers]
    if what == "overscan":
        sections += [amp.overscan_section for amp in profile.amplifiers]
    return _section_or_skip(read, ccd, name, what, sections)


def _amplifiers_overscan_and_trim(ccd, profile, *, name):
    """Each amplifier's overscan from its own data section, then the data bounding box."""
    header = ccd.meta
    result = ccd
    if already_done(header, "OVERSCAN"):
        _skip("OVERSCAN", header, name)
    elif (amplifiers := _amplifier_slices(ccd, profile, name, "overscan")) is not None:
        result = ccd.copy()
        done = []
        for amp, (data_rows, data_cols), oscan in amplifiers:
            if oscan is None:
                continue
            oscan_rows, oscan_cols = oscan
            region = ccd.data[oscan_rows, oscan_cols]
            if profile.overscan_axis == 1:
                # one level per row of this amplifier, along the rows it shares
                level = (np.median if profile.overscan_method == "median" else np.mean)(
                    region, axis=1)[:, np.newaxis]
                if region.shape[0] != data_rows.stop - data_rows.start:
                    raise HeaderError(f"{name}: amplifier {amp.name}: the overscan rows do "
                                      "not match the data rows")
            elif profile.overscan_axis == 0:
                level = (np.median if profile.overscan_method == "median" else np.mean)(
                    region, axis=0)[np.newaxis, :]
                if region.shape[1] != data_cols.stop - data_cols.start:
                    raise HeaderError(f"{name}: amplifier {amp.name}: the overscan columns "
                                      "do not match the data columns")
            else:
                level = np.median(region) if profile.overscan_method == "median" else \
                    np.mean(region)
            result.data[data_rows, data_cols] = ccd.data[data_rows, data_cols] - level
            done.append(f"{amp.name}:[{oscan_cols.start + 1}:{oscan_cols.stop},"
                        f"{oscan_rows.start + 1}:{oscan_rows.stop}]")
        mark_step(result.meta, "OVERSCAN", " ".join(done) + f" {profile.overscan_method}")
    if already_done(result.meta, "TRIM"):
        _skip("TRIM", result.meta, name)
        return result
    amplifiers = _amplifier_slices(ccd, profile, name, "trim")
    if amplifiers is None:
        return result
    boxes = [data for _, data, _ in amplifiers]
    y0 = min(b[0].start for b in boxes)
    y1 = max(b[0].stop for b in boxes)
    x0 = min(b[1].start for b in boxes)
    x1 = max(b[1].stop for b in boxes)
    section = f"[{x0 + 1}:{x1},{y0 + 1}:{y1}]"
    result = _trim(result, section)
    return result


def _trim(ccd, section):
    """`ccdproc.trim_image` to ``section``, flagged, with the WCS cards shifted."""
    result = ccdproc.trim_image(ccd, fits_section=section)
    rows, cols = slice_from_string(section, fits_convention=True)
    shift_reference_pixel(result.meta, cols.start or 0, rows.start or 0)
    mark_step(result.meta, "TRIM", section)
    return result


#: The reference-pixel cards a trim moves: CRPIX1, CRPIX2A ... and IRAF's LTV1, LTV2.
_REFERENCE_PIXEL_RE = re.compile(r"^(?:CRPIX|LTV)([12])[A-Z]?$")


def shift_reference_pixel(header, x_offset, y_offset):
    """Move, in place, the WCS reference pixel of ``header`` for an image trimmed by
    ``x_offset`` columns on the left and ``y_offset`` rows at the bottom.

    ``CRPIX1`` (and its alternates ``CRPIX1A`` ..., and IRAF's ``LTV1``) decreases by
    ``x_offset``, ``CRPIX2`` by ``y_offset``: a trim section ``[51:..., 11:...]`` moves
    ``CRPIX1`` by -50 and ``CRPIX2`` by -10, and each sky position keeps its pixel.
    Cards whose value is not a number are left alone.
    """
    if not (x_offset or y_offset):
        return
    for key in list(header.keys()):
        match = _REFERENCE_PIXEL_RE.match(str(key).upper())
        value = header[key]
        if match is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        offset = x_offset if match.group(1) == "1" else y_offset
        if isinstance(header, fits.Header):
            header[key] = (value - offset, header.comments[key])
        else:
            header[key] = value - offset


#: The longest exposure (s) a frame of one night can have: a day. A dark scaled to a
#: longer one says that the frame's exposure time is not one a night can hold (an
#: ``EXPTIME`` of 1e300 scales a 60 s dark by 1.7e298, and every pixel becomes
#: infinite): the frame is refused, not calibrated.
LONGEST_EXPOSURE = 86400.0

#: The fraction of a calibrated frame's pixels that must be finite. The raw frame's own
#: NaN and infinite pixels were replaced before the steps (`mask_bad_pixels`), so a
#: pixel that is not finite after them was made so by the arithmetic (an overflow, a
#: division by zero): a few are masked; more say the calibration itself went wrong, and
#: the frame is refused rather than written.
MIN_FINITE_FRACTION = 0.99


def dark_scale_problem(exposure, dark_exposure):
    """Why a dark of ``dark_exposure`` seconds cannot be scaled to ``exposure`` seconds,
    in words, or ``None`` when it can (see `LONGEST_EXPOSURE`)."""
    scale = exposure / dark_exposure
    if not 0 < exposure <= LONGEST_EXPOSURE or not np.isfinite(scale):
        return (f"dark scale beyond what a night can hold: {scale:.3g} ({exposure:g} s / "
                f"{dark_exposure:g} s), while an exposure is above 0 and at most a day "
                f"({LONGEST_EXPOSURE:g} s)")
    return None


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
        are); the master dark must be bias-subtracted. A `MasterFrame` given for many
        frames is prepared once (`MasterFrame.prepare`, `MasterFrame.scaled`).
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
        `apply_bad_pixel_mask`). Default is ``None``.

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
    (`MasterFrame.scaled`; float32 for ccdproc_ext's masters), where
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
    profile = _overscan_axis_for(ccd, profile, name)
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
        gain = _detector_value(profile, "gain", raw_header, name, "create_deviation")
        read_noise = _detector_value(profile, "read_noise", raw_header, name,
                                     "create_deviation")
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
        _skip(flag, header, name)
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
    (`MasterFrame.scaled`), flagged ``DARKCOR``, the factor in ``DARKSCL``."""
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
    """`ccdproc.flat_correct` by the flat normalised once (`MasterFrame.prepare`),
    flagged ``FLATCOR`` with the master's name and checksum."""
    _check_shape(ccd.shape, flat, name)
    normalised = flat.prepare(dtype, flat=True, min_value=min_value)
    result = ccdproc.flat_correct(ccd, normalised, norm_value=1.0)
    mark_step(result.meta, "FLATCOR", flat.name, FLATSUM=flat.checksum)
    return result

_LABELS = {"gain": "gain", "read_noise": "read noise"}


def _detector_value(profile, what, header, name, needed_by):
    """The profile's gain or read noise for a frame, as a Quantity.

    Raises
    ------
    HeaderError
        Naming the frame and the keywords, when neither the header nor the profile gives
        it, or it is not a positive (for read noise: non-negative) number.
    """
    spec = getattr(profile, what)
    label = _LABELS[what]
    where = f" ({spec.describe()})" if spec is not None else ""
    value = spec.get(header, path=name) if spec is not None else None
    if value is None:
        raise HeaderError(f"{name}: {needed_by} needs the {label}{where}, which profile "
                          f"{profile.name!r} does not give for this frame")
    number = float(value.value)
    if not np.isfinite(number) or number < 0 or (what == "gain" and number == 0):
        raise HeaderError(f"{name}: {needed_by} needs the {label}{where}, and "
                          f"{number:g} is not a {label}")
    return value


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
    gain = _detector_value(profile, "gain", header, name, "gain_correct")
    result = ccdproc.gain_correct(result, gain)
    keywords = {*(profile.gain.keywords if profile.gain else ()), "GAIN", "EGAIN"}
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

