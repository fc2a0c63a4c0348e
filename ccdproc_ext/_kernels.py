# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Statistics along the frame axis of a stack of images: the numeric kernels of `combine`.

Every function here reduces (or rejects along) axis 0 of a stack of shape
``(n_frames, ...)`` and gives the same bits as the function ccdproc's ``Combiner`` calls
for it: medians and median absolute deviations through sorting networks of vectorised
`numpy.minimum`/`numpy.maximum` steps, which select exactly the values bottleneck's
quickselect selects (on the integers themselves for 16-bit raw frames), the exact fast
path of a median/MAD sigma clipping, extrema rejection with numpy's own argsort, and
NaN counts. Nothing here knows about files, bands or options.

Measured on 2 cores (shared with other work, one thread per kernel;
``benchmarks/bench_kernels.py``, bands of 200 x 3000 pixels): the time of bottleneck's
``median`` along axis 0 (twice for a MAD, and for the clipping's centre and deviation)
divided by ours, for N frames::

    N                      3     5     7     9    15    25    40    64
    median, uint16       17.5  11.5  22.7   6.9   6.2   2.8   8.3   6.9
    median, float32       4.8   7.5   7.8   7.6   8.0   4.4   4.9   2.5
    median+MAD, uint16    9.1  44.6  21.2   8.2  35.8  13.2  18.7  13.5
    median+MAD, float32   7.6   6.5   5.1   7.1   9.9  11.2   5.6   6.3
    sigma clip, uint16    7.3   9.3   8.7  11.3  11.1  10.2   8.0   8.9
    sigma clip, float32   3.9   5.7   6.4   7.5   7.0   9.3   8.3   5.6

Bottleneck's ``nanmedian`` (what ccdproc's ``median_combine`` calls) is 32-154 times
slower than ours on uint16 and 2.4-8.4 times on float32, numpy's ``median`` 3-26
times, astropy's ``sigma_clip`` 5-17 times; bottleneck on a copy with the frames last
(each pixel's values contiguous) gains little. The networks did not stop paying up to
64 frames; at 96 and 128 frames (bands of 100 x 3000) a float32 median is still 2.4 and
1.8 times faster than bottleneck's, a uint16 one 4.8 and 4.5 times: the float ratio
shrinks with N, hence bottleneck beyond `NETWORK_MAX_FRAMES`. Ratios vary by up to two
times from run to run on a shared machine.

Example
-------
>>> import numpy as np
>>> from ccdproc_ext._kernels import nanmedian
>>> stack = np.array([[1.0, 5.0], [3.0, np.nan], [2.0, 4.0]])
>>> median, mad = nanmedian(stack, np.array([3, 2]), order_dtype=np.dtype(np.float64),
...                         result_dtype=np.dtype(np.float64), with_mad=True)
>>> median.tolist(), mad.tolist()
([2.0, 4.5], [1.0, 0.5])
"""

import functools

import bottleneck as bn
import numpy as np
from astropy import stats
from ccdproc.core import sigma_func
from numpy import ma

__all__ = [
    "MAD_TO_STD",
    "NETWORK_MAX_FRAMES",
    "count_nan",
    "has_fast_sigma_clip",
    "integer_median",
    "median_of_all",
    "median_of_integers",
    "nanmean_and_std",
    "nanmedian",
    "reject_extrema",
    "run_network",
    "sigma_clip_rejections",
    "sorting_network",
    "sum_of_used_weights",
]

#: The sorting networks used for medians cost O(n log² n) per pixel; beyond this many
#: frames bottleneck's O(n) quickselect is the faster of the two.
NETWORK_MAX_FRAMES = 128

# Pixels per block pushed through a sorting network: the frames of one block should fit
# in a core's L2 cache while each numpy call still gets enough pixels to amortise its
# overhead.
_NETWORK_BLOCK_BYTES = 2**21
# The same for 16-bit integers, whose vector operations take twice as many values.
_INTEGER_BLOCK_BYTES = 2**22

#: 1 / Φ⁻¹(3/4): converts a median absolute deviation into a standard deviation. The
#: same literal as in astropy's mad_std and ccdproc's sigma_func, so results match bitwise.
MAD_TO_STD = 1.482602218505602


# ------------------------------------------------------------------ counts and rejection


def count_nan(values):
    """
    Number of NaN along axis 0, as int64 like ccdproc's ``isnan(data).sum(axis=0)``.

    Parameters
    ----------
    values : `numpy.ndarray`
        Floats, shape ``(n_frames, ...)``.

    Returns
    -------
    counts : `numpy.ndarray`
        Shape ``values.shape[1:]``, type int64.
    """
    # Counting image by image in the narrowest sufficient type is several times faster
    # than summing a boolean array of the whole band into int64.
    counts = np.zeros(values.shape[1:], dtype=np.min_scalar_type(values.shape[0]))
    is_nan = np.empty(values.shape[1:], dtype=bool)
    for image in values:
        counts += np.isnan(image, out=is_nan)
    return counts.astype(np.int64)


def sum_of_used_weights(values, weights):
    """
    Sum of the weights of the non-NaN values, added in image order like `bottleneck.nansum`.

    Parameters
    ----------
    values : `numpy.ndarray`
        Shape ``(n_frames, ...)``, NaN for rejected values.
    weights : `numpy.ndarray`
        Broadcastable to ``values``.

    Returns
    -------
    total : `numpy.ndarray`
        Shape ``values.shape[1:]``, type float64.
    """
    total = np.zeros(values.shape[1:], dtype=np.float64)
    for image, weight in zip(values, np.broadcast_to(weights, values.shape), strict=True):
        total += np.where(np.isnan(image), 0.0, weight)
    return total


def nanmean_and_std(values, n_rejected, *, with_std=True):
    """
    `bottleneck.nanmean` and `bottleneck.nanstd` (``ddof=0``) along axis 0, bit for bit,
    for float32 and float64 values.

    Bottleneck adds each pixel's values in image order, in the values' type, from 0,
    skipping NaN, divides by their number, and adds the squared differences from that
    mean in the same order. The same additions are made here image by image over blocks
    of pixels that fit in a core's cache: several times faster on many frames.

    Parameters
    ----------
    values : `numpy.ndarray`
        float32 or float64, shape ``(n_frames, ...)``, NaN for rejected values; not
        changed.
    n_rejected : `numpy.ndarray`
        The number of NaN of each pixel (`count_nan`), shape ``values.shape[1:]``.
    with_std : bool, optional
        Whether to compute the deviation. Default is ``True``.

    Returns
    -------
    mean, std : `numpy.ndarray`
        Shape ``values.shape[1:]``, the type of ``values``; ``std`` is None unless
        ``with_std``. NaN where every value is.
    """
    dtype = values.dtype
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"values of type {dtype}: float32 or float64 expected")
    n_images = values.shape[0]
    stack = values.reshape(n_images, -1)
    rejected = np.asarray(n_rejected).reshape(-1)
    mean = np.empty(stack.shape[1], dtype=dtype)
    std = np.empty(stack.shape[1], dtype=dtype) if with_std else None
    zero = dtype.type(0)
    block = max(1024, _NETWORK_BLOCK_BYTES // max(1, n_images * dtype.itemsize))
    with np.errstate(invalid="ignore", divide="ignore"):
        for start in range(0, stack.shape[1], block):
            part = stack[:, start:start + block]
            taken = slice(start, start + block)
            # (counts are exact in float32 up to 2**24 frames)
            count = (n_images - rejected[taken]).astype(dtype)
            is_nan = None
            if rejected[taken].any():
                # A NaN adds +0 instead: a sum started at +0 is never -0, so adding +0
                # leaves every sum as skipping the NaN does.
                is_nan = np.isnan(part)
                part = part.copy()
                np.copyto(part, zero, where=is_nan)
            total = np.add.reduce(part, axis=0, initial=zero)
            average = np.divide(total, count, out=mean[taken])
            if with_std:
                deviation = np.subtract(part, average)
                if is_nan is not None:
                    np.copyto(deviation, zero, where=is_nan)
                np.multiply(deviation, deviation, out=deviation)
                squares = np.add.reduce(deviation, axis=0, initial=zero)
                np.sqrt(np.divide(squares, count, out=squares), out=std[taken])
            if is_nan is not None:
                # bottleneck's NaN where no value is left (0 / 0 would set the sign bit)
                none_left = count == 0
                mean[taken][none_left] = np.nan
                if with_std:
                    std[taken][none_left] = np.nan
    shape = values.shape[1:]
    return mean.reshape(shape), None if std is None else std.reshape(shape)


def reject_extrema(stack, rejected, nlow, nhigh):
    """
    Mark the ``nlow`` lowest and ``nhigh`` highest values of each pixel as rejected.

    ``Combiner.clip_extrema``: the same `numpy.argsort`, so ties are broken the same way,
    and values already rejected count towards ``nlow`` and ``nhigh``.

    Parameters
    ----------
    stack : `numpy.ndarray`
        Shape ``(n_frames, ...)``.
    rejected : `numpy.ndarray`
        Booleans of the shape of ``stack``, set to True in place.
    nlow, nhigh : int
        Numbers of low and high values rejected.
    """
    order = np.argsort(stack, axis=0)
    for position in range(-nhigh, nlow):
        np.put_along_axis(rejected, order[position][np.newaxis], True, axis=0)


# --------------------------------------------------------------------- sigma clipping

# Centre and deviation functions for which the sigma clipping has an exact fast path on
# finite data: medians select the same values as np.median (which np.ma.median calls on
# plain arrays), and both deviations are np.median(|x - median|) * 1.482602218505602.
_MEDIAN_FUNCTIONS = (np.ma.median, np.median, np.nanmedian, bn.median, bn.nanmedian)
_MAD_STD_FUNCTIONS = (stats.mad_std, sigma_func)


def has_fast_sigma_clip(centre_function, deviation_function, n_frames):
    """
    Whether `sigma_clip_rejections` has an exact fast path for these functions.

    Parameters
    ----------
    centre_function, deviation_function : callable
        The ``sigma_clip_func`` and ``sigma_clip_dev_func`` of a combine.
    n_frames : int
        Number of values of each pixel.

    Returns
    -------
    fast : bool
        True for a median centre and a MAD deviation (`astropy.stats.mad_std`,
        `ccdproc.sigma_func`) of at most `NETWORK_MAX_FRAMES` frames; the fast path
        then applies to finite values.
    """
    return (
        any(centre_function is f for f in _MEDIAN_FUNCTIONS)
        and any(deviation_function is f for f in _MAD_STD_FUNCTIONS)
        and n_frames <= NETWORK_MAX_FRAMES
    )


def sigma_clip_rejections(stack, *, low_thresh, high_thresh, centre_function,
                          deviation_function, order_dtype, result_dtype, finite,
                          integers=None):
    """
    The mask ``Combiner.sigma_clipping`` adds: one iteration of astropy's sigma_clip
    along the frame axis, on all the values (masked ones included).

    Parameters
    ----------
    stack : `numpy.ndarray`
        The values, shape ``(n_frames, ...)``; not changed.
    low_thresh, high_thresh : float or None
        Thresholds below and above the centre, in units of the deviation; ``None`` or
        ``0`` means 3, as in `astropy.stats.sigma_clip`.
    centre_function, deviation_function : callable
        Called as ``function(data, axis=0)`` unless `has_fast_sigma_clip` says they are a
        median and a MAD, which are then computed by `nanmedian` (or `integer_median`).
    order_dtype : `numpy.dtype`
        Type the fast path orders the values in (see `nanmedian`).
    result_dtype : `numpy.dtype`
        Type of the centre and deviation of the fast path.
    finite : bool
        Whether every value is known to be finite (no test is then made).
    integers : `numpy.ndarray` or None, optional
        The same values as ``stack`` as integers of at most 16 bits, which may be
        reordered: the fast path then computes on them. Default is ``None``.

    Returns
    -------
    rejected : `numpy.ndarray`
        Booleans, the shape of ``stack``.
    """
    fast = has_fast_sigma_clip(centre_function, deviation_function, stack.shape[0])
    if integers is not None:
        centre, mad = integer_median(integers, result_dtype=result_dtype, with_mad=True)
    elif fast and (finite or np.isfinite(stack).all()):
        centre, mad = nanmedian(
            stack,
            None,
            order_dtype=order_dtype,
            result_dtype=result_dtype,
            with_mad=True,
        )
    else:
        centre = None
    if centre is not None:
        deviation = mad * MAD_TO_STD
        # SigmaClip treats a threshold of None (or 0) as its default sigma, 3.
        lower = centre - deviation * (low_thresh or 3)
        upper = centre + deviation * (high_thresh or 3)
        return (stack < lower) | (stack > upper)
    clipped = stats.sigma_clip(
        stack,
        sigma_lower=low_thresh,
        sigma_upper=high_thresh,
        axis=0,
        copy=False,
        maxiters=1,
        cenfunc=centre_function,
        stdfunc=deviation_function,
        masked=True,
    )
    return ma.getmaskarray(clipped)


# -------------------------------------------------------------------- order statistics


def median_of_integers(images, *, result_dtype, with_uncertainty):
    """
    Median of integers of at most 16 bits without any rejected value, and its
    uncertainty as ccdproc gives it: ``sigma_func(data, axis=0) / sqrt(n_frames)``.

    Parameters
    ----------
    images : sequence of `numpy.ndarray`
        One array per frame, all of one shape; reordered in place.
    result_dtype : `numpy.dtype`
        Type of the results.
    with_uncertainty : bool
        Whether to compute the uncertainty.

    Returns
    -------
    median, uncertainty : `numpy.ndarray`
        ``uncertainty`` is None unless ``with_uncertainty``.
    """
    n_images = len(images)
    median, mad = integer_median(images, result_dtype=result_dtype, with_mad=with_uncertainty)
    uncertainty = None
    if with_uncertainty:
        uncertainty = mad * MAD_TO_STD
        uncertainty /= np.sqrt(np.int64(n_images))
    return median, uncertainty


def integer_median(images, *, result_dtype, with_mad):
    """
    Median along the first axis of integers of at most 16 bits, and optionally the
    median absolute deviation, equal bit for bit to `nanmedian` of the same values as
    floats.

    The sorting network orders the integers themselves: twice as many values per vector
    operation as float32. Deviations from a median that may end in .5 are the integers
    ``|2 x - (low + high)|`` (below 2**17), halved at the end, which is exact: every
    number involved is a multiple of 0.25 below 2**17.

    Parameters
    ----------
    images : sequence of `numpy.ndarray` or `numpy.ndarray`
        Integers of at most 16 bits: arrays of one shape, or one array of shape
        ``(n_frames, ...)``; reordered in place.
    result_dtype : `numpy.dtype`
        Type of the results (float).
    with_mad : bool
        Whether to compute the median absolute deviation too.

    Returns
    -------
    median, mad : `numpy.ndarray`
        ``mad`` is None unless ``with_mad``.
    """
    n_images = len(images)
    shape = images[0].shape
    pixels = [np.reshape(image, -1) for image in images]
    n_pixels = pixels[0].size
    median = np.empty(n_pixels, dtype=result_dtype)
    mad = np.empty_like(median) if with_mad else None
    # Sorting fully (rather than only placing the middle pair) orders the deviations
    # too: those below and above the median are then two sorted runs.
    network = sorting_network(n_images) if with_mad else _median_network(n_images)
    middle = (n_images - 1) // 2, n_images // 2
    block = max(1024, _INTEGER_BLOCK_BYTES // (n_images * pixels[0].itemsize))
    for start in range(0, n_pixels, block):
        stop = min(start + block, n_pixels)
        wires = [image[start:stop] for image in pixels]
        run_network(wires, network, np.minimum)
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
    """
    ``numpy.median(data)`` (of every value), the same number, about four times faster
    for a frame of floats.

    `numpy.median` partitions around three positions at once (the middle pair and the
    last, to find NaN); here one position is partitioned, the value below it is the
    largest of the lower part, and NaN is looked for separately (with NaN, or for
    anything but floats, `numpy.median` itself answers). The middle values are averaged
    by `numpy.mean`, as `numpy.median` does, for the same type and rounding.

    Parameters
    ----------
    data : array-like
        The values, of any shape.
    overwrite_input : bool, optional
        Whether ``data`` may be reordered in place (saving a copy). Default is ``False``.

    Returns
    -------
    median : `numpy.floating`
        The median of all the values, as `numpy.median` gives it.
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


def nanmedian(values, n_valid, *, order_dtype, result_dtype, with_mad, overwrite_input=False):
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
        Whether ``values`` may be reordered in place (saving a copy). Default is
        ``False``.

    Returns
    -------
    median, mad : `numpy.ndarray`
        ``mad`` is None unless ``with_mad``.
    """
    n_images = values.shape[0]
    if n_images > NETWORK_MAX_FRAMES:
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
            # integer_median), unless an infinite median makes some of them NaN.
            run_network(wires, sorting_network(n_images), np.minimum)
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
        run_network(wires, _median_network(n_images), np.minimum)
        low = wires[(n_images - 1) // 2].astype(result_dtype)
        if n_images % 2:
            return low
        with np.errstate(invalid="ignore", over="ignore"):  # -inf + inf, as bottleneck
            return (low + wires[n_images // 2].astype(result_dtype)) / 2
    # Some NaN: sort fully, NaN last (fmin prefers numbers, maximum prefers NaN),
    # then pick each pixel's middle pair among its valid values.
    run_network(wires, sorting_network(n_images), np.fmin)
    ordered = np.stack(wires)
    low_index = np.maximum(counts - 1, 0)[np.newaxis] // 2
    high_index = counts[np.newaxis] // 2
    low = np.take_along_axis(ordered, low_index, axis=0)[0].astype(result_dtype)
    high = np.take_along_axis(ordered, np.minimum(high_index, n_images - 1), axis=0)[0]
    high = high.astype(result_dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(low_index[0] == high_index[0], low, (low + high) / 2)


def run_network(wires, network, minimum):
    """
    Apply compare-exchange steps in place: after step ``(i, j)``, ``wires[i] <= wires[j]``.

    Parameters
    ----------
    wires : list of `numpy.ndarray`
        One array per value of each pixel, all of one shape; the list's items are
        replaced (the arrays themselves are reused).
    network : sequence of (int, int)
        The steps, e.g. ``sorting_network(len(wires))``.
    minimum : callable
        `numpy.minimum`, or `numpy.fmin` to move NaN to the end.
    """
    spare = np.empty_like(wires[0])
    for i, j in network:
        low, high = wires[i], wires[j]
        minimum(low, high, out=spare)
        np.maximum(low, high, out=high)
        wires[i], spare = spare, low


@functools.lru_cache
def sorting_network(n):
    """
    Batcher's odd-even merge sort for ``n`` wires, as (i, j) compare-exchange pairs.

    Parameters
    ----------
    n : int
        Number of wires (values to sort).

    Returns
    -------
    network : tuple of (int, int)
        The steps, for `run_network`.
    """
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
    for i, j in reversed(sorting_network(n)):
        if i in needed or j in needed:
            kept.append((i, j))
            needed.update((i, j))
    return tuple(reversed(kept))
