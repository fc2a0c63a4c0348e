"""The plain-numpy paths give ccdproc's numbers: each step against ccdproc's own function.

`calibrate_frame` does not call ccdproc's functions when no uncertainty is involved; it
does the same numpy operation on the same operands. These tests run ccdproc's functions
on the same inputs and require the same pixels (to the bit), the same mask and the same
header cards.
"""

import astropy.units as u
import ccdproc
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

from ccdproc_ext import calibrate_frame
from ccdproc_ext.calibrate import MasterFrame, _ccdproc_chain, mask_bad_pixels
from ccdproc_ext.profiles import InstrumentProfile

SHAPE = (60, 80)  # rows, columns: overscan in the last 10 columns or rows


def _profile(*, axis=1, method="median", trim=True, overscan=True, scale_darks=True):
    if axis == 1:
        overscan_section, trim_section = "[71:80,*]", "[1:68,*]"
    else:
        overscan_section, trim_section = "[*,51:60]", "[*,1:48]"
    detector = {"overscan_axis": axis, "overscan_method": method,
                "saturation": {"value": 60000, "unit": "adu"}}
    if overscan:
        detector["overscan"] = overscan_section
    if trim:
        detector["trim"] = trim_section
    return InstrumentProfile.from_dict({
        "schema_version": 1, "name": f"fast-{axis}-{method}-{trim:d}-{overscan:d}",
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
    ccd = CCDData(data.astype(np.float32), unit="adu", meta=header)
    return ccd


def _master(rng, shape, level, spread, *, exposure=None, masked=0, dtype=np.float32):
    data = rng.normal(level, spread, shape).astype(dtype)
    mask = None
    if masked:
        mask = np.zeros(shape, bool)
        mask.flat[rng.choice(mask.size, masked, replace=False)] = True
    ccd = CCDData(data, unit="adu", mask=mask)
    if exposure is not None:
        ccd.header["EXPTIME"] = exposure
    return MasterFrame(ccd=ccd, name="master.fits", checksum="0123456789abcdef",
                       exposure=exposure)


def _guide_chain(raw, profile, bias, dark, flat, *, exposure, scale, min_value):
    """ccdproc's functions, called one after the other as the ccdproc documentation does."""
    ccd = mask_bad_pixels(raw, profile)
    if profile.overscan is not None:
        section = profile.overscan.resolved(ccd.shape)
        ccd = ccdproc.subtract_overscan(ccd, fits_section=section,
                                        overscan_axis=profile.overscan_axis,
                                        median=profile.overscan_method == "median",
                                        model=None)
    if profile.trim is not None:
        ccd = ccdproc.trim_image(ccd, fits_section=profile.trim.resolved(ccd.shape))
    if bias is not None:
        ccd = ccdproc.subtract_bias(ccd, bias.ccd)
    if dark is not None:
        ccd = ccdproc.subtract_dark(ccd, dark.ccd, dark_exposure=dark.exposure * u.s,
                                    data_exposure=exposure * u.s, scale=scale)
    if flat is not None:
        flat_ccd, norm_value = flat._flat_for_division
        ccd = ccdproc.flat_correct(ccd, flat_ccd, min_value=min_value,
                                   norm_value=norm_value)
    return ccd


def _assert_same(ours, theirs, *, skip_cards=()):
    assert ours.data.dtype == np.float32
    # float32 results from ccdproc are compared bit for bit; a float64 chain (a scaled
    # dark is multiplied by a float64 factor) is compared after the same cast.
    np.testing.assert_array_equal(ours.data, theirs.data.astype(np.float32))
    if theirs.mask is None:
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
    {"axis": 1, "method": "median", "overscan": False},
]


@pytest.mark.parametrize("case", OVERSCAN_CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_overscan_and_trim_equal_ccdproc(case):
    rng = np.random.default_rng(1)
    profile = _profile(**case)
    raw = _raw(rng, saturated=5)
    ours = calibrate_frame(raw, profile)
    theirs = _guide_chain(raw, profile, None, None, None, exposure=30.0, scale=False,
                          min_value=None)
    _assert_same(ours, theirs)
    assert ours.mask is not None and ours.mask.sum() == theirs.mask.sum() > 0


CHAIN_CASES = [
    # dark exposure, scale, flat pixels masked, flat min_value, bias pixels masked
    (30.0, False, 0, None, 0),
    (60.0, True, 0, None, 0),
    (30.0, False, 7, None, 0),
    (30.0, False, 0, 0.9, 3),
    (60.0, True, 4, 0.95, 2),
]


@pytest.mark.parametrize(("dark_exposure", "scale", "flat_masked", "min_value",
                          "bias_masked"), CHAIN_CASES)
@pytest.mark.parametrize("axis", [0, 1])
def test_bias_dark_flat_equal_ccdproc(dark_exposure, scale, flat_masked, min_value,
                                      bias_masked, axis):
    rng = np.random.default_rng(2)
    profile = _profile(axis=axis)
    raw = _raw(rng, exposure=30.0, saturated=2)
    shape = calibrate_frame(raw, profile).shape
    bias = _master(rng, shape, 5.0, 2.0, masked=bias_masked)
    dark = _master(rng, shape, 3.0, 1.0, exposure=dark_exposure)
    flat = _master(rng, shape, 1.0, 0.05, masked=flat_masked)

    ours = calibrate_frame(raw, profile, master_bias=bias, master_dark=dark,
                           master_flat=flat, scale_dark=scale, min_flat_value=min_value)
    theirs = _guide_chain(raw, profile, bias, dark, flat, exposure=30.0, scale=scale,
                          min_value=min_value)
    # FLATCOR: ccdproc's short name for flat_correct is the flag, which names the flat.
    _assert_same(ours, theirs, skip_cards=("FLATCOR",))
    assert ours.meta["DARKSCL"] == pytest.approx(30.0 / dark_exposure if scale else 1.0)


def test_fast_path_equals_ccdproc_path_with_every_card():
    """The whole frame, header included, as calibrate_frame's ccdproc path makes it."""
    rng = np.random.default_rng(3)
    profile = _profile()
    raw = _raw(rng, saturated=3)
    shape = calibrate_frame(raw, profile).shape
    masters = {"bias": _master(rng, shape, 5.0, 2.0, masked=2),
               "dark": _master(rng, shape, 3.0, 1.0, exposure=60.0),
               "flat": _master(rng, shape, 1.0, 0.05, masked=3)}
    ours = calibrate_frame(raw, profile, master_bias=masters["bias"],
                           master_dark=masters["dark"], master_flat=masters["flat"],
                           scale_dark=True)
    reference = _ccdproc_chain(mask_bad_pixels(raw, profile), profile, "frame",
                               masters["bias"], masters["dark"], masters["flat"],
                               exposure_time=None, scale_dark=True, min_flat_value=None,
                               create_deviation=False, dtype=np.float32)
    np.testing.assert_array_equal(ours.data, reference.data.astype(np.float32))
    np.testing.assert_array_equal(ours.mask, reference.mask)
    ours_cards = [(c.keyword, c.value) for c in ours.meta.cards if c.keyword != "CCDPDATE"]
    reference_cards = [(c.keyword, c.value) for c in reference.meta.cards]
    # The ccdproc path leaves CCDPROC, CCDPDATE and PROFILE to calibrate_frame.
    assert ours_cards[:len(reference_cards)] == reference_cards


def test_input_frame_and_masters_are_not_changed():
    rng = np.random.default_rng(4)
    profile = _profile(trim=False, overscan=False)
    raw = _raw(rng)
    before = raw.data.copy()
    bias = _master(rng, SHAPE, 5.0, 2.0)
    bias_before = bias.ccd.data.copy()
    result = calibrate_frame(raw, profile, master_bias=bias)
    assert not np.shares_memory(result.data, raw.data)
    np.testing.assert_array_equal(raw.data, before)
    np.testing.assert_array_equal(bias.ccd.data, bias_before)
    assert "ZEROCOR" not in raw.meta


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
    from ccdproc_ext.raw import _read_frame_and_checksum, file_checksum

    compared = 0
    for path in sorted(real_data.rglob("*")):
        if not path.is_file() or not path.name.lower().endswith((".fits", ".fit", ".fts")):
            continue
        try:
            frame, checksum = _read_frame_and_checksum(path)
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
