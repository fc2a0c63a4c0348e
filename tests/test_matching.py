"""Tests of calibration matching: `find_nearest_dark_exposure`,
`NightCollection.nearest_dark` and the plan (`ccdproc_ext.matching`).

Synthetic nights are tiny (16 x 20 pixels); several `simulate_night` calls with different
prefixes share a folder to mix binnings, temperatures, filters and nights. Every expected
master is found in the plan's table of masters by the properties the rules say it must
have (kind, exposure, temperature, filter, night, group), never by copying the code's
output.
"""

import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.time import Time

from ccdproc_ext import (
    CalibrationMatchError,
    HeaderError,
    NightCollection,
    find_nearest_dark_exposure,
    get_profile,
)
from ccdproc_ext.simulate import simulate_night

SHAPE = (16, 20)
DARKS = (10.0, 30.0, 60.0, 300.0)
PLAN_COLUMNS = ["file", "type", "type_rule", "group", "night", "exposure", "filter",
                "temperature", "set_temperature", "date_obs", "bias", "bias_rule", "bias_dtime",
                "bias_dtemperature", "dark", "dark_rule", "dark_exposure", "dark_dexposure",
                "dark_scale", "dark_dtime", "dark_dtemperature", "flat", "flat_rule", "flat_dtime",
                "flat_dtemperature", "status", "problem", "problem_kind", "notes", "edit"]


def master(plan, kind, **properties):
    """The name of the one master of ``kind`` that has ``properties``."""
    masters = plan.meta["masters"]
    selected = masters["kind"] == kind
    for key, value in properties.items():
        selected &= masters[key] == value
    assert selected.sum() == 1, f"{selected.sum()} {kind} masters with {properties}"
    return str(masters["name"][selected][0])


def plan_row(plan, file):
    """The plan's row of the file whose name ends with ``file``."""
    rows = plan[[str(f).endswith(file) for f in plan["file"]]]
    assert len(rows) == 1, f"{len(rows)} rows for {file}"
    return rows[0]


def simulate(folder, **kwargs):
    """A tiny generic night; ``kwargs`` override the defaults."""
    options = dict(shape=SHAPE, n_bias=2, dark_exposures=(10.0, 60.0), n_dark=2,
                   filters=("R",), flat_exposure=10.0, n_flat=2, n_science=1,
                   science_exposure=60.0, n_stars=1)
    options.update(kwargs)
    return simulate_night(folder, "generic", **options)


def hours_between(date, dates):
    """|date - mean(dates)| in hours, from the simulation's ISO times."""
    mean = np.mean(Time(list(dates), format="isot", scale="utc").mjd)
    return abs(Time(date, format="isot", scale="utc").mjd - mean) * 24.0


# --------------------------------------------------------- find_nearest_dark_exposure
@pytest.mark.parametrize("exposure, darks, tolerance, expected", [
    (30.0, DARKS, 0.5, 30.0),               # exact match
    (30.4, DARKS, 0.5, 30.0),               # within the tolerance
    (30.5, DARKS, 0.5, 30.0),               # at the tolerance: accepted
    (10.6, (10.1, 60.0), 0.5, 10.1),        # at the tolerance, in decimal seconds
    (45.0, DARKS, None, 60.0),              # 30 and 60 equidistant: the longer dark
    (45.0, (60.0, 30.0), None, 60.0),       # whatever the order of the list
    (0.3, (0.2, 0.4), None, 0.4),           # a tie in decimal seconds is still a tie
    (20.0, (10, 30), None, 30.0),           # integers are fine
    (100.0, DARKS, None, 60.0),
    (200.0, DARKS, None, 300.0),
    (1000.0, DARKS, None, 300.0),
    (2.0, DARKS, None, 10.0),
    (45.0, DARKS, 15.0, 60.0),              # a wide tolerance accepts it
    (30.0, (30.0, 30.0, 60.0), 0.5, 30.0),  # repeated times
])
def test_find_nearest_dark_exposure(exposure, darks, tolerance, expected):
    assert find_nearest_dark_exposure(exposure, darks, tolerance=tolerance) == expected


