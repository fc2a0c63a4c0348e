"""The pictures of the night report: every PNG in its ``report/`` folder.

`~ccdproc_ext.report.write_report` asks for them and puts them on its page:

- a master as an image (z-scale stretch, `master_pictures`) with its histogram
  (`HistogramPicture`) and, for a flat, its large-scale shape (the medians of a coarse
  grid of boxes); the numbers taken from its pixels (`master_statistics`);
- the sky level and noise of the science frames against time, one colour per filter
  (`sky_picture`);
- a thumbnail of a frame (`thumbnail`), kept from an earlier report while the file it
  shows has not changed (`Pictures`).

The pictures are drawn by matplotlib without pyplot (its figures are freed with the
objects, the Agg canvas whatever backend the caller uses), so the caller's plotting state
is untouched and no figure stays in memory; matplotlib is imported when a picture is
drawn. Nothing here reads a file of pixels: the page gives the pixels, or a function
that reads them.
"""

import math
import re
from dataclasses import dataclass

import numpy as np
from astropy.stats import mad_std
from astropy.time import Time
from astropy.visualization import ZScaleInterval

from .outputs import file_stamp, recipe

__all__ = ["THUMBNAIL_SIZE", "HistogramPicture", "MasterStatistics", "Pictures",
           "master_pictures", "master_statistics", "sample_pixels", "sky_picture",
           "thumbnail"]

#: Pixels along the longer side of a science thumbnail.
THUMBNAIL_SIZE = 192
_MASTER_SAMPLE = 400  # pixels along the longer side of a master's picture
_FLATNESS_BINS = 8  # a flat is cut into this many boxes along each side to see its shape
#: The PNG text chunk holding what a thumbnail was drawn from.
_PICTURE_KEY = "ccdproc_ext-drawn-from"
#: Part of every picture's key: thumbnails of an older drawing are drawn again.
_PICTURE_VERSION = 1


# ------------------------------------------------------------------- the folder
class Pictures:
    """The pictures folder: safe, unique file names, and the thumbnails of an earlier
    report kept where the file they show has not changed.

    A thumbnail is drawn with a key (``_thumbnail_key``: the file it shows, as
    ``ccdproc_ext.outputs.file_stamp`` sees it, and how it is drawn), written in the PNG
    itself (``_drawn_with`` reads it); a later report that asks for the same picture with
    the same key finds it and neither reads the file nor draws it again (a night of
    thousands of frames re-run with everything up to date would otherwise spend most of
    its time drawing the same thumbnails). `finish` removes the pictures the page no
    longer shows.

    Parameters
    ----------
    folder : `pathlib.Path`
        The folder of the pictures (made if absent).
    """

    def __init__(self, folder):
        self.folder = folder
        self.used = set()
        folder.mkdir(exist_ok=True)

    def finish(self):
        """Remove the pictures of earlier reports that this one does not show."""
        for old in self.folder.glob("*.png"):
            if old.name.lower() not in self.used:
                old.unlink()

    def path(self, stem):
        """A new picture's path in the folder: ``stem`` made safe, and unique."""
        stem = re.sub(r"[^A-Za-z0-9_.+-]", "_", stem).lstrip(".") or "picture"
        name, i = f"{stem}.png", 1
        while name.lower() in self.used:
            i += 1
            name = f"{stem}-{i}.png"
        self.used.add(name.lower())
        return self.folder / name


