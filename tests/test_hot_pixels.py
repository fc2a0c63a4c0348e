"""Hot pixels on a real camera's darks (the SBIG STL-1001E frames at -5 C): every pixel
whose dark current is above the threshold in the night's master dark is in the bad-pixel
mask, and the report says what fraction of the frame that is.

The reference is the threshold computed here with numpy's median and astropy's
`~astropy.stats.mad_std` on the master dark the night wrote.
"""

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import mad_std

from ccdproc_ext import reduce_night

#: The rule of hot pixels: a dark current above the median by 5 robust sigma and by
#: 0.01 ADU/s (written by hand from the documentation of ``make_bad_pixel_mask``).
HOT_SIGMA, HOT_MIN_RATE = 5.0, 0.01


@pytest.fixture(scope="module")
def sbig_night(real_data, tmp_path_factory):
    """The -5 C frames of the SBIG night and a 60 s frame of the sky (a real 'Light
    Frame' header over the pixels of one of its darks, which holds its hot pixels),
    reduced by the default call."""
    root = tmp_path_factory.mktemp("sbig")
    raw = root / "raw"
    raw.mkdir()
    folder = real_data / "sbig-stl1001e"
    for path in sorted(folder.glob("*Neg5*")):
        (raw / path.name).symlink_to(path)
    light = fits.getheader(next(folder.glob("flat-expos23s-Neg5-*.FIT")))
    dark = fits.getdata(folder / "darks-expos60s-Neg5-Vis.00000000.DARK.FIT")
    light["EXPTIME"] = 60.0
    if "EXPOSURE" in light:
        light["EXPOSURE"] = 60.0
    fits.PrimaryHDU(dark, light).writeto(raw / "m42-expos60s-Neg5.FIT")
    result = reduce_night(raw, root / "out", progress=False, workers=1)
    return result


def test_every_hot_pixel_of_the_master_dark_is_masked(sbig_night):
    result = sbig_night
    assert len(result.science) == 1 and len(result.problems) == 0, result.summary()
    bpm_path = next(path for (kind, _), path in result.masters.items() if kind == "bpm")
    with fits.open(bpm_path) as hdul:
        bits, header = hdul[0].data, hdul[0].header
    master_dark = bpm_path.parent / header["BPMDARK"]
    with fits.open(master_dark) as hdul:
        dark = hdul[0].data.astype(np.float64)
        exposure = float(hdul[0].header["EXPTIME"])
        mask = hdul["MASK"].data.astype(bool) if "MASK" in hdul else \
            np.zeros(dark.shape, bool)
    assert exposure == 60.0
    rate = dark / exposure
    good = np.isfinite(rate) & ~mask
    median = np.median(rate[good])
    threshold = median + max(HOT_SIGMA * mad_std(rate[good]), HOT_MIN_RATE)
    hot = good & (rate > threshold)
    # A real camera has hot pixels (this one about 2% of them at 60 s), and the mask
    # leaves most of the frame.
    assert 10 < hot.sum() < 0.05 * hot.size
    masked_hot = (bits & 1) != 0
    assert masked_hot[hot].all()  # every one of them masked ...
    assert np.array_equal(masked_hot, hot)  # ... and nothing else as hot
    assert header["NHOTPIX"] == hot.sum()
    # The science frame's MASK says "bad pixel" (2) on each of them.
    with fits.open(result.science[0]["output_file"]) as hdul:
        assert ((hdul["MASK"].data[hot] & 2) != 0).all()
    # The report states the masked fraction of the frame.
    report = (result.output_dir / "report.html").read_text(encoding="utf-8")
    fraction = 100 * hot.sum() / hot.size
    assert f"{hot.sum()} ({fraction:.3g} %)" in report
