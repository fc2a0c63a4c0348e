"""The default call on the headers of real raw frames from cameras nobody here made.

The folder of headers (``headers/`` beside the folder of real frames, or
``CCDPROC_EXT_REAL_HEADERS``) holds the headers of 142 raw frames of six cameras as their
acquisition programs wrote them, each labelled with the type a person would give it
(``labels.csv``). The tests make a FITS file of each header (the pixels the header
declares) and read them all with the default profile: types, values and sections must be
what a person would say, or said to be unknown; no exception may escape. A second test
gives the frames pixels that suit their type and runs the whole default
`~ccdproc_ext.reduce_night` over each camera's night.
"""

import csv
import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

from ccdproc_ext import NightCollection, reduce_night

#: At most this fraction of the corpus may be "cannot tell" (no type, with the reason).
CANNOT_TELL = 0.05
#: The largest side of the pixels made for the whole reduction (the headers keep theirs).
REDUCED_SIDE = 48
_STRUCTURE = ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "BZERO",
              "BSCALE", "XTENSION", "PCOUNT", "GCOUNT")


@pytest.fixture(scope="module")
def corpus():
    """``{instrument: [(label row, [header of each HDU])]}``, or skip without the folder."""
    value = os.environ.get("CCDPROC_EXT_REAL_HEADERS")
    if value:
        root = Path(value)
    else:
        real = os.environ.get("CCDPROC_EXT_REAL_DATA")
        root = Path(real).parent / "headers" if real else None
    if root is None or not (root / "labels.csv").is_file():
        pytest.skip("the folder of real headers is not there (CCDPROC_EXT_REAL_HEADERS, "
                    "or headers/ beside CCDPROC_EXT_REAL_DATA)")
    found = {}
    with open(root / "labels.csv", newline="") as stream:
        for label in csv.DictReader(stream):
            text = (root / label["instrument_slug"] / label["file"]).read_text()
            headers = [_header(part) for part in text.split("\n--- HDU")]
            found.setdefault(label["instrument_slug"], []).append((label, headers))
    return found


def _header(text):
    lines = [line for line in text.splitlines() if not line.startswith("--- HDU")
             and not line.strip().endswith("---")]
    cards = "".join(line.ljust(80)[:80] for line in lines)
    return fits.Header.fromstring(cards)


def _file_name(label):
    return label["file"].removesuffix(".hdr").removesuffix(".gz")


def _shape(header):
    n = int(header.get("NAXIS", 0))
    return tuple(int(header[f"NAXIS{i}"]) for i in range(n, 0, -1))


def _write(path, header, data):
    """A FITS file of ``header``'s cards (the structure ones made by astropy for
    ``data``), keeping ``BZERO`` so that unsigned pixels stay unsigned."""
    cards = header.copy()
    for key in _STRUCTURE:
        cards.remove(key, ignore_missing=True, remove_all=True)
    with warnings.catch_warnings():
        # Cards as the cameras wrote them (comments too long, values padded): astropy
        # says so while writing them again, which is the point.
        warnings.simplefilter("ignore", VerifyWarning)
        fits.PrimaryHDU(data, cards).writeto(path, output_verify="silentfix")


def _declared_pixels(header):
    """Zeros of the shape and type the header declares (uint16 for BITPIX 16 with
    BZERO 32768, as cameras write)."""
    bitpix = int(header["BITPIX"])
    unsigned = bitpix == 16 and float(header.get("BZERO", 0)) == 32768
    dtype = {8: np.uint8, 16: np.uint16 if unsigned else np.int16, 32: np.int32,
             -32: np.float32, -64: np.float64}[bitpix]
    return np.zeros(_shape(header) or (8, 8), dtype=dtype)


def _night_of_headers(folder, rows):
    """The files of one instrument's headers, with the pixels they declare."""
    folder.mkdir()
    for label, headers in rows:
        _write(folder / _file_name(label), headers[0], _declared_pixels(headers[0]))
    return NightCollection(folder)


def _right_type(expected, got):
    if expected == "other":
        return got not in ("bias", "dark", "flat")
    return got == expected


def test_types_of_the_real_headers(corpus, tmp_path):
    """Every frame typed as a person would, or "cannot tell" with the reason, for at most
    5% of the corpus; the figures per instrument are printed (``pytest -s``)."""
    wrong, cannot_tell, total = [], [], 0
    for instrument, rows in sorted(corpus.items()):
        night = _night_of_headers(tmp_path / instrument, rows)
        frames = {str(f["file"]): f for f in night.frames}
        counts = Counter()
        for label, _ in rows:
            total += 1
            frame = frames[_file_name(label)]
            got = str(frame["type"])
            if not got:
                # "cannot tell": a problem that says why, naming the keyword.
                assert "IMAGETYP" in str(frame["problem"]), frame
                cannot_tell.append((instrument, label["file"]))
                counts["cannot tell"] += 1
            elif _right_type(label["expected_type"], got):
                counts["right"] += 1
            else:
                wrong.append((instrument, label["file"], label["expected_type"], got,
                              str(frame["type_rule"])))
                counts["wrong"] += 1
        print(f"{instrument}: {dict(counts)}")
    assert not wrong
    assert len(cannot_tell) <= CANNOT_TELL * total, cannot_tell


