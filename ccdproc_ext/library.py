"""A calibration library: the masters of many nights, found again for nights without their own.

`CalibrationLibrary` is one SQLite file (the standard library's `sqlite3`, no server)
with one table of masters. Each row records what the plan matches a master by: its kind,
the profile, the group keys (raw frame shape, binning, the profile's ``match_keywords``
as ``KEY=value`` pairs), the temperature (the set point when the frames had one), the
exposure time (darks) and the filter (flats); the dates of its first and last frames; the
number of frames; where the file is and its BLAKE2b checksum.

Paths are stored relative to the library file's folder (and absolute as well), so a
library moved together with its masters still finds them, and so does a library moved
alone. A master whose file is missing or whose bytes changed since it was registered is
never used: `~CalibrationLibrary.find` and the plan skip it and say so, and
`~CalibrationLibrary.verify` lists every such master.

Several processes may write one library at once (two nights reduced side by side): every
change is one transaction, and a writer that finds the database locked waits and tries
again. The library is only read and written by the process that plans a night, never by
the processes that calibrate its frames.
"""

import copy
import math
import os
import random
import sqlite3
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time

from .exceptions import CalibrationMatchError, HeaderError, LibraryError
from .matcher import (
    MASTER_COLUMNS,
    MasterCandidates,
    choose_master,
    describe_group,
    masters_table,
)
from .profiles import get_profile
from .raw import file_checksum

__all__ = ["DEFAULT_VALIDITY", "CalibrationLibrary", "LibraryMasterUnusable",
           "LibraryMasters", "night_date", "planned_master_keys", "validity_text"]

#: How long (days) a master of each kind stays valid for frames of another night:
#: ``None`` is no limit.
DEFAULT_VALIDITY = {"bias": 30.0, "dark": 30.0, "flat": 3.0}

#: How long one attempt waits for a lock (s), and how many attempts are made.
_TIMEOUT = 10.0
_ATTEMPTS = 12

_SCHEMA = """
CREATE TABLE IF NOT EXISTS masters (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    profile TEXT NOT NULL,
    name TEXT NOT NULL,
    shape TEXT NOT NULL,
    xbin INTEGER NOT NULL,
    ybin INTEGER NOT NULL,
    agree TEXT NOT NULL,
    temperature REAL,
    exposure REAL,
    filter TEXT NOT NULL,
    mjd_first REAL,
    mjd_last REAL,
    mjd REAL,
    n_frames INTEGER NOT NULL,
    path TEXT NOT NULL UNIQUE,
    absolute_path TEXT NOT NULL,
    checksum TEXT NOT NULL,
    added TEXT NOT NULL
)
"""

#: The columns of `CalibrationLibrary.table`, in order, and their types.
COLUMNS = {
    "id": "i8", "kind": "U", "profile": "U", "name": "U", "shape": "U", "xbin": "i8",
    "ybin": "i8", "agree": "U", "temperature": "f8", "exposure": "f8", "filter": "U",
    "mjd_first": "f8", "mjd_last": "f8", "mjd": "f8", "n_frames": "i8", "path": "U",
    "absolute_path": "U", "checksum": "U", "added": "U",
}

_KINDS = ("bias", "dark", "flat")


def _number(value):
    """A stored number, NaN for NULL (SQLite stores NaN as NULL)."""
    return math.nan if value is None else float(value)


def _stored(value):
    value = float(value) if value is not None else math.nan
    return value if math.isfinite(value) else None


def night_date(mjd):
    """The UTC date of an MJD, ``2024-03-01``; ``"undated"`` when unknown."""
    if mjd is None or not np.isfinite(mjd):
        return "undated"
    return Time(float(mjd), format="mjd").isot[:10]


