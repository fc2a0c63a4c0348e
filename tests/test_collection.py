"""Tests of `ccdproc_ext.NightCollection`: classification, header values, bad files, and
the `ccdproc.ImageFileCollection` behaviour it inherits.

Synthetic frames are tiny (16 x 20 pixels) and written either by `simulate_night` or by
hand with astropy where a header has to be exactly so (a string ``EXPTIME``, a card with
a decimal comma, no image-type keyword). Expected values come from the rules of the
profile, not from the code's output.
"""

import functools
import gc
import gzip
import logging
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from ccdproc import ImageFileCollection

from ccdproc_ext import CcdprocExtError, FrameReadError, NightCollection, get_profile
from ccdproc_ext.raw import inspect_frame, read_header
from ccdproc_ext.simulate import simulate_night

SHAPE = (16, 20)
START = "2024-03-05T01:00:00"


def write_frame(path, cards=None, *, shape=SHAPE, decimal_comma=None):
    """Write a small uint16 FITS frame with exactly ``cards`` in its header.

    ``decimal_comma`` names a keyword whose float value is rewritten in the file with a
    decimal comma (``3,2E-05``), a card astropy refuses to parse, as ASIImg writes it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = fits.Header()
    for key, value in (cards or {}).items():
        if value is not None:
            header[key] = value
    fits.PrimaryHDU(np.zeros(shape, dtype=np.uint16), header=header).writeto(path)
    if decimal_comma is not None:
        raw = path.read_bytes()
        card = fits.Card(decimal_comma, header[decimal_comma]).image.encode()
        fixed = card.replace(b".", b",")
        assert raw.count(card) == 1 and len(fixed) == len(card)
        path.write_bytes(raw.replace(card, fixed))
    return path


def frame_cards(image_type="BIAS", exposure=0.0, **extra):
    """Header cards of a generic frame; a value of None leaves the card out."""
    cards = {"IMAGETYP": image_type, "EXPTIME": exposure, "DATE-OBS": START,
             "SET-TEMP": -10.0}
    cards.update(extra)
    return cards


def row(collection, file):
    """The row of ``collection.frames`` of one file."""
    rows = collection.frames[collection.frames["file"] == file]
    assert len(rows) == 1, f"{file} is not (once) in the frames table"
    return rows[0]


@pytest.fixture(scope="module")
def small_night(tmp_path_factory):
    """A generic night: 2 biases, 2 darks of 30 s, 2 R flats, 1 R science frame."""
    folder = tmp_path_factory.mktemp("small_night")
    night = simulate_night(folder, "generic", shape=SHAPE, n_bias=2, dark_exposures=(30.0,),
                           n_dark=2, filters=("R",), flat_exposure=30.0, n_flat=2,
                           n_science=1, science_exposure=30.0, n_stars=2)
    return night


# ------------------------------------------------------------------------ classification
@pytest.mark.parametrize("profile, word, expected", [
    ("generic", "BIAS", "bias"),
    ("generic", "  zero  ", "bias"),          # surrounding blanks are ignored
    ("generic", "Bias Frame", "bias"),
    ("generic", "dark frame", "dark"),
    ("generic", "FLATFIELD", "flat"),
    ("generic", "Dome  Flat", "flat"),        # inner blanks count as one
    ("generic", "Light Frame", "science"),
    ("generic", "object", "science"),
    ("maxim-ccdsoft", "Bias Frame", "bias"),
    ("maxim-ccdsoft", "DARK FRAME", "dark"),
    ("maxim-ccdsoft", "Flat Field", "flat"),
    ("maxim-ccdsoft", "Light Frame", "science"),
])
def test_type_from_image_type_word(tmp_path, profile, word, expected):
    # A dark of 0 s is a bias: the other types are given a time of their own.
    exposure = 0.0 if expected == "bias" else 10.0
    write_frame(tmp_path / "frame.fits", frame_cards(word, exposure=exposure))
    night = NightCollection(tmp_path, profile=profile)
    frame = row(night, "frame.fits")
    assert frame["type"] == expected
    assert frame["type_rule"].startswith("IMAGETYP")
    assert frame["problem"] == ""
    assert night.count_by_type()[expected] == 1


@pytest.mark.parametrize("name, word, expected_type, expected_rule, problem", [
    # No image-type keyword: the generic profile's file patterns decide.
    ("dark_001.fits", None, "dark", "file name", ""),
    ("zero_1.fits", None, "bias", "file name", ""),
    # A word the profile does not know: the file name decides.
    ("flat_V.fits", "focus", "flat", "file name", ""),
    # A calibration word in the name beats a keyword that says light (a capture
    # program's default word); a calibration word of the keyword wins.
    ("bias_1.fits", "Light Frame", "bias", "file name", ""),
    ("bias_2.fits", "Dark Frame", "dark", "IMAGETYP = Dark Frame", ""),
    # Neither: a problem in words, not a guess.
    ("image_7.fits", None, "", "", "no image-type keyword and no file pattern matches"),
    ("image_8.fits", "focus", "", "", "unknown frame type (IMAGETYP = 'focus'"),
])
def test_type_falls_back_to_file_patterns(tmp_path, name, word, expected_type,
                                          expected_rule, problem):
    # A dark of 0 s is a bias: the other types are given a time of their own.
    exposure = 0.0 if expected_type in ("bias", "") else 10.0
    write_frame(tmp_path / name, frame_cards(word, exposure=exposure))
    night = NightCollection(tmp_path, profile="generic")
    frame = row(night, name)
    assert frame["type"] == expected_type
    assert frame["type_rule"] == expected_rule
    if problem:
        assert problem in frame["problem"]
        assert night.count_by_type() == {"bias": 0, "dark": 0, "flat": 0, "science": 0}
    else:
        assert frame["problem"] == ""


@pytest.mark.parametrize("profile, names, expected", [
    # TIRCAM2 writes no IMAGETYP: bias*, dark*, flat* by name, anything else is science.
    ("dot-tircam2", ("bias_1.fits", "dark_2.fits", "flats01.fits", "IC310_1.fits"),
     ("bias", "dark", "flat", "science")),
    # ASIImg: the folder names the type.
    ("zwo-asiimg", ("Bias/a.fit", "Dark/Dark_10s/b.fit", "Flat/c.fit", "Light/m31.fit"),
     ("bias", "dark", "flat", "science")),
])
def test_camera_without_image_type_keyword(tmp_path, profile, names, expected):
    for i, name in enumerate(names):  # FRAMENO: files with the same bytes are duplicates
        write_frame(tmp_path / name, frame_cards(None, exposure=1.0, FRAMENO=i))
    night = NightCollection(tmp_path, profile=profile)
    for name, image_type in zip(names, expected, strict=True):
        frame = row(night, name)
        assert (frame["type"], frame["type_rule"], frame["problem"]) == \
            (image_type, "file name", "")


def test_simulated_camera_without_image_type_keyword(tmp_path):
    simulate_night(tmp_path, "dot-tircam2", shape=SHAPE, n_bias=2, dark_exposures=(40.0,),
                   n_dark=2, filters=("J",), flat_exposure=6.0, n_flat=3, n_science=2,
                   science_exposure=40.0, n_stars=1)
    assert not any("IMAGETYP" in fits.getheader(p) for p in tmp_path.iterdir())
    night = NightCollection(tmp_path, profile="dot-tircam2")
    assert night.count_by_type() == {"bias": 2, "dark": 2, "flat": 3, "science": 2}
    assert set(night.frames["type_rule"]) == {"file name"}


def test_image_type_overrides(tmp_path):
    # Real nights have flats labelled 'Light Frame'; only their names say what they are.
    for i, name in enumerate(("flat-001.fits", "flat-002.fits", "m31.fits",
                              "sub/ngc7000.fits")):
        write_frame(tmp_path / name, frame_cards("Light Frame", exposure=10.0, FRAMENO=i))
    write_frame(tmp_path / "bias.fits", frame_cards("Bias Frame"))

    # Without overrides the names flat-* (the profile's pattern) beat 'Light Frame'.
    plain = NightCollection(tmp_path, profile="maxim-ccdsoft")
    assert plain.count_by_type() == {"bias": 1, "dark": 0, "flat": 2, "science": 2}

    night = NightCollection(tmp_path, profile="maxim-ccdsoft",
                            image_types={"flat-*": "flat", "sub/ngc7000.fits": "dark"})
    assert night.count_by_type() == {"bias": 1, "dark": 1, "flat": 2, "science": 1}
    for name, image_type in (("flat-001.fits", "flat"), ("flat-002.fits", "flat"),
                             ("sub/ngc7000.fits", "dark")):
        assert (row(night, name)["type"], row(night, name)["type_rule"]) == \
            (image_type, "override")
    assert row(night, "m31.fits")["type"] == "science"


def test_image_type_override_must_name_a_type(tmp_path):
    write_frame(tmp_path / "flat-001.fits", frame_cards("Light Frame"))
    with pytest.raises(ValueError, match=r"image_types\['flat-\*'\] = 'flats'.*bias, dark, "
                                         r"flat, science"):
        NightCollection(tmp_path, profile="maxim-ccdsoft", image_types={"flat-*": "flats"})


# ----------------------------------------------------------------- values from headers
@pytest.mark.parametrize("cards, column, expected", [
    ({"EXPTIME": "40      "}, "exposure", 40.0),            # written as a string
    ({"EXPTIME": 12}, "exposure", 12.0),
    ({"EXPTIME": None, "EXPOSURE": 7.5}, "exposure", 7.5),  # second keyword of the list
    ({"EXPTIME": None, "ITIME": "3"}, "exposure", 3.0),
    ({"FILTER": " R "}, "filter", "R"),
    ({"FILTNAME": "Halpha"}, "filter", "Halpha"),
    ({"CCDSUM": "2 2"}, "xbin", 2),
    ({"CCDSUM": "1 2"}, "ybin", 2),
    ({"XBINNING": 3, "YBINNING": 3}, "xbin", 3),
    ({"BINNING": "2x2"}, "ybin", 2),
    ({}, "xbin", 1),                                         # no binning card: 1x1
    ({"SET-TEMP": None, "CCD-TEMP": -4.8}, "temperature", -4.8),
    ({"SET-TEMP": "-15"}, "temperature", -15.0),
    ({"DATE-OBS": "2024-03-05T01:02:03"}, "date_obs", "2024-03-05T01:02:03.000"),
])
def test_values_read_through_the_profile(tmp_path, cards, column, expected):
    write_frame(tmp_path / "frame.fits", frame_cards("Light Frame", exposure=30.0, **cards))
    frame = row(NightCollection(tmp_path), "frame.fits")
    assert frame["problem"] == ""
    assert frame[column] == expected


def test_exposure_with_a_decimal_comma(tmp_path):
    # ASIImg writes EXPTIME = 3,2E-05, a card astropy cannot parse; neither the frame
    # table nor ImageFileCollection's summary may fail or warn on it.
    write_frame(tmp_path / "Bias/bias_1.fit", frame_cards(None, exposure=3.2e-05),
                decimal_comma="EXPTIME")
    night = NightCollection(tmp_path, profile="zwo-asiimg")
    frame = row(night, "Bias/bias_1.fit")
    assert (frame["type"], frame["problem"]) == ("bias", "")
    assert frame["exposure"] == pytest.approx(3.2e-05, rel=1e-12)
    summary = night.summary[night.summary["file"] == "Bias/bias_1.fit"][0]
    assert summary["exptime"] == pytest.approx(3.2e-05, rel=1e-12)


@pytest.mark.parametrize("cards, problem", [
    ({"EXPTIME": None}, "none of the keywords EXPTIME, EXPOSURE, ITIME is in the header"),
    ({"EXPTIME": "forty"}, "keyword EXPTIME = 'forty' is not a number"),
    ({"CCDSUM": "binned"}, "keyword CCDSUM = 'binned' is not a binning"),
])
def test_bad_header_value_is_a_problem_of_the_frame(tmp_path, cards, problem):
    # Dark frames: a bias needs no exposure time, and a bad date is only a note.
    write_frame(tmp_path / "good.fits", frame_cards("Dark Frame", exposure=30.0))
    write_frame(tmp_path / "bad.fits", frame_cards("Dark Frame", exposure=30.0, **cards))
    night = NightCollection(tmp_path)
    assert problem in row(night, "bad.fits")["problem"]
    assert row(night, "good.fits")["problem"] == ""
    assert night.count_by_type()["dark"] == 1  # the bad frame is not usable


# -------------------------------------------------------------------------- bad files
def _not_fits(path):
    path.write_bytes(b"this is a text file with a FITS name. " * 100)


def _short(path):
    path.write_bytes(b"SIMPLE  =                    T")


def _empty(path):
    path.write_bytes(b"")


def _truncated_header(path):
    # A header of three FITS blocks cut after the first: no END card.
    cards = frame_cards("Bias Frame", **{f"KEY{i}": i for i in range(60)})
    write_frame(path, cards)
    path.write_bytes(path.read_bytes()[:2880])


@pytest.mark.parametrize("make_bad, problem", [
    (_not_fits, "cannot read the FITS header"),
    (_short, "shorter than one FITS block"),
    (_empty, "the file is empty"),
    (_truncated_header, "truncated or damaged: the header has no END card"),
])
def test_unreadable_file_is_reported_not_fatal(tmp_path, caplog, make_bad, problem):
    write_frame(tmp_path / "bias_1.fits", frame_cards("Bias Frame"))
    make_bad(tmp_path / "x.fits")
    with caplog.at_level(logging.WARNING):
        night = NightCollection(tmp_path)
    # As in ccdproc: the file stays in `files`, its header is not in the summary, and a
    # warning names it.
    assert night.files == ["bias_1.fits", "x.fits"]
    assert list(night.summary["file"]) == ["bias_1.fits"]
    assert night.count_by_type()["bias"] == 1
    assert [p["file"] for p in night.problems] == ["x.fits"]
    assert problem in night.problems[0]["problem"]
    assert "x.fits" in night.problems[0]["problem"]
    assert "x.fits" in caplog.text


def test_only_unreadable_files(tmp_path):
    _not_fits(tmp_path / "a.fits")
    _empty(tmp_path / "b.fits")
    night = NightCollection(tmp_path)
    assert night.files == ["a.fits", "b.fits"]  # as in ccdproc
    assert [p["file"] for p in night.problems] == ["a.fits", "b.fits"]
    assert len(night.frames) == 0


def test_truncated_data_unit_is_classified_and_set_aside(tmp_path):
    # The header is whole, so the frame is classified like any other; the file's length
    # says its data unit is cut short, so it is a problem of the frame (found before any
    # pixel is read) and it is not usable.
    path = write_frame(tmp_path / "flat_1.fits", frame_cards("FLAT", exposure=1.0))
    path.write_bytes(path.read_bytes()[:2880 + 100])
    night = NightCollection(tmp_path)
    assert night.problems == []
    frame = row(night, "flat_1.fits")
    assert (frame["type"], frame["shape"]) == ("flat", "16x20")
    assert frame["problem_kind"] == "FrameReadError"
    assert frame["problem"] == ("truncated: the data unit needs 640 bytes but the file "
                                "holds only 100 after the header")
    assert night.count_by_type()["flat"] == 0


# -------------------------------------------------------------------------- locations
def test_missing_folder(tmp_path):
    with pytest.raises(CcdprocExtError, match="no such folder"):
        NightCollection(tmp_path / "nowhere")


def test_empty_folder(tmp_path):
    with pytest.warns(UserWarning, match="no FITS files in the collection"):
        night = NightCollection(tmp_path)
    assert night.files == []
    assert night.count_by_type() == {"bias": 0, "dark": 0, "flat": 0, "science": 0}
    assert len(night.frames) == 0
    assert "night" in night.frames.colnames


def test_subfolders_are_searched(tmp_path):
    for name in ("Bias/bias_1.fit", "Dark/Dark_10s/dark_1.fit", "Flat/flat_1.fits",
                 ".hidden/bias_2.fits", "notes.txt"):
        write_frame(tmp_path / name, frame_cards(None, exposure=10.0))
    night = NightCollection(tmp_path, profile="zwo-asiimg")
    expected = ["Bias/bias_1.fit", "Dark/Dark_10s/dark_1.fit", "Flat/flat_1.fits"]
    assert night.files == expected
    # The summary names files as `files` does, so its paths lead to them.
    assert list(night.summary["file"]) == expected
    assert night.files_filtered(exptime=10.0).tolist() == expected
    assert [h["EXPTIME"] for h in night.headers()] == [10.0] * 3
    assert night.path("Flat/flat_1.fits") == tmp_path / "Flat" / "flat_1.fits"


@pytest.mark.parametrize("kwargs, expected", [
    ({"glob_include": "bias*"}, ["bias_001.fits", "bias_002.fits"]),
    ({"glob_exclude": "*_002.fits"},
     ["bias_001.fits", "dark_30s_001.fits", "flat_R_001.fits", "object_R_001.fits"]),
    ({"glob_include": "dark*", "glob_exclude": "*_002.fits"}, ["dark_30s_001.fits"]),
])
def test_glob_include_and_exclude(small_night, kwargs, expected):
    night = NightCollection(small_night.location, **kwargs)
    assert night.files == expected
    assert list(night.frames["file"]) == expected


# ------------------------------------------------------ ImageFileCollection behaviour
def test_is_an_image_file_collection(small_night):
    night = NightCollection(small_night.location, profile="generic")
    assert isinstance(night, ImageFileCollection)
    assert night.location == str(small_night.location)
    assert len(night.summary) == 7
    assert {"file", "imagetyp", "exptime", "filter"} <= set(night.summary.colnames)
    assert night.files_filtered(imagetyp="bias").tolist() == ["bias_001.fits",
                                                             "bias_002.fits"]
    assert night.files_filtered(imagetyp="dark", include_path=True) == [
        str(small_night.location / f"dark_30s_00{i}.fits") for i in (1, 2)]
    assert sorted(night.values("exptime", unique=True)) == [0.0, 30.0]


def test_filter_returns_a_night_collection(small_night):
    night = NightCollection(small_night.location, profile="generic",
                            image_types={"object_*": "flat"})
    darks = night.filter(imagetyp="dark")
    assert isinstance(darks, NightCollection)
    assert darks.profile is night.profile
    assert darks.files == ["dark_30s_001.fits", "dark_30s_002.fits"]
    assert darks.count_by_type() == {"bias": 0, "dark": 2, "flat": 0, "science": 0}
    # The overrides go along.
    light = night.filter(imagetyp="object")
    assert light.image_type_overrides == {"object_*": "flat"}
    assert light.count_by_type() == {"bias": 0, "dark": 0, "flat": 1, "science": 0}


def test_filter_matching_nothing(small_night):
    night = NightCollection(small_night.location)
    with pytest.warns(UserWarning, match="no FITS files in the collection"):
        nothing = night.filter(imagetyp="focus")
    assert isinstance(nothing, NightCollection)
    assert nothing.files == []
    assert len(nothing.frames) == 0


# Reading a CCDData makes astropy's WCS "fix" DATE-OBS into MJD-OBS with a warning: that
# is astropy's reader inside ccdproc's own ccds(), not this package.
@pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")
def test_ccds(small_night):
    night = NightCollection(small_night.location)
    ccds = list(night.ccds(imagetyp="bias", ccd_kwargs={"unit": "adu"}))
    assert len(ccds) == 2
    assert all(isinstance(ccd, CCDData) and ccd.shape == SHAPE for ccd in ccds)


@pytest.mark.parametrize("as_path", [str, Path])
def test_from_a_list_of_files(small_night, as_path):
    paths = [as_path(p) for p in small_night.paths("bias") + small_night.paths("science")]
    night = NightCollection(paths, profile="generic")
    assert night.files == [str(p) for p in paths]
    assert night.count_by_type() == {"bias": 2, "dark": 0, "flat": 0, "science": 1}
    assert night.files_filtered(imagetyp="object").tolist() == [str(paths[-1])]


def test_from_an_image_file_collection(small_night):
    ifc = ImageFileCollection(small_night.location)
    night = NightCollection(ifc, profile=get_profile("generic"))
    assert night.files == ifc.files
    assert night.location == ifc.location
    assert night.count_by_type() == {"bias": 2, "dark": 2, "flat": 2, "science": 1}
    subset = ImageFileCollection(filenames=[str(p) for p in small_night.paths("dark")])
    assert NightCollection(subset).count_by_type()["dark"] == 2


def test_header_is_the_one_read(small_night):
    night = NightCollection(small_night.location)
    assert night.header("bias_001.fits")["IMAGETYP"] == "BIAS"


def test_summary_from_awkward_headers(tmp_path):
    # A FILE card, a repeated keyword, COMMENT and HISTORY cards: the summary keeps the
    # file names it lists, the first value of a repeated keyword, and joins the rest.
    path = write_frame(tmp_path / "bias_1.fits", frame_cards("Bias Frame", FILE="raw.fits"))
    with fits.open(path, mode="update") as hdul:
        hdul[0].header.append(("OBSERVER", "A"), end=True)
        hdul[0].header.append(("OBSERVER", "B"), end=True)
        hdul[0].header["HISTORY"] = "first"
        hdul[0].header["HISTORY"] = "second"
    # ccdproc's warning, in its words
    with pytest.warns(UserWarning, match='multiple entries for "observer", the pair '
                                         '"observer=B" will be ignored'):
        night = NightCollection(tmp_path)
    summary = night.summary[0]
    assert (summary["file"], summary["observer"], summary["history"]) == \
        ("bias_1.fits", "A", "first,second")
    assert night.files_filtered(imagetyp="bias frame").tolist() == ["bias_1.fits"]


# ------------------------------------------------------------------------------ nights
@pytest.mark.parametrize("dates, nights", [
    (["2024-03-05T20:00:00", "2024-03-06T03:59:00"], [1, 1]),   # 7.98 h apart
    (["2024-03-05T20:00:00", "2024-03-06T04:01:00"], [1, 2]),   # 8.02 h apart
    # A night is cut by gaps, not by its length: 3 h steps over 9 h stay one night.
    (["2024-03-05T20:00:00", "2024-03-05T23:00:00", "2024-03-06T02:00:00",
      "2024-03-06T05:00:00"], [1, 1, 1, 1]),
    # Numbered in time order, whatever the file order.
    (["2024-03-07T01:00:00", "2024-03-05T01:00:00", "2024-03-06T01:00:00"], [3, 1, 2]),
])
def test_nights_are_cut_by_gaps_of_eight_hours(tmp_path, dates, nights):
    for i, date in enumerate(dates):
        write_frame(tmp_path / f"f{i}.fits", frame_cards("Bias Frame", **{"DATE-OBS": date}))
    night = NightCollection(tmp_path)
    assert [row(night, f"f{i}.fits")["night"] for i in range(len(dates))] == nights


def test_two_simulated_nights_in_one_folder(tmp_path):
    simulate_night(tmp_path, "generic", shape=SHAPE, n_bias=2, dark_exposures=(60.0,),
                   n_dark=1, filters=("R",), flat_exposure=60.0, n_flat=1, n_science=1,
                   nights=2, n_stars=1)
    night = NightCollection(tmp_path)
    for frame in night.frames:
        assert frame["night"] == (1 if "_n1_" in frame["file"] else 2)


# -------------------------------------------------------------------------- real data
def test_real_sbig_classification(real_data):
    folder = real_data / "sbig-stl1001e"
    plain = NightCollection(folder, profile="maxim-ccdsoft")
    assert plain.problems == []
    # The ten flats say 'Light Frame'; their names (the profile's pattern flat*) say flat.
    assert plain.count_by_type() == {"bias": 20, "dark": 22, "flat": 10, "science": 0}
    night = NightCollection(folder, profile="maxim-ccdsoft", image_types={"flat-*": "flat"})
    assert night.count_by_type() == {"bias": 20, "dark": 22, "flat": 10, "science": 0}
    flats = night.frames_of_type("flat")
    assert set(flats["type_rule"]) == {"override"}
    assert set(flats["exposure"]) == {23.0}
    # 'darks-expos1-*' are 60 s darks: the header is trusted, not the name.
    expos1 = night.frames[[f.startswith("darks-expos1-") for f in night.frames["file"]]]
    assert len(expos1) == 10
    assert set(expos1["exposure"]) == {60.0}
    assert sorted(set(night.frames["set_temperature"])) == [-10.0, -5.0]
    assert night.filter(imagetyp="Light Frame").count_by_type()["flat"] == 10


def test_real_tircam2_classification(real_data):
    night = NightCollection(real_data / "dot-tircam2", profile="dot-tircam2")
    assert night.problems == []
    assert night.count_by_type() == {"bias": 3, "dark": 0, "flat": 5, "science": 5}
    assert set(night.frames["type_rule"]) == {"file name"}
    for image_type, exposure, filter_name in (("bias", 0.0, "BLOCK"), ("flat", 6.0, "J"),
                                              ("science", 40.0, "J")):
        frames = night.frames_of_type(image_type)
        assert set(frames["exposure"]) == {exposure}  # EXPTIME = '40      ' etc.
        assert set(frames["filter"]) == {filter_name}


def test_real_zwo_classification(real_data):
    night = NightCollection(real_data / "zwo-asi178", profile="zwo-asiimg")
    # Every header is readable: nothing is set aside unread ...
    assert night.problems == []
    assert set(night.frames["type"]) == {"bias", "dark", "flat"}
    # ... but 3 darks of 1 s and 9 of the 10 flats are truncated, and not usable.
    truncated = night.frames[night.frames["problem_kind"] == "FrameReadError"]
    assert sorted(truncated["file"]) == sorted(
        [f"Dark/Dark_1s/Dark_ASIImg_1sec_frame000{i}.fit" for i in (1, 2, 3)]
        + [f"Flat/Flat_ASIImg_frame{i:04d}.fit" for i in (1, 2, 3, 5, 6, 7, 8, 9, 10)])
    assert all(p.startswith("truncated: ") for p in truncated["problem"])
    assert night.count_by_type() == {"bias": 5, "dark": 7, "flat": 1, "science": 0}
    biases = night.frames_of_type("bias")
    assert np.allclose(biases["exposure"], 3.2e-05, rtol=1e-12, atol=0)  # '3,2E-05'
    assert all("EXPTIME = '3,2E-05' is not valid FITS (a decimal comma): read as 3.2e-05"
               in notes for notes in biases["notes"])
    darks = night.frames_of_type("dark")
    assert sorted(set(darks["exposure"])) == [1.0, 10.0]
    assert all(f.startswith("Dark/Dark_") for f in darks["file"])
    # The profile's match keywords (GAIN, OFFSET settings) are the same on every frame.
    header = fits.getheader(real_data / "zwo-asi178" / "Bias" / "Bias_ASIImg_frame0001.fit")
    assert set(night.frames["agree"]) == {f"GAIN={header['GAIN']},OFFSET={header['OFFSET']}"}
    assert len(night.files_filtered(exptime=10.0)) == 5
    assert night.filter(exptime=1.0).count_by_type()["dark"] == 2  # 3 of 5 truncated


# ----------------------------------------------- the header reader against astropy's own
# NightCollection reads each header once, through ccdproc_ext.raw (astropy's fits.open).
# These tests hold it to astropy: the cards fits.getheader gives, the summary ccdproc's
# ImageFileCollection makes, and, for odd and broken files, astropy's header or an error.
def card_images(header):
    """The cards of ``header`` as astropy writes them (fixing unparsable ones, quietly)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [card.image for card in header.cards]


