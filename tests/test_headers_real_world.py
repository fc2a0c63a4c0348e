"""Headers as real cameras write them, read with the default (``generic``) profile.

Each rule of reading has its own test: frames are written by hand with exactly the cards
under test, and the expected values are written out here (numbers, dates, words), not
taken from the package. The real frames of ``CCDPROC_EXT_REAL_DATA`` are read last.
"""

import math
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits

from ccdproc_ext import NightCollection, calibrate_frame, get_profile
from ccdproc_ext.profiles import DetectorSection

SHAPE = (16, 20)  # rows, columns


def write_frame(path, cards, *, shape=SHAPE):
    """A small uint16 frame whose header holds exactly ``cards`` (None: left out)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = fits.Header()
    for key, value in cards.items():
        if value is not None:
            header[key] = value
    fits.PrimaryHDU(np.zeros(shape, dtype=np.uint16), header=header).writeto(path)
    return path


def science(**cards):
    """Cards of a 30 s science frame of the generic profile, with ``cards`` on top."""
    base = {"IMAGETYP": "Light Frame", "EXPTIME": 30.0, "DATE-OBS": "2024-03-05T01:00:00"}
    base.update(cards)
    return base


def one_frame(tmp_path, cards, name="frame.fits", **kwargs):
    write_frame(tmp_path / name, cards)
    night = NightCollection(tmp_path, **kwargs)
    rows = night.frames[night.frames["file"] == name]
    assert len(rows) == 1
    return night, rows[0]


# --------------------------------------------------------------------- 1. values read
@pytest.mark.parametrize("cards, expected", [
    ({"DATE-OBS": "2024-03-05T01:02:03.25"}, "2024-03-05T01:02:03.250"),
    ({"DATE-OBS": "2024-03-05", "TIME-OBS": "01:02:03.5"}, "2024-03-05T01:02:03.500"),
    ({"DATE-OBS": "2024-03-05", "UT": "22:10:00"}, "2024-03-05T22:10:00.000"),
    ({"DATE-OBS": "2024-03-05", "UTSTART": "03:04:05"}, "2024-03-05T03:04:05.000"),
    ({"DATE-OBS": "2024-03-05", "TIME-BEG": "23:59:59"}, "2024-03-05T23:59:59.000"),
    ({"DATE-OBS": "2024-03-05"}, "2024-03-05T00:00:00.000"),   # a date alone
    # A full ISO date is not changed by a time card.
    ({"DATE-OBS": "2024-03-05T01:02:03", "TIME-OBS": "07:00:00"}, "2024-03-05T01:02:03.000"),
    # FITS before 2000: 'dd/mm/yy', year 19yy.
    ({"DATE-OBS": "05/03/98", "TIME-OBS": "01:02:03"}, "1998-03-05T01:02:03.000"),
    ({"DATE-OBS": "31/12/89"}, "1989-12-31T00:00:00.000"),
    ({"DATE-OBS": None, "DATE-BEG": "2024-03-05T04:00:00"}, "2024-03-05T04:00:00.000"),
    ({"DATE-OBS": None, "DATE": "2024-03-06T10:00:00"}, "2024-03-06T10:00:00.000"),
    ({"DATE-OBS": "   ", "DATE": "2024-03-06T10:00:00"}, "2024-03-06T10:00:00.000"),
])
def test_dates_of_the_generic_profile(tmp_path, cards, expected):
    _, frame = one_frame(tmp_path, science(**cards))
    assert (frame["date_obs"], frame["problem"], frame["notes"]) == (expected, "", "")


@pytest.mark.parametrize("cards, expected", [
    ({"EXPTIME": 12.5}, 12.5),
    ({"EXPTIME": "40      "}, 40.0),
    ({"EXPTIME": None, "EXPOSURE": 7.5}, 7.5),
    ({"EXPTIME": None, "ITIME": "3"}, 3.0),
    ({"EXPTIME": "", "EXPOSURE": 8.0}, 8.0),  # a blank card is a missing one
])
def test_exposure_of_the_generic_profile(tmp_path, cards, expected):
    _, frame = one_frame(tmp_path, science(**cards))
    assert (frame["exposure"], frame["problem"]) == (expected, "")


@pytest.mark.parametrize("cards, expected", [
    ({"SATURATE": 60000}, 60000),
    ({"SATLEVEL": 50000.0}, 50000),
    ({"DATAMAX": 65535}, 65535),
    ({"SATURATE": 60000, "DATAMAX": 65535}, 60000),
])
def test_saturation_of_the_generic_profile(cards, expected):
    value = get_profile("generic").saturation(fits.Header(cards))
    assert value == expected * u.adu


@pytest.mark.parametrize("cards, expected", [
    ({"FILTER": " R "}, "R"),
    ({"FILTNAME": "Halpha"}, "Halpha"),
    ({"FILTER1": "J", "FILTER2": "None"}, "J"),            # TIRCAM2
    ({"FILTER1": "BLOCK", "FILTER2": "None"}, "BLOCK"),    # an opaque filter is a filter
    ({"FILTER1": "Open", "FILTER2": "V"}, "V"),
    ({"FILTER1": "V", "FILTER2": "ND1"}, "V+ND1"),
    ({"FILTER1": "clear", "FILTER2": "EMPTY"}, ""),
    ({"FILTER2": "B"}, "B"),
    ({"INSFLNAM": "R_SPECIAL"}, "R_SPECIAL"),
    ({"ALFLTNM": "Bes V"}, "Bes V"),
    ({"FILTERID": "g'"}, "g'"),
    ({"FILTID": "i"}, "i"),
    ({"FILTER": "", "FILTNAME": "Halpha"}, "Halpha"),      # a blank card says nothing
    ({"FILTER": "R", "FILTER1": "V"}, "R"),                # FILTER first
])
def test_filter_of_the_generic_profile(tmp_path, cards, expected):
    _, frame = one_frame(tmp_path, science(**cards))
    assert (frame["filter"], frame["problem"], frame["notes"]) == (expected, "", "")


def test_tircam2_profile_reads_its_two_filter_wheels():
    tircam = get_profile("dot-tircam2")
    assert tircam.filter_name(fits.Header({"FILTER1": "J", "FILTER2": "None"})) == "J"
    assert tircam.filter_name(fits.Header({"FILTER1": "J", "FILTER2": "Br_gamma"})) == \
        "J+Br_gamma"


# -------------------------------------------- 2. optional values never fail a frame
@pytest.mark.parametrize("cards, column, unknown, note", [
    ({"DATE-OBS": "5 March 2024"}, "date_obs", "",
     "keyword DATE-OBS = '5 March 2024' is not an ISO date such as '2024-03-05T01:02:03' "
     "(or 'dd/mm/yy'): date unknown"),
    ({"DATE-OBS": "2024-03-05", "TIME-OBS": "late"}, "date_obs", "",
     "TIME-OBS = 'late' is not a time of day such as '01:02:03': date unknown"),
    ({"DATE-OBS": "2024-02-30T01:00:00"}, "date_obs", "",
     "keyword DATE-OBS = '2024-02-30T01:00:00' is not an ISO date such as "
     "'2024-03-05T01:02:03' (or 'dd/mm/yy'): date unknown"),
    ({"CCD-TEMP": "warm"}, "temperature", math.nan,
     "CCD-TEMP = 'warm' is not a number: temperature unknown"),
    ({"SET-TEMP": "-10.0.0"}, "set_temperature", math.nan,
     "SET-TEMP = '-10.0.0' is not a number: set temperature unknown"),
    ({"FILTER": True}, "filter", "", "FILTER = True is not a filter name: filter unknown"),
])
def test_unreadable_optional_value_is_a_note(tmp_path, cards, column, unknown, note):
    _, frame = one_frame(tmp_path, science(**cards))
    assert frame["problem"] == ""
    assert frame["notes"] == note
    if isinstance(unknown, float):
        assert math.isnan(frame[column])
    else:
        assert frame[column] == unknown


def test_unreadable_date_falls_back_to_the_next_keyword(tmp_path):
    _, frame = one_frame(tmp_path, science(**{"DATE-OBS": "sometime",
                                              "DATE": "2024-03-06T10:00:00"}))
    assert frame["date_obs"] == "2024-03-06T10:00:00.000"
    assert frame["notes"].startswith("keyword DATE-OBS = 'sometime' is not an ISO date")


@pytest.mark.parametrize("image_type, cards, problem", [
    ("Light Frame", {"EXPTIME": None},
     "none of the keywords EXPTIME, EXPOSURE, ITIME is in the header"),
    ("Dark Frame", {"EXPTIME": "forty"}, "keyword EXPTIME = 'forty' is not a number"),
    ("Flat Field", {"EXPTIME": "  "}, "keyword EXPTIME is blank"),
    ("Flat Field", {"EXPTIME": -3.0}, "keyword EXPTIME = -3.0 is negative"),
    ("Light Frame", {"EXPTIME": "nan"}, "keyword EXPTIME = 'nan' is not a finite number"),
    ("Bias Frame", {"CCDSUM": "binned"}, "keyword CCDSUM = 'binned' is not a binning"),
    ("Bias Frame", {"CCDSUM": "0 2"}, "keyword CCDSUM = '0 2' is not a binning"),
    ("Bias Frame", {"XBINNING": 2, "YBINNING": "two"}, "keyword YBINNING = 'two' is not "
                                                       "a number"),
    ("Bias Frame", {"XBINNING": 0, "YBINNING": 1}, "keyword XBINNING = 0 is not a binning"),
])
def test_required_value_is_a_problem_naming_the_keyword(tmp_path, image_type, cards,
                                                        problem):
    night, frame = one_frame(tmp_path, science(IMAGETYP=image_type, **cards))
    assert frame["problem_kind"] == "HeaderError"
    assert problem in frame["problem"]
    assert sum(night.count_by_type().values()) == 0


@pytest.mark.parametrize("cards", [{"EXPTIME": None}, {"EXPTIME": ""}])
def test_bias_needs_no_exposure_time(tmp_path, cards):
    _, frame = one_frame(tmp_path, science(IMAGETYP="Bias Frame", **cards))
    assert (frame["type"], frame["exposure"], frame["problem"]) == ("bias", 0.0, "")


def test_bias_with_a_bad_exposure_time_is_noted(tmp_path):
    _, frame = one_frame(tmp_path, science(IMAGETYP="zero", EXPTIME="n/a"))
    assert (frame["type"], frame["exposure"], frame["problem"]) == ("bias", 0.0, "")
    assert frame["notes"] == ("keyword EXPTIME = 'n/a' is not a number: a bias, exposure "
                              "taken as 0 s")


# --------------------------------------------------------------------- 3. frame types
@pytest.mark.parametrize("name, cards, expected, rule, note", [
    # A calibration word in the name beats the capture program's default 'Light Frame'.
    ("flat-expos23s-001.fits", {}, "flat", "file name",
     "flat from file name flat-expos23s-001.fits; IMAGETYP says 'Light Frame'"),
    ("Flat/frame0001.fit", {}, "flat", "file name",
     "flat from folder name Flat; IMAGETYP says 'Light Frame'"),
    ("darks/m_004.fits", {"IMAGETYP": "science"}, "dark", "file name",
     "dark from folder name darks; IMAGETYP says 'science'"),
    ("Zero_001.fits", {"IMAGETYP": "OBJECT"}, "bias", "file name",
     "bias from file name Zero_001.fits; IMAGETYP says 'OBJECT'"),
    # A calibration word of the keyword wins, and a disagreeing name is noted.
    ("flat_003.fits", {"IMAGETYP": "Dark Frame"}, "dark", "IMAGETYP = Dark Frame",
     "IMAGETYP says 'Dark Frame', the file name flat_003.fits says flat: IMAGETYP is "
     "trusted"),
    # Lower case and odd blanks.
    ("a.fits", {"IMAGETYP": "bias"}, "bias", "IMAGETYP = bias", ""),
    ("b.fits", {"IMAGETYP": "science"}, "science", "IMAGETYP = science", ""),
    ("c.fits", {"IMAGETYP": "Bias Frame "}, "bias", "IMAGETYP = Bias Frame", ""),
    ("d.fits", {"IMAGETYP": "  dark   frame"}, "dark", "IMAGETYP = dark frame", ""),
    ("e.fits", {"IMAGETYP": None, "OBSTYPE": "FLAT"}, "flat", "OBSTYPE = FLAT", ""),
    # No type at all and light in it: science, guessed.
    ("IC310_1.fits", {"IMAGETYP": None, "EXPTIME": "40      "}, "science", "guessed",
     "type guessed: science (no image type in header or file name, exposure 40 s)"),
    # A word of a name counts whole: a neon lamp saved without CCDSoft's auto-dark, a
    # sky spectrum, a field named for its zero point are no dark or bias frames.
    ("spec_neon_1s.00000001.NOAUTODARK.FIT", {}, "science", "IMAGETYP = Light Frame", ""),
    ("DarkSky-300s.fit", {}, "science", "IMAGETYP = Light Frame", ""),
    ("zeropoint_field.fits", {"IMAGETYP": "OBJECT"}, "science", "IMAGETYP = OBJECT", ""),
    # ... and plurals, parts between digits and dots, compounds of a type word do count.
    ("Dark120_01.fit", {}, "dark", "file name",
     "dark from file name Dark120_01.fit; IMAGETYP says 'Light Frame'"),
    ("biases-Neg5-Vis.00000003.BIAS.FIT", {}, "bias", "file name",
     "bias from file name biases-Neg5-Vis.00000003.BIAS.FIT; IMAGETYP says 'Light Frame'"),
    ("skyflat_V_02.fits", {}, "flat", "file name",
     "flat from file name skyflat_V_02.fits; IMAGETYP says 'Light Frame'"),
    # OBJECT that is exactly a calibration word: weaker than the type keyword's
    # calibration word, stronger than its 'object'.
    ("n1_0042.fits", {"IMAGETYP": None, "OBSTYPE": "OBJECT", "OBJECT": "sky flat"}, "flat",
     "OBJECT = sky flat", "flat from OBJECT = 'sky flat'; OBSTYPE says 'OBJECT'"),
    ("n1_0043.fits", {"IMAGETYP": None, "OBSTYPE": "OBJECT", "OBJECT": "Dome  Flat "},
     "flat", "OBJECT = Dome Flat", "flat from OBJECT = 'Dome  Flat'; OBSTYPE says 'OBJECT'"),
    ("n1_0044.fits", {"IMAGETYP": "Bias Frame", "EXPTIME": 0.0, "OBJECT": "Dark"}, "bias",
     "IMAGETYP = Bias Frame", ""),
    ("n1_0045.fits", {"IMAGETYP": "OBJECT", "OBJECT": "flat field of M31"}, "science",
     "IMAGETYP = OBJECT", ""),
    # A dark of 0 s is a bias, whatever typed it.
    ("n1_0046.fits", {"IMAGETYP": None, "OBSTYPE": "DARK", "EXPTIME": 0.0,
                      "OBJECT": "bias"}, "bias", "OBSTYPE = DARK",
     "a dark of 0 s is a bias (OBSTYPE = DARK)"),
    ("dark_0s_001.fits", {"IMAGETYP": None, "EXPTIME": 0}, "bias", "file name",
     "a dark of 0 s is a bias (file name)"),
])
def test_frame_type_rules(tmp_path, name, cards, expected, rule, note):
    _, frame = one_frame(tmp_path, science(**cards), name=name)
    assert (frame["type"], frame["type_rule"], frame["notes"], frame["problem"]) == \
        (expected, rule, note, "")


def test_override_beats_header_and_name(tmp_path):
    _, frame = one_frame(tmp_path, science(IMAGETYP="Bias Frame"), name="flat_1.fits",
                         image_types={"flat_*": "science"})
    assert (frame["type"], frame["type_rule"], frame["notes"]) == ("science", "override", "")


@pytest.mark.parametrize("cards", [
    {"IMAGETYP": None, "EXPTIME": 0.0},
    {"IMAGETYP": "focus", "EXPTIME": 0.0},
    # A word the profile does not know says what the frame is: no science frame to guess.
    {"IMAGETYP": "focus", "EXPTIME": 2.5},
    {"IMAGETYP": "arc", "EXPTIME": 30.0},
    {"IMAGETYP": None, "EXPTIME": None},
])
def test_no_type_and_no_light_is_a_problem(tmp_path, cards):
    _, frame = one_frame(tmp_path, science(**cards), name="image_7.fits")
    assert frame["type"] == ""
    assert frame["problem_kind"] == "HeaderError"
    assert "IMAGETYP" in frame["problem"]


# -------------------------------------------------------------------- 4. temperatures
@pytest.mark.parametrize("profile, cards, temperature, set_temperature", [
    ("generic", {"SET-TEMP": -10.0, "CCD-TEMP": -9.6}, -9.6, -10.0),
    ("generic", {"SET-TEMP": -10.0}, -10.0, -10.0),
    ("generic", {"CCD-TEMP": 25.3}, 25.3, math.nan),
    ("generic", {"CCDTEMP": "-110.5"}, -110.5, math.nan),
    ("generic", {"TEMP": 12.0}, 12.0, math.nan),
    ("generic", {"SETTEMP": -20, "CCD-TEMP": -19.8}, -19.8, -20.0),
    ("generic", {}, math.nan, math.nan),
    # Profiles listing SET-TEMP under `temperature` keep working.
    ("maxim-ccdsoft", {"SET-TEMP": -5.0, "CCD-TEMP": -5.23}, -5.23, -5.0),
    ("maxim-ccdsoft", {"SET-TEMP": -5.0}, -5.0, -5.0),
    ("dot-tircam2", {"DET-TEMP": 77.5}, 77.5, math.nan),
])
def test_measured_and_set_temperatures(tmp_path, profile, cards, temperature,
                                       set_temperature):
    night, frame = one_frame(tmp_path, science(**cards), name="obj_1.fits", profile=profile)
    assert night.frames["temperature"].dtype == np.float64
    assert night.frames["set_temperature"].dtype == np.float64
    np.testing.assert_equal([frame["temperature"], frame["set_temperature"]],
                            [temperature, set_temperature])
    assert frame["problem"] == ""


def test_profile_names_its_set_point_keyword(tmp_path):
    toml = tmp_path / "cam.toml"
    toml.write_text('schema_version = 1\nname = "cam"\ndescription = "a camera"\n'
                    '[keywords]\ntemperature = ["SET-TEMP", "TEMPDET"]\n'
                    'set_temperature = ["SETPOINT"]\n'
                    '[image_types]\nscience = ["light frame"]\n')
    profile = get_profile(toml)
    header = fits.Header({"SETPOINT": -30.0, "TEMPDET": -29.5, "SET-TEMP": -99.0})
    # SET-TEMP is not a set point for this camera: its first temperature keyword.
    assert profile.temperature(header) == -99.0
    assert profile.set_temperature(header) == -30.0
    assert profile.temperature(fits.Header({"SETPOINT": -30.0})) == -30.0


# ----------------------------------------------------------------- 5. header sections
@pytest.mark.parametrize("cards, note", [
    ({"BIASSEC": "[0,513:0,1536]"},
     "BIASSEC = '[0,513:0,1536]' is not a FITS section: overscan not subtracted"),
    ({"DATASEC": "[513,513:1536,1536]"},
     "DATASEC = '[513,513:1536,1536]' is not a FITS section: frame not trimmed"),
    ({"TRIMSEC": "[1:30,1:16]"},
     "TRIMSEC = '[1:30,1:16]' lies outside the image: it reaches column 30, but the image "
     "has only 20 columns: frame not trimmed"),
    ({"BIASSEC": "[19:20,1:17]"},
     "BIASSEC = '[19:20,1:17]' lies outside the image: it reaches row 17, but the image "
     "has only 16 rows: overscan not subtracted"),
    ({"BIASSEC": "[19:20,*]", "TRIMSEC": "[1:18,*]"}, ""),
])
def test_unusable_section_keyword_is_a_note(tmp_path, cards, note):
    night, frame = one_frame(tmp_path, science(**cards))
    assert (frame["problem"], frame["notes"]) == ("", note)
    plan = night.plan()
    assert plan[plan["file"] == "frame.fits"]["notes"][0].startswith(note)


def test_section_check_helper():
    section = DetectorSection(keywords=("TRIMSEC", "DATASEC"), required=False)
    header = fits.Header({"DATASEC": "[513,513:1536,1536]"})
    assert section.unusable((1536, 1536), header) == \
        "DATASEC = '[513,513:1536,1536]' is not a FITS section"
    assert section.unusable((1536, 1536), fits.Header({"DATASEC": "[1:1536,*]"})) is None
    assert section.unusable((1536, 1024), fits.Header({"DATASEC": "[1:1536,*]"})) == \
        ("DATASEC = '[1:1536,*]' lies outside the image: it reaches column 1536, but the "
         "image has only 1024 columns")
    assert section.unusable((1536, 1536), fits.Header()) is None
    # A profile's own section is checked when the profile is loaded, not here.
    assert DetectorSection(fits="[1:2048,*]").unusable((10, 10), fits.Header()) is None


# ------------------------------------------------------------------- 5b. binning
@pytest.mark.parametrize("cards, binning", [
    ({"CCDSUM": "1 2"}, (1, 2)),
    ({"XBINNING": 3, "YBINNING": 3}, (3, 3)),
    ({"CCDXBIN": 2, "CCDYBIN": 1}, (2, 1)),
    ({"XBIN": "4", "YBIN": "4"}, (4, 4)),
    ({"BINX": 2, "BINY": 2}, (2, 2)),
    ({"HBIN": 1, "VBIN": 2}, (1, 2)),
    ({"CCDBIN1": 2, "CCDBIN2": 2}, (2, 2)),
    ({"BINNING": "2x2"}, (2, 2)),
    ({"BINNING": 3}, (3, 3)),
    # One card of a pair says nothing: the next way of writing it is read.
    ({"XBIN": 2, "BINNING": "1x1"}, (1, 1)),
    ({}, (1, 1)),
])
def test_binning_as_cameras_write_it(tmp_path, cards, binning):
    _, frame = one_frame(tmp_path, science(**cards))
    assert (int(frame["xbin"]), int(frame["ybin"]), frame["problem"]) == (*binning, "")


def _binned_spectrograph_frame(path, *, biassec):
    """A frame of 30 rows binned 1x2 (60 detector rows), 26 columns: columns 1-6 an
    overscan at 500 + 2 per row, columns 7-26 data at 1500 + 2 per row."""
    rows = np.arange(30, dtype=np.float32)[:, np.newaxis]
    data = np.empty((30, 26), dtype=np.float32)
    data[:, :6] = 500 + 2 * rows
    data[:, 6:] = 1500 + 2 * rows
    write = {"IMAGETYP": "OBJECT", "EXPTIME": 30.0, "CCDSUM": "1 2", "BIASSEC": biassec,
             "TRIMSEC": "[7:26,1:60]"}
    header = fits.Header(write)
    fits.PrimaryHDU(data, header).writeto(path)
    return data


def test_sections_in_unbinned_pixels_are_divided_by_the_binning(tmp_path):
    """BIASSEC and TRIMSEC written in detector pixels on a frame binned 1x2 are used in
    its own pixels, with a note; the overscan is subtracted and the frame trimmed."""
    _binned_spectrograph_frame(tmp_path / "arc_001.fits", biassec="[1:6,1:60]")
    night = NightCollection(tmp_path)
    frame = night.frames[0]
    assert frame["problem"] == ""
    assert frame["notes"] == (
        "BIASSEC = '[1:6,1:60]' is in unbinned pixels: used as [1:6,1:30] on this frame "
        "binned 1x2; TRIMSEC = '[7:26,1:60]' is in unbinned pixels: used as [7:26,1:30] on "
        "this frame binned 1x2")
    calibrated = calibrate_frame(tmp_path / "arc_001.fits")
    # Overscan 500 + 2 row, data 1500 + 2 row: 1000 everywhere once subtracted per row.
    assert calibrated.shape == (30, 20)
    np.testing.assert_allclose(calibrated.data, 1000.0)
    assert calibrated.header["OVERSCAN"].startswith("[1:6,1:30]")
    assert calibrated.header["TRIM"] == "[7:26,1:30]"


def test_a_section_that_fits_neither_way_is_noted(tmp_path):
    _binned_spectrograph_frame(tmp_path / "arc_001.fits", biassec="[1:6,1:90]")
    frame = NightCollection(tmp_path).frames[0]
    assert frame["notes"].startswith(
        "BIASSEC = '[1:6,1:90]' lies outside the image: it reaches row 90, but the image "
        "has only 30 rows: overscan not subtracted")


def test_masters_never_mix_binnings(tmp_path):
    """Biases of two binnings make two masters; each frame gets the one of its binning."""
    for i, (xbin, shape) in enumerate(((1, (16, 20)), (1, (16, 20)), (2, (16, 20)),
                                       (2, (16, 20)))):
        write_frame(tmp_path / f"bias_{i}.fits", {"IMAGETYP": "BIAS", "EXPTIME": 0.0,
                                                  "XBIN": xbin, "YBIN": xbin, "FRAMENO": i},
                    shape=shape)
    for xbin in (1, 2):
        write_frame(tmp_path / f"m31_{xbin}.fits", science(XBIN=xbin, YBIN=xbin))
    plan = NightCollection(tmp_path).plan()
    masters = plan.meta["masters"]
    assert sorted((m["group"], m["files"]) for m in masters) == [
        ("16x20, binning 1x1", "bias_0.fits,bias_1.fits"),
        ("16x20, binning 2x2", "bias_2.fits,bias_3.fits")]
    bias_of = {str(r["file"]): str(r["bias"]) for r in plan}
    by_group = {str(m["group"]): str(m["name"]) for m in masters}
    assert bias_of["m31_1.fits"] == by_group["16x20, binning 1x1"]
    assert bias_of["m31_2.fits"] == by_group["16x20, binning 2x2"]


# ----------------------------------------------------------------- 6. real frames
def test_real_tircam2_with_the_generic_profile(real_data):
    night = NightCollection(real_data / "dot-tircam2")
    assert night.count_by_type() == {"bias": 3, "dark": 0, "flat": 5, "science": 5}
    science_frames = night.frames_of_type("science")
    assert sorted(science_frames["file"]) == [f"IC310_{i}.fits" for i in range(1, 6)]
    assert set(science_frames["type_rule"]) == {"guessed"}
    assert set(science_frames["notes"]) == {
        "type guessed: science (no image type in header or file name, exposure 40 s)"}
    for image_type, exposure, filter_name in (("bias", 0.0, "BLOCK"), ("flat", 6.0, "J"),
                                              ("science", 40.0, "J")):
        frames = night.frames_of_type(image_type)
        assert set(frames["exposure"]) == {exposure}
        assert set(frames["filter"]) == {filter_name}  # FILTER1, with FILTER2 = 'None'
    plan = night.plan()
    # The plan adds what it knows of the night (no darks) after the frame's own notes.
    for plan_note, frame_note in zip(plan[plan["type"] == "science"]["notes"],
                                     science_frames["notes"], strict=True):
        assert plan_note.startswith(frame_note)


def test_real_sbig_with_the_generic_profile(real_data):
    night = NightCollection(real_data / "sbig-stl1001e")
    assert night.count_by_type() == {"bias": 20, "dark": 22, "flat": 10, "science": 0}
    flats = night.frames_of_type("flat")
    assert sorted(flats["file"]) == [f"flat-expos23s-Neg5-Vis.{i:08d}.FIT" for i in range(10)]
    assert list(flats["notes"]) == [f"flat from file name {name}; IMAGETYP says 'Light Frame'"
                                    for name in flats["file"]]
    assert sorted(set(night.frames["set_temperature"])) == [-10.0, -5.0]
    # CCD-TEMP, measured, is within half a degree of its set point on this camera.
    offset = night.frames["temperature"] - night.frames["set_temperature"]
    assert np.all(np.abs(offset) < 0.5) and np.any(offset != 0)
    assert set(night.frames["filter"]) == {"Visible"}


def test_real_zwo_with_the_generic_profile(real_data):
    night = NightCollection(real_data / "zwo-asi178")
    expected = {"Bias": "bias", "Dark": "dark", "Flat": "flat"}
    for frame in night.frames:
        assert frame["type"] == expected[frame["file"].split("/")[0]]
    assert set(night.frames["problem_kind"]) == {"", "FrameReadError"}
    biases = night.frames_of_type("bias")
    assert len(biases) == 5
    assert np.allclose(biases["exposure"], 3.2e-05)  # EXPTIME = '3,2E-05'
    assert np.all(np.isnan(night.frames["set_temperature"]))
    assert np.all((night.frames["temperature"] > 30) & (night.frames["temperature"] < 40))