def test_values_of_the_real_headers_are_read_or_said_unknown(corpus, tmp_path):
    """Exposure, date, filter, binning and temperature of every frame are read, or said
    unknown (the frame's problem, or the night's notes) where they matter: an exposure
    for all but biases, a filter for flats and science frames, a binning or temperature
    that other frames of the night give."""
    for instrument, rows in sorted(corpus.items()):
        night = _night_of_headers(tmp_path / instrument, rows)
        night_notes = " ".join(night.night_notes)
        headers = {_file_name(label): h[0] for label, h in rows}
        binned = {f for f, h in headers.items()
                  if any(k in h for k in ("CCDSUM", "XBINNING", "BINNING"))}
        tempered = np.isfinite(np.asarray(night.frames["temperature"], dtype=float))
        for frame, temperature_known in zip(night.frames, tempered, strict=True):
            said = f"{frame['problem']} {night_notes}"
            where = f"{instrument}/{frame['file']}"
            if frame["type"] != "bias":
                assert np.isfinite(frame["exposure"]) or "EXPTIME" in said, where
            assert frame["date_obs"] or "date: not given" in said, where
            if frame["type"] in ("flat", "science"):
                assert frame["filter"] or "filter: not given" in said, where
            if binned and frame["file"] not in binned:
                assert "binning: not given" in said, where
            if tempered.any() and not temperature_known:
                assert "temperature: not given" in said, where


# ------------------------------------------------------------- the whole default call
#: Levels (ADU above the bias) that suit each type: dark current per second, a flat's
#: illumination, a science frame's sky per second.
_BIAS, _DARK_RATE, _FLAT, _SKY_RATE = 1000.0, 0.5, 20000.0, 5.0


def _pixels_for(header, image_type, exposure, rng):
    shape = tuple(min(n, REDUCED_SIDE) for n in _shape(header)) or (8, 8)
    level = _BIAS + {"bias": 0.0, "dark": _DARK_RATE * exposure, "flat": _FLAT,
                     "science": _SKY_RATE * exposure}.get(image_type, _SKY_RATE * exposure)
    data = level + rng.normal(0.0, 5.0, shape)
    return np.clip(data, 0, 60000).astype(np.uint16 if int(header["BITPIX"]) == 16
                                          else np.float32)


#: The frames labelled science or other that the default call cannot reduce, and why: a
#: person reading the headers says the same (no calibration of theirs in the folder).
NOT_REDUCIBLE = {
    # No exposure time anywhere in the header (only TINTnn per chop position).
    "palomar200-d80-ircam": {"Near-Infrared.fits"},
    # Binned 1x2, flats only at 1x1 and 3x3; 1200 s with darks of 240 and 360 s and no
    # bias to scale one; the lamps at 1x1 have no dark of their binning.
    "sbu-sbig-st402-ccdsoft5": {
        *(f"L2-sci-hg-240.0000000{i}.FIT" for i in range(5)),
        *(f"L2-sci-neon-1200.0000000{i}.FIT" for i in range(3)),
        "spec_lamp.FIT", "spec_neon_1series_1s.00000001.NOAUTODARK.FIT",
        "spec_neon_1series_5s.00000001.NOAUTODARK.FIT"},
    # The guide camera's frame, unbinned, has no dark or flat of its own binning.
    "uoft-atik-maxim6": {"MoonGuideImage2.fit"},
    # 240 s with darks of 120 s in its night and no bias to scale one.
    "uoft-sbig-st7-maxim4": {"Lamp2.fit"},
}


def night_of_pixels(raw, rows, rng):
    """The frames of one camera's headers (``rows`` of the corpus) in the folder ``raw``,
    with pixels that suit their labelled type."""
    raw.mkdir(parents=True)
    for label, headers in rows:
        header = headers[0]
        exposure = float(str(header.get("EXPTIME", header.get("EXPOSURE", 0)))
                         .replace(",", ".") or 0)
        _write(raw / _file_name(label), header,
               _pixels_for(header, label["expected_type"], exposure, rng))


def test_default_call_over_each_instruments_headers(corpus, tmp_path):
    """Pixels that suit each labelled type, the whole default reduce_night: every science
    (and arc) frame whose calibrations the folder holds is written, nothing raises."""
    rng = np.random.default_rng(7)
    for instrument, rows in sorted(corpus.items()):
        raw = tmp_path / instrument / "raw"
        night_of_pixels(raw, rows, rng)
        result = reduce_night(raw, tmp_path / instrument / "out", progress=False,
                              report=False)
        written = set(result.science["raw_file"][result.science["status"] == "written"])
        lit = {_file_name(label) for label, _ in rows
               if label["expected_type"] in ("science", "other")}
        expected = lit - NOT_REDUCIBLE.get(instrument, set())
        assert written == expected, (instrument, result.problems)
        print(f"{instrument}: {len(written)} of {len(lit)} science and arc frames written")
