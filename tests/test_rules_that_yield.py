"""Rules that throw data away first check their premise on the data in front of them.

A saturation level masks pixels, a bad-pixel mask masks pixels: each steps aside, with a
note, when what it would do cannot be true of the frame (a level of 0, a level below most
of the frame, a level that is each frame's own largest value, a mask of most of the
detector). The truths here are numbers written by hand: frames of known levels and known
saturated pixels.
"""

import re
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

from ccdproc_ext import NightCollection, calibrate_frame, get_profile, reduce_night
from ccdproc_ext.exceptions import CcdprocExtWarning
from ccdproc_ext.simulate import simulate_night

SHAPE = (24, 30)


def _frame(level=1000.0, **cards):
    """A raw frame of the generic profile: ``level`` everywhere, three pixels at 65535."""
    data = np.full(SHAPE, level, dtype=np.float32)
    data[3, 4] = data[10, 11] = data[20, 2] = 65535.0
    header = fits.Header({"IMAGETYP": "OBJECT", "EXPTIME": 10.0, **cards})
    return CCDData(data, unit="adu", meta=header)


# ---------------------------------------------------------------- one frame at a time
def test_a_true_saturation_level_masks_what_it_should():
    calibrated = calibrate_frame(_frame(SATURATE=60000), "generic")
    assert np.argwhere(calibrated.mask).tolist() == [[3, 4], [10, 11], [20, 2]]
    assert calibrated.header["NSATUR"] == 3


@pytest.mark.parametrize("cards, words", [
    ({"DATAMAX": 0.0}, "a saturation level of 0 is not a saturation level (not above 0)"),
    ({"SATURATE": -1}, "a saturation level of -1 is not a saturation level (not above 0)"),
    # Below the frame's level: it would mask every pixel but three.
    ({"SATURATE": 500}, "a saturation level of 500 would mask 100% of the frame: it is "
                        "not a saturation level"),
])
def test_a_saturation_level_that_cannot_be_one_masks_nothing(cards, words):
    with pytest.warns(CcdprocExtWarning, match=re.escape(words)):
        calibrated = calibrate_frame(_frame(**cards), "generic")
    assert calibrated.mask is None or not calibrated.mask.any()
    assert "NSATUR" not in calibrated.header
    np.testing.assert_array_equal(calibrated.data, _frame().data)


def test_a_bad_pixel_mask_of_most_of_the_frame_is_not_applied():
    most = np.ones(SHAPE, dtype=np.uint8)
    most[0, :5] = 0
    with pytest.warns(CcdprocExtWarning, match="marks 99% of the frame: implausible for "
                                               "a detector, not applied"):
        calibrated = calibrate_frame(_frame(), "generic", bad_pixel_mask=most)
    assert calibrated.mask is None or not calibrated.mask.any()
    few = np.zeros(SHAPE, dtype=np.uint8)
    few[5, 5] = few[6, 7] = 1
    calibrated = calibrate_frame(_frame(), "generic", bad_pixel_mask=few)
    assert np.argwhere(calibrated.mask).tolist() == [[5, 5], [6, 7]]


# ------------------------------------------------------------------------ a whole night
def _night(folder, **header_extra):
    return simulate_night(folder, "generic", shape=SHAPE, n_bias=3, dark_exposures=(30.0,),
                          n_dark=3, filters=("R",), n_flat=3, flat_exposure=30.0,
                          n_science=2, science_exposure=30.0, n_stars=3, cosmic_rays=0,
                          header_extra=header_extra or None)


def _set_datamax_to_each_frames_largest(folder):
    """DATAMAX as some cameras write it: each frame's own largest value."""
    for path in sorted(folder.glob("*.fits")):
        with fits.open(path, mode="update") as hdul:
            hdul[0].header["DATAMAX"] = float(hdul[0].data.max())


@pytest.mark.parametrize("how", ["zero", "statistic"])
def test_a_night_whose_saturation_keyword_is_no_level(tmp_path, how):
    raw = tmp_path / "raw"
    if how == "zero":
        _night(raw, DATAMAX=0.0)
        said = "DATAMAX = 0 is not a saturation level (not above 0)"
    else:
        _night(raw)
        _set_datamax_to_each_frames_largest(raw)
        said = "DATAMAX differs from frame to frame of one camera"
    night = NightCollection(raw)
    assert any(note.startswith(said) for note in night.night_notes)
    assert "DATAMAX" not in night.night_profile.saturation_spec.keywords
    assert "DATAMAX" in night.profile.saturation_spec.keywords  # the user's own, unchanged
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = reduce_night(raw, tmp_path / "out", progress=False, workers=1,
                              report=False)
    assert any(note.startswith(said) for note in result.notes["note"])
    assert list(result.science["status"]) == ["written", "written"]
    assert set(result.science["n_saturated"]) <= {0, -1}
    for path in result.science["output_file"]:
        with fits.open(path) as hdul:
            assert np.isfinite(hdul[0].data).all()
            assert "NSATUR" not in hdul[0].header or hdul[0].header["NSATUR"] == 0


def test_a_constant_saturation_keyword_is_kept(tmp_path):
    _night(tmp_path, DATAMAX=65535)
    night = NightCollection(tmp_path)
    assert night.night_profile.saturation_spec.keywords == \
        get_profile("generic").saturation_spec.keywords
    assert not any("DATAMAX" in note for note in night.night_notes)


def test_real_sbig_datamax_is_a_level(real_data):
    """The SBIG camera writes DATAMAX = 65535 on every frame: a true level, kept."""
    night = NightCollection(real_data / "sbig-stl1001e", keywords=[])
    assert "DATAMAX" in night.night_profile.saturation_spec.keywords
    assert not any("DATAMAX" in note for note in night.night_notes)
