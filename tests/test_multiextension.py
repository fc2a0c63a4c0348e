"""Multi-extension detectors: one image HDU per amplifier, reduced extension by extension.

A two-amplifier night is simulated with known truth (each amplifier its own bias level,
overscan, gain, read noise, bias structure and flat). Each science output extension is
compared with that truth, and with ccdproc's own functions applied to the same raw
extension, with masters combined by ``ccdproc.combine``.
"""

import shutil

import astropy.units as u
import ccdproc
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.stats import mad_std

from ccdproc_ext import ProfileError, get_profile, reduce_night
from ccdproc_ext.cli import main
from ccdproc_ext.profiles.model import InstrumentProfile
from ccdproc_ext.simulate import simulate_night

AMPS = ("AMP1", "AMP2")
SHAPE = (40, 60)
FLAT_LEVEL = 20000.0

#: A camera that names its extensions, each amplifier with fixed sections of its own:
#: AMP2 is read out on the other side (its overscan on the left).
NAMED_PROFILE = """
schema_version = 1
name = "two-amp-test"
description = "two amplifiers, one extension each"

[keywords]
image_type = ["IMAGETYP"]
exposure_time = ["EXPTIME"]
filter = ["FILTER"]

[image_types]
bias = ["bias"]
dark = ["dark"]
flat = ["flat"]
science = ["object"]

[detector]
overscan_axis = 1
gain = { keyword = "GAIN", unit = "electron / adu" }
read_noise = { keyword = "RDNOISE", unit = "electron" }

[matching]
scale_darks = true

[extensions]
names = ["AMP1", "AMP2"]

[extensions.AMP1]
overscan = "[51:60,*]"
trim = "[1:50,*]"

[extensions.AMP2]
overscan = "[1:10,*]"
trim = "[11:60,*]"
gain = { value = 2.1, unit = "electron / adu" }
"""

#: The sections of the named profile, as numpy slices written by hand.
NAMED_SECTIONS = {"AMP1": ("[51:60,1:40]", "[1:50,1:40]"),
                  "AMP2": ("[1:10,1:40]", "[11:60,1:40]")}


def _simulate(folder, profile="generic", **options):
    # A bright sky: a flat or bias of the wrong amplifier (8% dust donuts, 1% pixel
    # response, its own bias structure) is then far above the noise.
    settings = dict(shape=SHAPE, n_bias=5, n_dark=3, filters=("V",), n_flat=3,
                    flat_level=FLAT_LEVEL, n_science=2, sky_level=5000.0, n_stars=3,
                    cosmic_rays=0, hot_pixel_fraction=0.0, extensions=AMPS, seed=3)
    settings.update(options)
    return simulate_night(folder, profile, **settings)


@pytest.fixture(scope="module")
def generic_night(tmp_path_factory):
    """A two-amplifier night reduced by the default call."""
    folder = tmp_path_factory.mktemp("mef")
    night = _simulate(folder / "raw")
    result = reduce_night(folder / "raw", folder / "out", progress=False, workers=1)
    return night, result


@pytest.fixture(scope="module")
def named_night(tmp_path_factory):
    """The same kind of night for a profile that names its extensions."""
    folder = tmp_path_factory.mktemp("mef-named")
    path = folder / "two-amp-test.toml"
    path.write_text(NAMED_PROFILE)
    night = _simulate(folder / "raw", path)
    result = reduce_night(folder / "raw", folder / "out", path, progress=False, workers=1)
    return night, result


# ------------------------------------------------------------- ccdproc's reference
def _raw(path, extension, sections):
    """One raw extension, overscan-subtracted and trimmed by ccdproc."""
    with fits.open(path) as hdul:
        hdu = hdul[extension]
        ccd = CCDData(hdu.data.astype(np.float64), unit="adu", meta=hdu.header.copy())
    overscan, trim = sections or (ccd.meta["BIASSEC"], ccd.meta["TRIMSEC"])
    ccd = ccdproc.subtract_overscan(ccd, fits_section=overscan, overscan_axis=1,
                                    median=True)
    return ccdproc.trim_image(ccd, fits_section=trim)


