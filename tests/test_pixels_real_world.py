"""Pixels of frames as real cameras write them, read and calibrated with the generic profile.

Most cameras write no SATURATE, no GAIN, a BUNIT in their own spelling, sections in a
notation that is not FITS, images as cubes of one plane. Every frame here has only the
cards a FITS writer must write (SIMPLE, BITPIX, NAXIS, NAXISn) and EXPTIME, plus the one
card a test is about. References are numpy, astropy and ccdproc's own functions.
"""

import re
import warnings

import astropy.units as u
import ccdproc
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.wcs import WCS

import ccdproc_ext
from ccdproc_ext import (
    CcdprocExtWarning,
    FrameReadError,
    HeaderError,
    MasterFrame,
    calibrate_frame,
    get_profile,
    make_master_flat,
)
from ccdproc_ext.headers import header_unit
from ccdproc_ext.outputs import write_atomic
from ccdproc_ext.profiles import InstrumentProfile
from ccdproc_ext.raw import inspect_frame, read_frame

SHAPE = (20, 30)  # rows, columns


def _write(path, data, **cards):
    """A frame with only the mandatory cards, EXPTIME and ``cards``."""
    hdu = fits.PrimaryHDU(data)
    hdu.header["EXPTIME"] = 10.0
    for key, value in cards.items():
        hdu.header[key.replace("_", "-")] = value
    hdu.writeto(path)
    return path


def _pixels(seed=0, shape=SHAPE, level=1000.0):
    return np.random.default_rng(seed).normal(level, 10.0, shape).astype(np.float32)


def _profile(**top):
    data = {"schema_version": 1, "name": "hand-made", "description": "a test detector",
            "image_types": {"science": ["object"]}}
    data.update(top)
    return InstrumentProfile.from_dict(data)


# ------------------------------------------------------------------------- saturation
def test_generic_profile_without_saturate_calibrates_without_masking(tmp_path):
    data = _pixels()
    data[3, 4] = 65535.0  # would be saturated if anything said so
    path = _write(tmp_path / "frame.fits", data)
    result = calibrate_frame(path, "generic")
    np.testing.assert_array_equal(result.data, data)
    assert "NSATUR" not in result.header
    assert result.mask is None or not result.mask.any()


def test_saturate_card_masks_what_numpy_counts(tmp_path):
    data = _pixels()
    data[3, 4] = data[5, 6] = 2000.0
    path = _write(tmp_path / "frame.fits", data, SATURATE=1500)
    result = calibrate_frame(path, "generic")
    assert result.header["NSATUR"] == np.count_nonzero(data >= 1500) == 2
    np.testing.assert_array_equal(result.mask, data >= 1500)


def test_saturate_that_is_not_a_number_masks_nothing_and_says_so(tmp_path):
    path = _write(tmp_path / "frame.fits", _pixels(), SATURATE="lots")
    with pytest.warns(CcdprocExtWarning, match="frame.fits.*SATURATE.*not masked"):
        result = calibrate_frame(path, "generic")
    assert "NSATUR" not in result.header


# ------------------------------------------------------------------------------ BUNIT
@pytest.mark.parametrize(("spelling", "unit"), [
    ("ADU", u.adu), ("adu", u.adu), ("count", u.adu), ("counts", u.adu),
    ("Counts", u.adu), ("COUNTS", u.adu), ("DN", u.adu), ("electron", u.electron),
    ("electrons", u.electron), ("e-", u.electron), ("ELECTRONS", u.electron),
    ("photon", u.photon), ("adu / s", u.adu / u.s), ("ELECTRONS/S", u.electron / u.s),
])
def test_bunit_spellings(tmp_path, spelling, unit):
    path = _write(tmp_path / "frame.fits", _pixels(), BUNIT=spelling)
    assert read_frame(path, get_profile("generic")).unit == unit
    assert header_unit(fits.getheader(path), "adu", path=path) == unit


@pytest.mark.parametrize("value", ["furlongs per fortnight", "?", 12])
def test_unknown_bunit_is_the_profile_unit_with_a_warning(tmp_path, value):
    path = _write(tmp_path / "odd.fits", _pixels(), BUNIT=value)
    with pytest.warns(CcdprocExtWarning,
                      match=rf"odd.fits: BUNIT = {re.escape(repr(value))} .*read as adu"):
        frame = read_frame(path, get_profile("generic"))
    assert frame.unit == u.adu


def test_blank_bunit_is_the_profile_unit_quietly(tmp_path):
    path = _write(tmp_path / "frame.fits", _pixels(), BUNIT="  ")
    assert read_frame(path, get_profile("generic")).unit == u.adu


