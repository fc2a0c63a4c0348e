"""The night report: one HTML page with pictures, made from the files of a reduced night.

`write_report` reads only what `~ccdproc_ext.reduce_night` wrote into its output folder
(``plan.ecsv``, ``masters.ecsv``, ``science.ecsv``, ``problems.ecsv``, ``notes.ecsv``,
``masters/*.fits`` and ``science/*.fits``) and writes ``report.html`` beside them, with
its pictures in ``report/``. The page shows:

- the night in numbers, then every problem and note, grouped by reason with each file
  named once (``2 files: truncated``);
- the plan: frames by type and group, and which bias, dark and flat each set of science
  frames used, and why;
- every master as an image (z-scale stretch) with its histogram and statistics (level,
  noise, frames combined, masked pixels); for flats, how flat they are on large scales;
- the sky level and noise of every science frame against time, one colour per filter;
- a thumbnail of every science frame after calibration, and before it when the raw
  folder is known (``plan.meta["raw_folder"]``) and the raw file can still be read.

The page needs no JavaScript and no network: open it from the folder in any browser.
Text taken from headers and file names is escaped. The pictures are made by matplotlib
without pyplot, so the caller's plotting state is untouched and no figure stays in
memory.

`night_html_summary` is the short version a notebook shows for a
`~ccdproc_ext.NightResult`.

>>> import tempfile
>>> from pathlib import Path
>>> from ccdproc_ext import reduce_night
>>> from ccdproc_ext.report import write_report
>>> from ccdproc_ext.simulate import simulate_night
>>> folder = Path(tempfile.mkdtemp())
>>> _ = simulate_night(folder / "raw", shape=(32, 40), filters=("R",), n_science=2)
>>> _ = reduce_night(folder / "raw", folder / "out", progress=False)
>>> write_report(folder / "out").name
'report.html'
>>> import shutil; shutil.rmtree(folder)
"""

import html
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
from astropy.io import fits
from astropy.stats import mad_std
from astropy.table import Table
from astropy.time import Time
from astropy.visualization import ZScaleInterval

from ._raw_parts import read_mask, read_sample
from .exceptions import CcdprocExtError, OutputError
from .outputs import file_stamp, recipe
from .profiles import get_profile
from .raw import read_frame

__all__ = ["REPORT_FOLDER", "REPORT_NAME", "files_shown", "group_by_reason", "grouped_lines",
           "night_html_summary", "write_report"]

#: The report's file name in the output folder.
REPORT_NAME = "report.html"
#: The folder of its pictures, beside it.
REPORT_FOLDER = "report"

_THUMBNAIL_SIZE = 192  # pixels along the longer side of a science thumbnail
_MASTER_SAMPLE = 400  # pixels along the longer side of a master's picture
_FLATNESS_BINS = 8  # a flat is cut into this many boxes along each side to see its shape
_REDUCED = ("written", "up to date")
#: The PNG text chunk holding what a thumbnail was drawn from.
_PICTURE_KEY = "ccdproc_ext-drawn-from"
#: Part of every picture's key: thumbnails of an older drawing are drawn again.
_PICTURE_VERSION = 1


# --------------------------------------------------------------------------- reading
@dataclass
class _Night:
    """The tables of a reduced night, read from its output folder."""

    folder: Path
    plan: Table
    masters: Table
    science: Table
    problems: Table
    notes: Table

    @property
    def raw_folder(self):
        folder = self.plan.meta.get("raw_folder")
        return Path(folder) if folder else None


def _read_table(path, columns, *, required=False):
    """An ECSV table of the night, or an empty one with ``columns`` when it is absent."""
    if not path.exists():
        if required:
            raise OutputError(f"{path.parent}: no {path.name}: not the output folder of a "
                              "reduced night (run 'ccdproc-ext reduce RAW OUT' first)")
        return Table(names=columns, dtype=["U1"] * len(columns))
    try:
        return Table.read(path, format="ascii.ecsv")
    except Exception as error:  # any parse failure of a damaged table: say which file
        raise OutputError(f"{path}: cannot be read as an ECSV table ({error})") from error


def _read_night(folder):
    folder = Path(folder)
    if not folder.is_dir():
        raise OutputError(f"{folder}: no such folder")
    return _Night(
        folder=folder,
        plan=_read_table(folder / "plan.ecsv", ["file", "type", "status"], required=True),
        masters=_read_table(folder / "masters.ecsv", ["name", "kind", "n_frames"]),
        science=_read_table(folder / "science.ecsv",
                            ["raw_file", "output_file", "sky_level", "sky_noise", "status"]),
        problems=_read_table(folder / "problems.ecsv", ["file", "kind", "problem"]),
        notes=_read_table(folder / "notes.ecsv", ["file", "kind", "note"]),
    )