def astropy_header(path, ext=0):
    # The file is opened here: fits.getheader leaves a file it opened itself open when it
    # fails on some headers.
    with warnings.catch_warnings(), open(path, "rb") as stream:
        warnings.simplefilter("ignore")
        return fits.getheader(stream, ext)


def inspected(path, ext=0):
    """(card images, problem, notes) of `inspect_frame`, or ("error", message)."""
    try:
        header, problem, notes = inspect_frame(path, ext)
    except FrameReadError as err:
        return "error", str(err)
    return card_images(header), problem, notes


def summary_rows(table):
    """A summary table as ``{file: {column: value, None where masked}}``."""
    return {row["file"]: {name: None if np.ma.is_masked(row[name]) else row[name]
                          for name in table.colnames} for row in table}


def table_rows(table):
    """The rows of a table as tuples, NaN written as text (NaN != NaN)."""
    return [tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in row)
            for row in table.as_array().tolist()]


def real_frames(folder):
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".fit", ".fits"))


def test_header_reader_gives_astropy_cards_for_real_frames(real_data):
    paths = real_frames(real_data)
    assert len(paths) == 90
    repaired = 0
    for path in paths:
        assert card_images(read_header(path)) == card_images(astropy_header(path)), path
        header, _, notes = inspect_frame(path)
        if notes and any("not valid FITS" in note for note in notes):
            repaired += 1  # ASIImg's decimal commas
            continue
        assert card_images(header) == card_images(astropy_header(path)), path
    assert 0 < repaired <= 10
    # The truncated ASIImg frames, from the lengths of their files.
    assert sum(1 for path in paths if inspect_frame(path)[1]) == 12