def test_frame_in_counts_takes_a_master_in_adu(tmp_path):
    """Counts, DN and ADU are the same raw numbers: a bias in adu is subtracted."""
    raw = _pixels(1)
    bias = _pixels(2, level=300.0)
    path = _write(tmp_path / "frame.fits", raw, BUNIT="counts")
    bias_path = _write(tmp_path / "bias.fits", bias, BUNIT="adu")
    for master in (bias_path, CCDData(bias, unit="adu")):
        result = calibrate_frame(path, "generic", master_bias=master)
        np.testing.assert_array_equal(result.data, raw - bias)
        assert result.unit == u.adu
        assert result.header["BUNIT"] == "adu"


def test_master_in_another_unit_is_a_header_error(tmp_path):
    path = _write(tmp_path / "frame.fits", _pixels(), BUNIT="electron")
    with pytest.raises(HeaderError, match=r"frame\.fits: the frame is in electron"):
        calibrate_frame(path, "generic", master_bias=CCDData(_pixels(2), unit="adu"))


def test_master_with_bunit_spelling_loads(tmp_path):
    path = _write(tmp_path / "bias.fits", _pixels(), BUNIT="Counts")
    assert MasterFrame.load(path, get_profile("generic")).ccd.unit == u.adu


def test_combine_reads_bunit_spellings(tmp_path):
    paths = [_write(tmp_path / f"f{i}.fits", _pixels(i), BUNIT="ADU") for i in range(3)]
    combined = ccdproc_ext.combine(paths, method="average")
    assert combined.unit == u.adu
    np.testing.assert_allclose(combined.data, np.mean([_pixels(i) for i in range(3)], axis=0),
                               rtol=1e-6)


# -------------------------------------------------------------------- one-plane cubes
@pytest.mark.parametrize("stored", ["uint16", "scaled"])
def test_cube_of_one_plane_is_squeezed(tmp_path, stored):
    plane = np.random.default_rng(3).integers(0, 60000, SHAPE).astype(np.uint16)
    path = tmp_path / "andor.fits"
    hdu = fits.PrimaryHDU(plane[np.newaxis])
    hdu.header["EXPTIME"] = 10.0
    if stored == "scaled":  # BSCALE: read by astropy, not by the plain decoder
        hdu = fits.PrimaryHDU(plane[np.newaxis].astype(np.float64))
        hdu.header["EXPTIME"] = 10.0
        hdu.scale("int32", bscale=0.5, bzero=0)
    hdu.writeto(path)
    assert fits.getheader(path)["NAXIS"] == 3
    _header, problem, notes = inspect_frame(path)
    assert problem is None
    assert "3-D image with one plane: squeezed to 2-D" in notes
    frame = read_frame(path, get_profile("generic"))
    assert frame.shape == SHAPE
    np.testing.assert_array_equal(frame.data, plane.astype(np.float32))
    assert frame.header["NAXIS"] == 2 and "NAXIS3" not in frame.header
    result = calibrate_frame(path, "generic")
    np.testing.assert_array_equal(result.data, plane.astype(np.float32))


def test_cube_of_several_planes_is_refused(tmp_path):
    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.zeros((2, *SHAPE), np.int16)).writeto(path)
    _header, problem, _notes = inspect_frame(path)
    assert "3-dimensional" in problem
    with pytest.raises(FrameReadError, match=r"cube\.fits: HDU 0 is 3-dimensional"):
        read_frame(path)


# ---------------------------------------------------------------- section keywords
def _deviation_cards():
    return {"GAIN": 2.0, "RDNOISE": 5.0}


@pytest.mark.parametrize("deviation", [False, True], ids=["fast", "ccdproc"])
@pytest.mark.parametrize(("key", "value", "words"), [
    ("BIASSEC", "[0,513:0,1536]", "is not a FITS section: overscan not subtracted"),
    ("DATASEC", "[513,513:1536,1536]", "is not a FITS section: not trimmed"),
    ("TRIMSEC", "[1:40,1:20]", "does not fit the frame .*: not trimmed"),
    ("BIASSEC", "[25:30,1:99]", "does not fit the frame .*: overscan not subtracted"),
])
def test_unusable_section_keyword_skips_the_step(tmp_path, key, value, words, deviation):
    data = _pixels()
    path = _write(tmp_path / "frame.fits", data, **{key: value}, **_deviation_cards())
    with pytest.warns(CcdprocExtWarning,
                      match=rf"frame.fits: {key} = {re.escape(repr(value))} {words}"):
        result = calibrate_frame(path, "generic", create_deviation=deviation)
    np.testing.assert_array_equal(result.data, data)
    assert "OVERSCAN" not in result.header and "TRIM" not in result.header


