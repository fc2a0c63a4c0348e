"""Instrument profiles: the built-in files, schema errors, sections, header reading, plugins."""

from collections import Counter
from importlib import resources

import astropy.units as u
import pytest
from astropy.io import fits

import ccdproc_ext
from ccdproc_ext import CcdprocExtWarning, HeaderError, ProfileError
from ccdproc_ext.profiles import registry
from ccdproc_ext.profiles.sections import DetectorSection, parse_fits_section, section_slices

BUILTIN_PROFILES = [
    "generic",
    "palomar-lfc",
    "andor-aspen-cg16m",
    "magellan-ifum",
    "magellan-imacs",
    "maxim-ccdsoft",
    "zwo-asiimg",
    "dot-tircam2",
]

# A small valid profile; the schema tests break one line of it at a time.
VALID_PROFILE = """\
schema_version = 1
name = "test-camera"
description = "A camera for the tests"

[keywords]
exposure_time = ["EXPTIME"]

[image_types]
bias = ["bias"]
science = ["object"]

[detector]
overscan = "[2049:2080,*]"
trim = "[1:2048,*]"
gain = { value = 1.5, unit = "electron / adu" }

[matching]
dark_tolerance = 0.5
scale_darks = false
"""


def builtin_file(name):
    return resources.files("ccdproc_ext.profiles") / "data" / f"{name}.toml"


def write_profile(folder, text, name="camera.toml"):
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def edited(old, new):
    assert old in VALID_PROFILE, old
    return VALID_PROFILE.replace(old, new)


# ------------------------------------------------------------------ built-in profiles
def test_available_profiles_lists_the_builtin_ones():
    assert set(BUILTIN_PROFILES) <= set(ccdproc_ext.available_profiles())


@pytest.mark.parametrize("name", BUILTIN_PROFILES)
def test_builtin_profile_is_valid_and_loads(name):
    path = builtin_file(name)
    assert ccdproc_ext.validate_profile(path) == []
    profile = ccdproc_ext.get_profile(name)
    assert isinstance(profile, ccdproc_ext.InstrumentProfile)
    assert profile.name == name
    assert profile.description
    # By name or by path, it is the same profile.
    assert ccdproc_ext.get_profile(str(path)) == profile


def test_get_profile_passes_a_profile_through():
    profile = ccdproc_ext.get_profile("generic")
    assert ccdproc_ext.get_profile(profile) is profile


def test_unknown_profile_name_lists_the_known_ones():
    with pytest.raises(ProfileError, match="no instrument profile named 'no-such-camera'") as err:
        ccdproc_ext.get_profile("no-such-camera")
    assert "palomar-lfc" in str(err.value)


def test_profile_is_frozen():
    profile = ccdproc_ext.get_profile("generic")
    with pytest.raises(AttributeError):
        profile.name = "other"


