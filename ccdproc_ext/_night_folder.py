"""A reduced night read back from its output folder: the tables
`~ccdproc_ext.reduce_night` wrote there (``plan.ecsv``, ``masters.ecsv``,
``science.ecsv``, ``problems.ecsv``, ``notes.ecsv``), and their cells as text and numbers.

The night report (`ccdproc_ext.report`) is made from these files alone.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table

from .exceptions import OutputError

__all__ = ["REDUCED", "ReducedNight", "cell_number", "cell_text", "read_reduced_night",
           "reduced_science_rows"]

#: The statuses of a science frame that was reduced (in this run or an earlier one).
REDUCED = ("written", "up to date")


@dataclass
class ReducedNight:
    """The tables of a reduced night, read from its output folder."""

    folder: Path
    plan: Table
    masters: Table
    science: Table
    problems: Table
    notes: Table

    @property
    def raw_folder(self):
        """The folder of the raw frames, as the plan records it, or ``None``."""
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


def read_reduced_night(folder):
    """The tables of the reduced night in ``folder``.

    Parameters
    ----------
    folder : str or `pathlib.Path`
        The output folder of a reduced night.

    Returns
    -------
    `ReducedNight`
        Tables that are absent are empty, with the columns the report reads.

    Raises
    ------
    OutputError
        If ``folder`` holds no ``plan.ecsv`` or one of its tables cannot be read.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise OutputError(f"{folder}: no such folder")
    return ReducedNight(
        folder=folder,
        plan=_read_table(folder / "plan.ecsv", ["file", "type", "status"], required=True),
        masters=_read_table(folder / "masters.ecsv", ["name", "kind", "n_frames"]),
        science=_read_table(folder / "science.ecsv",
                            ["raw_file", "output_file", "sky_level", "sky_noise", "status"]),
        problems=_read_table(folder / "problems.ecsv", ["file", "kind", "problem"]),
        notes=_read_table(folder / "notes.ecsv", ["file", "kind", "note"]),
    )


def cell_text(value):
    """A table cell as text: masked, NaN and empty values are ``""``.

    Examples
    --------
    >>> cell_text(" R "), cell_text(float("nan")), cell_text(None)
    ('R', '', '')
    """
    if value is None or value is np.ma.masked:
        return ""
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return ""
    return str(value).strip()


def cell_number(value):
    """A table cell or header value as a float (NaN when it is not a number).

    Examples
    --------
    >>> cell_number("2.5"), cell_number("")
    (2.5, nan)
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def reduced_science_rows(night):
    """The science frames of a `ReducedNight` that were reduced, with their time and
    filter from the plan.

    Returns
    -------
    list of dict
        One per frame: ``raw_file``, ``output_file``, ``filter``, ``date_obs``,
        ``exposure`` (text, ``""`` when unknown), ``sky_level``, ``sky_noise`` (float)
        and ``masters`` (the names of the masters it used).
    """
    plan = night.plan
    by_file = {cell_text(file): i for i, file in enumerate(plan["file"])}
    rows = []
    for row in night.science:
        if cell_text(row["status"]) not in REDUCED:
            continue
        raw_file = cell_text(row["raw_file"])
        plan_row = plan[by_file[raw_file]] if raw_file in by_file else None

        def from_plan(column, plan_row=plan_row):
            return cell_text(plan_row[column]) if plan_row is not None and \
                column in plan.colnames else ""

        rows.append({"raw_file": raw_file, "output_file": cell_text(row["output_file"]),
                     "filter": from_plan("filter"), "date_obs": from_plan("date_obs"),
                     "exposure": from_plan("exposure"),
                     "sky_level": cell_number(row["sky_level"]),
                     "sky_noise": cell_number(row["sky_noise"]),
                     "masters": [cell_text(row[k]) for k in ("bias", "dark", "flat")
                                 if k in night.science.colnames and cell_text(row[k])]})
    return rows