@pytest.mark.parametrize("deviation", [False, True], ids=["fast", "ccdproc"])
def test_bad_biassec_still_trims(tmp_path, deviation):
    data = _pixels()
    path = _write(tmp_path / "frame.fits", data, BIASSEC="[0,513:0,1536]",
                  TRIMSEC="[3:28,2:19]", **_deviation_cards())
    with pytest.warns(CcdprocExtWarning, match="overscan not subtracted"):
        result = calibrate_frame(path, "generic", create_deviation=deviation)
    np.testing.assert_array_equal(result.data, data[1:19, 2:28])
    assert result.header["TRIM"] == "[3:28,2:19]"


def test_missing_required_section_keyword_is_a_header_error(tmp_path):
    profile = _profile(detector={"overscan": {"keyword": "BIASSEC", "required": True}})
    path = _write(tmp_path / "frame.fits", _pixels())
    with pytest.raises(HeaderError, match=r"frame\.fits: the overscan section .* BIASSEC"):
        calibrate_frame(path, profile)


def test_amplifier_section_keyword_that_is_not_fits_skips_the_overscan(tmp_path):
    profile = _profile(detector={"amplifiers": [
        {"name": "left", "data": {"keyword": "DSEC1"}, "overscan": {"keyword": "BSEC1"}},
        {"name": "right", "data": {"keyword": "DSEC2"}, "overscan": "[29:30,*]"}]})
    data = _pixels()
    path = _write(tmp_path / "frame.fits", data, DSEC1="[3:14,*]", BSEC1="[0,1:0,2]",
                  DSEC2="[15:28,1:20]")
    with pytest.warns(CcdprocExtWarning, match="frame.fits: BSEC1 = '.*overscan not sub"):
        result = calibrate_frame(path, profile)
    np.testing.assert_array_equal(result.data, data[:, 2:28])
    assert "OVERSCAN" not in result.header


# ------------------------------------------------------------------ flat normalisation
def test_science_frame_equals_ccdproc_with_the_master_flat_on_disk(tmp_path):
    """A flat with a large dead area: the frame calibrated with it is what
    ccdproc.flat_correct gives with the file read back and its FLATMEAN."""
    rng = np.random.default_rng(7)
    shape = (40, 50)
    illumination = np.linspace(0.8, 1.2, shape[1])[np.newaxis, :] * np.ones(shape)
    illumination[:, :18] = 0.001  # a third of the detector unlit: masked in the flat
    flats = [_write(tmp_path / f"flat_{i}.fits",
                    (20000 * illumination + rng.normal(0, 20, shape)).astype(np.float32),
                    IMAGETYP="flat") for i in range(3)]
    master_path = tmp_path / "master_flat.fits"
    with pytest.warns(ccdproc_ext.DataQualityWarning, match="are below 0.1"):
        make_master_flat(flats, "generic", output_file=master_path, workers=1)
    on_disk = CCDData.read(master_path)
    assert on_disk.mask[:, :18].all() and not on_disk.mask[:, 18:].any()
    np.testing.assert_array_equal(on_disk.data[:, :18], 1.0)
    assert np.mean(on_disk.data[:, 18:], dtype=np.float64) == pytest.approx(1, abs=1e-6)
    # FLATMEAN: the mean of the good pixels as written, 1 to float32's precision: 1
    assert on_disk.header["FLATMEAN"] == 1.0
    assert abs(np.mean(on_disk.data[~on_disk.mask], dtype=np.float64) - 1) <= \
        np.finfo(np.float32).eps

    raw = (5000 * illumination + rng.normal(0, 30, shape)).astype(np.float32)
    raw_path = _write(tmp_path / "object.fits", raw, IMAGETYP="object")
    reference = ccdproc.flat_correct(CCDData.read(raw_path, unit="adu"), on_disk,
                                     norm_value=on_disk.header["FLATMEAN"])
    from_path = calibrate_frame(raw_path, "generic", master_flat=master_path)
    fast = calibrate_frame(raw_path, "generic",
                           master_flat=MasterFrame.load(master_path).without_uncertainty())
    for ours in (from_path, fast):
        # ccdproc's float64 quotient, rounded to the float32 of the output: to the bit
        np.testing.assert_array_equal(ours.data, reference.data.astype(np.float32))
        np.testing.assert_array_equal(ours.mask, reference.mask)
    # the lit part of the frame is the illumination-free level, 5000 / mean flat level
    lit = fast.data[:, 18:] / (raw[:, 18:] / illumination[:, 18:])
    assert np.median(lit) == pytest.approx(np.mean(illumination[:, 18:]), rel=0.01)


