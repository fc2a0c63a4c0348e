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

import ccdproc_ext
from ccdproc_ext import draft_profile, reduce_night, validate_profile
from ccdproc_ext.profiles.draft import draft_profile_text, toml_text


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
    assert _plan_differences(default.plan, drafted.plan) == {}
    assert default.plan.meta["notes"] == drafted.plan.meta["notes"]
    default_pixels, drafted_pixels = _pixels(default), _pixels(drafted)
    default_masters, drafted_masters = _master_pixels(default), _master_pixels(drafted)
    assert default_pixels or default_masters  # the comparison is of something
    assert default_pixels.keys() == drafted_pixels.keys()
    for file, data in default_pixels.items():
        np.testing.assert_array_equal(drafted_pixels[file], data, err_msg=file)
    assert default_masters.keys() == drafted_masters.keys()
    for key, data in default_masters.items():
        np.testing.assert_array_equal(drafted_masters[key], data, err_msg=str(key))


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
    assert tomllib.loads(toml_text(data, comments, ["heading"])) == data


# ------------------------------------------------------------ the shared folders
#: What each real folder's headers and names say, written from their README and their
#: headers: the keywords mapped, and the words and patterns of each type.
REAL = {
    "sbig-stl1001e": {
        "keywords": {"image_type": ("IMAGETYP",), "exposure_time": ("EXPTIME", "EXPOSURE"),
                     "filter": ("FILTER",), "set_temperature": ("SET-TEMP",)},
        "words": {"bias": ("bias frame",), "dark": ("dark frame",),
                  "science": ("light frame",)},
        "patterns": {"flat": ("*flat*",)},
        "comments": ["IMAGETYP on all 52 frames", "'Light Frame' on 10 frames -> science",
                     "the name decided the type of 10 flat frames"],
    },
    "dot-tircam2": {
        "keywords": {"exposure_time": ("EXPTIME",), "filter": ("FILTER1,FILTER2",)},
        "words": {},
        "patterns": {"bias": ("*bias*",), "flat": ("*flat*",)},
        "comments": ["5 frames (IC310_1.fits", "guessed science",
                     "no frame has an image-type keyword"],
    },
    "zwo-asi178": {
        "keywords": {"exposure_time": ("EXPTIME", "EXPOSURE"),
                     "binning": ("XBINNING,YBINNING",), "temperature": ("CCD-TEMP",)},
        "words": {},
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
    assert dict(profile.image_type_words) == expected["words"] or \
        not expected["words"]
    for image_type, words in expected["words"].items():
        assert profile.image_type_words[image_type] == words
    for image_type, patterns in expected["patterns"].items():
        assert profile.file_patterns[image_type] == patterns
    text = " ".join(draft.read_text().replace("\n# ", " ").split())
    for said in expected["comments"]:
        assert said in text
    # The profile draft_profile returns is the file's, read back.
    assert draft_profile(raw) == dataclasses.replace(profile, path=None)


def test_draft_of_a_real_folder_reduces_it_as_the_default_call(real_night, tmp_path):
    """The same plan (every column, every note) and the same pixels, masters and
    science frames alike."""
    _, raw, draft, default = real_night
    _assert_same_reduction(default, _reduce(raw, tmp_path / "drafted", draft))