# ------------------------------------------------------------------- schema errors
@pytest.mark.parametrize(("text", "key"), [
    pytest.param('telescope = "Hale"\n' + VALID_PROFILE, "telescope",
                 id="unknown top-level key"),
    pytest.param(edited("[detector]\n", '[detector]\nbias_section = "[1:2,*]"\n'),
                 "detector.bias_section", id="unknown key in detector"),
    pytest.param(edited('[keywords]\n', '[keywords]\nexposure = ["EXPTIME"]\n'),
                 "keywords.exposure", id="unknown key in keywords"),
    pytest.param(edited("bias = [", "zero = ["), "image_types.zero", id="unknown image type"),
    pytest.param(edited('"[2049:2080,*]"', '"[1:2048;1:4096]"'), "detector.overscan",
                 id="section with ';'"),
    pytest.param(edited('"[1:2048,*]"', '"[10:1,*]"'), "detector.trim", id="reversed section"),
    pytest.param(edited('"[1:2048,*]"', "[1, 2048]"), "detector.trim", id="section not a string"),
    pytest.param(edited('"[1:2048,*]"', '{ keyword = "TRIMSEC", fits = "[0:5,*]" }'),
                 "detector.trim.fits", id="bad fallback of a keyword section"),
    pytest.param(edited('"[1:2048,*]"', '{ keyword = "TRIMSEC", requird = false }'),
                 "detector.trim.requird", id="unknown key in a section table"),
    pytest.param(edited('{ value = 1.5, unit = "electron / adu" }', "{ value = 1.5 }"),
                 "detector.gain.unit", id="gain without unit"),
    pytest.param(edited('unit = "electron / adu"', 'unit = "adu"'), "detector.gain.unit",
                 id="gain in adu"),
    pytest.param(edited('unit = "electron / adu"', 'unit = "furlong"'), "detector.gain.unit",
                 id="gain in no unit at all"),
    pytest.param(edited("value = 1.5", 'value = "1.5"'), "detector.gain.value",
                 id="gain value a string"),
    pytest.param(edited("gain = { value = 1.5, ", "gain = { "), "detector.gain",
                 id="gain neither value nor keyword"),
    pytest.param(edited("[detector]\n", "[detector]\noverscan_axis = 2\n"),
                 "detector.overscan_axis", id="overscan axis 2"),
    pytest.param(edited("[detector]\n", '[detector]\noverscan_method = "mode"\n'),
                 "detector.overscan_method", id="overscan method mode"),
    pytest.param(edited("[detector]\n", "[detector]\nshape = [4096]\n"), "detector.shape",
                 id="shape with one axis"),
    pytest.param(edited("scale_darks = false", 'scale_darks = "yes"'), "matching.scale_darks",
                 id="scale_darks a string"),
    pytest.param(edited("dark_tolerance = 0.5", 'dark_tolerance = "0.5"'),
                 "matching.dark_tolerance", id="dark_tolerance a string"),
    pytest.param(edited("dark_tolerance = 0.5", "dark_tolerance = -1"),
                 "matching.dark_tolerance", id="negative dark_tolerance"),
    pytest.param(edited('exposure_time = ["EXPTIME"]', "exposure_time = 3"),
                 "keywords.exposure_time", id="keyword list of numbers"),
    pytest.param(edited('exposure_time = ["EXPTIME"]',
                        'exposure_time = ["EXPTIME"]\nset_temperature = [""]'),
                 "keywords.set_temperature", id="set_temperature a blank keyword"),
    pytest.param(edited('exposure_time = ["EXPTIME"]',
                        'exposure_time = ["EXPTIME"]\ntime_obs = 12'),
                 "keywords.time_obs", id="time_obs a number"),
    pytest.param(edited("schema_version = 1\n", ""), "schema_version",
                 id="missing schema_version"),
    pytest.param(edited("schema_version = 1", "schema_version = 2"), "schema_version",
                 id="wrong schema_version"),
    pytest.param(edited('name = "test-camera"\n', ""), "name", id="missing name"),
    pytest.param(edited('name = "test-camera"', 'name = "Test Camera"'), "name",
                 id="name with capitals and blanks"),
    pytest.param(edited('description = "A camera for the tests"\n', ""), "description",
                 id="missing description"),
    pytest.param(VALID_PROFILE + '[[detector.amplifiers]]\nname = "a"\ndata = "[1:10,*]"\n',
                 "detector.amplifiers", id="amplifiers and a single overscan"),
])
def test_broken_profile_names_file_and_key(tmp_path, text, key):
    path = write_profile(tmp_path, text)
    with pytest.raises(ProfileError) as err:
        ccdproc_ext.get_profile(path)
    assert isinstance(err.value, ValueError)
    message = str(err.value)
    assert str(path) in message
    assert f"key '{key}'" in message
    # validate_profile reports the same problem instead of raising.
    problems = ccdproc_ext.validate_profile(path)
    assert len(problems) == 1
    assert str(path) in problems[0]
    assert f"key '{key}'" in problems[0]


def test_not_toml_at_all(tmp_path):
    path = write_profile(tmp_path, "this is [ not toml\n")
    with pytest.raises(ValueError, match="not valid TOML") as err:
        ccdproc_ext.get_profile(path)
    assert isinstance(err.value, ProfileError)
    assert str(path) in str(err.value)


def test_missing_file_is_a_problem(tmp_path):
    path = tmp_path / "absent.toml"
    with pytest.raises(ProfileError, match="cannot read the profile file"):
        ccdproc_ext.get_profile(path)
    [problem] = ccdproc_ext.validate_profile(path)
    assert str(path) in problem


def test_profile_without_any_image_type_rule(tmp_path):
    text = edited('[image_types]\nbias = ["bias"]\nscience = ["object"]\n', "")
    [problem] = ccdproc_ext.validate_profile(write_profile(tmp_path, text))
    assert "key 'image_types'" in problem