def _text(value):
    """A table cell as text: masked, NaN and empty values are ``""``."""
    if value is None or value is np.ma.masked:
        return ""
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return ""
    return str(value).strip()


def _number(value):
    """A table cell or header value as a float (NaN when it is not a number)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def _column(table, name):
    return [_text(value) for value in table[name]] if name in table.colnames \
        else [""] * len(table)


# ------------------------------------------------------------------------- grouping
def _clause(text, file):
    """The first clause of a problem or note, without the file's own name."""
    clause = re.split(r": |; ", text, maxsplit=1)[0].strip()
    name = Path(file).name
    if name and name in clause and clause != name:
        clause = clause.replace(name, "").strip()
    return clause


def _reason_key(clause):
    """What makes two clauses the same reason: words, not numbers or bracketed detail."""
    clause = re.sub(r"\([^)]*\)", "", clause)
    return re.sub(r"\d+", "#", " ".join(clause.split())).lower()


def group_by_reason(table, text_column):
    """Group the rows of a problem or note table by reason, each file listed once.

    The reason of a row is its kind (``FrameReadError``...) and the first clause of its
    text (up to the first ``:`` or ``;``), numbers and bracketed detail aside: twelve
    files ``truncated: the data unit needs ... bytes`` are one reason whatever their
    lengths.

    Parameters
    ----------
    table : `~astropy.table.Table`
        With columns ``file``, ``kind`` and ``text_column``.
    text_column : str
        ``"problem"`` or ``"note"``.

    Returns
    -------
    list of dict
        One per reason, in the order of their first row: ``kind``, ``reason`` (the
        clause, or its common words when the clauses differ in numbers), ``files`` (each
        once) and ``texts`` (``file -> full text``).

    Examples
    --------
    >>> from astropy.table import Table
    >>> problems = Table(rows=[("a.fits", "FrameReadError", "truncated: needs 10 bytes"),
    ...                        ("b.fits", "FrameReadError", "truncated: needs 20 bytes")],
    ...                  names=["file", "kind", "problem"])
    >>> [(g["reason"], g["files"]) for g in group_by_reason(problems, "problem")]
    [('truncated', ['a.fits', 'b.fits'])]
    """
    groups = {}
    files = _column(table, "file")
    kinds = _column(table, "kind")
    texts = _column(table, text_column)
    for file, kind, text in zip(files, kinds, texts, strict=True):
        clause = _clause(text, file)
        group = groups.setdefault((kind, _reason_key(clause)),
                                  {"kind": kind, "clauses": [], "files": [], "texts": {}})
        if file in group["texts"]:
            group["texts"][file] += "; " + text
            continue
        group["clauses"].append(clause)
        group["files"].append(file)
        group["texts"][file] = text
    result = []
    for group in groups.values():
        clauses = group.pop("clauses")
        if len(set(clauses)) == 1:
            reason = clauses[0]
        else:  # the same words around different numbers or names: keep the words
            reason = " ".join(re.sub(r"\([^)]*\)", "", clauses[0]).split())
            reason = re.sub(r"\d+(?:[.,]\d+)*", "…", reason)
        group["reason"] = reason or group["kind"]
        result.append(group)
    return result


#: Files named in one line of grouped text before "and N more".
FILES_SHOWN = 6


def files_shown(files):
    """The first ``FILES_SHOWN`` (six) of ``files`` joined by commas, and how many more.

    Examples
    --------
    >>> files_shown([f"f{i}.fits" for i in range(8)])
    'f0.fits, f1.fits, f2.fits, f3.fits, f4.fits, f5.fits and 2 more'
    """
    shown = ", ".join(files[:FILES_SHOWN])
    if len(files) > FILES_SHOWN:
        shown += f" and {len(files) - FILES_SHOWN} more"
    return shown


def grouped_lines(table, text_column, *, verbose=False):
    """Lines for people of a problem or note table: one per reason
    (`group_by_reason`), the files after it, or with ``verbose`` one per row, each
    file with its own words.

    Parameters
    ----------
    table : `~astropy.table.Table`
        With columns ``file``, ``kind`` and ``text_column``.
    text_column : str
        ``"problem"``, ``"note"``, or any column of words.
    verbose : bool, optional
        One line per row instead of one per reason. Default is ``False``.

    Returns
    -------
    list of str
        ``"reason (N files, -v for each): a.fits, b.fits ..."``, or ``"file: words"``
        for a reason of one file.

    Examples
    --------
    >>> from astropy.table import Table
    >>> notes = Table(rows=[("a.fits", "HeaderNote", "GAIN missing: 1 assumed"),
    ...                     ("b.fits", "HeaderNote", "GAIN missing: 1 assumed")],
    ...               names=["file", "kind", "note"])
    >>> grouped_lines(notes, "note")
    ['GAIN missing (2 files, -v for each): a.fits, b.fits']
    >>> grouped_lines(notes, "note", verbose=True)
    ['a.fits: GAIN missing: 1 assumed', 'b.fits: GAIN missing: 1 assumed']
    """
    if verbose:
        return [f"{file}: {text}" for file, text in
                zip(_column(table, "file"), _column(table, text_column), strict=True)]
    lines = []
    for group in group_by_reason(table, text_column):
        files = group["files"]
        if len(files) == 1:
            lines.append(f"{files[0]}: {group['texts'][files[0]]}")
        else:
            lines.append(f"{group['reason']} ({len(files)} files, -v for each): "
                         f"{files_shown(files)}")
    return lines