@pytest.mark.parametrize("folder, profile", [
    ("sbig-stl1001e", "maxim-ccdsoft"),
    ("dot-tircam2", "dot-tircam2"),
    ("zwo-asi178", "zwo-asiimg"),
])
def test_real_night_read_as_astropy_reads_it(real_data, folder, profile):
    night = NightCollection(real_data / folder, profile=profile)
    if folder != "zwo-asi178":  # ccdproc cannot read ASIImg's decimal commas
        plain = ImageFileCollection(str(real_data / folder), filenames=night.files)
        assert summary_rows(night.summary) == summary_rows(plain.summary)
    # Times converted together are what each frame's own Time says.
    for frame in night.frames:
        time = night.profile.date_obs(night.header(frame["file"]))
        assert (frame["date_obs"], frame["mjd"]) == (time.isot, time.mjd)


@pytest.mark.parametrize("profile, shape", [
    ("generic", SHAPE), ("maxim-ccdsoft", SHAPE), ("palomar-lfc", (8, 2080)),
    ("zwo-asiimg", SHAPE), ("dot-tircam2", SHAPE),
])
def test_simulated_night_read_as_astropy_reads_it(tmp_path, profile, shape):
    simulate_night(tmp_path, profile, shape=shape, n_bias=2, dark_exposures=(30.0,),
                   n_dark=2, filters=("R",), flat_exposure=30.0, n_flat=2, n_science=2,
                   science_exposure=30.0, n_stars=2)
    night = NightCollection(tmp_path, profile=profile)
    assert len(night.files) == 8 and night.problems == []
    for name in night.files:
        path = tmp_path / name
        assert card_images(night.header(name)) == card_images(astropy_header(path))
    plain = ImageFileCollection(str(tmp_path), filenames=night.files)
    assert summary_rows(night.summary) == summary_rows(plain.summary)


