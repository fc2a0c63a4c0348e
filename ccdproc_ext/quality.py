"""Data quality: bad pixels, the bits of the ``MASK`` extension, bad calibration frames
and cosmic rays.

Bad-pixel mask
    `make_bad_pixel_mask` marks the pixels of a detector that no calibration can save:
    hot pixels, whose dark current (the master dark per second) is far above the median
    in units of its robust noise, and dead or low pixels, below half their neighbourhood
    in the master flat. `reduce_night` builds one per pair of master dark and flat its
    science frames use (``masters/bpm_<dark>_<flat>.fits``), or reads a user's file.

MASK bits
    The ``MASK`` extension of a calibrated frame says why each pixel is masked, one bit
    per reason (`MASK_BITS`, written in its header as ``MASKB1 = 'saturated'`` ...); a
    pixel is masked when its value is not 0. In memory `~astropy.nddata.CCDData` keeps
    its boolean mask; `mask_bits` builds the bits beside it.

Calibration frames
    `check_calibration_frames` compares each frame of a master with the others before
    they are combined, after the line ``a * median + b`` that fits it best: a frame of
    another level or scale (a dark at another temperature, a flat at another
    illumination) is kept, a frame with structure the others lack (a light leak, a
    gradient, a streak, a band of rows) is left out; a check that would leave out more
    than a third of the group keeps every frame and says why.

Cosmic rays
    `detect_cosmic_rays` runs `ccdproc.cosmicray_lacosmic` (L.A.Cosmic, through
    astroscrappy) on a calibrated frame, in electrons, with the camera's gain, read noise
    and saturation; `cosmic_ray_settings` chooses its contrast limit from the FWHM of the
    frame's stars (`star_fwhms`). It is run on the boxes of the frame where a hit can be
    (`search_boxes`), and a group of hits that is a star's core is given back.
"""

import warnings
from dataclasses import dataclass
from pathlib import Path

import astropy.units as u
import bottleneck as bn
import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.stats import sigma_clipped_stats

from ._kernels import median_of_all
from .exceptions import CalibrationMatchError, DataQualityError, FrameReadError
from .provenance import mark_bad_pixel_mask

__all__ = [
    "BAD_PIXEL",
    "BPM_HOT",
    "BPM_LOW",
    "BPM_USER",
    "COSMIC_RAY",
    "CR_CONTRAST",
    "CR_SIGCLIP",
    "DEFAULT_FWHM",
    "LOW_FLAT",
    "MASK_BITS",
    "NOT_FINITE",
    "SATURATED",
    "CosmicRaySettings",
    "FrameSample",
    "GroupCheck",
    "check_calibration_frames",
    "cosmic_ray_contrast",
    "cosmic_ray_rule",
    "cosmic_ray_settings",
    "detect_cosmic_rays",
    "frame_sample",
    "hot_pixels",
    "load_bad_pixel_mask",
    "low_flat_pixels",
    "make_bad_pixel_mask",
    "mask_bits",
    "measure_fwhm",
    "search_boxes",
    "star_fwhms",
    "trimmed_like",
]

# ------------------------------------------------------------------- MASK bits
#: A pixel at or above the saturation level in the raw frame.
SATURATED = 1
#: A pixel of the bad-pixel mask (hot), or masked in the master bias or dark.
BAD_PIXEL = 2
#: A pixel hit by a cosmic ray.
COSMIC_RAY = 4
#: A pixel that was NaN or infinite in the raw frame.
NOT_FINITE = 8
#: A pixel too low in the master flat to be divided by (below its minimum, or low in
#: the bad-pixel mask).
LOW_FLAT = 16

#: What each bit of the ``MASK`` extension means (``MASKB1``, ``MASKB2`` ... cards).
MASK_BITS = {SATURATED: "saturated", BAD_PIXEL: "bad pixel", COSMIC_RAY: "cosmic ray",
             NOT_FINITE: "not finite", LOW_FLAT: "low flat"}


def mask_bits(shape, *, saturated=None, not_finite=None, bad_pixel=None, cosmic_ray=None,
              low_flat=None, masked=None):
    """The ``MASK`` bits of a frame: an unsigned 8-bit array, one bit per reason.

    Parameters
    ----------
    shape : tuple of int
    saturated, not_finite, bad_pixel, cosmic_ray, low_flat : bool arrays or None
        The pixels masked for each reason.
    masked : bool array or None
        Every masked pixel (the frame's boolean mask): those no reason was given for are
        marked `BAD_PIXEL`, so that the bits are not 0 exactly where the frame is masked.

    Returns
    -------
    `numpy.ndarray` of uint8
    """
    bits = np.zeros(shape, np.uint8)
    for bit, pixels in ((SATURATED, saturated), (NOT_FINITE, not_finite),
                        (BAD_PIXEL, bad_pixel), (COSMIC_RAY, cosmic_ray),
                        (LOW_FLAT, low_flat)):
        if pixels is not None:
            _set_bit(bits, pixels, bit)
    if masked is not None:
        _set_bit(bits, np.asarray(masked, bool) & (bits == 0), BAD_PIXEL)
    return bits


def _set_bit(bits, pixels, bit):
    """``bits[pixels] |= bit`` for a boolean array ``pixels`` of the shape of ``bits``,
    as arithmetic on whole arrays (several times faster than boolean indexing)."""
    flags = np.broadcast_to(np.asarray(pixels, bool), bits.shape).view(np.uint8)
    bits |= flags * np.uint8(bit)


def trimmed_like(raw_pixels, header, shape):
    """``raw_pixels`` (in the raw frame's geometry) cut to a calibrated frame's.

    The cut is the frame's ``TRIM`` card (the section kept, see
    `~ccdproc_ext.overscan_and_trim`); a frame that was not trimmed keeps every pixel.
    Returns ``None`` when the result would not be of ``shape``.
    """
    from ccdproc.utils.slices import slice_from_string

    section = header.get("TRIM")
    if isinstance(section, str) and section.strip():
        try:
            raw_pixels = raw_pixels[slice_from_string(section, fits_convention=True)]
        except ValueError:
            return None
    return raw_pixels if raw_pixels.shape == tuple(shape) else None


