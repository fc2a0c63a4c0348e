"""A profile drafted from a night: it validates, it reduces the night as the default
call does, and an edit of it changes exactly what was edited.

The truth is the default call itself (its plan and its pixels), the keywords and words
written here by hand from the real frames' headers (their README says what each camera
writes), and tomllib reading back what the writer wrote.
"""

import dataclasses
import math
import tomllib

import numpy as np
import pytest
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

import ccdproc_ext
from ccdproc_ext import draft_profile, reduce_night, validate_profile
from ccdproc_ext.cli import main
from ccdproc_ext.profiles.draft import _toml_text, draft_profile_text
from ccdproc_ext.simulate import simulate_night

from .test_real_headers import corpus, night_of_pixels  # noqa: F401 (corpus: a fixture)


# --------------------------------------------------------------------- helpers
def _write_draft(raw, path, **kwargs):
    path.write_text(draft_profile_text(raw, **kwargs), encoding="utf-8")
    return path


def _reduce(raw, out, profile="generic"):
    return reduce_night(raw, out, profile, progress=False, report=False, workers=1)


def _same_value(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _plan_differences(one, other):
    """``{column: [files]}`` where two plans differ, and the columns only one has."""
    assert list(one["file"]) == list(other["file"])
    assert one.colnames == other.colnames
    found = {}
    for name in one.colnames:
        for file, a, b in zip(one["file"], one[name].tolist(), other[name].tolist(),
                              strict=True):
            if not _same_value(a, b):
                found.setdefault(name, []).append(str(file))
    return found


def _pixels(result):
    """``{raw file: output pixels}`` of the science frames written."""
    science = result.science[result.science["status"] == "written"]
    return {str(row["raw_file"]): fits.getdata(row["output_file"])
            for row in science}


def _master_pixels(result):
    return {key: fits.getdata(path) for key, path in result.masters.items()}


def _assert_same_reduction(default, drafted):
    """Assert the same plan and pixels; returns how many images were compared."""
    assert _plan_differences(default.plan, drafted.plan) == {}
    assert default.plan.meta["notes"] == drafted.plan.meta["notes"]
    default_pixels, drafted_pixels = _pixels(default), _pixels(drafted)
    default_masters, drafted_masters = _master_pixels(default), _master_pixels(drafted)
    assert default_pixels.keys() == drafted_pixels.keys()
    for file, data in default_pixels.items():
        np.testing.assert_array_equal(drafted_pixels[file], data, err_msg=file)
    assert default_masters.keys() == drafted_masters.keys()
    for key, data in default_masters.items():
        np.testing.assert_array_equal(drafted_masters[key], data, err_msg=str(key))
    return len(default_pixels) + len(default_masters)


# ---------------------------------------------------------------- TOML writing
def test_written_toml_reads_back_exactly():
    """Strings TOML must escape, numbers, booleans, lists and inline tables: tomllib
    reads back the very document."""
    data = {
        "schema_version": 1,
        "name": "tricky",
        "description": 'quotes " and \\ backslashes, a tab\t, a newline\n, \x01 and é',
        "transposed": False,
        "keywords": {"image_type": ["IMAGETYP", "OBS TYPE"], "filter": ["FILTER1,FILTER2"]},
        "image_types": {"bias": ["bias frame", "zero\u007f"]},
        "detector": {"gain": {"keyword": ["EGAIN"], "unit": "electron / adu"},
                     "saturation": {"value": 65535.5, "unit": "adu"},
                     "overscan": {"keyword": ["BIASSEC"], "required": False}},
        "matching": {"dark_tolerance": 1e-05, "match_keywords": [],
                     "odd key": 0.1 + 0.2},
    }
    comments = {("", "name"): ["a comment with a\nnewline and a \x00 in it"],
                ("detector", None): ["above the table"]}
    assert tomllib.loads(_toml_text(data, comments, ["heading"])) == data


# ------------------------------------------------------------ the shared folders
#: What each real folder's headers and names say, written from their README and their
#: headers: the keywords mapped, and the words and patterns of each type (words
#: ``None``: the folder has no image-type keyword, the draft keeps the generic words).
REAL = {
    "sbig-stl1001e": {
        "keywords": {"image_type": ("IMAGETYP",), "exposure_time": ("EXPTIME", "EXPOSURE"),
                     "filter": ("FILTER",), "set_temperature": ("SET-TEMP",)},
        "words": {"bias": ("bias frame",), "dark": ("dark frame",),
                  "science": ("light frame",)},
        "patterns": {"bias": ("*bias*",), "dark": ("*dark*",), "flat": ("*flat*",)},
        "comments": ["IMAGETYP on all 52 frames", "'Light Frame' on 10 frames -> science",
                     "the name decided the type of 10 flat frames",
                     # The README: no overscan.
                     "no BIASSEC in any header, and no edge column or row"],
    },
    "dot-tircam2": {
        "keywords": {"exposure_time": ("EXPTIME",), "filter": ("FILTER1,FILTER2",)},
        "words": None,
        "patterns": {"bias": ("*bias*",), "flat": ("*flat*",)},
        "comments": ["5 frames (IC310_1.fits", "guessed science",
                     "no frame has an image-type keyword"],
    },
    "zwo-asi178": {
        "keywords": {"exposure_time": ("EXPTIME", "EXPOSURE"),
                     "binning": ("XBINNING,YBINNING",), "temperature": ("CCD-TEMP",)},
        "words": None,
        "patterns": {"bias": ("*bias*",), "dark": ("*dark*",), "flat": ("*flat*",)},
        "comments": ["GAIN on all 25 frames"],
    },
}


@pytest.fixture(scope="module", params=sorted(REAL))
def real_night(request, real_data, tmp_path_factory):
    """A real folder, its draft file, and the default call's reduction of it."""
    raw = real_data / request.param
    folder = tmp_path_factory.mktemp(request.param)
    draft = _write_draft(raw, folder / "draft.toml")
    return request.param, raw, draft, _reduce(raw, folder / "default")


def test_draft_of_a_real_folder_validates_and_names_what_it_mapped(real_night):
    name, raw, draft, _ = real_night
    expected = REAL[name]
    assert validate_profile(draft) == []
    profile = ccdproc_ext.get_profile(draft)
    for kind, keywords in expected["keywords"].items():
        assert getattr(profile, f"{kind}_keywords") == keywords, kind
    words = expected["words"]
    if words is None:
        words = dict(ccdproc_ext.get_profile("generic").image_type_words)
    assert dict(profile.image_type_words) == words
    assert dict(profile.file_patterns) == expected["patterns"]
    text = " ".join(draft.read_text().replace("\n# ", " ").split())
    for said in expected["comments"]:
        assert said in text
    # The profile draft_profile returns is the file's, read back.
    assert draft_profile(raw) == dataclasses.replace(profile, path=None)


def test_draft_of_a_real_folder_reduces_it_as_the_default_call(real_night, tmp_path):
    """The same plan (every column, every note) and the same pixels, masters and
    science frames alike."""
    _, raw, draft, default = real_night
    assert _assert_same_reduction(default, _reduce(raw, tmp_path / "drafted", draft))


def test_draft_points_at_an_overscan_no_header_names(tmp_path):
    """A camera with an overscan and no BIASSEC (Palomar LFC's, simulated): the draft
    keeps the default call's choice (no overscan) and names the columns."""
    simulate_night(tmp_path / "raw", "palomar-lfc", shape=(40, 2080), n_bias=3, n_dark=1,
                   filters=("R",), n_flat=2, n_science=1)
    text = " ".join(draft_profile_text(tmp_path / "raw").replace("\n# ", " ").split())
    assert "columns 2056 to 2080 of flat_R_001.fits" in text
    assert f'write overscan = "{ccdproc_ext.get_profile("palomar-lfc").overscan.fits}"' in text
    assert draft_profile(tmp_path / "raw").overscan is None


# ------------------------------------------------------------------- edited drafts
#: The unknown word the night's flats carry, and their filter wheel's second name.
FLAT_WORD, FILTER_NAMES = "SKYFLATS", {"V": "Johnson V", "R": "Cousins R"}


@pytest.fixture(scope="module")
def night_to_correct(tmp_path_factory):
    """A night whose names say nothing, whose flats carry a word no profile knows, and
    whose frames name their filter twice (``FILTER`` and ``FILTNAME``): its draft, and
    the default call's reduction of it."""
    folder = tmp_path_factory.mktemp("night")
    simulated = folder / "simulated"
    simulate_night(simulated, "maxim-ccdsoft", shape=(24, 28), n_bias=3, n_dark=2,
                   dark_exposures=(2.0, 60.0), filters=("V", "R"), n_flat=2,
                   n_science=1)
    raw = folder / "raw"
    raw.mkdir()
    for number, path in enumerate(sorted(simulated.iterdir())):
        with fits.open(path) as hdul:
            header = hdul[0].header
            if header["IMAGETYP"].strip().lower() == "flat field":
                header["IMAGETYP"] = FLAT_WORD
                header.remove("OBJECT", ignore_missing=True)  # 'flat' would say it
            if header.get("FILTER"):
                header["FILTNAME"] = FILTER_NAMES[header["FILTER"]]
            hdul.writeto(raw / f"frame_{number:03d}.fits")
    draft = _write_draft(raw, folder / "draft.toml")
    return raw, draft, _reduce(raw, folder / "default")


def _edited(draft, tmp_path, old, new):
    text = draft.read_text()
    assert old in text
    edited = tmp_path / "edited.toml"
    edited.write_text(text.replace(old, new, 1))
    assert validate_profile(edited) == []
    return edited


def test_unedited_draft_of_a_night_to_correct_reduces_as_the_default_call(
        night_to_correct, tmp_path):
    raw, draft, default = night_to_correct
    assert f"'{FLAT_WORD}' on 4 frames is no type" in draft.read_text()
    assert _assert_same_reduction(default, _reduce(raw, tmp_path / "drafted", draft))


def test_edited_type_words_type_exactly_the_frames_that_carry_them(night_to_correct,
                                                                   tmp_path):
    raw, draft, default = night_to_correct
    edited = _edited(draft, tmp_path, "[image_types]\n",
                     f'[image_types]\nflat = ["{FLAT_WORD.lower()}"]\n')
    result = _reduce(raw, tmp_path / "out", edited)
    carrying = {path.name for path in raw.iterdir()
                if fits.getheader(path)["IMAGETYP"] == FLAT_WORD}
    changed = {str(row["file"]) for row, before in zip(result.plan, default.plan,
                                                        strict=True)
               if row["type"] != before["type"]}
    assert changed == carrying
    assert set(result.plan[np.isin(result.plan["file"], sorted(carrying))]["type"]) == {"flat"}
    science = result.plan[result.plan["type"] == "science"]
    assert all(science["flat"]) and not any(
        default.plan[default.plan["type"] == "science"]["flat"])


def test_edited_filter_keyword_names_the_filters_it_holds(night_to_correct, tmp_path):
    raw, draft, default = night_to_correct
    edited = _edited(draft, tmp_path, 'filter = ["FILTER", "FILTNAME"]',
                     'filter = ["FILTNAME"]')
    result = _reduce(raw, tmp_path / "out", edited)
    for row, before in zip(result.plan, default.plan, strict=True):
        expected = FILTER_NAMES.get(str(before["filter"]), "")
        assert row["filter"] == expected, row["file"]
    # Only the filter and what is named after it differ; the pixels are the same.
    assert set(_plan_differences(default.plan, result.plan)) <= {"filter", "flat", "bpm"}
    assert {k: v.tolist() for k, v in _pixels(result).items()} == \
        {k: v.tolist() for k, v in _pixels(default).items()}


def test_edited_trim_section_trims_every_output_to_it(night_to_correct, tmp_path):
    raw, draft, default = night_to_correct
    edited = _edited(draft, tmp_path, "[detector]\n", '[detector]\ntrim = "[1:20,*]"\n')
    result = _reduce(raw, tmp_path / "out", edited)
    assert _plan_differences(default.plan, result.plan) == {}
    pixels = _pixels(result)
    assert pixels and {data.shape for data in pixels.values()} == {(24, 20)}
    assert {data.shape for data in _pixels(default).values()} == {(24, 28)}


# ------------------------------------------------------------------ command line
def test_command_line_drafts_validates_and_shows(night_to_correct, tmp_path, capsys):
    raw, _, _ = night_to_correct
    output = tmp_path / "camera.toml"
    assert main(["profiles", "draft", str(raw), "-o", str(output), "--name", "my-cam"]) == 0
    assert main(["profiles", "validate", str(output)]) == 0
    assert main(["profiles", "show", str(output)]) == 0
    printed = capsys.readouterr().out
    assert f"{output}: valid" in printed
    assert "my-cam: Drafted from the frames of raw" in printed
    # Printed without -o: the same document.
    assert main(["profiles", "draft", str(raw), "--name", "my-cam"]) == 0
    assert tomllib.loads(capsys.readouterr().out) == tomllib.loads(output.read_text())


def test_command_line_never_writes_over_a_draft(night_to_correct, tmp_path, capsys):
    raw, _, _ = night_to_correct
    output = tmp_path / "camera.toml"
    output.write_text("# my corrections\n")
    assert main(["profiles", "draft", str(raw), "-o", str(output)]) == 1
    assert f"{output}: the file exists" in capsys.readouterr().err
    assert output.read_text() == "# my corrections\n"


def test_draft_of_a_folder_without_frames_says_so(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.warns(AstropyUserWarning, match="no FITS files"), \
            pytest.raises(ccdproc_ext.ProfileError, match="empty: no frame"):
        draft_profile(empty)


# -------------------------------------------------------------- the header corpus
#: The keywords each camera of the header corpus writes, from the corpus's README
#: ("keywords seen"), in the order the generic profile reads them; ``None``: the draft
#: keeps the generic list whole, as the camera writes none of it or writes it unreadable
#: (Palomar's dates, '25/08/105', are no dates: the night says so naming every keyword).
CORPUS = {
    "palomar200-d80-ircam": {"image_type": ("IMAGETYP",), "exposure_time": None,
                             "filter": ("FILTER",), "date_obs": None},
    "sbu-sbig-st402-ccdsoft5": {"image_type": ("IMAGETYP",),
                                "exposure_time": ("EXPTIME", "EXPOSURE"),
                                "binning": ("XBINNING,YBINNING", "CCDXBIN,CCDYBIN"),
                                "temperature": ("SET-TEMP", "CCD-TEMP", "TEMPERAT")},
    "sbu-sbig-stl1001-ccdsoft5": {"image_type": ("IMAGETYP",),
                                  "exposure_time": ("EXPTIME", "EXPOSURE"),
                                  "filter": ("FILTER",)},
    "uoft-atik-maxim6": {"image_type": ("IMAGETYP",), "exposure_time": ("EXPTIME", "EXPOSURE"),
                         # The guide camera's frame gives no temperature.
                         "filter": None, "binning": ("XBINNING,YBINNING",),
                         "temperature": None},
    # FILTER on the frames of 2013 only.
    "uoft-sbig-st7-maxim4": {"image_type": ("IMAGETYP",), "exposure_time": ("EXPTIME",),
                             "filter": None, "date_obs": ("DATE-OBS",)},
    "uzpw50-qhy268m": {"image_type": ("IMAGETYP",), "exposure_time": ("EXPTIME", "EXPOSURE"),
                       "filter": ("FILTER",), "temperature": ("SET-TEMP", "CCD-TEMP")},
}


def test_drafts_of_the_header_corpus_validate_and_reduce_as_the_default_call(
        corpus, tmp_path):  # noqa: F811 (the fixture of test_real_headers)
    """One draft per camera: it validates, names the keywords the camera writes, and
    reduces the camera's night to the default call's plan and pixels."""
    assert set(corpus) == set(CORPUS)
    rng = np.random.default_rng(11)
    generic = ccdproc_ext.get_profile("generic")
    compared = 0
    for instrument, rows in sorted(corpus.items()):
        raw = tmp_path / instrument / "raw"
        night_of_pixels(raw, rows, rng)
        draft = _write_draft(raw, tmp_path / instrument / "draft.toml")
        assert validate_profile(draft) == [], instrument
        profile = ccdproc_ext.get_profile(draft)
        for kind, keywords in CORPUS[instrument].items():
            expected = getattr(generic, f"{kind}_keywords") if keywords is None else keywords
            assert getattr(profile, f"{kind}_keywords") == expected, (instrument, kind)
        print(f"{instrument}: {profile.describe()}")
        compared += _assert_same_reduction(
            _reduce(raw, tmp_path / instrument / "default"),
            _reduce(raw, tmp_path / instrument / "drafted", draft))
    assert compared


def test_draft_with_a_name_that_is_no_profile_name_says_which_key(night_to_correct):
    raw, _, _ = night_to_correct
    with pytest.raises(ccdproc_ext.ProfileError, match=r"draft of raw.*key 'name'"):
        draft_profile(raw, name="My Camera")


def test_a_blank_type_card_keeps_the_generic_keywords(tmp_path):
    """A frame whose IMAGETYP is blank has no type keyword for the default call, which
    names every keyword it looked for: the draft keeps them all, and the same plan."""
    raw = tmp_path / "raw"
    simulate_night(raw, "maxim-ccdsoft", shape=(16, 16), n_bias=2, n_dark=1,
                   filters=("R",), n_flat=2, n_science=2)
    science = sorted(raw.glob("object*"))[0]
    fits.setval(science, "IMAGETYP", value="")
    draft = _write_draft(raw, tmp_path / "draft.toml")
    generic = ccdproc_ext.get_profile("generic")
    assert ccdproc_ext.get_profile(draft).image_type_keywords == \
        generic.image_type_keywords
    assert _assert_same_reduction(_reduce(raw, tmp_path / "default"),
                                  _reduce(raw, tmp_path / "drafted", draft))


def test_words_a_file_name_needs_are_kept(tmp_path):
    """Flats named ``skyflat_*`` and typed 'Light Frame': the name says flat through the
    generic flat word 'skyflat', so the draft keeps the generic words (and says why)
    rather than the words seen alone, which would make them science frames."""
    raw = tmp_path / "raw"
    simulate_night(raw, "maxim-ccdsoft", shape=(16, 16), n_bias=2, n_dark=1,
                   filters=("R",), n_flat=2, n_science=1)
    for number, flat in enumerate(sorted(raw.glob("flat*"))):
        with fits.open(flat) as hdul:
            hdul[0].header["IMAGETYP"] = "Light Frame"
            hdul[0].header.remove("OBJECT", ignore_missing=True)
            hdul.writeto(raw / f"skyflat_{number}.fits")
        flat.unlink()
    draft = _write_draft(raw, tmp_path / "draft.toml")
    profile = ccdproc_ext.get_profile(draft)
    assert "skyflat" in profile.image_type_words["flat"]
    assert "the generic words are kept" in draft.read_text()
    default = _reduce(raw, tmp_path / "default")
    assert set(default.plan[np.char.startswith(default.plan["file"].astype(str),
                                               "skyflat")]["type"]) == {"flat"}
    assert _assert_same_reduction(default, _reduce(raw, tmp_path / "drafted", draft))
