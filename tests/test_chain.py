"""calibrate_frame against the CCD Data Reduction Guide's recipe with ccdproc's functions.

Each reference is ccdproc's public functions called one after the other on the same raw
frame, with the sections written out as the Guide writes them; masks and levels that the
Guide leaves to the reader are written here with numpy. The pixels must be the same to the
bit (a scaled dark: within one float32 unit in the last place, see below), and so must the
mask and the header cards ccdproc writes.
"""

import astropy.units as u
import ccdproc
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

from ccdproc_ext import MasterFrame, calibrate_frame
from ccdproc_ext.profiles import InstrumentProfile

SHAPE = (60, 80)  # rows, columns: overscan in the last 10 columns or rows
SATURATION = 60000.0
#: (overscan, trim) in the profile, and the same sections as FITS sections for ccdproc.
SECTIONS = {1: ("[71:80,*]", "[1:68,*]", "[71:80,1:60]", "[1:68,1:60]"),
            0: ("[*,51:60]", "[*,1:48]", "[1:80,51:60]", "[1:80,1:48]")}


def _profile(*, axis=1, method="median", trim=True, overscan=True, scale_darks=True):
    overscan_section, trim_section, _, _ = SECTIONS[axis]
    detector = {"overscan_axis": axis, "overscan_method": method,
                "saturation": {"value": SATURATION, "unit": "adu"}}
    if overscan:
        detector["overscan"] = overscan_section
    if trim:
        detector["trim"] = trim_section
    return InstrumentProfile.from_dict({
        "schema_version": 1, "name": f"chain-{axis}-{method}-{trim:d}-{overscan:d}",
        "description": "a small test detector",
        "keywords": {"exposure_time": ["EXPTIME"]},
        "image_types": {"science": ["object"]},
        "detector": detector,
        "matching": {"scale_darks": scale_darks, "dark_tolerance": 0.5},
    })


def _raw(rng, exposure=30.0, *, saturated=0):
    data = rng.normal(1000.0, 20.0, SHAPE).round()
    data += np.linspace(0, 30, SHAPE[0])[:, np.newaxis]  # overscan level changes by row
    if saturated:
        data.flat[rng.choice(data.size, saturated, replace=False)] = 65000
    # A FITS header, as read from a file: ccdproc writes its cards differently in a dict.
    header = fits.Header([("IMAGETYP", "object"), ("EXPTIME", exposure)])
    return CCDData(data.astype(np.float32), unit="adu", meta=header)


def _master(rng, shape, level, spread, *, exposure=None, masked=0, cards=()):
    data = rng.normal(level, spread, shape).astype(np.float32)
    mask = None
    if masked:
        mask = np.zeros(shape, bool)
        mask.flat[rng.choice(mask.size, masked, replace=False)] = True
    ccd = CCDData(data, unit="adu", mask=mask, meta=fits.Header(list(cards)))
    if exposure is not None:
        ccd.header["EXPTIME"] = exposure
    return ccd


def _guide(raw, *, axis=1, method="median", trim=True, overscan=True, bias=None, dark=None,
           dark_exposure=None, scale=False, flat=None, min_value=None, norm_value=None):
    """The Guide's recipe with ccdproc's functions; pixels at or above the saturation
    level masked first, and a masked flat's level the mean of its other pixels (numpy)."""
    _, _, overscan_fits, trim_fits = SECTIONS[axis]
    ccd = raw.copy()
    ccd.mask = raw.data >= SATURATION
    if overscan:
        ccd = ccdproc.subtract_overscan(ccd, fits_section=overscan_fits, overscan_axis=axis,
                                        median=method == "median", model=None)
    if trim:
        ccd = ccdproc.trim_image(ccd, fits_section=trim_fits)
    if bias is not None:
        ccd = ccdproc.subtract_bias(ccd, bias)
    if dark is not None:
        ccd = ccdproc.subtract_dark(ccd, dark, dark_exposure=dark_exposure * u.s,
                                    data_exposure=raw.header["EXPTIME"] * u.s, scale=scale)
    if flat is not None:
        if flat.mask is not None and norm_value is None:
            norm_value = float(np.mean(flat.data[~flat.mask], dtype=np.float64))
        ccd = ccdproc.flat_correct(ccd, flat, min_value=min_value, norm_value=norm_value)
    return ccd


