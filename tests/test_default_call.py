"""The first thing a newcomer tries: ``reduce_night(folder, out)``, no profile, no option.

Every test here makes that call (or ``ccdproc-ext reduce RAW OUT``) on frames the package
was not tuned for: the real frames of three cameras, simulated nights of every built-in
camera reduced with the default profile, nights written with only the keywords a
reduction needs, and nights with one keyword removed. The rule is the same everywhere:
the science frames are reduced, or a problem names the file and the keyword; never an
exception that is not the package's own.
"""

import os
from pathlib import Path

import ccdproc
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.stats import mad_std

from ccdproc_ext import CcdprocExtError, available_profiles, reduce_night
from ccdproc_ext.cli import main
from ccdproc_ext.simulate import simulate_night

REAL = os.environ.get("CCDPROC_EXT_REAL_DATA")
needs_real = pytest.mark.skipif(not REAL, reason="CCDPROC_EXT_REAL_DATA is not set")

#: Small frames keep a simulated night under a second.
SHAPE = (40, 48)


def written(result):
    return [str(s) for s in result.science["status"]].count("written")


def problems_of(result, file):
    return [str(row["problem"]) for row in result.problems if row["file"] == file]


# ---------------------------------------------------------------------- real nights
@needs_real
def test_tircam2_five_science_frames_calibrated_as_ccdproc_would(tmp_path):
    """No IMAGETYP, string EXPTIME, FILTER1/FILTER2, no darks: five science frames, equal
    to the Guide's recipe written with ccdproc alone."""
    folder = Path(REAL, "dot-tircam2")
    result = reduce_night(folder, tmp_path / "out", progress=False)
    assert written(result) == 5, result.summary()
    assert len(result.problems) == 0, result.summary()
    kinds = {kind for kind, _ in result.masters}
    assert kinds == {"bias", "flat", "bpm"}  # the bad-pixel mask, from the flat alone
    # The science frames had no type at all: guessed, and said so.
    guessed = [row for row in result.notes if str(row["file"]).startswith("IC310")]
    assert len(guessed) == 5 and all("guess" in str(row["note"]) for row in guessed)
    # No dark frames in the night: said once for the night.
    assert any("no dark" in str(row["note"]) for row in result.notes)

    def read(name):
        return CCDData(fits.getdata(folder / name).astype(np.float32), unit="adu")

    guide = {"method": "average", "sigma_clip": True, "sigma_clip_low_thresh": 5,
             "sigma_clip_high_thresh": 5, "sigma_clip_func": np.ma.median,
             "sigma_clip_dev_func": mad_std, "dtype": np.float32}
    bias = ccdproc.combine([read(f"bias_{i}.fits") for i in (1, 2, 3)], **guide)
    flats = [ccdproc.subtract_bias(read(f"flats0{i}.fits"), bias) for i in range(1, 6)]
    flat = ccdproc.combine(flats, scale=lambda a: 1 / np.ma.median(a), **guide)
    for i in range(1, 6):
        expected = ccdproc.flat_correct(ccdproc.subtract_bias(read(f"IC310_{i}.fits"), bias),
                                        flat)
        out = CCDData.read(tmp_path / "out" / "science" / f"IC310_{i}.fits")
        good = ~out.mask if out.mask is not None else np.ones(out.shape, bool)
        good &= np.isfinite(expected.data) & (flat.data > 0.1 * np.mean(flat.data))
        # The flat's normalisation is one number for the night: the ratio is constant.
        ratio = out.data[good] / expected.data[good]
        level = np.median(ratio)
        assert abs(level - 1) < 0.05
        np.testing.assert_allclose(out.data[good], level * expected.data[good],
                                   rtol=1e-4, atol=1e-2)
        for flag in ("ZEROCOR", "FLATCOR"):
            assert flag in out.header
        assert "DARKCOR" not in out.header