# Odd and broken files, made from a small frame.
def _replace(path, old, new):
    raw = path.read_bytes()
    assert raw.count(old) == 1 and len(old) == len(new), (old, new)
    path.write_bytes(raw.replace(old, new))


def _card(key, value):
    return fits.Card(key, value).image.encode()


def _plain(path, **extra):
    write_frame(path, frame_cards("Bias Frame", **extra))


def _cut_data(path):
    _plain(path)
    path.write_bytes(path.read_bytes()[:2880 + 100])


def _gzipped(path):
    _plain(path)
    path.write_bytes(gzip.compress(path.read_bytes()))


def _cut_gzip(path):
    _gzipped(path)
    path.write_bytes(path.read_bytes()[:300])


def _bitpix_17(path):
    _plain(path)
    _replace(path, _card("BITPIX", 16)[:30], _card("BITPIX", 17)[:30])


def _cube(path):
    write_frame(path, frame_cards("Bias Frame"), shape=(2, *SHAPE))


def _two_hdus(path, extend=True):
    primary = fits.PrimaryHDU(header=fits.Header(frame_cards("Bias Frame")))
    image = fits.ImageHDU(np.ones(SHAPE, dtype=np.uint16), name="SCI")
    fits.HDUList([primary, image]).writeto(path)
    if extend is None:  # no EXTEND card: fits.open adds one
        _replace(path, _card("EXTEND", True)[:30], b" " * 30)
    elif not extend:
        _replace(path, _card("EXTEND", True)[:30], _card("EXTEND", False)[:30])