def test_validate_lists_every_problem_one_per_line(tmp_path):
    text = (edited('exposure_time = ["EXPTIME"]', "exposure_time = 3")
            .replace('"[2049:2080,*]"', '"[2080:2049,*]"')
            .replace("scale_darks = false", 'scale_darks = "yes"'))
    path = write_profile(tmp_path, text)
    problems = ccdproc_ext.validate_profile(path)
    assert len(problems) == 3
    for problem, key in zip(problems, ["keywords.exposure_time", "detector.overscan",
                                       "matching.scale_darks"], strict=True):
        assert problem.startswith(f"{path}: key '{key}'")
    with pytest.raises(ProfileError) as err:
        ccdproc_ext.get_profile(path)
    assert str(err.value).splitlines() == problems


def test_valid_test_profile_loads(tmp_path):
    profile = ccdproc_ext.get_profile(write_profile(tmp_path, VALID_PROFILE))
    assert profile.name == "test-camera"
    assert profile.overscan.fits == "[2049:2080,*]"
    assert profile.gain() == 1.5 * u.electron / u.adu
    assert profile.gain_spec.value == 1.5
    assert profile.exposure_time_keywords == ("EXPTIME",)


AMPLIFIERS = """
[[detector.amplifiers]]
name = "left"
data = "[1:1024,*]"
overscan = "[2049:2064,*]"
gain = { value = 1.5, unit = "electron / adu" }

[[detector.amplifiers]]
name = "right"
data = { keyword = "DATASEC2", fits = "[1025:2048,*]" }
overscan = "[2065:2080,*]"
read_noise = { keyword = "RDNOISE2", unit = "electron" }
"""


def test_profile_with_amplifiers(tmp_path):
    text = edited('overscan = "[2049:2080,*]"\ntrim = "[1:2048,*]"\n', "") + AMPLIFIERS
    profile = ccdproc_ext.get_profile(write_profile(tmp_path, text))
    assert profile.has_amplifiers
    left, right = profile.amplifiers
    assert (left.name, right.name) == ("left", "right")
    assert left.data_section.slices((10, 2080)) == (slice(0, 10), slice(0, 1024))
    assert right.overscan_section.slices((10, 2080)) == (slice(0, 10), slice(2064, 2080))
    assert right.data_section.fits_text(fits.Header({"DATASEC2": "[1025:2040,*]"})) == (
        "[1025:2040,*]")
    assert left.gain.get() == 1.5 * u.electron / u.adu
    assert right.read_noise.get(fits.Header({"RDNOISE2": 4.0})) == 4.0 * u.electron
    assert "amplifier right" in profile.describe()


def test_amplifier_names_must_differ(tmp_path):
    text = (edited('overscan = "[2049:2080,*]"\ntrim = "[1:2048,*]"\n', "")
            + AMPLIFIERS.replace('"right"', '"left"'))
    [problem] = ccdproc_ext.validate_profile(write_profile(tmp_path, text))
    assert "key 'detector.amplifiers': expected distinct amplifier names" in problem


# ------------------------------------------------------------------------- sections
@pytest.mark.parametrize(("text", "expected"), [
    ("[2056:2080,1:4128]", ((2056, 2080), (1, 4128))),
    ("[1:2048,*]", ((1, 2048), None)),
    (" [ 1:2048 , * ] ", ((1, 2048), None)),
    ("[*,1:10]", (None, (1, 10))),
    ("[7,*]", ((7, 7), None)),
])
def test_parse_fits_section(text, expected):
    assert parse_fits_section(text) == expected


@pytest.mark.parametrize("text", [
    "[1:2048;1:4096]", "[10:1,*]", "[0:10,*]", "[1:10]", "1:10,1:10", "[a:b,*]", "", 5, None,
])
def test_parse_fits_section_refuses(text):
    with pytest.raises(ValueError):
        parse_fits_section(text)


@pytest.mark.parametrize(("text", "shape", "rows", "columns"), [
    # Palomar LFC chip 0: overscan data[:, 2055:], trim data[:, :2048].
    ("[2056:2080,*]", (4128, 2080), slice(0, 4128), slice(2055, 2080)),
    ("[1:2048,*]", (4128, 2080), slice(0, 4128), slice(0, 2048)),
    # Magellan IFUM op-amp: BIASSEC and DATASEC of the Guide.
    ("[2049:2176,1029:1156]", (1156, 2176), slice(1028, 1156), slice(2048, 2176)),
    ("[1:2048,1:1028]", (1156, 2176), slice(0, 1028), slice(0, 2048)),
])
def test_section_slices(text, shape, rows, columns):
    assert section_slices(text, shape) == (rows, columns)
    assert DetectorSection(fits=text).slices(shape) == (rows, columns)


