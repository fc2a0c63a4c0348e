"""A header fuzzer for the default call: ``reduce_night(folder, out)`` on nights whose
headers were damaged the ways real cameras damage them.

Each example copies a small simulated night (the default profile's keywords), damages a
few cards of a few frames (dropped, blank, lower case, a number written as a string or
with a decimal comma, an old ``dd/mm/yy`` date, ``BUNIT`` spelled as cameras spell it,
the image moved into a length-1 cube) and reduces it with no profile and no option.

The rule: the night is reduced; a frame that is not is a problem naming the file, whose
words name the damaged keyword or its value; nothing is an ``InternalError`` (a bug); and
in strict mode the error, if any, is a `~ccdproc_ext.CcdprocExtError` naming a file.
"""

import shutil

import numpy as np
import pytest
from astropy.io import fits

from ccdproc_ext import CcdprocExtError, reduce_night
from ccdproc_ext.simulate import simulate_night

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

#: Keywords the default profile reads that the simulator writes, and BUNIT.
KEYWORDS = ["IMAGETYP", "EXPTIME", "FILTER", "DATE-OBS", "CCDSUM", "SET-TEMP", "BIASSEC",
            "TRIMSEC", "GAIN", "BUNIT"]
DAMAGE = ["drop", "blank", "lower", "string", "comma", "old-date", "unit", "cube"]
UNITS = ["ADU", "adu", "counts", "Count", "DN", "electrons", "e-", "W/m2", ""]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    folder = tmp_path_factory.mktemp("template")
    night = simulate_night(folder, shape=(24, 32), n_bias=2, n_dark=2, n_flat=2,
                           filters=("V",), n_science=2, cosmic_rays=0, n_stars=3)
    return folder, [str(f) for f in night.files["file"]]


def damage_card(header, keyword, how, rng_value):
    """Damage ``keyword`` of ``header`` in place; returns the text a message may name."""
    value = header.get(keyword)
    if how == "drop":
        header.remove(keyword, ignore_missing=True)
    elif how == "blank":
        header[keyword] = ""
    elif how == "lower":
        if isinstance(value, str):
            header[keyword] = value.lower()
    elif how == "string":
        if isinstance(value, int | float) and not isinstance(value, bool):
            header[keyword] = f"{value:<8}"
    elif how == "comma":
        if isinstance(value, float):
            text = f"{value:.1f}".replace(".", ",")
            header.remove(keyword)
            header.append(fits.Card.fromstring(f"{keyword:<8}= {text:>20}"))
    elif how == "old-date":
        if keyword == "DATE-OBS" and isinstance(value, str) and len(value) >= 10:
            header[keyword] = f"{value[8:10]}/{value[5:7]}/{value[2:4]}"
    elif how == "unit":
        header["BUNIT"] = UNITS[rng_value % len(UNITS)]
        return header["BUNIT"]
    return str(value) if value is not None else keyword


damages = st.lists(st.tuples(st.integers(0, 99), st.sampled_from(KEYWORDS),
                             st.sampled_from(DAMAGE), st.integers(0, 99)),
                   min_size=1, max_size=3)


def write_damaged(template, folder, plan):
    source, files = template
    shutil.copytree(source, folder)
    named = {}
    for index, keyword, how, extra in plan:
        file = files[index % len(files)]
        path = folder / file
        with fits.open(path) as hdul:
            header = hdul[0].header.copy()
            data = hdul[0].data.copy()
        if how == "cube":
            data = data[np.newaxis]
            text = "NAXIS3"
        else:
            text = damage_card(header, keyword, how, extra)
        header.pop("BZERO", None), header.pop("BSCALE", None)
        hdu = fits.PrimaryHDU(data, header=header)
        hdu.writeto(path, overwrite=True, output_verify="silentfix+ignore")
        named.setdefault(file, set()).update({keyword, text, how})
    return files, named


@hypothesis.settings(max_examples=25, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(plan=damages)
def test_damaged_headers_reduce_or_name_the_keyword(template, tmp_path_factory, plan):
    folder = tmp_path_factory.mktemp("night")
    raw = folder / "raw"
    files, named = write_damaged(template, raw, plan)
    result = reduce_night(raw, folder / "out", progress=False, workers=1,
                          report=False)  # headers are the subject here, not pictures
    assert "InternalError" not in set(result.problems["kind"]), result.summary()
    reduced = {str(f) for f in result.science["raw_file"]}
    for file in files:
        if not (file.startswith("object") or file in named):
            continue
        rows = [r for r in result.problems if r["file"] == file]
        if file.startswith("object") and file not in reduced and file in named:
            # It was damaged, and not reduced: its problem says what was wrong.
            words = " ".join(str(r["problem"]) for r in rows)
            assert rows, f"{file} neither reduced nor a problem:\n{result.summary()}"
            assert any(str(t) and str(t) in words for t in named[file]) or \
                "master" in words, words
    try:
        reduce_night(raw, folder / "strict", progress=False, workers=1, strict=True,
                     report=False)
    except CcdprocExtError as err:
        assert type(err).__name__ != "InternalError", str(err)
        assert any(file in str(err) for file in files) or "master" in str(err), str(err)