def _end_in_a_comment(path):  # 'END' and 77 blanks, across two cards
    write_frame(path)
    with fits.open(path, mode="update") as hdul:
        hdul[0].header.append(fits.Card("COMMENT", "x" * 69 + "END"), end=True)
        hdul[0].header.append(fits.Card(), end=True)
        hdul[0].header.append(("OBSERVER", "A"), end=True)
    assert path.read_bytes().index(b"END" + b" " * 77) % 80 != 0


def _simple_second(path):
    _plain(path)
    raw = path.read_bytes()
    path.write_bytes(raw[80:160] + raw[:80] + raw[160:])


def _naxis1_not_whole(path):
    _plain(path)
    _replace(path, _card("NAXIS1", SHAPE[1])[:30], _card("NAXIS1", float(SHAPE[1]))[:30])


def _gcount_2(path):  # an IMAGE extension of two groups: fits.open's to read
    _two_hdus(path)
    _replace(path, _card("GCOUNT", 1)[:30], _card("GCOUNT", 2)[:30])


def _groups(path):  # random groups are fits.open's to read
    _plain(path)
    _replace(path, _card("SET-TEMP", -10.0)[:30], _card("GROUPS", True)[:30])


def _table_extension(path):
    table = fits.BinTableHDU.from_columns([fits.Column("x", "E", array=np.arange(3.0))])
    fits.HDUList([fits.PrimaryHDU(header=fits.Header(frame_cards("Bias Frame"))),
                  table]).writeto(path)