def test_section_slices_select_the_same_pixels_as_numpy():
    import numpy as np

    data = np.arange(8 * 12).reshape(8, 12)
    np.testing.assert_array_equal(data[section_slices("[10:12,*]", data.shape)], data[:, 9:])
    np.testing.assert_array_equal(data[section_slices("[2:4,3:8]", data.shape)], data[2:8, 1:4])


@pytest.mark.parametrize("text", ["[2056:2081,*]", "[1:2048,1:4129]"])
def test_section_beyond_the_frame_raises(text):
    with pytest.raises(ValueError, match="reaches"):
        section_slices(text, (4128, 2080))


def test_resolved_section_replaces_stars():
    assert DetectorSection(fits="[2056:2080,*]").resolved((4128, 2080)) == "[2056:2080,1:4128]"


def test_keyword_section_is_read_from_the_header():
    section = DetectorSection(keywords=("BIASSEC",))
    header = fits.Header({"BIASSEC": "[2049:2176,1029:1156]"})
    assert section.fits_text(header) == "[2049:2176,1029:1156]"
    assert section.slices((1156, 2176), header) == (slice(1028, 1156), slice(2048, 2176))


def test_keyword_section_falls_back_to_its_fits_value():
    section = DetectorSection(fits="[1:2048,1:1028]", keywords=("DATASEC",))
    assert section.fits_text(fits.Header()) == "[1:2048,1:1028]"
    assert section.fits_text(fits.Header({"DATASEC": "[1:100,1:50]"})) == "[1:100,1:50]"


def test_required_keyword_section_missing_raises():
    section = DetectorSection(keywords=("BIASSEC", "OVERSCAN"))
    with pytest.raises(KeyError, match="BIASSEC or OVERSCAN"):
        section.slices((100, 100), fits.Header())


def test_optional_keyword_section_missing_is_none():
    generic = ccdproc_ext.get_profile("generic")
    assert generic.overscan.required is False
    assert generic.overscan.slices((100, 100), fits.Header()) is None
    assert generic.trim.slices((100, 100), fits.Header({"DATASEC": "[1:90,*]"})) == (
        slice(0, 100), slice(0, 90))


def test_malformed_keyword_section_raises():
    with pytest.raises(ValueError, match="not a FITS section"):
        DetectorSection(keywords=("BIASSEC",)).fits_text(fits.Header({"BIASSEC": "1:10"}))


def test_profile_sections_from_toml():
    lfc = ccdproc_ext.get_profile("palomar-lfc")
    assert lfc.overscan.slices((4128, 2080)) == (slice(0, 4128), slice(2055, 2080))
    assert lfc.trim.slices((4128, 2080)) == (slice(0, 4128), slice(0, 2048))
    ifum = ccdproc_ext.get_profile("magellan-ifum")
    header = fits.Header({"BIASSEC": "[1025:1088,515:578]"})
    assert ifum.overscan.fits_text(header) == "[1025:1088,515:578]"
    assert ifum.overscan_axis == "frame"


# ------------------------------------------------------------------ header reading
def _decimal_comma_header():
    # As ASIImg writes it: astropy refuses the card as invalid.
    return fits.Header([fits.Card.fromstring(
        "EXPTIME =              3,2E-05 / Total Exposure Time (s)")])


@pytest.mark.parametrize(("header", "expected"), [
    (fits.Header({"EXPTIME": 30.0}), 30.0),
    (fits.Header({"EXPTIME": 5}), 5.0),
    (fits.Header({"EXPTIME": "40      "}), 40.0),
    (fits.Header({"EXPOSURE": 12.5}), 12.5),
    (fits.Header({"EXPTIME": 1.0, "EXPOSURE": 2.0}), 1.0),
    (_decimal_comma_header(), 3.2e-05),
])
def test_exposure_time(header, expected):
    profile = ccdproc_ext.get_profile("maxim-ccdsoft")
    assert profile.exposure_time(header) == pytest.approx(expected, rel=1e-12)


