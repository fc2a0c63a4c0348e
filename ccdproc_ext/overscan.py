"""Overscan subtraction and trimming of one frame, per amplifier, with ccdproc's functions.

`overscan_and_trim` applies the profile's overscan and trim sections (fixed, or read
from header keywords such as ``BIASSEC`` and ``TRIMSEC``, divided by the frame's binning
when written in unbinned pixels) with `ccdproc.subtract_overscan` and
`ccdproc.trim_image`, or each amplifier's own sections; each step writes its flag
(``OVERSCAN``, ``TRIM``) and is not applied twice. A section keyword of the header that
is not a FITS section or reaches outside the frame skips the step for the frame, with a
`~ccdproc_ext.CcdprocExtWarning`; trimming moves the WCS reference pixel
(`shift_reference_pixel`).
"""

import dataclasses
import re
import warnings

import ccdproc
import numpy as np
from astropy.io import fits
from astropy.modeling import models
from ccdproc.utils.slices import slice_from_string

from .exceptions import CcdprocExtWarning, HeaderError
from .profiles.sections import parse_fits_section
from .provenance import already_done, done_by, mark_step

__all__ = ["overscan_and_trim", "overscan_axis_for", "shift_reference_pixel",
           "warn_done_before"]


def warn_done_before(flag, header, name):
    """Warn that the step of ``flag`` is already in ``header`` and is not applied again.

    Parameters
    ----------
    flag : str
        The step's flag card (``"OVERSCAN"``, ``"ZEROCOR"``...).
    header : `~astropy.io.fits.Header`
    name : str
        The frame, named in the warning.
    """
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
        warn_done_before(flag, header, name)
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


def overscan_axis_for(ccd, profile, *, name="frame"):
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
        warn_done_before("OVERSCAN", header, name)
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
        warn_done_before("TRIM", result.meta, name)
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