@pytest.mark.parametrize("exposure, darks, tolerance, words", [
    (45.0, DARKS, 0.5, ["image exposure 45 s", "closest dark is 60 s", "15 s away",
                        "tolerance of 0.5 s"]),
    (31.0, DARKS, 0.5, ["image exposure 31 s", "closest dark is 30 s", "1 s away"]),
    (45.0, DARKS, 14.9, ["45 s", "60 s", "14.9 s"]),
    (5.0, (), 0.5, ["image exposure 5 s", "there are no darks"]),
    (5.0, [], None, ["there are no darks"]),
])
def test_find_nearest_dark_exposure_errors(exposure, darks, tolerance, words):
    with pytest.raises(CalibrationMatchError) as error:
        find_nearest_dark_exposure(exposure, darks, tolerance=tolerance)
    for word in words:
        assert word in str(error.value)


def test_find_nearest_dark_exposure_default_tolerance():
    assert find_nearest_dark_exposure(60.5, DARKS) == 60.0
    with pytest.raises(CalibrationMatchError, match=r"tolerance of 0\.5 s"):
        find_nearest_dark_exposure(61.0, DARKS)


@pytest.mark.parametrize("image", [
    45.0,
    45,
    np.float32(45.0),
    np.int64(45),
    fits.Header({"EXPTIME": 45.0}),
    fits.Header({"EXPOSURE": 45.0}),
    fits.Header({"EXPTIME": "45      "}),
    {"EXPTIME": 45.0},
    CCDData(np.zeros((2, 2)), unit="adu", meta={"EXPTIME": 45.0}),
    CCDData(np.zeros((2, 2)), unit="adu", meta=fits.Header({"EXPOSURE": "45"})),
], ids=["float", "int", "float32", "int64", "header", "header-EXPOSURE", "header-string",
        "dict", "ccddata", "ccddata-header"])
def test_find_nearest_dark_exposure_reads_the_image(image):
    assert find_nearest_dark_exposure(image, DARKS, tolerance=None) == 60.0


def test_find_nearest_dark_exposure_with_a_profile():
    # The generic profile also knows ITIME.
    header = fits.Header({"ITIME": 45.0})
    assert find_nearest_dark_exposure(header, DARKS, tolerance=None,
                                      profile=get_profile("generic")) == 60.0


@pytest.mark.parametrize("image, error, match", [
    (fits.Header({"OBJECT": "m31"}), HeaderError, "EXPTIME, EXPOSURE"),
    (fits.Header({"EXPTIME": "forty"}), HeaderError, "EXPTIME = 'forty' is not a number"),
    ("45", TypeError, "not str"),
    ([45.0], TypeError, "not list"),
])
def test_find_nearest_dark_exposure_bad_image(image, error, match):
    with pytest.raises(error, match=match):
        find_nearest_dark_exposure(image, DARKS, tolerance=None)


# ------------------------------------------------------------ NightCollection.nearest_dark
@pytest.fixture(scope="module")
def calibrations(tmp_path_factory):
    """Biases, darks of 10, 30, 60 and 300 s, R flats of 10 s; no science frame."""
    folder = tmp_path_factory.mktemp("calibrations")
    simulate(folder, dark_exposures=DARKS, n_science=0)
    return sorted(folder.iterdir())


@pytest.mark.parametrize("image, tolerance, expected", [
    (45.0, np.inf, 60.0),
    (45.0, 20.0, 60.0),
    (30.2, None, 30.0),       # None: the profile's tolerance, 0.5 s
    (25.0, np.inf, 30.0),
    (1000.0, np.inf, 300.0),
    (fits.Header({"EXPTIME": 45.0}), np.inf, 60.0),
    (CCDData(np.zeros((2, 2)), unit="adu", meta={"EXPTIME": 45.0}), np.inf, 60.0),
])
def test_nearest_dark(calibrations, image, tolerance, expected):
    night = NightCollection(calibrations)
    assert night.nearest_dark(image, tolerance=tolerance) == expected


def test_nearest_dark_of_a_file_in_the_collection(calibrations):
    night = NightCollection(calibrations)
    flat = night.frames_of_type("flat")["file"][0]
    assert night.nearest_dark(flat) == 10.0


@pytest.mark.parametrize("exposure, tolerance, words", [
    (45.0, None, ["45 s", "60 s", "tolerance of 0.5 s"]),
    (45.0, 10.0, ["45 s", "60 s", "tolerance of 10 s"]),
    (1000.0, 1.0, ["1000 s", "300 s"]),
])
def test_nearest_dark_over_the_tolerance(calibrations, exposure, tolerance, words):
    night = NightCollection(calibrations)
    with pytest.raises(CalibrationMatchError) as error:
        night.nearest_dark(exposure, tolerance=tolerance)
    for word in words:
        assert word in str(error.value)