@needs_real
def test_sbig_flats_found_and_darks_scaled_by_default(tmp_path):
    """Flats labelled 'Light Frame' whose names say flat; darks at 10, 20, 30, 60, 150 and
    300 s for 23 s flats: the nearest dark is scaled, by default."""
    folder = Path(REAL, "sbig-stl1001e")
    result = reduce_night(folder, tmp_path / "out", progress=False)
    plan = result.plan
    flats = plan[plan["type"] == "flat"]
    assert len(flats) == 10
    assert all(str(f).startswith("flat-") for f in flats["file"])
    assert np.all(flats["status"] == "ok"), flats["file", "problem"]
    assert all("scaled" in str(rule) for rule in flats["dark_rule"])
    assert np.all(np.isfinite(flats["dark_scale"])) and np.all(flats["dark_scale"] != 1)
    assert [name for kind, name in result.masters if kind == "flat"]
    master_flat = next(path for (kind, _), path in result.masters.items() if kind == "flat")
    header = fits.getheader(master_flat)
    assert header["NCOMBINE"] == 10
    # Masters only: no science frames in this night, and the summary says so.
    assert "masters only" in result.summary()


@needs_real
def test_zwo_truncated_files_named_and_good_frames_used(tmp_path):
    folder = Path(REAL, "zwo-asi178")
    result = reduce_night(folder, tmp_path / "out", progress=False)
    truncated = {str(row["file"]) for row in result.problems
                 if row["kind"] == "FrameReadError"}
    assert len(truncated) == 12
    assert sum(f.startswith("Flat/") for f in truncated) == 9
    assert sum(f.startswith("Dark/Dark_1s/") for f in truncated) == 3
    kinds = sorted(kind for kind, _ in result.masters)
    assert kinds.count("bias") == 1 and kinds.count("flat") == 1
    assert kinds.count("dark") == 2


