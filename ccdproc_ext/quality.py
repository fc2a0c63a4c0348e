"""Data quality: the bits of the ``MASK`` extension and bad calibration frames.

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

Bad-pixel masks are made in `ccdproc_ext.bpm`, cosmic rays found in
`ccdproc_ext.cosmic_rays`.
"""

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import bottleneck as bn
import numpy as np
from astropy.stats import sigma_clipped_stats
from ccdproc.utils.slices import slice_from_string

from ._kernels import median_of_all

__all__ = [
    "BAD_PIXEL",
    "COSMIC_RAY",
    "EXCESS_FRACTION",
    "EXCESS_RATIO",
    "FIT_NOISE_GROWTH",
    "LINE_NOISE",
    "LINE_SIGMA",
    "LOW_FLAT",
    "MASK_BITS",
    "MAX_LEFT_OUT",
    "MIN_GROUP",
    "MIN_LINES",
    "NOT_FINITE",
    "PIXEL_SIGMA",
    "SATURATED",
    "FrameSample",
    "GroupCheck",
    "check_calibration_frames",
    "frame_sample",
    "mask_bits",
    "median_and_mad_std",
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
    `~ccdproc_ext.overscan.overscan_and_trim`); a frame that was not trimmed keeps every pixel.
    Returns ``None`` when the result would not be of ``shape``.
    """
    section = header.get("TRIM")
    if isinstance(section, str) and section.strip():
        try:
            raw_pixels = raw_pixels[slice_from_string(section, fits_convention=True)]
        except ValueError:
            return None
    return raw_pixels if raw_pixels.shape == tuple(shape) else None

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
#: frame's levelling alone is not trusted (see ``_residual``).
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

    Every ``step``-th row, ``step`` being the frame's size over ``_SAMPLE_PIXELS``: about
    that many pixels whatever the frame's size, so that the checks cost the same per
    frame on any camera and the samples of a master's frames stay small in memory. The
    median of every row (a band of rows, a streak along them, may fall between the rows
    sampled) is taken over about ``_PROFILE_COLUMNS`` columns.
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


def check_calibration_frames(samples, names, kind, *, workers=1):
    """Which calibration frames of one master have a defect the others do not have.

    A frame is compared with its group's median after the straight line
    ``a * median + b`` that fits it best (``_residual``: least squares, then again without
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
    workers : int, optional
        Threads measuring the frames against the group's median at the same time (the
        same numbers). Default is 1.

    Returns
    -------
    `GroupCheck`
        The frames to leave out and why, or the note of a check in doubt.
    """
    n = len(samples)
    if n < MIN_GROUP:
        return GroupCheck()
    with ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
        each = map if pool is None else pool.map
        reasons, departures = _judge(samples, kind, range(n), each)
        if reasons:
            # Frames with a large defect pull the median they are judged against, and
            # the good frames with it: all are judged again against the median of the
            # frames that departed least, two thirds of the group (the checks' premise
            # is that no more than a third is bad).
            typical = np.argsort(departures, kind="stable")[:n - int(MAX_LEFT_OUT * n)]
            reasons, _ = _judge(samples, kind, typical, each)
    if len(reasons) > MAX_LEFT_OUT * n:
        return GroupCheck(note=_doubt(reasons, names, kind))
    return GroupCheck(left_out=tuple(sorted(reasons.items())))


def _judge(samples, kind, members, each=map):
    """``(reasons, departures)``: why each frame differs from the median of the frames
    ``members`` (by index), and how far each frame's rows and columns depart from it at
    most, in its pixel noise. ``each`` maps a function over the frames (``map``, or a
    thread pool's: numpy and bottleneck only, no warning filters, run in it)."""
    reference, reference_rows, levelling = _group_reference(samples, kind, members, each)

    def measured(sample, line):
        pixels, rows, noise = _residual(sample, reference, reference_rows, line)
        return _outlying_fraction(pixels, noise), _profiles(pixels, rows), noise

    measures = list(each(measured, samples, levelling))
    fractions = np.array([fraction for fraction, _, _ in measures])
    usual = float(np.nanmedian(fractions)) if np.isfinite(fractions).any() else 0.0
    reasons, departures = {}, []
    for i, (_, profiles, noise) in enumerate(measures):
        departures.append(_departure(profiles, noise))
        reason = (_excess_pixels(fractions[i], usual, kind)
                  or _deviating_lines(profiles, noise))
        if reason:
            reasons[i] = reason
    return reasons, np.nan_to_num(departures, nan=np.inf)


def _group_reference(samples, kind, members, each=map):
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
    # The median of each half of the pixels in its own thread (``each``).
    reference = np.concatenate(list(each(_median_of_frames, np.array_split(
        levelled([s.rows for s in chosen]), 2, axis=-1))), axis=-1)
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
    centre, spread = median_and_mad_std(residual.copy())
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
    return float(median_and_mad_std(steps)[1] / np.sqrt(2)) if steps.size else np.nan


def median_and_mad_std(values):
    """`numpy.median` and astropy's `~astropy.stats.mad_std` of finite ``values``, the
    same numbers, the medians by ``ccdproc_ext.combine.median_of_all``.

    Parameters
    ----------
    values : `numpy.ndarray`
        A 1-D array of finite values, of the caller's own: it is overwritten.

    Returns
    -------
    median, mad_std : float
    """
    median = median_of_all(values, overwrite_input=True)
    deviations = np.subtract(values, median, out=values)
    return median, 1.482602218505602 * median_of_all(np.abs(deviations, out=deviations),
                                                     overwrite_input=True)
