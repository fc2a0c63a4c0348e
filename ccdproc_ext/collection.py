"""`NightCollection`: an `~ccdproc.ImageFileCollection` that knows its camera.

It reads every header once through the instrument profile and keeps a table of frames
(`NightCollection.frames`): type, exposure time, filter, binning, shape, temperature, time
of observation, the keywords that must agree between a frame and its calibrations, and any
problem found while reading. The choice of calibrations lives in `ccdproc_ext.matching`;
the collection only gathers the facts.

Bad files are found here, before any pixel is read: a file whose header cannot be read is
set aside (`NightCollection.problems`); a data unit shorter than its header says
(truncated), a missing or malformed keyword, an unknown frame type, or a file with the
same bytes as another are problems of the frame, in words, with the kind of error
(``problem_kind``). Header cards astropy cannot parse are repaired and the repair noted.
"""

import dataclasses
import fnmatch
import hashlib
import logging
import math
import os
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
from astropy.io.fits.card import UNDEFINED
from astropy.io.fits.connect import is_fits
from astropy.nddata import fits_ccddata_reader
from astropy.table import Table
from astropy.time import Time
from ccdproc import ImageFileCollection
from erfa import ErfaWarning

from ._warnings import ignoring
from .exceptions import CcdprocExtError, DuplicateFrameError, FrameReadError, HeaderError
from .headers import _to_float, card_value, first_filled, header_float
from .profiles import IMAGE_TYPES, FrameType, get_profile
from .provenance import done_by
from .raw import _inspect, file_checksum, header_unit, is_fits_name

__all__ = ["NightCollection"]

log = logging.getLogger(__name__)

#: What a night does without a value some frames do not give (see `night_notes`).
_WITHOUT = {
    "date": "masters are chosen without a time distance for those frames",
    "filter": "flats and science frames of those are matched without a filter",
    "binning": "those frames are taken as unbinned (1x1)",
    "temperature": "masters are chosen without a temperature distance for those frames",
}

#: Frames further apart in time than this start a new observing night.
NIGHT_GAP_HOURS = 8.0


def _looks_like_fits(path):
    """Whether a file starts as a FITS file does (as ccdproc's ``find_fits_by_reading``:
    compressed files are not recognised)."""
    try:
        with open(path, "rb") as stream:
            return bool(is_fits("read", str(path), stream))
    except OSError:
        return False


def _scan_folder(folder, glob_include=None, glob_exclude=None, by_reading=False):
    """FITS files under ``folder``, recursively, as sorted POSIX paths relative to it.

    A FITS file is one whose name ends as ccdproc's do (`~ccdproc_ext.raw.FITS_SUFFIXES`:
    ``.fits``, ``.fit``, ``.fts``, plain or ``.gz``, ``.bz2``, ``.Z``, ``.zip``, ``.fz``),
    or, ``by_reading``, one whose first bytes say so. The glob patterns are matched
    against the name and against the path relative to ``folder``.
    """
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if name.startswith("."):
                continue
            if _looks_like_fits(Path(root, name)) if by_reading else is_fits_name(name):
                found.append(Path(root, name).relative_to(folder).as_posix())
    if glob_include is not None:
        found = [f for f in found if fnmatch.fnmatch(Path(f).name, glob_include)
                 or fnmatch.fnmatch(f, glob_include)]
    if glob_exclude is not None:
        found = [f for f in found if not (fnmatch.fnmatch(Path(f).name, glob_exclude)
                                          or fnmatch.fnmatch(f, glob_exclude))]
    return sorted(found)


def _summary_value(header, keyword):
    """The value of a card for the summary table, even when astropy cannot parse it."""
    value, fixed = card_value(header, keyword)
    if value is UNDEFINED:
        return None
    if fixed:
        # A number written with a decimal comma ('3,2E-05') is a number, so that
        # files_filtered(exptime=...) compares it with the others; other text stays text.
        try:
            return _to_float(value)
        except ValueError:
            return value
    return value


