"""`NightCollection`: an `~ccdproc.ImageFileCollection` that knows its camera.

It reads every header once through the instrument profile and keeps a table of frames
(`NightCollection.frames`, made by `ccdproc_ext.frames`): type, exposure time, filter,
binning, shape, temperature, time of observation, the keywords that must agree between a
frame and its calibrations, and any problem found while reading. The choice of
calibrations lives in `ccdproc_ext.matching`; the collection only gathers the facts.

Bad files are found here, before any pixel is read: a file whose header cannot be read is
set aside (`NightCollection.problems`); a data unit shorter than its header says
(truncated), a missing or malformed keyword, an unknown frame type, or a file with the
same bytes as another (`ccdproc_ext.duplicates`) are problems of the frame, in words, with
the kind of error (``problem_kind``). Header cards astropy cannot parse are repaired and
the repair noted.

`NightCollection` is a subclass that uses ccdproc's public API only: it finds the files
itself and hands them to ccdproc as ``filenames=`` with ``keywords=[]``, so that ccdproc
reads no header, and it answers ``summary``, ``keywords``, ``files``, ``refresh`` and
``sort`` itself, from the headers read once (`ccdproc_ext.summary`), so that ccdproc's own
``files_filtered``, ``values`` and generators work on that table.
Subclassing, rather than wrapping, keeps ``isinstance(night, ImageFileCollection)`` true
and every other method ccdproc's; ccdproc has no public hook to hand a collection the
headers it has read, which would make these overrides unnecessary.
"""

import contextlib
import dataclasses
import logging
import os
import warnings
from pathlib import Path

import numpy as np
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning
from ccdproc import ImageFileCollection

from .duplicates import find_duplicates
from .exceptions import DuplicateFrameError, FrameReadError
from .frames import frame_row, frame_table
from .headers import header_unit
from .matching import build_plan, find_nearest_dark_exposure
from .profiles import IMAGE_TYPES, get_profile
from .raw import inspect_frame_and_notices, read_ccddata
from .summary import find_fits_files, header_pairs, summary_table

__all__ = ["NightCollection"]

log = logging.getLogger(__name__)

#: What a night does without a value some frames do not give (see `night_notes`).
_WITHOUT = {
    "date": "masters are chosen without a time distance for those frames",
    "filter": "flats and science frames of those are matched without a filter",
    "binning": "those frames are taken as unbinned (1x1)",
    "temperature": "masters are chosen without a temperature distance for those frames",
}

#: Arguments of ccdproc's ``files_filtered`` and generators that are no header keyword.
_NOT_KEYWORDS = frozenset({"include_path", "regex_match", "save_with_name", "save_location",
                           "overwrite", "clobber", "do_not_scale_image_data",
                           "return_fname", "ccd_kwargs"})


def _folder_and_files(location, filenames, kwargs):
    """The folder and the listed files (``None``: search the folder) of the arguments of
    `NightCollection`; ``kwargs`` takes the ``ext`` of a collection given as location."""
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
    return folder, filenames