def _assert_same(ours, theirs, *, max_ulp=0, skip_cards=()):
    assert ours.data.dtype == np.float32
    # ccdproc's float64 results (a flat is divided by a float64 level) are compared after
    # the cast to float32 that calibrate_frame makes.
    expected = theirs.data.astype(np.float32)
    if max_ulp:
        np.testing.assert_array_max_ulp(ours.data, expected, maxulp=max_ulp)
    else:
        np.testing.assert_array_equal(ours.data, expected)
    if theirs.mask is None or not theirs.mask.any():
        assert ours.mask is None or not ours.mask.any()
    else:
        np.testing.assert_array_equal(ours.mask, theirs.mask)
    assert ours.unit == theirs.unit
    for key in theirs.meta:
        if key in skip_cards or key in ("", "COMMENT", "HISTORY"):
            continue
        assert ours.meta[key] == theirs.meta[key], key


OVERSCAN_CASES = [
    {"axis": 1, "method": "median"},
    {"axis": 1, "method": "mean"},
    {"axis": 0, "method": "median"},
    {"axis": 0, "method": "mean"},
    {"axis": 1, "method": "median", "trim": False},
    {"axis": 0, "method": "mean", "trim": False},
    {"axis": 1, "method": "median", "overscan": False},
    {"axis": 1, "method": "median", "overscan": False, "trim": False},
]