def _header_pairs(header):
    """``(keyword, value)`` of the cards of ``header``, values as the summary shows them,
    and the ``(keyword, value)`` of the cards that repeat a keyword (the summary keeps the
    first card's value, as ccdproc's)."""
    pairs, repeated, seen = [], [], set()
    for index, card in enumerate(header.cards):
        keyword = card.keyword
        key = keyword.lower()
        if key in ("comment", "history"):
            pairs.append((keyword, card.value))
        elif key in seen:
            repeated.append((key, _summary_value(header, index)))
        elif key and key != "file":
            seen.add(key)
            pairs.append((keyword, _summary_value(header, keyword)))
    return pairs, repeated


#: Bytes compared before whole files: the header, where two frames of a night differ.
_HEAD_BYTES = 1 << 16


def _head_digest(path):
    with open(path, "rb") as stream:
        return hashlib.sha256(stream.read(_HEAD_BYTES)).hexdigest()


def _group_by(names, key):
    """``names`` grouped by ``key(name)``; a file that cannot be read again is left out."""
    groups = {}
    for name in names:
        try:
            groups.setdefault(key(name), []).append(name)
        except OSError:  # gone or unreadable since its header was read: not a duplicate
            continue
    return [group for group in groups.values() if len(group) > 1]


def _find_duplicates(paths, headers=None):
    """``{name: name of the first file with the same bytes}`` among ``paths``.

    ``paths`` maps names to paths, in order; the first of identical files is the one
    kept. Files are compared by size, then by their first bytes, and only then whole, so a
    night whose frames differ in their headers is not read twice. ``headers`` may map
    names to what was read from their headers (files with the same bytes have the same):
    files of one size that all have one are compared by it before their first bytes.
    """
    headers = {} if headers is None else headers
    candidates = []
    for same_size in _group_by(paths, lambda name: os.path.getsize(paths[name])):
        if all(name in headers for name in same_size):
            candidates.extend(_group_by(same_size, headers.__getitem__))
        else:
            candidates.append(same_size)
    duplicates = {}
    for group in candidates:
        for same_head in _group_by(group, lambda name: _head_digest(paths[name])):
            for same in _group_by(same_head, lambda name: file_checksum(paths[name])):
                for other in same[1:]:
                    duplicates[other] = same[0]
    return duplicates


def _isot_and_mjd(times):
    """The ISO text and the MJD of each `~astropy.time.Time` of ``times`` (``""`` and NaN
    for ``None``).

    Times alike (scalars of one scale, format and output options) are converted as one
    array: converting a scalar Time costs about as much as making it.
    """
    known = [t for t in times if t is not None]
    if not known:
        return [""] * len(times), [math.nan] * len(times)
    first = known[0]
    if all(type(t) is type(first) and t.isscalar and t.location is None
           and (t.scale, t.format, t.precision, t.out_subfmt)
           == (first.scale, first.format, first.precision, first.out_subfmt)
           for t in known):
        # ERFA calls UTC years before 1960 'dubious' (old 'dd/mm/yy' dates): they are dates.
        with ignoring(ErfaWarning):
            together = Time(known, precision=first.precision, out_subfmt=first.out_subfmt)
            isot, mjd = iter(together.isot.tolist()), iter(together.mjd.tolist())
    else:
        with ignoring(ErfaWarning):
            isot, mjd = [t.isot for t in known], [t.mjd for t in known]
        isot, mjd = iter(isot), iter(mjd)
    return ([("" if t is None else next(isot)) for t in times],
            [(math.nan if t is None else next(mjd)) for t in times])