def test_nearest_dark_without_darks(tmp_path):
    simulate(tmp_path, dark_exposures=())
    with pytest.raises(CalibrationMatchError, match="there are no darks"):
        NightCollection(tmp_path).nearest_dark(60.0, tolerance=np.inf)


# ----------------------------------------------------------------- the plan: darks
@pytest.mark.parametrize(
    "exposure, scale_darks, dark_tolerance, dark_exposure, scale, problem", [
        (30.0, False, None, 30.0, 1.0, None),      # exact match
        (30.0, True, None, 30.0, 1.0, None),       # exact: no scaling even when allowed
        (60.3, False, None, 60.0, 1.0, None),      # within 0.5 s: used as it is
        (45.0, True, None, 60.0, 0.75, None),      # tie 30/60: the longer, scaled 45/60
        (45.0, False, None, None, None, ["frame exposure 45 s", "closest dark is 60 s",
                                         "15 s away", "dark scaling is off (scale_darks="
                                         "False was passed); allow it with scale_darks=True "
                                         "or --scale-darks"]),
        (45.0, False, 15.0, 60.0, 1.0, None),      # tolerance 15 s: unscaled
        (100.0, True, None, 60.0, 100 / 60, None),  # 40 s from 60, 200 s from 300
        (200.0, True, None, 300.0, 200 / 300, None),
        (2.0, True, None, 10.0, 0.2, None),
        (2.0, False, None, None, None, ["frame exposure 2 s", "closest dark is 10 s"]),
    ])
def test_plan_dark_of_a_science_frame(calibrations, tmp_path, exposure, scale_darks,
                                      dark_tolerance, dark_exposure, scale, problem):
    science = simulate(tmp_path, n_bias=0, dark_exposures=(), n_flat=0,
                       science_exposure=exposure).paths("science")
    night = NightCollection(calibrations + science)
    plan = night.plan(scale_darks=scale_darks, dark_tolerance=dark_tolerance)
    row = plan_row(plan, science[0].name)
    assert row["type"] == "science"
    assert row["exposure"] == exposure
    assert row["bias"] == master(plan, "bias")
    assert row["flat"] == master(plan, "flat", filter="R")
    if problem is None:
        assert row["status"] == "ok"
        assert row["problem"] == ""
        assert row["dark"] == master(plan, "dark", exposure=dark_exposure)
        assert row["dark_exposure"] == dark_exposure
        assert row["dark_dexposure"] == pytest.approx(dark_exposure - exposure)
        assert row["dark_scale"] == pytest.approx(scale)
        if scale == 1.0:
            assert f"exposure {dark_exposure:g} s within" in row["dark_rule"]
        else:
            assert (f"scaled {dark_exposure:g} s -> {exposure:g} s (no dark within 0.5 s"
                    in row["dark_rule"])
        assert row["dark_dtemperature"] == 0.0
        assert row["dark_dtime"] >= 0
    else:
        assert row["status"] == "problem"
        assert row["dark"] == ""
        assert row["dark_rule"] == "no match"
        assert math.isnan(row["dark_scale"])
        for word in problem:
            assert word in row["problem"]
    assert plan.meta["scale_darks"] is scale_darks


@pytest.mark.parametrize("exposure_card, dark_exposure", [
    ("60      ", 60.0),   # EXPTIME = '60      ', as TIRCAM2 writes it
    ("10", 10.0),
    (" 30.0 ", 30.0),
])
def test_plan_frame_with_a_string_exposure_time(calibrations, tmp_path, exposure_card,
                                                dark_exposure):
    header = fits.Header({"IMAGETYP": "object", "EXPTIME": exposure_card, "FILTER": "R",
                          "DATE-OBS": "2024-03-05T02:00:00", "CCDSUM": "1 1",
                          "SET-TEMP": -10.0})
    frame = tmp_path / "m51.fits"
    fits.PrimaryHDU(np.zeros(SHAPE, dtype=np.uint16), header=header).writeto(frame)
    plan = NightCollection([*calibrations, frame]).plan()
    row = plan_row(plan, "m51.fits")
    assert (row["status"], row["exposure"]) == ("ok", dark_exposure)
    assert row["dark"] == master(plan, "dark", exposure=dark_exposure)
    assert (row["dark_dexposure"], row["dark_scale"]) == (0.0, 1.0)


