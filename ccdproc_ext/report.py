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
Text taken from headers and file names is escaped. The pictures are drawn by
`ccdproc_ext.pictures`, with matplotlib without pyplot, so the caller's plotting state is
untouched and no figure stays in memory.

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
import os
from pathlib import Path
from urllib.parse import quote

import numpy as np
from astropy.io import fits

from ._html import escape, files_html, img_html, page_html, table_html
from ._night_folder import (
    REDUCED,
    cell_number,
    cell_text,
    read_reduced_night,
    reduced_science_rows,
)
from ._raw_parts import read_mask, read_sample
from .exceptions import CcdprocExtError, OutputError
from .log import group_by_reason
from .pictures import (
    THUMBNAIL_SIZE,
    HistogramPicture,
    Pictures,
    master_pictures,
    master_statistics,
    sky_picture,
    thumbnail,
)
from .profiles import get_profile
from .raw import read_frame

__all__ = ["REPORT_FOLDER", "REPORT_NAME", "NightReport", "night_html_summary",
           "write_report"]

#: The report's file name in the output folder.
REPORT_NAME = "report.html"
#: The folder of its pictures, beside it.
REPORT_FOLDER = "report"


# --------------------------------------------------------------------------- reading
def _column(table, name):
    return [cell_text(value) for value in table[name]] if name in table.colnames \
        else [""] * len(table)


def _plural(n, word):
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# -------------------------------------------------------------------------- HTML bits
def _remainder(text, reason):
    """What a problem or note says beyond its reason."""
    head, sep, rest = text.partition(": ")
    return rest if sep and head.startswith(reason) else text


def _groups_html(groups, *, css):
    """A list of reasons, "N files: reason", each file named once with what it says."""
    items = []
    for group in groups:
        head = (f'<span class="{css}">{escape(_plural(len(group["files"]), "file"))}: '
                f'{escape(group["reason"])}</span> '
                f'<span class="kind">{escape(group["kind"])}</span>')
        by_text = {}
        for file, text in group["texts"].items():
            by_text.setdefault(_remainder(text, group["reason"]), []).append(file)
        if len(by_text) == 1:
            text, files = next(iter(by_text.items()))
            detail = f"<div>{files_html(files)}</div>"
            if text != group["reason"]:
                detail += f'<div class="detail">{escape(text)}</div>'
        else:
            lines = "".join(f"<li>{files_html(files)}: {escape(text)}</li>"
                            for text, files in by_text.items())
            detail = (f'<ul class="detail">{lines}</ul>' if len(by_text) <= 3 else
                      f'<details><summary>{escape(_plural(len(by_text), "different detail"))}'
                      f'</summary><ul class="detail">{lines}</ul></details>')
        items.append(f"<li>{head}{detail}</li>")
    return f'<ul class="groups">{"".join(items)}</ul>'


# --------------------------------------------------------------- reading pixels
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


_CAPTIONS = ("image, z-scale", "histogram, median in red",
             "large-scale shape: box medians / median")