class CalibrationLibrary:
    """Masters of many nights in one SQLite file, found by the plan's rules.

    Parameters
    ----------
    path : str or `pathlib.Path`
        The library file; created (with its folder) on the first change.
    validity : dict or None, optional
        How long (days) a master stays valid, by kind, over `~ccdproc_ext.library.DEFAULT_VALIDITY`
        (``{"flat": 7}``); ``None`` for a kind is no limit.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> library = CalibrationLibrary(pathlib.Path(tempfile.mkdtemp()) / "calibrations.db")
    >>> len(library.table())
    0
    >>> library.validity
    {'bias': 30.0, 'dark': 30.0, 'flat': 3.0}
    """

    def __init__(self, path, *, validity=None):
        self.path = Path(path).absolute()
        self.validity = dict(DEFAULT_VALIDITY)
        for kind, days in dict(validity or {}).items():
            if kind not in _KINDS:
                raise LibraryError(f"validity: {kind!r} is not a kind of master; expected "
                                   f"one of {', '.join(_KINDS)}")
            if days is not None and (isinstance(days, bool) or not isinstance(days, int | float)
                                     or not days >= 0):
                raise LibraryError(f"validity[{kind!r}] = {days!r}: expected a number of "
                                   "days (0 or more) or None for no limit")
            self.validity[kind] = None if days is None else float(days)

    def __repr__(self):
        return f"CalibrationLibrary({str(self.path)!r})"

    @classmethod
    def of(cls, library, *, validity=None):
        """``library`` itself, or the library at that path."""
        if isinstance(library, CalibrationLibrary):
            if validity:
                return cls(library.path, validity={**library.validity, **validity})
            return library
        return cls(library, validity=validity)

    # ------------------------------------------------------------- the database
    def _connect(self, *, create):
        if not create and not self.path.exists():
            return None
        if create:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise LibraryError(f"{self.path}: cannot create its folder: "
                                   f"{err.strerror or err}") from None
        try:
            # isolation_level=None: transactions are begun explicitly below.
            connection = sqlite3.connect(self.path, timeout=_TIMEOUT, isolation_level=None)
        except sqlite3.Error as err:
            raise LibraryError(f"{self.path}: cannot open the library: {err}") from None
        connection.row_factory = sqlite3.Row
        return connection

    def _run(self, work, *, write):
        """Run ``work(connection)`` in one transaction, again when the database is locked.

        SQLite waits up to the timeout for a lock itself; a writer can still be told
        "database is locked" at once when two transactions would deadlock, so the whole
        transaction is retried a bounded number of times, after a short random pause.
        """
        last = None
        for attempt in range(_ATTEMPTS):
            connection = self._connect(create=write)
            if connection is None:  # reading a library that does not exist yet: empty
                return work(None)
            try:
                connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                if write:
                    connection.execute(_SCHEMA)
                result = work(connection)
                connection.execute("COMMIT")
                return result
            except sqlite3.OperationalError as err:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                if "locked" not in str(err) and "busy" not in str(err):
                    if "no such table" in str(err):
                        return work(None)
                    raise LibraryError(f"{self.path}: {err}") from None
                last = err
                time.sleep(0.05 * (attempt + 1) * (1 + random.random()))
            except sqlite3.DatabaseError as err:
                raise LibraryError(f"{self.path}: not a calibration library ({err})") from None
            finally:
                connection.close()
        raise LibraryError(f"{self.path}: {last} (tried {_ATTEMPTS} times)")

    # -------------------------------------------------------------------- paths
    def _stored_path(self, path):
        """The path as stored: relative to the library's folder."""
        return Path(os.path.relpath(Path(path).absolute(), self.path.parent)).as_posix()

    def resolve(self, row):
        """Where the master of ``row`` (a row of `table`) is now: its path relative to the
        library when that file exists, else its absolute path, else the relative one."""
        relative = self.path.parent / str(row["path"])
        if relative.is_file():
            return Path(os.path.normpath(relative))
        absolute = Path(str(row["absolute_path"]))
        return absolute if absolute.is_file() else Path(os.path.normpath(relative))

    # ------------------------------------------------------------------ changes
    def add(self, path, *, profile=None, **keys):
        """Register a master file (again: its row is updated).

        The keys are read from the master's header (``MASTTYPE``, ``PROFILE``,
        ``NCOMBINE``, and through the profile the binning, ``match_keywords``, set
        temperature, exposure time, filter and date of its first frame); any of them can
        be given instead: ``kind``, ``shape`` (of the raw frames, ``"2080x2048"``),
        ``xbin``, ``ybin``, ``agree``, ``temperature``, ``exposure``, ``filter``,
        ``mjd_first``, ``mjd_last``, ``mjd``, ``n_frames``, ``name``.

        Parameters
        ----------
        path : str or `pathlib.Path`
            The master file.
        profile : str, path, `~ccdproc_ext.InstrumentProfile` or None, optional
            The camera; default: the header's ``PROFILE``, else ``"generic"``.
        **keys
            Keys that the header does not hold (a master built from trimmed frames does
            not say the shape of the raw frames) or that are known better.

        Returns
        -------
        dict
            The row registered.

        Raises
        ------
        LibraryError
            If the file cannot be read.
        HeaderError
            If the header lacks a key that is not given (naming the file and the key).
        """
        (row,) = self.add_many([(path, keys)], profile=profile)
        return row

    def _row_of(self, path, profile, keys):
        unknown = set(keys) - set(COLUMNS) - {"profile"}
        if unknown:
            raise TypeError(f"add() got unknown keys: {', '.join(sorted(unknown))}")
        try:
            header = fits.getheader(path)
            checksum = file_checksum(path)
        except (OSError, ValueError) as err:
            raise LibraryError(f"{path}: cannot read the master: "
                               f"{getattr(err, 'strerror', None) or err}") from None
        profile = get_profile(profile or str(header.get("PROFILE", "")).strip() or "generic")
        row = dict(keys)
        row.setdefault("kind", str(header.get("MASTTYPE", "")).strip().lower())
        if row["kind"] not in _KINDS:
            raise HeaderError(f"{path}: MASTTYPE = {header.get('MASTTYPE')!r}: not a master "
                              "bias, dark or flat (give kind=...)")
        row.setdefault("name", path.stem)
        if "shape" not in row:
            if any(key in header for key in ("TRIM", "TRIMIM")):
                raise HeaderError(f"{path}: the shape of the raw frames is not in the header "
                                  "of a trimmed master (give it: shape='ROWSxCOLUMNS')")
            row["shape"] = f"{header.get('NAXIS2', 0)}x{header.get('NAXIS1', 0)}"
        if "xbin" not in row or "ybin" not in row:
            row["xbin"], row["ybin"] = profile.binning(header, path=path)
        if "agree" not in row:
            row["agree"] = ",".join(
                f"{key}={str(header[key]).strip() if key in header else ''}"
                for key in profile.match_keywords)
        if "temperature" not in row:
            notes = []
            value = profile.set_temperature(header, path=path, notes=notes)
            if value is None:
                value = profile.temperature(header, path=path, notes=notes)
            row["temperature"] = value
        if "exposure" not in row:
            try:
                row["exposure"] = profile.exposure_time(header, path=path)
            except HeaderError:
                if row["kind"] == "dark":
                    raise
                row["exposure"] = 0.0 if row["kind"] == "bias" else math.nan
        if "filter" not in row:
            row["filter"] = (profile.filter_name(header, path=path, notes=[]) or "") \
                if row["kind"] == "flat" else ""
        if "mjd_first" not in row:
            date = profile.date_obs(header, path=path, notes=[])
            row["mjd_first"] = math.nan if date is None else float(date.mjd)
        row.setdefault("mjd_last", row["mjd_first"])
        if "mjd" not in row:
            first, last = _number(_stored(row["mjd_first"])), _number(_stored(row["mjd_last"]))
            row["mjd"] = (first + last) / 2
        row.setdefault("n_frames", int(header.get("NCOMBINE", 1)))
        row.update(
            profile=profile.name, path=self._stored_path(path), absolute_path=str(path),
            checksum=checksum, added=Time.now().isot[:19],
            kind=str(row["kind"]), shape=str(row["shape"]), agree=str(row["agree"]),
            filter=str(row["filter"]), name=str(row["name"]), xbin=int(row["xbin"]),
            ybin=int(row["ybin"]), n_frames=int(row["n_frames"]))
        for key in ("temperature", "exposure", "mjd_first", "mjd_last", "mjd"):
            row[key] = _stored(row[key])
        return row

    def add_many(self, entries, *, profile=None):
        """Register several masters, ``[(path, keys), ...]``, in one transaction."""
        rows = [self._row_of(Path(path).absolute(), profile, dict(keys))
                for path, keys in entries]
        names = [n for n in COLUMNS if n != "id"]

        def insert(connection):
            for row in rows:
                connection.execute(
                    f"INSERT INTO masters ({', '.join(names)}) VALUES "
                    f"({', '.join('?' for _ in names)}) ON CONFLICT(path) DO UPDATE SET "
                    + ", ".join(f"{n} = excluded.{n}" for n in names if n != "path"),
                    [row[n] for n in names])
        self._run(insert, write=True)
        return rows

    def remove(self, path):
        """Forget a master (its file is left alone); returns how many rows were removed.

        ``path`` is the master file, or its path as `table` lists it.
        """
        stored = self._stored_path(path)

        def delete(connection):
            return connection.execute(
                "DELETE FROM masters WHERE path = ? OR path = ? OR absolute_path = ?",
                (stored, str(path), str(Path(path).absolute()))).rowcount
        return self._run(delete, write=True)

    # ------------------------------------------------------------------ reading
    def table(self, kind=None, *, profile=None):
        """Every master, one row each (see ``COLUMNS``), optionally of one kind and
        profile; NaN for an unknown number."""
        def select(connection):
            if connection is None:
                return []
            query, args = "SELECT * FROM masters", []
            where = [(name, value) for name, value in (("kind", kind), ("profile", profile))
                     if value is not None]
            if where:
                query += " WHERE " + " AND ".join(f"{name} = ?" for name, _ in where)
                args = [value for _, value in where]
            return [dict(row) for row in connection.execute(query + " ORDER BY id", args)]
        rows = self._run(select, write=False)
        names = tuple(COLUMNS)
        if not rows:
            return Table(names=names, dtype=[COLUMNS[n] for n in names])
        for row in rows:
            for name, dtype in COLUMNS.items():
                if dtype == "f8":
                    row[name] = _number(row[name])
        return Table(rows=[[row[n] for n in names] for row in rows], names=names)

    def check(self, row):
        """What is wrong with the file of ``row``, in words; ``""`` when it can be used."""
        path = self.resolve(row)
        if not path.is_file():
            return f"{path}: file missing"
        try:
            checksum = file_checksum(path)
        except OSError as err:
            return f"{path}: cannot be read: {err.strerror or err}"
        if checksum != row["checksum"]:
            return (f"{path}: changed since it was registered (checksum "
                    f"{checksum[:16]}, registered {str(row['checksum'])[:16]})")
        return ""

    def verify(self):
        """Every problem of the library, in words: files missing or changed. Empty when
        every master is there with the bytes it was registered with."""
        return [problem for row in self.table() if (problem := self.check(row))]

    def find(self, kind, *, profile="generic", shape, xbin=1, ybin=1, agree="",
             mjd, exposure=None, filter=None, dark_tolerance=0.5, validity="default"):
        """The master of ``kind`` for a frame, chosen by the plan's rules, or ``None``.

        The frame is given by its keys: the group keys (``shape`` of the raw frames,
        binning, ``agree``, the profile's ``match_keywords`` as ``KEY=value`` pairs),
        its date (``mjd``), ``exposure`` (darks) and ``filter`` (flats). The master is
        chosen as the plan (`~ccdproc_ext.build_plan` with ``library=``) chooses one
        (`~ccdproc_ext.matcher.choose_master`), without a temperature and without
        scaling a dark: of the same group, within the validity window of its kind, a
        dark within ``dark_tolerance`` (s) of ``exposure`` (the nearest exposure), a
        flat of the same filter, then the nearest in time whose file is there
        unchanged.

        Returns
        -------
        `~astropy.table.Row` or None
            The master's row of `table`.
        """
        library = self if validity == "default" else \
            CalibrationLibrary.of(self, validity={kind: validity})
        night = MasterCandidates(masters_table([]), {}, get_profile(profile),
                                 dark_tolerance=dark_tolerance)
        frame = {"shape": str(shape), "xbin": int(xbin), "ybin": int(ybin),
                 "agree": str(agree), "mjd": float(mjd), "filter": str(filter or ""),
                 "exposure": math.nan if exposure is None else float(exposure)}
        masters = LibraryMasters(library, night)
        try:
            master, _ = masters.choose(kind, frame, {"temperature": math.nan,
                                                     "has_bias": False})
        except CalibrationMatchError:
            return None
        return masters.candidates(kind)[2][str(master["name"])]