def _combine(frames, **options):
    # The CCD Data Reduction Guide's combination: sigma clipping around the median
    # with a MAD-based deviation, 5 sigma either side, then the average.
    return ccdproc.combine(frames, method="average", sigma_clip=True,
                           sigma_clip_low_thresh=5, sigma_clip_high_thresh=5,
                           sigma_clip_func=np.ma.median, sigma_clip_dev_func=mad_std,
                           **options)


def _reference(night, science_file, extension, sections=None):
    """ccdproc's calibration of one extension of a science frame."""
    def files(image_type, exposure=None):
        rows = night.files[night.files["type"] == image_type]
        if exposure is not None:
            rows = rows[rows["exposure"] == exposure]
        return [night.location / name for name in rows["file"]]

    bias = _combine([_raw(p, extension, sections) for p in files("bias")])

    def dark_of(exposure):
        return _combine([ccdproc.subtract_bias(_raw(p, extension, sections), bias)
                         for p in files("dark", exposure)])

    dark_flat, dark_science = dark_of(2.0), dark_of(60.0)
    seconds = u.s
    flats = [ccdproc.subtract_dark(ccdproc.subtract_bias(_raw(p, extension, sections), bias),
                                   dark_flat, dark_exposure=2 * seconds,
                                   data_exposure=2 * seconds)
             for p in files("flat")]
    flat = _combine(flats, scale=lambda a: 1 / np.ma.median(a))
    science = _raw(night.location / science_file, extension, sections)
    science = ccdproc.subtract_bias(science, bias)
    science = ccdproc.subtract_dark(science, dark_science, dark_exposure=60 * seconds,
                                    data_exposure=60 * seconds)
    return ccdproc.flat_correct(science, flat).data


def _science_files(night):
    return list(night.files[night.files["type"] == "science"]["file"])


def _output(result, raw_file):
    row = result.science[result.science["raw_file"] == raw_file][0]
    return row["output_file"]


# ------------------------------------------------------------------ the pixels
@pytest.mark.parametrize("which", ["generic", "named"])
def test_each_extension_equals_the_truth(which, generic_night, named_night):
    night, result = generic_night if which == "generic" else named_night
    assert len(result.problems) == 0, result.problems
    for raw_file in _science_files(night):
        with fits.open(_output(result, raw_file)) as hdul:
            for extension in AMPS:
                truth = night.extensions[extension]
                out = hdul[extension].data.astype(np.float64)
                sky = truth.sky[raw_file]
                # The noise of each pixel in this amplifier's ADU: Poisson and read noise
                # of the frame, and of the master flat (3 flats) it is divided by.
                read = truth.read_noise_adu
                flat = FLAT_LEVEL * truth.flats["V"] * (night.gain / truth.gain)
                flat_noise = np.sqrt((flat / truth.gain + read ** 2) / 3) / flat
                sigma = np.sqrt(sky / truth.gain + read ** 2 + (sky * flat_noise) ** 2)
                z = (out - sky) / sigma
                assert mad_std(z) < 1.15
                assert abs(np.median(z)) < 0.2
                # Each amplifier's own level is in its output (amplifiers not mixed up):
                # the truths differ by far more than the tolerance.
                other = night.extensions[AMPS[1 - AMPS.index(extension)]].sky[raw_file]
                assert abs(np.median(out - other)) > 20


@pytest.mark.parametrize("which", ["generic", "named"])
def test_each_extension_equals_ccdproc(which, generic_night, named_night):
    night, result = generic_night if which == "generic" else named_night
    for raw_file in _science_files(night):
        with fits.open(_output(result, raw_file)) as hdul:
            for extension in AMPS:
                sections = NAMED_SECTIONS[extension] if which == "named" else None
                expected = _reference(night, raw_file, extension, sections)
                out = hdul[extension].data.astype(np.float64)
                assert out.shape == expected.shape
                # float32 masters and outputs against ccdproc's float64
                np.testing.assert_allclose(out, expected, rtol=1e-4, atol=0.02)


def test_simulated_amplifiers_differ(generic_night):
    """The test night is what it claims: each amplifier its own level, gain and flat."""
    night, _ = generic_night
    first, second = (night.extensions[name] for name in AMPS)
    assert first.gain != second.gain and first.read_noise != second.read_noise
    assert not np.allclose(first.flats["V"], second.flats["V"])
    raw = night.paths("bias")[0]
    with fits.open(raw) as hdul:
        assert hdul[0].data is None
        levels = [np.median(hdul[name].data) for name in AMPS]
        gains = [hdul[name].header["GAIN"] for name in AMPS]
    assert levels[1] - levels[0] > 100
    assert gains == [first.gain, second.gain]