def _masters_section(night, pictures):
    if len(night.masters) == 0:
        return "<p>No master was built in this night.</p>"
    parts = []
    names = _column(night.masters, "name")
    kinds = _column(night.masters, "kind")
    histograms = HistogramPicture()
    for index, (name, kind) in enumerate(zip(names, kinds, strict=True)):
        path = night.folder / "masters" / f"{name}.fits"
        row = night.masters[index]
        try:
            data, header, mask = _read_master(path)
        except (OSError, ValueError, CcdprocExtError, Warning) as error:
            parts.append(f"<h3>{escape(name)}</h3><p class=\"problem\">cannot be read: "
                         f"{escape(str(error))}</p>")
            continue
        stats = master_statistics(data, mask, kind)
        shown = master_pictures(name, kind, data, stats, pictures, histograms)
        n_frames = cell_text(header.get("NCOMBINE", "")) or (
            cell_text(row["n_frames"]) if "n_frames" in row.colnames else "")
        n_low = cell_text(header.get("NLOWPIX", ""))
        facts = [("kind", escape(kind)), ("frames combined", escape(n_frames)),
                 ("method", escape(cell_text(header.get("COMBMETH", "")))),
                 ("size", f"{data.shape[1]} × {data.shape[0]}"),
                 ("level (median)", _format(stats.level)),
                 ("noise (MAD std)", _format(stats.noise)),
                 ("masked pixels", str(stats.n_masked))]
        for column, label in (("exposure", "exposure (s)"), ("filter", "filter"),
                              ("group", "group")):
            if column in night.masters.colnames and cell_text(row[column]):
                facts.append((label, escape(row[column])))
        if n_low not in ("", "0"):
            facts.append(("pixels below the flat minimum", escape(n_low)))
        if stats.flatness:
            facts.append(("large-scale max/min", _format(stats.flatness["ratio"], 4)))
            facts.append(("large-scale rms", _format(100 * stats.flatness["rms"], 3) + " %"))
        table = table_html(None, [[label, value] for label, value in facts])
        files = cell_text(row["files"]) if "files" in night.masters.colnames else ""
        from_files = (f"<details><summary>made from</summary>"
                      f"{files_html(files.split(','))}</details>" if files else "")
        parts.append(f'<h3 id="master-{escape(name)}">{escape(name)}</h3><div class="master">'
                     f"<div>{table}{from_files}</div>"
                     + "".join(f"<figure>{img_html(pictures, path, alt, width=width)}"
                               f"<figcaption>{escape(caption)}</figcaption></figure>"
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
            rows.append([escape(path.stem), f"cannot be read: {escape(str(error))}", ""])
            continue
        size = int(header.get("NAXIS1", 0)) * int(header.get("NAXIS2", 0))
        rows.append([escape(path.stem)] + [_masked_fraction(header.get(card), size)
                                       for card in ("NHOTPIX", "NLOWFLAT")])
    if not rows:
        return ""
    return ("<h3>Bad-pixel masks</h3>"
            + table_html(["mask", "hot in the master dark", "low in the master flat"], rows,
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
    rows = [[escape(n), escape(group) or "(one group)"]
            + [str(counts[(n, group)].get(t, 0)) for t in columns]
            for n, group in sorted(counts)]
    parts = ["<h3>Frames by type and group</h3>",
             table_html(["night", "group", *columns], rows,
                         numeric=range(2, 2 + len(columns)))]
    n_problem = sum(status != "ok" for status in statuses)
    if n_problem:
        parts.append(f"<p>{_plural(n_problem, 'frame')} could not be used: see "
                     '<a href="#problems">problems</a>.</p>')
    parts.append("<h3>Calibrations of the science frames</h3>")
    parts.append(_science_plan_html(night))
    for note in night.plan.meta.get("notes", []) or []:
        parts.append(f'<p class="note">{escape(note)}</p>')
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
        key = tuple(cell_text(row[k]) if k in plan.colnames else "" for k in keys)
        sets.setdefault(key, []).append(cell_text(row["file"]))
    rows = []
    for key, files in sets.items():
        value = dict(zip(keys, key, strict=True))

        def used(step, value=value):
            if not value[step]:
                return f"<em>none</em>: {escape(value[step + '_rule'])}" if value[step + "_rule"] \
                    else "<em>none</em>"
            return f"<code>{escape(value[step])}</code><br>{escape(value[step + '_rule'])}"

        dark = used("dark")
        if value["dark"] and value["dark_scale"] and cell_number(value["dark_scale"]) != 1:
            dark += f"<br>scaled × {escape(value['dark_scale'])}"
        status = ('<span class="ok">ok</span>' if value["status"] == "ok"
                  else f'<span class="problem">{escape(value["problem_kind"] or value["status"])}'
                  "</span>")
        rows.append([str(len(files)), escape(value["filter"]), escape(value["exposure"]),
                     used("bias"), dark, used("flat"), status,
                     f"<details><summary>{escape(_plural(len(files), 'file'))}</summary>"
                     f"{files_html(files)}</details>"])
    return table_html(["frames", "filter", "exposure (s)", "bias", "dark", "flat", "plan",
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
                     + "".join(f'<li class="note">{escape(notes[i]["note"])}</li>'
                               for i in whole_night) + "</ul>")
    if per_file:
        parts.append("<p>Used, but worth a look:</p>")
        parts.append(_groups_html(group_by_reason(notes[per_file], "note"), css="note"))
    if not parts:
        parts.append("<p>No notes.</p>")
    return "\n".join(parts)


# ---------------------------------------------------------------------- science frames
def _sky_section(night, pictures):
    rows = reduced_science_rows(night)
    measured = [row for row in rows if np.isfinite(row["sky_level"])]
    if not measured:
        return "<p>No science frame was reduced, so there is no sky to show.</p>"
    picture = sky_picture(measured, pictures.path("sky"))
    return (f"{img_html(pictures, picture, 'sky level and noise against time, per filter')}"
            f"<p>Sky level (median, sources masked) and noise of {len(measured)} science "
            f"frame(s), one colour per filter.</p>")


def _raw_thumbnail(night, raw_file, pictures, stem, profile):
    """A thumbnail of the raw frame (kept from an earlier report when the file has not
    changed), or ``None`` when it cannot be read."""
    folder = night.raw_folder
    if folder is None or not (folder / raw_file).is_file():
        return None

    def sample_or_none():
        try:
            return read_sample(folder / raw_file, THUMBNAIL_SIZE, profile)
        except (CcdprocExtError, OSError, ValueError):
            return None

    return thumbnail(pictures.path(f"raw_{stem}"), folder / raw_file, sample_or_none,
                     profile)


def _calibrated_thumbnail(night, output_file, pictures, stem):
    """A thumbnail of a science output, kept from an earlier report when the file has not
    changed; `~ccdproc_ext.FrameReadError` (or `OSError`, `ValueError`) when it cannot
    be read."""
    source = night.folder / output_file
    return thumbnail(pictures.path(f"science_{stem}"), source,
                     lambda: read_sample(source, THUMBNAIL_SIZE))


def _profile(night):
    try:
        return get_profile(night.plan.meta.get("profile", "generic"))
    except CcdprocExtError:
        return None


def _frame_thumbnails(night, raw_file, output_file, pictures, profile):
    """``(after, before)``: the thumbnails of a science frame after calibration and (or
    ``None``) before; the error of an output that cannot be read instead of ``after``."""
    stem = Path(output_file).name.split(".")[0]
    try:
        after = _calibrated_thumbnail(night, output_file, pictures, stem)
    except (CcdprocExtError, OSError, ValueError) as error:
        return error, None
    return after, _raw_thumbnail(night, raw_file, pictures, stem, profile)


def _science_section(night, pictures, drawn):
    rows = reduced_science_rows(night)
    if not rows:
        return "<p>No science frame was reduced.</p>"
    profile = _profile(night) if night.raw_folder is not None else None
    figures = []
    for row in rows:
        key = (row["raw_file"], row["output_file"])
        after, before = drawn[key] if key in drawn else _frame_thumbnails(
            night, *key, pictures, profile)
        if isinstance(after, Exception):
            figures.append(f"<figure><figcaption><code>{escape(row['output_file'])}</code>: "
                           f'<span class="problem">cannot be read: {escape(str(after))}</span>'
                           "</figcaption></figure>")
            continue
        images = img_html(pictures, after, f"{row['raw_file']} calibrated", width=THUMBNAIL_SIZE)
        if before is not None:
            images = (img_html(pictures, before, f"{row['raw_file']} raw", width=THUMBNAIL_SIZE)
                      + images)
        caption = (f"<code>{escape(row['raw_file'])}</code>"
                   + (f" · {escape(row['filter'])}" if row["filter"] else "")
                   + (f" · {escape(row['exposure'])} s" if row["exposure"] else "")
                   + (f" · {escape(row['date_obs'])}" if row["date_obs"] else "")
                   + f"<br>sky {_format(row['sky_level'])} ± {_format(row['sky_noise'])} ADU"
                   + (f"<br>{escape(', '.join(row['masters']))}" if row["masters"] else ""))
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
    reduced = sum(status in REDUCED for status in statuses)
    n_science = _column(night.plan, "type").count("science")
    facts = [("profile", escape(night.plan.meta.get("profile", ""))),
             ("frames", escape(_count_line(_column(night.plan, "type")))),
             ("masters", f"{len(night.masters)}: " + ", ".join(
                 f'<a href="#master-{escape(name)}">{escape(name)}</a>'
                 for name in _column(night.masters, "name"))),
             ("science frames", f"{reduced} of {n_science} reduced"),
             ("problems", f'<a href="#problems">{_plural(len(night.problems), "file")}</a>'
              if len(night.problems) else '<span class="ok">none</span>'),
             ("notes", f'<a href="#notes">{len(night.notes)}</a>')]
    dates = sorted(d for d in _column(night.plan, "date_obs") if d)
    if dates:
        facts.insert(1, ("observed", escape(dates[0]) + (f" to {escape(dates[-1])}"
                                                     if dates[-1] != dates[0] else "")))
    if night.raw_folder is not None:
        facts.insert(1, ("raw frames", f"<code>{escape(night.raw_folder)}</code>"))
    return table_html(None, [[label, value] for label, value in facts])


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
    return NightReport(output_dir).write()


class NightReport:
    """The report of a night, drawn as its outputs are written: `write_report` in parts.

    A night being reduced draws its masters once they are written (`draw_masters`) and
    each science frame's thumbnails once it is calibrated (`draw_frame`), while the next
    frames are calibrated; `write` draws what is left (the sky through the night, and
    whatever was not drawn ahead), then writes the page. The parts are those of
    `write_report`, which reads every file again: drawn ahead, they are the same.

    Parameters
    ----------
    output_dir : str or `pathlib.Path`
        The output folder of the night, its ``plan.ecsv`` and ``masters.ecsv`` written.
    """

    def __init__(self, output_dir):
        self.folder = Path(output_dir)
        self._pictures = None  # made once the folder is known to hold a night
        self._masters = None
        self._frames = {}  # (raw file, output file) -> (after, before)
        self._night = None

    def _read(self):
        """The night's tables as they are now, and the pictures' folder."""
        night = read_reduced_night(self.folder)
        if self._pictures is None:
            self._pictures = Pictures(self.folder / REPORT_FOLDER)
        return night, self._pictures

    def draw_masters(self):
        """Draw the masters of the night (written by now), for `write`."""
        self._night, pictures = self._read()
        self._masters = _masters_section(self._night, pictures)

    def draw_frame(self, raw_file, output_file):
        """Draw the thumbnails of one science frame (its output written by now), for
        `write`.

        Parameters
        ----------
        raw_file : str
            The raw frame, as the plan names it.
        output_file : str
            Its output, relative to the output folder (as ``science.ecsv`` has it).
        """
        if self._night is None:
            self._night, _ = self._read()
        night = self._night
        profile = _profile(night) if night.raw_folder is not None else None
        self._frames[raw_file, output_file] = _frame_thumbnails(
            night, raw_file, output_file, self._pictures, profile)

    def write(self):
        """Write ``report.html``, with what was drawn ahead.

        Returns
        -------
        `pathlib.Path`
            The report, ``output_dir/report.html``.

        Raises
        ------
        OutputError
            If the output folder holds no ``plan.ecsv`` or one of its tables cannot be
            read.
        """
        night, pictures = self._read()
        masters = self._masters if self._masters is not None else \
            _masters_section(night, pictures)
        title = f"Night report: {night.folder.resolve().name}"
        sections = [
            ("summary", "Summary", _summary_section(night)),
            ("problems", "Problems", _problems_section(night)),
            ("notes", "Notes", _notes_section(night)),
            ("plan", "Plan", _plan_section(night)),
            ("masters", "Masters", masters + _bad_pixel_masks_section(night)),
            ("sky", "Sky", _sky_section(night, pictures)),
            ("science", "Science frames", _science_section(night, pictures, self._frames)),
        ]
        path = night.folder / REPORT_NAME
        temporary = path.with_name(f".{REPORT_NAME}.partial")
        temporary.write_text(page_html(title, sections), encoding="utf-8")
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
    lines = [f"<li>frames: {escape(_count_line(_column(result.plan, 'type')))}</li>"]
    if result.dry_run:
        planned = result.plan.meta.get("masters")
        names = _column(planned, "name") if planned is not None else []
        lines.append(f"<li>masters planned: {len(names)} ({escape(', '.join(names))})</li>")
    else:
        names = sorted(name for _, name in result.masters)
        lines.append(f"<li>masters: {len(names)} ({escape(', '.join(names))})</li>")
    science = result.science
    if science is not None and len(science):
        lines.append(f"<li>science frames: {escape(_count_line(_column(science, 'status')))}</li>")
    elif "science" in _column(result.plan, "type"):
        lines.append("<li>science frames: none reduced"
                     + (" (dry run: nothing was written)" if result.dry_run else "") + "</li>")
    for name, reason in (result.unbuilt_masters or {}).items():
        lines.append(f'<li class="problem">master {escape(name)} not built: {escape(reason)}</li>')
    parts = [f"<div><strong>Night</strong>{' (dry run)' if result.dry_run else ''}: "
             f"<code>{escape(result.output_dir)}</code><ul>{''.join(lines)}</ul>"]
    if result.problems is not None and len(result.problems):
        groups = group_by_reason(result.problems, "problem")
        parts.append("<p>Problems:</p><ul>" + "".join(
            f"<li>{escape(_plural(len(g['files']), 'file'))}: {escape(g['reason'])} — "
            f"{files_html(g['files'])}</li>" for g in groups) + "</ul>")
    if result.notes is not None and len(result.notes):
        parts.append(f"<p>{_plural(len(result.notes), 'note')} (see the report).</p>")
    report = Path(result.output_dir) / REPORT_NAME if result.output_dir is not None else None
    if report is not None and report.is_file():
        try:
            href = quote(Path(os.path.relpath(report)).as_posix())
        except ValueError:  # another drive on Windows
            href = report.resolve().as_uri()
        parts.append(f'<p><a href="{html.escape(href, quote=True)}" target="_blank">'
                     f"night report</a> ({escape(report)})</p>")
    elif result.output_dir is not None and not result.dry_run:
        parts.append(f"<p>No report yet: <code>ccdproc-ext report {escape(result.output_dir)}"
                     "</code></p>")
    parts.append("</div>")
    return "".join(parts)
