"""Draw ``_static/cosmic_rays.png``, the picture of :ref:`cosmic-rays`.

A simulated night (`ccdproc_ext.simulate.simulate_night`: hot pixels in its darks, stars and
cosmic-ray hits in its science frames) is reduced twice, with ``cosmic_rays=True`` and with
``cosmic_rays="clean"``; a cut-out of the first science frame is drawn as it is, with the
pixels its ``MASK`` extension marks as cosmic rays (bit 4) and bad pixels (bit 2, the hot
pixels of the bad-pixel mask), and after ``"clean"``.

.. code-block:: console

    $ python docs/cosmic_rays_picture.py
"""

import tempfile
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.visualization import ZScaleInterval
from matplotlib.figure import Figure

from ccdproc_ext import reduce_night
from ccdproc_ext.simulate import simulate_night

CUT = (slice(80, 150), slice(120, 190))


def _science(result):
    with fits.open(result.science[0]["output_file"]) as hdul:
        return hdul[0].data[CUT], hdul["MASK"].data[CUT]


def main(output=Path(__file__).parent / "_static" / "cosmic_rays.png"):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        simulate_night(tmp / "raw", shape=(256, 272), n_bias=5, n_dark=5, n_flat=5,
                       filters=("R",), n_science=1, n_stars=40, cosmic_rays=150,
                       hot_pixel_fraction=0.004, seed=11)
        found = reduce_night(tmp / "raw", tmp / "found", progress=False, cosmic_rays=True)
        cleaned = reduce_night(tmp / "raw", tmp / "clean", progress=False,
                               cosmic_rays="clean")
        data, bits = _science(found)
        clean_data, _ = _science(cleaned)
    low, high = ZScaleInterval().get_limits(data)
    figure = Figure(figsize=(10.5, 3.9), layout="constrained")
    axes = figure.subplots(1, 3)
    for ax, image, title in zip(axes, (data, data, clean_data),
                                ("calibrated", "MASK: cosmic rays (red), hot pixels (blue)",
                                 'cosmic_rays="clean"'), strict=True):
        ax.imshow(image, origin="lower", cmap="gray", vmin=low, vmax=high,
                  interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    marks = np.zeros((*bits.shape, 4))
    marks[(bits & 4) != 0] = (1.0, 0.1, 0.1, 0.75)
    marks[(bits & 2) != 0] = (0.2, 0.5, 1.0, 0.9)
    axes[1].imshow(marks, origin="lower", interpolation="nearest")
    figure.savefig(output, dpi=90)
    print(f"{output}: {np.count_nonzero(bits & 4)} cosmic-ray and "
          f"{np.count_nonzero(bits & 2)} bad pixels in the cut-out")


if __name__ == "__main__":
    main()
