"""A header fuzzer: the keywords the generic profile reads, mutated as real cameras do.

Headers are taken from the real frames (``CCDPROC_EXT_REAL_DATA``, when set) and from
hand-made ones; Hypothesis drops cards, blanks them, writes their values in lower case,
as strings, with a decimal comma or as an old ``dd/mm/yy`` date, and writes each header
card by card (80-character images, so cards astropy would refuse are written as cameras
write them) over a tiny image. The rule: `NightCollection` and its plan raise nothing
but `~ccdproc_ext.CcdprocExtError`, and every frame has either no problem or a problem
whose words name a keyword of the file that was mutated.
"""

import os
import re
from pathlib import Path

import numpy as np
import pytest

from ccdproc_ext import CcdprocExtError, NightCollection

hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")

SHAPE = (4, 6)  # rows, columns
#: Cards of the data layout: written by the fuzzer itself, never mutated.
_LAYOUT = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "BZERO",
           "BSCALE", "END", "PCOUNT", "GCOUNT"}
#: The keywords the generic profile reads (the mutations' targets).
READ = ("IMAGETYP", "OBSTYPE", "EXPTIME", "EXPOSURE", "ITIME", "DATE-OBS", "TIME-OBS",
        "DATE", "SET-TEMP", "CCD-TEMP", "TEMP", "FILTER", "FILTER1", "FILTER2", "INSFLNAM",
        "CCDSUM", "XBINNING", "YBINNING", "SATURATE", "DATAMAX", "BIASSEC", "TRIMSEC",
        "DATASEC", "GAIN", "EGAIN", "OBJECT", "CCDXBIN", "CCDYBIN", "XBIN", "YBIN",
        "BINNING", "CALSTAT", "PEDESTAL", "ZEROCOR", "DARKCOR", "FLATCOR")


def card(key, text):
    """An 80-character card image ``KEY     = text``."""
    return f"{key:<8}= {text}"[:80].ljust(80)


def quoted(value):
    return "'" + str(value).replace("'", "''").ljust(8) + "'"


def hand_made():
    """Headers as various cameras write them, ``{keyword: value text}`` in order."""
    return [
        ("object_001.fits", {"IMAGETYP": quoted("Light Frame"), "EXPTIME": "30.0",
                             "DATE-OBS": quoted("2024-03-05T01:00:00"),
                             "SET-TEMP": "-10.0", "CCD-TEMP": "-9.8", "FILTER": quoted("R"),
                             "XBINNING": "1", "YBINNING": "1", "SATURATE": "65535"}),
        ("bias_002.fits", {"IMAGETYP": quoted("zero"), "EXPTIME": "0.0",
                           "DATE-OBS": quoted("05/03/98"), "TIME-OBS": quoted("01:02:03"),
                           "CCDSUM": quoted("1 1"), "BIASSEC": quoted("[5:6,*]"),
                           "TRIMSEC": quoted("[1:4,*]"), "GAIN": "1.5"}),
        ("flat-expos10s-003.fits", {"IMAGETYP": quoted("Light Frame"), "EXPTIME": "10",
                                    "DATE-OBS": quoted("2024-03-05"), "UT": quoted("23:01:00"),
                                    "FILTER1": quoted("V"), "FILTER2": quoted("Open"),
                                    "TEMP": "-20.5", "DATAMAX": "65000"}),
        ("ksi_Cas_00005.fits", {"EXPOSURE": "12.5", "DATE": quoted("2024-03-05T02:00:00"),
                                "INSFLNAM": quoted("Halpha"), "BIASSEC": quoted("[0,5:0,4]"),
                                "DATASEC": quoted("[5,5:4,4]")}),
        ("dark_004.fits", {"OBSTYPE": quoted("DARK"), "ITIME": quoted("300"),
                           "DATE-OBS": quoted("2024-03-05T03:00:00.5"), "CCD-TEMP": "25.1"}),
        # Flats typed OBJECT and named in OBJECT; a section in unbinned pixels.
        ("n1_0042.fits", {"OBSTYPE": quoted("OBJECT"), "OBJECT": quoted("sky flat"),
                          "EXPTIME": "5.0", "DATE-OBS": quoted("2024-03-05T04:00:00"),
                          "CCDXBIN": "2", "CCDYBIN": "2", "BIASSEC": quoted("[5:6,1:8]")}),
        # Biases typed as 0 s darks.
        ("n1_0001.fits", {"OBSTYPE": quoted("DARK"), "OBJECT": quoted("bias"),
                          "EXPTIME": "0", "XBIN": "1", "YBIN": "1", "DATAMAX": "0.0"}),
        # Calibrated as it was saved (MaxIm DL), and by IRAF's ccdproc.
        ("m31_0005.fits", {"IMAGETYP": quoted("Light Frame"), "EXPTIME": "10",
                           "CALSTAT": quoted("D"), "PEDESTAL": "-100",
                           "BINNING": quoted("1x1")}),
        ("m31_0006.fits", {"IMAGETYP": quoted("object"), "EXPTIME": "20",
                           "ZEROCOR": quoted("Mar  5 10:00 Zero is Zero.fits"),
                           "DARKCOR": quoted("Mar  5 10:00 Dark is Dark.fits")}),
    ]