def _long_string(path):  # written with CONTINUE cards
    _plain(path, OBSERVER="a name long enough to need CONTINUE cards " * 3)


def _hierarch(path):
    _plain(path, **{"HIERARCH ESO DET CHIP NAME": "ccd1"})


def _decimal_comma(path):
    write_frame(path, frame_cards("Bias Frame", exposure=3.2e-05), decimal_comma="EXPTIME")


def _unparsable(path):
    _plain(path)
    _replace(path, _card("SET-TEMP", -10.0)[:30],
             _card("SET-TEMP", -10.0)[:30].replace(b"     -10.0", b"-10.0.0.0".rjust(10)))


def _nul_padding(path):
    _plain(path)
    raw = bytearray(path.read_bytes())
    end = raw.index(b"END" + b" " * 77)
    raw[end + 80:2880] = b"\0" * (2880 - end - 80)
    path.write_bytes(bytes(raw))


def _not_ascii(path):
    _plain(path, OBSERVER="Jose")
    _replace(path, b"Jose", "Jos\xe9".encode("latin-1"))


def _end_keyword(path):  # a keyword that starts like the END card
    _plain(path, ENDTIME="2024-03-05T01:01:00", **{"END-X": 1})


def _bzero_unparsable(path):  # fits.open parses BZERO: it fails
    _plain(path)
    _replace(path, _card("BZERO", 32768)[:30], _card("BZERO", 32768)[:30]
             .replace(b"32768", b"3,2,8"))