# ----------------------------------------------------------------------------- WCS
def _wcs_cards(**extra):
    cards = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.0, "CRVAL2": 2.0,
             "CRPIX1": 100.0, "CRPIX2": 80.0, "CD1_1": -2e-4, "CD1_2": 3e-5,
             "CD2_1": 4e-5, "CD2_2": 2.2e-4}
    cards.update(extra)
    return cards


def _world(header, x, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sky = WCS(header).pixel_to_world(x, y)
    return sky.ra.deg, sky.dec.deg


@pytest.mark.parametrize("deviation", [False, True], ids=["fast", "ccdproc"])
def test_trim_shifts_the_reference_pixel(tmp_path, deviation):
    data = _pixels(shape=(60, 100))
    path = _write(tmp_path / "frame.fits", data, TRIMSEC="[51:90,11:60]", LTV1=0.0,
                  **_wcs_cards(), **_deviation_cards())
    result = calibrate_frame(path, "generic", create_deviation=deviation)
    assert result.shape == (50, 40)
    assert result.header["CRPIX1"] == 50.0 and result.header["CRPIX2"] == 70.0
    assert result.header["LTV1"] == -50.0
    before = fits.getheader(path)
    for x, y in ((0, 0), (12, 33)):  # 0-based pixels of the trimmed frame
        np.testing.assert_allclose(_world(result.header, x, y),
                                   _world(before, x + 50, y + 10), rtol=0, atol=1e-10)


@pytest.mark.parametrize("cards", [
    _wcs_cards(),
    {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.0, "CRVAL2": 2.0,
     "CRPIX1": 100.0, "CRPIX2": 80.0, "CDELT1": -2e-4, "CDELT2": 3e-4,
     "PC1_1": 0.9, "PC1_2": 0.1, "PC2_1": -0.2, "PC2_2": 1.1},
    {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.0, "CRVAL2": 2.0,
     "CRPIX1": 100.0, "CRPIX2": 80.0, "CDELT1": -2e-4, "CDELT2": 3e-4, "CROTA2": 25.0},
], ids=["CD", "PC-CDELT", "CROTA2"])
def test_transposed_camera_transposes_its_wcs(tmp_path, cards):
    profile = _profile(transposed=True)
    data = _pixels(shape=(60, 100))
    path = _write(tmp_path / "frame.fits", data, **cards)
    frame = read_frame(path, profile)
    np.testing.assert_array_equal(frame.data, data.T)
    assert frame.header["CRPIX1"] == 80.0 and frame.header["CRPIX2"] == 100.0
    before = fits.getheader(path)
    for x, y in ((0, 0), (30, 7), (99.5, 59.5)):  # pixel (x, y) of the file is (y, x) now
        np.testing.assert_allclose(_world(frame.header, y, x), _world(before, x, y),
                                   rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------- gain
def test_gain_correct_writes_electrons_and_gain_one(tmp_path):
    data = _pixels()
    path = _write(tmp_path / "frame.fits", data, BUNIT="ADU", GAIN=2.5, EGAIN=2.5)
    result = calibrate_frame(path, "generic", gain_correct=True)
    np.testing.assert_allclose(result.data, data * 2.5, rtol=1e-7)
    assert result.unit == u.electron
    assert result.header["GAIN"] == 1.0 and result.header["EGAIN"] == 1.0
    assert result.header["GAINCOR"] == 2.5
    out = write_atomic(result, tmp_path / "out.fits")
    assert fits.getval(out, "BUNIT") == "electron"


@pytest.mark.parametrize(("cards", "match"), [
    ({}, r"frame.fits: gain_correct needs the gain \(header GAIN or EGAIN"),
    ({"GAIN": "high"}, r"frame.fits.*GAIN = 'high' is not a number"),
    ({"GAIN": 0.0}, r"frame.fits: gain_correct needs the gain .* 0 is not a gain"),
])
def test_gain_correct_without_a_gain_is_a_header_error(tmp_path, cards, match):
    path = _write(tmp_path / "frame.fits", _pixels(), **cards)
    with pytest.raises(HeaderError, match=match):
        calibrate_frame(path, "generic", gain_correct=True)


def test_create_deviation_without_read_noise_names_the_keywords(tmp_path):
    path = _write(tmp_path / "frame.fits", _pixels(), GAIN=2.0)
    with pytest.raises(HeaderError, match=r"frame.fits: create_deviation needs the read noise"
                                          r" \(header RDNOISE or READNOIS or ENOISE"):
        calibrate_frame(path, "generic", create_deviation=True)


# ----------------------------------------------------------------- a night, by default
def test_tiny_night_with_the_generic_profile(tmp_path):
    """Biases, flats and two science frames with no SATURATE, BUNIT 'counts', a BIASSEC
    in a notation that is not FITS: reduced, and equal to ccdproc with the masters on
    disk."""
    rng = np.random.default_rng(11)
    raw = tmp_path / "raw"
    raw.mkdir()
    illumination = np.linspace(0.9, 1.1, SHAPE[1])[np.newaxis, :] * np.ones(SHAPE)
    common = {"BUNIT": "counts", "BIASSEC": "[0,1:0,20]", "DATE_OBS": "2024-03-05T01:00:00"}
    for i in range(3):
        _write(raw / f"bias_{i}.fits", rng.normal(300, 5, SHAPE).astype(np.float32),
               IMAGETYP="bias", **common)
        _write(raw / f"flat_{i}.fits",
               (300 + 20000 * illumination + rng.normal(0, 20, SHAPE)).astype(np.float32),
               IMAGETYP="flat", **common)
    for i in range(2):
        _write(raw / f"object_{i}.fits",
               (300 + 4000 * illumination + rng.normal(0, 20, SHAPE)).astype(np.float32),
               IMAGETYP="object", **common)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CcdprocExtWarning)
        result = ccdproc_ext.reduce_night(raw, tmp_path / "out", progress=False)
    assert len(result.science) == 2
    for row in result.science:
        bias = CCDData.read(tmp_path / "out" / "masters" / f"{row['bias']}.fits")
        flat = CCDData.read(tmp_path / "out" / "masters" / f"{row['flat']}.fits")
        frame = CCDData.read(raw / row["raw_file"], unit="adu")
        reference = ccdproc.flat_correct(ccdproc.subtract_bias(frame, bias), flat,
                                         norm_value=flat.header["FLATMEAN"])
        ours = fits.getdata(row["output_file"])
        np.testing.assert_allclose(ours, reference.data, rtol=1e-6, atol=1e-3)
        assert "NSATUR" not in fits.getheader(row["output_file"])


@pytest.mark.parametrize("deviation", [False, True], ids=["fast", "ccdproc"])
@pytest.mark.parametrize("kind", ["bias", "dark", "flat"])
def test_master_of_another_shape_is_a_calibration_match_error(tmp_path, kind, deviation):
    path = _write(tmp_path / "frame.fits", _pixels(), **_deviation_cards())
    master = CCDData(np.ones((SHAPE[0], SHAPE[1] - 1), np.float32), unit="adu",
                     meta={"EXPTIME": 10.0})
    with pytest.raises(ccdproc_ext.CalibrationMatchError,
                       match=r"frame.fits: the frame is 20 x 30 pixels .* 20 x 29"):
        calibrate_frame(path, "generic", create_deviation=deviation,
                        **{f"master_{kind}": master})


def test_real_tircam2_frame_equals_ccdproc_with_the_masters_on_disk(real_data, tmp_path):
    """Real frames with no SATURATE, no GAIN, string EXPTIME: masters built with the
    generic profile, a science frame calibrated, compared with ccdproc on the files."""
    folder = real_data / "dot-tircam2"
    bias_path, flat_path = tmp_path / "bias.fits", tmp_path / "flat.fits"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ccdproc_ext.DataQualityWarning)
        ccdproc_ext.make_master_bias(sorted(folder.glob("bias_*.fits")), "generic",
                                     output_file=bias_path, workers=1)
        make_master_flat(sorted(folder.glob("flats*.fits")), "generic",
                         master_bias=bias_path, output_file=flat_path, workers=1)
    raw_path = folder / "IC310_1.fits"
    ours = calibrate_frame(raw_path, "generic", master_bias=bias_path, master_flat=flat_path)
    assert "NSATUR" not in ours.header
    bias, flat = CCDData.read(bias_path), CCDData.read(flat_path)
    raw = CCDData(fits.getdata(raw_path).astype(np.float32), unit="adu")
    reference = ccdproc.flat_correct(ccdproc.subtract_bias(raw, bias), flat,
                                     norm_value=flat.header["FLATMEAN"])
    np.testing.assert_allclose(ours.data, reference.data, rtol=1e-6, atol=1e-3)
