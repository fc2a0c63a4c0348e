"""
Tests of `ccdproc_ext._kernels`: the exact equivalences the fast paths of `combine` rely
on, checked against the libraries directly (bottleneck, numpy, astropy).
"""

import warnings

import bottleneck as bn
import numpy as np
import pytest
from astropy import stats

from ccdproc_ext._kernels import (
    count_nan,
    integer_median,
    median_of_all,
    nanmean_and_std,
    nanmedian,
    run_network,
    sigma_clip_rejections,
    sorting_network,
)


@pytest.mark.parametrize("n", range(1, 41))
def test_sorting_network_sorts(n):
    rng = np.random.default_rng(n)
    values = rng.integers(0, 4, (n, 500)).astype(float)  # many ties
    wires = list(values.copy())
    run_network(wires, sorting_network(n), np.minimum)
    np.testing.assert_array_equal(np.array(wires), np.sort(values, axis=0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("values_kind", ["normal", "small-integers", "with-nan"])
def test_network_median_equals_bottleneck_and_astropy(dtype, values_kind):
    rng = np.random.default_rng(5)
    for n in range(1, 34):
        if values_kind == "normal":
            values = rng.normal(0, 1, (n, 6, 40)).astype(dtype)
        else:
            values = rng.integers(0, 9, (n, 6, 40)).astype(dtype)
        if values_kind == "with-nan":
            values[rng.random(values.shape) < 0.3] = np.nan
            values[:, 0, 0] = np.nan
        n_valid = n - np.isnan(values).sum(axis=0)
        order_dtype = np.dtype(np.float32 if values_kind != "normal" else dtype)
        median, mad = nanmedian(
            values, n_valid, order_dtype=order_dtype, result_dtype=dtype, with_mad=True
        )
        if values_kind != "normal":
            # Integers held in float32, reordered in place, results in ``dtype``.
            in_float32 = values.astype(np.float32)
            median_32, mad_32 = nanmedian(
                in_float32,
                n_valid,
                order_dtype=np.dtype(np.float32),
                result_dtype=dtype,
                with_mad=True,
                overwrite_input=True,
            )
            np.testing.assert_array_equal(median_32, median)
            np.testing.assert_array_equal(mad_32, mad)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
            expected_mad = stats.median_absolute_deviation(values, axis=0, ignore_nan=True)
            np.testing.assert_array_equal(median, np.nanmedian(values, axis=0))
        np.testing.assert_array_equal(median, bn.nanmedian(values, axis=0))
        np.testing.assert_array_equal(mad, expected_mad)
        assert median.dtype == mad.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("special", [None, "nan", "mostly nan", "inf", "signed zeros"])
def test_nanmean_and_std_are_bottlenecks_bit_for_bit(dtype, special):
    rng = np.random.default_rng(11)
    for n in (1, 2, 3, 5, 8, 20, 33):
        # Wide spreads and levels, so that the order of the additions shows in the bits;
        # more pixels than one block of the kernel.
        values = (rng.normal(1000, 300, (n, 40, 1500)) * rng.choice([1e-3, 1, 1e5])
                  ).astype(dtype)
        if special == "nan":
            values[rng.random(values.shape) < 0.05] = np.nan
            values[:, 3, 7] = np.nan  # every value of a pixel
        elif special == "mostly nan":
            values[rng.random(values.shape) < 0.9] = np.nan
        elif special == "inf":
            values[0, 1, :10] = np.inf
            values[-1, 1, 5:15] = -np.inf
            values[rng.random(values.shape) < 0.01] = np.nan
        elif special == "signed zeros":
            values[:, 2, :] = -0.0
            values[: n // 2, 5, :] = 0.0
            values[n // 2:, 5, :] = -0.0
        before = values.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected_mean = bn.nanmean(values, axis=0)
            expected_std = bn.nanstd(values, axis=0)
        mean, std = nanmean_and_std(values, count_nan(values))
        # Bits, not values: NaN where bottleneck's are, and the sign of zeros too.
        assert mean.dtype == std.dtype == dtype
        np.testing.assert_array_equal(mean.view(f"u{mean.itemsize}"),
                                      expected_mean.view(f"u{mean.itemsize}"))
        np.testing.assert_array_equal(std.view(f"u{std.itemsize}"),
                                      expected_std.view(f"u{std.itemsize}"))
        only_mean, none = nanmean_and_std(values, count_nan(values), with_std=False)
        assert none is None
        np.testing.assert_array_equal(only_mean, mean)
        np.testing.assert_array_equal(values, before)


def test_nanmean_and_std_refuse_other_types():
    with pytest.raises(TypeError, match="float16"):
        nanmean_and_std(np.ones((3, 4), np.float16), np.zeros(4, int))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [3, 4, 8, 9, 20, 21])
def test_fast_sigma_clip_equals_astropy(dtype, n):
    rng = np.random.default_rng(n)
    stack = rng.normal(100, 5, (n, 30, 40)).round().astype(dtype)
    stack[0, :5] += 60
    expected = stats.sigma_clip(
        stack,
        sigma_lower=1.5,
        sigma_upper=2,
        axis=0,
        maxiters=1,
        cenfunc=np.ma.median,
        stdfunc=stats.mad_std,
    ).mask
    ours = sigma_clip_rejections(
        stack,
        low_thresh=1.5,
        high_thresh=2,
        centre_function=np.ma.median,
        deviation_function=stats.mad_std,
        order_dtype=np.dtype(np.float32),
        result_dtype=np.dtype(dtype),
        finite=True,
    )
    assert expected.any()
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
def test_integer_median_equals_bottleneck_and_astropy(dtype):
    rng = np.random.default_rng(9)
    info = np.iinfo(dtype)
    for n in range(1, 42):
        for spread in (3, info.max - info.min):  # narrow (uint16 deviations) and the widest
            low = max(info.min, -spread // 2)
            values = rng.integers(low, low + spread, (n, 4, 300), endpoint=True).astype(dtype)
            as_float = values.astype(np.float64)
            median, mad = integer_median(
                values.copy(), result_dtype=np.dtype(np.float64), with_mad=True)
            np.testing.assert_array_equal(median, bn.nanmedian(as_float, axis=0))
            np.testing.assert_array_equal(
                mad, stats.median_absolute_deviation(as_float, axis=0, ignore_nan=True))
            median_only, none = integer_median(
                list(values.copy()), result_dtype=np.dtype(np.float32), with_mad=False)
            assert none is None
            np.testing.assert_array_equal(median_only,
                                          bn.nanmedian(values.astype(np.float32), axis=0))



# The median of every value of a frame, as numpy's.


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int16, np.uint16])
@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 7, 10, 101, 1000])
@pytest.mark.parametrize("special", [None, "nan", "inf", "ties", "signed zeros"])
def test_median_of_all_is_numpys_median(dtype, size, special):
    rng = np.random.default_rng(size)
    values = rng.normal(100, 30, size)
    if special == "ties":
        values = np.round(values / 20)
    elif special == "signed zeros":
        values = np.where(rng.random(size) < 0.5, 0.0, -0.0)
    values = values.astype(dtype)
    if size and special in ("nan", "inf") and values.dtype.kind == "f":
        values[rng.integers(size)] = np.nan if special == "nan" else np.inf
        values[0] = -np.inf if special == "inf" else values[0]
    frame = values.reshape(-1, 1) if size % 2 else values  # 2-D frames too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the empty case, in both
        expected = np.median(frame)
        found = median_of_all(frame)
        reordered = median_of_all(frame.copy(), overwrite_input=True)
    assert type(found) is type(expected)
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_array_equal(reordered, expected)


def test_median_of_all_averages_the_middle_pair_as_numpy():
    """The middle pair summed in float32, as numpy's mean does: near float32's largest
    value the sum overflows (in float64 it would not)."""
    values = np.array([3.0e38, 3.1e38, 1.0, 3.4e38], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the overflow, in both
        expected = np.median(values)
        found = median_of_all(values)
    assert np.isinf(expected)  # numpy's own answer, by its rounding
    assert found == expected and found.dtype == np.float32