class LibraryMasterUnusable(CalibrationMatchError):
    """The library masters that fit a frame are there, but fail verification (file
    missing or changed): a calibration missing, not a step to leave out."""


class LibraryMasters:
    """The masters of a `CalibrationLibrary` as the matcher sees them.

    Candidates of each kind are read once (for the profile of ``night``), as a table of
    masters like a night's own; a frame sees those within the validity window of its
    kind, and `choose` picks among them with `~ccdproc_ext.matcher.choose_master`. The
    master chosen is checked (file there, checksum unchanged) before it is taken: one
    that fails is refused, said in ``problems``, and the next is chosen.

    Parameters
    ----------
    library : `CalibrationLibrary`, str or `pathlib.Path`
    night : `~ccdproc_ext.matcher.MasterCandidates`
        The night (its profile and the rules' settings) the masters are chosen for;
        the masters chosen are added to its ``facts``.
    """

    def __init__(self, library, night):
        self.library = CalibrationLibrary.of(library)
        self.night = night
        self.tables = {}  # kind -> (masters table, facts, {name: library row})
        self.refused = set()  # names
        self.checked = {}  # name -> problem in words ("" when usable)
        self.problems = []  # (path, words)
        self.adopted = {}  # name -> row of the masters table, in the order chosen

    def candidates(self, kind):
        """``(masters table, facts, {name: library row})`` of ``kind``, read once."""
        if kind not in self.tables:
            rows, facts, by_name = [], {}, {}
            for entry in self.library.table(kind, profile=self.night.profile.name):
                name = f"{entry['name']}@{night_date(entry['mjd'])}"
                if name in by_name:
                    name += f"#{entry['id']}"
                key = (str(entry["shape"]), int(entry["xbin"]), int(entry["ybin"]),
                       str(entry["agree"]))
                by_name[name] = entry
                facts[name] = {"key": key, "temperatures": np.array([entry["temperature"]]),
                               "files": []}
                rows.append({"name": name, "kind": kind, "group": describe_group(key),
                             "group_key": repr(key), "night": -1,
                             "exposure": entry["exposure"], "filter": entry["filter"],
                             "temperature": entry["temperature"], "mjd": entry["mjd"],
                             "n_frames": entry["n_frames"], "files": "",
                             "origin": "library",
                             "path": str(self.library.resolve(entry))})
            self.tables[kind] = (masters_table(rows), facts, by_name)
        return self.tables[kind]

    def view(self, kind, frame, refused=()):
        """A night-like view whose masters are the library's for ``frame`` (within the
        validity window), but those ``refused``."""
        table, facts, by_name = self.candidates(kind)
        days = self.library.validity.get(kind)
        distance = np.abs(np.asarray(table["mjd"], dtype=float) - float(frame["mjd"]))
        keep = [str(name) not in refused and (days is None or bool(d <= days))
                for name, d in zip(table["name"], distance, strict=True)]
        view = copy.copy(self.night)
        view.masters = table[np.array(keep, dtype=bool)] if len(table) else table
        view.facts = facts
        view.present = set()
        view.buildable = {}
        view.entries = by_name
        return view

    def view_of(self, name):
        """A view holding only the library master ``name`` (of this plan or not)."""
        for kind in ("bias", "dark", "flat"):
            table, facts, by_name = self.candidates(kind)
            if name in by_name:
                view = copy.copy(self.night)
                view.masters = table[table["name"] == name]
                view.facts, view.present, view.buildable = facts, {kind}, {}
                view.entries = by_name
                return view
        return None

    def choose(self, kind, frame, options):
        """The nearest usable library master of ``kind`` for ``frame``, or a
        `~ccdproc_ext.CalibrationMatchError` saying why there is none: `LibraryMasterUnusable` when
        the masters that fit the frame are there but cannot be verified."""
        while True:
            view = self.view(kind, frame, self.refused)
            try:
                master, details = self._nearest(kind, frame, view, options)
            except CalibrationMatchError:
                unusable = self._nearest_refused(kind, frame, options)
                if unusable is None:
                    raise
                raise LibraryMasterUnusable(
                    f"library master {unusable} cannot be used: "
                    f"{self.checked[unusable].partition(': ')[2]}; no other {kind} of the "
                    "library fits the frame") from None
            name = str(master["name"])
            problem = self.check(name, view.entries[name])
            if problem:
                continue
            self.adopt(master, view)
            rest = [part for part in details["rule"].split(", ")
                    if part not in ("same group", "nearest in time")]
            details["rule"] = self.rule_of(name, master, frame, "; ".join(rest))
            return master, details

    def _nearest(self, kind, frame, view, options):
        """`_choose` among the masters of ``view``; its error says it is the library's."""
        days = self.library.validity.get(kind)
        if not len(view.masters):
            when = "" if days is None else f" within {validity_text(days)}"
            if days is not None and not np.isfinite(frame["mjd"]):
                when = " (the frame has no date to compare)"
            raise CalibrationMatchError(f"library {self.library.path.name}: no {kind} "
                                        f"of profile {self.night.profile.name}{when}")
        try:
            return choose_master(kind, frame, view, **options)
        except CalibrationMatchError as err:
            raise CalibrationMatchError(
                f"library {self.library.path.name} ({validity_text(days)}): {err}") \
                from None

    def _nearest_refused(self, kind, frame, options):
        """The name of the master the library would give ``frame`` were the refused
        ones (file missing or changed) usable, or ``None`` when none of them fits it."""
        table = self.candidates(kind)[0]
        usable = {str(name) for name in table["name"] if str(name) not in self.refused}
        view = self.view(kind, frame, usable)
        if not len(view.masters):
            return None
        try:
            master, _ = choose_master(kind, frame, view, **options)
        except CalibrationMatchError:
            return None
        return str(master["name"])

    def check(self, name, entry):
        """Whether the file of a library master can be used; refuses it when not."""
        if name not in self.checked:
            self.checked[name] = self.library.check(entry)
            if self.checked[name]:
                self.refused.add(name)
                self.problems.append((str(self.library.resolve(entry)),
                                      f"library master {entry['name']} not used: "
                                      f"{self.checked[name].partition(': ')[2]}"))
        return self.checked[name]

    def adopt(self, master, view):
        """Take library master ``master`` (of ``view``) into the plan's masters."""
        name = str(master["name"])
        if name not in self.adopted:
            self.adopted[name] = {column: master[column] for column in MASTER_COLUMNS}
            self.night.facts[name] = view.facts[name]

    @staticmethod
    def rule_of(name, master, frame, rest):
        """The rule of a library master in words: ``"library: bias_01 of 2024-03-01, 4.2
        days before"`` and ``rest``, the rules that chose it."""
        stem, _, date = name.partition("@")
        rule = f"library: {stem} of {date.partition('#')[0]}"
        if frame is not None and np.isfinite(frame["mjd"]) and np.isfinite(master["mjd"]):
            days = float(frame["mjd"] - master["mjd"])
            rule += f", {abs(days):.1f} days {'before' if days >= 0 else 'after'}"
        return rule + (f" ({rest})" if rest else "")


def validity_text(days):
    """A validity window in words: ``30 days``, ``no limit``."""
    return "no limit" if days is None else f"{days:g} days"


def planned_master_keys(master, frames):
    """The library keys of a master of a plan, from its row of ``plan.meta["masters"]``
    and the night's frames table (`~ccdproc_ext.NightCollection.frames`): the group
    keys of its frames, the dates of the first and last."""
    members = frames[np.isin(frames["file"], str(master["files"]).split(","))]
    first = members[0]
    mjd = np.asarray(members["mjd"], dtype=float)
    mjd = mjd[np.isfinite(mjd)]
    return {"kind": str(master["kind"]), "name": str(master["name"]),
            "shape": str(first["shape"]), "xbin": int(first["xbin"]),
            "ybin": int(first["ybin"]), "agree": str(first["agree"]),
            "temperature": float(master["temperature"]), "exposure": float(master["exposure"]),
            "filter": str(master["filter"]),
            "mjd_first": float(mjd.min()) if mjd.size else math.nan,
            "mjd_last": float(mjd.max()) if mjd.size else math.nan,
            "mjd": float(master["mjd"])}