def _raw_cards(path):
    """``{keyword: value text}`` of the first header of a real file, from its bytes."""
    cards, raw = {}, Path(path).read_bytes()
    for start in range(0, len(raw) - 79, 80):
        image = raw[start:start + 80].decode("ascii", "replace")
        key = image[:8].strip()
        if key == "END":
            break
        if image[8:10] == "= " and key not in _LAYOUT and key not in cards:
            value = image[10:]
            # Keep the value field only (a quoted string or up to the comment slash).
            match = re.match(r"\s*('(?:[^']|'')*'|[^/]*)", value)
            cards[key] = match.group(1).strip()
    return cards


def real_headers():
    root = os.environ.get("CCDPROC_EXT_REAL_DATA")
    if not root or not Path(root).is_dir():
        return []
    picked = ["dot-tircam2/IC310_1.fits", "dot-tircam2/bias_1.fits",
              "dot-tircam2/flats01.fits",
              "sbig-stl1001e/flat-expos23s-Neg5-Vis.00000000.FIT",
              "sbig-stl1001e/bias-Neg10-Vis.00000000.BIAS.FIT",
              "sbig-stl1001e/darks-expos60s-Neg10-Vis.00000000.DARK.FIT",
              "zwo-asi178/Bias/Bias_ASIImg_frame0004.fit",
              "zwo-asi178/Dark/Dark_10s/Dark_ASIImg_10sec_frame0002.fit"]
    return [(name, _raw_cards(Path(root, name))) for name in picked
            if Path(root, name).is_file()]


HEADERS = hand_made() + real_headers()


def _unquote(text):
    text = text.strip()
    if text.startswith("'") and text.endswith("'") and len(text) >= 2:
        return text[1:-1].replace("''", "'").strip()
    return text


def mutate(kind, key, text):
    """The value text of ``key`` after a mutation, or ``None`` to drop the card."""
    value = _unquote(text)
    if kind == "drop":
        return None
    if kind == "blank":
        return quoted("")
    if kind == "lower":
        return quoted(value.lower()) if text.strip().startswith("'") else text.lower()
    if kind == "string":
        return quoted(value)
    if kind == "comma":
        return value.replace(".", ",", 1) if "." in value else value + ",5"
    if kind == "old-date":
        match = re.match(r"^(\d{2})(\d{2})-(\d{2})-(\d{2})", value)
        if match:
            return quoted(f"{match.group(4)}/{match.group(3)}/{match.group(2)}")
        return quoted("32/13/99")
    if kind == "garbage":
        return quoted("n/a ?")
    raise AssertionError(kind)


def write_frame(path, cards):
    """Write a FITS file card by card: layout cards, ``cards`` as given, a tiny image."""
    lines = [card("SIMPLE", "T".rjust(20)), card("BITPIX", "16".rjust(20)),
             card("NAXIS", "2".rjust(20)), card("NAXIS1", str(SHAPE[1]).rjust(20)),
             card("NAXIS2", str(SHAPE[0]).rjust(20))]
    lines += [card(key, text) for key, text in cards.items()]
    lines.append("END".ljust(80))
    header = "".join(lines).encode("ascii", "replace")
    header += b" " * (-len(header) % 2880)
    data = (np.arange(SHAPE[0] * SHAPE[1], dtype=">i2") + 1000).tobytes()
    data += b"\0" * (-len(data) % 2880)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + data)


MUTATIONS = ("drop", "blank", "lower", "string", "comma", "old-date", "garbage")


@st.composite
def nights(draw):
    """One to three frames: a header, mutations of the keywords it reads, a file name."""
    frames = []
    for number in range(draw(st.integers(1, 3))):
        name, cards = draw(st.sampled_from(HEADERS))
        cards = dict(cards)
        targets = sorted(set(READ) & set(cards))
        mutated = {}
        if targets:
            chosen = draw(st.lists(st.sampled_from(targets), max_size=4, unique=True))
            for key in chosen:
                mutated[key] = draw(st.sampled_from(MUTATIONS))
        for key, kind in mutated.items():
            text = mutate(kind, key, cards[key])
            if text is None:
                del cards[key]
            else:
                cards[key] = text
        cards["FRAMENO"] = str(number)  # files with the same bytes would be duplicates
        folder = draw(st.sampled_from(["", "Flat/", "night/"]))
        frames.append((f"{folder}{number}_{name}", cards, set(mutated)))
    return frames


@hypothesis.settings(max_examples=50, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(frames=nights())
def test_mutated_headers_are_read_or_named(tmp_path_factory, frames):
    folder = tmp_path_factory.mktemp("fuzz")
    for name, cards, _ in frames:
        write_frame(folder / name, cards)
    try:
        night = NightCollection(folder)
        plan = night.plan()
    except CcdprocExtError:
        return
    assert len(plan) == len(frames)
    for name, _, mutated in frames:
        frame = night.frames[night.frames["file"] == name][0]
        if frame["problem"]:
            assert frame["problem_kind"] == "HeaderError", frame["problem"]
            assert any(key in frame["problem"] for key in mutated), \
                (name, mutated, frame["problem"])
