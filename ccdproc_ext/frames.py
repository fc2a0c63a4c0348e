"""The facts of each frame of a night, from its header, through the instrument profile.

One row per frame: type (and the rule that gave it), exposure time, filter, binning,
shape, temperatures, time of observation, the keywords that must agree between a frame
and its calibrations, the calibrations its header says were done, problems and notes in
words; and the observing night of each frame, from the gaps between their times.
`~ccdproc_ext.NightCollection` reads the headers and keeps the table
(`~ccdproc_ext.NightCollection.frames`); the choice of calibrations lives in
`ccdproc_ext.matching`.
"""

import fnmatch
import math
from pathlib import Path

import numpy as np
from astropy.table import Table
from astropy.time import Time
from erfa import ErfaWarning

from ._warnings import ignoring
from .exceptions import CcdprocExtError, HeaderError
from .headers import card_value, first_filled, header_float
from .profiles import FrameType
from .provenance import done_by

__all__ = ["NIGHT_GAP_HOURS", "assign_nights", "frame_row", "frame_table", "frame_type"]

#: Frames further apart in time than this start a new observing night.
NIGHT_GAP_HOURS = 8.0

#: The columns of the frame table, and their types.
_COLUMNS = {"file": "U", "type": "U", "type_rule": "U", "exposure": "f8", "filter": "U",
            "xbin": "i4", "ybin": "i4", "shape": "U", "temperature": "f8",
            "set_temperature": "f8", "date_obs": "U", "mjd": "f8", "agree": "U",
            "problem": "U", "problem_kind": "U", "notes": "U", "done": "U"}

#: The calibrations a frame's header can say were done already, and their flags.
_STEP_FLAGS = {"bias": "ZEROCOR", "dark": "DARKCOR", "flat": "FLATCOR"}


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


def assign_nights(mjd):
    """Label frames by observing night: a gap of more than `NIGHT_GAP_HOURS` starts a
    new night.

    Parameters
    ----------
    mjd : `numpy.ndarray`
        The frames' times (MJD), NaN where unknown.

    Returns
    -------
    `numpy.ndarray`
        The night of each frame, from 1 in time order; a frame without a time is in the
        night of the frame before it in ``mjd``'s sort order.
    """
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


def frame_type(name, header, profile, *, image_types=None, exposure=None, folders=True):
    """The frame's `~ccdproc_ext.profiles.FrameType`: an override of ``image_types``
    first, then the profile's rules (`InstrumentProfile.classify_frame`).

    Parameters
    ----------
    name : str
        The file, as named in the collection.
    header : `~astropy.io.fits.Header`
    profile : `~ccdproc_ext.InstrumentProfile`
    image_types : dict or None, optional
        ``{file name or glob pattern: type}``. Default is ``None``.
    exposure : float or None, optional
        The exposure time, when known. Default is ``None``.
    folders : bool, optional
        Whether the folders in ``name`` are the night's own (names relative to the
        night's folder), which may say the type; files listed one by one carry the
        user's folders, which must not overrule the header. Default is ``True``.

    Returns
    -------
    `~ccdproc_ext.profiles.FrameType`
    """
    for pattern, image_type in (image_types or {}).items():
        if name == pattern or fnmatch.fnmatch(name, pattern) or \
                fnmatch.fnmatch(Path(name).name, pattern):
            return FrameType(image_type, "override", ())
    return profile.classify_frame(header, name, exposure=exposure, folders=folders)


def _unknown_type(profile, header):
    """Why a frame has no type, in words."""
    _, key, word = profile.header_type(header)
    if key is not None and word is not None:
        return (f"unknown frame type ({key} = {word!r} is not one of the profile's "
                "words, no file pattern matches, and no exposure time above 0 says "
                "it is a science frame)")
    return ("no image-type keyword and no file pattern matches (keywords "
            f"{', '.join(profile.image_type_keywords)}; and no exposure time above "
            "0 says it is a science frame)")


def _saturation_card(profile, header):
    """``(keyword, value)`` of the saturation level the profile reads from ``header``, or
    ``None`` (no keyword, or not a number)."""
    spec = profile.saturation_spec
    if spec is None or not spec.keywords:
        return None
    key, _ = first_filled(header, spec.keywords)
    try:
        value = header_float(header, [key], required=False) if key else None
    except HeaderError:
        return None
    return None if value is None else (key, value)