# --------------------------------------------------------------- files and plan
@pytest.mark.parametrize("which", ["generic", "named"])
def test_outputs_and_masters_keep_the_extensions(which, generic_night, named_night):
    night, result = generic_night if which == "generic" else named_night
    assert len(result.masters) == 4  # bias, two darks, flat
    paths = [result.output_dir / _output(result, f) for f in _science_files(night)]
    paths += list(result.masters.values())
    for path in paths:
        with fits.open(path) as hdul:
            assert hdul[0].data is None
            images = [hdu.name for hdu in hdul[1:] if hdu.name not in ("MASK", "UNCERT")]
            assert images == list(AMPS)
            assert all(hdul[name].data.shape == (40, 50) for name in AMPS)
            assert "RECIPE" in hdul[0].header


def test_plan_has_one_row_per_file(generic_night):
    night, result = generic_night
    assert sorted(result.plan["file"]) == sorted(night.files["file"])
    assert set(result.plan["status"]) == {"ok"}


def test_provenance_on_each_extension(generic_night):
    night, result = generic_night
    raw_file = _science_files(night)[0]
    with fits.open(result.output_dir / _output(result, raw_file)) as hdul:
        assert hdul[0].header["RAWFILE"] == raw_file
        assert hdul[0].header["IMAGETYP"] == "OBJECT"  # the raw file's own cards
        for extension in AMPS:
            header = hdul[extension].header
            assert header["ZEROCOR"] == "bias_01.fits"
            assert header["FLATCOR"] == "flat_V_01.fits"
            assert header["TRIM"] == "[1:50,1:40]"
            assert header["OVERSCAN"].startswith("[51:60,1:40]")


def test_rerun_finds_everything_up_to_date(generic_night):
    night, result = generic_night
    again = reduce_night(night.location, result.output_dir, progress=False, workers=1)
    assert set(again.science["status"]) == {"up to date"}
    assert list(again.science["sky_level"]) == list(result.science["sky_level"])


# --------------------------------------------------------------------- bad input
def _without(path, extension):
    """Rewrite a file without one of its extensions."""
    with fits.open(path) as hdul:
        kept = fits.HDUList([hdu.copy() for hdu in hdul if hdu.name != extension])
        kept.writeto(path, overwrite=True)


def _with_extra(path, extension):
    with fits.open(path) as hdul:
        hdus = [hdu.copy() for hdu in hdul]
        extra = hdus[-1].copy()
        extra.header["EXTNAME"] = extension
        fits.HDUList([*hdus, extra]).writeto(path, overwrite=True)


@pytest.mark.parametrize(("kind", "change", "words"), [
    ("science", "missing", "no extension 'AMP2'"),
    ("science", "extra", "extension 'AMP3'"),
    ("flat", "missing", "no extension 'AMP2'"),
])
def test_a_file_with_other_extensions_is_a_problem(tmp_path, kind, change, words):
    night = _simulate(tmp_path / "raw", n_bias=3)
    path = night.paths(kind)[0]
    if change == "missing":
        _without(path, "AMP2")
    else:
        _with_extra(path, "AMP3")
    result = reduce_night(tmp_path / "raw", tmp_path / "out", progress=False, workers=1)
    problems = result.problems[result.problems["file"] == path.name]
    assert len(problems) == 1, result.problems
    assert problems["kind"][0] == "CalibrationMatchError"
    assert words in problems["problem"][0]
    # the others are reduced
    assert result.n_science_reduced == (1 if kind == "science" else 2)


def test_a_file_without_an_extension_the_profile_names(tmp_path):
    profile = tmp_path / "two-amp-test.toml"
    profile.write_text(NAMED_PROFILE)
    night = _simulate(tmp_path / "raw", profile, n_bias=3)
    path = night.paths("science")[1]
    _without(path, "AMP2")
    result = reduce_night(tmp_path / "raw", tmp_path / "out", profile, progress=False,
                          workers=1)
    problems = result.problems[result.problems["file"] == path.name]
    assert len(problems) == 1
    assert "'AMP2'" in problems["problem"][0]
    assert result.n_science_reduced == 1