class NightCollection(ImageFileCollection):
    """A collection of raw frames classified through an instrument profile.

    A subclass of `ccdproc.ImageFileCollection`: ``summary``, ``files_filtered``,
    ``ccds`` and the rest keep working, and ``filter`` returns a `NightCollection` with
    the same profile. Each header is read once, by the package's reader; the summary is
    made from it (a keyword ``files_filtered`` asks for and the summary lacks too).

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
        self._folder, self._listed = _folder_and_files(location, kwargs.pop("filenames", None),
                                                       kwargs)
        self._by_reading = kwargs.get("find_fits_by_reading", False)
        keywords = kwargs.pop("keywords", None)
        # What each file's header said when read (see _inspection), read once per file
        # whatever asks: the summary, the frame table, the plan.
        self._inspected, self._keys = {}, {}
        self._frames = self._problems = None
        self._warned = set()
        self._names = self._search(kwargs.get("glob_include"), kwargs.get("glob_exclude"))
        # ccdproc gets the files found and no keyword: it reads no header. Given none, it
        # lists the folder's top level (by name: reading would open the subfolders), and
        # warns only if it finds nothing there.
        if not self._names:
            kwargs["find_fits_by_reading"] = False
        super().__init__(location=self._folder or None, filenames=self._names or None,
                         keywords=[], **kwargs)
        if not self._names and super().files:
            warnings.warn("no FITS files in the collection.", AstropyUserWarning,
                          stacklevel=2)
        self._table, self._every_keyword = {}, False
        if keywords is None:
            keywords = "*"
        if keywords:
            self.keywords = keywords
        if self._every_keyword or list(self.keywords):
            # The headers are read for the summary already: classify the frames now, so
            # that what is wrong with them is said while collecting.
            self._build()

    def __repr__(self):
        params = [
            f"location={self.location!r}",
            "" if self._every_keyword else f"keywords={self.keywords[1:]!r}",
            "" if self._listed is None else f"filenames={self._listed}",
            "" if self.glob_include is None else f"glob_include={self.glob_include!r}",
            "" if self.glob_exclude is None else f"glob_exclude={self.glob_exclude!r}",
            "" if self.ext == 0 else f"ext={self.ext}",
        ]
        return f"{type(self).__name__}({', '.join(p for p in params if p)})"

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

    # ----------------------------------- ccdproc.ImageFileCollection, from the headers read
    @property
    def summary(self):
        """The `~astropy.table.Table` of `ccdproc.ImageFileCollection.summary`, made from
        the headers read once (``ccdproc_ext.summary``); ``None`` without files."""
        return self._table

    @property
    def keywords(self):
        """The columns of ``summary``, as `ccdproc.ImageFileCollection.keywords`: setting
        them makes the summary again (from the headers read once) unless they are a subset
        of the current ones."""
        return self.summary.keys() if self.summary else []

    @keywords.setter
    def keywords(self, keywords):
        if keywords is None:
            self._table = []
            return
        self._every_keyword = keywords == "*"
        wanted, current = {*keywords, "file"}, set(self.keywords)
        if wanted.issubset(current):
            for key in current - wanted:
                self._table.remove_column(key)
        else:
            self._table = self._summary_of(sorted(set(keywords), key=list(keywords).index))

    @keywords.deleter
    def keywords(self):
        self._table = []

    @property
    def files(self):
        """The files of the collection, as named in ``summary`` (paths relative to
        ``location``, or as listed)."""
        return self._names

    def refresh(self):
        """Like `ccdproc.ImageFileCollection.refresh`: the folder is searched again and
        every header read again (new files, new keywords); ``frames`` follows."""
        keywords = "*" if self._every_keyword else self.keywords
        self._inspected, self._keys = {}, {}
        self._frames, self._problems, self._warned = None, None, set()
        self._names = self._search(self.glob_include, self.glob_exclude)
        self._table = self._summary_of(keywords)

    def sort(self, keys):
        """Like `ccdproc.ImageFileCollection.sort`: ``summary`` sorted in place by
        ``keys``, and ``files`` in its order."""
        if len(self.summary) > 0:
            self.summary.sort(keys)
            self._names = self.summary["file"].tolist()

    def files_filtered(self, **kwd):
        """Like `ccdproc.ImageFileCollection.files_filtered`; a keyword the summary lacks
        is taken from the headers read once."""
        with self._columns_for(kwd):
            return super().files_filtered(**kwd)

    def headers(self, do_not_scale_image_data=True, **kwd):
        """Like `ccdproc.ImageFileCollection.headers` (each header read again, as it is
        in the file)."""
        return self._filtered(
            super().headers(do_not_scale_image_data=do_not_scale_image_data, **kwd), kwd)

    def hdus(self, do_not_scale_image_data=False, **kwd):
        """Like `ccdproc.ImageFileCollection.hdus`."""
        return self._filtered(
            super().hdus(do_not_scale_image_data=do_not_scale_image_data, **kwd), kwd)

    def data(self, do_not_scale_image_data=False, **kwd):
        """Like `ccdproc.ImageFileCollection.data`."""
        return self._filtered(
            super().data(do_not_scale_image_data=do_not_scale_image_data, **kwd), kwd)

    def _search(self, glob_include, glob_exclude):
        """The collection's files: those listed (even none, a `filter` that matched
        nothing), else the FITS files of the folder, searched recursively."""
        if self._listed is not None:
            return [self._listed] if isinstance(self._listed, str) else list(self._listed)
        if not self._folder:
            return []
        return find_fits_files(
            self._folder, by_reading=self._by_reading,
            glob_include=None if glob_include is None else str(glob_include),
            glob_exclude=None if glob_exclude is None else str(glob_exclude))

    def _summary_of(self, keywords):
        """A summary table of ``keywords``, from the headers read once."""
        return summary_table(self.files, self._summary_pairs, keywords,
                             location=self.location or "")

    def _summary_pairs(self, name):
        """`~ccdproc_ext.summary.header_pairs` of a file's header, with astropy's words on
        the cards it refused; the `FrameReadError` when it cannot be read."""
        inspection = self._inspection(name)
        if isinstance(inspection, FrameReadError):
            self._warned.add(name)  # logged with the summary, not again with the frames
            raise inspection
        header, *_, notices = inspection
        for notice in notices:  # a card astropy refuses to read, in its words
            warnings.warn(notice, stacklevel=6)
        pairs, repeated = header_pairs(header)
        self._keys[name] = repr(pairs)  # (for the search for duplicates, see _header_key)
        return pairs, repeated

    @contextlib.contextmanager
    def _columns_for(self, kwd):
        """``summary`` with a column for each keyword ``kwd`` filters on, while ccdproc
        filters: for a keyword the summary lacks, ccdproc would read every header."""
        missing = [key for key in kwd if key not in _NOT_KEYWORDS and key not in self.keywords]
        summary = self._table
        if not missing or not isinstance(summary, Table):
            yield
            return
        self._table = self._summary_of([*self.keywords, *missing])
        try:
            yield
        finally:
            self._table = summary

    def _filtered(self, generator, kwd):
        """ccdproc's ``generator``, filtering on the columns of `_columns_for`."""
        with self._columns_for(kwd):
            yield from generator

    # -------------------------------------------------------------------- reading headers
    def _inspection(self, name):
        """``(header, problem, notes, warnings)`` of `~ccdproc_ext.raw.inspect_frame` for
        the file listed as ``name``, and the warnings astropy gave while reading it; the
        `FrameReadError` when the header cannot be read. Read once, then remembered."""
        found = self._inspected.get(name)
        if found is None:
            path = os.path.join(self.location or "", name)
            try:
                found = inspect_frame_and_notices(path, self.ext)
            except FrameReadError as err:
                found = err
            self._inspected[name] = found
        return found

    def _header_key(self, name):
        """What files with the same bytes have in common, from their headers: the cards
        of the summary as text (text, so that a NaN value equals itself), as the summary
        read them."""
        key = self._keys.get(name)
        if key is None:
            key = self._keys[name] = repr(header_pairs(self._inspection(name)[0])[0])
        return key

    def _build(self):
        """Read what is not read yet of every file, and make ``frames`` and ``problems``."""
        self._problems, readable, problems, notes = [], [], {}, {}
        for name in self.files:
            path = os.path.join(self.location or "", name)
            inspection = self._inspection(name)
            if isinstance(inspection, FrameReadError):
                self._problems.append({"file": name, "problem": str(inspection),
                                       "kind": type(inspection).__name__})
                if name not in self._warned:  # the summary said it already
                    log.warning("%s", inspection)
                continue
            _, problem, notes[name], _ = inspection
            problems[name] = []
            if problem:  # a problem of the frame, in ``frames``: reported from there
                problems[name].append((FrameReadError.__name__, problem))
                log.info("%s: %s", path, problem)
            for note in notes[name]:
                log.info("%s: %s", path, note)
            readable.append(name)
        # Files of one size are told apart by their headers, already read, before their
        # bytes are: a night whose frames differ in their headers opens no file again.
        duplicates = find_duplicates(
            {name: os.path.join(self.location or "", name) for name in readable},
            {name: self._header_key(name) for name in readable})
        for name, first in duplicates.items():
            problems[name].append((DuplicateFrameError.__name__,
                                   f"the same bytes as {first}: a duplicate file, only "
                                   f"{first} is used"))
        self._frames = self._frame_table(readable, problems, notes)

    def _frame_table(self, names, problems, notes):
        """The table of frames of the files ``names`` (see `ccdproc_ext.frames`)."""
        self._given = {}
        rows, times = [], []
        for name in names:
            path = os.path.join(self.location or "", name)
            # Names are relative to the night's folder; files listed one by one carry
            # the user's own folders, which must not overrule the header.
            row, date_obs, self._given[name] = frame_row(
                name, self._inspection(name)[0], path, self.profile,
                image_types=self.image_type_overrides, folders=bool(self.location),
                problems=problems[name], notes=notes[name])
            for note in row["notes"].split("; ") if row["notes"] else ():
                if note not in notes[name]:
                    log.info("%s: %s", path, note)
            rows.append(row)
            times.append(date_obs)
        return frame_table(rows, times)

    # ----------------------------------------------------------------- the night's facts
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
        spec = self.profile.saturation_spec
        not_levels = self.saturation_not_levels()
        if not not_levels:
            return self.profile
        keywords = tuple(k for k in spec.keywords if k not in not_levels)
        saturation = dataclasses.replace(spec, keywords=keywords) \
            if keywords or spec.value is not None else None
        return dataclasses.replace(self.profile, saturation_spec=saturation)

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
        # Checked now, as ccdproc does, not when the first frame is asked for.
        if "unit" in ccd_kwargs or kwd.get("overwrite") or kwd.get("clobber"):
            return self._filtered(super().ccds(ccd_kwargs=ccd_kwargs, **kwd), kwd)
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
            ccd = read_ccddata(path, hdu=self.ext, unit=unit, **ccd_kwargs)
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
        if isinstance(image_or_exposure, str) and image_or_exposure in self.files:
            image_or_exposure = self.header(image_or_exposure)
        tolerance = self.profile.dark_tolerance if tolerance is None else tolerance
        exposures = sorted(set(self.frames_of_type("dark")["exposure"].tolist()))
        return find_nearest_dark_exposure(image_or_exposure, exposures, tolerance=tolerance,
                                          profile=self.profile)

    def plan(self, **kwargs):
        """The calibration plan of this night: see `~ccdproc_ext.build_plan`."""
        return build_plan(self, **kwargs)