# --------------------------------------------------------------- bad-pixel mask
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
    median, noise = (float(value) for value in _median_and_mad_std(values))
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
    path = Path(path)
    try:
        with fits.open(path, memmap=False) as hdul:
            data = next((hdu.data for hdu in hdul if getattr(hdu, "data", None) is not None
                         and getattr(hdu.data, "ndim", 0) == 2), None)
    except (OSError, ValueError) as err:
        raise FrameReadError(f"{path}: the bad-pixel mask cannot be read ({err})") from None
    if data is None:
        raise FrameReadError(f"{path}: the bad-pixel mask holds no two-dimensional image")
    data = np.asarray(data)
    bad = ~np.isfinite(data) if data.dtype.kind == "f" else np.zeros(data.shape, bool)
    values = np.where(bad, 1, data)
    if values.min() >= 0 and values.max() <= 255 and np.all(values == np.rint(values)):
        return values.astype(np.uint8)
    return (values != 0).astype(np.uint8)


# ---------------------------------------------------------- calibration frames
#: A frame's sample: about this many pixels, whole rows, taken at regular steps.
_SAMPLE_PIXELS = 1 << 18
#: The median of every row of a frame is taken over about this many columns (its noise,
#: 1.25 / 16 of a pixel's, is far below what a row must depart by to count).
_PROFILE_COLUMNS = 256
#: The line fitted to a frame is fitted to at most this many of its sampled pixels, at
#: regular steps: two numbers need no more (the hot pixels of a dark are among them).
_FIT_PIXELS = 1 << 16

#: The fit of a frame to its group: pixels further than this many robust sigma from the
#: first least-squares line (cosmic rays, a streak) are left out of the second.
FIT_CLIP = 10.0
#: A fitted line that leaves a residual this much noisier, pixel to pixel, than the
#: frame's levelling alone is not trusted (see `_residual`).
FIT_NOISE_GROWTH = 1.2
#: A pixel deviates when it is further than this many sigma from the fitted group ...
PIXEL_SIGMA = 6.0
#: ... and a frame is bad when this fraction of its pixels more than the group's usual
#: fraction deviate (cosmic rays are in every dark of one exposure alike) ...
EXCESS_FRACTION = 0.002
#: ... and more than this many times the group's usual fraction (a camera whose frames
#: all have 8% of such pixels has 8.5% in some).
EXCESS_RATIO = 2.0
#: A row or column deviates when its median is further from the fitted group's than
#: this many times the noise of one pixel ...
LINE_NOISE = 1.0
#: ... and than this many times the noise of the medians of rows (or columns).
LINE_SIGMA = 8.0
#: A frame is bad when at least this many of its rows and columns deviate.
MIN_LINES = 2
#: Groups smaller than this are not checked: two frames cannot say which one is bad.
MIN_GROUP = 3
#: A check that would leave out more than this fraction of a group is in doubt (its
#: note says "a third").
MAX_LEFT_OUT = 1 / 3


@dataclass(frozen=True)
class FrameSample:
    """What `check_calibration_frames` needs of one calibrated frame.

    ``rows`` are whole rows of the frame at regular steps (masked pixels NaN), ``level``
    the median of its good pixels, ``row_medians`` the median of every row of the frame
    (over regularly spaced columns; NaN for a row without a good pixel).
    """

    rows: np.ndarray
    level: float
    row_medians: np.ndarray | None = None


@dataclass(frozen=True)
class GroupCheck:
    """What `check_calibration_frames` says of a group of calibration frames.

    ``left_out`` holds the index of each frame to leave out and the reason, in words;
    ``note`` is set when the checks found frames they would leave out but kept them all
    (too many of the group for the checks' premise to hold), and says why.
    """

    left_out: tuple = ()
    note: str | None = None