def test_plan_scaling_from_the_profile(tmp_path):
    # dot-tircam2 allows scaled darks; the generic profile does not.
    simulate_night(tmp_path, "dot-tircam2", shape=SHAPE, n_bias=1, dark_exposures=(60.0,),
                   n_dark=1, filters=("J",), flat_exposure=60.0, n_flat=1, n_science=1,
                   science_exposure=45.0, n_stars=1)
    plan = NightCollection(tmp_path, profile="dot-tircam2").plan()
    row = plan_row(plan, "object_J_001.fits")
    assert (row["status"], row["dark_scale"]) == ("ok", 0.75)
    assert NightCollection(tmp_path, profile="dot-tircam2").plan(
        scale_darks=False)["status"].tolist().count("problem") == 1


def test_dark_chosen_by_exposure_first_then_nearest_in_time(tmp_path):
    # Night 1 has 60 s darks; night 2 only 30 s darks. A 60 s frame of night 2 gets the
    # 60 s dark of night 1 (exposure first), but the bias and flat of its own night.
    simulate(tmp_path, prefix="a_", dark_exposures=(10.0, 60.0), n_science=0)
    simulate(tmp_path, prefix="b_", dark_exposures=(10.0, 30.0), start="2024-03-06T01:00:00")
    plan = NightCollection(tmp_path).plan()
    row = plan_row(plan, "object_b_R_001.fits")
    assert (row["night"], row["status"]) == (2, "ok")
    assert row["dark"] == master(plan, "dark", exposure=60.0, night=1)
    assert row["dark_dtime"] == pytest.approx(24.0, abs=0.5)
    assert row["bias"] == master(plan, "bias", night=2)
    assert row["flat"] == master(plan, "flat", night=2)
    assert row["bias_dtime"] < 0.5


# ------------------------------------------------------------------- the plan: groups
def test_plan_two_filters(tmp_path):
    simulate(tmp_path, filters=("V", "R"), science_filters=("V", "R", "B"))
    plan = NightCollection(tmp_path).plan()
    for filter_name in ("V", "R"):
        row = plan_row(plan, f"object_{filter_name}_001.fits")
        assert row["status"] == "ok"
        assert row["flat"] == master(plan, "flat", filter=filter_name)
        assert row["flat_rule"] == f"same group, filter {filter_name}"
    row = plan_row(plan, "object_B_001.fits")
    assert row["status"] == "problem"
    assert row["problem"] == "no flat in filter 'B'; flats exist for 'R', 'V'"
    assert (row["flat"], row["flat_rule"]) == ("", "no match")
    # Only the flat is missing: the bias and the dark are still chosen.
    assert row["bias"] == master(plan, "bias")
    assert row["dark"] == master(plan, "dark", exposure=60.0)


def test_plan_two_binnings(tmp_path):
    simulate(tmp_path, prefix="b1_", binning=(1, 1), shape=(16, 20))
    simulate(tmp_path, prefix="b2_", binning=(2, 2), shape=(8, 10))
    plan = NightCollection(tmp_path).plan()
    masters = plan.meta["masters"]
    assert sorted(masters[masters["kind"] == "bias"]["group"]) == [
        "16x20, binning 1x1", "8x10, binning 2x2"]
    for prefix, group in (("b1_", "16x20, binning 1x1"), ("b2_", "8x10, binning 2x2")):
        row = plan_row(plan, f"object_{prefix}R_001.fits")
        assert (row["status"], row["group"]) == ("ok", group)
        assert row["bias"] == master(plan, "bias", group=group)
        assert row["dark"] == master(plan, "dark", group=group, exposure=60.0)
        assert row["flat"] == master(plan, "flat", group=group)
        # Calibration frames are matched within their binning too.
        flat = plan_row(plan, f"flat_{prefix}R_001.fits")
        assert flat["dark"] == master(plan, "dark", group=group, exposure=10.0)


@pytest.mark.parametrize("shape, binning, group", [
    ((8, 10), (2, 2), "8x10, binning 2x2"),
    ((16, 20), (2, 2), "16x20, binning 2x2"),     # same shape, other binning
    ((16, 24), (1, 1), "16x24, binning 1x1"),     # same binning, other shape
])
def test_plan_frame_matching_no_calibration_group(tmp_path, shape, binning, group):
    simulate(tmp_path, n_science=0)
    simulate(tmp_path, prefix="odd_", n_bias=0, dark_exposures=(), n_flat=0, shape=shape,
             binning=binning)
    plan = NightCollection(tmp_path).plan()
    row = plan_row(plan, "object_odd_R_001.fits")
    assert row["status"] == "problem"
    # A group without biases is a night without them: the step is skipped, with a note
    # (its darks would hold the bias); a dark or flat of another group is a problem.
    assert (row["bias"], row["bias_rule"]) == ("", "no bias of this group: step skipped")
    assert (f"no bias frames of {group} (the bias frames are: 16x20, binning 1x1): not "
            "bias-subtracted" in row["notes"])
    for kind in ("dark", "flat"):
        assert (row[kind], row[f"{kind}_rule"]) == ("", "no match")
        assert (f"no {kind} matches {group}; the {kind} frames are: 16x20, binning 1x1"
                in row["problem"])