def _plural(n, word):
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# -------------------------------------------------------------------------- HTML bits
def _e(value):
    return html.escape(_text(value), quote=True)


def _table_html(header, rows, *, numeric=()):
    """An HTML table; ``rows`` are lists of already escaped cells (no header if ``None``)."""
    head = "".join(f"<th>{_e(name)}</th>" for name in header or ())
    body = []
    for row in rows:
        cells = "".join(f'<td class="num">{cell}</td>' if i in numeric else f"<td>{cell}</td>"
                        for i, cell in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    head = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f"<table>{head}<tbody>{''.join(body)}</tbody></table>"


def _files_html(files):
    return ", ".join(f"<code>{_e(file)}</code>" for file in files)


def _remainder(text, reason):
    """What a problem or note says beyond its reason."""
    head, sep, rest = text.partition(": ")
    return rest if sep and head.startswith(reason) else text


def _groups_html(groups, *, css):
    """A list of reasons, "N files: reason", each file named once with what it says."""
    items = []
    for group in groups:
        head = (f'<span class="{css}">{_e(_plural(len(group["files"]), "file"))}: '
                f'{_e(group["reason"])}</span> <span class="kind">{_e(group["kind"])}</span>')
        by_text = {}
        for file, text in group["texts"].items():
            by_text.setdefault(_remainder(text, group["reason"]), []).append(file)
        if len(by_text) == 1:
            text, files = next(iter(by_text.items()))
            detail = f"<div>{_files_html(files)}</div>"
            if text != group["reason"]:
                detail += f'<div class="detail">{_e(text)}</div>'
        else:
            lines = "".join(f"<li>{_files_html(files)}: {_e(text)}</li>"
                            for text, files in by_text.items())
            detail = (f'<ul class="detail">{lines}</ul>' if len(by_text) <= 3 else
                      f'<details><summary>{_e(_plural(len(by_text), "different detail"))}'
                      f'</summary><ul class="detail">{lines}</ul></details>')
        items.append(f"<li>{head}{detail}</li>")
    return f'<ul class="groups">{"".join(items)}</ul>'


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 78em;
       padding: 0 1em; color: #1d1d1f; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { border-bottom: 1px solid #ccc;
     margin-top: 1.8em; } h3 { margin-bottom: .3em; }
