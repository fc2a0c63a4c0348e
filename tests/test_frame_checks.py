"""The checks of calibration frames judge structure, not level.

A frame whose level or scale differs from its group (a dark at another temperature, a
flat at another illumination, a bias with another offset) is kept; a frame with a
defect the others do not have (a light leak, a gradient, a streak, a band of rows, a
block of garbage) is left out; a check that would leave out more than a third of a
group keeps them all and says why.

The truths are real frames of an SBIG STL-1001E at two temperatures (skipped without
``CCDPROC_EXT_REAL_DATA``), synthetic frames built here from numbers written by hand,
and defects added here to copies in memory.
"""

import re

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.stats import mad_std

from ccdproc_ext import (
    CcdprocExtWarning,
    make_master_bias,
    make_master_dark,
    reduce_night,
)
from ccdproc_ext.quality import check_calibration_frames, frame_sample
from ccdproc_ext.simulate import simulate_night

SBIG = "sbig-stl1001e"


# --------------------------------------------------------------------- defects
def _light_leak(data, noise):
    """Light rising across the frame, 0 to 30 times the noise (a few hundred ADU on a
    bias)."""
    x = np.linspace(0.0, 1.0, data.shape[1])[np.newaxis, :]
    return data + 30.0 * noise * x


def _gradient(data, noise):
    """A gradient along the columns, 0 to 8 times the noise."""
    y = np.linspace(0.0, 1.0, data.shape[0])[:, np.newaxis]
    return data + 8.0 * noise * y