def _given(profile, header):
    """What the header gives of what a night needs from every frame alike."""
    return {"binning": any(all(k.strip() in header for k in entry.split(","))
                           for entry in profile.binning_keywords),
            "saturation": _saturation_card(profile, header)}


def _type_and_exposure(name, header, path, profile, image_types, folders):
    """The frame's type, its exposure time, and the problems and notes they bring."""
    problems, notes = [], []
    try:
        exposure, exposure_problem = profile.exposure_time(header, path=path), None
    except CcdprocExtError as err:
        exposure = math.nan
        exposure_problem = (type(err).__name__, str(err).removeprefix(f"{path}: "))
    image_type, type_rule, type_notes = frame_type(
        name, header, profile, image_types=image_types, folders=folders,
        exposure=None if exposure_problem else exposure)
    notes.extend(type_notes)
    if not image_type:
        problems.append((HeaderError.__name__, _unknown_type(profile, header)))
    if exposure_problem is not None:
        if image_type == "bias":  # a bias needs no exposure time
            exposure = 0.0
            if not exposure_problem[1].startswith("none of the keywords"):
                notes.append(f"{exposure_problem[1]}: a bias, exposure taken as 0 s")
        else:
            problems.append(exposure_problem)
    if image_type == "science" and exposure == 0:
        notes.append("exposure 0 s: a science frame that saw no light")
    return image_type or "", type_rule, exposure, problems, notes


def frame_row(name, header, path, profile, *, image_types=None, folders=True, problems=(),
              notes=()):
    """One row of a night's frame table, from the frame's header.

    Parameters
    ----------
    name : str
        The file, as named in the collection.
    header : `~astropy.io.fits.Header`
    path : str
        The file's path, for the messages.
    profile : `~ccdproc_ext.InstrumentProfile`
    image_types : dict or None, optional
        Overrides of the frame type (see `frame_type`). Default is ``None``.
    folders : bool, optional
        See `frame_type`. Default is ``True``.
    problems : list of tuple, optional
        ``(kind, words)`` of the problems found before the header was read through the
        profile (a truncated data unit, a duplicate file). Default is none.
    notes : list of str, optional
        Notes found so far (repaired cards). Default is none.

    Returns
    -------
    row : dict
        The row, without ``date_obs`` and ``mjd`` (see `frame_table`).
    date_obs : `~astropy.time.Time` or None
        The start of the exposure.
    given : dict
        ``binning``: whether the header gives a binning; ``saturation``: the
        ``(keyword, value)`` of its saturation level, or ``None``.
    """
    image_type, type_rule, exposure, type_problems, type_notes = _type_and_exposure(
        name, header, path, profile, image_types, folders)
    problems, notes = [*problems, *type_problems], [*notes, *type_notes]
    try:
        binning = profile.binning(header, path=path)
    except CcdprocExtError as err:
        binning = None
        problems.append((type(err).__name__, str(err).removeprefix(f"{path}: ")))
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
                                       (1, 1) if binning is None else binning))
    done = _steps_done(header)
    for evidence, kinds in _by_evidence(done).items():
        notes.append(f"{' and '.join(kinds)} already done ({evidence}): not done again")
    agree = [f"{key}={str(card_value(header, key)[0] if key in header else '').strip()}"
             for key in profile.match_keywords]
    binning = (0, 0) if binning is None else binning
    return {
        "file": name,
        "type": image_type,
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
    }, date_obs, _given(profile, header)


def frame_table(rows, times):
    """The table of a night's frames.

    Parameters
    ----------
    rows : list of dict
        `frame_row` of each frame.
    times : list of `~astropy.time.Time` or None
        The start of each frame's exposure.

    Returns
    -------
    `~astropy.table.Table`
        The rows, with ``date_obs`` (ISO text, ``""`` when unknown), ``mjd`` (NaN when
        unknown) and ``night`` (see `assign_nights`).
    """
    names, dtypes = tuple(_COLUMNS), tuple(_COLUMNS.values())
    if not rows:
        return Table(names=(*names, "night"), dtype=(*dtypes, "i8"))
    rows = [dict(row) for row in rows]
    for row, date_obs, mjd in zip(rows, *_isot_and_mjd(times), strict=True):
        row["date_obs"], row["mjd"] = date_obs, mjd
    table = Table(rows=[[r[n] for n in names] for r in rows], names=names, dtype=dtypes)
    table["night"] = assign_nights(np.asarray(table["mjd"], dtype=float))
    return table
