"""Bad input gets a clear answer, and raw data is never written.

Each kind of bad input is made from a small simulated night (MaxIm DL headers, 24 x 28
pixels): a frame cut short, a file that is not FITS, a header that lacks or garbles a
keyword, a frame of another shape or binning, two files with the same bytes, pixels that
are NaN or saturated, flats that are dead or unlit, calibration groups of one frame,
output folders that cannot or must not be used. By default the night goes on with the good
frames and lists the bad ones in ``problems`` (kind of error, file, reason); with
``strict=True`` the same kind of error is raised. The real ZWO ASI178 frames (truncated
files, decimal commas) are reduced from a read-only copy whose checksums must not change.
"""

import builtins
import errno
import gzip
import hashlib
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

import ccdproc_ext
import ccdproc_ext.raw
from ccdproc_ext import (
    CalibrationMatchError,
    CcdprocExtError,
    DataQualityError,
    DataQualityWarning,
    DuplicateFrameError,
    FrameReadError,
    FrameSkippedWarning,
    HeaderError,
    NightCollection,
    OutputError,
    make_master_bias,
    reduce_night,
)
from ccdproc_ext.cli import main
from ccdproc_ext.outputs import output_name as _output_name
from ccdproc_ext.simulate import simulate_night

PROFILE = "maxim-ccdsoft"
SHAPE = (24, 28)
SCIENCE = ("object_R_001.fits", "object_R_002.fits")


@pytest.fixture(scope="module")
def clean_night(tmp_path_factory):
    """A good night (3 bias, 3 darks at 2 s and 60 s, 3 R flats, 2 science frames) and
    its reduction, to copy and spoil."""
    root = tmp_path_factory.mktemp("clean")
    simulate_night(root / "raw", PROFILE, shape=SHAPE, n_bias=3, n_dark=3, n_flat=3,
                   filters=("R",), n_science=2, seed=5)
    result = reduce_night(root / "raw", root / "out", PROFILE, progress=False, workers=1)
    assert len(result.problems) == 0 and len(result.notes) == 0, result.summary()
    return root / "raw", result


@pytest.fixture
def raw(clean_night, tmp_path):
    """A fresh copy of the good night's raw folder."""
    return Path(shutil.copytree(clean_night[0], tmp_path / "raw"))


def checksums(folder):
    """SHA-256 of every file under ``folder``, by relative path."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def rewrite(path, *, data=None, **cards):
    """Write ``path`` again with new pixels and/or header cards (None removes a card)."""
    with fits.open(path) as hdul:
        header = hdul[0].header.copy()
        pixels = hdul[0].data.copy() if data is None else data
    for key, value in cards.items():
        if value is None:
            header.remove(key, ignore_missing=True)
        else:
            header[key] = value
    fits.PrimaryHDU(pixels, header=header).writeto(path, overwrite=True)
    return path


def replace_bytes(path, old, new):
    """Replace one card's bytes in place (same length), for headers astropy would fix."""
    content = path.read_bytes()
    assert content.count(old) == 1 and len(old) == len(new)
    path.write_bytes(content.replace(old, new))


def card_bytes(key, value):
    """The keyword and value field of a card as written (its first 30 bytes)."""
    return fits.Card(key, value).image.encode()[:30]


# --------------------------------------------------------------- bad files, one by one
def _truncated(raw):
    path = shutil.copy(raw / SCIENCE[0], raw / "object_R_009.fits")
    rewrite(path, **{"DATE-OBS": "2024-03-05T02:00:00"})
    path.write_bytes(path.read_bytes()[:2880 + 500])
    return path.name


def _empty(raw):
    (raw / "object_R_009.fits").write_bytes(b"")
    return "object_R_009.fits"


def _short(raw):
    (raw / "object_R_009.fits").write_bytes(b"SIMPLE  =                    T")
    return "object_R_009.fits"


def _not_fits(raw):
    (raw / "object_R_009.fits").write_bytes(b"a text file with a FITS name\n" * 200)
    return "object_R_009.fits"