def test_missing_exposure_time_names_file_and_keywords():
    profile = ccdproc_ext.get_profile("maxim-ccdsoft")
    with pytest.raises(HeaderError, match=r"night1/frame_001\.fits: .*EXPTIME, EXPOSURE"):
        profile.exposure_time(fits.Header({"OBJECT": "M51"}), path="night1/frame_001.fits")


def test_unreadable_exposure_time_names_the_keyword():
    profile = ccdproc_ext.get_profile("maxim-ccdsoft")
    with pytest.raises(HeaderError, match=r"a\.fits: keyword EXPTIME = 'long' is not a number"):
        profile.exposure_time(fits.Header({"EXPTIME": "long"}), path="a.fits")


@pytest.mark.parametrize(("cards", "expected"), [
    ({"CCDSUM": "2 2"}, (2, 2)),
    ({"CCDSUM": "1 2"}, (1, 2)),
    ({"XBINNING": 2, "YBINNING": 3}, (2, 3)),
    ({"BINNING": "2x2"}, (2, 2)),
    ({"BINNING": "4"}, (4, 4)),
    ({}, (1, 1)),
    ({"XBINNING": 2}, (1, 1)),
])
def test_binning(cards, expected):
    assert ccdproc_ext.get_profile("generic").binning(fits.Header(cards)) == expected


def test_unreadable_binning_raises():
    with pytest.raises(HeaderError, match="CCDSUM"):
        ccdproc_ext.get_profile("generic").binning(fits.Header({"CCDSUM": "full"}))


@pytest.mark.parametrize(("profile", "word", "expected"), [
    ("maxim-ccdsoft", "  Bias Frame ", "bias"),
    ("maxim-ccdsoft", "BIAS FRAME", "bias"),
    ("maxim-ccdsoft", "Dark  Frame", "dark"),
    ("maxim-ccdsoft", "Flat Field", "flat"),
    ("maxim-ccdsoft", "Light Frame", "science"),
    ("maxim-ccdsoft", "Tricolor Image", None),
    ("palomar-lfc", "zero", "bias"),
    ("palomar-lfc", "FLATFIELD", "flat"),
    ("generic", "Dome Flat", "flat"),
    ("generic", "OBJECT", "science"),
])
def test_classify_by_image_type_word(profile, word, expected):
    assert ccdproc_ext.get_profile(profile).classify(fits.Header({"IMAGETYP": word})) == expected


def test_classify_tries_image_type_keywords_in_order():
    generic = ccdproc_ext.get_profile("generic")
    assert generic.classify(fits.Header({"OBSTYPE": "zero"})) == "bias"
    assert generic.classify(fits.Header({"IMAGETYP": "dark", "OBSTYPE": "zero"})) == "dark"


@pytest.mark.parametrize(("profile", "path", "expected"), [
    ("zwo-asiimg", "Dark/Dark_1s/Dark_ASIImg_1sec_frame0001.fit", "dark"),
    ("zwo-asiimg", "Bias/Bias_ASIImg_frame0001.fit", "bias"),
    ("zwo-asiimg", "Flat/Flat_ASIImg_frame0001.fit", "flat"),
    ("zwo-asiimg", "night/dark/frame0001.fit", "dark"),
    ("zwo-asiimg", "Light/M42_0001.fit", "science"),
    ("dot-tircam2", "flats01.fits", "flat"),
    ("dot-tircam2", "bias_1.fits", "bias"),
    ("dot-tircam2", "IC310_1.fits", "science"),
    ("generic", "night1/Zero_003.fits", "bias"),
    ("generic", "m51_001.fits", None),
])
def test_classify_by_file_name_when_the_header_says_nothing(profile, path, expected):
    assert ccdproc_ext.get_profile(profile).classify(fits.Header(), path=path) == expected


def test_classify_without_keyword_or_path_is_none():
    assert ccdproc_ext.get_profile("zwo-asiimg").classify(fits.Header()) is None