def _streak(data, noise):
    """A diagonal line of bright pixels, 3 pixels wide, across the frame."""
    y, x = np.indices(data.shape)
    on_line = np.abs(y - 0.6 * x - data.shape[0] // 8) < 1.5
    return np.where(on_line, data + 15.0 * noise, data)


def _row_streak(data, noise):
    """A line of bright pixels along rows, 3 rows wide: it may fall between the rows
    that a frame's sample holds."""
    spoiled = data.copy()
    row = data.shape[0] // 2 + 1
    spoiled[row:row + 3] += 5.0 * noise
    return spoiled


def _band_of_rows(data, noise):
    """A readout glitch: 20 rows offset by 3 times the noise."""
    spoiled = data.copy()
    start = data.shape[0] // 3
    spoiled[start:start + 20] += 3.0 * noise
    return spoiled


def _garbage(data, noise):
    """A block of garbage, a tenth of the frame's height and width (1% of its pixels;
    fewer are what the combination's clipping takes away)."""
    spoiled = data.copy()
    height, width = data.shape[0] // 10, data.shape[1] // 10
    spoiled[30:30 + height, 50:50 + width] = np.random.default_rng(0).uniform(
        0, 65535, (height, width))
    return spoiled


DEFECTS = {"light leak": _light_leak, "gradient": _gradient, "streak": _streak,
           "streak along rows": _row_streak, "band of rows": _band_of_rows,
           "garbage": _garbage}


def _noise(frames):
    """The pixel noise of a group: astropy's mad_std of the difference of its first two
    frames (what they share cancels), over sqrt(2)."""
    return float(mad_std(frames[0] - frames[1]) / np.sqrt(2))


def _check(frames, kind):
    """The check of a group, the same in one thread as in two."""
    samples = [frame_sample(CCDData(data.astype(np.float32), unit="adu"))
               for data in frames]
    names = [f"{kind}{i}" for i in range(len(frames))]
    checked = check_calibration_frames(samples, names, kind)
    assert check_calibration_frames(samples, names, kind, workers=2) == checked
    return checked


def _spoiled(frames, defect, index=3):
    spoiled = list(frames)
    spoiled[index] = DEFECTS[defect](frames[index], _noise(frames))
    return spoiled


# ---------------------------------------------------------- synthetic frames
SHAPE = (240, 300)


def _detector(seed=1):
    """A bias with a column pattern fading across the frame (as a real bias's), a dark
    signal with 0.5% hot pixels, a flat with vignetting and 1% pixel response."""
    rng = np.random.default_rng(seed)
    y, x = np.indices(SHAPE)
    bias = 1000.0 + 15.0 * np.exp(-x / 40.0) + rng.normal(0, 1.5, SHAPE[1])
    dark = np.full(SHAPE, 3.0)
    hot = rng.random(SHAPE) < 0.005
    dark[hot] = rng.uniform(50, 3000, np.count_nonzero(hot))
    flat = (1.0 - 0.1 * ((x - 150) ** 2 + (y - 120) ** 2) / 150 ** 2) * \
        rng.normal(1.0, 0.01, SHAPE)
    return bias, dark, flat


def _synthetic(kind, changes, seed=2):
    """Frames of one kind, one per value of ``changes``: biases with that offset (ADU),
    darks (bias-subtracted) with their dark signal times that factor, flats at that
    level (ADU, Poisson). Read noise 7 ADU."""
    bias, dark, flat = _detector()
    rng = np.random.default_rng(seed)
    frames = []
    for change in changes:
        if kind == "bias":
            signal = bias + change
        elif kind == "dark":
            signal = dark * change
        else:
            signal = rng.poisson(flat * change).astype(float)
        frames.append(signal + rng.normal(0, 7.0, SHAPE))
    return frames


#: The changes of level and scale a good group shows: offsets of +-50 ADU, dark signals
#: scaled by 0.7 to 1.4 (two degrees of temperature and more), flats at 0.3 to 2 times.
CHANGES = {"bias": (0, 50, -50, 20, -35, 45, -10, 5, 30, -50),
           "dark": (1.0, 0.7, 1.4, 0.85, 1.2, 1.0, 0.75, 1.3, 1.1, 0.9),
           "flat": (20000, 6000, 40000, 15000, 30000, 10000, 25000, 8000, 35000, 20000)}


@pytest.mark.parametrize("kind", ["bias", "dark", "flat"])
def test_synthetic_frames_of_other_levels_and_scales_are_kept(kind):
    checked = _check(_synthetic(kind, CHANGES[kind]), kind)
    assert checked.left_out == () and checked.note is None


@pytest.mark.parametrize("defect", DEFECTS)
@pytest.mark.parametrize("kind", ["bias", "dark", "flat"])
def test_synthetic_defects_are_caught(kind, defect):
    """Each defect on the fourth frame of a group whose levels and scales vary."""
    checked = _check(_spoiled(_synthetic(kind, CHANGES[kind]), defect), kind)
    assert [index for index, _ in checked.left_out] == [3], checked
    assert checked.note is None


def test_a_light_leak_is_not_taken_for_a_scale():
    """A bias's median has a faint pattern (a column pattern fading across the frame)
    which a line ``a * median + b`` could stretch to follow a light leak; the leak is
    left in the residual, measured: most of the frame beyond 6 sigma."""
    checked = _check(_spoiled(_synthetic("bias", CHANGES["bias"]), "light leak"), "bias")
    (index, reason), = checked.left_out
    measured = re.match(r"([\d.]+)% of its pixels differ", reason)
    assert index == 3 and measured and float(measured[1]) > 50, reason


def test_master_dark_of_darks_at_other_temperatures_keeps_them_all():
    """make_master_dark of ten darks whose dark signal varies from 0.7 to 1.4 times:
    every frame combined."""
    frames = [CCDData(data.astype(np.float32), unit="adu",
                      meta={"EXPTIME": 60.0, "FILENAME": f"dark{i}.fits"})
              for i, data in enumerate(_synthetic("dark", CHANGES["dark"]))]
    master = make_master_dark(frames)
    assert master.meta["NCOMBINE"] == 10 and "SKIP001" not in master.meta


# ----------------------------------------------------- a check in doubt
@pytest.mark.parametrize(("n_spoiled", "kept"), [(4, True), (3, False)])
def test_a_check_that_would_leave_out_more_than_a_third_keeps_all(n_spoiled, kept):
    """Ten biases, 4 with a light leak (40%): the group itself varies, all are kept and
    the note says why; 3 of 10 (30%): those 3 are left out."""
    frames = _synthetic("bias", CHANGES["bias"])
    for index in range(n_spoiled):
        frames[index] = _light_leak(frames[index], 7.0)
    checked = _check(frames, "bias")
    if kept:
        assert checked.left_out == ()
        assert f"would leave out {n_spoiled} of the 10 bias frames" in checked.note
        assert "all kept" in checked.note and "bias0" in checked.note
    else:
        assert [index for index, _ in checked.left_out] == list(range(n_spoiled))
        assert checked.note is None


def test_the_note_of_a_check_in_doubt_reaches_the_user_of_a_master():
    """make_master_bias keeps the ten frames and warns the note (no frame skipped)."""
    frames = _synthetic("bias", CHANGES["bias"])
    for index in range(4):
        frames[index] = _light_leak(frames[index], 7.0)
    ccds = [CCDData(data.astype(np.float32), unit="adu", meta={"FILENAME": f"b{i}.fits"})
            for i, data in enumerate(frames)]
    with pytest.warns(CcdprocExtWarning, match=r"would leave out 4 of the 10 bias") as caught:
        master = make_master_bias(ccds, skip_bad_frames=True)
    assert master.meta["NCOMBINE"] == 10 and "SKIP001" not in master.meta
    assert not [w for w in caught if "left out:" in str(w.message)]


# ---------------------------------------------------------------- real frames
def _real(folder, pattern, exposure=None):
    paths = sorted(folder.glob(pattern))
    if exposure is not None:
        paths = [p for p in paths if fits.getheader(p)["EXPTIME"] == exposure]
    return [fits.getdata(p).astype(np.float64) for p in paths], paths


@pytest.fixture(scope="module")
def sbig(real_data):
    """The SBIG's biases (10 at -10 C, 10 at -5 C), its 60 s darks (1 at -10 C, 11 at
    -5 C) and its 10 flats, darks and flats less numpy's median of the biases."""
    folder = real_data / SBIG
    biases, _ = _real(folder, "bias*-Neg*.FIT")
    darks, dark_paths = _real(folder, "darks-*.FIT", exposure=60)
    flats, _ = _real(folder, "flat-*.FIT")
    assert (len(biases), len(darks), len(flats)) == (20, 12, 10)
    master_bias = np.median(biases, axis=0)
    temperatures = {fits.getheader(p)["SET-TEMP"] for p in dark_paths}
    assert temperatures == {-10.0, -5.0}
    return {"bias": biases, "dark": [d - master_bias for d in darks],
            "flat": [f - master_bias for f in flats], "dark paths": dark_paths,
            "master bias": master_bias}


@pytest.mark.parametrize("kind", ["bias", "dark", "flat"])
def test_real_frames_of_both_temperatures_are_kept(sbig, kind):
    checked = _check(sbig[kind], kind)
    assert checked.left_out == () and checked.note is None


@pytest.mark.parametrize("defect", DEFECTS)
@pytest.mark.parametrize("kind", ["bias", "dark", "flat"])
def test_defects_on_real_frames_are_caught(sbig, kind, defect):
    checked = _check(_spoiled(sbig[kind], defect), kind)
    assert [index for index, _ in checked.left_out] == [3], checked
    assert checked.note is None


def test_real_groups_of_other_cameras_are_kept(real_data):
    """Where a rule's premise does not hold, it steps aside. The ZWO ASI178's biases
    (a CMOS whose values are multiples of 4: the medians of its rows are too, and the
    MAD of their differences is 0) and the TIRCAM2's J flats less numpy's median of its
    biases (an infrared array whose blocks of rows drift by 2 to 5 sigma in every frame,
    so that all its flats have 8 to 11% of outlying pixels): none left out, no doubt."""
    zwo, _ = _real(real_data / "zwo-asi178" / "Bias", "*.fit")
    biases, _ = _real(real_data / "dot-tircam2", "bias_*.fits")
    flats, _ = _real(real_data / "dot-tircam2", "flats*.fits")
    bias = np.median(biases, axis=0)
    for kind, frames in (("bias", zwo), ("flat", [flat - bias for flat in flats])):
        assert len(frames) == 5
        checked = _check(frames, kind)
        assert checked.left_out == () and checked.note is None, (kind, checked)


def test_real_master_dark_of_both_temperatures_keeps_every_dark(sbig):
    """The twelve 60 s darks of both temperatures through make_master_dark (the
    package's reader and calibration): all combined."""
    bias = CCDData(sbig["master bias"].astype(np.float32), unit="adu")
    master = make_master_dark(sbig["dark paths"], master_bias=bias, workers=1)
    assert master.meta["NCOMBINE"] == 12 and "SKIP001" not in master.meta


# ------------------------------------------------------------------ a night
def _rewrite(path, change):
    with fits.open(path) as hdul:
        data, header = hdul[0].data.astype(np.float64), hdul[0].header.copy()
    fits.PrimaryHDU(change(data).astype(np.float32), header).writeto(path, overwrite=True)


def test_a_night_whose_darks_drift_in_temperature(tmp_path):
    """The default call on a night whose 60 s darks have their dark signal scaled by 0.7
    to 1.4 (an uncooled camera drifting) keeps every dark; where two of its five biases
    have a light leak (40%), the check is in doubt: all five kept, said in the notes."""
    raw = tmp_path / "raw"
    simulate_night(raw, shape=(96, 120), n_bias=5, n_dark=6, n_flat=3,
                           filters=("R",), n_science=2, dark_rate=2.0, seed=4)
    biases = sorted(raw.glob("bias_*.fits"))
    bias = np.median([fits.getdata(p).astype(np.float64) for p in biases], axis=0)
    for path, factor in zip(sorted(raw.glob("dark_60s_*.fits")),
                            (0.7, 1.4, 1.0, 0.85, 1.2, 1.1), strict=True):
        _rewrite(path, lambda data, f=factor: bias + f * (data - bias))
    for path in biases[:2]:
        _rewrite(path, lambda data: data + np.linspace(0, 300, data.shape[1]))
    result = reduce_night(raw, tmp_path / "out", progress=False, workers=1)
    assert len(result.problems) == 0, result.summary()
    masters = {name: fits.getheader(path) for (_, name), path in result.masters.items()}
    assert masters["dark_60s_01"]["NCOMBINE"] == 6
    assert masters["bias_01"]["NCOMBINE"] == 5
    notes = [(row["file"], row["kind"], row["note"]) for row in result.notes]
    doubt = [note for note in notes if "would leave out 2 of the 5 bias" in note[2]]
    assert [(file, kind) for file, kind, _ in doubt] == \
        [("masters/bias_01.fits", "CcdprocExtWarning")], notes
    assert set(result.science["status"]) == {"written"}
    assert len(result.science) == 2
