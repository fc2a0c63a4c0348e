"""The plan's defaults, on nights written by hand: dark scaling and its words, near-ties,
temperatures that drift or are set, masters that cannot be built, missing calibrations.

Every night here is a folder of tiny 8 x 8 frames whose headers are written in the test
(IMAGETYP, EXPTIME, SET-TEMP/CCD-TEMP, FILTER, DATE-OBS), read with the ``generic``
profile unless a test says otherwise. Expected masters are found by the properties the
rules give them, and expected words are written out in full.
"""

import math

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time

from ccdproc_ext import NightCollection

START = Time("2024-03-05T01:00:00", format="isot", scale="utc")


class Night:
    """A folder of hand-written frames; ``add`` writes one (``minutes`` after 01:00 UT)."""

    def __init__(self, folder):
        self.folder = folder
        self.count = 0

    def add(self, name, imagetyp, exptime=None, *, minutes=None, **cards):
        self.count += 1
        minutes = self.count if minutes is None else minutes
        header = fits.Header()
        if imagetyp is not None:
            header["IMAGETYP"] = imagetyp
        if exptime is not None:
            header["EXPTIME"] = exptime
        header["DATE-OBS"] = (START + minutes * u.min).isot
        for key, value in cards.items():
            header[key.upper().replace("_", "-")] = value
        data = np.full((8, 8), 1000, dtype=np.uint16)
        fits.PrimaryHDU(data, header=header).writeto(self.folder / name)
        return name

    def series(self, stem, count, imagetyp, exptime=None, **cards):
        return [self.add(f"{stem}_{i}.fits", imagetyp, exptime, **cards)
                for i in range(1, count + 1)]

    def plan(self, profile="generic", **options):
        return NightCollection(self.folder, profile=profile).plan(**options)


@pytest.fixture
def night(tmp_path):
    return Night(tmp_path)


def row_of(plan, name):
    rows = plan[plan["file"] == name]
    assert len(rows) == 1, f"{len(rows)} rows for {name}"
    return rows[0]


def masters_of(plan, kind, **properties):
    masters = plan.meta["masters"]
    selected = masters["kind"] == kind
    for key, value in properties.items():
        selected &= masters[key] == value
    return masters[selected]


def the_master(plan, kind, **properties):
    masters = masters_of(plan, kind, **properties)
    assert len(masters) == 1, f"{len(masters)} {kind} masters with {properties}"
    return str(masters["name"][0])


def short_flats_long_darks(night, *, bias=True):
    """Flats at 10 s, darks only at 300 s, V science frames at 300 s (and a bias)."""
    if bias:
        night.series("bias", 2, "BIAS", 0.0, filter="V")
    night.series("dark", 2, "DARK", 300.0)
    flats = night.series("flat", 2, "FLAT", 10.0, filter="V")
    science = night.series("m51", 2, "LIGHT", 300.0, filter="V")
    return flats, science


# ----------------------------------------------------------------------- dark scaling
def test_generic_profile_scales_a_dark_by_default(night):
    flats, science = short_flats_long_darks(night)
    plan = night.plan()
    assert plan.meta["scale_darks"] is True
    dark = the_master(plan, "dark", exposure=300.0)
    for name in flats:
        row = row_of(plan, name)
        assert row["status"] == "ok", row["problem"]
        assert row["dark"] == dark
        assert row["dark_rule"] == "same group, scaled 300 s -> 10 s (no dark within 0.5 s)"
        assert row["dark_scale"] == pytest.approx(10 / 300)
        assert row["dark_dexposure"] == 290.0
    for name in science:
        row = row_of(plan, name)
        assert row["status"] == "ok", row["problem"]
        assert (row["dark_scale"], row["flat"]) == (1.0, the_master(plan, "flat"))
        assert row["dark_rule"] == "same group, exposure 300 s within 0.5 s"


FORBIDDING_PROFILE = """\
schema_version = 1
name = "glowing-cmos"
description = "A camera with amplifier glow"

[keywords]
exposure_time = ["EXPTIME"]
temperature = ["SET-TEMP", "CCD-TEMP"]

[image_types]
bias = ["bias"]
dark = ["dark"]
flat = ["flat"]
science = ["light"]

[matching]
dark_tolerance = 0.5
scale_darks = false
"""