def frame_sample(ccd):
    """The `FrameSample` of a calibrated frame (made in the threads that calibrate).

    Every ``step``-th row, ``step`` being the frame's size over `_SAMPLE_PIXELS`: about
    that many pixels whatever the frame's size, so that the checks cost the same per
    frame on any camera and the samples of a master's frames stay small in memory. The
    median of every row (a band of rows, a streak along them, may fall between the rows
    sampled) is taken over about `_PROFILE_COLUMNS` columns.
    """
    data = ccd.data
    mask = None if ccd.mask is None else np.asarray(ccd.mask, bool)
    step = max(1, int(np.ceil(data.size / _SAMPLE_PIXELS)))
    rows = _good_values(data[::step], None if mask is None else mask[::step])
    finite = rows[np.isfinite(rows)]
    level = float(np.median(finite)) if finite.size else np.nan
    column_step = max(1, data.shape[1] // _PROFILE_COLUMNS)
    columns = _good_values(data[:, ::column_step],
                           None if mask is None else mask[:, ::column_step])
    # bottleneck gives NaN for a row without a good pixel, and no warning: no
    # warnings.catch_warnings, which is not thread-safe, in the calibrating threads.
    row_medians = bn.nanmedian(columns, axis=1)
    return FrameSample(rows=rows, level=level, row_medians=row_medians)


def _good_values(data, mask):
    """``data`` as a new float32 array, NaN where masked or not finite."""
    values = np.array(data, dtype=np.float32)
    if mask is not None:
        values[mask] = np.nan
    values[~np.isfinite(values)] = np.nan
    return values


def check_calibration_frames(samples, names, kind):
    """Which calibration frames of one master have a defect the others do not have.

    A frame is compared with its group's median after the straight line
    ``a * median + b`` that fits it best (`_residual`: least squares, then again without
    the pixels far from the first line; ``a`` and ``b`` of its own). A frame whose level
    or scale differs from the group's (a dark at another temperature, a flat at another
    illumination, a bias with another offset) is not defective: the fit takes that
    difference away. What is left, the residual, is judged against the noise of the
    frame's own pixels (the robust deviation of neighbouring pixels' differences, blind
    to smooth structure). Each rule that leaves a frame out says its premise:

    - Outlying pixels (a light leak, a gradient, a cloud, a streak across the frame, a
      block of garbage): left out when the fraction of its pixels further than
      `PIXEL_SIGMA` sigma from the fit exceeds the group's usual fraction (their
      median) by more than `EXCESS_FRACTION` and `EXCESS_RATIO` times. Premise: frames
      of one group have about as many outlying pixels as each other (cosmic rays come
      with the exposure, hot pixels scale with the fit); checked by comparing each
      frame with the group's median fraction, so a group that has many (an infrared
      array whose blocks of rows drift) has a rule that steps aside for them.
    - Rows and columns (a streak along them, a band of rows offset by a readout
      glitch, a gradient): left out when at least `MIN_LINES` of its rows and columns
      have a median further from the fit than `LINE_NOISE` times the pixel noise and
      `LINE_SIGMA` times the noise of such medians. Premise: the median of a row of
      hundreds of pixels moves by far less than one pixel's noise between good frames;
      checked by measuring the noise of the medians on the frame itself (a camera
      whose rows jump, as CMOS sensors' do, raises its own limit).
    - The line itself. Premise: the best line is the one that matches the frame pixel
      by pixel; checked by the residual's pixel noise: a line that makes it noisier
      than the frame's levelling alone (`FIT_NOISE_GROWTH`) was bent by large-scale
      structure (a light leak following the faint pattern of a bias), and steps aside
      for the levelling.
    - The group. Premise: most of the group is good, so its median is the truth the
      frames are judged by; checked twice. When a first pass finds frames to leave
      out, every frame is judged again against the median of the two thirds of the
      group that departed least (frames with a light leak would pull the median, and
      the good frames with it). A check that would still leave out more than
      `MAX_LEFT_OUT` of the group is in doubt: the group itself varies, every frame is
      kept, and ``note`` says why.

    Groups of fewer than `MIN_GROUP` frames are not checked.

    Parameters
    ----------
    samples : list of `FrameSample`
    names : list of str
        The frames' names, for the reasons and the note.
    kind : {"bias", "dark", "flat"}

    Returns
    -------
    `GroupCheck`
        The frames to leave out and why, or the note of a check in doubt.
    """
    n = len(samples)
    if n < MIN_GROUP:
        return GroupCheck()
    reasons, departures = _judge(samples, kind, range(n))
    if reasons:
        # Frames with a large defect pull the median they are judged against, and the
        # good frames with it: all are judged again against the median of the frames
        # that departed least, two thirds of the group (the checks' premise is that no
        # more than a third is bad).
        typical = np.argsort(departures, kind="stable")[:n - int(MAX_LEFT_OUT * n)]
        reasons, _ = _judge(samples, kind, typical)
    if len(reasons) > MAX_LEFT_OUT * n:
        return GroupCheck(note=_doubt(reasons, names, kind))
    return GroupCheck(left_out=tuple(sorted(reasons.items())))


def _judge(samples, kind, members):
    """``(reasons, departures)``: why each frame differs from the median of the frames
    ``members`` (by index), and how far each frame's rows and columns depart from it at
    most, in its pixel noise."""
    reference, reference_rows, levelling = _group_reference(samples, kind, members)
    residuals = [_residual(sample, reference, reference_rows, line)
                 for sample, line in zip(samples, levelling, strict=True)]
    fractions = np.array([_outlying_fraction(pixels, noise)
                          for pixels, _, noise in residuals])
    usual = float(np.nanmedian(fractions)) if np.isfinite(fractions).any() else 0.0
    reasons, departures = {}, []
    for i, (pixels, rows, noise) in enumerate(residuals):
        profiles = _profiles(pixels, rows)
        departures.append(_departure(profiles, noise))
        reason = (_excess_pixels(fractions[i], usual, kind)
                  or _deviating_lines(profiles, noise))
        if reason:
            reasons[i] = reason
    return reasons, np.nan_to_num(departures, nan=np.inf)


def _group_reference(samples, kind, members):
    """The median sample and median row profile of the frames ``members``, each frame
    first brought to the others' level (flats divided by their level, biases and darks
    less it), so that frames of different levels do not take turns in the median; and
    that levelling of each frame of ``samples`` as a line ``(a, b)``: the frame is
    ``a * median + b`` by levels alone."""
    levels = np.array([s.level for s in samples])
    if kind == "flat":
        shift = np.zeros(len(samples))
        scale = np.where(np.isfinite(levels) & (levels != 0), levels, 1.0)
    else:
        shift = np.where(np.isfinite(levels), levels, 0.0)
        scale = np.ones(len(samples))
    def levelled(values):
        return np.stack([((v - np.float32(shift[i])) / np.float32(scale[i])) for v, i in
                         zip(values, members, strict=True)])

    members = [int(i) for i in members]
    chosen = [samples[i] for i in members]
    reference = _median_of_frames(levelled([s.rows for s in chosen]))
    lines = list(zip(scale.tolist(), shift.tolist(), strict=True))
    if any(s.row_medians is None for s in chosen):
        return reference, None, lines
    return reference, _median_of_frames(levelled([s.row_medians for s in chosen])), lines


def _residual(sample, reference, reference_rows, levelling):
    """``(pixels, row medians, noise)``: the frame's sample and row medians less the
    best line ``a * reference + b``, and the pixel noise of that residual.

    The line fitted to the pixels is the best one unless it leaves a residual noisier,
    pixel to pixel, than the frame's ``levelling`` does (by more than
    `FIT_NOISE_GROWTH`): then the fit was made by large-scale structure (a light leak
    scaling the faint pattern of a bias's median), not by the pixels that the frame
    shares with the group, and the levelling is the line.
    """
    a, b = _robust_line(reference, sample.rows)
    pixels = sample.rows - (a * reference + b)
    noise = _difference_noise(pixels)
    by_level = sample.rows - (levelling[0] * reference + levelling[1])
    noise_by_level = _difference_noise(by_level)
    if not noise <= FIT_NOISE_GROWTH * noise_by_level:  # NaN too: the levelling
        (a, b), pixels, noise = levelling, by_level, noise_by_level
    rows = None
    if reference_rows is not None and sample.row_medians is not None:
        rows = sample.row_medians - (a * reference_rows + b)
    return pixels, rows, noise


def _robust_line(x, y):
    """``(a, b)`` of ``y ~ a * x + b`` over the pixels finite in both: least squares,
    then least squares again without the pixels further than `FIT_CLIP` robust sigma
    from the first line (cosmic rays, a streak, garbage: they must not move the line).
    Every pixel takes part in the first fit: the hot pixels of a dark, far out along
    ``x``, are what fixes its scale."""
    good = np.isfinite(x) & np.isfinite(y)
    step = max(1, int(np.count_nonzero(good) // _FIT_PIXELS))
    x, y = x[good][::step].astype(np.float64), y[good][::step].astype(np.float64)
    if x.size < 3:
        return 1.0, 0.0
    a, b = _least_squares(x, y)
    residual = y - (a * x + b)
    centre, spread = _median_and_mad_std(residual.copy())
    if spread > 0:
        keep = np.abs(residual - centre) <= FIT_CLIP * spread
        if np.count_nonzero(keep) >= 3:
            a, b = _least_squares(x[keep], y[keep])
    return a, b


def _least_squares(x, y):
    """The least-squares line through ``(x, y)``; a level alone when ``x`` is constant."""
    x_mean, y_mean = x.mean(), y.mean()
    dx = x - x_mean
    # einsum, not numpy.dot: BLAS's threads made dot five times slower on a busy machine.
    variance = float(np.einsum("i,i->", dx, dx))
    a = float(np.einsum("i,i->", dx, y - y_mean)) / variance if variance > 0 else 0.0
    return a, float(y_mean - a * x_mean)


def _outlying_fraction(pixels, noise):
    """The fraction of the finite ``pixels`` further than `PIXEL_SIGMA` ``noise`` from
    their median; NaN when the noise cannot be measured."""
    finite = pixels[np.isfinite(pixels)]
    if not finite.size or not np.isfinite(noise) or noise <= 0:
        return np.nan
    centre = median_of_all(finite)
    return np.count_nonzero(np.abs(finite - centre) > PIXEL_SIGMA * noise) / finite.size


def _excess_pixels(fraction, usual, kind):
    """Why a frame has too many outlying pixels, or ``None``."""
    if (not np.isfinite(fraction) or fraction - usual <= EXCESS_FRACTION
            or fraction <= EXCESS_RATIO * usual):
        return None
    return (f"{fraction:.1%} of its pixels differ from the {kind} frames' median (fitted "
            f"to its level and scale) by more than {PIXEL_SIGMA:g} sigma, where the "
            f"others have {usual:.1%} (light, a gradient, a streak or garbage)")


def _profiles(pixels, row_medians):
    """The medians of the columns of a residual sample, and of its rows (``row_medians``,
    the residual of the frame's row medians; ``None`` when unknown)."""
    # Along contiguous memory: bottleneck's median across rows is slower. (A column
    # without a good pixel is NaN, with no warning from bottleneck.)
    columns = bn.nanmedian(np.ascontiguousarray(pixels.T), axis=1)
    return {"columns": columns, "rows": row_medians}


def _departure(profiles, noise):
    """How far a frame's row or column medians depart from their median at most, in its
    pixel ``noise``; NaN when unknown."""
    largest = [np.nanmax(np.abs(p - np.nanmedian(p))) for p in profiles.values()
               if p is not None and np.isfinite(p).any()]
    return max(largest) / noise if largest and noise > 0 else np.nan


def _deviating_lines(profiles, noise):
    """Why a frame's rows or columns depart from the group's, or ``None``; ``profiles``
    are the medians of its residual's columns and rows (`_profiles`), ``noise`` its
    pixel noise."""
    if not np.isfinite(noise) or noise <= 0:
        return None
    found = []
    for what, profile in profiles.items():
        far = _far_from_profile(profile, noise)
        if far is not None and np.count_nonzero(far):
            found.append((what, far, profile))
    n_far = sum(np.count_nonzero(far) for _, far, _ in found)
    if n_far < MIN_LINES:
        return None
    words, worst = [], 0.0
    for what, far, profile in found:
        worst = max(worst, float(np.max(np.abs(profile[far] - np.nanmedian(profile)))))
        words.append(f"{np.count_nonzero(far)} {what} (from {np.flatnonzero(far)[0]})")
    worst /= noise
    return (f"the medians of {' and '.join(words)} depart from the fitted group by up "
            f"to {worst:.1f} times the pixel noise (a streak, a band of rows, a gradient)")


def _far_from_profile(profile, noise):
    """Which values of a row or column ``profile`` of a residual are far from its
    median: beyond `LINE_NOISE` pixel ``noise`` and `LINE_SIGMA` times the noise of
    the profile (neighbours' differences, blind to a smooth gradient); ``None`` when
    there is no profile."""
    if profile is None:
        return None
    finite = profile[np.isfinite(profile)]
    if finite.size < 3:
        return None
    # The clipped standard deviation, not the MAD: medians of a camera whose values are
    # multiples of 4 or 16 (a CMOS's) differ by 0 more often than not, and their MAD is
    # 0; clipping still leaves out the steps at the edges of a streak or a band.
    steps = np.diff(finite)
    profile_noise = float(sigma_clipped_stats(steps, sigma=LINE_SIGMA)[2] / np.sqrt(2))
    limit = max(LINE_NOISE * noise, LINE_SIGMA * profile_noise)
    with np.errstate(invalid="ignore"):
        return np.abs(profile - np.median(finite)) > limit


def _doubt(reasons, names, kind):
    """The note of a check in doubt: which frames it would leave out and why not."""
    first = min(reasons)
    named = ", ".join(names[i] for i in sorted(reasons)[:3]) + \
        (" ..." if len(reasons) > 3 else "")
    return (f"the frame checks would leave out {len(reasons)} of the {len(names)} {kind} "
            f"frames ({named}; {names[first]}: {reasons[first]}): more than a third of "
            "the group, so the group itself varies; all kept")


def _median_of_frames(stack):
    """``numpy.median(stack, axis=0)``, the same numbers, by sorting along the frames
    (numpy's sort is vectorised, its selection along the first axis is not): the middle
    value, or the mean of the two middle values; NaN where a frame has NaN."""
    n = len(stack)
    ordered = np.sort(stack, axis=0)  # NaN sort last: the last frame says if any is NaN
    middle = n // 2
    if n % 2:
        median = ordered[middle]
    else:
        # As numpy.mean of the two values, in the stack's precision.
        median = np.add(ordered[middle - 1], ordered[middle]) / 2
    if ordered.dtype.kind == "f":
        median = np.where(np.isnan(ordered[-1]), np.nan, median)
    return median.astype(stack.dtype, copy=False)


def _difference_noise(difference):
    """Pixel-to-pixel noise of a difference image, blind to smooth structure: the robust
    deviation of the differences of neighbouring pixels along rows, over sqrt(2)."""
    steps = np.diff(difference, axis=1)
    steps = steps[np.isfinite(steps)]
    return float(_median_and_mad_std(steps)[1] / np.sqrt(2)) if steps.size else np.nan


def _median_and_mad_std(values):
    """`numpy.median` and astropy's `~astropy.stats.mad_std` of finite ``values`` (a 1-D
    array of this function's own, which it overwrites), the same numbers, the medians
    by `median_of_all`."""
    median = median_of_all(values, overwrite_input=True)
    deviations = np.subtract(values, median, out=values)
    return median, 1.482602218505602 * median_of_all(np.abs(deviations, out=deviations),
                                                     overwrite_input=True)


# ------------------------------------------------------------------ cosmic rays
#: The PSF width (FWHM, pixels) used when the frame's stars cannot be measured.
DEFAULT_FWHM = 2.5
#: Gain (e-/ADU) used when neither the profile nor the sky of the frame gives one.
DEFAULT_GAIN = 1.0


def measure_fwhm(data, *, mask=None, sky=None, noise=None, n_stars=15):
    """The median FWHM (pixels) of the brightest unsaturated stars of a frame.

    Peaks at least 20 sigma above the sky (the brightest pixel of their 11 x 11 box, as
    `photutils.detection.find_peaks` finds them) whose eight neighbours are on average at
    least a third of the peak (a star; a cosmic-ray hit or a hot pixel stands alone) are
    fitted with a 2-D Gaussian (`photutils.psf.fit_fwhm`); fits narrower than 1.5 pixels
    are left out. Returns ``None`` when fewer than 3 stars are measured.
    """
    fwhms = star_fwhms(data, mask=mask, sky=sky, noise=noise, n_stars=n_stars)
    return None if fwhms is None else float(np.median(fwhms))


def star_fwhms(data, *, mask=None, sky=None, noise=None, n_stars=15):
    """The FWHMs (pixels) of the brightest unsaturated stars of a frame, as
    `measure_fwhm` measures them (a `numpy.ndarray`), or ``None`` when fewer than 3."""
    from photutils.psf import fit_fwhm

    if sky is None or noise is None or not (np.isfinite(sky) and np.isfinite(noise)) \
            or noise <= 0:
        return None
    data = np.asarray(data)
    bad = ~np.isfinite(data)
    if mask is not None:
        bad |= np.asarray(mask, bool)
    peaks = _peaks(data, bad, sky + 20 * noise, box=11, border=8)
    positions = []
    for y, x in peaks:
        if bad[y - 1:y + 2, x - 1:x + 2].any():
            continue  # a saturated or bad neighbour: no shape to measure
        box = data[y - 1:y + 2, x - 1:x + 2].astype(np.float64) - sky
        if (box.sum() - box[1, 1]) / 8 >= box[1, 1] / 3:
            positions.append((x, y))
        if len(positions) == n_stars:
            break
    if len(positions) < 3:
        return None
    # Only the stars' boxes are fitted: the sky is taken off there, not over the frame.
    half = 3
    cutouts = np.zeros((2 * half + 1, len(positions) * (2 * half + 2)))
    for i, (x, y) in enumerate(positions):
        left = i * (2 * half + 2)
        around = (slice(y - half, y + half + 1), slice(x - half, x + half + 1))
        cutouts[:, left:left + 2 * half + 1] = np.where(bad[around], 0.0, data[around] - sky)
    centres = [(i * (2 * half + 2) + half, half) for i in range(len(positions))]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fits that do not converge: dropped below
            fwhm = np.asarray(fit_fwhm(cutouts, xypos=centres, fit_shape=2 * half + 1),
                              dtype=float)
    except (ValueError, RuntimeError):
        return None
    fwhm = fwhm[np.isfinite(fwhm) & (fwhm >= 1.5) & (fwhm < 30)]
    return fwhm if fwhm.size >= 3 else None


def _peaks(data, bad, threshold, *, box, border):
    """The ``(y, x)`` of the pixels above ``threshold`` that are the largest of their
    ``box`` x ``box`` neighbourhood (ties kept, ``bad`` pixels left out), at least
    ``border`` pixels from the edges, brightest first: `photutils.detection.find_peaks`'s
    peaks, looked for among the pixels above the threshold only (a few thousand of a
    frame's millions) instead of through a maximum filter over every pixel."""
    with np.errstate(invalid="ignore"):
        above = data > threshold
    above &= ~bad
    inner = np.zeros(data.shape, bool)
    inner[border:data.shape[0] - border, border:data.shape[1] - border] = True
    ys, xs = np.nonzero(above & inner)
    half = box // 2
    values = data[ys, xs]
    keep = np.ones(len(ys), bool)
    for start in range(0, len(ys), 4096):  # in pieces: boxes of 4096 peaks at most
        part = slice(start, start + 4096)
        for dy in range(-half, half + 1):
            rows = np.clip(ys[part] + dy, 0, data.shape[0] - 1)
            for dx in range(-half, half + 1):
                cols = np.clip(xs[part] + dx, 0, data.shape[1] - 1)
                neighbour = data[rows, cols]
                fine = ~bad[rows, cols]
                keep[part] &= ~(fine & (neighbour > values[part]))
    order = np.argsort(-values[keep], kind="stable")
    return list(zip(ys[keep][order].tolist(), xs[keep][order].tolist(), strict=True))


def noise_model(sky, noise, gain=None, read_noise=None):
    """The gain (e-/ADU) and read noise (e-) that L.A.Cosmic's noise model uses, and what
    was assumed, in words (``""`` when both were given).

    Without a gain, the frame's own: the sky level over its variance (in a sky-limited
    frame, variance = sky / gain), its read noise then folded in (0 e-); without a
    measurable sky, `DEFAULT_GAIN`. Without a read noise, the part of the sky's variance
    that the sky's Poisson noise does not explain.
    """
    said = []
    if gain is None:
        if np.isfinite(sky) and np.isfinite(noise) and sky > 0 and noise > 0:
            gain = float(np.clip(sky / noise**2, 0.05, 50.0))
            said.append(f"gain unknown: {gain:.3g} e-/ADU, measured from the sky "
                        "(level over variance)")
            if read_noise is None:
                read_noise = 0.0
        else:
            gain = DEFAULT_GAIN
            said.append(f"gain unknown and not measurable: {gain:g} e-/ADU assumed")
    if read_noise is None:
        variance = (noise * gain) ** 2 - max(sky, 0.0) * gain if np.isfinite(noise) else 0.0
        read_noise = float(np.sqrt(max(variance, 0.0)))
        said.append(f"read noise unknown: {read_noise:.3g} e-, measured from the sky")
    return float(gain), float(read_noise), "; ".join(said)


#: L.A.Cosmic's detection limit: a hit's Laplacian over the noise model, in sigma
#: (astroscrappy's own default).
CR_SIGCLIP = 4.5
#: L.A.Cosmic's contrast limit (``objlim``) for stars of FWHM `CR_CONTRAST_FWHM` pixels;
#: it goes as the inverse square of the FWHM (see `cosmic_ray_contrast`) ...
CR_CONTRAST = 8.0
CR_CONTRAST_FWHM = 2.5
#: ... within these bounds.
CR_CONTRAST_BOUNDS = (1.0, 16.0)
#: L.A.Cosmic's iterations: a track of up to 5 pixels is found whole in the first two (the
#: neighbours of a hit are added within an iteration); a third and fourth found no
#: more on the star fields of the tests, at the cost of a pass over the frame each.
CR_ITERATIONS = 2


def cosmic_ray_contrast(fwhm):
    """L.A.Cosmic's contrast limit (``objlim``) for a frame whose stars have this FWHM.

    With the median fine-structure image of the original L.A.Cosmic (``fsmode="median"``),
    a hit's contrast (its Laplacian over the fine structure under it) does not depend on
    the stars, while a star core's contrast falls as the square of the star's width: the
    limit is ``CR_CONTRAST * (CR_CONTRAST_FWHM / fwhm) ** 2``, 12.5 for stars of 2
    pixels (whose cores are nearly as sharp as a hit) and 2 for stars of 5 pixels (where
    a hit on a star's wing stands out). Chosen on star fields of Gaussian and Moffat
    stars of 2 to 5 pixels with hits of 1 to 5 pixels (the tests say what it finds).

    Examples
    --------
    >>> from ccdproc_ext.quality import cosmic_ray_contrast
    >>> cosmic_ray_contrast(2.5), cosmic_ray_contrast(5.0)
    (8.0, 2.0)
    """
    low, high = CR_CONTRAST_BOUNDS
    return float(np.clip(CR_CONTRAST * (CR_CONTRAST_FWHM / float(fwhm)) ** 2, low, high))


def cosmic_ray_rule(*, clean=False):
    """How cosmic rays are found in a night's science frames, in words (the plan's
    ``cosmic_rays``); each frame's own numbers are in its ``CR*`` cards."""
    return ("L.A.Cosmic (ccdproc.cosmicray_lacosmic) on each calibrated science frame in "
            f"electrons: median fine structure, detection limit {CR_SIGCLIP:g} sigma, "
            f"contrast limit {CR_CONTRAST:g} x ({CR_CONTRAST_FWHM:g} px / FWHM)^2 with the "
            "FWHM of the frame's stars, the profile's gain and read noise (measured from "
            "the sky when it gives none); hits masked"
            + (" and replaced" if clean else "") + " (CR* cards of each output)")


@dataclass(frozen=True)
class CosmicRaySettings:
    """What L.A.Cosmic is given for one frame, chosen from the frame (see
    `cosmic_ray_settings`); written in its header as the ``CR*`` cards."""

    gain: float  # e-/ADU of the frame's pixels (1 for a frame in electrons)
    read_noise: float  # e-
    fwhm: float  # pixels, the median of the stars measured
    sharpest_fwhm: float  # pixels, the sharpest star measured: objlim is chosen for it
    fwhm_measured: bool  # False: too few stars, DEFAULT_FWHM
    objlim: float
    sigclip: float = CR_SIGCLIP
    fsmode: str = "median"
    niter: int = CR_ITERATIONS
    saturation: float | None = None  # in the frame's unit


def cosmic_ray_settings(ccd, *, gain, read_noise, saturation=None, sky=None, noise=None):
    """L.A.Cosmic's settings for a calibrated frame: the noise model given (``gain``,
    ``read_noise``: see `noise_model`), the FWHM of its stars measured (`measure_fwhm`,
    `DEFAULT_FWHM` when too few are measured) and the contrast limit that its sharpest
    star calls for (`cosmic_ray_contrast`): a star sharper than the median (the PSF
    changes across a frame) keeps its core.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The calibrated frame.
    gain, read_noise : float
        e-/ADU of its pixels, read noise in electrons.
    saturation : float or None, optional
        Saturation level in the frame's unit.
    sky, noise : float or None, optional
        The frame's sky level and noise (`~ccdproc_ext.science.sky_statistics`): the
        stars are measured above them.

    Returns
    -------
    `CosmicRaySettings`
    """
    fwhms = star_fwhms(ccd.data, mask=ccd.mask, sky=sky, noise=noise)
    if fwhms is None:
        fwhm = sharpest = DEFAULT_FWHM
    else:
        fwhm, sharpest = float(np.median(fwhms)), float(np.min(fwhms))
    return CosmicRaySettings(gain=float(gain), read_noise=float(read_noise), fwhm=fwhm,
                             sharpest_fwhm=sharpest, fwhm_measured=fwhms is not None,
                             objlim=cosmic_ray_contrast(sharpest), saturation=saturation)


def detect_cosmic_rays(ccd, *, gain, read_noise, saturation=None, psffwhm=DEFAULT_FWHM,
                       clean=False, sigclip=CR_SIGCLIP, objlim=None, fsmode="median",
                       niter=CR_ITERATIONS):
    """Find (and optionally replace) the cosmic-ray hits of a calibrated frame.

    `ccdproc.cosmicray_lacosmic` works in electrons: a frame in ADU is given with its
    ``gain`` and ``gain_apply=True`` (ccdproc's documented way), a frame in electrons
    with a gain of 1. The result stays in the frame's own unit. It is run once, on the
    boxes of the frame where a hit can be (`search_boxes`) laid side by side, or on the
    whole frame when they cover most of it: the same hits either way. A group of hits
    whose brightest pixel is a star's core (its neighbours a third as bright on average)
    is given back.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The calibrated frame; its masked pixels are not searched. Not modified.
    gain : float
        e-/ADU of the frame's pixels (ignored for a frame in electrons).
    read_noise : float
        Read noise in electrons.
    saturation : float or None, optional
        Saturation level in the frame's unit: stars brighter are not taken for hits.
    psffwhm : float, optional
        FWHM of the frame's stars, pixels. Default is `DEFAULT_FWHM`.
    clean : bool, optional
        Replace the hits by L.A.Cosmic's cleaned values (the mean of their good
        neighbours). Default is ``False``: the pixels are left as they are.
    sigclip : float, optional
        L.A.Cosmic's detection limit. Default is `CR_SIGCLIP`.
    objlim : float or None, optional
        L.A.Cosmic's contrast limit. Default is ``None``: `cosmic_ray_contrast` of
        ``psffwhm``.
    fsmode : {"median", "convolve"}, optional
        How L.A.Cosmic models the fine structure of stars: ``"median"`` (the default, the
        original L.A.Cosmic's median filters; a track of hits is not fine structure to
        them) or ``"convolve"`` (with a Gaussian PSF of ``psffwhm``).
    niter : int, optional
        L.A.Cosmic's iterations. Default is `CR_ITERATIONS`.

    Returns
    -------
    result : `~astropy.nddata.CCDData`
        A new frame: the hits masked (and replaced, with ``clean``).
    hits : bool `numpy.ndarray`
    """
    in_electrons = ccd.unit is not None and ccd.unit.is_equivalent(u.electron)
    gain = 1.0 if in_electrons else float(gain)
    satlevel = np.inf if saturation is None else float(saturation) * gain
    if objlim is None:
        objlim = cosmic_ray_contrast(psffwhm)
    options = dict(gain=gain * u.electron / u.adu if not in_electrons else 1.0,
                   readnoise=read_noise * u.electron, satlevel=min(satlevel, 1e30),
                   psffwhm=psffwhm, psfsize=max(7, 2 * int(np.ceil(1.5 * psffwhm)) + 1),
                   sigclip=sigclip, objlim=objlim, fsmode=fsmode, niter=niter,
                   gain_apply=True)
    unit = ccd.unit if ccd.unit is not None else u.adu
    # A star cut by the frame's edge looks as sharp as a hit: the frame is mirrored
    # beyond its edges, where such a star is whole again, and the border cut off after.
    border = int(np.ceil(2 * psffwhm)) + 2
    data = np.pad(ccd.data, border, mode="reflect")
    mask = np.zeros(data.shape, bool) if ccd.mask is None else \
        np.pad(np.asarray(ccd.mask, bool), border, mode="reflect")
    boxes = search_boxes(data, gain=gain, read_noise=read_noise, sigclip=sigclip)
    if boxes is None:
        hits, cleaned = _lacosmic(data, mask, unit, options)
    else:
        hits, cleaned = _lacosmic_in_boxes(data, mask, unit, options, boxes)
    hits &= ~_star_cores(data, hits)
    inside = (slice(border, -border), slice(border, -border))
    hits = hits[inside]
    result = ccd.copy()
    result.mask = hits if ccd.mask is None else (np.asarray(ccd.mask, bool) | hits)
    if clean and hits.any():
        replaced = cleaned[inside][hits] / gain  # back to the frame's unit
        result.data[hits] = replaced.astype(result.data.dtype)
    return result, hits


def _lacosmic(data, mask, unit, options):
    """`ccdproc.cosmicray_lacosmic` on an image: the hits among its pixels not masked,
    and its cleaned values (in electrons)."""
    import ccdproc
    from threadpoolctl import threadpool_limits

    # Frames are calibrated in parallel, one a core: astroscrappy's OpenMP threads on top
    # of them oversubscribe the cores and wait for each other spinning. One thread each
    # (L.A.Cosmic 2.5 times faster on a busy machine of two cores).
    with threadpool_limits(limits=1, user_api="openmp"):
        found = ccdproc.cosmicray_lacosmic(CCDData(data, unit=unit, mask=mask), **options)
    return np.asarray(found.mask, bool) & ~mask, found.data


#: Hits are looked for in boxes reaching this many pixels beyond the pixels that can be
#: hits (see `search_boxes`): as far as L.A.Cosmic's filters reach from a hit (its
#: 7-pixel medians of the Laplacian and the noise, the 5- and 9-pixel medians of its fine
#: structure), so that what it finds within is what it finds in the whole frame (a test
#: compares the two; 6 pixels was one hit pixel off on a frame of 2048 x 2048).
BOX_MARGIN = 8
#: The boxes are made of cells of this many pixels a side ...
BOX_CELL = 4
#: ... and the whole frame is searched when they would cover more than this fraction.
BOX_MAX_FRACTION = 0.5


def search_boxes(data, *, gain, read_noise, sigclip=CR_SIGCLIP):
    """Where L.A.Cosmic can find hits in a frame: boxes (pairs of slices) around every
    pixel that could be one, or ``None`` when they would cover most of the frame.

    A pixel is a hit for L.A.Cosmic only when its Laplacian (of the frame sampled twice
    as finely, as L.A.Cosmic computes it) less its median is above ``sigclip`` times its
    noise model, or when it is next to such a pixel. Its noise is taken here from the
    lowest of its four neighbours (in electrons, with the read noise), which is at most
    L.A.Cosmic's (from the median of the frame's level over 7 pixels) unless the frame
    drops steeply around it, and its Laplacian is not lessened by its median: a pixel
    that can pass L.A.Cosmic's test passes this one. The boxes reach `BOX_MARGIN`
    pixels beyond such pixels: L.A.Cosmic run on them finds the hits it finds in the
    whole frame, at a fraction of the cost on a frame of sky with sparse stars.
    """
    from scipy import ndimage

    seeds = _laplacian_bound(data, gain, read_noise) > sigclip
    ny, nx = seeds.shape
    cy, cx = -(-ny // BOX_CELL), -(-nx // BOX_CELL)
    padded = np.zeros((cy * BOX_CELL, cx * BOX_CELL), bool)
    padded[:ny, :nx] = seeds
    cells = padded.reshape(cy, BOX_CELL, cx, BOX_CELL).any(axis=(1, 3))
    reach = -(-BOX_MARGIN // BOX_CELL)
    cells = ndimage.binary_dilation(cells, structure=np.ones((2 * reach + 1,) * 2, bool))
    labels, _ = ndimage.label(cells, structure=np.ones((3, 3), bool))
    boxes = [(slice(rows.start * BOX_CELL, min(rows.stop * BOX_CELL, ny)),
              slice(cols.start * BOX_CELL, min(cols.stop * BOX_CELL, nx)))
             for rows, cols in ndimage.find_objects(labels)]
    area = sum((b[0].stop - b[0].start) * (b[1].stop - b[1].start) for b in boxes)
    return None if area > BOX_MAX_FRACTION * ny * nx else boxes


def _laplacian_bound(data, gain, read_noise):
    """L.A.Cosmic's Laplacian over noise (its ``s``) of every pixel, in electrons (``data``
    times ``gain``), the noise of each taken from the lowest of its four neighbours (so,
    as a rule, above L.A.Cosmic's). Computed in bands of rows that stay in the
    processor's cache."""
    bound = np.zeros(data.shape, np.float32)
    for start in range(1, data.shape[0] - 1, 64):
        stop = min(start + 64, data.shape[0] - 1)
        band = np.multiply(data[start - 1:stop + 1], gain, dtype=np.float32)
        bound[start:stop, 1:-1] = _band_laplacian(band, np.float32(read_noise) ** 2)
    return bound


def _band_laplacian(band, read_variance):
    """`_laplacian_bound` of the inner rows of a band of rows (without its edge columns)."""
    centre = band[1:-1, 1:-1]
    left, right = band[1:-1, :-2], band[1:-1, 2:]
    up, down = band[:-2, 1:-1], band[2:, 1:-1]
    to_left, to_right, to_up, to_down = centre - left, centre - right, centre - up, \
        centre - down
    # Each of the four sub-pixels of the finer sampling sees the pixel itself twice and
    # one neighbour on each axis: 4 p - 2 p - a - b; L.A.Cosmic keeps the positive part
    # and averages the four.
    laplacian = np.maximum(to_left + to_up, 0)
    laplacian += np.maximum(to_right + to_up, 0)
    laplacian += np.maximum(to_left + to_down, 0)
    laplacian += np.maximum(to_right + to_down, 0)
    low = np.minimum(np.minimum(left, right), np.minimum(up, down))
    np.maximum(low, 0, out=low)
    low += read_variance
    np.sqrt(low, out=low)
    # Averaged over four, and over twice the noise (L.A.Cosmic's factor of the finer
    # sampling).
    low *= 8
    laplacian /= low
    return laplacian


def _lacosmic_in_boxes(data, mask, unit, options, boxes):
    """`_lacosmic` on the ``boxes`` of an image only, in one call: the boxes are laid
    side by side in rows (tallest first) in one mosaic, the rest of which is masked."""
    heights = [b[0].stop - b[0].start for b in boxes]
    widths = [b[1].stop - b[1].start for b in boxes]
    width = max(data.shape[1], *widths)
    places, x, y, row_height = {}, 0, 0, 0
    for i in sorted(range(len(boxes)), key=lambda i: -heights[i]):
        if x + widths[i] > width:
            x, y, row_height = 0, y + row_height, 0
        places[i] = (slice(y, y + heights[i]), slice(x, x + widths[i]))
        x, row_height = x + widths[i], max(row_height, heights[i])
    level = np.nanmedian(data[::16, ::16])
    mosaic = np.full((y + row_height, width), level, dtype=data.dtype)
    mosaic_mask = np.ones(mosaic.shape, bool)
    for i, box in enumerate(boxes):
        mosaic[places[i]], mosaic_mask[places[i]] = data[box], mask[box]
    found, cleaned_mosaic = _lacosmic(mosaic, mosaic_mask, unit, options)
    hits = np.zeros(data.shape, bool)
    cleaned = np.zeros(data.shape, np.float32)
    for i, box in enumerate(boxes):
        part = found[places[i]]
        hits[box] |= part
        cleaned[box] = np.where(part, cleaned_mosaic[places[i]], cleaned[box])
    return hits, cleaned

def _star_cores(data, hits):
    """The groups of ``hits`` (touching pixels) that are a star's core, not a hit.

    L.A.Cosmic's median fine-structure image is low between two bright stars a few
    pixels apart (its 9-pixel median takes both in), so the side of a star next to
    another can pass its contrast limit. A hit is sharp: the brightest pixel of a group
    stands above its eight neighbours, which along a track of hits are two at most. A
    group whose brightest pixel has neighbours at least a third as high on average
    (above the background of the ring of pixels three away: the test of `measure_fwhm`
    for a star) is a star's core.
    """
    from scipy import ndimage

    labels, n_groups = ndimage.label(hits, structure=np.ones((3, 3), bool))
    if not n_groups:
        return np.zeros(hits.shape, bool)
    # The brightest pixel of each group, from the hits alone (not a sort of the frame).
    where = np.flatnonzero(labels)
    group = labels.ravel()[where]
    order = np.lexsort((-data.ravel()[where], group))
    first = np.r_[True, group[order][1:] != group[order][:-1]]
    y, x = np.unravel_index(where[order][first], data.shape)
    ny, nx = data.shape
    inner = (y >= 3) & (y < ny - 3) & (x >= 3) & (x < nx - 3)
    y, x = y[inner], x[inner]
    ring = np.array([data[y + dy, x + dx] for dy in range(-3, 4) for dx in range(-3, 4)
                     if max(abs(dy), abs(dx)) == 3])
    background = np.median(ring, axis=0)
    neighbours = np.mean([data[y + dy, x + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                          if dy or dx], axis=0)
    star = np.zeros(n_groups + 1, bool)
    star[1:][inner] = neighbours - background >= (data[y, x] - background) / 3
    return star[labels]
