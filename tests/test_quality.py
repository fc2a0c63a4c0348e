"""Data quality through the default call: bad-pixel masks, MASK bits, cosmic rays and bad
calibration frames, on simulated nights whose truth says which pixels are hot, which are
hit and which frames were spoiled.

References are the simulator's truth and numbers written by hand.
"""

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from scipy import ndimage

from ccdproc_ext import (
    CalibrationMatchError,
    CcdprocExtError,
    DataQualityError,
    FrameReadError,
    make_master_bias,
    make_master_flat,
    reduce_night,
)
from ccdproc_ext.simulate import simulate_night

#: The simulator's weakest cosmic-ray hit, in ADU (``rng.uniform(500, 5000)``).
WEAKEST_HIT = 500.0


def _reduce(raw, out, **options):
    return reduce_night(raw, out, progress=False, workers=1, **options)


def _near(pixels, distance):
    """Pixels within ``distance`` (chessboard) of any of ``pixels``."""
    return ndimage.binary_dilation(pixels, structure=np.ones((3, 3), bool),
                                   iterations=distance)


# ------------------------------------------------------------------ bad pixels
@pytest.fixture(scope="module")
def hot_night(tmp_path_factory):
    """The default call on a night with 0.5% hot pixels."""
    root = tmp_path_factory.mktemp("hot")
    night = simulate_night(root / "raw", shape=(96, 112), n_bias=5, n_dark=5, n_flat=5,
                           filters=("R",), n_science=2, hot_pixel_fraction=0.005, seed=3)
    return night, _reduce(root / "raw", root / "out"), root


def test_default_call_builds_the_bad_pixel_mask_from_the_masters(hot_night):
    night, result, root = hot_night
    assert len(result.problems) == 0, result.summary()
    name = "bpm_dark_60s_01_flat_R_01"
    path = result.masters[("bpm", name)]
    assert path == root / "out" / "masters" / f"{name}.fits"
    with fits.open(path) as hdul:
        values, header = hdul[0].data, hdul[0].header
    assert values.dtype == np.uint8
    assert (header["BPMDARK"], header["BPMFLAT"]) == ("dark_60s_01.fits", "flat_R_01.fits")
    hot = (values & 1) != 0
    truth = night.hot_pixels
    assert truth.sum() >= 20  # enough hot pixels for the numbers below to mean something
    # Every simulated hot pixel (10 to 100 times the dark current) is found, and no other.
    assert np.array_equal(hot, truth)
    assert header["NHOTPIX"] == truth.sum()
    assert f"{name}" in result.summary()


def test_default_call_masks_the_bad_pixels_in_the_science_frames(hot_night):
    night, result, _ = hot_night
    name = "bpm_dark_60s_01_flat_R_01"
    assert list(result.science["bpm"]) == [name, name]
    for row in result.science:
        with fits.open(row["output_file"]) as hdul:
            header, bits = hdul[0].header, hdul["MASK"].data
            mask_header = hdul["MASK"].header
        assert header["BPMFILE"] == f"{name}.fits"
        assert header["NBADPIX"] == night.hot_pixels.sum()
        assert ((bits & 2) != 0)[night.hot_pixels].all()
        assert row["n_masked"] == np.count_nonzero(bits)
        assert [mask_header[f"MASKB{bit}"] for bit in (1, 2, 4, 8, 16)] == [
            "saturated", "bad pixel", "cosmic ray", "not finite", "low flat"]
        # Cosmic rays are not searched by default.
        assert "NCRPIX" not in header and row["n_cosmic_rays"] == -1
        assert not (bits & 4).any()


def test_no_bad_pixel_mask_when_asked(hot_night, tmp_path):
    _, _, root = hot_night
    result = _reduce(root / "raw", tmp_path / "out", bad_pixels=None)
    assert not [kind for kind, _ in result.masters if kind == "bpm"]
    assert list(result.science["bpm"]) == ["", ""]
    for row in result.science:
        header = fits.getheader(row["output_file"])
        assert "BPMFILE" not in header and row["n_masked"] == 0


def test_a_mask_file_of_ones_own(hot_night, tmp_path):
    night, _, root = hot_night
    shape = night.bias.shape
    mine = np.zeros(shape, np.int16)
    mine[10, 20] = mine[30:33, 40] = 1
    fits.PrimaryHDU(mine).writeto(tmp_path / "my mask.fits")
    result = _reduce(root / "raw", tmp_path / "out", bad_pixels=tmp_path / "my mask.fits")
    assert len(result.problems) == 0, result.summary()
    assert set(result.science["bpm"]) == {"bpm_my_mask"}
    for row in result.science:
        with fits.open(row["output_file"]) as hdul:
            assert hdul[0].header["NBADPIX"] == 4
            bits = hdul["MASK"].data
        assert np.array_equal(np.argwhere(bits), [[10, 20], [30, 40], [31, 40], [32, 40]])
        assert set(bits[bits != 0]) == {2}