@needs_real
@pytest.mark.parametrize("name", ["dot-tircam2", "sbig-stl1001e", "zwo-asi178"])
def test_command_line_on_real_folders(name, tmp_path, capsys):
    status = main(["reduce", str(Path(REAL, name)), str(tmp_path / "out"), "-q"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert status == 0, captured.out + captured.err
    strict = main(["reduce", str(Path(REAL, name)), str(tmp_path / "strict"), "--strict",
                   "-q"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    # Only the ZWO night has frames that cannot be used: strict stops there.
    assert strict == (1 if name == "zwo-asi178" else 0)


# ------------------------------------------------------------------ simulated nights
def sky_residual(night, result, out):
    """Per frame: median of |calibrated - truth| over the science pixels, in units of the
    read noise (the truth is the simulated sky)."""
    residuals = []
    for row in result.science:
        truth = night.sky[str(row["raw_file"])]
        data = fits.getdata(out / "science" / Path(str(row["output_file"])).name)
        if data.shape != truth.shape:
            data = data[night.trim_slices]
        residuals.append(np.median(np.abs(data - truth)) / night.read_noise_adu)
    return residuals


def test_generic_night_reduced_to_the_truth(tmp_path):
    night = simulate_night(tmp_path / "raw", shape=SHAPE, n_bias=5, n_dark=3, n_flat=5,
                           cosmic_rays=0, n_stars=5)
    result = reduce_night(tmp_path / "raw", tmp_path / "out", progress=False)
    assert written(result) == 4 and len(result.problems) == 0, result.summary()
    # Photon noise of the sky and dark dominate: a few read noises is the truth.
    assert max(sky_residual(night, result, tmp_path / "out")) < 4


@pytest.mark.parametrize("profile", [p for p in available_profiles() if p != "generic"])
def test_every_builtin_camera_with_the_default_profile(profile, tmp_path):
    """A night of each built-in camera, reduced without naming its profile."""
    from ccdproc_ext import get_profile

    shape = get_profile(profile).shape
    shape = (32, shape[1]) if shape and shape[1] else SHAPE
    night = simulate_night(tmp_path / "raw", profile, shape=shape, n_bias=3, n_dark=3,
                           n_flat=3, n_science=1, filters=("R",), cosmic_rays=0)
    try:
        result = reduce_night(tmp_path / "raw", tmp_path / "out", progress=False)
    except CcdprocExtError as err:  # allowed, but only if it names a file
        assert any(name in str(err) for name in night.files["file"]), str(err)
        return
    n_science = int((night.files["type"] == "science").sum())
    assert written(result) + len(result.problems) >= n_science
    for row in result.problems:
        assert str(row["file"]) and str(row["problem"])
    assert written(result) == n_science, result.summary()


def test_required_keywords_only(tmp_path):
    """IMAGETYP, EXPTIME (none for biases) and FILTER: nothing else in any header."""
    night = simulate_night(tmp_path / "raw", shape=SHAPE, keywords="required",
                           cosmic_rays=0, n_stars=5, n_flat=5)
    header = fits.getheader(night.paths("science")[0])
    assert "DATE-OBS" not in header and "CCDSUM" not in header and "SET-TEMP" not in header
    assert "EXPTIME" not in fits.getheader(night.paths("bias")[0])
    result = reduce_night(tmp_path / "raw", tmp_path / "out", progress=False)
    assert written(result) == 4 and len(result.problems) == 0, result.summary()
    assert max(sky_residual(night, result, tmp_path / "out")) < 4


def test_light_frames_without_any_calibration_say_so(tmp_path):
    simulate_night(tmp_path / "raw", shape=SHAPE, n_bias=0, dark_exposures=(), n_flat=0,
                   filters=(), science_filters=("V",), n_science=2)
    result = reduce_night(tmp_path / "raw", tmp_path / "out", progress=False)
    night_notes = " ".join(str(row["note"]) for row in result.notes
                           if str(row["file"]) == "(night)")
    for kind in ("bias", "dark", "flat"):
        assert f"no {kind} frames" in night_notes
    summary = result.summary()
    assert "no bias frames" in summary and "no flat frames" in summary
    for path in (tmp_path / "out" / "science").glob("*.fits"):
        header = fits.getheader(path)
        assert not any(flag in header for flag in ("ZEROCOR", "DARKCOR", "FLATCOR"))


#: Each keyword the simulator writes for the generic profile; removing it must leave a
#: night that reduces or says which keyword it missed.
OPTIONAL = ["DATE-OBS", "CCDSUM", "SET-TEMP", "BIASSEC", "TRIMSEC", "GAIN", "OBJECT",
            "FILTER", "IMAGETYP", "EXPTIME"]


@pytest.mark.parametrize("keyword", OPTIONAL)
def test_one_keyword_removed(keyword, tmp_path):
    night = simulate_night(tmp_path / "raw", shape=SHAPE, n_bias=3, n_dark=2, n_flat=3,
                           filters=("V",), n_science=2, drop_keywords=(keyword,))
    result = reduce_night(tmp_path / "raw", tmp_path / "out", progress=False)
    science = [str(f) for f in night.files["file"][night.files["type"] == "science"]]
    for file in science:
        done = file in [str(f) for f in result.science["raw_file"]]
        said = [p for p in problems_of(result, file) if keyword in p]
        assert done or said, f"{file}: {problems_of(result, file)}"
    if keyword not in ("EXPTIME",):
        assert written(result) == len(science), result.summary()


# ------------------------------------------------------------------- the command line
def test_empty_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "notes.txt").write_text("not a frame")
    with pytest.raises(CcdprocExtError, match="no FITS file"):
        reduce_night(tmp_path / "raw", tmp_path / "out", progress=False)
    assert main(["reduce", str(tmp_path / "raw"), str(tmp_path / "out"), "-q"]) == 1
    captured = capsys.readouterr()
    assert "no FITS file" in captured.err and "Traceback" not in captured.err


def test_unknown_type_override_is_an_error_not_a_traceback(tmp_path, capsys):
    simulate_night(tmp_path / "raw", shape=SHAPE, n_bias=2, n_dark=1, n_flat=1,
                   n_science=1, filters=("V",))
    assert main(["reduce", str(tmp_path / "raw"), str(tmp_path / "out"), "--type",
                 "x=arc"]) == 1
    captured = capsys.readouterr()
    assert "'arc' is not a frame type" in captured.err
    assert "Traceback" not in captured.err


def test_unexpected_error_becomes_a_problem(tmp_path, monkeypatch, capsys):
    """A bug in one frame's reduction is reported as an InternalError of that frame; the
    night goes on, and the traceback is kept in the output folder, not printed."""
    from ccdproc_ext import science

    simulate_night(tmp_path / "raw", shape=SHAPE, n_bias=2, n_dark=1, n_flat=2,
                   filters=("V",), n_science=2)
    original = science.calibrate_frame

    def broken(ccd, *args, name="frame", **kwargs):
        if "object_V_001" in str(name):
            raise ZeroDivisionError("a bug")
        return original(ccd, *args, name=name, **kwargs)

    monkeypatch.setattr(science, "calibrate_frame", broken)
    result = reduce_night(tmp_path / "raw", tmp_path / "out", progress=False, workers=1)
    assert written(result) == 1
    (row,) = [r for r in result.problems if r["file"] == "object_V_001.fits"]
    assert row["kind"] == "InternalError" and "ZeroDivisionError: a bug" in row["problem"]
    assert "Traceback" in (tmp_path / "out" / "internal-errors.log").read_text()
    with pytest.raises(CcdprocExtError, match="ZeroDivisionError"):
        reduce_night(tmp_path / "raw", tmp_path / "strict", progress=False, workers=1,
                     strict=True)
    status = main(["reduce", str(tmp_path / "raw"), str(tmp_path / "cli"), "--workers",
                   "1", "-q"])
    captured = capsys.readouterr()
    assert status == 0 and "Traceback" not in captured.out + captured.err


def test_nothing_reduced_exits_non_zero(tmp_path, capsys):
    simulate_night(tmp_path / "raw", shape=SHAPE, n_bias=2, n_dark=1, n_flat=2,
                   filters=("V",), science_filters=("B",), n_science=1)
    status = main(["reduce", str(tmp_path / "raw"), str(tmp_path / "out"), "-q"])
    captured = capsys.readouterr()
    assert status == 1
    assert "none of the 1 science frames" in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.parametrize("card, value, kind, words", [
    # Trims to another shape than the other biases.
    ("TRIMSEC", "[1:20,1:40]", "CalibrationMatchError", "after overscan and trim"),
    # Pixels in another unit than the other biases.
    ("BUNIT", "electrons", "HeaderError", "BUNIT"),
])
def test_calibration_frame_unlike_the_others_is_left_out(tmp_path, card, value, kind,
                                                          words):
    """One bias unlike the others of its master is left out and named, the night goes
    on (both found by the night fuzzer: the combination used to fail)."""
    night = simulate_night(tmp_path / "raw", shape=SHAPE, n_bias=3, n_dark=2, n_flat=3,
                           filters=("V",), n_science=1)
    odd = night.paths("bias")[1]
    with fits.open(odd, mode="update") as hdul:
        hdul[0].header[card] = value
    result = reduce_night(tmp_path / "raw", tmp_path / "out", progress=False, workers=1,
                          report=False)
    assert written(result) == 1, result.summary()
    (row,) = [r for r in result.problems if r["file"] == odd.name]
    assert row["kind"] == kind and words in row["problem"]


def test_plan_names_the_bad_pixel_mask(tmp_path):
    """The dry run shows the bad-pixel mask each science frame will get; the reduction
    applies that one."""
    simulate_night(tmp_path / "raw", shape=SHAPE, n_bias=3, n_dark=2, n_flat=3,
                   filters=("V",), n_science=1)
    plan = reduce_night(tmp_path / "raw", tmp_path / "out", dry_run=True).plan
    science = plan[plan["type"] == "science"]
    assert list(science["bpm"]) == ["bpm_dark_60s_01_flat_V_01"]
    assert set(plan[plan["type"] != "science"]["bpm"]) == {""}
    result = reduce_night(tmp_path / "raw", tmp_path / "out", progress=False, workers=1)
    header = fits.getheader(result.science["output_file"][0])
    assert header["BPMFILE"] == "bpm_dark_60s_01_flat_V_01.fits"
    # A night's own plan.ecsv, with its bpm column, can be given back as it is.
    again = reduce_night(tmp_path / "raw", tmp_path / "again", plan=tmp_path / "out" /
                         "plan.ecsv", progress=False, workers=1, report=False)
    assert written(again) == 1, again.summary()