code { font-size: .9em; background: #f3f3f3; padding: 0 .2em; border-radius: 3px; }
table { border-collapse: collapse; margin: .5em 0; font-size: .92em; }
th, td { border: 1px solid #d0d0d0; padding: .25em .5em; text-align: left;
         vertical-align: top; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
ul.groups li { margin-bottom: .6em; } .problem { color: #a40000; font-weight: 600; }
.note { color: #7a5200; font-weight: 600; } .kind { color: #777; font-size: .85em; }
.detail, details { color: #444; font-size: .9em; } .ok { color: #196619; font-weight: 600; }
.master { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start;
          margin-bottom: 1.2em; }
.master img { max-width: 100%; height: auto; } img.pixels { image-rendering: pixelated; }
.thumbs { display: flex; flex-wrap: wrap; gap: .8em; }
figure { margin: 0; padding: .4em; border: 1px solid #ddd; border-radius: 4px;
         background: #fafafa; display: table; }
figcaption { font-size: .8em; display: table-caption; caption-side: bottom;
             padding: 0 .4em .4em; background: #fafafa; }
figure .pair { display: flex; gap: .3em; } nav a { margin-right: 1em; }
"""


def _page(title, sections):
    nav = " ".join(f'<a href="#{anchor}">{_e(heading)}</a>' for anchor, heading, _ in sections)
    body = "\n".join(f'<section id="{anchor}"><h2>{_e(heading)}</h2>\n{content}</section>'
                     for anchor, heading, content in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_e(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{_e(title)}</h1>\n<nav>{nav}</nav>\n{body}\n</body>\n</html>\n")


# ------------------------------------------------------------------------- pictures
class _Pictures:
    """The pictures folder: safe, unique file names, ``src`` paths for the page, and the
    thumbnails of an earlier report kept where the file they show has not changed.

    A thumbnail is drawn with a key (`_thumbnail_key`: the file it shows, as
    `~ccdproc_ext.outputs.file_stamp` sees it, and how it is drawn), written in the PNG
    itself (`_drawn_with` reads it); a later report that asks for the same picture with
    the same key finds it and neither reads the file nor draws it again (a night of
    thousands of frames re-run with everything up to date would otherwise spend most of
    its time drawing the same thumbnails). `finish` removes the pictures the page no
    longer shows.
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
        stem = re.sub(r"[^A-Za-z0-9_.+-]", "_", stem).lstrip(".") or "picture"
        name, i = f"{stem}.png", 1
        while name.lower() in self.used:
            i += 1
            name = f"{stem}-{i}.png"
        self.used.add(name.lower())
        return self.folder / name

    def img(self, path, alt, *, width=None):
        """An ``<img>`` of a picture; with ``width``, drawn at that width, pixels sharp."""
        size = f' width="{width}" class="pixels"' if width else ""
        return (f'<img src="{quote(f"{self.folder.name}/{path.name}")}" alt="{_e(alt)}"'
                f'{size} loading="lazy">')


def _drawn_with(path):
    """The key a thumbnail was drawn with (see `_Pictures`), or ``None``."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.text.get(_PICTURE_KEY)
    except (OSError, ValueError, AttributeError):  # none, damaged, or not a PNG
        return None


def _thumbnail_key(path, profile=None):
    """What a thumbnail of the file ``path`` depends on: the file (name, size, time), how
    thumbnails are drawn, and the profile that turns it."""
    return recipe("thumbnail", _PICTURE_VERSION, _THUMBNAIL_SIZE, file_stamp(path),
                  None if profile is None else profile.name)


def _sample(data, size):
    """Every n-th pixel in both directions, so the longer side is about ``size``."""
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


def _file_sample(path, size, profile=None):
    """The pixels `_sample` takes of a frame as `~ccdproc_ext.raw.read_frame` gives them,
    reading only those from the file when it allows (see
    `ccdproc_ext._raw_parts.read_sample`)."""
    return read_sample(path, size, profile)


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


# --------------------------------------------------------------------------- masters
@dataclass
class _MasterStats:
    level: float
    noise: float
    n_frames: str
    method: str
    n_masked: int
    n_low: str
    flatness: dict


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


def _master_stats(data, mask, header, kind, row):
    good = np.isfinite(data) if mask is None else np.isfinite(data) & ~mask
    # The sample of the good pixels, masked ones NaN (only the sample's pixels looked at)
    sample, step = _sample(data, 1000)
    sample = np.where(good[::step, ::step], sample, np.nan)
    values = sample[np.isfinite(sample)]
    level = float(np.median(values)) if values.size else math.nan
    noise = float(mad_std(values)) if values.size else math.nan
    n_frames = _text(header.get("NCOMBINE", "")) or (_text(row["n_frames"]) if row is not None
                                                      and "n_frames" in row.colnames else "")
    flatness = _flatness(np.where(good, data, np.nan)) if kind == "flat" else {}
    return _MasterStats(level=level, noise=noise, n_frames=n_frames,
                        method=_text(header.get("COMBMETH", "")),
                        n_masked=int(mask.sum()) if mask is not None else 0,
                        n_low=_text(header.get("NLOWPIX", "")), flatness=flatness)


def _image_png(data, path, *, size, cmap="gray", limits=None):
    """An image as a PNG without axes, row 0 at the bottom as in ds9 (fast: no figure)."""
    return _sample_png(_sample(data, size)[0], path, cmap=cmap, limits=limits)


def _sample_png(small, path, *, cmap="gray", limits=None, key=None):
    """`_image_png` of pixels already sampled; a grey one records ``key`` (see
    `_Pictures`)."""
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


class _HistogramPicture:
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
        """Write the histogram of ``values`` (finite pixel values) with the median
        ``level`` marked; returns ``path`` and the counts drawn, and their bin edges."""
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


_CAPTIONS = ("image, z-scale", "histogram, median in red",
             "large-scale shape: box medians / median")


def _master_pictures(name, kind, data, stats, pictures, histograms):
    """The master's image, its histogram (drawn by ``histograms``, a `_HistogramPicture`)
    and, for a flat, its large-scale shape."""
    image, limits = _image_png(data, pictures.path(f"master_{name}"), size=_MASTER_SAMPLE)
    sample, _ = _sample(data, 1000)
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


def _read_master(path):
    """The pixels (float32, as read: the statistics and pictures are taken from samples
    in float64, not from a float64 copy of the frame), header and mask of a master;
    `~ccdproc_ext.FrameReadError` if damaged."""
    frame = read_frame(path)  # a missing, truncated or non-FITS file: FrameReadError
    mask = read_mask(path)  # a damaged extension (a warning too) is said on the page
    if frame.data.ndim != 2 or (mask is not None and mask.shape != frame.data.shape):
        raise OutputError(f"{path}: not a 2-D image with a mask of its shape")
    return frame.data, frame.meta, mask


def _format(value, digits=4):
    return "" if not np.isfinite(value) else f"{value:.{digits}g}"


def _masters_section(night, pictures):
    if len(night.masters) == 0:
        return "<p>No master was built in this night.</p>"
    parts = []
    names = _column(night.masters, "name")
    kinds = _column(night.masters, "kind")
    histograms = _HistogramPicture()
    for index, (name, kind) in enumerate(zip(names, kinds, strict=True)):
        path = night.folder / "masters" / f"{name}.fits"
        row = night.masters[index]
        try:
            data, header, mask = _read_master(path)
        except (OSError, ValueError, CcdprocExtError, Warning) as error:
            parts.append(f"<h3>{_e(name)}</h3><p class=\"problem\">cannot be read: "
                         f"{_e(str(error))}</p>")
            continue
        stats = _master_stats(data, mask, header, kind, row)
        shown = _master_pictures(name, kind, data, stats, pictures, histograms)
        facts = [("kind", _e(kind)), ("frames combined", _e(stats.n_frames)),
                 ("method", _e(stats.method)), ("size", f"{data.shape[1]} × {data.shape[0]}"),
                 ("level (median)", _format(stats.level)),
                 ("noise (MAD std)", _format(stats.noise)),
                 ("masked pixels", str(stats.n_masked))]
        for column, label in (("exposure", "exposure (s)"), ("filter", "filter"),
                              ("group", "group")):
            if column in night.masters.colnames and _text(row[column]):
                facts.append((label, _e(row[column])))
        if stats.n_low not in ("", "0"):
            facts.append(("pixels below the flat minimum", _e(stats.n_low)))
        if stats.flatness:
            facts.append(("large-scale max/min", _format(stats.flatness["ratio"], 4)))
            facts.append(("large-scale rms", _format(100 * stats.flatness["rms"], 3) + " %"))
        table = _table_html(None, [[label, value] for label, value in facts])
        files = _text(row["files"]) if "files" in night.masters.colnames else ""
        from_files = (f"<details><summary>made from</summary>"
                      f"{_files_html(files.split(','))}</details>" if files else "")
        parts.append(f'<h3 id="master-{_e(name)}">{_e(name)}</h3><div class="master">'
                     f"<div>{table}{from_files}</div>"
                     + "".join(f"<figure>{pictures.img(path, alt, width=width)}"
                               f"<figcaption>{_e(caption)}</figcaption></figure>"
                               for (path, alt), caption, width
                               in zip(shown, _CAPTIONS, (224, None, 160), strict=False))
                     + "</div>")
    return "\n".join(parts)


def _bad_pixel_masks_section(night):
    """What each bad-pixel mask of the night masks: hot pixels (master dark) and low ones
    (master flat), each a number of pixels and a fraction of the frame, from the mask's
    header (``NHOTPIX``, ``NLOWFLAT``)."""
    rows = []
    for path in sorted((night.folder / "masters").glob("bpm_*.fits")):
        try:
            header = fits.getheader(path)
        except (OSError, ValueError) as error:
            rows.append([_e(path.stem), f"cannot be read: {_e(str(error))}", ""])
            continue
        size = int(header.get("NAXIS1", 0)) * int(header.get("NAXIS2", 0))
        rows.append([_e(path.stem)] + [_masked_fraction(header.get(card), size)
                                       for card in ("NHOTPIX", "NLOWFLAT")])
    if not rows:
        return ""
    return ("<h3>Bad-pixel masks</h3>"
            + _table_html(["mask", "hot in the master dark", "low in the master flat"], rows,
                          numeric=(1, 2)))


def _masked_fraction(count, size):
    """``"1234 (0.118 %)"``: a number of masked pixels and its share of the frame."""
    if not isinstance(count, int) or not size:
        return ""
    return f"{count} ({100 * count / size:.3g} %)"


# ------------------------------------------------------------------------- the plan
_TYPE_ORDER = ("bias", "dark", "flat", "science")


def _plan_section(night):
    plan = night.plan
    types = _column(plan, "type")
    groups = _column(plan, "group")
    nights = _column(plan, "night")
    statuses = _column(plan, "status")
    columns = [t for t in _TYPE_ORDER if t in types] + sorted(set(types) - set(_TYPE_ORDER))
    counts = {}
    for image_type, group, night_number in zip(types, groups, nights, strict=True):
        key = (night_number, group)
        counts.setdefault(key, {}).setdefault(image_type, 0)
        counts[key][image_type] += 1
    rows = [[_e(n), _e(group) or "(one group)"]
            + [str(counts[(n, group)].get(t, 0)) for t in columns]
            for n, group in sorted(counts)]
    parts = ["<h3>Frames by type and group</h3>",
             _table_html(["night", "group", *columns], rows,
                         numeric=range(2, 2 + len(columns)))]
    n_problem = sum(status != "ok" for status in statuses)
    if n_problem:
        parts.append(f"<p>{_plural(n_problem, 'frame')} could not be used: see "
                     '<a href="#problems">problems</a>.</p>')
    parts.append("<h3>Calibrations of the science frames</h3>")
    parts.append(_science_plan_html(night))
    for note in night.plan.meta.get("notes", []) or []:
        parts.append(f'<p class="note">{_e(note)}</p>')
    return "\n".join(parts)


def _science_plan_html(night):
    """One row per set of science frames that got the same masters for the same reasons."""
    plan = night.plan
    science = [i for i, t in enumerate(_column(plan, "type")) if t == "science"]
    if not science:
        return "<p>No science frame in this night: only masters were built.</p>"
    keys = ("group", "filter", "exposure", "bias", "bias_rule", "dark", "dark_rule",
            "dark_scale", "flat", "flat_rule", "status", "problem_kind")
    sets = {}
    for i in science:
        row = plan[i]
        key = tuple(_text(row[k]) if k in plan.colnames else "" for k in keys)
        sets.setdefault(key, []).append(_text(row["file"]))
    rows = []
    for key, files in sets.items():
        value = dict(zip(keys, key, strict=True))

        def used(step, value=value):
            if not value[step]:
                return f"<em>none</em>: {_e(value[step + '_rule'])}" if value[step + "_rule"] \
                    else "<em>none</em>"
            return f"<code>{_e(value[step])}</code><br>{_e(value[step + '_rule'])}"

        dark = used("dark")
        if value["dark"] and value["dark_scale"] and _number(value["dark_scale"]) != 1:
            dark += f"<br>scaled × {_e(value['dark_scale'])}"
        status = ('<span class="ok">ok</span>' if value["status"] == "ok"
                  else f'<span class="problem">{_e(value["problem_kind"] or value["status"])}'
                  "</span>")
        rows.append([str(len(files)), _e(value["filter"]), _e(value["exposure"]),
                     used("bias"), dark, used("flat"), status,
                     f"<details><summary>{_e(_plural(len(files), 'file'))}</summary>"
                     f"{_files_html(files)}</details>"])
    return _table_html(["frames", "filter", "exposure (s)", "bias", "dark", "flat", "plan",
                        "files"], rows, numeric=(0, 2))


# ----------------------------------------------------------------- problems and notes
def _problems_section(night):
    parts = []
    if len(night.problems):
        parts.append(f"<p>{_plural(len(set(_column(night.problems, 'file'))), 'file')} "
                     "could not be used:</p>")
        parts.append(_groups_html(group_by_reason(night.problems, "problem"), css="problem"))
    else:
        parts.append('<p class="ok">No problem: every frame was used.</p>')
    return "\n".join(parts)


def _notes_section(night):
    notes = night.notes
    files = _column(notes, "file")
    whole_night = [i for i, file in enumerate(files) if file == "(night)"]
    per_file = [i for i, file in enumerate(files) if file != "(night)"]
    parts = []
    if whole_night:
        parts.append("<p>About the whole night:</p><ul>"
                     + "".join(f'<li class="note">{_e(notes[i]["note"])}</li>'
                               for i in whole_night) + "</ul>")
    if per_file:
        parts.append("<p>Used, but worth a look:</p>")
        parts.append(_groups_html(group_by_reason(notes[per_file], "note"), css="note"))
    if not parts:
        parts.append("<p>No notes.</p>")
    return "\n".join(parts)


# ---------------------------------------------------------------------- science frames
def _science_rows(night):
    """The science frames that were reduced, with their time and filter from the plan."""
    plan = night.plan
    by_file = {_text(file): i for i, file in enumerate(plan["file"])}
    rows = []
    for row in night.science:
        if _text(row["status"]) not in _REDUCED:
            continue
        raw_file = _text(row["raw_file"])
        plan_row = plan[by_file[raw_file]] if raw_file in by_file else None

        def from_plan(column, plan_row=plan_row):
            return _text(plan_row[column]) if plan_row is not None and \
                column in plan.colnames else ""

        rows.append({"raw_file": raw_file, "output_file": _text(row["output_file"]),
                     "filter": from_plan("filter"), "date_obs": from_plan("date_obs"),
                     "exposure": from_plan("exposure"),
                     "sky_level": _number(row["sky_level"]),
                     "sky_noise": _number(row["sky_noise"]),
                     "masters": [_text(row[k]) for k in ("bias", "dark", "flat")
                                 if k in night.science.colnames and _text(row[k])]})
    return rows


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


def _sky_section(night, pictures):
    rows = _science_rows(night)
    measured = [row for row in rows if np.isfinite(row["sky_level"])]
    if not measured:
        return "<p>No science frame was reduced, so there is no sky to show.</p>"
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
    picture = _save(figure, pictures.path("sky"))
    return (f"{pictures.img(picture, 'sky level and noise against time, per filter')}"
            f"<p>Sky level (median, sources masked) and noise of {len(measured)} science "
            f"frame(s), one colour per filter.</p>")


def _raw_thumbnail(night, raw_file, pictures, stem, profile):
    """A thumbnail of the raw frame (kept from an earlier report when the file has not
    changed), or ``None`` when it cannot be read."""
    folder = night.raw_folder
    if folder is None or not (folder / raw_file).is_file():
        return None
    path = pictures.path(f"raw_{stem}")
    key = _thumbnail_key(folder / raw_file, profile)
    if _drawn_with(path) == key:
        return path
    try:
        pixels = _file_sample(folder / raw_file, _THUMBNAIL_SIZE, profile)
    except (CcdprocExtError, OSError, ValueError):
        return None
    return _sample_png(pixels, path, key=key)[0]


def _calibrated_thumbnail(night, output_file, pictures, stem):
    """A thumbnail of a science output, kept from an earlier report when the file has not
    changed; `~ccdproc_ext.FrameReadError` (or `OSError`, `ValueError`) when it cannot
    be read."""
    source = night.folder / output_file
    path = pictures.path(f"science_{stem}")
    key = _thumbnail_key(source) if source.is_file() else None
    if key is not None and _drawn_with(path) == key:
        return path
    return _sample_png(_file_sample(source, _THUMBNAIL_SIZE), path, key=key)[0]


def _profile(night):
    try:
        return get_profile(night.plan.meta.get("profile", "generic"))
    except CcdprocExtError:
        return None


def _science_section(night, pictures):
    rows = _science_rows(night)
    if not rows:
        return "<p>No science frame was reduced.</p>"
    profile = _profile(night) if night.raw_folder is not None else None
    figures = []
    for row in rows:
        stem = Path(row["output_file"]).name.split(".")[0]
        try:
            after = _calibrated_thumbnail(night, row["output_file"], pictures, stem)
        except (CcdprocExtError, OSError, ValueError) as error:
            figures.append(f"<figure><figcaption><code>{_e(row['output_file'])}</code>: "
                           f'<span class="problem">cannot be read: {_e(str(error))}</span>'
                           "</figcaption></figure>")
            continue
        before = _raw_thumbnail(night, row["raw_file"], pictures, stem, profile)
        images = pictures.img(after, f"{row['raw_file']} calibrated", width=_THUMBNAIL_SIZE)
        if before is not None:
            images = (pictures.img(before, f"{row['raw_file']} raw", width=_THUMBNAIL_SIZE)
                      + images)
        caption = (f"<code>{_e(row['raw_file'])}</code>"
                   + (f" · {_e(row['filter'])}" if row["filter"] else "")
                   + (f" · {_e(row['exposure'])} s" if row["exposure"] else "")
                   + (f" · {_e(row['date_obs'])}" if row["date_obs"] else "")
                   + f"<br>sky {_format(row['sky_level'])} ± {_format(row['sky_noise'])} ADU"
                   + (f"<br>{_e(', '.join(row['masters']))}" if row["masters"] else ""))
        figures.append(f'<figure><div class="pair">{images}</div>'
                       f"<figcaption>{caption}</figcaption></figure>")
    legend = ("Raw (left) and calibrated (right), z-scale." if night.raw_folder is not None
              else "Calibrated, z-scale (the raw folder is not recorded in the plan, so "
                   "the raw frames are not shown).")
    return f"<p>{legend}</p><div class=\"thumbs\">{''.join(figures)}</div>"


# ----------------------------------------------------------------------- the summary
def _count_line(values):
    counts = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    ordered = [t for t in _TYPE_ORDER if t in counts] + sorted(set(counts) - set(_TYPE_ORDER))
    return ", ".join(f"{counts[t]} {t}" for t in ordered)


def _summary_section(night):
    statuses = _column(night.science, "status")
    reduced = sum(status in _REDUCED for status in statuses)
    n_science = _column(night.plan, "type").count("science")
    facts = [("profile", _e(night.plan.meta.get("profile", ""))),
             ("frames", _e(_count_line(_column(night.plan, "type")))),
             ("masters", f"{len(night.masters)}: " + ", ".join(
                 f'<a href="#master-{_e(name)}">{_e(name)}</a>'
                 for name in _column(night.masters, "name"))),
             ("science frames", f"{reduced} of {n_science} reduced"),
             ("problems", f'<a href="#problems">{_plural(len(night.problems), "file")}</a>'
              if len(night.problems) else '<span class="ok">none</span>'),
             ("notes", f'<a href="#notes">{len(night.notes)}</a>')]
    dates = sorted(d for d in _column(night.plan, "date_obs") if d)
    if dates:
        facts.insert(1, ("observed", _e(dates[0]) + (f" to {_e(dates[-1])}"
                                                     if dates[-1] != dates[0] else "")))
    if night.raw_folder is not None:
        facts.insert(1, ("raw frames", f"<code>{_e(night.raw_folder)}</code>"))
    return _table_html(None, [[label, value] for label, value in facts])


# ------------------------------------------------------------------------ public API
def write_report(output_dir):
    """Write ``report.html`` (and its pictures in ``report/``) for a reduced night.

    Only the files `~ccdproc_ext.reduce_night` wrote into ``output_dir`` are read (and the
    raw frames, for the "before" thumbnails, when the plan records their folder), so the
    report can be made again at any time, e.g. by ``ccdproc-ext report OUT``.

    Parameters
    ----------
    output_dir : str or `pathlib.Path`
        The output folder of a reduced night.

    Returns
    -------
    `pathlib.Path`
        The report, ``output_dir/report.html``.

    Raises
    ------
    OutputError
        If ``output_dir`` holds no ``plan.ecsv`` or one of its tables cannot be read.
    """
    night = _read_night(output_dir)
    pictures = _Pictures(night.folder / REPORT_FOLDER)
    title = f"Night report: {night.folder.resolve().name}"
    sections = [
        ("summary", "Summary", _summary_section(night)),
        ("problems", "Problems", _problems_section(night)),
        ("notes", "Notes", _notes_section(night)),
        ("plan", "Plan", _plan_section(night)),
        ("masters", "Masters", _masters_section(night, pictures)
         + _bad_pixel_masks_section(night)),
        ("sky", "Sky", _sky_section(night, pictures)),
        ("science", "Science frames", _science_section(night, pictures)),
    ]
    path = night.folder / REPORT_NAME
    temporary = path.with_name(f".{REPORT_NAME}.partial")
    temporary.write_text(_page(title, sections), encoding="utf-8")
    os.replace(temporary, path)
    pictures.finish()
    return path


def night_html_summary(result):
    """A short HTML summary of a `~ccdproc_ext.NightResult`, for notebooks.

    The frames by type, the masters, the science frames reduced, every problem grouped by
    reason, the number of notes, and a link to the night's report when it exists.

    Parameters
    ----------
    result : `~ccdproc_ext.NightResult`

    Returns
    -------
    str
        An HTML fragment (a ``<div>``).
    """
    lines = [f"<li>frames: {_e(_count_line(_column(result.plan, 'type')))}</li>"]
    if result.dry_run:
        planned = result.plan.meta.get("masters")
        names = _column(planned, "name") if planned is not None else []
        lines.append(f"<li>masters planned: {len(names)} ({_e(', '.join(names))})</li>")
    else:
        names = sorted(name for _, name in result.masters)
        lines.append(f"<li>masters: {len(names)} ({_e(', '.join(names))})</li>")
    science = result.science
    if science is not None and len(science):
        lines.append(f"<li>science frames: {_e(_count_line(_column(science, 'status')))}</li>")
    elif "science" in _column(result.plan, "type"):
        lines.append("<li>science frames: none reduced"
                     + (" (dry run: nothing was written)" if result.dry_run else "") + "</li>")
    for name, reason in (result.unbuilt_masters or {}).items():
        lines.append(f'<li class="problem">master {_e(name)} not built: {_e(reason)}</li>')
    parts = [f"<div><strong>Night</strong>{' (dry run)' if result.dry_run else ''}: "
             f"<code>{_e(result.output_dir)}</code><ul>{''.join(lines)}</ul>"]
    if result.problems is not None and len(result.problems):
        groups = group_by_reason(result.problems, "problem")
        parts.append("<p>Problems:</p><ul>" + "".join(
            f"<li>{_e(_plural(len(g['files']), 'file'))}: {_e(g['reason'])} — "
            f"{_files_html(g['files'])}</li>" for g in groups) + "</ul>")
    if result.notes is not None and len(result.notes):
        parts.append(f"<p>{_plural(len(result.notes), 'note')} (see the report).</p>")
    report = Path(result.output_dir) / REPORT_NAME if result.output_dir is not None else None
    if report is not None and report.is_file():
        try:
            href = quote(Path(os.path.relpath(report)).as_posix())
        except ValueError:  # another drive on Windows
            href = report.resolve().as_uri()
        parts.append(f'<p><a href="{html.escape(href, quote=True)}" target="_blank">'
                     f"night report</a> ({_e(report)})</p>")
    elif result.output_dir is not None and not result.dry_run:
        parts.append(f"<p>No report yet: <code>ccdproc-ext report {_e(result.output_dir)}"
                     "</code></p>")
    parts.append("</div>")
    return "".join(parts)
