# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Fast image combination in bounded memory: a drop-in for `ccdproc.combine`.

`ccdproc.combine` re-reads every input file once per memory chunk (its cost grows
with the square of the number of frames, ccdproc issue #1012) and works through numpy
masked arrays. `combine` here opens every file once and reads it in a few pieces of
many rows (a few MiB each, however many files there are: the cost grows linearly with
the number of frames), reading the next piece while threads combine full-width bands of
rows of the current one on plain arrays in which rejected values are NaN: means, sums
and deviations with bottleneck, as ccdproc, and medians with sorting networks that
select exactly the values bottleneck would (on the integers themselves for 16-bit raw
frames). For the same options it
returns the same pixels, mask and uncertainty as ccdproc (the test suite compares them),
apart from the few deliberate differences listed in the Notes of `combine`.

Example
-------
>>> import numpy as np
>>> from astropy.nddata import CCDData
>>> from ccdproc_ext.combine import combine
>>> frames = [CCDData(np.full((4, 5), level), unit="adu") for level in (1.0, 2.0, 6.0)]
>>> master = combine(frames, method="median")
>>> master.data[0, 0], master.meta["NCOMBINE"]
(np.float64(2.0), 3)
"""

import contextlib
import functools
import inspect
import itertools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import bottleneck as bn
import numpy as np
from astropy import stats
from astropy.nddata import CCDData, StdDevUncertainty
from ccdproc import ImageFileCollection
from ccdproc.core import sigma_func
from numpy import ma

from ._allocator import freed_memory_reused
from ._raw_parts import checked_reader_kwargs
from ._raw_parts import open_frame as _open_frame

__all__ = ["combine"]

log = logging.getLogger(__name__)

# Default memory limit of `combine`, in bytes (ccdproc's default is 16e9).
_DEFAULT_MEM_LIMIT = 2e9

# Upper bound of the working set of one band of rows. Bands are cut from pieces already
# read, so their height does not change the reads; larger bands only cost memory, and
# bands much thinner than this spend their time in Python calls.
_BAND_TARGET_BYTES = 32 * 2**20

# Upper bound of the rows of one file read at once. Reads of a few MiB cost no more per
# byte than reading the whole file; larger pieces would only delay the first band.
_PIECE_TARGET_BYTES = 4 * 2**20

# The sorting networks used for medians cost O(n log² n) per pixel; beyond this many
# frames bottleneck's O(n) quickselect is the faster of the two.
_NETWORK_MAX_FRAMES = 128

# Pixels per block pushed through a sorting network: the frames of one block should fit
# in a core's L2 cache while each numpy call still gets enough pixels to amortise its
# overhead.
_NETWORK_BLOCK_BYTES = 2**21
# The same for 16-bit integers, whose vector operations take twice as many values.
_INTEGER_BLOCK_BYTES = 2**22

# 1 / Φ⁻¹(3/4): converts a median absolute deviation into a standard deviation. The
# same literal as in astropy's mad_std and ccdproc's sigma_func, so results match bitwise.
_MAD_TO_STD = 1.482602218505602

_METHODS = ("average", "median", "sum")


# --------------------------------------------------------------------------- public API


def combine(
    img_list,
    output_file=None,
    method="average",
    weights=None,
    scale=None,
    mem_limit=_DEFAULT_MEM_LIMIT,
    clip_extrema=False,
    nlow=1,
    nhigh=1,
    minmax_clip=False,
    minmax_clip_min=None,
    minmax_clip_max=None,
    sigma_clip=False,
    sigma_clip_low_thresh=3,
    sigma_clip_high_thresh=3,
    sigma_clip_func=ma.mean,
    sigma_clip_dev_func=ma.std,
    dtype=None,
    combine_uncertainty_function=None,
    overwrite_output=False,
    *,
    workers=None,
    compute_uncertainty=True,
    profile=None,
    **ccdkwargs,
):
    """
    Combine images into one, reading each file once and staying within a memory limit.

    A drop-in for `ccdproc.combine`: the same options with the same meaning, and the
    same output data, mask and uncertainty for the same inputs (see Notes for the few
    deliberate differences). Every input file is opened once and read once, in a few
    large pieces of rows, whose full-width bands are combined by threads.

    Parameters
    ----------
    img_list : list, str, `numpy.ndarray` or `~ccdproc.ImageFileCollection`
        The images to combine: a list (or other iterable) of file names
        (`str` or `~pathlib.Path`) and/or `~astropy.nddata.CCDData` objects, a
        string of file names separated by commas, an array of file names, or an
        `~ccdproc.ImageFileCollection` (all the files of its current selection, as
        given by ``files_filtered(include_path=True)``).

    output_file : str, `~pathlib.Path` or None, optional
        If given, the combined image is also written to this FITS file.
        Default is ``None``.

    method : {'average', 'median', 'sum'}, optional
        How the values of a pixel are combined. Default is ``'average'``.

    weights : `numpy.ndarray` or None, optional
        Weights for ``'average'`` and ``'sum'``: one per image (shape ``(n_images,)``)
        or one per pixel (shape ``(n_images, ny, nx)``). Default is ``None``.

    scale : callable, array-like or None, optional
        Images are multiplied by their scale factor before combining. Either one
        factor per image, or a function called with each whole image's data array
        (as read, before any masking) that returns its factor, e.g.
        ``lambda data: 1 / np.median(data)``. Default is ``None``.

    mem_limit : float, optional
        Maximum memory, in bytes, that combining may allocate: the output image, the
        working set of the bands being combined (a quarter of what is left, at most
        about 32 MiB a thread) and two pieces of the files (the one being combined and
        the next one; at most about 4 MiB of each file). Images the caller passes as
        `~astropy.nddata.CCDData` are not counted, they exist already. The limit only
        matters when it is tight. Default is ``2e9`` (ccdproc's default is ``16e9``).

    clip_extrema : bool, optional
        Reject, at each pixel, the ``nlow`` lowest and ``nhigh`` highest values
        (IRAF's ``minmax`` rejection, as `ccdproc.Combiner.clip_extrema`: values that
        are already masked count towards ``nlow`` and ``nhigh``). Default is ``False``.

    nlow, nhigh : int or None, optional
        Number of low and high values rejected by ``clip_extrema``; ``None`` means
        ``0``. Default is ``1``.

    minmax_clip : bool, optional
        Reject values below ``minmax_clip_min`` or above ``minmax_clip_max``.
        Default is ``False``.

    minmax_clip_min, minmax_clip_max : float or None, optional
        Limits of ``minmax_clip``; ``None`` means no limit. Default is ``None``.

    sigma_clip : bool, optional
        Reject values further than ``sigma_clip_low_thresh`` (below) or
        ``sigma_clip_high_thresh`` (above) times ``sigma_clip_dev_func`` from
        ``sigma_clip_func``, computed at each pixel over the images. As in ccdproc
        this is one iteration of `astropy.stats.sigma_clip` along the image axis, on
        the unscaled values, masked values included. Default is ``False``.

    sigma_clip_low_thresh, sigma_clip_high_thresh : float, optional
        Thresholds of ``sigma_clip``, in units of the deviation. ``None`` or ``0``
        means 3, as in `astropy.stats.sigma_clip`. Default is ``3``.

    sigma_clip_func : callable, optional
        Centre of ``sigma_clip``, called as ``func(data, axis=...)``, e.g.
        `numpy.ma.median`. Default is `numpy.ma.mean`.

    sigma_clip_dev_func : callable, optional
        Deviation of ``sigma_clip``, called as ``func(data, axis=...)``, e.g.
        `astropy.stats.mad_std`. Default is `numpy.ma.std`.

    dtype : str, `numpy.dtype` or None, optional
        Type of the computation and of the result; ``None`` means ``float64``.
        ``float32`` halves the memory and time. An integer type (``int``), as in
        ccdproc, stores the input values as that type, combines them in ``float64`` and
        gives the result in that type (truncated). Default is ``None``.

    combine_uncertainty_function : callable or None, optional
        Function of ``(data, axis=0)`` giving the deviation of the values of each pixel,
        called with rejected values set to NaN. ``None`` means the standard deviation
        (bottleneck's ``nanstd``) for ``'average'`` and ``'sum'`` and the median
        absolute deviation times 1.4826 (`ccdproc.sigma_func`) for ``'median'``.
        Default is ``None``.

    overwrite_output : bool, optional
        Whether ``output_file`` may replace an existing file. Default is ``False``.

    workers : int or None, optional
        Number of threads reading pieces of files and combining bands of rows at the
        same time (astropy, numpy and bottleneck release the GIL while they read or work
        on pixels); each file is read by one thread at a time, and ``mem_limit`` is
        shared between them. ``None`` means one per core. Default is ``None``.

    compute_uncertainty : bool, optional
        Whether to compute the uncertainty of the result. ``False`` saves the time of
        a deviation per pixel when it is not needed; the result then has no
        uncertainty. Default is ``True``, as in ccdproc.

    profile : str, `~ccdproc_ext.InstrumentProfile` or None, optional
        The camera whose unit files without ``BUNIT`` are in (when no ``unit`` is
        given). Default is ``None``: adu.

    **ccdkwargs
        Keyword arguments of `~astropy.nddata.CCDData.read` used to read files, such
        as ``unit``, ``hdu`` or ``hdu_mask``, and the options of `astropy.io.fits.open`
        that it passes on (e.g. ``ignore_missing_end``). Anything else raises
        `TypeError`. Files are read as `ccdproc_ext.raw` reads raw frames: plain or
        compressed (``.gz``, ``.bz2``, ``.fz`` ...), the image in the first extension
        with data when the primary HDU has none (with the primary header's keywords),
        ``BUNIT`` in its usual spellings, and adu (or the profile's unit) without it.

    Returns
    -------
    combined : `~astropy.nddata.CCDData`
        The combined image, in ``dtype``. Its ``mask`` is ``True`` where every value was
        rejected; its ``uncertainty`` is a `~astropy.nddata.StdDevUncertainty`: the
        deviation of the values divided by the square root of their number (times that
        number for ``'sum'``). Its header is a copy of the first image's, with
        ``NCOMBINE`` set to the number of images; its WCS is the first image's.

    Raises
    ------
    TypeError
        For an unknown keyword argument, or images of different shapes or units.
    ValueError
        For an unknown ``method``, no images, or badly shaped ``weights``/``scale``.
    OSError
        For a file that cannot be read (a `~ccdproc_ext.FrameReadError`); the message
        names it.

    Notes
    -----
    Same numbers as ccdproc: every statistic is computed by the same function as in
    `ccdproc.Combiner`, or by an equivalent proven (and tested) to give the same bits:
    medians go through sorting networks of vectorised minimum/maximum operations,
    which select exactly the values bottleneck's and numpy's medians select.

    Rejection happens in ccdproc's order (``clip_extrema``, ``minmax_clip``,
    ``sigma_clip``), on the unscaled values; then the values are scaled, rejected ones
    become NaN and each pixel is combined.

    Reading: each file is opened once, its header read once and its pixels read once,
    in pieces of many rows (through `astropy.io.fits` sections, without memory mapping
    unless ``memmap=True`` is passed). A callable ``scale`` needs every whole image
    before the first band can be combined: when all input files fit in ``mem_limit``
    together with the output, they are read whole once and kept in memory; otherwise
    each file is read once whole to compute its factor and once more piece by piece,
    and a message is logged. All input files stay open while combining, so their
    number is limited by the operating system's limit on open files.

    Deliberate differences from `ccdproc.combine` 2.5.1:

    - A weighted average divides by the sum of the weights of the values actually
      combined at each pixel. ccdproc divides by the sum of all weights even where
      values were masked or rejected, which biases those pixels low (ccdproc issue
      #893); a pixel whose values are all rejected is NaN, as in an unweighted
      average, where ccdproc gives 0. Without rejected values both agree.
    - ``NCOMBINE`` is set in the header (ccdproc sets it on intermediate tiles only).
    - An unknown keyword argument is an error; ccdproc silently ignores it.
    - Per-pixel ``weights`` work with any ``mem_limit`` (ccdproc rejects them as soon
      as it splits the images into chunks); ``weights`` may be any array-like.
    - An `~ccdproc.ImageFileCollection`, or a single file name, is accepted; names in
      a comma-separated string are stripped of surrounding spaces.
    - The uncertainty is always a new `~astropy.nddata.StdDevUncertainty` of type
      ``dtype``, and the first image's flags and PSF are not copied. (ccdproc writes
      the combined deviation into the first image's uncertainty object, whatever its
      class and type.)
    - A file without ``BUNIT`` is in adu (or the profile's unit), where ccdproc asks
      for ``unit``.

    ccdproc issue #719 (uncertainty computed from unscaled data when ``scale`` is
    given) is fixed in ccdproc 2.5.1, whose ``_combination_setup`` returns the scaled
    data to the uncertainty function; the uncertainty here is computed from the
    scaled values as well.
    """
    reader_kwargs = _checked_reader_kwargs(ccdkwargs)
    if method not in _METHODS:
        raise ValueError(f"unrecognised combine method : {method}.")
    result_dtype = np.dtype(np.float64 if dtype is None else dtype)
    if result_dtype.kind not in "fiub":
        raise TypeError(f"dtype must be a number type, not {result_dtype}.")
    # NaN marks rejected values: integers are combined as float64 (exact up to 2**53).
    work_dtype = result_dtype if result_dtype.kind == "f" else np.dtype(np.float64)
    if profile is not None and "unit" not in reader_kwargs:
        from .profiles import get_profile

        reader_kwargs["default_unit"] = get_profile(profile).unit
    images = _as_image_list(img_list)

    # Pieces and bands freed are reused, not faulted in again (see _allocator).
    with freed_memory_reused(), contextlib.ExitStack() as open_files:
        frames = [
            _open_frame(image, index, reader_kwargs, open_files)
            for index, image in enumerate(images)
        ]
        _check_same_shape_and_unit(frames)
        shape = frames[0].shape
        recipe = _Recipe(
            method=method,
            dtype=work_dtype,
            weights=_checked_weights(weights, len(frames), shape),
            clip_extrema=clip_extrema,
            nlow=0 if nlow is None else nlow,
            nhigh=0 if nhigh is None else nhigh,
            minmax_clip=minmax_clip,
            minmax_clip_min=minmax_clip_min,
            minmax_clip_max=minmax_clip_max,
            sigma_clip=sigma_clip,
            sigma_clip_low_thresh=sigma_clip_low_thresh,
            sigma_clip_high_thresh=sigma_clip_high_thresh,
            sigma_clip_func=sigma_clip_func,
            sigma_clip_dev_func=sigma_clip_dev_func,
            uncertainty_function=combine_uncertainty_function,
            with_uncertainty=bool(compute_uncertainty),
            scaled=scale is not None,
            small_integers=all(frame.small_integers for frame in frames),
            stored_dtype=None if result_dtype.kind == "f" else result_dtype,
        )
        output_bytes = shape[0] * shape[1] * (2 * work_dtype.itemsize + 1)
        band_bytes_per_row = len(frames) * shape[1] * _bytes_per_stacked_value(recipe, len(frames))
        recipe.scaling = _scale_factors(
            scale, frames, mem_limit - output_bytes - band_bytes_per_row
        )
        cached_bytes = sum(frame.cached_nbytes for frame in frames)
        budget = mem_limit - output_bytes - cached_bytes
        # A quarter of the budget for the bands being combined (thin bands cost little),
        # the rest for the pieces of the files being read (thin pieces cost reads).
        band_budget = min(budget, max(budget / 4, band_bytes_per_row))
        rows_per_band = _rows_per_band(shape, band_bytes_per_row, band_budget)
        # Each thread works on its own band: as many as the budget holds bands of
        # at least one row, each band's share of the budget.
        workers = max(1, int(os.cpu_count() or 1) if workers is None else int(workers))
        workers = max(1, min(workers, int(band_budget // band_bytes_per_row)))
        if workers > 1:
            rows_per_band = max(1, min(rows_per_band,
                                       int(band_budget / workers // band_bytes_per_row)))
        rows_per_piece = _rows_per_piece(
            frames, rows_per_band, budget - workers * rows_per_band * band_bytes_per_row)
        data, mask, uncertainty = _combine_bands(frames, recipe, rows_per_band, workers,
                                                 rows_per_piece)
        meta, wcs = frames[0].header_and_wcs()

    meta["NCOMBINE"] = len(frames)
    if result_dtype != data.dtype:
        with np.errstate(invalid="ignore"):  # all values rejected: NaN has no integer
            data = data.astype(result_dtype)
    combined = CCDData(
        data,
        unit=frames[0].unit,
        mask=mask,
        uncertainty=None if uncertainty is None else StdDevUncertainty(uncertainty, copy=False),
        meta=meta,
        wcs=wcs,
    )
    if output_file is not None:
        combined.write(output_file, overwrite=overwrite_output)
    return combined


# ------------------------------------------------------------------------ input handling


def _checked_reader_kwargs(ccdkwargs):
    """Return the keyword arguments for reading files; refuse anything else."""
    return checked_reader_kwargs(ccdkwargs, inspect.signature(combine).parameters)

def _as_image_list(img_list):
    """Turn every accepted form of ``img_list`` into a list of CCDData and paths."""
    if isinstance(img_list, ImageFileCollection):
        images = list(img_list.files_filtered(include_path=True))
    elif isinstance(img_list, str):
        images = [name.strip() for name in img_list.split(",") if name.strip()]
    elif isinstance(img_list, (CCDData, os.PathLike)):
        images = [img_list]
    elif isinstance(img_list, np.ndarray):
        images = img_list.tolist()
    else:
        try:
            images = list(img_list)
        except TypeError as err:
            raise ValueError("unrecognised input for list of images to combine.") from err
    if not images:
        raise ValueError("no images to combine.")
    for index, image in enumerate(images):
        if not isinstance(image, (CCDData, str, os.PathLike)):
            raise TypeError(
                "images to combine must be CCDData objects or file names; item "
                f"{index} is a {type(image).__name__}."
            )
    return images


def _checked_weights(weights, n_images, shape):
    if weights is None:
        return None
    weights = np.asarray(weights)
    if weights.shape == (n_images, *shape):
        return weights
    if weights.ndim != 1:
        raise ValueError(
            "1D weights expected when shapes of the data and weights differ: weights "
            f"have shape {weights.shape}, the images {n_images} x {shape}."
        )
    if weights.shape[0] != n_images:
        raise ValueError(
            f"Length of weights not compatible with specified axis: {weights.shape[0]} "
            f"weights for {n_images} images."
        )
    return weights


def _check_same_shape_and_unit(frames):
    first = frames[0]
    for frame in frames[1:]:
        if frame.shape != first.shape:
            raise TypeError(
                f"CCDData objects are not the same size: {frame.name} has shape "
                f"{frame.shape}, {first.name} has shape {first.shape}."
            )
        if frame.unit != first.unit:
            raise TypeError(
                f"CCDData objects don't have the same unit: {frame.name} is in "
                f"{frame.unit}, {first.name} in {first.unit}."
            )


def _scale_factors(scale, frames, cache_budget):
    """
    Return the scale factors as ccdproc's ``Combiner.scaling`` holds them, or None.

    A callable needs each whole image. If all the input files fit in ``cache_budget``,
    they are read whole once and kept for combining; otherwise each is read whole
    once here and read again band by band later.
    """
    if scale is None:
        return None
    if callable(scale):
        to_read = sum(frame.nbytes_to_cache for frame in frames)
        keep = to_read <= cache_budget
        if to_read and not keep:
            log.info(
                "scale is a function and the input files (%d bytes) do not fit in "
                "mem_limit: each file is read twice, once whole for its scale factor "
                "and once in bands.",
                to_read,
            )
        factors = np.array([scale(frame.whole(keep=keep)) for frame in frames])
    else:
        try:
            n_factors = len(scale)
        except TypeError as err:
            raise TypeError(
                "scaling must be a function or an array the same length as the number of images."
            ) from err
        if n_factors != len(frames):
            raise ValueError(
                "scaling must be a function or an array the same length as the number "
                f"of images: {n_factors} factors for {len(frames)} images."
            )
        factors = np.array(scale)
    # One factor per image, broadcast over the pixels as in ccdproc.
    return factors[:, np.newaxis, np.newaxis]


# ----------------------------------------------------------------------------- bands


@dataclass
class _Recipe:
    """Everything that decides how one pixel's values are combined."""

    method: str
    dtype: np.dtype
    weights: np.ndarray | None
    clip_extrema: bool
    nlow: int
    nhigh: int
    minmax_clip: bool
    minmax_clip_min: float | None
    minmax_clip_max: float | None
    sigma_clip: bool
    sigma_clip_low_thresh: float | None
    sigma_clip_high_thresh: float | None
    sigma_clip_func: object
    sigma_clip_dev_func: object
    uncertainty_function: object
    # Whether the images are multiplied by scale factors (known before the factors are).
    scaled: bool
    # Whether every input value is an integer of at most 16 bits, hence exact in float32.
    small_integers: bool
    # The scale factors, shape (n_images, 1, 1), once computed.
    scaling: np.ndarray | None = None
    # Whether the uncertainty is computed at all.
    with_uncertainty: bool = True
    # The integer type the input values are stored as (dtype=int), as in ccdproc's Combiner.
    stored_dtype: np.dtype | None = None


def _bytes_per_stacked_value(recipe, n_images):
    """Peak bytes per value (image x pixel) of a band while it is combined."""
    band_itemsize = _band_dtype(recipe, n_images).itemsize
    if band_itemsize < recipe.dtype.itemsize:
        # Only in-place order statistics: the band, its rejections, NaN tests.
        return band_itemsize + 1 + 2
    itemsize = recipe.dtype.itemsize
    extra = 2  # boolean temporaries (rejections, NaN tests)
    if recipe.clip_extrema:
        extra = max(extra, 8 + 1)  # np.argsort's int64 indices
    if recipe.sigma_clip and _has_fast_sigma_clip(recipe, n_images):
        # The fast path: a 16-bit copy of integer values and their deviations (at most
        # 32-bit), or small blocks of float ones; three boolean comparisons.
        extra = max(extra, 2 + 4 + 3)
    elif recipe.sigma_clip:
        # astropy's sigma_clip copies the band and its centre/deviation functions make
        # a few more temporaries.
        extra = max(extra, 4 * itemsize + 3)
    if recipe.weights is not None:
        extra = max(extra, 8 + 8)  # data * weights, in float64 as in ccdproc
    if recipe.uncertainty_function is not None:
        extra = max(extra, 3 * itemsize)
    if recipe.scaled:
        extra += 8  # the scaled values, float64 if the factors are
    # The band itself, its rejection mask and the temporaries.
    return itemsize + 1 + extra


def _rows_per_band(shape, bytes_per_row, budget):
    n_rows, _ = shape
    if budget < bytes_per_row:
        # Said as ccdproc says what it does with mem_limit: a message, not a warning.
        log.info(
            "mem_limit is too small to combine these images: the output and one row of "
            "all images need %d bytes more; going on one row at a time.",
            int(bytes_per_row + 1 - budget),
        )
        return 1
    rows = int(min(budget, _BAND_TARGET_BYTES) // bytes_per_row)
    return max(1, min(n_rows, rows))


def _rows_per_piece(frames, rows_per_band, budget):
    """
    Rows of every file read at once: as many whole bands as half the budget holds (the
    piece being combined and the next one, read meanwhile), up to about
    `_PIECE_TARGET_BYTES` of each file; all the rows when the images are in memory.

    Reading large pieces makes the number of reads of a file independent of the number
    of files (thin bands would make it grow with it, the trap of ccdproc issue #1012);
    the pieces are kept as they are stored (16-bit integers take 2 bytes a value).
    """
    n_rows = frames[0].shape[0]
    bytes_per_row = sum(frame.read_bytes_per_row for frame in frames)
    if bytes_per_row == 0:
        return n_rows
    widest = max(frame.read_bytes_per_row for frame in frames)
    rows = min(budget / 2 // bytes_per_row, _PIECE_TARGET_BYTES // widest)
    bands = max(1, int(rows) // rows_per_band)
    return min(n_rows, bands * rows_per_band)


class _Piece:
    """Rows ``start:start + len(data)`` of one image (and its mask), as read."""

    __slots__ = ("data", "mask", "owned", "start")

    def __init__(self, frame, start, stop):
        self.start = start
        self.data = frame.rows(start, stop)
        # Whether the rows were read for this piece alone (and may be overwritten).
        self.owned = frame.rows_are_copies
        if not self.data.dtype.isnative:
            # FITS is big-endian: numpy computes on native numbers faster, and the
            # conversion happens here, while other pieces are being combined.
            self.data = self.data.astype(self.data.dtype.newbyteorder("="))
            self.owned = True
        self.mask = frame.mask_rows(start, stop)

    def rows(self, start, stop):
        return self.data[start - self.start:stop - self.start]

    def mask_rows(self, start, stop):
        return None if self.mask is None else self.mask[start - self.start:stop - self.start]


def _combine_bands(frames, recipe, rows_per_band, workers=1, rows_per_piece=None):
    """
    Combine the frames band by band into new data, mask and uncertainty arrays.

    The files are read in pieces of ``rows_per_piece`` rows (a whole number of bands);
    with several workers the next piece is read while the bands of the current one are
    combined, reads and bands taking turns in one pool of threads.
    """
    n_rows, n_columns = frames[0].shape
    rows_per_piece = n_rows if rows_per_piece is None else rows_per_piece
    data = np.empty((n_rows, n_columns), dtype=recipe.dtype)
    uncertainty = np.empty((n_rows, n_columns), dtype=recipe.dtype) \
        if recipe.with_uncertainty else None
    mask = np.empty((n_rows, n_columns), dtype=bool)
    n_bands = -(-n_rows // rows_per_band)
    pieces = [(start, min(n_rows, start + rows_per_piece))
              for start in range(0, n_rows, rows_per_piece)]
    log.info(
        "combining %d images of %d x %d pixels in %d band(s) of %d rows, reading each "
        "file in %d piece(s).",
        len(frames),
        n_rows,
        n_columns,
        n_bands,
        rows_per_band,
        len(pieces),
    )

    def combine_band(piece, start):
        stop = min(n_rows, start + rows_per_band)
        band = slice(start, stop)
        data[band], mask[band], band_uncertainty = _combine_band(piece, start, stop, recipe)
        if uncertainty is not None:
            uncertainty[band] = band_uncertainty

    if workers == 1:
        for first, last in pieces:
            piece = [_Piece(frame, first, last) for frame in frames]
            for start in range(first, last, rows_per_band):
                combine_band(piece, start)
        return data, mask, uncertainty

    with ThreadPoolExecutor(workers) as pool:
        try:
            reading = [pool.submit(_Piece, frame, *pieces[0]) for frame in frames]
            for index, (first, last) in enumerate(pieces):
                piece = [future.result() for future in reading]
                reading = []
                bands = [functools.partial(combine_band, piece, start)
                         for start in range(first, last, rows_per_band)]
                reads = []
                if index + 1 < len(pieces):
                    reads = [functools.partial(_Piece, frame, *pieces[index + 1])
                             for frame in frames]
                # Bands and reads of the next piece take turns in the queue, so that
                # both go on at the same time.
                combining = []
                for band, read in itertools.zip_longest(bands, reads):
                    if band is not None:
                        combining.append(pool.submit(band))
                    if read is not None:
                        reading.append(pool.submit(read))
                for future in combining:
                    future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return data, mask, uncertainty


def _only_order_statistics(recipe, n_images):
    """Whether the values are only ever ordered: a median (and its deviation) of
    unscaled values, with no rejection or only the exact fast sigma clipping."""
    return (
        recipe.method == "median"
        and (recipe.uncertainty_function is None or recipe.uncertainty_function is sigma_func)
        and not recipe.scaled
        # Not clip_extrema: np.argsort might break ties differently for float32.
        and not recipe.clip_extrema
        # Not minmax_clip: its limits are compared in recipe.dtype.
        and not recipe.minmax_clip
        and (not recipe.sigma_clip or _has_fast_sigma_clip(recipe, n_images))
        and n_images <= _NETWORK_MAX_FRAMES
    )


def _band_dtype(recipe, n_images):
    """
    Type the values of a band are held in: ``recipe.dtype``, or float32 where that is
    exact (integers of at most 16 bits) and only order statistics read the values. A
    median then moves half the bytes and its sorting networks work in place.
    """
    if (recipe.small_integers and _only_order_statistics(recipe, n_images)
            and recipe.dtype.itemsize > 4):
        return np.dtype(np.float32)
    return recipe.dtype


def _small_integer_type(rows):
    """The type of the rows if all are integers of one type of at most 16 bits, else None."""
    dtype = rows[0].dtype
    if dtype.kind in "iu" and dtype.itemsize <= 2 and all(row.dtype == dtype for row in rows):
        return dtype
    return None


def _combine_band(frames, start, stop, recipe):
    """Combine rows ``start:stop`` of all frames the way ccdproc's Combiner does."""
    n_images = len(frames)
    rows = [frame.rows(start, stop) for frame in frames]
    masks = [frame.mask_rows(start, stop) for frame in frames]
    # Integers as they were read (16-bit raw frames), when no value is masked: their
    # order statistics are computed on the integers themselves, twice as fast again.
    integers = None
    if recipe.stored_dtype is None and all(mask is None for mask in masks):
        integers = _small_integer_type(rows)
    if (integers is not None and not recipe.sigma_clip
            and _only_order_statistics(recipe, n_images)):
        return _median_of_integers(frames, rows, recipe)
    integer_stack = None
    if integers is not None and recipe.sigma_clip and _has_fast_sigma_clip(recipe, n_images):
        integer_stack = np.stack(rows)
    stack = np.empty((n_images, *rows[0].shape), dtype=_band_dtype(recipe, n_images))
    rejected = None
    for index, (image, frame_mask) in enumerate(zip(rows, masks, strict=True)):
        if recipe.stored_dtype is not None:
            image = np.asarray(image).astype(recipe.stored_dtype)
        stack[index] = image
        if frame_mask is not None:
            if rejected is None:
                rejected = np.zeros(stack.shape, dtype=bool)
            rejected[index] = frame_mask
    # Values of at most 16-bit integers are exact in float32, which makes order
    # statistics (medians) twice as fast without changing a bit of the result.
    small_integers = recipe.small_integers
    if small_integers and recipe.dtype.itemsize >= 4:
        order_dtype = np.dtype(np.float32)
    else:
        order_dtype = recipe.dtype

    # Rejection, in Combiner's order, on the unscaled values (masked ones included).
    if recipe.clip_extrema:
        if rejected is None:
            rejected = np.zeros(stack.shape, dtype=bool)
        _reject_extrema(stack, rejected, recipe.nlow, recipe.nhigh)
    if recipe.minmax_clip:
        if rejected is None:
            rejected = np.zeros(stack.shape, dtype=bool)
        if recipe.minmax_clip_min is not None:
            rejected |= stack < recipe.minmax_clip_min
        if recipe.minmax_clip_max is not None:
            rejected |= stack > recipe.minmax_clip_max
    if recipe.sigma_clip:
        clipped = _sigma_clip_rejections(stack, recipe, order_dtype, finite=small_integers,
                                         integers=integer_stack)
        del integer_stack
        rejected = clipped if rejected is None else rejected | clipped

    values = stack
    if recipe.scaling is not None:
        # ccdproc multiplies a masked copy; the values are the same, and in place saves
        # a copy of the band when the type does not change.
        if np.result_type(stack, recipe.scaling) == stack.dtype:
            values = np.multiply(stack, recipe.scaling, out=stack)
        else:
            values = stack * recipe.scaling
        del stack
        order_dtype = values.dtype
    if rejected is not None:
        np.copyto(values, np.nan, where=rejected)
        del rejected
        n_rejected = _count_nan(values)
    elif small_integers and (recipe.scaling is None or np.isfinite(recipe.scaling).all()):
        # Integers times finite factors: no NaN anywhere, nothing to count.
        n_rejected = np.zeros(values.shape[1:], dtype=np.int64)
    else:
        n_rejected = _count_nan(values)
    n_used = n_images - n_rejected

    weights = recipe.weights
    if weights is not None and weights.ndim == 3:
        weights = weights[:, start:stop]
    elif weights is not None:
        weights = weights.reshape(-1, 1, 1)
    if weights is not None:
        # Combiner._weighted_sum casts the weights to float64 for the sake of float32
        # sums; the products are then float64 too.
        weights = weights.astype(np.float64)

    uncertainty_function = recipe.uncertainty_function
    if recipe.method == "median":
        with_mad = recipe.with_uncertainty and (uncertainty_function is None
                                                or uncertainty_function is sigma_func)
        combined, mad = _nanmedian(
            values,
            n_used,
            order_dtype=order_dtype,
            result_dtype=np.promote_types(values.dtype, recipe.dtype),
            with_mad=with_mad,
            # The values are not needed after the median and its deviation.
            overwrite_input=with_mad,
        )
        if not recipe.with_uncertainty:
            uncertainty = None
        elif with_mad:
            # ccdproc.sigma_func(data, axis=0, ignore_nan=True)
            uncertainty = mad * _MAD_TO_STD
        else:
            uncertainty = uncertainty_function(values, axis=0)
        if uncertainty is not None:
            uncertainty /= np.sqrt(n_images - n_rejected)
    elif recipe.method == "average":
        if weights is not None:
            weighted_sum = bn.nansum(values * weights, axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                combined = weighted_sum / _sum_of_used_weights(values, weights)
        else:
            combined = bn.nanmean(values, axis=0)
        uncertainty = None
        if recipe.with_uncertainty:
            uncertainty = (uncertainty_function or bn.nanstd)(values, axis=0)
            uncertainty /= np.sqrt(n_images - n_rejected)
    else:  # sum
        if weights is not None:
            combined = bn.nansum(values * weights, axis=0)
        else:
            combined = bn.nansum(values, axis=0)
        uncertainty = None
        if recipe.with_uncertainty:
            uncertainty = (uncertainty_function or bn.nanstd)(values, axis=0)
            uncertainty /= np.sqrt(n_images - n_rejected)
            uncertainty = np.asarray(uncertainty)
            uncertainty *= n_images - n_rejected
    return combined, n_used == 0, None if uncertainty is None else np.asarray(uncertainty)


def _count_nan(values):
    """Number of NaN along axis 0, as int64 like ccdproc's ``isnan(data).sum(axis=0)``."""
    # Counting image by image in the narrowest sufficient type is several times faster
    # than summing a boolean array of the whole band into int64.
    counts = np.zeros(values.shape[1:], dtype=np.min_scalar_type(values.shape[0]))
    is_nan = np.empty(values.shape[1:], dtype=bool)
    for image in values:
        counts += np.isnan(image, out=is_nan)
    return counts.astype(np.int64)


def _sum_of_used_weights(values, weights):
    """Sum of the weights of the non-NaN values, added in image order like bn.nansum."""
    total = np.zeros(values.shape[1:], dtype=np.float64)
    for image, weight in zip(values, np.broadcast_to(weights, values.shape), strict=True):
        total += np.where(np.isnan(image), 0.0, weight)
    return total


def _reject_extrema(stack, rejected, nlow, nhigh):
    """Combiner.clip_extrema: the same argsort, so ties are broken the same way."""
    order = np.argsort(stack, axis=0)
    for position in range(-nhigh, nlow):
        np.put_along_axis(rejected, order[position][np.newaxis], True, axis=0)


# --------------------------------------------------------------------- sigma clipping

# Centre and deviation functions for which the sigma clipping has an exact fast path on
# finite data: medians select the same values as np.median (which np.ma.median calls on
# plain arrays), and both deviations are np.median(|x - median|) * 1.482602218505602.
_MEDIAN_FUNCTIONS = (np.ma.median, np.median, np.nanmedian, bn.median, bn.nanmedian)
_MAD_STD_FUNCTIONS = (stats.mad_std, sigma_func)


def _has_fast_sigma_clip(recipe, n_images):
    """Whether the exact fast path applies to these functions (given finite values)."""
    return (
        any(recipe.sigma_clip_func is f for f in _MEDIAN_FUNCTIONS)
        and any(recipe.sigma_clip_dev_func is f for f in _MAD_STD_FUNCTIONS)
        and n_images <= _NETWORK_MAX_FRAMES
    )


def _sigma_clip_rejections(stack, recipe, order_dtype, *, finite, integers=None):
    """
    The mask ``Combiner.sigma_clipping`` adds: one iteration of astropy's sigma_clip
    along the image axis, on all the values (masked ones included).

    ``integers``, if given, holds the same values as ``stack`` as small integers (and may
    be reordered): centre and deviation are then computed on them.
    """
    result_dtype = np.promote_types(stack.dtype, recipe.dtype)
    if integers is not None:
        centre, mad = _integer_median(integers, result_dtype=result_dtype, with_mad=True)
    elif _has_fast_sigma_clip(recipe, stack.shape[0]) and (finite or np.isfinite(stack).all()):
        centre, mad = _nanmedian(
            stack,
            None,
            order_dtype=order_dtype,
            result_dtype=result_dtype,
            with_mad=True,
        )
    else:
        centre = None
    if centre is not None:
        deviation = mad * _MAD_TO_STD
        # SigmaClip treats a threshold of None (or 0) as its default sigma, 3.
        lower = centre - deviation * (recipe.sigma_clip_low_thresh or 3)
        upper = centre + deviation * (recipe.sigma_clip_high_thresh or 3)
        return (stack < lower) | (stack > upper)
    clipped = stats.sigma_clip(
        stack,
        sigma_lower=recipe.sigma_clip_low_thresh,
        sigma_upper=recipe.sigma_clip_high_thresh,
        axis=0,
        copy=False,
        maxiters=1,
        cenfunc=recipe.sigma_clip_func,
        stdfunc=recipe.sigma_clip_dev_func,
        masked=True,
    )
    return ma.getmaskarray(clipped)


# -------------------------------------------------------------------- order statistics


def _median_of_integers(frames, rows, recipe):
    """`_combine_band` for a median of small integers (``rows``, of ``frames``) without
    any rejected value."""
    n_images = len(frames)
    # Rows read from a file for this band alone may be reordered in place.
    images = [image if frame.owned else image.copy()
              for frame, image in zip(frames, rows, strict=True)]
    with_mad = recipe.with_uncertainty
    median, mad = _integer_median(images, result_dtype=recipe.dtype, with_mad=with_mad)
    uncertainty = None
    if with_mad:
        # ccdproc.sigma_func(data, axis=0, ignore_nan=True) / sqrt(number of values)
        uncertainty = mad * _MAD_TO_STD
        uncertainty /= np.sqrt(np.int64(n_images))
    return median, np.zeros(median.shape, dtype=bool), uncertainty


def _integer_median(images, *, result_dtype, with_mad):
    """
    Median along the first axis of integers of at most 16 bits, and optionally the
    median absolute deviation, equal bit for bit to `_nanmedian` of the same values as
    floats.

    The sorting network orders the integers themselves: twice as many values per vector
    operation as float32. Deviations from a median that may end in .5 are the integers
    ``|2 x - (low + high)|`` (below 2**17), halved at the end, which is exact: every
    number involved is a multiple of 0.25 below 2**17.

    ``images`` (a sequence of arrays of one shape, or one array of shape
    ``(n_images, ...)``) is reordered in place.
    """
    n_images = len(images)
    shape = images[0].shape
    pixels = [np.reshape(image, -1) for image in images]
    n_pixels = pixels[0].size
    median = np.empty(n_pixels, dtype=result_dtype)
    mad = np.empty_like(median) if with_mad else None
    # Sorting fully (rather than only placing the middle pair) orders the deviations
    # too: those below and above the median are then two sorted runs.
    network = _sorting_network(n_images) if with_mad else _median_network(n_images)
    middle = (n_images - 1) // 2, n_images // 2
    block = max(1024, _INTEGER_BLOCK_BYTES // (n_images * pixels[0].itemsize))
    for start in range(0, n_pixels, block):
        stop = min(start + block, n_pixels)
        wires = [image[start:stop] for image in pixels]
        _run_network(wires, network, np.minimum)
        low, high = wires[middle[0]], wires[middle[1]]
        median[start:stop] = _middle_pair(low, high, n_images, result_dtype)
        if with_mad:
            deviations, factor = _integer_deviations(wires, low, high)
            mad[start:stop] = _middle_of_sorted_deviations(deviations, result_dtype) / factor
    return median.reshape(shape), None if mad is None else mad.reshape(shape)


def _integer_deviations(wires, low, high):
    """
    The absolute deviations of sorted integer ``wires`` from the median of their middle
    pair ``low``, ``high``, times a factor that makes them integers: ``(deviations,
    factor)``, shape ``(n, pixels)``.

    For unsigned integers they are computed without any conversion: ``|x - low|`` when
    ``n`` is odd (the median is ``low``), else ``|x - low| + |x - high|`` (twice the
    deviation) when no pixel's values span more than half the type's range. Otherwise
    ``|2 x - (low + high)|`` in 32-bit integers.
    """
    n_values = len(wires)
    below = range((n_values + 1) // 2)  # the wires at or below low, sorted
    dtype = wires[0].dtype
    if dtype.kind == "u" and n_values % 2:
        deviations = np.empty((n_values, low.size), dtype=dtype)
        for index, wire in enumerate(wires):
            if index in below:
                np.subtract(low, wire, out=deviations[index])
            else:
                np.subtract(wire, low, out=deviations[index])
        return deviations, 1
    widest = int(np.subtract(wires[-1], wires[0]).max()) if low.size else 0
    if dtype.kind == "u" and 2 * widest <= np.iinfo(dtype).max:
        deviations = np.empty((n_values, low.size), dtype=dtype)
        spare = np.empty_like(low)
        for index, wire in enumerate(wires):
            if index in below:
                np.subtract(low, wire, out=deviations[index])
                deviations[index] += np.subtract(high, wire, out=spare)
            else:
                np.subtract(wire, low, out=deviations[index])
                deviations[index] += np.subtract(wire, high, out=spare)
        return deviations, 2
    twice_centre = np.add(low, high, dtype=np.int32)
    deviations = np.multiply(np.stack(wires), 2, dtype=np.int32)
    np.subtract(deviations, twice_centre, out=deviations)
    np.abs(deviations, out=deviations)
    return deviations, 2


def _middle_of_sorted_deviations(deviations, result_dtype):
    """
    The median along axis 0 of ``deviations`` (shape ``(n, pixels)``): the absolute
    deviations of fully sorted values from their median.

    Such deviations first decrease, then increase (a bitonic sequence). One half-cleaner
    step of a bitonic sorter (compare row ``i`` with row ``i + n / 2``) puts the
    ``n / 2`` smallest in its lower half: the middle pair is then the largest of the
    lower half and the smallest of the upper half. An odd ``n`` is padded with one
    infinite deviation, which only the upper half receives.
    """
    n_values = deviations.shape[0]
    half = (n_values + 1) // 2
    if n_values % 2:
        # Row half - 1 would meet the padding: it goes to the lower half unchanged.
        low = deviations[half - 1]
        if half > 1:
            low = np.maximum(low, np.minimum(deviations[:half - 1], deviations[half:]).max(axis=0))
        return _middle_pair(low, low, n_values, result_dtype)
    low = np.minimum(deviations[:half], deviations[half:]).max(axis=0)
    high = np.maximum(deviations[:half], deviations[half:]).min(axis=0)
    return _middle_pair(low, high, n_values, result_dtype)


def _middle_pair(low, high, n_values, result_dtype):
    """The median from the middle pair of ``n_values`` ordered values, as bottleneck."""
    low = low.astype(result_dtype)
    if n_values % 2:
        return low
    with np.errstate(invalid="ignore", over="ignore"):  # -inf + inf, as bottleneck
        return (low + high.astype(result_dtype)) / 2


def median_of_all(data, *, overwrite_input=False):
    """``numpy.median(data)`` (of every value), the same number, about four times faster
    for a frame of floats; with ``overwrite_input``, ``data`` may be reordered.

    `numpy.median` partitions around three positions at once (the middle pair and the
    last, to find NaN); here one position is partitioned, the value below it is the
    largest of the lower part, and NaN is looked for separately (with NaN, or for
    anything but floats, `numpy.median` itself answers). The middle values are averaged
    by `numpy.mean`, as `numpy.median` does, for the same type and rounding.
    """
    values = np.ravel(data)
    if values.dtype.kind != "f" or values.size < 2 or np.isnan(values).any():
        return np.median(data)
    half = values.size // 2
    if overwrite_input and np.shares_memory(values, data):
        values.partition(half)
        ordered = values
    else:
        ordered = np.partition(values, half)
    middle = [ordered[half]] if values.size % 2 else [ordered[:half].max(), ordered[half]]
    return np.mean(np.array(middle, dtype=values.dtype))


def _nanmedian(values, n_valid, *, order_dtype, result_dtype, with_mad, overwrite_input=False):
    """
    Median along axis 0 ignoring NaN, and optionally the median absolute deviation.

    The median equals ``bottleneck.nanmedian(values, axis=0)`` bit for bit, the
    deviation equals astropy's ``median_absolute_deviation(values, axis=0,
    ignore_nan=True)``. Values are ordered by sorting networks: fixed sequences of
    compare-exchange steps, each a vectorised `numpy.minimum`/`numpy.maximum` over a
    block of pixels. They select the very values bottleneck's quickselect selects, and
    the middle pair is averaged with the same ``(a + b) / 2``.

    Parameters
    ----------
    values : `numpy.ndarray`
        Shape ``(n_images, ...)``, float, NaN for rejected values.
    n_valid : `numpy.ndarray` or None
        Number of non-NaN values of each pixel, or None if there is no NaN.
    order_dtype : `numpy.dtype`
        Type the ordering is done in: float32 where every value is exact in float32
        (it is twice as fast), else ``values.dtype``.
    result_dtype : `numpy.dtype`
        Type of the results, in which the middle pair is averaged: that of the values
        bottleneck would be given.
    with_mad : bool
        Whether to compute the median absolute deviation too.
    overwrite_input : bool, optional
        Whether ``values`` may be reordered in place (saving a copy).

    Returns
    -------
    median, mad : `numpy.ndarray`
        ``mad`` is None unless ``with_mad``.
    """
    n_images = values.shape[0]
    if n_images > _NETWORK_MAX_FRAMES:
        values = values.astype(result_dtype, copy=False)
        median = bn.nanmedian(values, axis=0)
        mad = None
        if with_mad:
            mad = stats.median_absolute_deviation(values, axis=0, ignore_nan=True)
        return median, mad

    pixels = values.reshape(n_images, -1)
    counts = None if n_valid is None else n_valid.reshape(-1)
    median = np.empty(pixels.shape[1], dtype=result_dtype)
    mad = np.empty_like(median) if with_mad else None
    block = max(1024, _NETWORK_BLOCK_BYTES // (n_images * order_dtype.itemsize))
    in_place = overwrite_input and values.dtype == order_dtype
    for start in range(0, pixels.shape[1], block):
        stop = min(start + block, pixels.shape[1])
        block_counts = None if counts is None else counts[start:stop]
        if in_place:
            wires = [image[start:stop] for image in pixels]
        else:
            wires = [image[start:stop].astype(order_dtype) for image in pixels]
        if with_mad and (block_counts is None or block_counts.min() == n_images):
            # No NaN: sort fully, and the deviations are two sorted runs (see
            # _integer_median), unless an infinite median makes some of them NaN.
            _run_network(wires, _sorting_network(n_images), np.minimum)
            block_median = _middle_pair(wires[(n_images - 1) // 2], wires[n_images // 2],
                                        n_images, result_dtype)
            median[start:stop] = block_median
            if np.isfinite(block_median).all():
                deviations = np.stack(wires)
                np.subtract(deviations, block_median.astype(order_dtype, copy=False),
                            out=deviations)
                np.abs(deviations, out=deviations)
                mad[start:stop] = _middle_of_sorted_deviations(deviations, result_dtype)
                continue
        else:
            block_median = _median_of_wires(wires, block_counts, result_dtype)
            median[start:stop] = block_median
        if not with_mad:
            continue
        # The network only permuted the values, so the deviations of the wires are
        # the deviations of the pixel's values. When small integers are ordered in
        # float32 the deviations are exact there too: multiples of 0.5 below 2**17.
        centre = block_median.astype(order_dtype, copy=False)
        with np.errstate(invalid="ignore"):
            for wire in wires:
                np.subtract(wire, centre, out=wire)
                np.abs(wire, out=wire)
        if np.isinf(block_median).any():
            # inf - inf is NaN: those deviations are ignored, as by astropy.
            block_counts = _non_nan_counts(wires)
        mad[start:stop] = _median_of_wires(wires, block_counts, result_dtype)
    shape = values.shape[1:]
    return median.reshape(shape), None if mad is None else mad.reshape(shape)


def _non_nan_counts(wires):
    counts = np.full(wires[0].shape, len(wires), dtype=np.int64)
    for wire in wires:
        counts -= np.isnan(wire)
    return counts


def _median_of_wires(wires, counts, result_dtype):
    """Median of the values held by ``wires`` (one array per image), ignoring NaN."""
    n_images = len(wires)
    if counts is None or counts.min() == n_images:
        # No NaN: a network that only places the middle pair.
        _run_network(wires, _median_network(n_images), np.minimum)
        low = wires[(n_images - 1) // 2].astype(result_dtype)
        if n_images % 2:
            return low
        with np.errstate(invalid="ignore", over="ignore"):  # -inf + inf, as bottleneck
            return (low + wires[n_images // 2].astype(result_dtype)) / 2
    # Some NaN: sort fully, NaN last (fmin prefers numbers, maximum prefers NaN),
    # then pick each pixel's middle pair among its valid values.
    _run_network(wires, _sorting_network(n_images), np.fmin)
    ordered = np.stack(wires)
    low_index = np.maximum(counts - 1, 0)[np.newaxis] // 2
    high_index = counts[np.newaxis] // 2
    low = np.take_along_axis(ordered, low_index, axis=0)[0].astype(result_dtype)
    high = np.take_along_axis(ordered, np.minimum(high_index, n_images - 1), axis=0)[0]
    high = high.astype(result_dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(low_index[0] == high_index[0], low, (low + high) / 2)


def _run_network(wires, network, minimum):
    """Apply compare-exchange steps in place: after step (i, j), wires[i] <= wires[j]."""
    spare = np.empty_like(wires[0])
    for i, j in network:
        low, high = wires[i], wires[j]
        minimum(low, high, out=spare)
        np.maximum(low, high, out=high)
        wires[i], spare = spare, low


@functools.lru_cache
def _sorting_network(n):
    """Batcher's odd-even merge sort for ``n`` wires, as (i, j) compare-exchange pairs."""
    size = 1
    while size < n:
        size *= 2
    pairs = []
    merge = 1
    while merge < size:
        distance = merge
        while distance >= 1:
            for first in range(distance % merge, size - distance, 2 * distance):
                for i in range(first, min(first + distance, size - distance)):
                    if i // (2 * merge) == (i + distance) // (2 * merge):
                        pairs.append((i, i + distance))
            distance //= 2
        merge *= 2
    # Wires from n up to the power of two would hold +inf and never move: drop them.
    return tuple((i, j) for i, j in pairs if j < n)


@functools.lru_cache
def _median_network(n):
    """The steps of the sorting network that place the middle pair of ``n`` values."""
    needed = {(n - 1) // 2, n // 2}
    kept = []
    for i, j in reversed(_sorting_network(n)):
        if i in needed or j in needed:
            kept.append((i, j))
            needed.update((i, j))
    return tuple(reversed(kept))
