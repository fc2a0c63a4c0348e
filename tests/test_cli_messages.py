"""What a person reads after ``ccdproc-ext reduce`` on a folder with problems: each file
named once, problems grouped by reason, one format, no traceback, no astropy warning."""

import re
import shutil
import subprocess
import sys

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

    import ccdproc_ext.provenance
    from ccdproc_ext import calibrate_frame
    from ccdproc_ext.outputs import write_atomic

    # (the version the provenance cards write: the package's, read when it is imported)
    monkeypatch.setattr(ccdproc_ext.provenance, "__version__", "0.1.dev31+gabd3141.d20261129")
    frame = calibrate_frame(CCDData(np.ones((4, 5), np.float32), unit="adu",
                                    meta=fits.Header({"EXPTIME": 1.0})), "generic")
    path = write_atomic(frame, tmp_path / "frame.fits")  # warnings are errors here
    assert "0.1.dev31+gabd3141.d20261129" in fits.getval(path, "CCDPROC")


# --------------------------------------------- what ccdproc and astropy say, said once too
def command_line(*args):
    """Run ``ccdproc-ext`` in its own process: (exit status, its lines, standard output
    and error together). Its own process, so that what ccdproc logs and warnings print
    reach the same streams as they do for a user."""
    done = subprocess.run([sys.executable, "-m", "ccdproc_ext.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)
    return done.returncode, (done.stdout + done.stderr).splitlines()


@pytest.mark.parametrize("command", ["reduce", "plan"])
def test_a_folder_where_no_file_can_be_read(tmp_path, command):
    """Every file a problem: the exit status says it failed, and each file is named on
    one line only (ccdproc's own 'unable to get FITS header' is not said beside it)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "notes.fits").write_text("not a FITS file")
    (raw / "empty.fits").write_bytes(b"")
    fits.PrimaryHDU().writeto(raw / "cut.fits")
    with open(raw / "cut.fits", "r+b") as stream:
        stream.truncate(100)  # not even the first block
    args = [command, raw] + ([tmp_path / "out"] if command == "reduce" else [])
    status, lines = command_line(*args)
    assert status == 1, lines
    assert "ccdproc-ext: error: none of the 3 files could be read" in lines
    for name in ("notes.fits", "empty.fits", "cut.fits"):
        assert len([line for line in lines if name in line]) == 1, lines
    assert not [line for line in lines if "unable to get FITS header" in line], lines
    assert "Traceback" not in "\n".join(lines)


def test_a_folder_with_no_file(tmp_path):
    (tmp_path / "raw").mkdir()
    status, lines = command_line("reduce", tmp_path / "raw", tmp_path / "out")
    assert status == 1
    assert len(lines) == 1 and lines[0].startswith("ccdproc-ext: error: "), lines


@pytest.fixture
def night_with_a_keyword_twice(tmp_path):
    """Fifteen frames, each with OBSERVER written twice."""
    raw = tmp_path / "raw"
    night = simulate_night(raw, shape=SHAPE, n_bias=3, dark_exposures=(60.0,), n_dark=3,
                           n_flat=3, filters=("V",), n_science=6)
    for path in night.paths():
        with fits.open(path, mode="update") as hdus:
            hdus[0].header.append(fits.Card("OBSERVER", "Ann"), end=True)
            hdus[0].header.append(fits.Card("OBSERVER", "Bob"), end=True)
    assert len(night.paths()) == 15
    return raw, sorted(p.name for p in night.paths())


@pytest.mark.parametrize("verbose", [False, True])
def test_a_keyword_twice_in_every_header_is_said_once(night_with_a_keyword_twice, tmp_path,
                                                     verbose):
    raw, names = night_with_a_keyword_twice
    status, lines = command_line("reduce", raw, tmp_path / "out", "--workers", "1",
                                 *(["-v"] if verbose else []))
    assert status == 0, lines
    said = [line for line in lines if "multiple entries" in line]
    if verbose:  # each file on its own line
        assert sorted(line.split(": ")[2] for line in said) == names, said
    else:  # one line for the reason, the files after it
        assert len(said) == 1, said
        assert "(15 files, -v for each)" in said[0]
        assert said[0].startswith("ccdproc-ext: warning: ")


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


def hear():
    """ccdproc's log of two unreadable files (one twice) and a warning three times."""
    import logging
    import warnings

    from ccdproc_ext._heard import HeardMessages

    with warnings.catch_warnings(), HeardMessages() as heard:
        warnings.simplefilter("always")
        for name in ("RAW/sub/a.fits", "RAW/b.fits", "RAW/b.fits"):
            logging.getLogger("ccdproc.image_collection").warning(
                "unable to get FITS header for file %s: %s: cut.", name, name)
        for _ in range(3):
            warnings.warn("a card is not FITS standard", UserWarning, stacklevel=1)
        logging.getLogger("ccdproc").info("not heard: below the level")
    return heard


FILES = ["a.fits", "sub/a.fits", "b.fits"]


@pytest.mark.parametrize("said, verbose, expected", [
    ((), False, ["unable to get FITS header for file (2 files, -v for each): sub/a.fits, "
                 "b.fits", "a card is not FITS standard (3 times)"]),
    ((), True, ["sub/a.fits: unable to get FITS header for file: cut",
                "b.fits: unable to get FITS header for file: cut",
                "a card is not FITS standard (3 times)"]),
    (("b.fits",), False, ["sub/a.fits: unable to get FITS header for file: cut",
                          "a card is not FITS standard (3 times)"]),
])
def test_heard_messages_are_said_by_file_and_reason(said, verbose, expected):
    """What is heard is told apart by the file it names (the longest of the night's
    names a path ends with), said once per file and reason, and not at all for a file
    said already; what names no file is said once, with how many times it was heard."""
    heard = hear()
    assert heard.lines(FILES, said=said, verbose=verbose) == expected
    assert heard.lines(FILES) == []  # said, and forgotten