def _no_naxis2(path):  # fits.open needs every NAXISn
    _plain(path)
    _replace(path, _card("NAXIS2", SHAPE[0])[:30], b" " * 30)


def _simple_false(path):
    _plain(path)
    _replace(path, _card("SIMPLE", True)[:30], _card("SIMPLE", False)[:30])


def _lower_case_keyword(path):
    _plain(path)
    _replace(path, b"SET-TEMP=", b"set-temp=")


def _commentary_and_repeats(path):
    _plain(path)
    with fits.open(path, mode="update") as hdul:
        header = hdul[0].header
        header.append(("OBSERVER", "A"), end=True)
        header.append(("OBSERVER", "B"), end=True)
        header.append(fits.Card(), end=True)  # a blank card
        header.append(("OBJECT", ""), end=True)
        header["COMMENT"] = "a comment"
        header["HISTORY"] = "a history"
        header["UNDEF"] = None


@pytest.mark.parametrize("make, ext", [
    (_plain, 0),
    (_cut_data, 0),
    (_empty, 0),
    (_short, 0),
    (_not_fits, 0),
    (_truncated_header, 0),
    (_gzipped, 0),
    (_cut_gzip, 0),
    (_bitpix_17, 0),
    (_cube, 0),
    (_two_hdus, 0),
    (_two_hdus, 1),
    (_two_hdus, 2),
    (_two_hdus, "SCI"),
    (functools.partial(_two_hdus, extend=None), 0),
    (functools.partial(_two_hdus, extend=None), 1),
    (functools.partial(_two_hdus, extend=False), 0),
    (_table_extension, 1),
    (_gcount_2, 1),
    (_end_in_a_comment, 0),
    (_simple_second, 0),
    (_naxis1_not_whole, 0),
    (_groups, 0),
    (_long_string, 0),
    (_hierarch, 0),
    (_decimal_comma, 0),
    (_unparsable, 0),
    (_nul_padding, 0),
    (_not_ascii, 0),
    (_end_keyword, 0),
    (_bzero_unparsable, 0),
    (_no_naxis2, 0),
    (_simple_false, 0),
    (_lower_case_keyword, 0),
    (_commentary_and_repeats, 0),
])
def test_odd_file_read_as_astropy_reads_it(tmp_path, make, ext):
    path = tmp_path / "x.fits"
    make(path)
    result = inspected(path, ext)
    try:
        truth = astropy_header(path, ext)
    except Exception:  # whatever astropy raises, the file is bad
        truth = None
    if truth is None:
        assert result[0] == "error"
    elif result[0] != "error" and not result[2] and truth.get("NAXIS"):
        # read, nothing repaired: astropy's cards, then, for an image in an extension
        # under a primary HDU without data, the primary's keywords it does not have
        assert result[0][:len(truth)] == card_images(truth)
        primary = astropy_header(path, 0)
        if ext != 0 and not primary.get("NAXIS"):
            # (without its structure: SIMPLE, EXTEND ..., as Header.extend strips it)
            merged = {image[:8].strip() for image in result[0]}
            assert {"IMAGETYP", "EXPTIME"} <= merged
            assert {card.keyword for card in primary.cards} - merged <= \
                {"SIMPLE", "EXTEND", ""}
        else:
            assert len(result[0]) == len(truth)
    # fits.open leaves a file it opened open when it fails on some headers (a missing
    # NAXISn); the reader opens and closes files itself. A file left open would be
    # collected here and fail this test (an unraisable ResourceWarning), not a later one.
    gc.collect()


def test_odd_files_in_a_night(tmp_path):
    makers = [_plain, _cut_data, _empty, _not_fits, _truncated_header, _gzipped, _cube,
              _two_hdus, functools.partial(_two_hdus, extend=None), _long_string,
              _hierarch, _decimal_comma, _unparsable, _nul_padding, _not_ascii,
              _end_keyword, _bzero_unparsable, _lower_case_keyword,
              _commentary_and_repeats]
    for i, make in enumerate(makers):
        make(tmp_path / f"bias_{i:02d}.fits")
    with pytest.warns(UserWarning, match="multiple entries"):
        night = NightCollection(tmp_path)
    assert [p["file"] for p in night.problems] == [
        "bias_02.fits", "bias_03.fits", "bias_04.fits", "bias_16.fits"]
    # ccdproc keeps them in its files, and leaves them out of its summary.
    assert len(night.files) == len(makers)
    assert "bias_02.fits" not in list(night.summary["file"])


