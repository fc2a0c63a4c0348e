"""Bad-pixel masks: hot pixels of a master dark and low pixels of a master flat, against
rules written by hand and against numpy's and astropy's own statistics."""

import numpy as np
import pytest
from astropy.nddata import CCDData
from astropy.stats import mad_std

from ccdproc_ext.bpm import _box_medians, hot_pixels, low_flat_pixels


def test_low_flat_pixels_by_hand():
    """A dead pixel and a weak column in a vignetted flat: the rule is half the level of
    the pixel's neighbourhood, not half the mean of the frame."""
    y, x = np.mgrid[0:64, 0:64]
    flat = 1.0 - 0.6 * ((x - 32) ** 2 + (y - 32) ** 2) / 2048  # corners at 0.4
    flat[5, 7] = 0.0
    flat[:, 40] *= 0.4
    # A corner pixel at 0.4: below half the mean of the frame, but 0.74 of its
    # neighbours (0.54): not low.
    flat[60, 60] = 0.4
    low = low_flat_pixels(flat)
    assert sorted(map(tuple, np.argwhere(low))) == sorted([(5, 7)] + [(r, 40)
                                                                     for r in range(64)])
    dark = np.full((20, 20), 3.0) + np.random.default_rng(1).normal(0, 0.5, (20, 20))
    dark[4, 4] = 30.0
    assert np.array_equal(np.argwhere(hot_pixels(dark, 60.0)), [[4, 4]])
    # A dark without noise: only a pixel above the minimum rate (0.01 ADU/s) is hot.
    flat_dark = np.full((10, 10), 3.0)
    flat_dark[1, 1] = 3.3  # 0.005 ADU/s above the others over 60 s
    flat_dark[2, 2] = 4.2  # 0.02 ADU/s above
    assert np.array_equal(np.argwhere(hot_pixels(flat_dark, 60.0)), [[2, 2]])


@pytest.mark.parametrize("shape", [(64, 64), (70, 45), (5, 3)])
def test_box_medians_are_numpys_nanmedian_of_each_box(shape):
    """Boxes cut at the edges, NaN pixels, a box of NaN only (NaN), even and odd counts."""
    rng = np.random.default_rng(3)
    data = rng.normal(1.0, 0.05, shape)
    data[rng.random(shape) < 0.1] = np.nan
    data[:min(16, shape[0]), 16:32] = np.nan  # a whole box (when there is one)
    box = 16
    expected = np.empty((-(-shape[0] // box), -(-shape[1] // box)))
    for top in range(0, shape[0], box):
        for left in range(0, shape[1], box):
            values = data[top:top + box, left:left + box]
            values = values[np.isfinite(values)]
            expected[top // box, left // box] = np.median(values) if values.size else np.nan
    np.testing.assert_array_equal(_box_medians(data, ~np.isfinite(data), box), expected)
    # a pixel called bad is left out as NaN is
    bad = np.zeros(shape, bool)
    bad[0, 0] = True
    with_bad = _box_medians(np.where(bad, np.nan, data), ~np.isfinite(data) | bad, box)
    np.testing.assert_array_equal(_box_medians(data, ~np.isfinite(data) | bad, box),
                                  with_bad)


def test_hot_pixels_are_astropys_mad_std_rule():
    """The threshold against astropy's own median and mad_std of the good rates; NaN and
    masked pixels are left out of both the statistics and the result."""
    rng = np.random.default_rng(5)
    dark = rng.normal(30.0, 2.0, (120, 90))
    dark[rng.random(dark.shape) < 0.02] += rng.uniform(5, 60, 1)  # a tail of warm pixels
    dark[3, 4] = np.nan
    mask = rng.random(dark.shape) < 0.05
    exposure = 30.0
    rate = dark / exposure
    good = np.isfinite(rate) & ~mask
    threshold = np.median(rate[good]) + max(5.0 * mad_std(rate[good]), 0.01)
    expected = good & (np.nan_to_num(rate) > threshold)
    assert 0 < expected.sum() < 0.05 * dark.size
    found = hot_pixels(CCDData(dark, unit="adu", mask=mask), exposure)
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_array_equal(hot_pixels(np.where(mask, np.nan, dark), exposure),
                                  np.isfinite(rate) & ~mask & (np.nan_to_num(rate) > threshold))


def test_low_flat_pixels_of_boxes_cut_at_the_edges_by_hand():
    """A 70 x 45 flat (boxes cut at the right and bottom edges), a masked pixel, NaN:
    a pixel is low below half the median of its box's good pixels."""
    rng = np.random.default_rng(9)
    data = rng.normal(1.0, 0.2, (70, 45)).astype(np.float32)
    data[rng.random(data.shape) < 0.05] = 0.3
    data[68, 44] = np.nan
    mask = np.zeros(data.shape, bool)
    mask[2, 2] = True
    expected = ~np.isfinite(data) | mask
    for top in range(0, 70, 16):
        for left in range(0, 45, 16):
            box = (slice(top, top + 16), slice(left, left + 16))
            good = data[box][np.isfinite(data[box]) & ~mask[box]].astype(np.float64)
            expected[box] |= data[box] < 0.5 * np.median(good)
    assert 0 < expected.sum() < 0.1 * data.size
    np.testing.assert_array_equal(low_flat_pixels(CCDData(data, unit="adu", mask=mask)),
                                  expected)
