"""Plans the user edits: written by a dry run, changed by hand, executed by
`~ccdproc_ext.reduce_night`.

A plan is the table `~ccdproc_ext.build_plan` returns, one row per raw frame. Written to
ECSV (`write_plan`, or the ``plan.ecsv`` every reduction leaves in its output folder),
it can be edited in any text editor and given back to
``reduce_night(..., plan="plan.ecsv")``. Three edits are understood:

- **a row removed**: that frame is left out of the night (of its master, or not
  calibrated);
- **its type changed** (``type`` column: ``bias``, ``dark``, ``flat`` or ``science``):
  the frame is read as that type, as with ``image_types={file: type}``;
- **the master it uses changed** (``bias``, ``dark`` or ``flat`` column): to another
  master of the plan (its name, ``flat_R_01``, or a library master's,
  ``flat_R_01@2024-03-01``), or to an empty value to leave the step out (in a row whose
  type was changed, an empty cell is the old type's "not needed" and leaves the choice
  to the rules).

The night is then planned again with those frames and types, and every master a row
names in place of the automatic choice is checked by the same rules (shape, binning, the
profile's ``match_keywords``, the filter of a flat, the exposure time of a dark or its
scaling): a master that breaks them is a `~ccdproc_ext.CalibrationMatchError` naming the
row and the column, before anything is written. What the user changed is in the plan's
``edit`` column, and in the header of every science frame it concerns (``PLANEDIT``).

Other columns (rules, distances, notes) are recomputed; editing them changes nothing.
"""

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io.ascii import InconsistentTableError
from astropy.table import Table

from .collection import NightCollection
from .exceptions import CalibrationMatchError
from .profiles import IMAGE_TYPES

__all__ = ["EDIT_CARD", "PlanEdits", "read_plan", "write_plan"]

#: The header card of a science frame whose plan the user changed.
EDIT_CARD = "PLANEDIT"

#: Types of rows the planner gives frames it cannot use: kept as they are.
_PROBLEM_TYPES = ("unknown", "unreadable")

_CALIBRATIONS = ("bias", "dark", "flat")


def write_plan(plan, path):
    """Write ``plan`` to ``path`` as ECSV, to edit (without its table of masters, which
    is planned again).

    Parameters
    ----------
    plan : `~astropy.table.Table`
        A plan (`~ccdproc_ext.build_plan`, ``NightResult.plan``).
    path : str or `pathlib.Path`
        The file; it is replaced if it exists.
    """
    table = plan.copy(copy_data=False)
    table.meta = {k: v for k, v in plan.meta.items() if k != "masters"}
    table.write(path, format="ascii.ecsv", overwrite=True)


def read_plan(plan):
    """A plan as a table: ``plan`` itself, or read from an ECSV (or any table) file.

    Raises
    ------
    CalibrationMatchError
        If the file cannot be read (a row with more or fewer values than the plan has
        columns is named), lacks the ``file`` or ``type`` column, or has no row.
    """
    if isinstance(plan, Table):
        table = plan
    else:
        table = _read_table(plan)
    missing = [name for name in ("file", "type") if name not in table.colnames]
    if missing:
        raise CalibrationMatchError(f"{_name(plan)}: the plan has no column "
                                    f"{', '.join(repr(m) for m in missing)}")
    if not len(table):
        raise CalibrationMatchError(f"{_name(plan)}: the plan has no row: nothing to "
                                    "reduce (a plan lists the frames to reduce, one per row)")
    return table


def _read_table(path):
    """The table of a plan file; whatever astropy raises is one line naming the file."""
    try:
        return Table.read(path, format="ascii.ecsv" if str(path).endswith(".ecsv") else None)
    except InconsistentTableError as err:
        words = _ragged_row(path) or _first_line(err)
        raise CalibrationMatchError(f"{path}: cannot be read as a plan: {words}") from None
    except (OSError, ValueError) as err:
        raise CalibrationMatchError(f"{path}: cannot be read as a plan: "
                                    f"{_first_line(err)}") from None
    except Exception as err:  # astropy's readers raise many types on bad text
        raise CalibrationMatchError(f"{path}: cannot be read as a plan "
                                    f"({type(err).__name__}: {_first_line(err)})") from None