def test_headers_read_together_are_separate(small_night):
    # Cards alike are parsed once; each header still has cards of its own.
    night = NightCollection(small_night.location)
    first, second = night.header("bias_001.fits"), night.header("bias_002.fits")
    assert first.cards["IMAGETYP"].image == second.cards["IMAGETYP"].image
    first["IMAGETYP"] = "changed"
    assert (first["IMAGETYP"], second["IMAGETYP"]) == ("changed", "BIAS")
    assert NightCollection(small_night.location).header("bias_001.fits")["IMAGETYP"] == \
        "BIAS"


def test_same_header_other_pixels_is_not_a_duplicate(tmp_path):
    header = fits.Header(frame_cards("Bias Frame"))
    fits.PrimaryHDU(np.zeros(SHAPE, dtype=np.uint16), header=header).writeto(tmp_path / "a.fits")
    fits.PrimaryHDU(np.ones(SHAPE, dtype=np.uint16), header=header).writeto(tmp_path / "b.fits")
    (tmp_path / "c.fits").write_bytes((tmp_path / "a.fits").read_bytes())
    night = NightCollection(tmp_path)
    assert card_images(night.header("a.fits")) == card_images(night.header("b.fits"))
    assert [row(night, f)["problem_kind"] for f in ("a.fits", "b.fits", "c.fits")] == \
        ["", "", "DuplicateFrameError"]


def test_summary_made_later_reads_the_headers_as_they_are(small_night):
    night = NightCollection(small_night.location)
    assert "observer" not in night.summary.colnames
    night.header("bias_001.fits")["OBSERVER"] = "someone"
    night.keywords = ["imagetyp", "observer"]  # a new summary, from the headers
    rows = summary_rows(night.summary)
    assert rows["bias_001.fits"] == {"file": "bias_001.fits", "imagetyp": "BIAS",
                                     "observer": "someone"}
    assert rows["bias_002.fits"]["observer"] is None


def test_duplicates_told_by_their_headers_even_with_an_unparsable_card(tmp_path):
    """Files of one size with the same header are compared byte for byte; one of the
    same size whose header differs (in the card astropy cannot parse) is not a copy."""
    header = fits.Header(frame_cards("Bias Frame", CCDTEMP=-10.0))
    data = np.zeros(SHAPE, dtype=np.uint16)
    fits.PrimaryHDU(data, header=header).writeto(tmp_path / "c.fits")
    # A card astropy cannot parse (CCDTEMP = NAN), read as text
    card = fits.Card("CCDTEMP", -10.0).image.encode()
    nan = f"{'CCDTEMP':8}= {'NAN':>20}".ljust(80).encode()
    content = (tmp_path / "c.fits").read_bytes()
    assert content.count(card) == 1
    (tmp_path / "a.fits").write_bytes(content.replace(card, nan))
    (tmp_path / "b.fits").write_bytes((tmp_path / "a.fits").read_bytes())
    assert (tmp_path / "c.fits").stat().st_size == (tmp_path / "a.fits").stat().st_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy on the card it cannot parse
        night = NightCollection(tmp_path)
    assert [row(night, f)["problem_kind"] for f in ("a.fits", "b.fits", "c.fits")] == \
        ["", "DuplicateFrameError", ""]


def test_collecting_opens_each_file_no_more_often_than_ccdproc(small_night, monkeypatch):
    """The header scan reads each file as often as ccdproc's ImageFileCollection does."""
    import builtins
    import io
    import os

    root = os.path.abspath(small_night.location) + os.sep
    opened = []
    original = builtins.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, str | os.PathLike) and \
                os.path.abspath(os.fspath(file)).startswith(root):
            opened.append(os.fspath(file))
        return original(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    ImageFileCollection(small_night.location)
    by_ccdproc = len(opened)
    opened.clear()
    night = NightCollection(small_night.location)
    assert len(night.frames) == len(night.files) > 0
    assert 0 < len(opened) <= by_ccdproc


def test_filtering_on_a_keyword_the_summary_lacks_reads_no_header_again(tmp_path,
                                                                       monkeypatch):
    # The summary has IMAGETYP only; EXPTIME (with a decimal comma astropy cannot parse)
    # comes from the headers read when collecting, for files_filtered and the generators.
    write_frame(tmp_path / "Bias/bias_1.fit", frame_cards("BIAS", exposure=3.2e-05),
                decimal_comma="EXPTIME")
    write_frame(tmp_path / "dark_1.fit", frame_cards("DARK", exposure=30.0))
    night = NightCollection(tmp_path, keywords=["imagetyp"])

    def no_second_read(*args, **kwargs):
        raise AssertionError("a header read again")

    monkeypatch.setattr(fits, "getheader", no_second_read)
    assert night.files_filtered(exptime=3.2e-05).tolist() == ["Bias/bias_1.fit"]
    assert night.files_filtered(exptime=30.0, include_path=True) == [
        str(tmp_path / "dark_1.fit")]
    assert night.summary.colnames == ["file", "imagetyp"]  # as it was
    monkeypatch.undo()
    assert [name for _, name in night.headers(exptime=30.0, return_fname=True)] == [
        "dark_1.fit"]
    assert night.summary.colnames == ["file", "imagetyp"]


def test_nothing_found_by_reading_in_a_folder_of_subfolders(tmp_path):
    write_frame(tmp_path / "Bias/bias_1.fit", frame_cards("BIAS"))
    with pytest.warns(UserWarning, match="no FITS files in the collection") as caught:
        night = NightCollection(tmp_path, find_fits_by_reading=True, glob_include="dark*")
    assert len(caught) == 1
    assert (night.files, night.location) == ([], str(tmp_path))