@pytest.mark.parametrize("temperature, strict, expected_temperature, words", [
    (-10.0, False, -10.0, None),
    (-5.0, False, -5.0, None),
    (-9.5, False, -10.0, None),     # within the generic profile's 1 C
    (-5.8, False, -5.0, None),
    (-5.8, True, -5.0, None),       # strict changes nothing within the tolerance
    # Over the tolerance: the nearest is used, and the row says so.
    (-20.0, False, -10.0, "at -10 C, 10 C from the frame (tolerance 1 C)"),
    (-3.5, False, -5.0, "at -5 C, 1.5 C from the frame (tolerance 1 C)"),
    # Strict temperature matching: a problem instead.
    (-7.5, True, None, "no bias within 1 C of the frame's -7.5 C; the bias frames are at "
                       "-10 C, -5 C (strict temperature matching: strict_temperature=True)"),
    (-20.0, True, None, "no dark within 1 C of the frame's -20 C"),
])
def test_plan_two_temperatures(tmp_path, temperature, strict, expected_temperature, words):
    simulate(tmp_path, prefix="cold_", temperature=-10.0, n_science=0)
    simulate(tmp_path, prefix="warm_", temperature=-5.0, n_science=0)
    simulate(tmp_path, prefix="sci_", temperature=temperature, n_bias=0, dark_exposures=(),
             n_flat=0)
    plan = NightCollection(tmp_path).plan(strict_temperature=strict)
    masters = plan.meta["masters"]
    # Biases are split by set temperature.
    biases = masters[masters["kind"] == "bias"]
    assert sorted(biases["temperature"]) == [-10.0, -5.0]
    assert list(biases["n_frames"]) == [2, 2]
    row = plan_row(plan, "object_sci_R_001.fits")
    if expected_temperature is None:
        assert row["status"] == "problem"
        assert words in row["problem"]
        return
    assert row["status"] == "ok"
    for kind, extra in (("bias", {}), ("dark", {"exposure": 60.0}), ("flat", {})):
        assert row[kind] == master(plan, kind, temperature=expected_temperature, **extra)
        assert row[f"{kind}_dtemperature"] == pytest.approx(
            expected_temperature - temperature)
        if words is None:
            assert f"{kind} at" not in row["notes"]
        else:
            assert f"{kind} {words}" in row["notes"]


def test_plan_match_keywords_must_agree(tmp_path):
    # ASIImg frames must agree on the GAIN and OFFSET settings.
    options = dict(shape=SHAPE, n_bias=2, dark_exposures=(60.0,), n_dark=1, filters=("L",),
                   flat_exposure=60.0, n_flat=1, n_stars=1)
    simulate_night(tmp_path, "zwo-asiimg", n_science=1, header_extra={"GAIN": 100,
                                                                      "OFFSET": 10},
                   prefix="g100_", **options)
    simulate_night(tmp_path, "zwo-asiimg", n_science=0, header_extra={"GAIN": 0,
                                                                      "OFFSET": 10},
                   prefix="g0_", **options)
    simulate_night(tmp_path, "zwo-asiimg", n_science=1, n_bias=0, dark_exposures=(),
                   n_flat=0, header_extra={"GAIN": 200, "OFFSET": 10}, prefix="g200_",
                   **{k: v for k, v in options.items() if k not in ("n_bias", "n_flat",
                                                                    "dark_exposures")})
    plan = NightCollection(tmp_path, profile="zwo-asiimg").plan()
    group = "16x20, binning 1x1, GAIN=100,OFFSET=10"
    row = plan_row(plan, "light_g100_L_001.fits")
    assert (row["status"], row["group"]) == ("ok", group)
    assert row["bias"] == master(plan, "bias", group=group)
    row = plan_row(plan, "light_g200_L_001.fits")
    assert row["status"] == "problem"
    # No bias of its own settings: noted, and the step skipped as in a night without
    # biases; no dark of its own settings: a problem.
    assert ("no bias frames of 16x20, binning 1x1, GAIN=200,OFFSET=10 (the bias frames "
            "are: 16x20, binning 1x1, GAIN=0,OFFSET=10; 16x20, binning 1x1, "
            "GAIN=100,OFFSET=10)" in row["notes"])
    assert ("no dark matches 16x20, binning 1x1, GAIN=200,OFFSET=10; the dark frames are: "
            "16x20, binning 1x1, GAIN=0,OFFSET=10; 16x20, binning 1x1, GAIN=100,OFFSET=10"
            in row["problem"])


