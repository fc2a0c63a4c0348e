"""Cosmic rays: L.A.Cosmic on a calibrated frame, with settings chosen from the frame.

`detect_cosmic_rays` runs `ccdproc.cosmicray_lacosmic` (L.A.Cosmic, through astroscrappy)
on a calibrated frame, in electrons, with the camera's gain, read noise and saturation
(`noise_model` when the camera gives none); `cosmic_ray_settings` chooses its contrast
limit from the FWHM of the frame's stars (`star_fwhms`, `measure_fwhm`). It is run on the
boxes of the frame where a hit can be (`search_boxes`), and a group of hits that is a
star's core is given back.
"""

from dataclasses import dataclass

import astropy.units as u
import ccdproc
import numpy as np
from astropy.nddata import CCDData
from scipy import ndimage
from threadpoolctl import threadpool_limits

from ._warnings import ignoring

__all__ = [
    "BOX_CELL",
    "BOX_MARGIN",
    "BOX_MAX_FRACTION",
    "CR_CONTRAST",
    "CR_CONTRAST_BOUNDS",
    "CR_CONTRAST_FWHM",
    "CR_ITERATIONS",
    "CR_SIGCLIP",
    "DEFAULT_FWHM",
    "DEFAULT_GAIN",
    "CosmicRaySettings",
    "cosmic_ray_contrast",
    "cosmic_ray_rule",
    "cosmic_ray_settings",
    "detect_cosmic_rays",
    "measure_fwhm",
    "noise_model",
    "search_boxes",
    "star_fwhms",
]

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
    # (photutils.psf, with matplotlib behind it, doubles the time `import ccdproc_ext`
    # takes: imported when stars are measured)
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
        with ignoring(Warning):  # fits that do not converge: dropped below
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
    >>> from ccdproc_ext.cosmic_rays import cosmic_ray_contrast
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
        The frame's sky level and noise (``ccdproc_ext.science.sky_statistics``): the
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