def test_a_master_with_other_extensions(tmp_path):
    """A night whose frames are single images, and one science frame with two
    extensions: it cannot use the night's masters."""
    simulate_night(tmp_path / "raw", shape=SHAPE, n_bias=3, n_dark=3, filters=("V",),
                   n_flat=3, n_science=1)
    _simulate(tmp_path / "mef", n_bias=1, n_dark=1, n_flat=1, n_science=1)
    shutil.copy(tmp_path / "mef" / "object_V_001.fits", tmp_path / "raw" / "object_mef.fits")
    result = reduce_night(tmp_path / "raw", tmp_path / "out", progress=False, workers=1)
    problems = result.problems[result.problems["file"] == "object_mef.fits"]
    assert len(problems) == 1
    assert "AMP1, AMP2" in problems["problem"][0]
    assert result.n_science_reduced == 1


def test_image_in_extension_one_is_not_multiextension(tmp_path):
    simulate_night(tmp_path / "raw", shape=SHAPE, n_bias=3, n_dark=3, filters=("V",),
                   n_flat=3, n_science=1)
    for path in (tmp_path / "raw").iterdir():
        with fits.open(path) as hdul:
            data, header = hdul[0].data, hdul[0].header.copy()
        fits.HDUList([fits.PrimaryHDU(header=header), fits.ImageHDU(data, name="SCI")]
                     ).writeto(path, overwrite=True)
    result = reduce_night(tmp_path / "raw", tmp_path / "out", progress=False, workers=1)
    assert result.n_science_reduced == 1
    with fits.open(result.output_dir / result.science["output_file"][0]) as hdul:
        assert hdul[0].data is not None  # one image, written as before


# ------------------------------------------------------------------ the profile
@pytest.mark.parametrize(("table", "words"), [
    ({"names": "some"}, "'extensions.names'"),
    ({"names": ["AMP1", "amp1"]}, "distinct extension names"),
    ({"AMP1": {"trim": "[1:50,*]"}}, "'extensions.names'"),
    ({"names": ["AMP1"], "AMP2": {}}, "'extensions.AMP2'"),
    ({"names": "all", "AMP1": {"bias": "[1:2,*]"}}, "unknown key 'extensions.AMP1.bias'"),
    ({"names": ["AMP1"], "AMP1": {"gain": 2.0}}, "'extensions.AMP1.gain'"),
    ({"names": ["AMP1"], "AMP1": {"trim": "[1:50"}}, "'extensions.AMP1.trim'"),
    ({"names": [1, 2]}, "'extensions.names'"),
])
def test_extensions_table_is_validated(table, words):
    import tomllib

    data = tomllib.loads(NAMED_PROFILE)
    data["extensions"] = table
    with pytest.raises(ProfileError, match=r"my\.toml") as info:
        InstrumentProfile.from_dict(data, source="my.toml")
    assert words in str(info.value)


def test_extension_entries_replace_the_profiles_values(tmp_path):
    path = tmp_path / "two-amp-test.toml"
    path.write_text(NAMED_PROFILE)
    profile = get_profile(path)
    assert profile.extensions.names == AMPS
    amp2 = profile.for_extension("amp2")  # EXTNAMEs compared in any case
    assert (amp2.overscan.fits, amp2.trim.fits) == ("[1:10,*]", "[11:60,*]")
    assert amp2.gain_spec.value == 2.1 and amp2.gain_spec.keywords == ()
    assert profile.for_extension("AMP3") is profile
    assert "extension AMP2: overscan [1:10,*]" in profile.describe()


# ----------------------------------------------------------------- command line
def test_command_line_reduce_and_report(tmp_path, capsys):
    _simulate(tmp_path / "raw", n_bias=3)
    out = tmp_path / "out"
    assert main(["reduce", str(tmp_path / "raw"), str(out), "-q"]) == 0
    written = sorted(p.name for p in (out / "science").iterdir())
    assert written == ["object_V_001.fits", "object_V_002.fits"]
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").stat().st_size > 0
    assert "Traceback" not in capsys.readouterr().err
