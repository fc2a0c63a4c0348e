"""Problems and notes of a night, grouped by reason: used by the night, the command
line and the report.

A `Problem` is a frame that was not reduced (or was left out of a master) and the error
that says why; a `Note` is something worth knowing about a frame that was used, a master
or the whole night. `NightLog` gathers both while a night is reduced, in the order they
are found, and turns them into the tables of `~ccdproc_ext.NightResult`.

For people, the rows of those tables are grouped by reason (`group_by_reason`): twelve
files ``truncated`` are one line naming the files (`grouped_lines`, with an example),
not twelve lines.
"""

import logging
import re
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table

from .exceptions import CcdprocExtError, InternalError, error_class

__all__ = ["FILES_SHOWN", "INTERNAL_ERRORS_LOG", "NIGHT", "NightLog", "Note", "Problem",
           "RecordedLog", "files_shown", "group_by_reason", "grouped_lines",
           "plan_row_error", "replay", "table_of", "without_path"]

logger = logging.getLogger(__name__)

#: The ``file`` of problems and notes about the whole night rather than one frame.
NIGHT = "(night)"

#: Where the tracebacks of unexpected errors are written, in the output folder.
INTERNAL_ERRORS_LOG = "internal-errors.log"

#: Files named in one line of grouped text before "and N more".
FILES_SHOWN = 6


def without_path(err):
    """An error's words without the full path of the file it starts with.

    Parameters
    ----------
    err : Exception or str
        The error (or its words).

    Returns
    -------
    str

    Examples
    --------
    >>> without_path(ValueError("/data/raw/a.fits: truncated"))
    'truncated'
    """
    text = str(err)
    head, sep, rest = text.partition(": ")
    return rest if sep and "/" in head.replace("\\", "/") else text


def plan_row_error(row):
    """The error of a plan row that is not ``ok``: its ``problem`` in words, as the
    class its ``problem_kind`` names (``exceptions.error_class``).

    The plan is a table the user may edit and give back, so the kind travels as the
    name of the class; this is the one place the name becomes the class again.

    Parameters
    ----------
    row : `~astropy.table.Row`
        A row of the plan (`~ccdproc_ext.build_plan`).

    Returns
    -------
    `~ccdproc_ext.CcdprocExtError`
    """
    return error_class(row["problem_kind"] or "CcdprocExtError")(row["problem"])


def table_of(rows, names):
    """A table of text columns ``names`` holding ``rows`` (empty, typed, without any).

    Parameters
    ----------
    rows : list of tuple
    names : tuple of str

    Returns
    -------
    `~astropy.table.Table`
    """
    if not rows:
        return Table(names=names, dtype=("U",) * len(names))
    return Table(rows=rows, names=names)


# ------------------------------------------------------------------------ records
@dataclass(frozen=True)
class Problem:
    """A frame that was not reduced (or was left out of a master), and why."""

    file: str
    error: CcdprocExtError

    @property
    def kind(self):
        """The name of the error's class, e.g. ``"FrameReadError"``."""
        return type(self.error).__name__

    @property
    def text(self):
        """What is wrong, in words, without the file's full path."""
        return without_path(self.error)


@dataclass(frozen=True)
class Note:
    """Something worth knowing about a frame that was used, a master, or the night."""

    file: str
    kind: str
    text: str


