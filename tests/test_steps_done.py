"""No step twice, whoever did the first: our flags, IRAF's ccdproc's, MaxIm DL's CALSTAT.

Frames are built by hand with known levels: a flat of known shape, a bias and a dark of
known levels, and science frames some of whose steps a capture program or IRAF did
before. The expected pixels are written out from those numbers.
"""

import numpy as np
import pytest
from astropy.io import fits

from ccdproc_ext import NightCollection, reduce_night

SHAPE = (12, 16)
BIAS, DARK_RATE, SKY = 300.0, 2.0, 1000.0
START = "2024-03-05T01:00:00"


def _flat_pattern():
    """A flat field of mean 1 with a gradient along the columns."""
    pattern = np.linspace(0.8, 1.2, SHAPE[1])[np.newaxis, :].repeat(SHAPE[0], axis=0)
    return pattern / pattern.mean()


def _write(path, data, **cards):
    header = fits.Header({"DATE-OBS": START, "SET-TEMP": -10.0, **cards})
    fits.PrimaryHDU(np.asarray(data, dtype=np.float32), header).writeto(path)


@pytest.fixture
def night(tmp_path):
    """Biases, 60 s darks and R flats as they come off the camera."""
    raw = tmp_path / "raw"
    raw.mkdir()
    flat = _flat_pattern()
    for i in range(3):
        _write(raw / f"bias_{i}.fits", np.full(SHAPE, BIAS), IMAGETYP="Bias Frame",
               EXPTIME=0.0, FRAMENO=i)
        _write(raw / f"dark_{i}.fits", np.full(SHAPE, BIAS + 60 * DARK_RATE),
               IMAGETYP="Dark Frame", EXPTIME=60.0, FRAMENO=i)
        _write(raw / f"flat_{i}.fits", BIAS + 60 * DARK_RATE + 20000.0 * flat,
               IMAGETYP="Flat Field", EXPTIME=60.0, FILTER="R", FRAMENO=i)
    return raw


def _science(raw, name, data, **cards):
    _write(raw / name, data, IMAGETYP="Light Frame", EXPTIME=60.0, FILTER="R", **cards)


def _output(result, name):
    row = result.science[result.science["raw_file"] == name][0]
    assert row["status"] == "written"
    with fits.open(row["output_file"]) as hdul:
        return hdul[0].data, hdul[0].header


def test_maxim_calibrated_as_it_saved(night, tmp_path):
    """CALSTAT = 'D' (a simple dark, holding the bias, subtracted when saved) and
    PEDESTAL = -100 (100 ADU added so that no pixel went below 0): neither bias nor dark
    again, the pedestal taken back, then the flat."""
    flat = _flat_pattern()
    _science(night, "m31_maxim.fits", SKY * flat + 100.0, CALSTAT="D", PEDESTAL=-100)
    _science(night, "m31_raw.fits", BIAS + 60 * DARK_RATE + SKY * flat)
    result = reduce_night(night, tmp_path / "out", progress=False, workers=1, report=False)
    plan = result.plan
    row = plan[plan["file"] == "m31_maxim.fits"][0]
    assert (row["bias"], row["dark"]) == ("", "")
    assert row["bias_rule"] == row["dark_rule"] == "done before (the frame's header says so)"
    assert "bias and dark already done (CALSTAT = 'D'): not done again" in row["notes"]
    maxim, header = _output(result, "m31_maxim.fits")
    raw, _ = _output(result, "m31_raw.fits")
    np.testing.assert_allclose(maxim, SKY, rtol=1e-5)
    np.testing.assert_allclose(raw, SKY, rtol=1e-5)
    assert header["PEDESTAL"] == 0
    assert "ZEROCOR" not in header and "DARKCOR" not in header and "FLATCOR" in header


def test_iraf_flags_are_steps_done(night, tmp_path):
    """IRAF's ccdproc wrote ZEROCOR and DARKCOR: only the flat is left to do."""
    flat = _flat_pattern()
    _science(night, "m31_iraf.fits", SKY * flat, ZEROCOR="Mar 5 10:00 Zero is Zero.fits",
             DARKCOR="Mar 5 10:00 Dark is Dark.fits", CCDPROC="Mar 5 10:00 CCD processing done")
    result = reduce_night(night, tmp_path / "out", progress=False, workers=1, report=False)
    row = result.plan[result.plan["file"] == "m31_iraf.fits"][0]
    assert (row["bias"], row["dark"], row["status"]) == ("", "", "ok")
    assert row["flat"]
    assert "bias and dark already done (ZEROCOR = " not in row["notes"]  # two cards
    assert "bias already done (ZEROCOR = 'Mar 5 10:00 Zero is Zero.fits')" in row["notes"]
    assert "dark already done (DARKCOR = 'Mar 5 10:00 Dark is Dark.fits')" in row["notes"]
    data, header = _output(result, "m31_iraf.fits")
    np.testing.assert_allclose(data, SKY, rtol=1e-5)
    assert header["ZEROCOR"] == "Mar 5 10:00 Zero is Zero.fits"  # IRAF's, not ours


def test_a_master_made_of_such_frames_says_so(tmp_path):
    """Flats dark-subtracted as they were saved: the master flat's notes say the dark was
    not subtracted again, and the science frame is flat-fielded by it."""
    raw = tmp_path / "raw"
    raw.mkdir()
    flat = _flat_pattern()
    for i in range(3):
        _write(raw / f"dark_{i}.fits", np.full(SHAPE, BIAS + 60 * DARK_RATE),
               IMAGETYP="Dark Frame", EXPTIME=60.0, FRAMENO=i)
        _write(raw / f"flat_{i}.fits", 20000.0 * flat, IMAGETYP="Flat Field", EXPTIME=60.0,
               FILTER="R", CALSTAT="D", FRAMENO=i)
    _science(raw, "m31.fits", BIAS + 60 * DARK_RATE + SKY * flat)
    result = reduce_night(raw, tmp_path / "out", progress=False, workers=1, report=False)
    plan = result.plan
    assert set(plan["dark"][plan["type"] == "flat"]) == {""}
    flat_master = plan["flat"][plan["file"] == "m31.fits"][0]
    master_notes = list(result.notes["note"][result.notes["file"]
                                             == f"masters/{flat_master}.fits"])
    assert master_notes == ["made from frames whose bias and dark were done before (their "
                            "headers say so), not again: flat_0.fits, flat_1.fits, "
                            "flat_2.fits"]
    data, _ = _output(result, "m31.fits")
    np.testing.assert_allclose(data, SKY, rtol=1e-5)


def test_frames_table_lists_the_steps_done(tmp_path):
    _write(tmp_path / "a.fits", np.zeros(SHAPE), IMAGETYP="OBJECT", EXPTIME=1.0,
           CALSTAT="BDF")
    _write(tmp_path / "b.fits", np.zeros(SHAPE), IMAGETYP="OBJECT", EXPTIME=1.0,
           FLATCOR="done")
    _write(tmp_path / "c.fits", np.zeros(SHAPE), IMAGETYP="OBJECT", EXPTIME=1.0)
    frames = NightCollection(tmp_path).frames
    assert list(frames["done"]) == ["bias,dark,flat", "flat", ""]
