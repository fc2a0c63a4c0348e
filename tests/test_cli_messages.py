"""What a person reads after ``ccdproc-ext reduce`` on a folder with problems: each file
named once, problems grouped by reason, one format, no traceback, no astropy warning."""

import re
import shutil

import pytest
from astropy.io import fits

from ccdproc_ext import reduce_night
from ccdproc_ext.cli import main
from ccdproc_ext.simulate import simulate_night

SHAPE = (24, 32)


@pytest.fixture
def night_with_problems(tmp_path):
    raw = tmp_path / "raw"
    night = simulate_night(raw, shape=SHAPE, n_bias=3, n_dark=2, n_flat=3, filters=("V",),
                           n_science=2)
    # Three truncated science frames: one reason, three files.
    for i in range(3):
        path = shutil.copy(night.paths("science")[0], raw / f"object_V_cut{i}.fits")
        with open(path, "r+b") as stream:
            stream.truncate(2880 + 700 + i)  # the header and part of the data
    # A science frame in a filter with no flat.
    header = fits.getheader(night.paths("science")[1])
    header["FILTER"] = "B"
    fits.PrimaryHDU(fits.getdata(night.paths("science")[1]), header=header).writeto(
        raw / "object_B_001.fits")
    return raw


def test_each_file_named_once(night_with_problems, tmp_path, capsys):
    status = main(["reduce", str(night_with_problems), str(tmp_path / "out")])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert status == 0  # two science frames were reduced
    for name in ("object_V_cut0.fits", "object_V_cut1.fits", "object_V_cut2.fits",
                 "object_B_001.fits"):
        assert text.count(name) == 1, text
    # The three truncated files are one reason, said once.
    assert text.count("truncated") == 1, text
    assert "no flat in filter 'B'" in text
    assert "Traceback" not in text
    assert not re.search(r"^WARNING", text, re.MULTILINE), text
    assert "VerifyWarning" not in text and "AstropyUserWarning" not in text


def test_verbose_says_every_file_with_its_own_words(night_with_problems, tmp_path, capsys):
    main(["reduce", str(night_with_problems), str(tmp_path / "out"), "-v"])
    out = capsys.readouterr().out
    for i in range(3):
        assert re.search(rf"object_V_cut{i}\.fits: truncated", out), out


def test_quiet_prints_no_warning(night_with_problems, tmp_path, capsys):
    main(["reduce", str(night_with_problems), str(tmp_path / "out"), "-q"])
    assert capsys.readouterr().err == ""


def test_long_version_string_writes_no_card_warning(tmp_path, monkeypatch):
    """A development build's version (with a local part) makes CCDPROC long: the card
    loses its comment instead of astropy warning "Card is too long" on every write."""
    import numpy as np
    from astropy.nddata import CCDData

    import ccdproc_ext
    from ccdproc_ext import calibrate_frame
    from ccdproc_ext.outputs import write_atomic

    monkeypatch.setattr(ccdproc_ext, "__version__", "0.1.dev31+gabd3141.d20261129")
    frame = calibrate_frame(CCDData(np.ones((4, 5), np.float32), unit="adu",
                                    meta=fits.Header({"EXPTIME": 1.0})), "generic")
    path = write_atomic(frame, tmp_path / "frame.fits")  # warnings are errors here
    assert "0.1.dev31+gabd3141.d20261129" in fits.getval(path, "CCDPROC")


def test_a_master_says_what_its_frames_said_once_per_reason(tmp_path):
    """Thirty biases with the same malformed BIASSEC: the master's note names the reason
    once, with how many frames said it, not thirty times in one line."""
    raw = tmp_path / "raw"
    night = simulate_night(raw, shape=SHAPE, n_bias=30, dark_exposures=(60.0,), n_dark=2,
                           n_flat=2, filters=("V",), n_science=1)
    for path in night.paths("bias"):
        with fits.open(path, mode="update") as hdus:
            hdus[0].header["BIASSEC"] = "[1:5,oops]"
    result = reduce_night(raw, tmp_path / "out", progress=False, workers=1, report=False)
    of_master = [note for file, note in zip(result.notes["file"], result.notes["note"],
                                            strict=True)
                 if file == "masters/bias_01.fits" and "BIASSEC" in note]
    assert len(of_master) == 1, of_master
    assert of_master[0].startswith("BIASSEC = '[1:5,oops]' is not a FITS section")
    assert "(30 frames: bias_001.fits, bias_002.fits," in of_master[0]
    assert len(of_master[0]) < 300
    for verbose in (False, True):
        lines = result.summary(verbose=verbose).splitlines()
        assert len([line for line in lines if "masters/bias_01.fits" in line]) == 1
