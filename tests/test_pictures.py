"""The pictures of the night report, drawn as matplotlib draws them."""

import numpy as np
from matplotlib.image import imread

from ccdproc_ext.pictures import HistogramPicture


def _hist_png(values, limits, level, path):
    """A master's histogram as Axes.hist draws it, in a figure of its own."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    figure = Figure(figsize=(3.6, 2.4), dpi=90)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.18, 0.21, 0.78, 0.72))
    low, high = limits
    axes.hist(values, bins=80, range=(low - 0.5 * (high - low), high + 0.5 * (high - low)),
              histtype="stepfilled", color="#4a6fa5")
    axes.set_yscale("log")
    axes.yaxis.set_minor_locator(NullLocator())
    axes.axvline(level, color="#a40000", lw=1)
    axes.set_xlabel("ADU", fontsize=9)
    axes.set_ylabel("pixels", fontsize=9)
    axes.tick_params(labelsize=8)
    figure.savefig(path, format="png")
    return imread(path)


def test_master_histograms_are_numpys_counts_drawn_as_axes_hist_draws_them(tmp_path):
    """One figure draws the histograms of all masters: each has numpy's counts over the
    z-scale range widened by half on each side, and is the picture Axes.hist draws."""
    rng = np.random.default_rng(3)
    histograms = HistogramPicture()
    masters = [(rng.normal(1000, 10, 20000), (985.0, 1015.0), 1000.0),  # a bias
               (np.r_[rng.poisson(40, 5000), [400] * 3].astype(float), (30.0, 50.0), 40.0),
               (rng.normal(1000, 10, 20000), (985.0, 1015.0), 1000.0)]  # the bias again
    for i, (values, limits, level) in enumerate(masters):
        path, counts, edges = histograms.draw(values, level, limits, "bias",
                                              tmp_path / f"{i}.png")
        low, high = limits
        width = high - low
        expected, expected_edges = np.histogram(values, bins=80,
                                                range=(low - width / 2, high + width / 2))
        np.testing.assert_array_equal(counts, expected)
        np.testing.assert_array_equal(edges, expected_edges)
        np.testing.assert_array_equal(histograms.steps.get_data().values, expected)
        np.testing.assert_array_equal(imread(path),
                                      _hist_png(values, limits, level, tmp_path / "hist.png"))