@pytest.mark.parametrize("source, options, setting", [
    ("profile", {}, "scale_darks = false in profile glowing-cmos"),
    ("caller", {"scale_darks": False}, "scale_darks=False was passed"),
])
def test_forbidden_scaling_names_the_setting_that_allows_it(night, tmp_path_factory, source,
                                                             options, setting):
    flats, _ = short_flats_long_darks(night)
    profile = "generic"
    if source == "profile":
        profile = tmp_path_factory.mktemp("profile") / "glowing-cmos.toml"
        profile.write_text(FORBIDDING_PROFILE, encoding="utf-8")
    plan = night.plan(profile, **options)
    assert plan.meta["scale_darks"] is False
    for name in flats:
        row = row_of(plan, name)
        assert (row["status"], row["dark"], row["dark_rule"]) == ("problem", "", "no match")
        assert row["problem"] == (
            "frame exposure 10 s: the closest dark is 300 s, 290 s away, more than the "
            f"tolerance of 0.5 s, and dark scaling is off ({setting}); allow it with "
            "scale_darks=True or --scale-darks")
    # Allowed by the caller, the same night plans.
    plan = night.plan(profile, scale_darks=True)
    assert set(plan["status"]) == {"ok"}


@pytest.mark.parametrize("darks, chosen, words", [
    ((30.0, 60.0), 60.0, "30 and 60 s about as near: the longer"),      # a tie
    ((30.0, 60.4), 60.4, "30 and 60.4 s about as near: the longer"),    # 15 s and 15.4 s
    ((29.6, 60.0), 60.0, "29.6 and 60 s about as near: the longer"),    # 15.4 s and 15 s
    ((30.0, 61.0), 30.0, None),                                         # 15 s and 16 s
    ((29.0, 60.0), 60.0, None),                                         # 16 s and 15 s
])
def test_ties_and_near_ties_go_to_the_longer_dark(night, darks, chosen, words):
    night.series("bias", 2, "BIAS", 0.0)
    for exposure in darks:
        night.series(f"dark{exposure:g}s", 2, "DARK", exposure)
    frame = night.add("m51.fits", "LIGHT", 45.0)
    plan = night.plan()
    row = row_of(plan, frame)
    assert row["status"] == "ok", row["problem"]
    assert row["dark"] == the_master(plan, "dark", exposure=chosen)
    assert row["dark_scale"] == pytest.approx(45.0 / chosen)
    rule = f"same group, scaled {chosen:g} s -> 45 s (no dark within 0.5 s"
    rule += f"; {words})" if words else ")"
    assert row["dark_rule"] == rule


def test_a_dark_within_the_tolerance_is_not_scaled_even_when_a_longer_one_is_as_near(night):
    night.series("bias", 2, "BIAS", 0.0)
    night.series("dark45", 2, "DARK", 45.0)
    night.series("dark45.4", 2, "DARK", 45.4)
    frame = night.add("m51.fits", "LIGHT", 45.1)
    row = row_of(night.plan(), frame)
    assert (row["dark_exposure"], row["dark_scale"]) == (45.0, 1.0)


def test_without_a_master_bias_a_dark_is_not_scaled(night):
    flats, science = short_flats_long_darks(night, bias=False)
    plan = night.plan()
    assert plan.meta["scale_darks"] is True
    flat = the_master(plan, "flat")
    for name in flats:
        row = row_of(plan, name)
        assert row["status"] == "problem"
        assert row["bias_rule"] == "no bias frames in this night: step skipped"
        assert row["problem"] == (
            "frame exposure 10 s: the closest dark is 300 s, 290 s away, more than the "
            "tolerance of 0.5 s, and it cannot be scaled: the frame has no master bias, so "
            "the dark still holds the bias level")
    # The 300 s science frames need no scaling, but their flat cannot be built.
    for name in science:
        row = row_of(plan, name)
        assert row["dark_scale"] == 1.0
        assert row["status"] == "problem"
        assert (row["flat"], row["flat_rule"]) == ("", "no master that can be built")
        assert row["problem"].startswith(
            f"master {flat} cannot be built: its 2 frames have no dark: flat_1.fits: frame "
            "exposure 10 s: the closest dark is 300 s")
        assert row["problem_kind"] == "CalibrationMatchError"
    assert plan.meta["notes"] == ["no bias frames: science frames not bias-subtracted"]


# ------------------------------------------------------------------ the plan is the truth
def test_science_frames_whose_flat_cannot_be_built_are_problems(night):
    _, science = short_flats_long_darks(night)
    plan = night.plan(scale_darks=False)
    flat = the_master(plan, "flat")
    for name in science:
        row = row_of(plan, name)
        assert row["status"] == "problem"
        assert (row["bias"], row["dark"]) == (the_master(plan, "bias"),
                                              the_master(plan, "dark"))
        assert row["problem"] == (
            f"master {flat} cannot be built: its 2 frames have no dark: flat_1.fits: "
            "frame exposure 10 s: the closest dark is 300 s, 290 s away, more than the "
            "tolerance of 0.5 s, and dark scaling is off (scale_darks=False was passed); "
            "allow it with scale_darks=True or --scale-darks")
    assert list(plan["status"]).count("ok") == 4  # the biases and the darks