def test_a_mask_file_of_another_shape_is_a_problem_of_each_frame(hot_night, tmp_path):
    _, _, root = hot_night
    fits.PrimaryHDU(np.zeros((10, 10), np.uint8)).writeto(tmp_path / "small.fits")
    result = _reduce(root / "raw", tmp_path / "out", bad_pixels=tmp_path / "small.fits")
    assert len(result.science) == 0
    kinds = {row["file"]: row["kind"] for row in result.problems}
    assert kinds == {"object_R_001.fits": "CalibrationMatchError",
                     "object_R_002.fits": "CalibrationMatchError"}
    with pytest.raises(CalibrationMatchError, match="bad-pixel mask"):
        reduce_night(root / "raw", tmp_path / "strict", bad_pixels=tmp_path / "small.fits",
                     progress=False, workers=1, strict=True)


@pytest.mark.parametrize(("options", "error"), [
    ({"bad_pixels": "no such file.fits"}, FrameReadError),
    ({"bad_pixels": 3}, CcdprocExtError),
    ({"cosmic_rays": "yes"}, CcdprocExtError),
    ({"cosmic_rays": 1.0}, CcdprocExtError),
])
def test_bad_options_are_refused_before_anything_is_written(hot_night, tmp_path, options,
                                                            error):
    _, _, root = hot_night
    with pytest.raises(error):
        _reduce(root / "raw", tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ cosmic rays
@pytest.fixture(scope="module")
def hit_night(tmp_path_factory):
    """A night with 60 hits per science frame and 40 stars (Gaussian, sigma 1.2 to 2
    pixels), reduced with cosmic_rays=True and with cosmic_rays='clean'."""
    root = tmp_path_factory.mktemp("hits")
    night = simulate_night(root / "raw", shape=(256, 272), n_bias=5, n_dark=5, n_flat=5,
                           filters=("R",), n_science=3, n_stars=40, cosmic_rays=60, seed=11)
    found = _reduce(root / "raw", root / "found", cosmic_rays=True)
    cleaned = _reduce(root / "raw", root / "clean", cosmic_rays="clean")
    return night, found, cleaned


def _sigma(night, name):
    """The noise of each pixel of a science frame, ADU, from the truth."""
    return np.sqrt(np.clip(night.sky[name], 0, None) / night.gain + night.read_noise_adu ** 2)


def test_every_hit_is_a_five_sigma_hit(hit_night):
    night, _, _ = hit_night
    for name, hits in night.cosmic_rays.items():
        assert hits.sum() >= 40
        assert WEAKEST_HIT > 5 * _sigma(night, name)[hits].max()


def test_cosmic_ray_recall_and_false_positives(hit_night):
    night, found, _ = hit_night
    assert len(found.problems) == 0, found.summary()
    recalls, false_rates = [], []
    for row in found.science:
        truth = night.cosmic_rays[row["raw_file"]]
        with fits.open(row["output_file"]) as hdul:
            header, bits = hdul[0].header, hdul["MASK"].data
        flagged = (bits & 4) != 0
        assert header["NCRPIX"] == flagged.sum() == row["n_cosmic_rays"]
        assert header["CRGAIN"] == pytest.approx(night.gain)  # the GAIN card
        assert header["CRRDNOIS"] == pytest.approx(night.read_noise)
        assert 2.0 < header["CRFWHM"] < 5.0  # measured on stars of FWHM 2.8 to 4.7 px
        recalls.append((flagged & truth).sum() / truth.sum())
        # L.A.Cosmic grows each hit into its neighbours: those are not false positives.
        false = flagged & ~_near(truth, 2)
        false_rates.append(false.sum() / false.size)
        # No star core is taken for a hit: the peak pixels of every star 20 sigma above
        # the sky, away from hits.
        stars = night.sky[row["raw_file"]] - np.median(night.sky[row["raw_file"]])
        bright = stars > 20 * _sigma(night, row["raw_file"])
        cores = bright & (stars == ndimage.maximum_filter(stars, size=5))
        assert cores.sum() >= 10
        assert not (flagged & _near(cores, 1) & ~_near(truth, 3)).any()
    assert min(recalls) >= 0.9, recalls
    assert max(false_rates) < 0.001, false_rates


def test_clean_replaces_the_hits_by_the_sky(hit_night):
    night, found, cleaned = hit_night
    for plain, clean in zip(found.science, cleaned.science, strict=True):
        truth = night.cosmic_rays[plain["raw_file"]]
        sky = night.sky[plain["raw_file"]]
        sigma = _sigma(night, plain["raw_file"])
        with fits.open(plain["output_file"]) as hdul:
            left = hdul[0].data
        with fits.open(clean["output_file"]) as hdul:
            replaced, header = hdul[0].data, hdul[0].header
        assert header["CRCLEAN"] is True
        caught = truth & ((hdul_bits(clean["output_file"]) & 4) != 0)
        # Without cleaning the hits are left (>= 500 ADU above the sky), with it they are
        # within 5 sigma of the true sky, and the other pixels are untouched.
        assert ((left - sky)[caught] > WEAKEST_HIT - 5 * sigma[caught]).all()
        assert np.mean(np.abs(replaced - sky)[caught] < 5 * sigma[caught]) >= 0.9
        untouched = (hdul_bits(clean["output_file"]) & 4) == 0
        assert np.array_equal(replaced[untouched], left[untouched])


def hdul_bits(path):
    with fits.open(path) as hdul:
        return hdul["MASK"].data


def test_cosmic_rays_without_gain_and_read_noise(tmp_path):
    """A camera whose header gives neither: the gain is measured from the sky, said in a
    note, and the hits are still found."""
    night = simulate_night(tmp_path / "raw", shape=(200, 216), n_bias=3, n_dark=3, n_flat=3,
                           filters=("R",), n_science=1, n_stars=30, cosmic_rays=50,
                           drop_keywords=("GAIN", "RDNOISE"), seed=4)
    result = _reduce(tmp_path / "raw", tmp_path / "out", cosmic_rays=True)
    assert len(result.problems) == 0, result.summary()
    notes = [str(n["note"]) for n in result.notes if n["file"] == "object_R_001.fits"]
    assert any("gain unknown" in note and "measured from the sky" in note for note in notes)
    row = result.science[0]
    truth = night.cosmic_rays[row["raw_file"]]
    flagged = (hdul_bits(row["output_file"]) & 4) != 0
    assert (flagged & truth).sum() / truth.sum() >= 0.9
    assert (flagged & ~_near(truth, 2)).sum() / flagged.size < 0.001


# -------------------------------------------------------- bad calibration frames
def test_bad_calibration_frames_are_left_out_and_named(tmp_path):
    night = simulate_night(tmp_path / "raw", shape=(64, 80), n_bias=5, n_dark=5, n_flat=6,
                           filters=("R",), n_science=2,
                           bad_calibrations=("bias", "dark", "flat", "flat-level"), seed=8)
    assert len(night.bad_calibrations) == 4
    # A flat at half the illumination is a flat at another level, not a bad flat: kept.
    assert night.bad_calibrations["flat_R_003.fits"] == "half the illumination"
    spoiled = set(night.bad_calibrations) - {"flat_R_003.fits"}
    result = _reduce(tmp_path / "raw", tmp_path / "out")
    problems = {row["file"]: (row["kind"], str(row["problem"])) for row in result.problems}
    assert set(problems) == spoiled, result.summary()
    for kind, text in problems.values():
        assert kind == "DataQualityError"
        assert text.startswith("left out of master ")
    assert "of its pixels differ" in problems["flat_R_002.fits"][1]
    masters = {name: fits.getheader(path) for (_, name), path in result.masters.items()}
    assert masters["bias_01"]["NCOMBINE"] == 4 and masters["bias_01"]["SKIP001"] == \
        "bias_002.fits"
    assert masters["dark_60s_01"]["NCOMBINE"] == 4
    assert masters["flat_R_01"]["NCOMBINE"] == 5
    assert len(result.science) == 2 and set(result.science["status"]) == {"written"}
    # The frames left out are named in the summary too.
    summary = result.summary()
    assert all(file in summary for file in spoiled)
    # In strict mode, the first bad frame stops the night with its error.
    with pytest.raises(DataQualityError, match=r"bias_002\.fits"):
        reduce_night(tmp_path / "raw", tmp_path / "strict", progress=False, workers=1,
                     strict=True)


def test_twilight_flats_of_changing_level_are_all_kept():
    """Sky flats fade through twilight: 30000 down to 12000 ADU over five frames, each a
    good flat. None is left out, and the master is the same as without the checks."""
    rng = np.random.default_rng(2)
    y, x = np.mgrid[0:48, 0:64]
    pattern = 1.0 - 0.1 * ((x - 32) ** 2 + (y - 24) ** 2) / 1600
    frames = [CCDData(rng.poisson(pattern * level).astype(np.float32), unit="adu",
                      meta={"FILTER": "R", "EXPTIME": 1.0})
              for level in (30000, 24000, 19000, 15000, 12000)]
    checked = make_master_flat(frames)
    unchecked = make_master_flat(frames, check_frames=False)
    assert checked.meta["NCOMBINE"] == 5 and "SKIP001" not in checked.meta
    np.testing.assert_array_equal(checked.data, unchecked.data)


def test_a_flat_at_another_level_among_steady_ones_is_kept():
    """Five dome flats at 20000 ADU (+-1%) and one at 10000: a flat at half the
    illumination is a flat at another level, which inverse-median scaling takes away; it
    is kept (it was left out before the checks judged structure rather than level)."""
    rng = np.random.default_rng(5)
    levels = (20000, 20150, 19900, 20080, 19850, 10000)
    frames = [CCDData(rng.poisson(np.full((32, 40), level)).astype(np.float32), unit="adu",
                      meta={"FILTER": "R", "EXPTIME": 1.0, "FILENAME": f"flat{i}.fits"})
              for i, level in enumerate(levels)]
    master = make_master_flat(frames)
    assert master.meta["NCOMBINE"] == 6 and "SKIP001" not in master.meta
    np.testing.assert_array_equal(master.data, make_master_flat(frames,
                                                                check_frames=False).data)


# ------------------------------------------------- levels from finite pixels
def _frame_with_its_own_datamax(rng, level, kind, i):
    """A frame whose ``DATAMAX`` is its own largest value, as one camera writes it: the
    pixel at the top of every frame (60000 ADU) is masked as saturated in each."""
    data = rng.normal(level, 10, (40, 50)).astype(np.float32)
    data[5, 7] = 60000
    return CCDData(data, unit="adu", meta=fits.Header({
        "IMAGETYP": kind, "FILTER": "R", "EXPTIME": 1.0 if kind == "flat" else 0.0,
        "DATAMAX": float(data.max()), "FILENAME": f"{kind}{i}.fits"}))


# combine hands the flats' NaN pixel to astropy's sigma_clip, which says so: not the
# subject of this test.
@pytest.mark.filterwarnings("ignore:Input data contains invalid values")
def test_a_master_flat_level_is_of_finite_pixels():
    """The pixel masked in every bias is NaN in the master bias, so in every flat less
    that bias; the flats' scales and the master flat's level are of the finite pixels:
    a master flat of level 1 (19000 ADU flats, scaled by their inverse medians), not a
    refused one whose mean is NaN."""
    rng = np.random.default_rng(1)
    bias = make_master_bias([_frame_with_its_own_datamax(rng, 1000, "bias", i)
                             for i in range(5)])
    assert np.isnan(bias.data[5, 7]) and bias.mask[5, 7]
    flat = make_master_flat([_frame_with_its_own_datamax(rng, 20000, "flat", i)
                             for i in range(5)], master_bias=bias)
    assert flat.meta["FLATNORM"] == pytest.approx(1.0, abs=1e-3)
    assert flat.mask[5, 7] and np.count_nonzero(flat.mask) == 1
    good = flat.data[~flat.mask]
    assert np.all(np.abs(good - 1.0) < 0.005)  # 10 ADU of 19000, 5 frames: 5e-4 each
    assert float(np.mean(good, dtype=np.float64)) == pytest.approx(1.0, abs=1e-6)


def test_a_flat_with_nan_pixels_is_normalised_by_its_finite_ones():
    """A user's flat of 2.0 everywhere but three NaN pixels, no mask: calibrating
    divides by 2, not by NaN."""
    from ccdproc_ext.master_frame import MasterFrame

    data = np.full((20, 30), 2.0, np.float32)
    data[3, 4] = data[10, 0] = data[19, 29] = np.nan
    prepared = MasterFrame.of(CCDData(data, unit="adu")).prepare(flat=True)
    finite = np.isfinite(data)
    np.testing.assert_array_equal(prepared.data[finite], 1.0)


# ----------------------------------------------- what the frame checks are made of
@pytest.mark.parametrize(("shape", "step"), [
    ((1100, 1000), 5),  # 1.1 Mpix over 2**18: every 5th row, 220 rows of 1000
    ((4128, 64), 2),  # narrow and tall: 264192 pixels, just over 2**18
    ((300, 200), 1),  # smaller than a sample: every row
    ((260, 2100), 3),  # wide: 546000 pixels, every 3rd row; row medians of every 8th column
])
# Rows masked at every column sampled have a NaN median, which numpy's nanmedian warns of.
@pytest.mark.filterwarnings("ignore:All-NaN slice encountered:RuntimeWarning")
def test_a_frame_sample_is_about_a_quarter_megapixel_of_whole_rows(shape, step):
    from ccdproc_ext.quality import frame_sample

    rng = np.random.default_rng(4)
    data = rng.normal(100, 5, shape).astype(np.float32)
    mask = np.zeros(shape, bool)
    mask[::7, ::3] = True
    data[1, 1] = np.inf
    sample = frame_sample(CCDData(data, unit="adu", mask=mask))
    expected = data[::step].copy()
    expected[mask[::step] | ~np.isfinite(expected)] = np.nan
    np.testing.assert_array_equal(sample.rows, expected)
    assert sample.level == pytest.approx(np.median(expected[np.isfinite(expected)]))
    assert sample.rows.size <= max(2**18, data.size)
    # The median of every row over every (width // 256)-th column.
    columns = data[:, ::max(1, shape[1] // 256)].copy()
    columns[mask[:, ::max(1, shape[1] // 256)] | ~np.isfinite(columns)] = np.nan
    np.testing.assert_allclose(sample.row_medians, np.nanmedian(columns, axis=1),
                               rtol=1e-6)


def _median_cases():
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    values = st.one_of(st.floats(-1e6, 1e6, width=32), st.just(np.nan),
                       st.just(np.inf), st.just(-np.inf))
    shapes = hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=7)
    return hnp.arrays(st.sampled_from([np.float32, np.float64]), shapes, elements=values)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # inf - inf in numpy's own median
def test_the_median_of_a_group_is_numpys():
    from hypothesis import given, settings

    from ccdproc_ext.quality import _median_of_frames

    @settings(max_examples=300, deadline=None)
    @given(_median_cases())
    def check(stack):
        expected = np.median(stack, axis=0)
        found = _median_of_frames(stack)
        assert found.dtype == expected.dtype
        np.testing.assert_array_equal(found, expected)

    check()


def test_mask_bits_one_bit_per_reason_written_by_hand():
    from ccdproc_ext.quality import mask_bits

    f, t = False, True
    bits = mask_bits((2, 3),
                     saturated=[[t, f, f], [f, f, f]],
                     not_finite=[[f, t, f], [f, f, f]],
                     bad_pixel=[[t, f, t], [f, f, f]],
                     cosmic_ray=[[f, f, t], [f, f, f]],
                     low_flat=[[f, f, f], [t, f, f]],
                     masked=[[f, f, f], [t, t, f]])
    # saturated 1, bad pixel 2, cosmic ray 4, not finite 8, low flat 16; a masked pixel
    # no reason was given for is a bad pixel.
    assert bits.dtype == np.uint8
    np.testing.assert_array_equal(bits, [[1 | 2, 8, 2 | 4], [16, 2, 0]])


def test_raw_mask_bits_written_by_hand():
    from ccdproc_ext import get_profile
    from ccdproc_ext.calibrate import raw_mask_bits

    data = np.array([[100.0, np.nan, 65535.0], [np.inf, 70000.0, -np.inf]], np.float32)
    ccd = CCDData(data, unit="adu", meta={"SATURATE": 65000})
    # inf is not finite (8), not saturated; 65535 and 70000 are saturated (1).
    generic = get_profile("generic")
    np.testing.assert_array_equal(raw_mask_bits(ccd, generic), [[0, 8, 1], [8, 1, 8]])
    integers = CCDData(np.array([[10, 65000]], np.uint16), unit="adu",
                       meta={"SATURATE": 65000})
    np.testing.assert_array_equal(raw_mask_bits(integers, generic), [[0, 1]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [1, 2, 5, 64, 1001])
def test_median_and_mad_std_are_numpys_and_astropys(dtype, size):
    from astropy.stats import mad_std

    from ccdproc_ext.quality import median_and_mad_std

    rng = np.random.default_rng(size)
    values = rng.standard_t(3, size).astype(dtype) * 40 + 1000
    values[: size // 3] = np.round(values[: size // 3])  # ties
    median, noise = median_and_mad_std(values.copy())
    assert median == np.median(values) and noise == mad_std(values)