@pytest.mark.parametrize("case", OVERSCAN_CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_overscan_and_trim_equal_the_guide(case):
    rng = np.random.default_rng(1)
    raw = _raw(rng, saturated=5)
    ours = calibrate_frame(raw, _profile(**case))
    theirs = _guide(raw, **case)
    _assert_same(ours, theirs)
    assert ours.mask.sum() == theirs.mask.sum() > 0
    # the flags say what was done, in the words of the Guide's sections
    _, _, overscan_fits, trim_fits = SECTIONS[case["axis"]]
    if case.get("overscan", True):
        assert ours.meta["OVERSCAN"] == f"{overscan_fits} {case['method']}"
        # ccdproc's own history card, under its short name
        assert ours.meta["SUBOSCAN"].startswith(f"ccd=<CCDData>, fits_section={overscan_fits}")
    else:
        assert "OVERSCAN" not in ours.meta and "SUBOSCAN" not in ours.meta
    if case.get("trim", True):
        assert ours.meta["TRIM"] == trim_fits
    else:
        assert "TRIM" not in ours.meta and ours.shape == SHAPE
    assert ours.meta["NSATUR"] == 5


CHAIN_CASES = [
    # dark exposure, scale, flat pixels masked, flat min_value, bias pixels masked
    (30.0, False, 0, None, 0),
    (60.0, True, 0, None, 0),
    (60.0, False, 0, None, 0),
    (30.0, False, 7, None, 0),
    (30.0, False, 0, 0.9, 3),
    (30.0, False, 0, 1.5, 0),  # the whole flat raised to min_value
    (60.0, True, 4, 0.95, 2),
]


@pytest.mark.parametrize(("dark_exposure", "scale", "flat_masked", "min_value",
                          "bias_masked"), CHAIN_CASES)
@pytest.mark.parametrize("axis", [0, 1])
def test_bias_dark_flat_equal_the_guide(dark_exposure, scale, flat_masked, min_value,
                                        bias_masked, axis):
    rng = np.random.default_rng(2)
    raw = _raw(rng, exposure=30.0, saturated=2)
    shape = (60, 68) if axis == 1 else (48, 80)
    bias = _master(rng, shape, 5.0, 2.0, masked=bias_masked)
    dark = _master(rng, shape, 3.0, 1.0, exposure=dark_exposure)
    flat = _master(rng, shape, 1.0, 0.05, masked=flat_masked)

    ours = calibrate_frame(raw, _profile(axis=axis), master_bias=bias, master_dark=dark,
                           master_flat=flat, scale_dark=scale, min_flat_value=min_value)
    theirs = _guide(raw, axis=axis, bias=bias, dark=dark, dark_exposure=dark_exposure,
                    scale=scale, flat=flat, min_value=min_value)
    # FLATCOR: ccdproc's short name for flat_correct is the flag, which names the flat.
    # A scaled dark: calibrate_frame scales the master once, in float32, and subtracts it
    # with scale=False (its history card says so); ccdproc multiplies in float64.
    skip = ("FLATCOR", "SUBDARK") if scale else ("FLATCOR",)
    _assert_same(ours, theirs, max_ulp=1 if scale else 0, skip_cards=skip)
    assert ours.meta["DARKSCL"] == (0.5 if scale else 1.0)
    assert ours.meta["ZEROCOR"] == ours.meta["DARKCOR"] == ours.meta["FLATCOR"] == \
        "in-memory CCDData"


def test_scaled_dark_equals_the_guide_with_the_dark_scaled_by_hand():
    """A dark scaled once (float32, as calibrate_frame and MasterFrame.scaled do) gives,
    to the bit, ccdproc.subtract_dark with that dark and scale=False."""
    rng = np.random.default_rng(8)
    raw = _raw(rng, exposure=30.0)
    dark = _master(rng, (60, 68), 3.0, 1.0, exposure=90.0)
    ours = calibrate_frame(raw, _profile(), master_dark=dark, scale_dark=True)
    by_hand = dark.copy()
    by_hand.data = by_hand.data * np.float32(30.0 / 90.0)
    theirs = _guide(raw, dark=by_hand, dark_exposure=30.0)
    _assert_same(ours, theirs)
    assert ours.meta["DARKSCL"] == pytest.approx(1 / 3, abs=1e-6)


@pytest.mark.parametrize("masked", [0, 5])
@pytest.mark.parametrize("flat_mean", [0.97, 1.0, 0.5, 1 + 2**-23])
def test_flat_mean_card_is_the_norm_value(masked, flat_mean):
    """A master flat with FLATMEAN (ccdproc_ext's own) is divided by it, as
    ccdproc.flat_correct(frame, flat, norm_value=FLATMEAN) divides in float64, to the
    bit; by a power of two (a FLATMEAN of 1), the division is float32's."""
    rng = np.random.default_rng(9)
    raw = _raw(rng)
    flat = _master(rng, (60, 68), 1.0, 0.05, masked=masked,
                   cards=[("FLATMEAN", flat_mean)])
    ours = calibrate_frame(raw, _profile(), master_flat=flat)
    theirs = _guide(raw, flat=flat, norm_value=flat_mean)
    assert theirs.data.dtype == np.float64
    _assert_same(ours, theirs, skip_cards=("FLATCOR",))
    prepared = MasterFrame(ccd=flat, name="flat.fits").prepare(np.float32, flat=True)
    assert prepared.data.dtype == (np.float32 if flat_mean in (1.0, 0.5) else np.float64)


def test_whole_frame_with_every_card():
    """bias, scaled dark and masked flat from MasterFrames with names and checksums: the
    pixels and ccdproc's cards of the Guide, then ccdproc_ext's flags, in this order."""
    rng = np.random.default_rng(3)
    raw = _raw(rng, saturated=3)
    bias = _master(rng, (60, 68), 5.0, 2.0, masked=2)
    dark = _master(rng, (60, 68), 3.0, 1.0, exposure=60.0)
    flat = _master(rng, (60, 68), 1.0, 0.05, masked=3)
    masters = {kind: MasterFrame(ccd=ccd, name=f"{kind}.fits", checksum=f"{kind}-sum",
                                 exposure=60.0 if kind == "dark" else None)
               for kind, ccd in (("bias", bias), ("dark", dark), ("flat", flat))}
    ours = calibrate_frame(raw, _profile(), master_bias=masters["bias"],
                           master_dark=masters["dark"], master_flat=masters["flat"],
                           scale_dark=True)
    theirs = _guide(raw, bias=bias, dark=dark, dark_exposure=60.0, scale=True, flat=flat)
    _assert_same(ours, theirs, max_ulp=1, skip_cards=("FLATCOR", "SUBDARK"))
    assert [card.keyword for card in ours.meta.cards] == [
        "IMAGETYP", "EXPTIME", "NSATUR",
        "SUBTRACT_OVERSCAN", "SUBOSCAN", "OVERSCAN", "TRIM_IMAGE", "TRIMIM", "TRIM",
        "SUBTRACT_BIAS", "SUBBIAS", "ZEROCOR", "ZEROSUM",
        "SUBTRACT_DARK", "SUBDARK", "DARKCOR", "DARKSUM", "DARKSCL",
        "FLAT_CORRECT", "FLATCOR", "FLATSUM",
        "CCDPROC", "CCDPDATE", "PROFILE"]
    cards = ours.meta
    assert (cards["OVERSCAN"], cards["TRIM"]) == ("[71:80,1:60] median", "[1:68,1:60]")
    assert (cards["ZEROCOR"], cards["ZEROSUM"]) == ("bias.fits", "bias-sum")
    assert (cards["DARKCOR"], cards["DARKSUM"], cards["DARKSCL"]) == ("dark.fits",
                                                                        "dark-sum", 0.5)
    assert (cards["FLATCOR"], cards["FLATSUM"]) == ("flat.fits", "flat-sum")
    assert cards["PROFILE"] == "chain-1-median-1-1"
    assert cards["SUBDARK"] == ("ccd=<CCDData>, master=<CCDData>, "
                                      "dark_exposure=30.0 s, data_exposure=30.0 s, "
                                      "scale=False")


def test_a_master_used_for_many_frames_is_prepared_once():
    """The scaled dark and the normalised flat are made once per master: the same
    objects for every frame, and the frames equal those calibrated from plain CCDData."""
    rng = np.random.default_rng(5)
    raws = [_raw(rng) for _ in range(3)]
    dark_ccd = _master(rng, (60, 68), 3.0, 1.0, exposure=60.0)
    flat_ccd = _master(rng, (60, 68), 1.0, 0.05, masked=2)
    dark = MasterFrame(ccd=dark_ccd, name="dark.fits", exposure=60.0)
    flat = MasterFrame(ccd=flat_ccd, name="flat.fits")
    for raw in raws:
        ours = calibrate_frame(raw, _profile(), master_dark=dark, master_flat=flat,
                               scale_dark=True)
        plain = calibrate_frame(raw, _profile(), master_dark=dark_ccd, master_flat=flat_ccd,
                                scale_dark=True)
        np.testing.assert_array_equal(ours.data, plain.data)
    assert dark.scaled(0.5) is dark.scaled(0.5)
    assert flat.prepare(np.float32, flat=True) is flat.prepare(np.float32, flat=True)
    # what prepare gives is what ccdproc.flat_correct divides by (numpy by hand)
    normed = flat.prepare(np.float32, flat=True)
    expected = flat_ccd.data / np.mean(flat_ccd.data[~flat_ccd.mask], dtype=np.float64)
    expected[flat_ccd.mask] = 1.0
    np.testing.assert_array_equal(normed.data, expected)


def test_input_frame_and_masters_are_not_changed():
    rng = np.random.default_rng(4)
    profile = _profile(trim=False, overscan=False)
    raw = _raw(rng)
    before = raw.data.copy()
    bias = MasterFrame(ccd=_master(rng, SHAPE, 5.0, 2.0), name="bias.fits")
    bias_before = bias.ccd.data.copy()
    flat = _master(rng, SHAPE, 1.0, 0.05, masked=4)
    flat_before = flat.data.copy()
    result = calibrate_frame(raw, profile, master_bias=bias, master_flat=flat,
                             min_flat_value=0.99)
    assert not np.shares_memory(result.data, raw.data)
    np.testing.assert_array_equal(raw.data, before)
    np.testing.assert_array_equal(bias.ccd.data, bias_before)
    np.testing.assert_array_equal(flat.data, flat_before)
    assert "ZEROCOR" not in raw.meta


def test_no_private_name_of_ccdproc_or_astropy():
    """The chain is built on ccdproc's public functions only."""
    import re
    from pathlib import Path

    import ccdproc_ext

    package = Path(ccdproc_ext.__file__).parent
    for module in ("calibrate.py", "overscan.py", "masters.py", "provenance.py"):
        text = (package / module).read_text()
        assert not re.search(r"from (ccdproc|astropy)[\w.]* import [^\n]*\b_\w", text), module
        assert not re.search(r"(ccdproc|astropy)[\w.]*\._[a-z]", text), module


# ---------------------------------------------------------------- pixels read from bytes
STORED = [
    # BITPIX, BZERO, values
    (16, 32768, np.array([[0, 1, 40000], [65535, 32768, 12]], dtype=np.uint16)),
    (16, None, np.array([[-32768, -1, 0], [1, 32767, 5]], dtype=np.int16)),
    (32, 2**31, np.array([[0, 1, 2**32 - 1], [2**31, 16777217, 3]], dtype=np.uint32)),
    (32, None, np.array([[-(2**31), -1, 0], [16777217, 2**31 - 1, 7]], dtype=np.int32)),
    (8, None, np.array([[0, 1, 255], [128, 127, 9]], dtype=np.uint8)),
    (8, -128, np.array([[-128, -1, 0], [1, 127, 9]], dtype=np.int8)),
    (-32, None, np.array([[np.nan, -1.5, 0], [3.25, np.inf, 1e30]], dtype=np.float32)),
    (-64, None, np.array([[np.nan, -1.5, 0], [1 + 2**-40, 1e30, 7]], dtype=np.float64)),
    (64, 2**63, np.array([[0, 1, 2**64 - 1], [2**63, 2**53 + 1, 3]], dtype=np.uint64)),
]


@pytest.mark.parametrize(("bitpix", "bzero", "values"), STORED,
                         ids=[f"{b}-{z}" for b, z, _ in STORED])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pixels_decoded_from_bytes_equal_astropy(tmp_path, bitpix, bzero, values, dtype):
    from ccdproc_ext.raw import read_frame

    path = tmp_path / "frame.fits"
    fits.PrimaryHDU(values).writeto(path)
    with fits.open(path) as hdul:
        assert hdul[0].header["BITPIX"] == bitpix
        assert hdul[0].header.get("BZERO") == bzero
        expected = np.asarray(hdul[0].data, dtype=dtype)
    frame = read_frame(path, dtype=dtype)
    assert frame.data.dtype == dtype
    np.testing.assert_array_equal(frame.data, expected)


def test_scaled_pixels_are_left_to_astropy(tmp_path):
    from ccdproc_ext.raw import read_frame

    path = tmp_path / "scaled.fits"
    hdu = fits.PrimaryHDU(np.arange(12, dtype=np.int16).reshape(3, 4))
    hdu.header["BSCALE"] = 0.5
    hdu.header["BZERO"] = 10.0
    hdu.writeto(path)
    frame = read_frame(path)
    np.testing.assert_array_equal(frame.data, fits.getdata(path).astype(np.float32))
    assert frame.data[2, 3] == 11 * 0.5 + 10.0


def test_real_frames_read_as_astropy_reads_them(real_data):
    """Every readable real frame (three cameras: uint16 with BZERO, and others)."""
    from ccdproc_ext.exceptions import FrameReadError
    from ccdproc_ext.raw import file_checksum, read_frame_and_checksum

    compared = 0
    for path in sorted(real_data.rglob("*")):
        if not path.is_file() or not path.name.lower().endswith((".fits", ".fit", ".fts")):
            continue
        try:
            frame, checksum = read_frame_and_checksum(path)
        except FrameReadError:
            continue  # the truncated ones
        with fits.open(path) as hdul:
            expected = np.asarray(hdul[0].data, dtype=np.float32)
        np.testing.assert_array_equal(frame.data, expected, err_msg=str(path))
        assert checksum == file_checksum(path)
        compared += 1
    assert compared >= 20


# ------------------------------------------------------------------------------ masters
def test_masters_equal_the_guide_masters_made_with_ccdproc(tmp_path, caplog):
    """make_master_bias, _dark and _flat (threads, plain numpy) against the Guide's
    recipe with ccdproc's functions and ccdproc.combine, frame by frame."""
    from astropy.stats import mad_std

    from ccdproc_ext import make_master_bias, make_master_dark, make_master_flat
    from ccdproc_ext.simulate import simulate_night

    night = simulate_night(tmp_path / "raw", "palomar-lfc", shape=(40, 2080), n_bias=8,
                           dark_exposures=(30.0,), n_dark=6, filters=("V",), n_flat=6,
                           flat_exposure=30.0, n_science=0, seed=5)
    files = night.files
    paths = {kind: [night.location / f for f in files["file"][files["type"] == kind]]
             for kind in ("bias", "dark", "flat")}
    guide_options = {"method": "average", "sigma_clip": True, "sigma_clip_low_thresh": 5,
                     "sigma_clip_high_thresh": 5, "sigma_clip_func": np.ma.median,
                     "sigma_clip_dev_func": mad_std, "dtype": np.float32}

    def reduced(path, *lower):
        ccd = CCDData.read(path, unit="adu")
        ccd.data = ccd.data.astype(np.float32)
        ccd = ccdproc.subtract_overscan(ccd, overscan=ccd[:, 2055:], median=True)
        ccd = ccdproc.trim_image(ccd[:, :2048])
        for master in lower:
            ccd = ccdproc.subtract_bias(ccd, master)  # the dark has the flats' exposure
        return ccd

    guide_bias = ccdproc.combine([reduced(p) for p in paths["bias"]], **guide_options)
    guide_bias.uncertainty = None
    guide_dark = ccdproc.combine([reduced(p, guide_bias) for p in paths["dark"]],
                                 **guide_options)
    guide_dark.uncertainty = None
    flats = [reduced(p, guide_bias, guide_dark) for p in paths["flat"]]
    guide_flat = ccdproc.combine(flats, scale=lambda a: 1 / np.median(a), **guide_options)
    guide_flat_data = guide_flat.data / np.mean(guide_flat.data, dtype=np.float64)

    bias = make_master_bias(paths["bias"], "palomar-lfc", workers=2)
    dark = make_master_dark(paths["dark"], "palomar-lfc", master_bias=bias, workers=2)
    flat = make_master_flat(paths["flat"], "palomar-lfc", master_bias=bias, master_dark=dark,
                            workers=2)
    np.testing.assert_array_equal(bias.data, guide_bias.data)
    np.testing.assert_array_equal(dark.data, guide_dark.data)
    np.testing.assert_allclose(flat.data, guide_flat_data, rtol=1e-6)

    # With memory for three calibrated frames, the others wait in temporary files: the
    # same masters, and no file left behind.
    spill_root = tmp_path / "spill"
    spill_root.mkdir()
    caplog.set_level("INFO", logger="ccdproc_ext.masters")
    tight = {"workers": 1, "mem_limit": 2 * 3.5 * 40 * 2048 * 4, "temporary_dir": spill_root}
    bias_tight = make_master_bias(paths["bias"], "palomar-lfc", **tight)
    dark_tight = make_master_dark(paths["dark"], "palomar-lfc", master_bias=bias, **tight)
    flat_tight = make_master_flat(paths["flat"], "palomar-lfc", master_bias=bias,
                                  master_dark=dark, **tight)
    np.testing.assert_array_equal(bias_tight.data, bias.data)
    np.testing.assert_array_equal(dark_tight.data, dark.data)
    np.testing.assert_array_equal(flat_tight.data, flat.data)
    assert bias_tight.meta["NCOMBINE"] == len(paths["bias"])
    assert list(spill_root.iterdir()) == []
    assert sum(f"are kept in {spill_root}" in message for message in caplog.messages) == 3


def test_frames_left_by_a_killed_master_are_removed(tmp_path):
    from ccdproc_ext.outputs import remove_partial_files

    left = tmp_path / ".frames-x1y2.part"
    left.mkdir()
    (left / "00002.fits").write_bytes(b"SIMPLE")
    kept = tmp_path / "bias_01.fits"
    kept.write_bytes(b"SIMPLE")
    assert remove_partial_files(tmp_path) == [left]
    assert sorted(tmp_path.iterdir()) == [kept]