def test_a_buildable_master_is_chosen_when_the_nearest_cannot_be_built(night):
    # Night 1: V flats at 10 s (only 300 s darks, no scaling). Night 2, a day later: V
    # flats at 300 s, which can be built. The science frame of night 1 gets those.
    _, science = short_flats_long_darks(night)
    later = 24 * 60
    night.add("bias_n2.fits", "BIAS", 0.0, minutes=later)
    night.add("dark_n2.fits", "DARK", 300.0, minutes=later + 1)
    night.add("flat_n2.fits", "FLAT", 300.0, minutes=later + 2, filter="V")
    plan = night.plan(scale_darks=False)
    unbuildable = the_master(plan, "flat", night=1)
    buildable = the_master(plan, "flat", night=2)
    for name in science:
        row = row_of(plan, name)
        assert row["status"] == "ok", row["problem"]
        assert row["flat"] == buildable
        assert row["flat_rule"] == f"same group, filter V ({unbuildable} cannot be built)"
        assert row["flat_dtime"] > 20


# ------------------------------------------------------------------------ temperatures
DRIFT = (24.5, 24.9, 25.3, 25.6, 25.9, 26.2, 26.5, 26.7)  # C, an uncooled camera at night


def test_a_drifting_temperature_gives_one_dark_master_per_exposure(night):
    temperatures = iter(DRIFT * 3)
    for i in range(4):
        night.add(f"bias_{i}.fits", "BIAS", 0.0, ccd_temp=next(temperatures))
    for exposure in (10.0, 60.0):
        for i in range(6):
            night.add(f"dark{exposure:g}_{i}.fits", "DARK", exposure,
                      ccd_temp=next(temperatures))
    frame = night.add("m51.fits", "LIGHT", 60.0, ccd_temp=26.7)
    plan = night.plan()
    assert list(masters_of(plan, "bias")["n_frames"]) == [4]   # 24.5 .. 25.6 C
    for exposure in (10.0, 60.0):
        assert list(masters_of(plan, "dark", exposure=exposure)["n_frames"]) == [6]
    row = row_of(plan, frame)
    assert row["status"] == "ok"
    # The nearest bias frame is at 25.6 C: 1.1 C from the frame, over the 1 C tolerance.
    assert row["bias_dtemperature"] == pytest.approx(25.6 - 26.7)
    assert "bias at 25.6 C, 1.1 C from the frame (tolerance 1 C)" in row["notes"]
    # A 60 s dark frame was at 26.7 C: the dark is compared with its nearest frame.
    assert row["dark_dtemperature"] == pytest.approx(0.0)
    assert "dark at" not in row["notes"]


def test_one_outlier_frame_does_not_split_the_others(night):
    for i, temperature in enumerate((20.0, 24.5, 25.0, 25.5, 26.0, 26.7)):
        night.add(f"dark_{i}.fits", "DARK", 60.0, ccd_temp=temperature)
    plan = night.plan()
    darks = masters_of(plan, "dark")
    assert sorted(zip(darks["n_frames"], darks["temperature"], strict=True)) == [
        (1, 20.0), (5, 25.5)]


def test_set_points_decide_the_groups(night):
    # Measured temperatures scatter around two set points.
    for i, measured in enumerate((-9.2, -10.8, -9.9)):
        night.add(f"bias_cold_{i}.fits", "BIAS", 0.0, set_temp=-10.0, ccd_temp=measured)
    for i, measured in enumerate((-4.1, -5.7)):
        night.add(f"bias_warm_{i}.fits", "BIAS", 0.0, set_temp=-5.0, ccd_temp=measured)
    frame = night.add("m51.fits", "LIGHT", 60.0, set_temp=-5.0, ccd_temp=-5.3)
    collection = NightCollection(night.folder)
    plan = collection.plan()
    biases = masters_of(plan, "bias")
    assert sorted(zip(biases["temperature"], biases["n_frames"], strict=True)) == [
        (-10.0, 3), (-5.0, 2)]
    row = row_of(plan, frame)
    assert row["bias"] == the_master(plan, "bias", temperature=-5.0)
    assert (row["status"], row["bias_dtemperature"]) == ("ok", 0.0)


