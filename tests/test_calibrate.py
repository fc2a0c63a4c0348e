"""calibrate_frame on hand-made frames: amplifiers, overscan modes, gain and uncertainty."""

import astropy.units as u
import ccdproc
import numpy as np
import pytest
from astropy.nddata import CCDData

from ccdproc_ext import MasterFrame, calibrate_frame
from ccdproc_ext.profiles import InstrumentProfile

TWO_AMPLIFIERS = """
schema_version = 1
name = "two-amps"
description = "A test detector read through two amplifiers, left and right"

[image_types]
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
"""


@pytest.fixture
def two_amps(tmp_path):
    path = tmp_path / "two-amps.toml"
    path.write_text(TWO_AMPLIFIERS)
    from ccdproc_ext import get_profile

    return get_profile(path)


def test_each_amplifier_gets_its_own_overscan(two_amps):
    rows = 6
    # Each amplifier has its own offset that varies along the rows.
    left_level = 100.0 + np.arange(rows)[:, None]
    right_level = 250.0 + 2 * np.arange(rows)[:, None]
    sky = np.arange(rows * 40, dtype=float).reshape(rows, 40)
    data = np.zeros((rows, 48))
    data[:, 0:4] = left_level
    data[:, 44:48] = right_level
    data[:, 4:24] = sky[:, :20] + left_level
    data[:, 24:44] = sky[:, 20:] + right_level
    result = calibrate_frame(CCDData(data, unit="adu"), two_amps)
    assert result.shape == (rows, 40)
    np.testing.assert_allclose(result.data, sky, atol=1e-4)
    assert result.header["TRIM"] == f"[5:44,1:{rows}]"
    assert "left:[1:4,1:6]" in result.header["OVERSCAN"]
    assert "right:[45:48,1:6]" in result.header["OVERSCAN"]


def test_frame_level_overscan_is_one_number():
    profile = InstrumentProfile(
        name="corner", description="bias section in a corner", overscan_axis="frame",
        image_type_words={"science": ("object",)},
        overscan=_section("[9:10,9:10]"), trim=_section("[1:8,1:8]"))
    data = np.full((10, 10), 500.0)
    data[:8, :8] += 7.0
    result = calibrate_frame(CCDData(data, unit="adu"), profile)
    np.testing.assert_allclose(result.data, 7.0)
    assert "level 500.00" in result.header["OVERSCAN"]


def _section(text):
    from ccdproc_ext.profiles.sections import DetectorSection

    return DetectorSection(fits=text)


def test_uncertainty_and_gain_in_electrons(two_amps):
    """create_deviation and gain_correct give ccdproc's own numbers."""
    rng = np.random.default_rng(1)
    data = rng.normal(1000, 5, (6, 48))
    raw = CCDData(data, unit="adu")
    ours = calibrate_frame(raw, two_amps, create_deviation=True, gain_correct=True,
                           dtype=np.float64)
    # The same by hand: each amplifier's overscan (median of each row) with numpy, then
    # ccdproc's create_deviation and gain_correct.
    trimmed = np.hstack([data[:, 4:24] - np.median(data[:, 0:4], axis=1)[:, np.newaxis],
                         data[:, 24:44] - np.median(data[:, 44:48], axis=1)[:, np.newaxis]])
    reference = CCDData(trimmed, unit="adu")
    reference = ccdproc.create_deviation(reference, gain=2.0 * u.electron / u.adu,
                                         readnoise=5.0 * u.electron, disregard_nan=True)
    reference = ccdproc.gain_correct(reference, 2.0 * u.electron / u.adu)
    assert ours.unit == u.electron
    np.testing.assert_allclose(ours.data, reference.data)
    np.testing.assert_allclose(ours.uncertainty.array, reference.uncertainty.array)


def test_deviation_needs_gain_and_read_noise():
    from ccdproc_ext import HeaderError

    raw = CCDData(np.ones((4, 4)), unit="adu")
    with pytest.raises(HeaderError, match="create_deviation needs the gain"):
        calibrate_frame(raw, "zwo-asiimg", create_deviation=True)


def test_dark_scaling_rules():
    """Scaled when the exposures differ beyond the tolerance and the profile allows it."""
    # TIRCAM2 frames have no sections, and its profile allows scaled darks.
    frame = CCDData(np.full((4, 4), 100.0), unit="adu", meta={"EXPTIME": 30.0})
    dark = CCDData(np.full((4, 4), 60.0), unit="adu", meta={"EXPTIME": 60.0})
    scaled = calibrate_frame(frame, "dot-tircam2", master_dark=dark)
    np.testing.assert_allclose(scaled.data, 100 - 30)
    assert scaled.header["DARKSCL"] == 0.5
    unscaled = calibrate_frame(frame, "dot-tircam2", master_dark=dark, scale_dark=False)
    np.testing.assert_allclose(unscaled.data, 100 - 60)
    assert unscaled.header["DARKSCL"] == 1.0
    # a dark scaled once ahead of time for many frames gives the same, and says so
    prepared = MasterFrame(ccd=dark, name="dark.fits", exposure=60.0).scaled(0.5)
    once = calibrate_frame(frame, "dot-tircam2", master_dark=prepared)
    np.testing.assert_array_equal(once.data, scaled.data)
    assert once.header["DARKSCL"] == 0.5
    # maxim-ccdsoft does not allow scaling: the dark is subtracted as it is
    plain = calibrate_frame(frame, "maxim-ccdsoft", master_dark=dark)
    np.testing.assert_allclose(plain.data, 100 - 60)