def test_filter_temperature_and_date():
    tircam = ccdproc_ext.get_profile("dot-tircam2")
    assert tircam.filter_name(fits.Header({"FILTER1": "J       "})) == "J"
    assert tircam.filter_name(fits.Header({"FILTER1": "   "})) is None
    maxim = ccdproc_ext.get_profile("maxim-ccdsoft")
    # The measured temperature when there is one; the set point is its own value.
    both = fits.Header({"SET-TEMP": -5.0, "CCD-TEMP": -5.23})
    assert maxim.temperature(both) == -5.23
    assert maxim.set_temperature(both) == -5.0
    assert maxim.temperature(fits.Header({"SET-TEMP": -5.0})) == -5.0
    assert maxim.temperature(fits.Header()) is None
    date = maxim.date_obs(fits.Header({"DATE-OBS": "2017-09-08T22:48:01.984"}))
    assert date.isot == "2017-09-08T22:48:01.984"
    # FITS dates before 2000 were 'dd/mm/yy', in the 1900s.
    old = maxim.date_obs(fits.Header({"DATE-OBS": "08/09/97", "TIME-OBS": "22:48:01"}))
    assert old.isot == "1997-09-08T22:48:01.000"
    with pytest.raises(HeaderError, match=r"x\.fits: keyword DATE-OBS"):
        maxim.date_obs(fits.Header({"DATE-OBS": "8 Sept 2017"}), path="x.fits")


@pytest.mark.parametrize(("profile", "quantity", "cards", "expected"), [
    ("palomar-lfc", "gain", {}, 2.0 * u.electron / u.adu),
    ("palomar-lfc", "read_noise", {}, 7.4 * u.electron),
    ("maxim-ccdsoft", "gain", {"EGAIN": 2.06}, 2.06 * u.electron / u.adu),
    ("maxim-ccdsoft", "gain", {"E-GAIN": "2,06"}, 2.06 * u.electron / u.adu),
    ("maxim-ccdsoft", "gain", {}, None),
    ("maxim-ccdsoft", "saturation", {}, 65535 * u.adu),
    ("maxim-ccdsoft", "saturation", {"DATAMAX": 4095}, 4095 * u.adu),
    ("magellan-imacs", "read_noise", {"ENOISE": 3.9}, 3.9 * u.electron),
])
def test_detector_value(profile, quantity, cards, expected):
    value = getattr(ccdproc_ext.get_profile(profile), quantity)(fits.Header(cards),
                                                                required=False)
    if expected is None:
        assert value is None
    else:
        assert isinstance(value, u.Quantity)
        assert value.unit == expected.unit
        assert value.value == pytest.approx(expected.value)



@pytest.mark.parametrize(("quantity", "cards", "match"), [
    ("gain", {}, r"f\.fits: the gain \(header GAIN or EGAIN .* not given for this frame "
                 r"by profile 'generic'"),
    ("gain", {"GAIN": 0.0}, r"f\.fits: the gain .* is 0: not a gain"),
    ("gain", {"EGAIN": "high"}, r"f\.fits: keyword EGAIN = 'high' is not a number"),
    ("read_noise", {"RDNOISE": -1}, r"f\.fits: the read noise .* is -1: not a read noise"),
    ("saturation", {"DATAMAX": 0}, r"f\.fits: a saturation level of 0 is not a saturation "
                                   r"level \(not above 0\)"),
])
def test_detector_value_that_is_no_value_names_the_file_and_keyword(quantity, cards, match):
    read = getattr(ccdproc_ext.get_profile("generic"), quantity)
    with pytest.raises(HeaderError, match=match):
        read(fits.Header(cards), path="f.fits")
    if cards:  # a value that is there but is no value is an error even when not required
        with pytest.raises(HeaderError, match=match):
            read(fits.Header(cards), path="f.fits", required=False)
    else:
        assert read(fits.Header(cards), path="f.fits", required=False) is None


def test_detector_value_names_the_step_that_needs_it():
    generic = ccdproc_ext.get_profile("generic")
    with pytest.raises(HeaderError, match=r"f\.fits: gain_correct needs the gain \(header "
                                          r"GAIN or EGAIN .*\), which profile 'generic' does "
                                          r"not give for this frame"):
        generic.gain(fits.Header(), path="f.fits", needed_by="gain_correct")
    assert generic.gain_spec.keywords == ("GAIN", "EGAIN")
    assert generic.saturation_spec.unit == u.adu

# -------------------------------------------------------- profiles from other packages
class FakeDistribution:
    def __init__(self, name, version):
        self.name = name
        self.version = version


