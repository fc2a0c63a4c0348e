"""The simulator against expectations written by hand: where it puts overscan and data,
what it writes in the header, and what truth it returns."""

import numpy as np
import pytest
from astropy.io import fits

from ccdproc_ext import calibrate_frame, get_profile
from ccdproc_ext.simulate import simulate_night

TWO_AMPLIFIERS = """
schema_version = 1
name = "two-amps"
description = "A test detector read through two amplifiers, left and right"

[image_types]
bias = ["zero"]
dark = ["dark"]
flat = ["flat"]
science = ["object"]

[detector]
overscan_axis = 1
overscan_method = "median"
gain = { value = 2.0, unit = "electron / adu" }
read_noise = { value = 5.0, unit = "electron" }

[[detector.amplifiers]]
name = "left"
data = "[5:24,*]"
overscan = "[1:4,*]"

[[detector.amplifiers]]
name = "right"
data = "[25:44,*]"
overscan = "[45:48,*]"

[matching]
scale_darks = true
"""


def test_generic_sections_are_the_simulators_numbers(tmp_path):
    # 40 rows x 48 columns: the strip is min(16, 48 // 4, 40 // 4) = 10 columns wide.
    night = simulate_night(tmp_path, shape=(40, 48), n_bias=1, dark_exposures=(),
                           n_flat=0, filters=(), science_filters=(), n_science=0)
    header = fits.getheader(night.paths("bias")[0])
    assert header["BIASSEC"] == "[39:48,1:40]"
    assert header["TRIMSEC"] == "[1:38,1:40]"
    assert night.trim_slices == (slice(0, 40), slice(0, 38))
    assert night.bias.shape == (40, 38)


def test_fixed_overscan_with_a_header_trim(tmp_path):
    """IFUM fixes neither: both from the header. LFC fixes both. A fixed overscan on the
    right with a trim from the header must leave the overscan out of the trim."""
    profile = tmp_path / "fixed-overscan.toml"
    profile.write_text("""
schema_version = 1
name = "fixed-overscan"
description = "overscan fixed on the right, trim from TRIMSEC"
[image_types]
bias = ["zero"]
science = ["object"]
[detector]
overscan = "[41:48,*]"
trim = { keyword = "TRIMSEC" }
""")
    night = simulate_night(tmp_path / "raw", get_profile(profile), shape=(20, 48), n_bias=1,
                           dark_exposures=(), n_flat=0, filters=(), science_filters=(),
                           n_science=0)
    header = fits.getheader(night.paths("bias")[0])
    assert header["TRIMSEC"] == "[1:40,1:20]"
    assert "BIASSEC" not in header


def test_palomar_lfc_fixed_sections(tmp_path):
    night = simulate_night(tmp_path, "palomar-lfc", shape=(12, 2080), n_bias=2,
                           dark_exposures=(), n_flat=0, filters=(), science_filters=(),
                           n_science=0, overscan_drift=0.0)
    data = fits.getdata(night.paths("bias")[0]).astype(float)
    # Overscan [2056:2080,*]: columns 2055 to 2079 see the offset and read noise only.
    overscan = data[:, 2055:]
    assert abs(np.median(overscan) - 1000) < 5
    assert night.bias.shape == (12, 2048)


def test_two_amplifiers_each_with_its_own_offset(tmp_path):
    path = tmp_path / "two-amps.toml"
    path.write_text(TWO_AMPLIFIERS)
    night = simulate_night(tmp_path / "raw", get_profile(path), shape=(30, 48), n_bias=1,
                           dark_exposures=(), n_flat=0, filters=(), science_filters=(),
                           n_science=0, overscan_drift=0.0, bias_level=1000.0)
    data = fits.getdata(night.paths("bias")[0]).astype(float)
    left, right = np.median(data[:, 0:4]), np.median(data[:, 44:48])
    # The second amplifier's offset is 75 ADU above the first's (both within noise).
    assert abs(left - 1000) < 6 and abs(right - 1075) < 6
    assert night.trim_slices == (slice(0, 30), slice(4, 44))
    assert night.bias.shape == (30, 40)


def test_two_amplifier_night_calibrates_to_the_truth(tmp_path):
    path = tmp_path / "two-amps.toml"
    path.write_text(TWO_AMPLIFIERS)
    profile = get_profile(path)
    night = simulate_night(tmp_path / "raw", profile, shape=(30, 48), n_bias=8,
                           dark_exposures=(60.0,), n_dark=5, filters=("V",), n_flat=6,
                           science_filters=("V",), n_science=1, cosmic_rays=0, n_stars=0,
                           overscan_drift=0.0)
    from ccdproc_ext import reduce_night

    result = reduce_night(tmp_path / "raw", tmp_path / "out", profile, progress=False,
                          workers=1)
    assert len(result.science) == 1, result.summary()
    out = fits.getdata(tmp_path / "out" / "science" / "object_V_001.fits")
    truth = night.sky["object_V_001.fits"]
    assert out.shape == truth.shape == (30, 40)
    # Both halves at the sky level: a wrong amplifier offset would put one 75 ADU off.
    for half in (slice(0, 20), slice(20, 40)):
        assert abs(np.median(out[:, half] - truth[:, half])) < 3


def test_required_keywords_only(tmp_path):
    night = simulate_night(tmp_path, shape=(20, 24), keywords="required", n_bias=1,
                           dark_exposures=(30.0,), n_dark=1, filters=("V",), n_flat=1,
                           n_science=1)
    bias, dark, _flat, science = (fits.getheader(p) for p in night.paths())
    assert set(bias) - {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "BZERO",
                        "BSCALE"} == {"IMAGETYP"}
    assert dark["EXPTIME"] == 30.0 and "FILTER" not in dark  # one filter: not needed
    assert "DATE-OBS" not in science and "BIASSEC" not in science
    assert night.trim_slices == (slice(0, 20), slice(0, 24))


def test_dropped_keywords(tmp_path):
    night = simulate_night(tmp_path, shape=(20, 24), n_bias=1, dark_exposures=(),
                           n_flat=0, filters=(), science_filters=(), n_science=0,
                           drop_keywords=("date-obs", "CCDSUM"))
    header = fits.getheader(night.paths()[0])
    assert "DATE-OBS" not in header and "CCDSUM" not in header and "IMAGETYP" in header


def test_unknown_keywords_option():
    with pytest.raises(ValueError, match="keywords"):
        simulate_night("unused", keywords="some")


def test_simulated_frame_through_calibrate_frame_keeps_its_shape(tmp_path):
    """A raw simulated LFC frame is trimmed to the truth's shape by the profile."""
    night = simulate_night(tmp_path, "palomar-lfc", shape=(8, 2080), n_bias=1,
                           dark_exposures=(), n_flat=0, filters=(), science_filters=(),
                           n_science=0)
    from astropy.nddata import CCDData

    raw = CCDData(fits.getdata(night.paths()[0]).astype(np.float32), unit="adu")
    assert calibrate_frame(raw, "palomar-lfc").shape == night.bias.shape