# ------------------------------------------------------------------- the plan: nights
def test_plan_two_nights_in_one_folder(tmp_path):
    night = simulate(tmp_path, nights=2)
    plan = NightCollection(tmp_path).plan()
    files = night.files
    for n in (1, 2):
        tag = f"_n{n}_"
        mine = files[[tag in f for f in files["file"]]]
        bias, dark, flat = (master(plan, kind, night=n, **extra) for kind, extra in
                            (("bias", {}), ("dark", {"exposure": 60.0}), ("flat", {})))
        science = mine[mine["type"] == "science"][0]
        row = plan_row(plan, science["file"])
        assert (row["night"], row["status"]) == (n, "ok")
        assert (row["bias"], row["dark"], row["flat"]) == (bias, dark, flat)
        # Distances in hours to the mean time of each master's frames.
        for kind in ("bias", "flat"):
            dates = mine[mine["type"] == kind]["date_obs"]
            assert row[f"{kind}_dtime"] == pytest.approx(
                hours_between(science["date_obs"], dates), abs=1e-6)
        dates = mine[(mine["type"] == "dark") & (mine["exposure"] == 60.0)]["date_obs"]
        assert row["dark_dtime"] == pytest.approx(hours_between(science["date_obs"], dates),
                                                  abs=1e-6)
        assert "nearest in time" in row["bias_rule"]
        assert plan["bias_dtime"].unit == "h"
        # Calibration frames of a night get that night's masters too.
        for frame in mine[mine["type"] == "flat"]["file"]:
            flat_row = plan_row(plan, frame)
            assert (flat_row["bias"], flat_row["dark"]) == (
                bias, master(plan, "dark", night=n, exposure=10.0))


# ------------------------------------------------------------ the plan: rows and words
def test_plan_has_a_row_for_every_frame_with_the_calibrations_it_needs(tmp_path):
    night = simulate(tmp_path)
    plan = NightCollection(tmp_path).plan()
    assert plan.colnames == PLAN_COLUMNS
    assert len(plan) == len(night.files)
    assert sorted(plan["file"]) == sorted(night.files["file"])
    assert set(plan["status"]) == {"ok"}
    needs = {"bias": (), "dark": ("bias",), "flat": ("bias", "dark"),
             "science": ("bias", "dark", "flat")}
    for row in plan:
        for kind in ("bias", "dark", "flat"):
            if kind in needs[row["type"]]:
                assert row[kind] != ""
                assert row[f"{kind}_rule"].startswith("same group")
            else:
                assert (row[kind], row[f"{kind}_rule"]) == ("", "")
                assert math.isnan(row[f"{kind}_dtime"])
    masters = plan.meta["masters"]
    assert sorted(masters["kind"]) == ["bias", "dark", "dark", "flat"]
    assert plan.meta["profile"] == "generic"
    assert plan.meta["dark_tolerance"] == 0.5


def test_plan_step_skipped_when_a_calibration_type_is_absent(tmp_path):
    simulate(tmp_path, n_bias=0, dark_exposures=())
    plan = NightCollection(tmp_path).plan()
    row = plan_row(plan, "object_R_001.fits")
    assert row["status"] == "ok"
    assert row["bias_rule"] == "no bias frames in this night: step skipped"
    assert row["dark_rule"] == "no dark frames in this night: step skipped"
    assert row["flat"] == master(plan, "flat")
    assert math.isnan(row["dark_scale"])