def _int_or_0(value):
    """An axis length from a header value (0 when it is not a whole number)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


#: The calibrations a frame's header can say were done already, and their flags.
_STEP_FLAGS = {"bias": "ZEROCOR", "dark": "DARKCOR", "flat": "FLATCOR"}


def _steps_done(header):
    """``{calibration: evidence}`` for the calibrations the header says were done (our
    flags, IRAF's, MaxIm DL's ``CALSTAT``: see `~ccdproc_ext.provenance.done_by`)."""
    return {kind: evidence for kind, flag in _STEP_FLAGS.items()
            if (evidence := done_by(header, flag)) is not None}


def _by_evidence(done):
    """``{evidence: [calibrations]}``: what one card says is said once."""
    grouped = {}
    for kind, evidence in done.items():
        grouped.setdefault(evidence.split(" (")[0], []).append(kind)
    return grouped


def _assign_nights(mjd):
    """Label frames by observing night: a gap of more than 8 hours starts a new night."""
    night = np.zeros(len(mjd), dtype=int)
    known = np.isfinite(mjd)
    if not known.any():
        return night + 1
    order = np.argsort(np.where(known, mjd, np.inf))
    current, previous = 1, None
    for i in order:
        if not known[i]:
            night[i] = current
            continue
        if previous is not None and (mjd[i] - previous) * 24 > NIGHT_GAP_HOURS:
            current += 1
        night[i] = current
        previous = mjd[i]
    return night


class NightCollection(ImageFileCollection):
    """A collection of raw frames classified through an instrument profile.

    A subclass of `ccdproc.ImageFileCollection`: ``summary``, ``files_filtered``,
    ``ccds`` and the rest keep working, and ``filter`` returns a `NightCollection` with
    the same profile.

    Parameters
    ----------
    location : str, `pathlib.Path`, list of paths or `~ccdproc.ImageFileCollection`
        A folder (searched recursively for the FITS files ccdproc finds: ``.fits``,
        ``.fit``, ``.fts``, plain or compressed, ``.gz``, ``.bz2``, ``.Z``, ``.zip``,
        ``.fz``), a list of files, or an existing collection whose files are taken.
    profile : str, path or `~ccdproc_ext.InstrumentProfile`, optional
        The camera. Default is ``"generic"``.
    image_types : dict or None, optional
        Overrides of the frame type, ``{file name or glob pattern: type}``; real nights
        have flats labelled ``'Light Frame'``. Default is ``None``.
    **kwargs
        Passed on to `~ccdproc.ImageFileCollection` (``keywords``, ``filenames``,
        ``glob_include``, ``glob_exclude``, ``find_fits_by_reading``, ``ext``...), with
        their meaning there. With ``keywords=[]`` no header is read until ``frames`` (or
        `problems`, or the plan) is asked for.

    Attributes
    ----------
    frames : `~astropy.table.Table`
        One row per file whose header could be read: ``file``, ``type``, ``type_rule``,
        ``exposure``, ``filter``, ``xbin``, ``ybin``, ``shape``, ``temperature``,
        ``date_obs``, ``mjd``, ``agree``, ``night``; ``problem`` (in words, ``""`` when
        the frame is usable) and ``problem_kind`` (the name of the error class:
        ``FrameReadError`` for a truncated data unit, ``HeaderError``,
        ``DuplicateFrameError``); ``notes`` (header cards that had to be repaired);
        ``done`` (the calibrations its header says were done already, ``"bias,dark"``:
        processing flags, IRAF's, MaxIm DL's ``CALSTAT``).
    problems : list of dict
        Files whose header could not be read at all (``file``, ``problem``, ``kind``).
        They stay in ``files``, as in ccdproc (whose summary leaves them out and logs a
        warning), and have no row in ``frames``.

    Examples
    --------
    >>> import tempfile
    >>> from ccdproc_ext import NightCollection
    >>> from ccdproc_ext.simulate import simulate_night
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = simulate_night(folder, "maxim-ccdsoft", shape=(32, 32), n_bias=2,
    ...                        dark_exposures=(30.0,), n_dark=2, filters=("R",), n_flat=2,
    ...                        n_science=1)
    ...     night = NightCollection(folder, profile="maxim-ccdsoft")
    ...     print(night.count_by_type())
    {'bias': 2, 'dark': 2, 'flat': 2, 'science': 1}
    """

    def __init__(self, location=None, profile="generic", *, image_types=None, **kwargs):
        self.profile = get_profile(profile)
        self.image_type_overrides = dict(image_types or {})
        for pattern, image_type in self.image_type_overrides.items():
            if image_type not in IMAGE_TYPES:
                raise ValueError(f"image_types[{pattern!r}] = {image_type!r}: expected one of "
                                 f"{', '.join(IMAGE_TYPES)}")
        filenames = kwargs.pop("filenames", None)
        if isinstance(location, ImageFileCollection):
            kwargs.setdefault("ext", location.ext)
            folder = location.location or ""
            filenames = list(location.files)
        elif isinstance(location, list | tuple):
            folder = ""
            filenames = [os.fspath(f) for f in location]
        else:
            folder = "" if location is None else os.fspath(location)
            if filenames is None and folder and not Path(folder).is_dir():
                raise FrameReadError(f"{folder}: no such folder")
        if isinstance(filenames, os.PathLike):
            filenames = os.fspath(filenames)
        elif filenames is not None and not isinstance(filenames, str):
            listed = [os.fspath(f) for f in filenames]
            filenames = list(dict.fromkeys(listed))  # a file listed twice is one file
            if len(filenames) < len(listed):
                log.warning("files listed more than once are read once")
        # What each file's header said when read (see _inspection), read once per file
        # whatever asks: the summary, the frame table, the plan.
        self._inspected, self._keys = {}, {}
        self._frames = self._problems = None
        self._warned = set()
        super().__init__(location=folder or None, filenames=filenames, **kwargs)
        if self._all_keywords or list(self.keywords):
            # The headers are read for the summary already: classify the frames now, so
            # that what is wrong with them is said while collecting.
            self._build()

    @property
    def frames(self):
        """The table of frames (see the class's Attributes), built at first use."""
        if self._frames is None:
            self._build()
        return self._frames

    @property
    def problems(self):
        """The files whose header could not be read at all (see the class's Attributes)."""
        if self._problems is None:
            self._build()
        return self._problems

    def refresh(self):
        """Like `ccdproc.ImageFileCollection.refresh`: the folder is searched again and
        every header read again (new files, new keywords); ``frames`` follows."""
        self._inspected, self._keys = {}, {}
        self._frames, self._problems, self._warned = None, None, set()
        super().refresh()

    # ---------------------------------------------- hooks of ccdproc.ImageFileCollection
    def _get_files(self):
        # ccdproc's rules, with the folder searched recursively. A list of names, even an
        # empty one (a `filter` that matched nothing), is the collection's files; ccdproc
        # would search the whole folder for an empty list.
        if self._filenames is not None:
            if isinstance(self._filenames, str):
                return [self._filenames]
            return self._filenames
        if not self.location:
            return []
        return _scan_folder(self.location, self._glob_include, self._glob_exclude,
                            by_reading=self._find_fits_by_reading)

    def _name_of(self, file_name):
        """The name listed in ``files`` of the path ccdproc made with ``path.join``."""
        prefix = os.path.join(self.location or "", "")
        if self.location and file_name.startswith(prefix):
            return file_name[len(prefix):]
        return file_name

    def _inspection(self, name):
        """``(header, problem, notes, warnings)`` of `~ccdproc_ext.raw.inspect_frame` for
        the file listed as ``name``, and the warnings astropy gave while reading it; the
        `FrameReadError` when the header cannot be read. Read once, then remembered."""
        found = self._inspected.get(name)
        if found is None:
            path = os.path.join(self.location or "", name)
            try:
                found = _inspect(path, self.ext)
            except FrameReadError as err:
                found = err
            self._inspected[name] = found
        return found

    def _dict_from_fits_header(self, file_name, input_summary=None, missing_marker=None):
        # ccdproc's version re-reads every file with fits.getheader, which fails on a card
        # astropy cannot parse (EXPTIME = 3,2E-05) and names a file in a subfolder by its
        # base name only. The header read once when collecting serves instead (merged with
        # the primary one for an image in an extension), with the same table layout and
        # ccdproc's warnings: one lower-case key per keyword, COMMENT and HISTORY joined.
        name = self._name_of(file_name)
        inspection = self._inspection(name)
        if isinstance(inspection, FrameReadError):
            self._warned.add(name)  # ccdproc logs it, and leaves the file out of the summary
            raise inspection
        header, *_, notices = inspection
        for notice in notices:  # a card astropy refuses to read, in its words
            warnings.warn(notice, stacklevel=4)
        pairs, repeated = _header_pairs(header)
        self._keys[name] = repr(pairs)  # (for the search for duplicates, see _header_key)
        for key, value in repeated:
            warnings.warn(f'Header from file "{file_name}" contains multiple entries for '
                          f'"{key}", the pair "{key}={value}" will be ignored.', UserWarning,
                          stacklevel=4)
        summary = OrderedDict() if input_summary is None else input_summary
        n_previous = len(summary.get("file", []))
        summary.setdefault("file", []).append(name)
        values, multi_entry = OrderedDict(), {"comment": [], "history": []}
        for keyword, value in pairs:
            key = keyword.lower()
            if key in multi_entry:
                multi_entry[key].append(str(value))
            elif key not in values:  # a repeated keyword keeps its first value
                values[key] = None if value is UNDEFINED else value
        for key, joined in multi_entry.items():
            if joined:
                values[key] = ",".join(joined)
        for key in summary:
            if key != "file" and key not in values:
                summary[key].append(missing_marker)
        for key, value in values.items():
            summary.setdefault(key, [missing_marker] * n_previous).append(value)
        return summary

    def _header_key(self, name):
        """What files with the same bytes have in common, from their headers: the cards
        of the summary as text (text, so that a NaN value equals itself), as the summary
        read them."""
        key = self._keys.get(name)
        if key is None:
            key = self._keys[name] = repr(_header_pairs(self._inspection(name)[0])[0])
        return key

    def _build(self):
        """Read what is not read yet of every file, and make ``frames`` and ``problems``."""
        self._problems, readable = [], []
        self._data_problems, self._header_notes = {}, {}
        for name in self.files:
            path = os.path.join(self.location or "", name)
            inspection = self._inspection(name)
            if isinstance(inspection, FrameReadError):
                self._problems.append({"file": name, "problem": str(inspection),
                                       "kind": type(inspection).__name__})
                if name not in self._warned:  # ccdproc's summary said it already
                    log.warning("%s", inspection)
                continue
            _, problem, notes, _ = inspection
            if problem:  # a problem of the frame, in ``frames``: reported from there
                self._data_problems[name] = problem
                log.info("%s: %s", path, problem)
            for note in notes:
                log.info("%s: %s", path, note)
            if notes:
                self._header_notes[name] = notes
            readable.append(name)
        # Files of one size are told apart by their headers, already read, before their
        # bytes are: a night whose frames differ in their headers opens no file again.
        self._duplicates = _find_duplicates(
            {name: os.path.join(self.location or "", name) for name in readable},
            {name: self._header_key(name) for name in readable})
        self._frames = self._build_frames(readable)

    # ------------------------------------------------------------------ the frame table
    @staticmethod
    def _value(header, key):
        """The value of ``key`` in ``header``, even from a card astropy cannot parse."""
        return card_value(header, key)[0]

    def _image_type(self, name, header, exposure=None):
        """The frame's `~ccdproc_ext.profiles.FrameType`: an override of ``image_types``
        first, then the profile's rules (`InstrumentProfile.classify_frame`)."""
        for pattern, image_type in self.image_type_overrides.items():
            if name == pattern or fnmatch.fnmatch(name, pattern) or \
                    fnmatch.fnmatch(Path(name).name, pattern):
                return FrameType(image_type, "override", ())
        # Names are relative to the night's folder; files listed one by one carry the
        # user's own folders, which must not overrule the header.
        return self.profile.classify_frame(header, name, exposure=exposure,
                                           folders=bool(self.location))

    def _unknown_type(self, header):
        """Why a frame has no type, in words."""
        _, key, word = self.profile.header_type(header)
        if key is not None and word is not None:
            return (f"unknown frame type ({key} = {word!r} is not one of the profile's "
                    "words, no file pattern matches, and no exposure time above 0 says "
                    "it is a science frame)")
        return ("no image-type keyword and no file pattern matches (keywords "
                f"{', '.join(self.profile.image_type_keywords)}; and no exposure time above "
                "0 says it is a science frame)")

    def _frame_row(self, name, header, path):
        """One row of ``frames`` (without the times) and the frame's start time."""
        profile = self.profile
        problems, notes = [], list(self._header_notes.get(name, ()))  # (kind, words)
        if name in self._data_problems:
            problems.append((FrameReadError.__name__, self._data_problems[name]))
        if name in self._duplicates:
            first = self._duplicates[name]
            problems.append((DuplicateFrameError.__name__,
                             f"the same bytes as {first}: a duplicate file, only {first} "
                             "is used"))

        def read(function, default, **kwargs):
            try:
                return function(header, path=path, **kwargs), None
            except CcdprocExtError as err:
                return default, (type(err).__name__, str(err).removeprefix(f"{path}: "))

        exposure, exposure_problem = read(profile.exposure_time, math.nan)
        image_type, type_rule, type_notes = self._image_type(
            name, header, None if exposure_problem else exposure)
        notes.extend(type_notes)
        if not image_type:
            problems.append((HeaderError.__name__, self._unknown_type(header)))
        if exposure_problem is not None:
            if image_type == "bias":  # a bias needs no exposure time
                exposure = 0.0
                if not exposure_problem[1].startswith("none of the keywords"):
                    notes.append(f"{exposure_problem[1]}: a bias, exposure taken as 0 s")
            else:
                problems.append(exposure_problem)
        if image_type == "science" and exposure == 0:
            notes.append("exposure 0 s: a science frame that saw no light")
        binning, binning_problem = read(profile.binning, (0, 0))
        if binning_problem is not None:
            problems.append(binning_problem)
        # Optional values: what cannot be read is a note, and the value unknown.
        set_temperature = profile.set_temperature(header, path=path, notes=notes)
        temperature_notes = []  # a bad set point falls back from here too: noted once
        temperature = profile.temperature(header, path=path, notes=temperature_notes)
        notes.extend(n for n in temperature_notes if n not in notes)
        date_obs = profile.date_obs(header, path=path, notes=notes)
        filter_name = profile.filter_name(header, path=path, notes=notes)
        ny, nx = header.get("NAXIS2", 0), header.get("NAXIS1", 0)
        if profile.transposed:
            ny, nx = nx, ny
        notes.extend(profile.section_notes(header, (_int_or_0(ny), _int_or_0(nx)),
                                           binning if binning_problem is None else (1, 1)))
        done = _steps_done(header)
        for evidence, kinds in _by_evidence(done).items():
            notes.append(f"{' and '.join(kinds)} already done ({evidence}): not done again")
        agree = []
        for key in profile.match_keywords:
            value = self._value(header, key) if key in header else ""
            agree.append(f"{key}={str(value).strip()}")
        self._given[name] = {
            "binning": any(all(k.strip() in header for k in entry.split(","))
                           for entry in profile.binning_keywords),
            "saturation": self._saturation_card(header)}
        return {
            "file": name,
            "type": image_type or "",
            "type_rule": type_rule,
            "exposure": exposure,
            "filter": filter_name or "",
            "xbin": binning[0],
            "ybin": binning[1],
            "shape": f"{ny}x{nx}",
            "temperature": math.nan if temperature is None else temperature,
            "set_temperature": math.nan if set_temperature is None else set_temperature,
            "agree": ",".join(agree),
            "problem": "; ".join(words for _, words in problems),
            "problem_kind": problems[0][0] if problems else "",
            "notes": "; ".join(notes),
            "done": ",".join(done),
        }, date_obs

    def _build_frames(self, names):
        self._given = {}
        rows, times = [], []
        for name in names:
            path = os.path.join(self.location or "", name)
            row, date_obs = self._frame_row(name, self._inspection(name)[0], path)
            for note in row["notes"].split("; ") if row["notes"] else ():
                if note not in self._header_notes.get(name, ()):
                    log.info("%s: %s", path, note)
            rows.append(row)
            times.append(date_obs)
        names = ("file", "type", "type_rule", "exposure", "filter", "xbin", "ybin", "shape",
                 "temperature", "set_temperature", "date_obs", "mjd", "agree", "problem",
                 "problem_kind", "notes", "done")
        dtypes = ("U", "U", "U", "f8", "U", "i4", "i4", "U", "f8", "f8", "U", "f8", "U", "U",
                  "U", "U", "U")
        if not rows:
            return Table(names=(*names, "night"), dtype=(*dtypes, "i8"))
        for row, date_obs, mjd in zip(rows, *_isot_and_mjd(times), strict=True):
            row["date_obs"], row["mjd"] = date_obs, mjd
        table = Table(rows=[[r[n] for n in names] for r in rows], names=names, dtype=dtypes)
        table["night"] = _assign_nights(np.asarray(table["mjd"], dtype=float))
        return table

    def _saturation_card(self, header):
        """``(keyword, value)`` of the saturation level the profile reads from
        ``header``, or ``None`` (no keyword, or not a number)."""
        spec = self.profile.saturation
        if spec is None or not spec.keywords:
            return None
        key, _ = first_filled(header, spec.keywords)
        try:
            value = header_float(header, [key], required=False) if key else None
        except HeaderError:
            return None
        return None if value is None else (key, value)

    def saturation_not_levels(self):
        """``{keyword: why}`` for the saturation keywords that are no saturation level in
        this night: a value not above 0 (``DATAMAX = 0`` for "not set"), or values that
        differ from frame to frame of one group (shape and binning): a statistic of each
        frame, such as its largest value."""
        frames = self.frames
        values = {}  # keyword -> group -> values
        for frame in frames:
            card = self._given.get(str(frame["file"]), {}).get("saturation")
            if card is not None:
                group = (str(frame["shape"]), int(frame["xbin"]), int(frame["ybin"]))
                values.setdefault(card[0], {}).setdefault(group, set()).add(card[1])
        found = {}
        for key, groups in values.items():
            every = sorted(set().union(*groups.values()))
            if every[0] <= 0:
                found[key] = (f"{key} = {every[0]:g} is not a saturation level (not above "
                              "0)")
            elif any(len(group) > 1 for group in groups.values()):
                found[key] = (f"{key} differs from frame to frame of one camera "
                              f"({every[0]:g} to {every[-1]:g}): a statistic of each frame, "
                              "not a saturation level")
        return found

    @property
    def night_profile(self):
        """The profile as it applies to this night: the profile, less the saturation
        keywords that are no saturation level in the night's headers (see
        `night_notes`). Premise of masking saturated pixels: the level is the camera's,
        one number above the bias for frames read out alike; checked here on every
        frame of the night, where one frame alone cannot tell."""
        spec = self.profile.saturation
        not_levels = self.saturation_not_levels()
        if not not_levels:
            return self.profile
        keywords = tuple(k for k in spec.keywords if k not in not_levels)
        saturation = dataclasses.replace(spec, keywords=keywords) \
            if keywords or spec.value is not None else None
        return dataclasses.replace(self.profile, saturation=saturation)

    @property
    def night_notes(self):
        """What the night's headers do not say where it matters, in words: a saturation
        keyword that is no saturation level (see `night_profile`), and one note per
        value, with the keywords looked for: a date or a filter (of a flat or a science
        frame) that some frames do not give, or a binning or a temperature that some
        frames give and others do not (when no frame gives one, all are alike), e.g.
        ``"filter: not given by 12 of 40 frames (FILTER, FILTNAME): flats and science
        frames of those are matched without a filter"``. An exposure time that is
        needed and missing is a problem of its frame, said there.
        """
        frames = self.frames
        usable = frames[frames["type"] != ""]
        binning_given = np.array([self._given.get(str(f), {}).get("binning", True)
                                  for f in usable["file"]], dtype=bool)
        temperature_given = np.isfinite(np.asarray(usable["temperature"], dtype=float))
        lacking = {
            "date": usable["date_obs"] == "",
            "filter": np.isin(usable["type"], ("flat", "science")) & (usable["filter"] == ""),
            "binning": ~binning_given if binning_given.any() else binning_given,
            "temperature": ~temperature_given if temperature_given.any() else
            temperature_given,
        }
        keywords = {"date": self.profile.date_obs_keywords,
                    "filter": self.profile.filter_keywords,
                    "binning": self.profile.binning_keywords,
                    "temperature": self.profile.temperature_keywords}
        notes = [f"{why}: saturated pixels are not masked by it"
                 for why in self.saturation_not_levels().values()]
        for what, missing in lacking.items():
            n_missing = int(np.count_nonzero(missing))
            if n_missing:
                notes.append(f"{what}: not given by {n_missing} of {len(usable)} frames "
                             f"({', '.join(keywords[what])}): {_WITHOUT[what]}")
        return notes

    # ----------------------------------------------------------------------- helpers
    def header(self, file):
        """The header of ``file`` (as listed in ``files``), read once when collected (merged
        with the primary header for an image in an extension, see
        `~ccdproc_ext.raw.RawImage`).

        Raises
        ------
        FrameReadError
            If the file's header cannot be read.
        """
        inspection = self._inspection(file)
        if isinstance(inspection, FrameReadError):
            raise inspection
        return inspection[0]

    def path(self, file):
        """The full path of ``file`` (as listed in ``files``)."""
        return Path(self.location or "", file)

    def frames_of_type(self, image_type):
        """Rows of ``frames`` of one type without problems."""
        rows = self.frames[(self.frames["type"] == image_type) & (self.frames["problem"] == "")]
        return rows

    def count_by_type(self):
        """How many usable frames of each type, as a dict."""
        return {t: len(self.frames_of_type(t)) for t in IMAGE_TYPES}

    def ccds(self, ccd_kwargs=None, **kwd):
        """Like `ccdproc.ImageFileCollection.ccds`; a file without ``BUNIT`` (or with one
        that is not a unit) is read in the profile's unit unless ``ccd_kwargs`` gives one.

        ccdproc asks for a unit then ("a unit for CCDData must be specified").
        """
        ccd_kwargs = dict(ccd_kwargs or {})
        if "unit" in ccd_kwargs:
            return super().ccds(ccd_kwargs=ccd_kwargs, **kwd)
        # Checked now, as ccdproc does, not when the first frame is asked for.
        if kwd.get("overwrite") or kwd.get("clobber"):
            return super().ccds(ccd_kwargs=ccd_kwargs, **kwd)
        return self._ccds_in_known_units(ccd_kwargs, kwd)

    def _ccds_in_known_units(self, ccd_kwargs, kwd):
        """ccdproc's ccds generator, each file read with its unit (see `ccds`)."""
        return_fname = kwd.pop("return_fname", False)
        if not self.summary:
            return
        # The files ccdproc's generator gives: those matching kwd, or the current selection.
        names = list(self.files_filtered(**kwd)) if kwd else \
            self.summary["file"].compressed().tolist()
        for name in names:
            path = os.path.join(self.location or "", name)
            unit = header_unit(self.header(name), self.profile.unit, path=path)
            ccd = fits_ccddata_reader(path, hdu=self.ext, unit=unit, **ccd_kwargs)
            yield (ccd, os.path.basename(path)) if return_fname else ccd

    def filter(self, **kwd):
        """Like `ccdproc.ImageFileCollection.filter`, returning a `NightCollection`."""
        files = self.files_filtered(**kwd)
        return NightCollection(self.location or None, profile=self.profile,
                               image_types=self.image_type_overrides, filenames=list(files),
                               keywords=self.keywords, ext=self.ext)

    def nearest_dark(self, image_or_exposure, tolerance=None):
        """The dark exposure time closest to a frame's, among this night's darks.

        Parameters
        ----------
        image_or_exposure : `~astropy.nddata.CCDData`, header, file name or float
            The frame, or its exposure time in seconds.
        tolerance : float or None, optional
            Largest allowed difference in seconds. Default is the profile's
            ``dark_tolerance``; `numpy.inf` accepts any dark.

        Returns
        -------
        float
            The chosen dark exposure time (ties go to the longer dark).

        Raises
        ------
        CalibrationMatchError
            If there are no darks, or the closest is further than ``tolerance``.
        """
        from .matching import find_nearest_dark_exposure

        if isinstance(image_or_exposure, str) and image_or_exposure in self.files:
            image_or_exposure = self.header(image_or_exposure)
        tolerance = self.profile.dark_tolerance if tolerance is None else tolerance
        exposures = sorted(set(self.frames_of_type("dark")["exposure"].tolist()))
        return find_nearest_dark_exposure(image_or_exposure, exposures, tolerance=tolerance,
                                          profile=self.profile)

    def plan(self, **kwargs):
        """The calibration plan of this night: see `~ccdproc_ext.build_plan`."""
        from .matching import build_plan

        return build_plan(self, **kwargs)