class FakeEntryPoint:
    """Stands in for an `importlib.metadata.EntryPoint` of an installed plugin."""

    def __init__(self, name, dist, paths=None, error=None):
        self.name = name
        self.value = f"{dist.name.replace('-', '_')}.profiles:ccdproc_ext_profiles"
        self.dist = dist
        self._paths = paths
        self._error = error

    def load(self):
        if self._error is not None:
            raise self._error
        return lambda: list(self._paths)


@pytest.fixture
def plugins(monkeypatch):
    """The list of fake entry points the registry sees; the registry is fresh around it."""
    entry_points = []
    monkeypatch.setattr(registry, "_entry_points", lambda: entry_points)
    registry.reset_registry()
    yield entry_points
    registry.reset_registry()


def plugin_profile(folder, name):
    text = VALID_PROFILE.replace('name = "test-camera"', f'name = "{name}"')
    return write_profile(folder, text, name=f"{name}.toml")


def test_plugin_contributes_profiles(plugins, tmp_path):
    first = plugin_profile(tmp_path, "observatory-cam1")
    second = plugin_profile(tmp_path, "observatory-cam2")
    plugins.append(FakeEntryPoint("observatory", FakeDistribution("observatory", "1.0"),
                                  paths=[first, str(second)]))
    names = ccdproc_ext.available_profiles()
    assert {"observatory-cam1", "observatory-cam2"} <= set(names)
    assert set(BUILTIN_PROFILES) <= set(names)
    assert ccdproc_ext.get_profile("observatory-cam1").path == str(first)


def test_plugins_are_discovered_lazily_once(plugins, monkeypatch):
    calls = []
    monkeypatch.setattr(registry, "_entry_points", lambda: calls.append(1) or plugins)
    ccdproc_ext.available_profiles()
    ccdproc_ext.get_profile("generic")
    assert calls == [1]
    registry.reset_registry()
    ccdproc_ext.available_profiles()
    assert calls == [1, 1]


@pytest.mark.parametrize("error", [
    ImportError("No module named 'broken_plugin'"),
    AttributeError("module 'broken_plugin' has no attribute 'ccdproc_ext_profiles'"),
])
def test_broken_plugin_is_a_warning(plugins, tmp_path, error):
    good = plugin_profile(tmp_path, "good-cam")
    plugins.append(FakeEntryPoint("broken", FakeDistribution("broken-plugin", "0.3"),
                                  error=error))
    plugins.append(FakeEntryPoint("good", FakeDistribution("good-plugin", "1.0"),
                                  paths=[good]))
    with pytest.warns(CcdprocExtWarning, match=r"broken-plugin 0\.3") as record:
        names = ccdproc_ext.available_profiles()
    assert str(error) in str(record[0].message)
    assert "good-cam" in names
    assert "generic" in names


def test_plugin_with_an_invalid_profile_is_a_warning(plugins, tmp_path):
    broken = write_profile(tmp_path, edited("scale_darks = false", 'scale_darks = "yes"'))
    plugins.append(FakeEntryPoint("bad", FakeDistribution("bad-profiles", "2.1"),
                                  paths=[broken]))
    with pytest.warns(CcdprocExtWarning, match=r"bad-profiles 2\.1.*matching\.scale_darks"):
        names = ccdproc_ext.available_profiles()
    assert "test-camera" not in names
    assert "generic" in names


def test_plugin_clashing_with_a_builtin_names_both(plugins, tmp_path):
    clash = plugin_profile(tmp_path, "generic")
    plugins.append(FakeEntryPoint("mine", FakeDistribution("clashing-plugin", "0.1"),
                                  paths=[clash]))
    with pytest.raises(ProfileError, match="two profiles are named 'generic'") as err:
        ccdproc_ext.available_profiles()
    assert "ccdproc_ext (generic.toml)" in str(err.value)
    assert "clashing-plugin 0.1" in str(err.value)