def test_plan_rows_for_unreadable_and_unknown_files(tmp_path):
    simulate(tmp_path)
    (tmp_path / "x.fits").write_bytes(b"not a FITS file " * 200)
    (tmp_path / "empty.fits").write_bytes(b"")
    header = fits.Header({"IMAGETYP": "focus", "EXPTIME": 1.0})
    fits.PrimaryHDU(np.zeros(SHAPE, dtype=np.uint16), header=header).writeto(
        tmp_path / "focus_1.fits")
    plan = NightCollection(tmp_path).plan()
    for name, words in (("x.fits", "cannot read the FITS header"),
                        ("empty.fits", "the file is empty")):
        row = plan_row(plan, name)
        assert (row["type"], row["status"]) == ("unreadable", "problem")
        assert words in row["problem"] and name in row["problem"]
        # Nothing is known about it: no made-up numbers.
        assert math.isnan(row["exposure"]) and math.isnan(row["dark_scale"])
        assert row["bias"] == row["dark"] == row["flat"] == ""
    row = plan_row(plan, "focus_1.fits")
    assert (row["type"], row["status"]) == ("unknown", "problem")
    assert "unknown frame type (IMAGETYP = 'focus'" in row["problem"]
    # The good frames are planned as usual.
    assert plan_row(plan, "object_R_001.fits")["status"] == "ok"


def test_plan_of_an_empty_collection(tmp_path):
    with pytest.warns(UserWarning, match="no FITS files"):
        night = NightCollection(tmp_path)
    plan = night.plan()
    assert plan.colnames == PLAN_COLUMNS
    assert len(plan) == 0
    assert len(plan.meta["masters"]) == 0


# -------------------------------------------------------------------------- real data
SBIG_LIGHT = "flat-expos23s-Neg5-Vis.00000000.FIT"


@pytest.fixture(scope="module")
def sbig(real_data):
    return real_data / "sbig-stl1001e"


def test_real_sbig_masters_split_by_temperature(sbig):
    night = NightCollection(sbig, profile="maxim-ccdsoft", image_types={"flat-*": "flat"})
    masters = night.plan().meta["masters"]
    biases = masters[masters["kind"] == "bias"]
    assert sorted(zip(biases["temperature"], biases["n_frames"], strict=True)) == [
        (-10.0, 10), (-5.0, 10)]
    darks = masters[masters["kind"] == "dark"]
    expected = [(t, e, 1) for t in (-10.0, -5.0) for e in (10, 20, 30, 60, 150, 300)]
    # The ten 'darks-expos1-*' frames are 60 s darks at -5 C: one master of eleven.
    expected[expected.index((-5.0, 60, 1))] = (-5.0, 60, 11)
    assert sorted(zip(darks["temperature"], darks["exposure"], darks["n_frames"],
                      strict=True)) == sorted(expected)
    flats = masters[masters["kind"] == "flat"]
    assert (len(flats), flats["n_frames"][0], flats["temperature"][0]) == (1, 10, -5.0)


@pytest.mark.parametrize("exposure, tolerance, expected", [
    (45.0, np.inf, 60.0),     # 30 and 60 are equidistant: the longer
    (45.0, 15.0, 60.0),
    (25.0, np.inf, 30.0),     # 20 and 30: the longer
    (60.0, None, 60.0),
    (1.0, np.inf, 10.0),      # 'expos1' darks are 60 s, not 1 s
])
def test_real_sbig_nearest_dark(sbig, exposure, tolerance, expected):
    night = NightCollection(sbig, profile="maxim-ccdsoft")
    assert night.nearest_dark(exposure, tolerance=tolerance) == expected


def test_real_sbig_nearest_dark_over_the_tolerance(sbig):
    night = NightCollection(sbig, profile="maxim-ccdsoft")
    with pytest.raises(CalibrationMatchError, match=r"45 s.*60 s"):
        night.nearest_dark(45.0)