def test_a_set_temperature_column_is_matched_before_the_measured_one(night):
    # Frames whose measured temperature is in `temperature` and the set point in
    # `set_temperature` (NaN when the camera wrote none).
    measured = {"bias_0.fits": -9.2, "bias_1.fits": -10.8, "bias_2.fits": -5.7,
                "bias_3.fits": 24.6, "bias_4.fits": 25.4, "m51.fits": -9.4}
    set_point = {"bias_0.fits": -10.0, "bias_1.fits": -10.0, "bias_2.fits": -5.0,
                 "bias_3.fits": math.nan, "bias_4.fits": math.nan, "m51.fits": -10.0}
    for name in measured:
        night.add(name, "LIGHT" if name.startswith("m51") else "BIAS", 1.0)
    collection = NightCollection(night.folder)
    files = list(collection.frames["file"])
    collection.frames["temperature"] = [measured[f] for f in files]
    collection.frames["set_temperature"] = [set_point[f] for f in files]
    plan = collection.plan()
    biases = masters_of(plan, "bias")
    assert sorted(zip(biases["temperature"], biases["n_frames"], strict=True)) == [
        (-10.0, 2), (-5.0, 1), (25.0, 2)]
    row = row_of(plan, "m51.fits")
    assert row["bias"] == the_master(plan, "bias", temperature=-10.0)
    assert (row["temperature"], row["set_temperature"]) == (-9.4, -10.0)
    assert row["bias_dtemperature"] == 0.0


def test_strict_temperature_matching_makes_a_distant_master_a_problem(night):
    night.series("bias", 2, "BIAS", 0.0, ccd_temp=20.0)
    frame = night.add("m51.fits", "LIGHT", 60.0, ccd_temp=25.0)
    row = row_of(night.plan(), frame)
    assert row["status"] == "ok"
    assert row["notes"] == ("bias at 20 C, 5 C from the frame (tolerance 1 C): the nearest "
                            "there is; no dark frames: science frames not dark-subtracted; "
                            "no flat frames: science frames not flat-fielded")
    plan = night.plan(strict_temperature=True)
    row = row_of(plan, frame)
    assert plan.meta["strict_temperature"] is True
    assert row["status"] == "problem"
    assert row["problem"] == ("no bias within 1 C of the frame's 25 C; the bias frames are at "
                              "20 C (strict temperature matching: strict_temperature=True)")


# ----------------------------------------------------------- missing calibration types
def test_a_night_without_calibrations_says_so(night):
    frames = night.series("ngc7000", 3, "Light Frame", 120.0, filter="Ha")
    plan = night.plan()
    expected = ["no bias frames: science frames not bias-subtracted",
                "no dark frames: science frames not dark-subtracted",
                "no flat frames: science frames not flat-fielded"]
    assert plan.meta["notes"] == expected
    for name in frames:
        row = row_of(plan, name)
        assert row["status"] == "ok"
        assert row["notes"] == "; ".join(expected)
        for kind in ("bias", "dark", "flat"):
            assert (row[kind], row[f"{kind}_rule"]) == (
                "", f"no {kind} frames in this night: step skipped")


def test_a_calibration_night_without_science_frames_has_no_notes(night):
    short_flats_long_darks(night)
    for name in night.folder.glob("m51_*"):
        name.unlink()
    plan = night.plan()
    assert plan.meta["notes"] == []


# -------------------------------------------------------------------------- real data
def test_real_sbig_default_profile_plans_a_master_flat_from_scaled_darks(real_data):
    # The ten flats say 'Light Frame'; only their names say flat.
    night = NightCollection(real_data / "sbig-stl1001e", image_types={"flat-*": "flat"})
    plan = night.plan()
    assert night.profile.name == "generic"
    flats = plan[plan["type"] == "flat"]
    assert len(flats) == 10
    dark = the_master(plan, "dark", exposure=20.0, temperature=-5.0)
    bias = the_master(plan, "bias", temperature=-5.0)
    for row in flats:
        assert row["status"] == "ok", row["problem"]
        assert (row["bias"], row["dark"]) == (bias, dark)
        assert row["dark_rule"] == "same group, scaled 20 s -> 23 s (no dark within 0.5 s)"
        assert row["dark_scale"] == pytest.approx(23 / 20)
    master_flat = masters_of(plan, "flat")
    assert list(master_flat["n_frames"]) == [10]
    assert set(plan["status"]) == {"ok"}
    assert plan.meta["notes"] == []