class NightLog:
    """The problems and notes of a night, in the order they were found.

    Parameters
    ----------
    strict : bool
        Raise the error of the first problem instead of listing it.
    output_dir : `pathlib.Path` or None, optional
        The night's output folder, where ``internal-errors.log`` is written. Default is
        ``None``.
    """

    def __init__(self, strict, output_dir=None):
        self.strict = strict
        self.output_dir = output_dir
        self.problems = []  # Problem
        self.notes = []  # Note

    def read_plan(self, plan):
        """The plan's problems, its frames' notes and the night's notes."""
        night_notes = list(plan.meta.get("notes", ()))
        for text in night_notes:
            self.note(NIGHT, "NightNote", text)
        for row in plan:
            if row["status"] != "ok":
                # NightCollection has logged the files it could not read
                self.problem(row["file"], plan_row_error(row),
                             logged=row["type"] == "unreadable")
                continue
            # What is said of the whole night is said once, not again for each frame.
            own = [part for part in str(row["notes"]).split("; ")
                   if part and part not in night_notes]
            if own:
                self.note(row["file"], "HeaderNote", "; ".join(own))

    def problem(self, file, error, *, logged=False):
        """A frame that is not reduced: raise in strict mode, else list it (and log it,
        unless it was ``logged`` already)."""
        problem = Problem(str(file), error)
        if self.strict:
            raise type(error)(f"{file}: {problem.text}")
        if all((p.file, p.kind, p.text) != (problem.file, problem.kind, problem.text)
               for p in self.problems):
            self.problems.append(problem)
            if not logged:  # said once, grouped, in the result's summary
                logger.info("%s: %s", file, problem.text)

    def note(self, file, kind, text):
        """Something worth knowing about ``file`` (listed once)."""
        note = Note(str(file), kind, str(text))
        if note not in self.notes:
            self.notes.append(note)

    def unexpected(self, err, what):
        """``err`` itself if it is the package's own; otherwise an `~ccdproc_ext.InternalError`, its
        traceback logged and written to ``internal-errors.log`` in the output folder."""
        if isinstance(err, CcdprocExtError) and not isinstance(err, InternalError):
            return err
        details = getattr(err, "details", None) or "".join(
            traceback.format_exception(type(err), err, err.__traceback__))
        if not isinstance(err, InternalError):
            err = InternalError(f"unexpected {type(err).__name__}: {err}")
        logger.debug("%s: traceback of an unexpected error:\n%s", what, details)
        if self.output_dir is not None and self.output_dir.is_dir():
            with open(self.output_dir / INTERNAL_ERRORS_LOG, "a", encoding="utf-8") as out:
                out.write(f"--- {what}\n{details}\n")
        return err

    def problems_table(self):
        """The problems: ``file``, ``kind`` and ``problem`` (`~astropy.table.Table`)."""
        return table_of([(p.file, p.kind, p.text) for p in self.problems],
                        ("file", "kind", "problem"))

    def notes_table(self):
        """The notes: ``file``, ``kind`` and ``note`` (`~astropy.table.Table`)."""
        return table_of([(n.file, n.kind, n.text) for n in self.notes],
                        ("file", "kind", "note"))


class RecordedLog(NightLog):
    """A `NightLog` kept where a task runs (a worker of an executor), whose problems and
    notes are also recorded as data, in order, to be said again in the night's own log by
    `replay`.

    Strict mode raises there, as in the night's log; an unexpected error's traceback is
    written to ``internal-errors.log`` by the task itself (the output folder is seen by
    the workers).
    """

    def __init__(self, strict, output_dir=None):
        super().__init__(strict, output_dir)
        self.records = []  # ("problem" | "note", args, keyword arguments)

    def problem(self, file, error, *, logged=False):
        """Record the problem, then say it as `NightLog.problem` does."""
        self.records.append(("problem", (str(file), error), {"logged": logged}))
        super().problem(file, error, logged=logged)

    def note(self, file, kind, text):
        """Record the note, then say it as `NightLog.note` does."""
        self.records.append(("note", (str(file), kind, str(text)), {}))
        super().note(file, kind, text)


def replay(records, log):
    """Say in ``log`` the problems and notes a `RecordedLog` recorded, in their order.

    Parameters
    ----------
    records : list
        The ``records`` of a `RecordedLog`.
    log : `NightLog`
    """
    for method, args, kwargs in records:
        getattr(log, method)(*args, **kwargs)


# ------------------------------------------------------------------------- grouping
def _text(value):
    """A table cell as text: masked, NaN and empty values are ``""``."""
    if value is None or value is np.ma.masked:
        return ""
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return ""
    return str(value).strip()


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

