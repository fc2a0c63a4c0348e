"""
Tests of `ccdproc_ext.combine.combine`.

The reference is ccdproc's own `ccdproc.combine` on the same inputs, or an independent
numpy computation where ccdproc is known to be wrong (weighted averages of masked
values, ccdproc issue #893). Nothing is compared with numbers copied from our output.
"""

import copy
import logging
import re
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import bottleneck as bn
import ccdproc
import numpy as np
import pytest
from astropy import stats
from astropy import units as u
from astropy.io import fits
from astropy.io.fits.hdu.image import Section
from astropy.nddata import CCDData
from astropy.wcs import WCS

from ccdproc_ext import _kernels
from ccdproc_ext.combine import combine

N_FRAMES = 7
SHAPE = (64, 50)
ALWAYS_MASKED = (5, 7)  # masked in every frame: the combined mask must be True there

# Small enough to split 64 rows into many bands (for ccdproc too), large enough to
# hold the output image and a band of one row.
TINY_MEM_LIMIT = 8e4

# Float64 results are identical operation for operation; float32 ones may differ in
# the last place if an accumulation order ever differed.
RTOL = {np.float64: 1e-12, np.float32: 1e-6}


def _make_frames(seed, *, integer):
    """Flat-field-like frames of different levels, with cosmic rays and masked pixels."""
    rng = np.random.default_rng(seed)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [25.0, 32.0]
    wcs.wcs.cdelt = [-1e-4, 1e-4]
    frames = []
    for index in range(N_FRAMES):
        level = 1000.0 * (1 + 0.05 * index)
        data = rng.normal(level, 15.0, SHAPE)
        cosmic_rays = rng.integers(0, data.size, 12)
        data.flat[cosmic_rays] += rng.uniform(500, 5000, cosmic_rays.size)
        cold = rng.integers(0, data.size, 3)
        data.flat[cold] -= 300
        mask = np.zeros(SHAPE, dtype=bool)
        mask[rng.integers(0, SHAPE[0], 4), rng.integers(0, SHAPE[1], 4)] = True
        mask[ALWAYS_MASKED] = True
        if integer:
            data = np.round(data).astype(np.uint16)
        meta = {"OBJECT": "flat", "FRAMENO": index, "EXPTIME": 2.0 + index}
        frames.append(CCDData(data, unit="adu", mask=mask, meta=meta, wcs=wcs))
    return frames


