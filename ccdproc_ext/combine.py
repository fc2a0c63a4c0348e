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

This module holds the public function and its argument checks; the pieces and bands
are planned and combined in ``ccdproc_ext._bands``, the statistics along the frames
(sorting networks, clipping) are in ``ccdproc_ext._kernels``.

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
import inspect
import logging
import os

import numpy as np
from astropy.nddata import CCDData, StdDevUncertainty
from ccdproc import ImageFileCollection
from numpy import ma

from ._allocator import freed_memory_reused
from ._bands import CombineOptions, combine_bands, least_working_nbytes, plan_bands
from ._raw_parts import checked_reader_kwargs, open_frame
from .profiles import get_profile

__all__ = ["combine"]

log = logging.getLogger(__name__)

# Default memory limit of `combine`, in bytes (ccdproc's default is 16e9).
_DEFAULT_MEM_LIMIT = 2e9

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
        reader_kwargs["default_unit"] = get_profile(profile).unit
    images = _as_image_list(img_list)

    # Pieces and bands freed are reused, not faulted in again (see _allocator).
    with freed_memory_reused(), contextlib.ExitStack() as open_files:
        frames = [
            open_frame(image, index, reader_kwargs, open_files)
            for index, image in enumerate(images)
        ]
        _check_same_shape_and_unit(frames)
        options = CombineOptions(
            method=method,
            dtype=work_dtype,
            weights=_checked_weights(weights, len(frames), frames[0].shape),
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
        # A callable scale may keep the whole images in what the output and a band of
        # one row leave.
        options.scaling = _scale_factors(
            scale, frames, mem_limit - least_working_nbytes(frames, options))
        plan = plan_bands(frames, options, mem_limit, workers)
        _log_plan(frames, plan)
        data, mask, uncertainty = combine_bands(frames, options, plan)
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


def _log_plan(frames, plan):
    """Say how the images are read and combined (as ccdproc says what it does with
    ``mem_limit``: a message, not a warning)."""
    if plan.missing_nbytes:
        log.info(
            "mem_limit is too small to combine these images: the output and one row of "
            "all images need %d bytes more; going on one row at a time.",
            plan.missing_nbytes,
        )
    n_rows, n_columns = frames[0].shape
    log.info(
        "combining %d images of %d x %d pixels in %d band(s) of %d rows, reading each "
        "file in %d piece(s).",
        len(frames),
        n_rows,
        n_columns,
        plan.n_bands,
        plan.rows_per_band,
        len(plan.pieces),
    )