# The flats were taken at -5 C only: a frame at -10 C gets them with a note. The flats are
# 23 s and the nearest darks 20 s: without dark scaling no master flat can be built.
@pytest.mark.parametrize("temperature, n_dark_frames", [(-5.0, 11), (-10.0, 1)])
@pytest.mark.parametrize("scale_darks", [True, False])
def test_real_sbig_45s_frame(sbig, tmp_path, temperature, n_dark_frames, scale_darks):
    # A copy of a real 'Light Frame' header, exposed 45 s, next to the real frames.
    header = fits.getheader(sbig / SBIG_LIGHT)
    header["EXPTIME"] = 45.0
    if "EXPOSURE" in header:
        header["EXPOSURE"] = 45.0
    header["SET-TEMP"] = temperature
    data = np.zeros((header["NAXIS2"], header["NAXIS1"]), dtype=np.uint16)
    frame = tmp_path / "m42-45s.fit"
    fits.PrimaryHDU(data, header=header).writeto(frame)
    files = [*sorted(sbig.glob("*.FIT")), frame]
    night = NightCollection(files, profile="maxim-ccdsoft", image_types={"flat-*": "flat"})
    plan = night.plan(scale_darks=scale_darks)
    row = plan_row(plan, "m42-45s.fit")
    assert (row["type"], row["exposure"]) == ("science", 45.0)
    assert row["bias"] == master(plan, "bias", temperature=temperature)
    if not scale_darks:
        assert row["status"] == "problem"
        assert "frame exposure 45 s: the closest dark is 60 s" in row["problem"]
        assert row["dark"] == row["flat"] == ""
        flat = master(plan, "flat", temperature=-5.0)
        assert f"master {flat} cannot be built: its 10 frames have no dark: " in row["problem"]
        assert ("flat-expos23s-Neg5-Vis.00000000.FIT: frame exposure 23 s: the closest dark "
                "is 20 s" in row["problem"])
        return
    assert row["status"] == "ok"
    assert row["flat"] == master(plan, "flat", temperature=-5.0)
    if temperature == -10.0:
        assert "flat at -5 C, 5 C from the frame (tolerance 1 C)" in row["notes"]
        assert row["flat_dtemperature"] == 5.0
    else:
        assert "flat at" not in row["notes"]
    dark = master(plan, "dark", temperature=temperature, exposure=60.0)
    assert row["dark"] == dark
    masters = plan.meta["masters"]
    assert masters[masters["name"] == dark]["n_frames"][0] == n_dark_frames
    assert (row["dark_exposure"], row["dark_dexposure"], row["dark_scale"]) == \
        (60.0, 15.0, 0.75)


def test_real_sbig_flats_need_a_23s_dark(sbig):
    night = NightCollection(sbig, profile="maxim-ccdsoft", image_types={"flat-*": "flat"})
    flats = night.frames_of_type("flat")["file"]
    plan = night.plan()
    for name in flats:
        row = plan_row(plan, name)
        assert row["bias"] == master(plan, "bias", temperature=-5.0)
        assert row["problem"] == (
            "frame exposure 23 s: the closest dark is 20 s, 3 s away, more than the tolerance "
            "of 0.5 s, and dark scaling is off (scale_darks = false in profile maxim-ccdsoft); "
            "allow it with scale_darks=True or --scale-darks")
    plan = night.plan(scale_darks=True)
    for name in flats:
        row = plan_row(plan, name)
        assert row["dark"] == master(plan, "dark", temperature=-5.0, exposure=20.0)
        assert row["dark_scale"] == pytest.approx(23 / 20)
        assert row["status"] == "ok"


def test_real_tircam2_plan(real_data):
    night = NightCollection(real_data / "dot-tircam2", profile="dot-tircam2")
    plan = night.plan()
    science = plan[plan["type"] == "science"]
    assert len(science) == 5
    bias, flat = master(plan, "bias"), master(plan, "flat", filter="J")
    for row in science:
        assert (row["status"], row["exposure"]) == ("ok", 40.0)
        assert (row["bias"], row["flat"], row["dark"]) == (bias, flat, "")
        assert row["dark_rule"] == "no dark frames in this night: step skipped"
    assert set(plan["status"]) == {"ok"}


def test_real_zwo_plan(real_data):
    night = NightCollection(real_data / "zwo-asi178", profile="zwo-asiimg")
    plan = night.plan(scale_darks=True)
    # 3 darks of 1 s and 9 of the 10 flats are truncated: problems, with the kind of error.
    bad = plan[plan["status"] != "ok"]
    assert len(bad) == 12
    assert set(bad["problem_kind"]) == {"FrameReadError"}
    assert all(p.startswith("truncated: ") for p in bad["problem"])
    masters = plan.meta["masters"]
    assert sorted(masters["kind"]) == ["bias", "dark", "dark", "flat"]
    assert sorted(masters["n_frames"]) == [1, 2, 5, 5]  # the good frames only
    # Flats of 0.01 s: the 1 s dark is nearest, scaled by 0.01.
    good_flats = plan[(plan["type"] == "flat") & (plan["status"] == "ok")]
    assert list(good_flats["file"]) == ["Flat/Flat_ASIImg_frame0004.fit"]
    for row in good_flats:
        assert row["dark"] == master(plan, "dark", exposure=1.0)
        assert row["dark_scale"] == pytest.approx(0.01)