@pytest.fixture(scope="module")
def frame_files(tmp_path_factory):
    """Seven uint16 FITS files (stored with BZERO) with a MASK extension and a WCS."""
    folder = tmp_path_factory.mktemp("frames")
    paths = []
    for index, frame in enumerate(_make_frames(1, integer=True)):
        path = folder / f"flat_{index:02d}.fits"
        frame.write(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def frame_ccds():
    """Seven float64 in-memory frames with masks (non-integer values)."""
    return _make_frames(2, integer=False)


@pytest.fixture(params=["files", "ccddata"])
def inputs(request, frame_files, frame_ccds):
    """The same kind of stack given as file names or as in-memory CCDData."""
    return frame_files if request.param == "files" else frame_ccds


def _without_masks(images):
    """The images, with their masks ignored (to compare where ccdproc is wrong)."""
    if isinstance(images[0], CCDData):
        return [CCDData(image.data, unit=image.unit, meta=image.meta) for image in images], {}
    return images, {"hdu_mask": None}


def _ccdproc_combine(images, **options):
    with warnings.catch_warnings():
        # For float32 medians ccdproc calls np.nanmedian, which warns about the pixel
        # that is masked in every frame.
        warnings.simplefilter("ignore", RuntimeWarning)
        return ccdproc.combine(images, **options)


def _read_all(images):
    """The frames as CCDData, read by astropy independently of the code under test."""
    return [image if isinstance(image, CCDData) else CCDData.read(image) for image in images]


def _masked_stack(images):
    """The frames as one float64 masked array."""
    ccds = _read_all(images)
    data = np.array([ccd.data for ccd in ccds], dtype=np.float64)
    mask = np.array([ccd.mask for ccd in ccds])
    return np.ma.masked_array(data, mask)


def _assert_same_result(ours, reference, rtol):
    np.testing.assert_array_equal(ours.mask, reference.mask)
    np.testing.assert_allclose(ours.data, reference.data, rtol=rtol, atol=0, equal_nan=True)
    np.testing.assert_allclose(
        ours.uncertainty.array, reference.uncertainty.array, rtol=rtol, atol=0, equal_nan=True
    )
    assert ours.data.dtype == reference.data.dtype
    assert ours.unit == reference.unit


def _n_bands(caplog):
    counts = [
        int(match.group(1))
        for record in caplog.records
        if (match := re.search(r"in (\d+) band", record.getMessage()))
    ]
    assert counts, "combine did not log its banding"
    return counts[-1]


def _inverse_median(data):
    return 1 / np.median(data)


def _sample_std(data, axis):
    return bn.nanstd(data, axis=axis, ddof=1)


WEIGHTS = np.array([1.0, 2.0, 3.0, 1.0, 2.0, 0.5, 1.5])
SCALES = [1.0, 0.95, 0.9, 0.87, 0.83, 0.8, 0.77]

# Options compared with ccdproc.combine: (options, whether the inputs keep their masks).
# Weighted averages are compared without masks only: with masks ccdproc is wrong
# (issue #893), see test_weighted_average_with_masks.
PARITY_CASES = [
    pytest.param({"method": "average"}, True, id="average"),
    pytest.param({"method": "median"}, True, id="median"),
    pytest.param({"method": "sum"}, True, id="sum"),
    pytest.param({"method": "average", "weights": WEIGHTS}, False, id="average-weights"),
    pytest.param({"method": "sum", "weights": WEIGHTS}, True, id="sum-weights"),
    pytest.param({"method": "median", "scale": SCALES}, True, id="median-scale-array"),
    pytest.param({"method": "average", "scale": _inverse_median}, True, id="average-scale-func"),
    pytest.param({"method": "median", "scale": _inverse_median}, True, id="median-scale-func"),
    pytest.param({"method": "sum", "scale": SCALES}, True, id="sum-scale-array"),
    pytest.param(
        {"method": "average", "clip_extrema": True, "nlow": 1, "nhigh": 2},
        True,
        id="average-clip-extrema",
    ),
    pytest.param(
        {"method": "median", "clip_extrema": True, "nlow": 2, "nhigh": None},
        True,
        id="median-clip-extrema-nhigh-none",
    ),
    pytest.param(
        {
            "method": "average",
            "minmax_clip": True,
            "minmax_clip_min": 960,
            "minmax_clip_max": 1300.5,
        },
        True,
        id="average-minmax",
    ),
    pytest.param(
        {"method": "median", "minmax_clip": True, "minmax_clip_min": 1000},
        True,
        id="median-minmax-low-only",
    ),
    pytest.param({"method": "average", "sigma_clip": True}, True, id="average-sigma-default"),
    pytest.param(
        {
            "method": "average",
            "sigma_clip": True,
            "sigma_clip_func": np.ma.median,
            "sigma_clip_dev_func": stats.mad_std,
        },
        True,
        id="average-sigma-median-madstd",
    ),
    pytest.param(
        {
            "method": "median",
            "sigma_clip": True,
            "sigma_clip_low_thresh": 2,
            "sigma_clip_high_thresh": 2.5,
            "sigma_clip_func": np.ma.median,
            "sigma_clip_dev_func": stats.mad_std,
        },
        True,
        id="median-sigma-median-madstd-thresholds",
    ),
    pytest.param(
        {
            "method": "sum",
            "sigma_clip": True,
            "sigma_clip_low_thresh": None,
            "sigma_clip_func": np.ma.median,
            "sigma_clip_dev_func": np.ma.std,
        },
        True,
        id="sum-sigma-median-std",
    ),
    pytest.param(
        {
            "method": "average",
            "scale": _inverse_median,
            "clip_extrema": True,
            "minmax_clip": True,
            "minmax_clip_max": 4000,
            "sigma_clip": True,
            "sigma_clip_func": np.ma.median,
            "sigma_clip_dev_func": stats.mad_std,
        },
        True,
        id="average-all-rejections-scaled",
    ),
    pytest.param(
        {"method": "median", "combine_uncertainty_function": np.ma.std},
        True,
        id="median-uncertainty-ma-std",
    ),
    pytest.param(
        {"method": "average", "combine_uncertainty_function": ccdproc.sigma_func},
        True,
        id="average-uncertainty-sigma-func",
    ),
    pytest.param(
        {"method": "sum", "combine_uncertainty_function": _sample_std},
        True,
        id="sum-uncertainty-sample-std",
    ),
    pytest.param({"method": "average", "dtype": np.float32}, True, id="average-float32"),
    pytest.param({"method": "median", "dtype": "float32"}, True, id="median-float32"),
    pytest.param(
        {"method": "sum", "dtype": np.float32, "weights": WEIGHTS}, True, id="sum-weights-float32"
    ),
    pytest.param(
        {"method": "median", "dtype": np.float32, "scale": _inverse_median},
        True,
        id="median-scale-func-float32",
    ),
    pytest.param(
        {
            "method": "average",
            "dtype": np.float32,
            "sigma_clip": True,
            "sigma_clip_func": np.ma.median,
            "sigma_clip_dev_func": stats.mad_std,
        },
        True,
        id="average-sigma-median-madstd-float32",
    ),
    pytest.param(
        {"method": "average", "dtype": np.float32, "clip_extrema": True},
        True,
        id="average-clip-extrema-float32",
    ),
]


@pytest.mark.parametrize(("options", "with_masks"), PARITY_CASES)
def test_same_result_as_ccdproc_in_one_or_many_bands(inputs, options, with_masks, caplog):
    images, read_options = (inputs, {}) if with_masks else _without_masks(inputs)
    reference = _ccdproc_combine(images, **options, **read_options)

    ours = combine(images, **options, **read_options)
    rtol = RTOL[np.dtype(options.get("dtype", np.float64)).type]
    _assert_same_result(ours, reference, rtol)
    assert ours.mask[ALWAYS_MASKED] == with_masks

    # Split into bands: exactly the same bits, whatever the band boundaries.
    with caplog.at_level(logging.INFO, logger="ccdproc_ext.combine"):
        banded = combine(images, mem_limit=TINY_MEM_LIMIT, **options, **read_options)
    assert _n_bands(caplog) >= 3
    np.testing.assert_array_equal(banded.data, ours.data)
    np.testing.assert_array_equal(banded.mask, ours.mask)
    np.testing.assert_array_equal(banded.uncertainty.array, ours.uncertainty.array)


@pytest.mark.parametrize(
    "options",
    [
        {"method": "median"},
        {"method": "average", "sigma_clip": True, "clip_extrema": True},
        {"method": "sum", "scale": _inverse_median, "dtype": np.float32},
    ],
    ids=["median", "average-sigma-extrema", "sum-scale-float32"],
)
def test_same_result_as_chunked_ccdproc(frame_files, options, caplog):
    # ccdproc too splits the images into tiles under this limit (it logs how many).
    with caplog.at_level(logging.INFO):
        reference = _ccdproc_combine(frame_files, mem_limit=TINY_MEM_LIMIT, **options)
    assert any("chunks" in record.getMessage() for record in caplog.records)
    ours = combine(frame_files, mem_limit=TINY_MEM_LIMIT, **options)
    rtol = RTOL[np.dtype(options.get("dtype", np.float64)).type]
    _assert_same_result(ours, reference, rtol)


def test_weighted_average_with_masks(inputs):
    # ccdproc divides by the sum of all weights even where values are masked (#893);
    # the right answer is numpy's masked weighted average.
    stack = _masked_stack(inputs)
    expected = np.ma.average(stack, axis=0, weights=WEIGHTS)

    ours = combine(inputs, method="average", weights=WEIGHTS)

    assert stack.mask.any(axis=0).sum() > 20  # the case is really exercised
    usable = ~expected.mask
    np.testing.assert_allclose(ours.data[usable], expected.data[usable], rtol=1e-12)
    assert np.isnan(ours.data[ALWAYS_MASKED])
    np.testing.assert_array_equal(ours.mask, expected.mask)
    # The uncertainty does not depend on the weights, as in ccdproc.
    unweighted = combine(inputs, method="average")
    np.testing.assert_array_equal(ours.uncertainty.array, unweighted.uncertainty.array)


def test_per_pixel_weights_in_bands(frame_ccds):
    images, _ = _without_masks(frame_ccds)
    rng = np.random.default_rng(7)
    weights = rng.uniform(0.5, 2.0, (N_FRAMES, *SHAPE))
    # ccdproc accepts per-pixel weights only when it does not split the images.
    reference = _ccdproc_combine(images, method="average", weights=weights)
    ours = combine(images, method="average", weights=weights, mem_limit=TINY_MEM_LIMIT)
    _assert_same_result(ours, reference, RTOL[np.float64])


@pytest.mark.parametrize("method", ["average", "median"])
def test_scaled_uncertainty_from_scaled_values(inputs, method):
    # ccdproc issue #719: the uncertainty must describe the scaled values.
    stack = _masked_stack(inputs)
    factors = np.array([1 / np.median(image.data) for image in _read_all(inputs)])
    scaled = stack * factors[:, np.newaxis, np.newaxis]
    n_used = (~scaled.mask).sum(axis=0)
    if method == "average":
        expected = scaled.mean(axis=0)
        deviation = scaled.std(axis=0)
    else:
        expected = np.ma.median(scaled, axis=0)
        deviation = 1.482602218505602 * np.ma.median(np.abs(scaled - expected), axis=0)

    ours = combine(inputs, method=method, scale=_inverse_median)

    usable = n_used > 0
    np.testing.assert_allclose(ours.data[usable], expected.data[usable], rtol=1e-12)
    np.testing.assert_allclose(
        ours.uncertainty.array[usable],
        (deviation / np.sqrt(n_used)).data[usable],
        rtol=1e-12,
    )


def test_median_uncertainty_independently(frame_ccds):
    stack = _masked_stack(frame_ccds)
    expected = np.ma.median(stack, axis=0)
    mad = np.ma.median(np.abs(stack - expected), axis=0)
    n_used = (~stack.mask).sum(axis=0)

    ours = combine(frame_ccds, method="median")

    usable = n_used > 0
    np.testing.assert_allclose(ours.data[usable], expected.data[usable], rtol=1e-12)
    np.testing.assert_allclose(
        ours.uncertainty.array[usable],
        (1.482602218505602 * mad / np.sqrt(n_used)).data[usable],
        rtol=1e-12,
    )


def test_many_frames_fall_back_to_bottleneck():
    # More frames than the sorting networks handle: bottleneck and astropy instead.
    rng = np.random.default_rng(11)
    n_frames = _kernels.NETWORK_MAX_FRAMES + 3
    images = []
    for _ in range(n_frames):
        mask = rng.random((6, 5)) < 0.1
        images.append(CCDData(rng.normal(10, 2, (6, 5)), unit="electron", mask=mask))
    options = {
        "method": "median",
        "sigma_clip": True,
        "sigma_clip_func": np.ma.median,
        "sigma_clip_dev_func": stats.mad_std,
    }
    _assert_same_result(
        combine(images, **options), _ccdproc_combine(images, **options), RTOL[np.float64]
    )


def test_each_file_opened_once_and_each_row_read_once(frame_files, monkeypatch, caplog):
    opened = Counter()
    rows_read = defaultdict(list)
    real_open = fits.open
    real_getitem = Section.__getitem__

    def counting_open(name, *args, **kwargs):
        opened[str(getattr(name, "name", name))] += 1  # a path, or a file opened by name
        return real_open(name, *args, **kwargs)

    def recording_getitem(section, key):
        rows = key[0] if isinstance(key, tuple) else key
        file_name = section.hdu._file.name
        rows_read[(file_name, section.hdu.name)].append(rows.indices(SHAPE[0])[:2])
        return real_getitem(section, key)

    monkeypatch.setattr(fits, "open", counting_open)
    monkeypatch.setattr(Section, "__getitem__", recording_getitem)

    with caplog.at_level(logging.INFO, logger="ccdproc_ext.combine"):
        combine(frame_files, method="median", mem_limit=TINY_MEM_LIMIT)
    assert _n_bands(caplog) > 4
    # And with a callable scale, which needs the whole images first.
    combine(frame_files, method="average", scale=_inverse_median)

    assert opened == Counter({name: 2 for name in frame_files})
    assert len(rows_read) == 2 * N_FRAMES  # the image and its MASK, for every file
    for (file_name, hdu_name), ranges in rows_read.items():
        # Over the two calls every row is read exactly twice: once per call.
        covered = Counter(row for start, stop in ranges for row in range(start, stop))
        assert covered == Counter({row: 2 for row in range(SHAPE[0])}), (file_name, hdu_name)


def test_callable_scale_reads_twice_only_when_files_do_not_fit(frame_files, monkeypatch):
    rows_read = Counter()
    real_getitem = Section.__getitem__

    def recording_getitem(section, key):
        start, stop = key[0].indices(SHAPE[0])[:2]
        rows_read[section.hdu._file.name] += stop - start
        return real_getitem(section, key)

    monkeypatch.setattr(Section, "__getitem__", recording_getitem)
    combine(frame_files, scale=_inverse_median, mem_limit=TINY_MEM_LIMIT)
    # Whole once for the factor, then in bands: the image twice, its mask once.
    assert rows_read == Counter({name: 3 * SHAPE[0] for name in frame_files})


def test_unknown_keyword_is_an_error(frame_files):
    with pytest.raises(TypeError, match=r"'sigma_clip_fun'.*did you mean 'sigma_clip_func'"):
        combine(frame_files, sigma_clip=True, sigma_clip_fun=np.ma.median)
    with pytest.raises(TypeError, match=r"'hud'.*did you mean 'hdu'"):
        combine(frame_files, hud=0)
    with pytest.raises(TypeError, match="do_not_scale_image_data"):
        combine(frame_files, do_not_scale_image_data=True)


def test_reader_keywords_are_used(frame_files):
    # unit overrides BUNIT, hdu_mask=None ignores the masks, as with CCDData.read.
    ours = combine(frame_files, unit="electron", hdu_mask=None, hdu=0, ignore_missing_end=True)
    reference = _ccdproc_combine(frame_files, unit="electron", hdu_mask=None)
    _assert_same_result(ours, reference, RTOL[np.float64])
    assert ours.unit == "electron"
    assert not ours.mask.any()


def test_image_in_an_extension(tmp_path, frame_ccds):
    # CCDData.read takes the first extension with data when the primary HDU is empty.
    paths = []
    for index, frame in enumerate(frame_ccds[:3]):
        path = tmp_path / f"ext_{index}.fits"
        primary = fits.PrimaryHDU()
        primary.header["OBSERVER"] = "someone"
        image = fits.ImageHDU(frame.data.astype(np.float32), name="SCI")
        image.header["BUNIT"] = "adu"
        fits.HDUList([primary, image]).writeto(path)
        paths.append(path)
    reference = _ccdproc_combine(paths, method="median")
    ours = combine(paths, method="median")
    _assert_same_result(ours, reference, RTOL[np.float64])
    assert ours.meta["OBSERVER"] == "someone"
    # Named, the extension still inherits the keywords of a primary HDU without data
    # (CCDData.read would lose them).
    assert combine(paths, hdu="SCI").meta["OBSERVER"] == "someone"


def test_accepted_forms_of_the_image_list(frame_files):
    expected = combine(frame_files, method="median")
    folder = Path(frame_files[0]).parent
    forms = [
        [Path(name) for name in frame_files],
        ", ".join(frame_files),
        np.array(frame_files),
        tuple(frame_files),
        ccdproc.ImageFileCollection(folder),
    ]
    for form in forms:
        result = combine(form, method="median")
        np.testing.assert_array_equal(result.data, expected.data)
        np.testing.assert_array_equal(result.uncertainty.array, expected.uncertainty.array)


def test_header_and_wcs_as_ccdproc_plus_ncombine(inputs):
    reference = _ccdproc_combine(inputs)
    ours = combine(inputs)
    assert ours.meta["NCOMBINE"] == N_FRAMES
    ours_cards = {key: value for key, value in ours.meta.items() if key != "NCOMBINE"}
    assert ours_cards == dict(reference.meta.items())
    assert ours.wcs is not None
    assert ours.wcs.to_header() == reference.wcs.to_header()


def test_output_file_and_overwrite(frame_files, tmp_path):
    output = tmp_path / "master_flat.fits"
    ours = combine(frame_files, output_file=output, method="median")
    written = CCDData.read(output)
    np.testing.assert_array_equal(written.data, ours.data)
    np.testing.assert_array_equal(written.mask, ours.mask)
    np.testing.assert_array_equal(written.uncertainty.array, ours.uncertainty.array)
    assert written.header["NCOMBINE"] == N_FRAMES

    with pytest.raises(OSError, match="already exists"):
        combine(frame_files, output_file=output)
    combine(frame_files, output_file=output, overwrite_output=True, method="sum")
    np.testing.assert_allclose(
        CCDData.read(output).data, combine(frame_files, method="sum").data, rtol=0
    )


def test_inputs_are_not_changed(frame_ccds):
    before = copy.deepcopy(frame_ccds)
    combine(frame_ccds, method="median", scale=_inverse_median, sigma_clip=True, clip_extrema=True)
    for original, after in zip(before, frame_ccds, strict=True):
        np.testing.assert_array_equal(after.data, original.data)
        np.testing.assert_array_equal(after.mask, original.mask)
        assert dict(after.meta) == dict(original.meta)


def test_mismatched_images_are_refused(frame_ccds):
    smaller = CCDData(frame_ccds[0].data[:-1], unit="adu")
    with pytest.raises(TypeError, match=r"not the same size.*\(63, 50\).*\(64, 50\)"):
        combine([*frame_ccds[:2], smaller])
    other_unit = CCDData(frame_ccds[0].data, unit="electron")
    with pytest.raises(TypeError, match=r"same unit.*electron.*adu"):
        combine([*frame_ccds[:2], other_unit])
    with pytest.raises(ValueError, match="unrecognised combine method"):
        combine(frame_ccds, method="mode")
    with pytest.raises(ValueError, match="Length of weights"):
        combine(frame_ccds, weights=np.ones(3))
    with pytest.raises(ValueError, match="scaling must be"):
        combine(frame_ccds, scale=[1.0, 2.0])
    with pytest.raises(TypeError, match="number type"):
        combine(frame_ccds, dtype="U8")
    with pytest.raises(FileNotFoundError):
        combine(["no_such_file.fits"])


def test_too_small_mem_limit_is_logged_and_still_combines(frame_ccds, caplog):
    # Said in the log, as ccdproc says what it does with mem_limit: no warning, which
    # would stop a caller who runs with warnings as errors.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.INFO, logger="ccdproc_ext.combine"):
            ours = combine(frame_ccds, method="median", mem_limit=1e4)
    assert "mem_limit is too small" in caplog.text
    np.testing.assert_array_equal(ours.data, combine(frame_ccds, method="median").data)


def test_integer_dtype_as_ccdproc(frame_ccds):
    # ccdproc's Combiner stores the values as the integer type and gives the result in it.
    ints = [CCDData(np.full((4, 5), value), unit="adu") for value in (1.7, 2.2, 3.9)]
    for dtype in (int, np.int32):
        ours = combine(ints, dtype=dtype)
        reference = ccdproc.combine(ints, dtype=dtype)
        assert ours.data.dtype == reference.data.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(ours.data, reference.data)
        np.testing.assert_array_equal(ours.data, np.full((4, 5), 2))  # (1 + 2 + 3) / 3


def test_positional_arguments_in_ccdprocs_order(frame_ccds):
    # img_list, output_file, method, weights, scale, mem_limit, clip_extrema, nlow, nhigh
    ours = combine(frame_ccds, None, "average", None, None, 2e9, True, 1, 1)
    reference = ccdproc.combine(frame_ccds, None, "average", None, None, 2e9, True, 1, 1)
    np.testing.assert_allclose(ours.data, reference.data, rtol=1e-12)


def test_files_without_bunit_are_in_adu_or_the_profiles_unit(tmp_path, frame_ccds):
    paths = []
    for index, frame in enumerate(frame_ccds[:3]):
        paths.append(tmp_path / f"raw_{index}.fits")
        fits.PrimaryHDU(frame.data.astype(np.float32)).writeto(paths[-1])
    assert combine(paths).unit == u.adu
    assert combine(paths, profile="generic").unit == u.adu
    assert combine(paths, unit="electron").unit == u.electron
    with pytest.raises(TypeError, match="unexpected keyword"):
        combine(paths, no_such_option=1)


@pytest.mark.parametrize("method", ["average", "median", "sum"])
def test_without_uncertainty_same_pixels(method):
    """compute_uncertainty=False leaves the pixels and mask as they are, in threads too."""
    rng = np.random.default_rng(7)
    frames = [CCDData(rng.normal(100, 5, (64, 48)).astype(np.float32), unit="adu")
              for _ in range(7)]
    options = {"method": method, "sigma_clip": True, "dtype": np.float32,
               "mem_limit": 1e5}  # several bands
    full = combine(frames, workers=1, **options)
    bare = combine(frames, workers=3, compute_uncertainty=False, **options)
    assert full.uncertainty is not None and bare.uncertainty is None
    np.testing.assert_array_equal(bare.data, full.data)
    np.testing.assert_array_equal(bare.mask, full.mask)


# 16-bit raw frames without masks: their order statistics are computed on the integers.

INTEGER_CASES = [
    pytest.param({"method": "median"}, id="median"),
    pytest.param({"method": "median", "dtype": np.float32}, id="median-float32"),
    pytest.param({"method": "median", "sigma_clip": True, "sigma_clip_func": np.ma.median,
                  "sigma_clip_dev_func": stats.mad_std}, id="median-sigma-median-madstd"),
    pytest.param({"method": "average", "sigma_clip": True, "sigma_clip_func": np.ma.median,
                  "sigma_clip_dev_func": stats.mad_std, "sigma_clip_low_thresh": 2,
                  "sigma_clip_high_thresh": 2.5}, id="average-sigma-median-madstd"),
    pytest.param({"method": "average", "sigma_clip": True, "sigma_clip_func": np.ma.median,
                  "sigma_clip_dev_func": stats.mad_std, "dtype": np.float32},
                 id="average-sigma-median-madstd-float32"),
]


def _raw_integer_files(folder, n_frames, dtype, *, wide):
    """Bias-like 16-bit frames as a camera writes them (uint16 with BZERO, or int16);
    ``wide`` adds zeros and saturated pixels, so that some pixels' values span the whole
    range of the type."""
    rng = np.random.default_rng(n_frames)
    info = np.iinfo(dtype)
    paths = []
    for index in range(n_frames):
        data = rng.normal(1000 if info.min == 0 else -200, 6, SHAPE)
        hits = rng.integers(0, data.size, 40)
        data.flat[hits] += rng.uniform(100, 20000, hits.size)
        if wide:
            data.flat[rng.integers(0, data.size, 30)] = info.max
            data.flat[rng.integers(0, data.size, 30)] = info.min
        path = folder / f"raw_{index:02d}.fits"
        hdu = fits.PrimaryHDU(np.clip(np.round(data), info.min, info.max).astype(dtype))
        hdu.header["BUNIT"] = "adu"
        hdu.writeto(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("options", INTEGER_CASES)
@pytest.mark.parametrize(("n_frames", "dtype", "wide"), [
    (7, np.uint16, False), (8, np.uint16, False), (8, np.uint16, True), (5, np.int16, True),
    (6, np.uint8, True)])
def test_integer_frames_same_result_as_ccdproc(tmp_path, options, n_frames, dtype, wide,
                                               caplog, monkeypatch):
    files = _raw_integer_files(tmp_path, n_frames, dtype, wide=wide)
    with fits.open(files[0]) as hdul:
        # astropy reads them as integers of this type (int16 in the file's byte order)
        assert hdul[0].data.dtype.newbyteorder("=") == dtype
    reference = _ccdproc_combine(files, **options)
    # What is compared is the order statistics of the integers themselves.
    ordered = []
    real_integer_median = _kernels.integer_median

    def recording_integer_median(images, **kwargs):
        ordered.append(images[0].dtype)
        return real_integer_median(images, **kwargs)

    monkeypatch.setattr(_kernels, "integer_median", recording_integer_median)

    ours = combine(files, **options)
    assert ordered and set(ordered) == {np.dtype(dtype)}
    # Every value is the same as ccdproc's to the last bit.
    np.testing.assert_array_equal(ours.data, reference.data)
    np.testing.assert_array_equal(ours.mask, reference.mask)
    np.testing.assert_array_equal(ours.uncertainty.array, reference.uncertainty.array)
    assert ours.data.dtype == reference.data.dtype

    # Read in many pieces and combined in many bands: the same bits again.
    with caplog.at_level(logging.INFO, logger="ccdproc_ext.combine"):
        banded = combine(files, mem_limit=TINY_MEM_LIMIT, **options)
    assert _n_bands(caplog) >= 3
    np.testing.assert_array_equal(banded.data, ours.data)
    np.testing.assert_array_equal(banded.uncertainty.array, ours.uncertainty.array)


def test_pieces_of_each_file_are_large_and_linear_in_number(tmp_path, monkeypatch, caplog):
    # However many files, each is read in pieces of many rows (not in thin bands whose
    # number grows with the number of files, ccdproc issue #1012).
    reads = Counter()
    real_getitem = Section.__getitem__

    def counting_getitem(section, key):
        reads[section.hdu._file.name] += 1
        return real_getitem(section, key)

    monkeypatch.setattr(Section, "__getitem__", counting_getitem)
    files = _raw_integer_files(tmp_path, 24, np.uint16, wide=False)
    for n_files in (6, 24):
        reads.clear()
        with caplog.at_level(logging.INFO, logger="ccdproc_ext.combine"):
            combine(files[:n_files], method="median", mem_limit=6e5, workers=2)
        assert _n_bands(caplog) > 1  # bands of a few rows...
        assert set(reads.values()) == {1}  # ...and every file read at once
