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
never used: `find` and the plan skip it and say so, and `verify` lists every such
master.

Several processes may write one library at once (two nights reduced side by side): every
change is one transaction, and a writer that finds the database locked waits and tries
again. The library is only read and written by the process that plans a night, never by
the processes that calibrate its frames.
"""

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

from .exceptions import HeaderError, LibraryError
from .profiles import get_profile
from .raw import file_checksum

__all__ = ["DEFAULT_VALIDITY", "CalibrationLibrary", "LibraryError"]

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
        How long (days) a master stays valid, by kind, over `DEFAULT_VALIDITY`
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
        """The master of ``kind`` for a frame: the same group keys, within the validity
        window, the nearest in time whose file is there unchanged.

        Darks must be within ``dark_tolerance`` (s) of ``exposure``, flats of the same
        ``filter``. The plan (`~ccdproc_ext.build_plan` with ``library=``) applies the
        plan's full rules (temperature, scaled darks); this is the short version.

        Returns
        -------
        `~astropy.table.Row` or None
        """
        days = self.validity.get(kind) if validity == "default" else validity
        candidates = self.table(kind, profile=get_profile(profile).name)
        keep = []
        for row in candidates:
            if (row["shape"], int(row["xbin"]), int(row["ybin"]), row["agree"]) != \
                    (str(shape), int(xbin), int(ybin), str(agree)):
                continue
            if kind == "dark" and not abs(row["exposure"] - float(exposure)) <= dark_tolerance:
                continue
            if kind == "flat" and row["filter"] != str(filter or ""):
                continue
            distance = abs(row["mjd"] - mjd)
            if days is not None and not distance <= days:
                continue
            keep.append((distance if np.isfinite(distance) else math.inf, row))
        for _, row in sorted(keep, key=lambda pair: pair[0]):
            if not self.check(row):
                return row
        return None


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