def _truncated_gzip(raw):
    compressed = gzip.compress((raw / SCIENCE[0]).read_bytes())
    (raw / "object_R_009.fits.gz").write_bytes(compressed[:len(compressed) // 2])
    return "object_R_009.fits.gz"


def _bad_bitpix(raw):
    path = shutil.copy(raw / SCIENCE[0], raw / "object_R_009.fits")
    replace_bytes(path, card_bytes("BITPIX", 16), card_bytes("BITPIX", 17))
    return path.name


def _three_dimensional(raw):
    path = raw / "object_R_009.fits"
    with fits.open(raw / SCIENCE[0]) as hdul:
        header = hdul[0].header.copy()
        cube = np.stack([hdul[0].data] * 2)
    fits.PrimaryHDU(cube, header=header).writeto(path)
    return path.name


def _header_without_end(raw):
    # The file ends inside its header, after NAXIS1: padded to a block, no END card.
    content = (raw / SCIENCE[0]).read_bytes()
    cut = content[:content.index(b"NAXIS2  =")].ljust(2880, b" ")
    (raw / "object_R_009.fits").write_bytes(cut)
    return "object_R_009.fits"


def _header_without_naxis2(raw):
    content = (raw / SCIENCE[0]).read_bytes()
    card = content.index(b"NAXIS2  =")
    header = content[:card] + content[card + 80:2880] + b" " * 80
    (raw / "object_R_009.fits").write_bytes(header + content[2880:])
    return "object_R_009.fits"


def _no_exposure(raw):
    path = shutil.copy(raw / SCIENCE[0], raw / "object_R_009.fits")
    rewrite(path, EXPTIME=None, **{"DATE-OBS": "2024-03-05T02:00:00"})
    return path.name


def _exposure_not_a_number(raw):
    path = shutil.copy(raw / SCIENCE[0], raw / "object_R_009.fits")
    rewrite(path, EXPTIME="sixty")
    return path.name


def _no_image_type(raw):
    # No type and no exposure: nothing says it is a science frame (with an exposure it
    # would be guessed one, see test_headers_real_world).
    path = shutil.copy(raw / SCIENCE[0], raw / "object_R_009.fits")
    rewrite(path, IMAGETYP=None, EXPTIME=0.0)
    return path.name


def _other_shape(raw):
    path = shutil.copy(raw / SCIENCE[0], raw / "object_R_009.fits")
    rewrite(path, data=np.zeros((20, 28), dtype=np.uint16))
    return path.name


def _other_binning(raw):
    path = shutil.copy(raw / SCIENCE[0], raw / "object_R_009.fits")
    rewrite(path, XBINNING=2, YBINNING=2)
    return path.name


def _duplicate(raw):
    shutil.copy(raw / SCIENCE[1], raw / "object_R_009.fits")
    return "object_R_009.fits"


def _all_nan(raw):
    path = shutil.copy(raw / SCIENCE[0], raw / "object_R_009.fits")
    rewrite(path, data=np.full(SHAPE, np.nan, dtype=np.float32))
    return path.name


@pytest.mark.parametrize("make_bad, error, words", [
    (_truncated, FrameReadError, "truncated: the data unit needs 1344 bytes but the file "
                                 "holds only 500"),
    (_empty, FrameReadError, "the file is empty"),
    (_short, FrameReadError, "shorter than one FITS block"),
    (_not_fits, FrameReadError, "cannot read the FITS header"),
    (_truncated_gzip, FrameReadError, "cannot read the FITS header"),
    (_bad_bitpix, FrameReadError, "BITPIX = 17 is not a FITS pixel type"),
    (_three_dimensional, FrameReadError, "3-dimensional; a 2-D image is expected"),
    (_header_without_end, FrameReadError, "truncated or damaged: the header has no END "
                                          "card; NAXIS = 2 but it has no NAXIS2 card"),
    (_header_without_naxis2, FrameReadError, "the header says NAXIS = 2 but has no NAXIS2 "
                                             "card"),
    (_no_exposure, HeaderError, "none of the keywords EXPTIME, EXPOSURE is in the header"),
    (_exposure_not_a_number, HeaderError, "keyword EXPTIME = 'sixty' is not a number"),
    (_no_image_type, HeaderError, "no image-type keyword and no file pattern matches"),
    # No bias of the frame's group is a note (a night without biases); no dark is not.
    (_other_shape, CalibrationMatchError, "no dark matches 20x28, binning 1x1"),
    (_other_binning, CalibrationMatchError, "no dark matches 24x28, binning 2x2"),
    (_duplicate, DuplicateFrameError, "the same bytes as object_R_002.fits"),
    (_all_nan, DataQualityError, "no pixel is finite"),
])
def test_bad_frame_is_listed_and_the_night_goes_on(raw, tmp_path, make_bad, error, words):
    bad = make_bad(raw)
    before = checksums(raw)
    result = reduce_night(raw, tmp_path / "out", PROFILE, progress=False, workers=1)
    assert [(p["file"], p["kind"]) for p in result.problems] == [(bad, error.__name__)]
    assert words in result.problems[0]["problem"]
    # The good frames are reduced as in a night without the bad one.
    assert sorted(result.science["raw_file"]) == list(SCIENCE)
    assert set(result.science["status"]) == {"written"}
    assert f"{bad}: " in result.summary()
    assert checksums(raw) == before

    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")) as caught:
        reduce_night(raw, tmp_path / "strict", PROFILE, strict=True, progress=False,
                     workers=1)
    assert bad in str(caught.value)
    assert isinstance(caught.value, CcdprocExtError)
    assert checksums(raw) == before


def test_strict_mode_from_the_command_line(raw, tmp_path, capsys):
    bad = _truncated(raw)
    assert main(["reduce", str(raw), str(tmp_path / "out"), "--profile", PROFILE,
                 "--quiet", "--strict"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ccdproc-ext: error: ") and bad in err and "truncated" in err
    assert "Traceback" not in err
    assert main(["reduce", str(raw), str(tmp_path / "out"), "--profile", PROFILE,
                 "--quiet"]) == 0
    assert f"{bad}: truncated" in capsys.readouterr().out


# ----------------------------------------------------------------- bad calibrations
def test_bad_frame_among_a_masters_frames_is_left_out(raw, tmp_path):
    """A truncated bias: the master is made from the other two, the bias is listed."""
    path = raw / "bias_002.fits"
    path.write_bytes(path.read_bytes()[:2880 + 500])
    result = reduce_night(raw, tmp_path / "out", PROFILE, progress=False, workers=1)
    assert list(result.problems["file"]) == ["bias_002.fits"]
    assert result.problems["kind"][0] == "FrameReadError"
    master = fits.getheader(tmp_path / "out" / "masters" / "bias_01.fits")
    assert master["NCOMBINE"] == 2
    assert (master["IMCMB001"], master["IMCMB002"]) == ("bias_001.fits", "bias_003.fits")
    assert len(result.science) == 2


def test_frame_that_fails_while_a_master_is_built(raw, tmp_path):
    """A bias of NaN only is found when its pixels are read: left out of the master,
    listed, recorded in the master's header, and listed again when the night is re-run."""
    rewrite(raw / "bias_002.fits", data=np.full(SHAPE, np.nan, dtype=np.float32))
    out = tmp_path / "out"
    result = reduce_night(raw, out, PROFILE, progress=False, workers=1)
    assert [tuple(p) for p in result.problems] == [
        ("bias_002.fits", "DataQualityError",
         "left out of master bias_01: no pixel is finite (all NaN or infinite)")]
    master = fits.getheader(out / "masters" / "bias_01.fits")
    assert master["NCOMBINE"] == 2
    assert (master["SKIP001"], master["SKIPW001"]) == (
        "bias_002.fits", "DataQualityError: no pixel is finite (all NaN or infinite)")
    again = reduce_night(raw, out, PROFILE, progress=False, workers=1)
    assert set(again.science["status"]) == {"up to date"}
    assert [tuple(p) for p in again.problems] == [tuple(p) for p in result.problems]


def test_master_without_any_good_frame(raw, tmp_path):
    """Unlit flats (raw zeros, negative after the bias): no flat, a clear reason for each
    frame, and a DataQualityError in strict mode."""
    for path in sorted(raw.glob("flat_*.fits")):
        rewrite(path, data=np.zeros(SHAPE, dtype=np.uint16))
    result = reduce_night(raw, tmp_path / "out", PROFILE, progress=False, workers=1)
    assert len(result.science) == 0
    problems = {p["file"]: p for p in result.problems}
    assert sorted(problems) == [f"flat_R_00{i}.fits" for i in (1, 2, 3)] + list(SCIENCE)
    assert set(result.problems["kind"]) == {"DataQualityError"}
    for name in SCIENCE:
        assert "master flat_R_01: none of the 3 frames could be used: flat_R_001.fits: " \
               "its mean level" in problems[name]["problem"]
        assert "a flat must be positive" in problems[name]["problem"]
    with pytest.raises(DataQualityError, match="a flat must be positive"):
        reduce_night(raw, tmp_path / "strict", PROFILE, strict=True, progress=False,
                     workers=1)


def test_every_frame_of_a_calibration_type_bad_is_not_a_skipped_step(raw, tmp_path):
    # With every bias truncated the night still has biases: a missing calibration, not a
    # step to leave out (which would give darks and flats with the bias still in).
    for path in sorted(raw.glob("bias_*.fits")):
        path.write_bytes(path.read_bytes()[:3000])
    result = reduce_night(raw, tmp_path / "out", PROFILE, progress=False, workers=1)
    assert len(result.science) == 0
    science = result.problems[[f in SCIENCE for f in result.problems["file"]]]
    assert set(science["kind"]) == {"CalibrationMatchError"}
    assert all("no usable bias frame" in p for p in science["problem"])


def test_calibration_group_of_a_single_frame(raw, tmp_path):
    """One bias: the master is made, with a note (and a warning from make_master_bias)."""
    for name in ("bias_002.fits", "bias_003.fits"):
        (raw / name).unlink()
    result = reduce_night(raw, tmp_path / "out", PROFILE, progress=False, workers=1)
    assert len(result.problems) == 0
    assert len(result.science) == 2
    assert [(n["file"], n["kind"]) for n in result.notes] == [
        ("masters/bias_01.fits", "DataQualityWarning")]
    assert "made from a single frame (bias_001.fits)" in result.notes[0]["note"]
    assert fits.getval(tmp_path / "out" / "masters" / "bias_01.fits", "NCOMBINE") == 1
    with pytest.warns(DataQualityWarning, match="made from a single frame"):
        make_master_bias([raw / "bias_001.fits"], PROFILE)


def test_make_master_skips_bad_frames_only_when_asked(raw):
    path = raw / "bias_002.fits"
    path.write_bytes(path.read_bytes()[:2880 + 500])
    frames = sorted(raw.glob("bias_*.fits"))
    with pytest.raises(FrameReadError, match=r"bias_002\.fits: truncated"):
        make_master_bias(frames, PROFILE)
    with pytest.warns(FrameSkippedWarning, match=r"bias_002\.fits left out: truncated") as w:
        master = make_master_bias(frames, PROFILE, skip_bad_frames=True)
    skipped = [caught.message for caught in w if caught.category is FrameSkippedWarning]
    assert len(skipped) == 1
    assert skipped[0].file == "bias_002.fits"
    assert isinstance(skipped[0].error, FrameReadError)
    assert master.meta["NCOMBINE"] == 2
    assert master.meta["SKIP001"] == "bias_002.fits"
    assert master.meta["SKIPW001"].startswith("FrameReadError: truncated")


def test_a_frame_left_out_is_warned_about_while_other_threads_read(raw, monkeypatch):
    """Other threads are inside warnings.catch_warnings (astropy's reader is) when the
    bad frame is found: the warning must still reach the caller (it was lost once)."""
    import threading
    import time
    import warnings

    import ccdproc_ext.calibrate

    path = raw / "bias_002.fits"
    path.write_bytes(path.read_bytes()[:2880 + 500])
    frames = sorted(raw.glob("bias_*.fits"))
    read_frame = ccdproc_ext.calibrate.read_frame  # (the frames of a master are read there)
    # One other thread (bias_003's) is inside warnings.catch_warnings while the bad frame
    # is read and found. The blocks of the threads are properly nested, in this order:
    # bias_001 read and calibrated; bias_003's block entered; bias_002 read (it fails);
    # 0.3 s inside the block, while the failure reaches the caller; the block left; the
    # other frames read. (Two blocks that overlap without nesting leave each other's
    # filters behind before Python 3.14, whatever the package does: not tested here.)
    first_done, entered, bad_found, block_left = (threading.Event() for _ in range(4))

    def slow_read(frame, profile, **options):
        name = Path(frame).name
        if name == "bias_001.fits":
            try:
                return read_frame(frame, profile, **options)
            finally:
                first_done.set()
        if name == "bias_002.fits":
            entered.wait(5)
            try:
                return read_frame(frame, profile, **options)
            finally:
                bad_found.set()
        if name == "bias_003.fits":
            first_done.wait(5)
            time.sleep(0.2)  # bias_001's calibration done
            with warnings.catch_warnings(record=True):
                entered.set()
                bad_found.wait(5)
                time.sleep(0.3)
            block_left.set()
        block_left.wait(5)
        return read_frame(frame, profile, **options)

    monkeypatch.setattr(ccdproc_ext.calibrate, "read_frame", slow_read)
    with pytest.warns(FrameSkippedWarning, match=r"bias_002\.fits left out: truncated"):
        master = make_master_bias(frames, PROFILE, skip_bad_frames=True, workers=3)
    assert master.meta["SKIP001"] == "bias_002.fits"


def test_dead_flat_column_is_masked_not_divided_by(clean_night, raw, tmp_path):
    """Column 10 of every flat is dead (bias level): masked in the master flat (NLOWPIX),
    masked in every science frame, whose other pixels are as in the clean night."""
    for path in sorted(raw.glob("flat_*.fits")):
        data = fits.getdata(path).copy()
        data[:, 10] = 1000  # the simulated bias level
        rewrite(path, data=data)
    result = reduce_night(raw, tmp_path / "out", PROFILE, progress=False, workers=1)
    assert len(result.problems) == 0
    flat = fits.getheader(tmp_path / "out" / "masters" / "flat_R_01.fits")
    assert flat["NLOWPIX"] == SHAPE[0]
    assert [n["file"] for n in result.notes] == ["masters/flat_R_01.fits"]
    assert f"{SHAPE[0]} pixel(s) below the minimum" in result.notes[0]["note"]
    clean = {row["raw_file"]: row["output_file"] for row in clean_night[1].science}
    for row in result.science:
        with fits.open(row["output_file"]) as hdul:
            data, bits = hdul[0].data, hdul["MASK"].data
            n_bad = hdul[0].header["NBADPIX"]
        mask = bits != 0
        # Bit 16 ("low flat") on the dead column; the hot pixels of the bad-pixel mask
        # (bit 2) are masked too.
        low = (bits & 16) != 0
        assert low[:, 10].all() and low.sum() == SHAPE[0]
        assert mask.sum() == row["n_masked"] and (mask & ~low).sum() <= n_bad
        assert set(np.unique(bits[~low])) <= {0, 2}
        assert np.isfinite(data).all()
        reference = fits.getdata(clean[row["raw_file"]])
        good = ~mask
        np.testing.assert_allclose(data[good], reference[good], rtol=0.01, atol=3)


# ------------------------------------------------------------------------ pixel level
def test_nan_pixels_are_masked_and_noted(raw, tmp_path):
    data = fits.getdata(raw / SCIENCE[0]).astype(np.float32)
    data[3, 4], data[7, 7], data[10, 2] = np.nan, np.inf, -np.inf
    rewrite(raw / SCIENCE[0], data=data, BZERO=None, BSCALE=None)
    result = reduce_night(raw, tmp_path / "out", PROFILE, progress=False, workers=1)
    assert len(result.problems) == 0
    assert [(n["file"], n["kind"]) for n in result.notes] == [
        (SCIENCE[0], "DataQualityWarning")]
    assert "3 pixel(s) of the raw frame were NaN or infinite" in result.notes[0]["note"]
    row = result.science[result.science["raw_file"] == SCIENCE[0]][0]
    with fits.open(row["output_file"]) as hdul:
        assert hdul[0].header["NNANPIX"] == 3
        assert np.isfinite(hdul[0].data).all()
        bits = hdul["MASK"].data
        assert hdul["MASK"].header["MASKB8"] == "not finite"
    # Bit 8 says "not finite"; the others masked are the bad-pixel mask's (bit 2).
    assert sorted(zip(*np.nonzero(bits & 8), strict=True)) == [(3, 4), (7, 7), (10, 2)]
    assert set(np.unique(bits)) <= {0, 2, 8, 2 | 8}
    assert np.isfinite(row["sky_level"])
    # The other frame has only the bad-pixel mask's pixels masked.
    other = result.science[result.science["raw_file"] == SCIENCE[1]][0]
    with fits.open(other["output_file"]) as hdul:
        assert other["n_masked"] == hdul[0].header["NBADPIX"]
        if other["n_masked"]:
            assert set(np.unique(hdul["MASK"].data)) == {0, 2}
        else:
            assert len(hdul) == 1


def test_saturated_pixels_are_masked(raw, tmp_path):
    data = fits.getdata(raw / SCIENCE[0]).copy()
    data[5, 5:9] = 65535  # the profile's saturation level
    rewrite(raw / SCIENCE[0], data=data)
    result = reduce_night(raw, tmp_path / "out", PROFILE, progress=False, workers=1)
    assert len(result.problems) == 0
    by_file = {row["raw_file"]: row for row in result.science}
    assert (by_file[SCIENCE[0]]["n_saturated"], by_file[SCIENCE[1]]["n_saturated"]) == (4, 0)
    with fits.open(by_file[SCIENCE[0]]["output_file"]) as hdul:
        assert hdul[0].header["NSATUR"] == 4
        bits = hdul["MASK"].data
    # Bit 1 says "saturated"; the others masked are the bad-pixel mask's (bit 2).
    assert (bits[5, 5:9] & 1).all() and np.count_nonzero(bits & 1) == 4
    assert set(np.unique(bits)) <= {0, 1, 2, 1 | 2}


def test_saturation_level_from_the_header(raw, tmp_path):
    # DATAMAX in the header wins over the profile's value.
    data = fits.getdata(raw / SCIENCE[0]).copy()
    data[2, 2] = 40000
    rewrite(raw / SCIENCE[0], data=data, DATAMAX=40000)
    result = reduce_night(raw, tmp_path / "out", PROFILE, progress=False, workers=1)
    row = result.science[result.science["raw_file"] == SCIENCE[0]][0]
    assert row["n_saturated"] == (fits.getdata(raw / SCIENCE[0]) >= 40000).sum() >= 1


# -------------------------------------------------------------------- header repairs
def test_decimal_comma_is_read_and_the_repair_said(raw, tmp_path):
    path = raw / SCIENCE[0]
    replace_bytes(path, card_bytes("EXPTIME", 60.0),
                  card_bytes("EXPTIME", 60.0).replace(b"60.0", b"60,0"))
    night = NightCollection(raw, profile=PROFILE)
    assert night.frames[night.frames["file"] == SCIENCE[0]]["exposure"][0] == 60.0
    result = reduce_night(raw, tmp_path / "out", PROFILE, progress=False, workers=1)
    assert len(result.problems) == 0 and len(result.science) == 2
    assert [(n["file"], n["kind"]) for n in result.notes] == [(SCIENCE[0], "HeaderNote")]
    assert result.notes[0]["note"] == ("EXPTIME = '60,0' is not valid FITS (a decimal "
                                       "comma): read as 60.0")
    row = result.science[result.science["raw_file"] == SCIENCE[0]][0]
    header = fits.getheader(row["output_file"])
    assert header["EXPTIME"] == 60.0
    assert "EXPTIME = '60,0' is not valid FITS" in str(header["HISTORY"])


def test_unparsable_card_is_kept_as_text(raw, tmp_path):
    path = raw / SCIENCE[0]
    replace_bytes(path, card_bytes("SET-TEMP", -10.0),
                  card_bytes("SET-TEMP", -10.0).replace(b"     -10.0", b"-10.0.0.0"
                                                        .rjust(10)))
    night = NightCollection(raw, profile=PROFILE)
    frame = night.frames[night.frames["file"] == SCIENCE[0]][0]
    # An optional value that cannot be read is a note, not a problem of the frame.
    assert frame["notes"] == ("SET-TEMP = '-10.0.0.0' is not valid FITS: kept as the text "
                              "'-10.0.0.0'; SET-TEMP = '-10.0.0.0' is not a number: set "
                              "temperature unknown")
    assert frame["problem"] == ""


# ------------------------------------------------------------------------- duplicates
def test_duplicates_are_found_by_content_not_name(raw):
    shutil.copy(raw / "bias_001.fits", raw / "zz_copy_of_bias.fits")
    night = NightCollection(raw, profile=PROFILE)
    frames = {row["file"]: row for row in night.frames}
    assert frames["zz_copy_of_bias.fits"]["problem_kind"] == "DuplicateFrameError"
    assert frames["zz_copy_of_bias.fits"]["problem"] == (
        "the same bytes as bias_001.fits: a duplicate file, only bias_001.fits is used")
    assert frames["bias_001.fits"]["problem"] == ""
    assert night.count_by_type()["bias"] == 3


def test_a_file_listed_twice_is_one_file(clean_night, tmp_path):
    files = sorted(str(p) for p in clean_night[0].iterdir())
    night = NightCollection(files + files[:3], profile=PROFILE)
    assert night.files == files
    assert set(night.frames["problem"]) == {""}


# ------------------------------------------------------------------------ output folder
@pytest.mark.parametrize("where, words", [
    (lambda raw: raw, "is the raw folder"),
    (lambda raw: raw / "reduced", "is inside the raw folder"),
    (lambda raw: raw / "sub" / "reduced", "is inside the raw folder"),
    (lambda raw: raw.parent, "contains the raw folder"),
])
def test_output_folder_in_or_around_the_raw_folder_is_refused(raw, where, words):
    before = checksums(raw.parent)
    with pytest.raises(OutputError, match=words):
        reduce_night(raw, where(raw), PROFILE, progress=False)
    with pytest.raises(OutputError, match=words):
        reduce_night(raw, where(raw), PROFILE, dry_run=True)
    assert checksums(raw.parent) == before


def test_raw_files_inside_the_output_folder_are_refused(raw, tmp_path):
    # A list of files: no raw file may lie inside the output folder.
    files = sorted(raw.glob("*.fits"))
    with pytest.raises(OutputError, match=r"raw file .*bias_001.fits is inside the output"):
        reduce_night(files, raw, PROFILE, progress=False)
    with pytest.raises(OutputError, match="is inside the output folder"):
        reduce_night(files, tmp_path, PROFILE, progress=False)


def test_output_folder_that_cannot_be_created(raw, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match="cannot be written"):
        reduce_night(raw, blocker / "out", PROFILE, progress=False)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root may write in a read-only folder")
def test_output_folder_that_is_not_writable(raw, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(OutputError, match=f"output folder {out}.* cannot be written"):
            reduce_night(raw, out, PROFILE, progress=False)
    finally:
        out.chmod(0o755)


@pytest.mark.parametrize("file, expected", [
    ("object_R_001.fits", "object_R_001.fits"),
    ("Light/m31_001.fit", "Light_m31_001.fits"),
    ("night/obs.fits.gz", "night_obs.fits"),
    ("/data/night1/m31.fits", "m31.fits"),            # an absolute path: its name only
    ("../elsewhere/m31.fits", "elsewhere_m31.fits"),  # no '..' in a name
    ("./m31.fits", "m31.fits"),
    (".hidden.fits", "hidden.fits"),                  # never a hidden (temporary) name
    ("M 31 (best).fits", "M_31__best_.fits"),
    ("Andromède.fits", "Androm_de.fits"),
    ("a\\b.fits", "a_b.fits"),
])
def test_output_names_come_from_raw_names_and_stay_in_their_folder(file, expected):
    assert _output_name(file, set()) == expected


def test_output_names_do_not_collide():
    used = set()
    names = [_output_name(f, used) for f in ("a.fits", "A.fits", "a.fit", "x/../a.fits")]
    assert names == ["a.fits", "A-2.fits", "a-3.fits", "x_a.fits"]


def test_outputs_from_absolute_paths_land_in_the_output_folder(clean_night, tmp_path):
    # Raw files given as absolute paths, with header values that look like paths: every
    # output lies in output_dir/masters or output_dir/science.
    raw = Path(shutil.copytree(clean_night[0], tmp_path / "raw"))
    for name in SCIENCE:
        rewrite(raw / name, OBJECT="../../../etc/evil", FILTER="R")
    out = tmp_path / "out"
    result = reduce_night(sorted(str(p) for p in raw.iterdir()), out, PROFILE,
                          progress=False, workers=1)
    assert sorted(Path(f).name for f in result.science["output_file"]) == list(SCIENCE)
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
               if p.is_file() and not p.is_relative_to(raw)
               and not p.is_relative_to(out / "report")}  # the report's pictures
    assert written == {"out/plan.ecsv", "out/masters.ecsv", "out/science.ecsv",
                       "out/problems.ecsv", "out/notes.ecsv", "out/report.html",
                       *(f"out/science/{n}" for n in SCIENCE),
                       *(f"out/masters/{p.name}" for p in result.masters.values())}


# ------------------------------------------------------------------ the raw data is safe
@pytest.fixture
def read_only_copy(tmp_path):
    """Make a folder tree read-only (files 0444, folders 0555); restored afterwards."""
    made = []

    def make(folder):
        for path in [*sorted(Path(folder).rglob("*"), reverse=True), Path(folder)]:
            made.append((path, stat.S_IMODE(path.stat().st_mode)))
            path.chmod(0o555 if path.is_dir() else 0o444)
        return folder

    yield make
    for path, mode in reversed(made):
        path.chmod(mode)


@pytest.fixture
def write_spy(monkeypatch):
    """Record every open of a file for writing (builtins.open and os.open)."""
    opened = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file, mode="r", *args, **kwargs):
        opened.append((str(file), mode))
        return real_open(file, mode, *args, **kwargs)

    def spy_os_open(path, flags, *args, **kwargs):
        writing = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
        opened.append((str(path), "w" if writing else "r"))
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    return opened


def _writes_under(opened, folder):
    folder = str(folder)
    return [(f, m) for f, m in opened if f.startswith(folder)
            and any(c in m for c in "wax+")]


def test_raw_files_are_only_opened_read_only(raw, tmp_path, read_only_copy, write_spy):
    before = checksums(raw)
    read_only_copy(raw)
    result = reduce_night(raw, tmp_path / "out", PROFILE, progress=False, workers=1)
    assert len(result.science) == 2 and len(result.problems) == 0
    assert any(f.startswith(str(raw)) for f, _ in write_spy), "the spy saw no raw file"
    assert _writes_under(write_spy, raw) == []
    assert _writes_under(write_spy, tmp_path / "out") != []
    assert checksums(raw) == before


def test_real_zwo_night_from_a_read_only_copy(real_data, tmp_path, read_only_copy,
                                              write_spy):
    """The real ASI178 night: every truncated file named, masters from the good frames,
    the raw files byte for byte unchanged."""
    raw = Path(shutil.copytree(real_data / "zwo-asi178", tmp_path / "zwo"))
    before = checksums(raw)
    read_only_copy(raw)
    write_spy.clear()  # the copy was written; from here on, nothing under raw may be
    result = reduce_night(raw, tmp_path / "out", "zwo-asiimg", scale_darks=True,
                          progress=False, workers=1)
    truncated = sorted([f"Dark/Dark_1s/Dark_ASIImg_1sec_frame000{i}.fit" for i in (1, 2, 3)]
                       + [f"Flat/Flat_ASIImg_frame{i:04d}.fit"
                          for i in (1, 2, 3, 5, 6, 7, 8, 9, 10)])
    assert sorted(result.problems["file"]) == truncated
    assert set(result.problems["kind"]) == {"FrameReadError"}
    assert all(p.startswith("truncated: the data unit needs 2457600 bytes")
               for p in result.problems["problem"])
    masters = {name: fits.getheader(path) for (_, name), path in result.masters.items()}
    assert {name: h["NCOMBINE"] for name, h in masters.items()} == {
        "bias_01": 5, "dark_1s_01": 2, "dark_10s_01": 5, "flat_nofilter_01": 1}
    assert [masters["dark_1s_01"][f"IMCMB00{i}"] for i in (1, 2)] == [
        "Dark_ASIImg_1sec_frame0004.fit", "Dark_ASIImg_1sec_frame0005.fit"]
    # The biases' decimal commas were read and said; the single flat is noted.
    notes = {n["file"]: n for n in result.notes}
    assert all("EXPTIME = '3,2E-05' is not valid FITS (a decimal comma): read as 3.2e-05"
               in notes[f"Bias/Bias_ASIImg_frame000{i}.fit"]["note"] for i in range(1, 6))
    assert "made from a single frame" in notes["masters/flat_nofilter_01.fits"]["note"]
    assert masters["bias_01"]["EXPTIME"] == pytest.approx(3.2e-05)
    # No pixel of a master is NaN where it is not masked (a master without a MASK
    # extension has no masked pixel).
    for path in result.masters.values():
        with fits.open(path) as hdul:
            good = ~hdul["MASK"].data.astype(bool) if "MASK" in hdul else \
                np.ones(hdul[0].data.shape, bool)
            assert np.isfinite(hdul[0].data[good]).all()
    assert _writes_under(write_spy, raw) == []
    assert checksums(raw) == before
    with pytest.raises(FrameReadError, match=r"Dark_ASIImg_1sec_frame0001\.fit: truncated"):
        reduce_night(raw, tmp_path / "strict", "zwo-asiimg", strict=True, progress=False)


def test_package_errors_and_warnings_are_importable():
    for name in ("CcdprocExtError", "FrameReadError", "HeaderError", "CalibrationMatchError",
                 "DuplicateFrameError", "DataQualityError", "OutputError", "ProfileError"):
        assert issubclass(getattr(ccdproc_ext, name), ccdproc_ext.CcdprocExtError)
    for name in ("DataQualityWarning", "FrameSkippedWarning"):
        assert issubclass(getattr(ccdproc_ext, name), ccdproc_ext.CcdprocExtWarning)
    # Each is also the standard exception a user may already catch.
    assert issubclass(FrameReadError, OSError) and issubclass(OutputError, OSError)
    assert issubclass(HeaderError, ValueError) and issubclass(DataQualityError, ValueError)
    assert issubclass(CalibrationMatchError, LookupError)


# ------------------------------------------------- characters FITS does not allow
def with_character(path, key, value, character):
    """Write ``key = value`` in ``path``, then put ``character`` (bytes) where ``value``
    has its ``#``: in the file's bytes, since astropy refuses to write such a card."""
    rewrite(path, **{key: value})
    image = fits.Card(key, value).image.encode().rstrip()
    replace_bytes(path, image, image.replace(b"#", character))
    return path


@pytest.mark.parametrize("file, key, value, character, escape, read_as", [
    ("object_R_001.fits", "OBJECT", "M31#field", b"\x00", r"\x00", "M31 field"),
    ("object_R_001.fits", "FILTER", "R#", b"\x01", r"\x01", "R"),
    ("bias_002.fits", "IMAGETYP", "BIAS FRAME#", b"\n", r"\n", "BIAS FRAME"),
    ("object_R_002.fits", "DATE-OBS", "2024-03-05T02:00:00#", b"\r", r"\r",
     "2024-03-05T02:00:00"),
    ("object_R_002.fits", "OBSERVER", "A. Observer#", b"\x7f", r"\x7f", "A. Observer"),
])
def test_control_character_in_a_header_string(raw, tmp_path, file, key, value, character,
                                              escape, read_as):
    """The frame is read and used, the character replaced by a space in what is written,
    and a note names the file and the keyword (astropy raised on the card: the whole
    night stopped)."""
    with_character(raw / file, key, value, character)
    result = reduce_night(raw, tmp_path / "out", PROFILE, progress=False, workers=1)
    assert len(result.problems) == 0, result.summary()
    assert sorted(result.science["raw_file"]) == list(SCIENCE)
    assert [tuple(n) for n in result.notes] == [
        (file, "HeaderNote", f"{key} held characters FITS does not allow ({escape}): "
                             f"read as '{read_as}'")]
    if file in SCIENCE:
        row = result.science[result.science["raw_file"] == file][0]
        header = fits.getheader(row["output_file"])
        assert header[key] == read_as
        assert f"{key} held characters FITS does not allow" in str(header["HISTORY"])
    else:
        master = fits.getheader(tmp_path / "out" / "masters" / "bias_01.fits")
        assert master["NCOMBINE"] == 3


def test_control_character_from_the_command_line(raw, tmp_path, capsys):
    with_character(raw / SCIENCE[0], "OBJECT", "M31#field", b"\x00")
    assert main(["plan", str(raw), "--profile", PROFILE]) == 0
    captured = capsys.readouterr()
    assert "0 with problems" in captured.out and "error" not in captured.err
    assert main(["reduce", str(raw), str(tmp_path / "out"), "--profile", PROFILE,
                 "--workers", "1", "-v"]) == 0
    captured = capsys.readouterr()
    assert r"OBJECT held characters FITS does not allow (\x00)" in captured.out
    assert "science frames: 2 written" in captured.out
    assert "Traceback" not in captured.err and "internal error" not in captured.err


def test_control_character_in_a_long_string(raw):
    """A string long enough for CONTINUE cards, a control character in its second."""
    path = raw / SCIENCE[0]
    text = "the field of M31, " * 5 + "#end"
    rewrite(path, OBJECT=text)
    content = path.read_bytes()
    assert content.count(b"#end") == 1
    assert content.index(b"#end") > content.index(b"CONTINUE")
    path.write_bytes(content.replace(b"#end", b"\x01end"))
    header, problem, notes = ccdproc_ext.raw.inspect_frame(path)
    assert problem is None
    assert header["OBJECT"] == "the field of M31, " * 5 + " end"
    assert notes == [r"OBJECT held characters FITS does not allow (\x01): read as "
                     f"'{header['OBJECT']}'"]


def test_control_character_in_a_commentary_card(raw):
    path = raw / SCIENCE[0]
    with fits.open(path) as hdul:
        header = hdul[0].header.copy()
        data = hdul[0].data.copy()
    header["HISTORY"] = "taken by #"
    fits.PrimaryHDU(data, header=header).writeto(path, overwrite=True)
    image = fits.Card("HISTORY", "taken by #").image.encode().rstrip()
    replace_bytes(path, image, image.replace(b"#", b"\x00"))
    header, problem, notes = ccdproc_ext.raw.inspect_frame(path)
    assert problem is None
    assert notes == [r"HISTORY held characters FITS does not allow (\x00): read as "
                     "'taken by'"]
    assert header["HISTORY"][-1] == "taken by"


# ------------------------------------------------------------- file names outside ASCII
@pytest.mark.parametrize("name, value", [
    ("object_R_001.fits", "object_R_001.fits"),      # printable ASCII: as it is
    ("objét.fits", "obj%C3%A9t.fits"),               # UTF-8 bytes, percent-encoded
    ("50%_flat.fits", "50%25_flat.fits"),            # the percent sign itself
    ("M 31 (best).fits", "M 31 (best).fits"),
    ("Hα\nline.fits", "H%CE%B1%0Aline.fits"),
])
def test_file_names_are_written_as_printable_ascii_that_reads_back(name, value):
    from ccdproc_ext.provenance import file_name_of, file_name_value

    assert file_name_value(name) == value
    assert file_name_of(value) == name
    header = fits.Header()
    header["RAWFILE"] = value  # astropy accepts it: printable ASCII
    assert file_name_of(header["RAWFILE"]) == name


def test_non_ascii_file_names_in_a_night(raw, tmp_path):
    """Frames named outside ASCII are combined, calibrated and left out by name: the
    names are written percent-encoded and read back (astropy refused the names: every
    frame depending on the bias failed)."""
    (raw / "bias_002.fits").rename(raw / "bias_é.fits")
    rewrite(raw / "bias_003.fits", data=np.full(SHAPE, np.nan, dtype=np.float32))
    (raw / "bias_003.fits").rename(raw / "bias_ü%.fits")
    (raw / SCIENCE[1]).rename(raw / "objét.fits")
    out = tmp_path / "nuit_étoilée"
    result = reduce_night(raw, out, PROFILE, progress=False, workers=1)
    assert [tuple(p) for p in result.problems] == [
        ("bias_ü%.fits", "DataQualityError",
         "left out of master bias_01: no pixel is finite (all NaN or infinite)")]
    master = fits.getheader(out / "masters" / "bias_01.fits")
    assert (master["IMCMB001"], master["IMCMB002"]) == ("bias_001.fits", "bias_%C3%A9.fits")
    assert master.comments["IMCMB002"] == "encoded; reads bias_e.fits"
    assert master["SKIP001"] == "bias_%C3%BC%25.fits"
    by_raw = {row["raw_file"]: row for row in result.science}
    assert sorted(by_raw) == [SCIENCE[0], "objét.fits"]
    header = fits.getheader(by_raw["objét.fits"]["output_file"])
    assert header["RAWFILE"] == "obj%C3%A9t.fits"
    assert header.comments["RAWFILE"] == "encoded; reads objet.fits"
    # The report is written and finds the raw frame by its name (its picture before
    # calibration).
    assert len(result.notes) == 0
    report = (out / "report.html").read_text(encoding="utf-8")
    assert 'alt="objét.fits raw"' in report
    # A re-run finds the frame left out by the name in the master's header.
    again = reduce_night(raw, out, PROFILE, progress=False, workers=1)
    assert set(again.science["status"]) == {"up to date"}
    assert [tuple(p) for p in again.problems] == [tuple(p) for p in result.problems]


def test_non_ascii_names_with_a_library(raw, tmp_path):
    """A night reduced into a library from a folder named outside ASCII; a night of
    science frames alone then finds its masters there."""
    (raw / "bias_002.fits").rename(raw / "bias_é.fits")
    science = tmp_path / "sciénce"
    science.mkdir()
    for name in SCIENCE:
        (raw / name).rename(science / name.replace("object", "objét"))
    library = tmp_path / "bibliothèque" / "calibrations.db"
    first = reduce_night(raw, tmp_path / "réduit", PROFILE, library=library,
                         progress=False, workers=1)
    assert len(first.problems) == 0
    assert ccdproc_ext.CalibrationLibrary(library).verify() == []
    result = reduce_night(science, tmp_path / "réduit-2", PROFILE, library=library,
                          progress=False, workers=1)
    assert len(result.problems) == 0, result.summary()
    assert sorted(result.science["raw_file"]) == ["objét_R_001.fits", "objét_R_002.fits"]
    assert set(result.plan.meta["masters"]["origin"]) == {"library"}


def test_non_ascii_file_name_from_the_command_line(raw, tmp_path, capsys):
    (raw / "bias_002.fits").rename(raw / "bias_é.fits")
    (raw / SCIENCE[1]).rename(raw / "objét.fits")
    assert main(["reduce", str(raw), str(tmp_path / "out"), "--profile", PROFILE,
                 "--quiet", "--workers", "1"]) == 0
    captured = capsys.readouterr()
    assert "science frames: 2 written" in captured.out
    assert "problem" not in captured.out and captured.err == ""


# ----------------------------------------------------- outputs that are not numbers
def test_absurd_exposure_time_is_a_problem_not_a_frame_of_infinities(raw, tmp_path):
    """EXPTIME = 1e300 would scale the 60 s dark by 1.7e298: every pixel infinite, and
    the frame was called written."""
    rewrite(raw / SCIENCE[0], EXPTIME=1e300)
    result = reduce_night(raw, tmp_path / "out", PROFILE, scale_darks=True,
                          progress=False, workers=1)
    assert [(p["file"], p["kind"]) for p in result.problems] == [
        (SCIENCE[0], "CalibrationMatchError")]
    assert result.problems["problem"][0] == (
        "dark scale beyond what a night can hold: 1.67e+298 (1e+300 s / 60 s), while an "
        "exposure is above 0 and at most a day (86400 s); the closest dark is 60 s")
    assert list(result.science["raw_file"]) == [SCIENCE[1]]
    assert not (tmp_path / "out" / "science" / SCIENCE[0]).exists()
    with pytest.raises(CalibrationMatchError, match="beyond what a night can hold"):
        reduce_night(raw, tmp_path / "strict", PROFILE, scale_darks=True, strict=True,
                     progress=False, workers=1)


def test_absurd_exposure_time_from_the_command_line(raw, tmp_path, capsys):
    for name in SCIENCE:
        rewrite(raw / name, EXPTIME=1e300)
    status = main(["reduce", str(raw), str(tmp_path / "out"), "--profile", PROFILE,
                   "--scale-darks", "--quiet", "--workers", "1"])
    captured = capsys.readouterr()
    assert status == 1
    assert "dark scale beyond what a night can hold (2 files" in captured.out
    assert "none of the 2 science frames could be reduced" in captured.err


def _frame(value, **cards):
    return CCDData(np.full((10, 12), value, dtype=np.float32), unit="adu",
                   meta=fits.Header(cards))


def test_large_finite_pixels_are_not_taken_for_infinities():
    """Pixels near float32's largest value: their sum overflows, they are finite."""
    calibrated = ccdproc_ext.calibrate_frame(_frame(3e37, EXPTIME=60.0), "generic")
    assert np.isfinite(calibrated.data).all()
    assert calibrated.mask is None or not np.asarray(calibrated.mask).any()


def test_calibrated_frame_that_is_not_finite_is_refused():
    """A dark whose exposure is 1e-300 s scales by 6e301 in float32: infinities. The
    bound on the exposure cannot see it; the check of the output does."""
    raw = _frame(1000.0, EXPTIME=60.0)
    dark = _frame(5.0, EXPTIME=1e-300)
    with pytest.raises(DataQualityError, match=r"frame: 120 of the 120 calibrated pixels "
                                               r"are not finite \(more than 1%\)"):
        ccdproc_ext.calibrate_frame(raw, "generic", master_dark=dark, scale_dark=True)
    with pytest.raises(DataQualityError, match="beyond what a night can hold"):
        ccdproc_ext.calibrate_frame(_frame(1000.0, EXPTIME=1e300), "generic",
                                    master_dark=_frame(5.0, EXPTIME=60.0), scale_dark=True)


def test_a_few_pixels_not_finite_after_calibration_are_masked():
    """One pixel of a master dark infinite (a master made elsewhere): that pixel of the
    frame is masked, the frame kept (1 of 120 is within 1%)."""
    dark = _frame(5.0, EXPTIME=60.0)
    dark.data[3, 4] = np.inf
    calibrated = ccdproc_ext.calibrate_frame(_frame(1000.0, EXPTIME=60.0), "generic",
                                             master_dark=dark)
    assert np.count_nonzero(~np.isfinite(calibrated.data)) == 1
    assert calibrated.mask is not None
    assert np.argwhere(calibrated.mask).tolist() == [[3, 4]]
    assert calibrated.data[0, 0] == 995.0


# ------------------------------------------------- library masters that fail verification
def _truncate_master(path):
    path.write_bytes(path.read_bytes()[:5000])


def _tamper_master(path):
    with fits.open(path, mode="update") as hdul:
        hdul[0].data[0, 0] += 1


@pytest.mark.parametrize("kind, name, spoil, words", [
    ("bias", "bias_01", _truncate_master, "changed since it was registered"),
    ("dark", "dark_60s_01", Path.unlink, "file missing"),
    ("flat", "flat_R_01", _tamper_master, "changed since it was registered"),
])
def test_library_master_that_fails_verification(raw, tmp_path, capsys, kind, name, spoil,
                                                words):
    """The night of science frames alone needs the library's master: one that cannot be
    verified is a calibration missing, never a step left out (the frames were written
    without it)."""
    science = tmp_path / "science"
    science.mkdir()
    for file in SCIENCE:
        (raw / file).rename(science / file)
    library = tmp_path / "calibrations.db"
    reduce_night(raw, tmp_path / "calibrations", PROFILE, library=library, progress=False,
                 workers=1)
    spoil(tmp_path / "calibrations" / "masters" / f"{name}.fits")
    result = reduce_night(science, tmp_path / "out", PROFILE, library=library,
                          progress=False, workers=1)
    assert len(result.science) == 0
    problems = {Path(str(p["file"])).name: p for p in result.problems}
    assert sorted(problems) == sorted([f"{name}.fits", *SCIENCE])
    assert problems[f"{name}.fits"]["problem"].startswith(
        f"library master {name} not used: {words}")
    for file in SCIENCE:
        assert problems[file]["kind"] == "CalibrationMatchError"
        assert problems[file]["problem"].startswith(
            f"library master {name}@2024-03-05 cannot be used: {words}")
        assert problems[file]["problem"].endswith(
            f"no other {kind} of the library fits the frame")
    assert not any("not " + {"bias": "bias-subtracted", "dark": "dark-subtracted",
                             "flat": "flat-fielded"}[kind] in note
                   for note in result.plan.meta["notes"])
    assert not list((tmp_path / "out" / "science").glob("*.fits"))
    with pytest.raises(CalibrationMatchError, match=f"library master {name}"):
        reduce_night(science, tmp_path / "strict", PROFILE, library=library, strict=True,
                     progress=False, workers=1)
    status = main(["reduce", str(science), str(tmp_path / "cli"), "--profile", PROFILE,
                   "--library", str(library), "--quiet", "--workers", "1"])
    captured = capsys.readouterr()
    assert status == 1
    assert f"library master {name}@2024-03-05 cannot be used" in captured.out
    assert "none of the 2 science frames could be reduced" in captured.err


# ------------------------------------------------------------- outputs and edited plans
def test_output_that_cannot_be_replaced(raw, tmp_path, monkeypatch, capsys):
    """An existing output that cannot be replaced (immutable: even root gets EPERM) with
    overwrite: a problem naming the file, and the command exits 1, since the file left
    there is the older one (it was an InternalError, and exit 0)."""
    out = tmp_path / "out"
    reduce_night(raw, out, PROFILE, progress=False, workers=1)
    target = out / "science" / SCIENCE[0]
    before = target.read_bytes()
    replace = os.replace

    def refuse(source, destination, *args, **kwargs):
        if Path(destination) == target:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return replace(source, destination, *args, **kwargs)

    monkeypatch.setattr(os, "replace", refuse)
    result = reduce_night(raw, out, PROFILE, overwrite=True, progress=False, workers=1)
    assert [tuple(p) for p in result.problems] == [
        (SCIENCE[0], "OutputError",
         f"science/{SCIENCE[0]} cannot be written: Operation not permitted")]
    assert list(result.science["raw_file"]) == [SCIENCE[1]]
    assert target.read_bytes() == before
    # No temporary file is left beside the outputs.
    assert sorted(p.name for p in (out / "science").iterdir()) == list(SCIENCE)
    with pytest.raises(OutputError, match=f"{SCIENCE[0]} cannot be written"):
        reduce_night(raw, out, PROFILE, overwrite=True, strict=True, progress=False,
                     workers=1)
    status = main(["reduce", str(raw), str(out), "--profile", PROFILE, "--overwrite",
                   "--quiet", "--workers", "1"])
    captured = capsys.readouterr()
    assert status == 1
    assert f"science/{SCIENCE[0]} cannot be written: Operation not permitted" in \
        captured.out
    assert captured.err == ("ccdproc-ext: error: 1 output(s) could not be written: "
                            f"{SCIENCE[0]}\n")


@pytest.fixture
def plan_file(raw, tmp_path):
    """The night's plan, written to edit; returns its path and its number of columns."""
    from ccdproc_ext.plans import write_plan

    plan = reduce_night(raw, tmp_path / "dry", PROFILE, dry_run=True).plan
    path = tmp_path / "plan.ecsv"
    write_plan(plan, path)
    return path, len(plan.colnames)


@pytest.mark.parametrize("change, n_values", [
    (lambda values: values[:-3], -3),               # three values fewer
    (lambda values: [*values, "1.0", "extra"], 2),  # two more
])
def test_ragged_plan_is_one_line_naming_the_row(raw, tmp_path, plan_file, capsys, change,
                                                n_values):
    """A row of an edited plan with more or fewer values than columns: one line naming
    the row, its file and its line (astropy's words were several lines of every value)."""
    path, n_columns = plan_file
    lines = path.read_text().splitlines()
    number = next(i for i, line in enumerate(lines) if line.startswith("bias_002.fits "))
    lines[number] = " ".join(change(lines[number].split(" ")))
    path.write_text("\n".join(lines) + "\n")
    words = (f"{path}: cannot be read as a plan: row 2 (bias_002.fits), line {number + 1}: "
             f"{n_columns + n_values} values for the {n_columns} columns of the plan")
    with pytest.raises(CalibrationMatchError) as caught:
        reduce_night(raw, tmp_path / "out", PROFILE, plan=path, progress=False)
    assert str(caught.value) == words
    assert main(["reduce", str(raw), str(tmp_path / "out"), "--profile", PROFILE,
                 "--plan", str(path), "--quiet"]) == 1
    assert capsys.readouterr().err == f"ccdproc-ext: error: {words}\n"


def test_plan_without_rows_is_refused(raw, tmp_path, plan_file, capsys):
    """A plan whose rows were all removed reduces nothing: an error, not exit 0."""
    path, _ = plan_file
    lines = path.read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    path.write_text("\n".join(lines[:header + 1]) + "\n")
    with pytest.raises(CalibrationMatchError, match="the plan has no row: nothing to reduce"):
        reduce_night(raw, tmp_path / "out", PROFILE, plan=path, progress=False)
    assert main(["reduce", str(raw), str(tmp_path / "out"), "--profile", PROFILE,
                 "--plan", str(path), "--quiet"]) == 1
    assert capsys.readouterr().err == (f"ccdproc-ext: error: {path}: the plan has no row: "
                                       "nothing to reduce (a plan lists the frames to "
                                       "reduce, one per row)\n")
    assert not (tmp_path / "out").exists()


def test_the_dark_scale_bound_refuses_no_real_frame(real_data):
    """The bound's premise on real headers (six cameras): every exposure of a dark, flat
    or science frame lies within a day, so no real frame is refused, with any dark of its
    camera."""
    import csv

    from ccdproc_ext.calibrate import dark_scale_problem

    root = real_data.parent / "headers"
    if not (root / "labels.csv").is_file():
        pytest.skip("no real headers beside the real frames")
    profile = ccdproc_ext.get_profile("generic")
    exposures = {}
    with open(root / "labels.csv", newline="") as stream:
        for row in csv.DictReader(stream):
            if row["expected_type"] == "bias":
                continue
            text = (root / row["instrument_slug"] / row["file"]).read_text()
            header = fits.Header.fromstring(text.split("--- HDU")[0], sep="\n")
            try:
                exposure = profile.exposure_time(header, path=row["file"])
            except HeaderError:  # one camera writes no exposure time at all
                continue
            exposures.setdefault(row["instrument_slug"], []).append(
                (row["expected_type"], exposure))
    assert sum(map(len, exposures.values())) >= 100
    for frames in exposures.values():
        assert all(0 < exposure <= 86400 for _, exposure in frames)
        darks = {exposure for kind, exposure in frames if kind == "dark"}
        for _, exposure in frames:
            for dark in darks:
                assert dark_scale_problem(exposure, dark) is None, (exposure, dark)