def _first_line(err):
    """An error's first line: astropy adds lines of every value read."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _ragged_row(path):
    """The first row of an ECSV plan whose number of values is not its number of
    columns, in words (``row 2 (bias_002.fits), line 44: 27 values for the 30
    columns``), or ``None`` when none is found.

    ECSV rows are values separated by spaces, quoted with ``"`` where needed; the first
    line that is not a ``#`` comment holds the column names.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    numbered = [(number, line) for number, line in enumerate(lines, start=1)
                if line.strip() and not line.lstrip().startswith("#")]
    try:
        names, *rows = csv.reader((line for _, line in numbered), delimiter=" ",
                                  quotechar='"', skipinitialspace=True)
    except (ValueError, csv.Error):  # no line, or quotes that do not close
        return None
    line_numbers = [number for number, _ in numbered[1:]]
    # (a quote left open joins lines: there are then fewer rows than lines)
    for row_number, (line_number, values) in enumerate(zip(line_numbers, rows, strict=False),
                                                       start=1):
        if len(values) != len(names):
            return (f"row {row_number} ({values[0] if values else 'empty'}), line "
                    f"{line_number}: {len(values)} values for the {len(names)} columns "
                    "of the plan")
    return None


def _name(plan):
    return "the plan" if isinstance(plan, Table) else str(plan)


def _text(value):
    """A cell as text: a masked or missing value is ``""``."""
    if value is None or np.ma.is_masked(value):
        return ""
    return str(value).strip()


@dataclass
class PlanEdits:
    """What an edited plan asks for, read against the night's frames.

    Attributes
    ----------
    types : dict
        ``file -> type`` of the frames whose type the plan changes.
    removed : set
        Files of the night that the plan no longer lists.
    choices : dict
        ``file -> {calibration: (row number, master name)}`` of every listed master, for
        `~ccdproc_ext.build_plan`'s ``choices``.
    """

    types: dict = field(default_factory=dict)
    removed: set = field(default_factory=set)
    choices: dict = field(default_factory=dict)

    @classmethod
    def read(cls, plan, collection):
        """The edits of ``plan`` (a table or a file) to the night of ``collection``.

        Raises
        ------
        CalibrationMatchError
            A row naming a file the night does not have, listed twice, or with a type
            that is not one, naming the row and the column.
        """
        table = read_plan(plan)
        known = {str(f): str(t) for f, t in zip(collection.frames["file"],
                                                collection.frames["type"], strict=True)}
        known.update({p["file"]: "unreadable" for p in collection.problems})
        edits, seen = cls(), {}
        where = _name(plan)
        for number, row in enumerate(table, start=1):
            file = _text(row["file"])
            if file not in known:
                raise CalibrationMatchError(
                    f"{where}: row {number}, column 'file': {file!r} is not a frame of this "
                    "night")
            if file in seen:
                raise CalibrationMatchError(
                    f"{where}: row {number}, column 'file': {file} is listed twice (rows "
                    f"{seen[file]} and {number})")
            seen[file] = number
            image_type = _text(row["type"]).lower()
            if image_type not in (*IMAGE_TYPES, *_PROBLEM_TYPES):
                raise CalibrationMatchError(
                    f"{where}: row {number} ({file}), column 'type': {image_type!r} is not a "
                    f"frame type; expected one of {', '.join(IMAGE_TYPES)}")
            if image_type in IMAGE_TYPES and image_type != (known[file] or "unknown"):
                edits.types[file] = image_type
            chosen = {c: (number, _text(row[c])) for c in _CALIBRATIONS if c in table.colnames}
            if file in edits.types:
                # Empty cells were the old type's "not needed", not "leave the step out".
                chosen = {c: choice for c, choice in chosen.items() if choice[1]}
            if chosen:
                edits.choices[file] = chosen
        edits.removed = set(known) - set(seen)
        return edits

    def apply(self, collection):
        """The night as the plan has it: frames retyped (read again with
        ``image_types``) and removed ones left out. ``collection`` is not changed."""
        if self.types:
            files = [*collection.files, *(p["file"] for p in collection.problems)]
            collection = NightCollection(
                collection.location or None, profile=collection.profile,
                image_types={**collection.image_type_overrides, **self.types},
                filenames=files)
        if self.removed:
            # The same night without the frames the user removed.
            files = [*collection.files, *(p["file"] for p in collection.problems)]
            collection = NightCollection(
                collection.location or None, profile=collection.profile,
                image_types=collection.image_type_overrides,
                filenames=[f for f in dict.fromkeys(files) if str(f) not in self.removed])
        return collection

    def mark(self, plan):
        """Write the type changes into the plan's ``edit`` column."""
        if not self.types:
            return plan
        edits = []
        for file, edit in zip(plan["file"], plan["edit"], strict=True):
            was = self.types.get(str(file))
            if was is not None:
                edit = "; ".join(e for e in (f"type: {was} (set in the plan)", str(edit)) if e)
            edits.append(str(edit))
        plan["edit"] = edits
        return plan