def test_two_plugins_with_the_same_profile_name(plugins, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = plugin_profile(tmp_path / "a", "shared-cam")
    second = plugin_profile(tmp_path / "b", "shared-cam")
    plugins.append(FakeEntryPoint("a", FakeDistribution("plugin-a", "1.0"), paths=[first]))
    plugins.append(FakeEntryPoint("b", FakeDistribution("plugin-b", "2.0"), paths=[second]))
    with pytest.raises(ProfileError) as err:
        ccdproc_ext.get_profile("shared-cam")
    assert "plugin-a 1.0" in str(err.value)
    assert "plugin-b 2.0" in str(err.value)


# --------------------------------------------------------------------- real frames
def test_maxim_ccdsoft_on_sbig_frames(real_data):
    profile = ccdproc_ext.get_profile("maxim-ccdsoft")
    files = sorted((real_data / "sbig-stl1001e").glob("*.FIT"))
    by_header = Counter()
    for path in files:
        header = fits.getheader(path)
        kind = profile.classify(header)
        by_header[kind] += 1
        if path.name.startswith("bias"):
            assert kind == "bias", path.name
        elif path.name.startswith("darks"):
            assert kind == "dark", path.name
        else:
            # The flats say 'Light Frame': only their file name says they are flats.
            assert path.name.startswith("flat")
            assert kind == "science", path.name
            assert profile.classify_path(path) == "flat"
        assert profile.gain(header) == 2.06 * u.electron / u.adu
    assert by_header == {"bias": 20, "dark": 22, "science": 10}


def test_maxim_ccdsoft_trusts_exptime_over_file_names(real_data):
    # Files named 'darks-expos1-...' are 60 s darks according to EXPTIME.
    profile = ccdproc_ext.get_profile("maxim-ccdsoft")
    files = sorted((real_data / "sbig-stl1001e").glob("darks-expos1-*.FIT"))
    assert len(files) == 10
    for path in files:
        assert profile.exposure_time(fits.getheader(path), path=path) == 60.0


def test_zwo_asiimg_reads_the_decimal_comma(real_data):
    profile = ccdproc_ext.get_profile("zwo-asiimg")
    files = sorted((real_data / "zwo-asi178" / "Bias").glob("*.fit"))
    assert len(files) == 5
    for path in files:
        header = fits.getheader(path)
        assert profile.exposure_time(header, path=path) == pytest.approx(3.2e-05, rel=1e-12)
        assert profile.classify(header, path=path) == "bias"
        assert profile.binning(header) == (1, 1)


def test_dot_tircam2_frames(real_data):
    profile = ccdproc_ext.get_profile("dot-tircam2")
    files = sorted((real_data / "dot-tircam2").glob("*.fits"))
    assert len(files) == 13
    kinds = Counter()
    exposures = {}
    for path in files:
        header = fits.getheader(path)
        kind = profile.classify(header, path=path)
        kinds[kind] += 1
        exposures.setdefault(kind, set()).add(profile.exposure_time(header, path=path))
        if kind == "bias":
            assert profile.filter_name(header) == "BLOCK"
    assert kinds == {"bias": 3, "flat": 5, "science": 5}
    assert exposures == {"bias": {0.0}, "flat": {6.0}, "science": {40.0}}


@pytest.mark.parametrize("name", ["generic", "palomar-lfc", "magellan-ifum", "zwo-asiimg"])
def test_profiles_pickle_for_worker_processes(name):
    import pickle

    profile = ccdproc_ext.get_profile(name)
    copy = pickle.loads(pickle.dumps(profile))
    assert copy == profile
    assert copy.image_type_words == profile.image_type_words
    with pytest.raises(TypeError):
        copy.image_type_words["bias"] = ("changed",)  # still read-only


def test_set_temperature_and_time_keywords_are_read_from_toml(tmp_path):
    path = write_profile(tmp_path, edited(
        'exposure_time = ["EXPTIME"]',
        'exposure_time = ["EXPTIME"]\nset_temperature = ["setpoint"]\n'
        'time_obs = ["UT-TIME"]'))
    profile = ccdproc_ext.get_profile(path)
    assert profile.set_temperature_keywords == ("SETPOINT",)  # upper-cased like the others
    assert profile.time_obs_keywords == ("UT-TIME",)
    header = fits.Header({"SETPOINT": -25.0, "DATE-OBS": "2024-03-05", "UT-TIME": "02:00:00"})
    assert profile.set_temperature(header) == -25.0
    assert profile.date_obs(header).isot == "2024-03-05T02:00:00.000"


def test_profile_without_the_new_keywords_has_their_defaults(tmp_path):
    profile = ccdproc_ext.get_profile(write_profile(tmp_path, VALID_PROFILE))
    assert profile.set_temperature_keywords == ("SET-TEMP", "SETTEMP", "SET_TEMP")
    assert profile.time_obs_keywords == ("TIME-OBS", "UT", "UTSTART", "TIME-BEG")