def _drawn_with(path):
    """The key a thumbnail was drawn with (see `Pictures`), or ``None``."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.text.get(_PICTURE_KEY)
    except (OSError, ValueError, AttributeError):  # none, damaged, or not a PNG
        return None


def _thumbnail_key(path, profile=None):
    """What a thumbnail of the file ``path`` depends on: the file (name, size, time), how
    thumbnails are drawn, and the profile that turns it."""
    return recipe("thumbnail", _PICTURE_VERSION, THUMBNAIL_SIZE, file_stamp(path),
                  None if profile is None else profile.name)


def thumbnail(path, source, read_sample, profile=None):
    """The thumbnail ``path`` of the file ``source``: kept from an earlier report when it
    was drawn from the file as it is now, drawn otherwise.

    Parameters
    ----------
    path : `pathlib.Path`
        The picture (from `Pictures.path`).
    source : `pathlib.Path`
        The file it shows.
    read_sample : callable
        Called without arguments when the picture is drawn: the file's pixels, sampled
        to about `THUMBNAIL_SIZE` along the longer side, or ``None`` when they cannot be
        read.
    profile : `~ccdproc_ext.InstrumentProfile` or None, optional
        The profile that turns the frame, part of the key. Default is ``None``.

    Returns
    -------
    `pathlib.Path` or None
        ``path``, or ``None`` when ``read_sample`` gave nothing to draw.
    """
    key = _thumbnail_key(source, profile) if source.is_file() else None
    if key is not None and _drawn_with(path) == key:
        return path
    pixels = read_sample()
    if pixels is None:
        return None
    return _sample_png(pixels, path, key=key)[0]


# ------------------------------------------------------------------ drawing
def sample_pixels(data, size):
    """Every n-th pixel of ``data`` in both directions, so the longer side is about
    ``size``.

    Returns
    -------
    sample : `numpy.ndarray` of float
    step : int
        The n.
    """
    step = max(1, math.ceil(max(data.shape) / size))
    return np.asarray(data[::step, ::step], dtype=float), step


def _limits(values):
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = ZScaleInterval().get_limits(finite)
    if not high > low:  # a flat image: show it mid-grey rather than fail
        low, high = float(finite.min()) - 0.5, float(finite.max()) + 0.5
    return float(low), float(high)


def _figure(width, height, *, layout="constrained"):
    # A Figure without pyplot: nothing registered globally, freed with the object, and
    # the Agg canvas whatever backend the caller uses.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=90, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path, *, clear=True):
    figure.savefig(path, format="png")
    if clear:  # (a figure drawn again for the next picture is not cleared)
        figure.clear()
    return path


def _image_png(data, path, *, size, cmap="gray", limits=None):
    """An image as a PNG without axes, row 0 at the bottom as in ds9 (fast: no figure)."""
    return _sample_png(sample_pixels(data, size)[0], path, cmap=cmap, limits=limits)


def _sample_png(small, path, *, cmap="gray", limits=None, key=None):
    """`_image_png` of pixels already sampled; a grey one records ``key`` (see
    `Pictures`)."""
    low, high = limits if limits is not None else _limits(small)
    pixels = np.nan_to_num(small, nan=low)
    if cmap == "gray":
        _gray_png(pixels, low, high, path, key=key)
    else:
        from matplotlib.image import imsave

        imsave(path, pixels, cmap=cmap, vmin=low, vmax=high, origin="lower")
    return path, (low, high)


def _gray_png(pixels, low, high, path, *, key=None):
    """What ``matplotlib.image.imsave(cmap="gray", origin="lower")`` draws, written as a
    one-channel PNG: the grey levels of its red, green and blue, a quarter of its bytes
    to compress (the longest step of a report with many frames). ``key``, if given, is
    written in a text chunk."""
    from matplotlib.cm import ScalarMappable
    from PIL import Image, PngImagePlugin

    mappable = ScalarMappable(cmap="gray")
    mappable.set_clim(low, high)
    grey = mappable.to_rgba(pixels[::-1], bytes=True)[..., 0]
    info = None
    if key is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text(_PICTURE_KEY, key)
    # (a 2-D array of bytes is a one-channel, "L", image)
    Image.fromarray(np.ascontiguousarray(grey, dtype=np.uint8)).save(path, format="png",
                                                                      pnginfo=info)


#: Bins of a master's histogram, over its z-scale range widened by half on each side.
_HISTOGRAM_BINS = 80


def _histogram_range(limits):
    low, high = limits
    spread = max(high - low, 1e-6)
    return low - 0.5 * spread, high + 0.5 * spread


class HistogramPicture:
    """The histograms of a report's masters: one figure, drawn again for each master.

    Making a figure and its axes costs more than drawing them; the counts are
    `numpy.histogram`'s, drawn as steps (the picture ``Axes.hist(histtype="stepfilled")``
    draws, pixel for pixel).
    """

    def __init__(self):
        self.figure = self.axes = self.steps = self.level = None

    def _start(self, counts, edges):
        from matplotlib.ticker import NullLocator

        self.figure = _figure(3.6, 2.4, layout=None)
        self.axes = self.figure.add_axes((0.18, 0.21, 0.78, 0.72))
        self.steps = self.axes.stairs(counts, edges, fill=True, color="#4a6fa5")
        self.axes.set_yscale("log")
        self.axes.yaxis.set_minor_locator(NullLocator())
        self.level = self.axes.axvline(edges[0], color="#a40000", lw=1)
        self.axes.set_ylabel("pixels", fontsize=9)
        self.axes.tick_params(labelsize=8)

    def draw(self, values, level, limits, kind, path):
        """Write the histogram of a master's pixels, its median marked.

        Parameters
        ----------
        values : `numpy.ndarray`
            The finite pixel values.
        level : float
            The median, marked by a red line (none when NaN).
        limits : tuple of float
            The z-scale range of the master's image, widened by half on each side.
        kind : str
            The master's kind: a flat's axis is its response, others' ADU.
        path : `pathlib.Path`
            The picture.

        Returns
        -------
        path : `pathlib.Path`
        counts, edges : `numpy.ndarray` or None
            The counts drawn and their bin edges (``None`` without values).
        """
        if not values.size:
            return _empty_histogram_png(kind, path), None, None
        counts, edges = np.histogram(values, bins=_HISTOGRAM_BINS,
                                     range=_histogram_range(limits))
        if self.figure is None:
            self._start(counts, edges)
        self.steps.set_data(counts, edges)
        shown = bool(np.isfinite(level))
        # (a line not shown stays where it cannot widen the axes)
        self.level.set_xdata([level, level] if shown else [edges[0], edges[0]])
        self.level.set_visible(shown)
        self.axes.relim()
        self.axes.autoscale_view()
        self.axes.set_xlabel(_histogram_label(kind), fontsize=9)
        return _save(self.figure, path, clear=False), counts, edges


def _histogram_label(kind):
    return "flat-field response" if kind == "flat" else "ADU"


def _empty_histogram_png(kind, path):
    """The axes of a histogram with no pixel to count."""
    figure = _figure(3.6, 2.4, layout=None)
    axes = figure.add_axes((0.18, 0.21, 0.78, 0.72))
    axes.set_xlabel(_histogram_label(kind), fontsize=9)
    axes.set_ylabel("pixels", fontsize=9)
    axes.tick_params(labelsize=8)
    return _save(figure, path)


# ------------------------------------------------------------------ masters
@dataclass
class MasterStatistics:
    """The numbers of a master taken from its pixels (see `master_statistics`)."""

    level: float  # the median of its good pixels
    noise: float  # their MAD standard deviation
    n_masked: int  # its masked pixels
    flatness: dict  # for a flat, `_flatness`; empty otherwise


def _flatness(data):
    """The large-scale shape of a flat: the medians of a coarse grid of boxes.

    Returns the grid (normalised to its median), its max/min ratio and its rms.
    """
    rows, columns = data.shape
    bins_y = min(_FLATNESS_BINS, rows)
    bins_x = min(_FLATNESS_BINS, columns)
    grid = np.full((bins_y, bins_x), np.nan)
    edges_y = np.linspace(0, rows, bins_y + 1).astype(int)
    edges_x = np.linspace(0, columns, bins_x + 1).astype(int)
    for i in range(bins_y):
        for j in range(bins_x):
            box = data[edges_y[i]:edges_y[i + 1], edges_x[j]:edges_x[j + 1]]
            # (in float64 whatever the flat's type: a median of an even count averages)
            box = np.asarray(box[np.isfinite(box)], dtype=float)
            if box.size:
                grid[i, j] = np.median(box)
    centre = np.nanmedian(grid) if np.isfinite(grid).any() else math.nan
    if not centre or not np.isfinite(centre):
        return {"grid": grid, "ratio": math.nan, "rms": math.nan}
    grid = grid / centre
    return {"grid": grid, "ratio": float(np.nanmax(grid) / np.nanmin(grid)),
            "rms": float(np.nanstd(grid))}


def master_statistics(data, mask, kind):
    """The level and noise of a master's good pixels (from a sample of about 1000 along
    the longer side), its masked pixels and, for a flat, its large-scale shape.

    Parameters
    ----------
    data : `numpy.ndarray`
        The master's pixels.
    mask : bool `numpy.ndarray` or None
        Its mask.
    kind : {"bias", "dark", "flat"}

    Returns
    -------
    `MasterStatistics`
    """
    good = np.isfinite(data) if mask is None else np.isfinite(data) & ~mask
    # The sample of the good pixels, masked ones NaN (only the sample's pixels looked at)
    sample, step = sample_pixels(data, 1000)
    sample = np.where(good[::step, ::step], sample, np.nan)
    values = sample[np.isfinite(sample)]
    level = float(np.median(values)) if values.size else math.nan
    noise = float(mad_std(values)) if values.size else math.nan
    flatness = _flatness(np.where(good, data, np.nan)) if kind == "flat" else {}
    return MasterStatistics(level=level, noise=noise,
                            n_masked=int(mask.sum()) if mask is not None else 0,
                            flatness=flatness)


def master_pictures(name, kind, data, stats, pictures, histograms):
    """The pictures of a master: its image, its histogram and, for a flat, its
    large-scale shape.

    Parameters
    ----------
    name, kind : str
        The master's name (part of the pictures' names) and kind.
    data : `numpy.ndarray`
        Its pixels.
    stats : `MasterStatistics`
        Its numbers (`master_statistics`).
    pictures : `Pictures`
        Where the pictures go.
    histograms : `HistogramPicture`
        The figure that draws the histograms of the report's masters.

    Returns
    -------
    list of tuple
        ``(path, words)`` of each picture.
    """
    image, limits = _image_png(data, pictures.path(f"master_{name}"), size=_MASTER_SAMPLE)
    sample, _ = sample_pixels(data, 1000)
    histogram, _, _ = histograms.draw(sample[np.isfinite(sample)], stats.level, limits, kind,
                                      pictures.path(f"master_{name}_histogram"))
    shown = [(image, f"{name}, z-scale {limits[0]:.4g} to {limits[1]:.4g}"),
             (histogram, f"{name}: histogram of pixel values, median in red")]
    if stats.flatness:
        grid = stats.flatness["grid"]
        # Each box drawn as a square block of pixels, so the shape is seen at a glance.
        block = max(1, _MASTER_SAMPLE // (2 * max(grid.shape)))
        large = np.kron(grid, np.ones((block, block)))
        finite = grid[np.isfinite(grid)]
        limits = (float(finite.min()), float(finite.max())) if finite.size else (0, 1)
        if not limits[1] > limits[0]:
            limits = (limits[0] - 1e-3, limits[1] + 1e-3)
        path, _ = _image_png(large, pictures.path(f"master_{name}_large_scale"),
                             size=10**6, cmap="viridis", limits=limits)
        shown.append((path, f"{name}: large-scale shape, box medians from "
                            f"{limits[0]:.4f} to {limits[1]:.4f} of the median"))
    return shown



# ---------------------------------------------------------------------- the sky
def _times(rows):
    """Observation times as datetimes, or ``None`` when any frame has none."""
    try:
        return Time([row["date_obs"] for row in rows], format="isot", scale="utc").datetime
    except ValueError:
        return None


def _time_axis(axes, times):
    """Hours and minutes on the time axis; the date in its label. Returns the label."""
    from matplotlib.dates import DateFormatter

    days = sorted({time.date() for time in times})
    if len(days) == 1:
        axes.xaxis.set_major_formatter(DateFormatter("%H:%M"))
        return f"time (UTC) on {days[0].isoformat()}"
    axes.xaxis.set_major_formatter(DateFormatter("%m-%d %H:%M"))
    return "time (UTC)"


def sky_picture(measured, path):
    """The sky level and noise of science frames against time, one colour per filter.

    Parameters
    ----------
    measured : list of dict
        One per frame, with ``filter``, ``date_obs`` (ISO time), ``sky_level`` and
        ``sky_noise``; frames without observation times are drawn in order.
    path : `pathlib.Path`
        The picture.

    Returns
    -------
    `pathlib.Path`
        ``path``.
    """
    times = _times(measured)
    figure = _figure(9.0, 5.0)
    level_axes, noise_axes = figure.subplots(2, 1, sharex=True)
    filters = sorted({row["filter"] for row in measured})
    for colour, name in enumerate(filters):
        chosen = [i for i, row in enumerate(measured) if row["filter"] == name]
        x = [times[i] for i in chosen] if times is not None else chosen
        label = name or "no filter"
        style = {"marker": "o", "ls": "-", "lw": 0.8, "ms": 4, "color": f"C{colour}",
                 "label": label}
        level_axes.plot(x, [measured[i]["sky_level"] for i in chosen], **style)
        noise_axes.plot(x, [measured[i]["sky_noise"] for i in chosen], **style)
    level_axes.set_ylabel("sky level (ADU)")
    noise_axes.set_ylabel("sky noise (ADU)")
    level_axes.legend(title="filter", fontsize=8)
    noise_axes.set_xlabel(_time_axis(noise_axes, times) if times is not None
                          else "science frame (no observation times)")
    return _save(figure, path)
