"""Which master of a set fits a frame, and why: the rules of matching, in one place.

`choose_master` is the one matcher: the plan (`~ccdproc_ext.build_plan`, for the
night's own masters and a library's) and `~ccdproc_ext.CalibrationLibrary.find` both
choose with it. Among the masters of a kind (`MasterCandidates`), a frame gets one of its
group (shape, binning, the profile's ``match_keywords``), of its filter for flats, that
can be built; then:

- temperature: masters whose nearest frame is within the profile's tolerance are
  preferred; when there is none, the nearest is used with a note ("bias at 24.6 C, 2.1 C
  from the frame"), unless matching is strict, when it is a problem;
- darks: a dark within the dark tolerance is used as it is (the nearest, a tie to the
  longer). Otherwise, when scaling is allowed and the frame has a master bias, the
  nearest dark is scaled by exposure time, a near-tie going to the longer dark (scaling
  down adds less noise than scaling up);
- then the nearest in time.

A frame none of whose masters fits is a `~ccdproc_ext.CalibrationMatchError` saying why,
in words.
"""

import math

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.table import Table

from .exceptions import CalibrationMatchError
from .profiles import get_profile

__all__ = ["LONGEST_EXPOSURE", "MASTER_COLUMNS", "NOT_BUILDABLE", "MasterCandidates",
           "OtherGroupsError", "beyond", "choose_master", "dark_scale_problem",
           "describe_group", "find_nearest_dark_exposure", "group_key", "masters_table"]

#: The longest exposure (s) a frame of one night can have: a day. A dark scaled to a
#: longer one says that the frame's exposure time is not one a night can hold (an
#: ``EXPTIME`` of 1e300 scales a 60 s dark by 1.7e298, and every pixel becomes
#: infinite): the frame is refused, not calibrated.
LONGEST_EXPOSURE = 86400.0

def dark_scale_problem(exposure, dark_exposure):
    """Why a dark of ``dark_exposure`` seconds cannot be scaled to ``exposure`` seconds,
    in words, or ``None`` when it can (see `LONGEST_EXPOSURE`).

    The plan does not choose such a dark, and `~ccdproc_ext.calibrate_frame` refuses to
    scale one.

    Parameters
    ----------
    exposure, dark_exposure : float
        The frame's and the dark's exposure times (s).

    Returns
    -------
    str or None
    """
    scale = exposure / dark_exposure
    if not 0 < exposure <= LONGEST_EXPOSURE or not np.isfinite(scale):
        return (f"dark scale beyond what a night can hold: {scale:.3g} ({exposure:g} s / "
                f"{dark_exposure:g} s), while an exposure is above 0 and at most a day "
                f"({LONGEST_EXPOSURE:g} s)")
    return None


#: The rule of a calibration whose only possible masters cannot be built.
NOT_BUILDABLE = "no master that can be built"


class MasterCandidates:
    """The masters a frame may get, and the settings of the rules that choose among them.

    A night's own masters (``matching``), or a library's as a frame sees them
    (`~ccdproc_ext.library.LibraryMasters`); `choose_master` reads nothing else.

    Parameters
    ----------
    masters : `~astropy.table.Table`
        One row per master (see `MASTER_COLUMNS`).
    facts : dict
        Master name -> ``{"key": group key (see `group_key`), "temperatures": array of
        its frames' matching temperatures, "files": list}``.
    profile : `~ccdproc_ext.InstrumentProfile`
        Whose temperature tolerance applies.
    scale_darks : bool, optional
        Whether a dark of another exposure time may be scaled. Default is ``False``.
    scale_source : str, optional
        Where ``scale_darks`` comes from, said when a dark cannot be scaled.
    dark_tolerance : float, optional
        Largest exposure difference (s) of a dark used as it is. Default is 0.5.
    strict_temperature : bool, optional
        Whether no master within the temperature tolerance is a problem (else the
        nearest is used, with a note). Default is ``False``.
    present : set of str, optional
        The kinds of calibration frames present at all, usable or not: a kind present
        without a usable master is a problem, an absent one a step skipped.
    """

    def __init__(self, masters, facts, profile, *, scale_darks=False, scale_source="",
                 dark_tolerance=0.5, strict_temperature=False, present=()):
        self.masters, self.facts, self.profile = masters, facts, profile
        self.scale_darks = scale_darks
        self.scale_source = scale_source
        self.dark_tolerance = dark_tolerance
        self.strict_temperature = strict_temperature
        self.present = set(present)
        self.buildable = {}  # master name -> bool, when known


#: Relative and absolute slack (s) when comparing exposure differences, so that a tie or a
#: difference equal to the tolerance is not decided by floating-point rounding.
_RTOL, _ATOL = 1e-9, 1e-9


def beyond(difference, tolerance):
    """Whether ``difference`` exceeds ``tolerance`` by more than floating-point rounding.

    Parameters
    ----------
    difference, tolerance : float

    Returns
    -------
    bool
        ``False`` for a difference equal to the tolerance up to rounding, or NaN.
    """
    return difference > tolerance and not np.isclose(difference, tolerance, rtol=_RTOL,
                                                      atol=_ATOL)


def find_nearest_dark_exposure(image, dark_exposure_times, tolerance=0.5, *, profile=None):
    """Find the dark exposure time closest to that of ``image``.

    The CCD Data Reduction Guide's helper, with ties and errors settled: a tie goes to the
    longer dark, and a difference over ``tolerance`` is an error naming both times.

    Parameters
    ----------
    image : `~astropy.nddata.CCDData`, `~astropy.io.fits.Header` or float
        The frame (its exposure is read through ``profile``,
        `~ccdproc_ext.InstrumentProfile.exposure_time`), or its exposure time in seconds.
    dark_exposure_times : sequence of float
        The exposure times of the available darks.
    tolerance : float or None, optional
        Largest allowed difference in seconds; ``None`` skips the check. Default is 0.5.
    profile : `~ccdproc_ext.InstrumentProfile` or None, optional
        Whose exposure-time keywords to read. Default is ``None``: the generic profile's
        (``EXPTIME``, ``EXPOSURE``, ``ITIME``).

    Returns
    -------
    float
        The closest dark exposure time.

    Raises
    ------
    CalibrationMatchError
        If there are no dark exposure times, or the closest one differs from the image's
        by more than ``tolerance``.

    Examples
    --------
    >>> find_nearest_dark_exposure(45.0, [10, 30, 60, 300], tolerance=None)
    60.0
    >>> find_nearest_dark_exposure(31.0, [10, 30, 60])
    Traceback (most recent call last):
    ...
    ccdproc_ext.exceptions.CalibrationMatchError: image exposure 31 s: the closest dark is 30 s, ...
    """
    if isinstance(image, int | float | np.integer | np.floating):
        exposure = float(image)
    else:
        header = image.meta if isinstance(image, CCDData) else image
        if not isinstance(header, dict | fits.Header):
            raise TypeError(f"expected a CCDData, a FITS header or an exposure time, "
                            f"not {type(image).__name__}")
        profile = get_profile("generic") if profile is None else profile
        exposure = profile.exposure_time(fits.Header(header) if isinstance(header, dict)
                                         else header)
    times = np.unique(np.asarray(dark_exposure_times, dtype=float))
    if times.size == 0:
        raise CalibrationMatchError(f"image exposure {exposure:g} s: there are no darks")
    distance = np.abs(times - exposure)
    # Exposure times are decimal numbers held in binary: 0.3 s is not exactly halfway
    # between 0.2 s and 0.4 s, and a tie must not depend on that.
    tied = np.isclose(distance, distance.min(), rtol=_RTOL, atol=_ATOL)
    closest = float(times[tied].max())  # a tie goes to the longer dark
    difference = abs(closest - exposure)
    if tolerance is not None and beyond(difference, tolerance):
        raise CalibrationMatchError(
            f"image exposure {exposure:g} s: the closest dark is {closest:g} s, "
            f"{difference:g} s away, more than the tolerance of {tolerance:g} s")
    return closest


def group_key(row):
    """What a frame and its calibrations must share: shape, binning, ``match_keywords``.

    Parameters
    ----------
    row : `~astropy.table.Row` or dict
        A frame, with ``shape``, ``xbin``, ``ybin`` and ``agree``.

    Returns
    -------
    tuple
    """
    return (str(row["shape"]), int(row["xbin"]), int(row["ybin"]), str(row["agree"]))


def describe_group(key):
    """A group key (`group_key`) in words: ``"2048x2048, binning 1x1, GAIN=2"``."""
    shape, xbin, ybin, agree = key
    text = f"{shape}, binning {xbin}x{ybin}"
    return text + (f", {agree}" if agree else "")


def _celsius(value):
    """A temperature or a temperature difference as the plan writes it: ``-10``, ``24.6``."""
    return f"{round(float(value), 2):g}"


#: The columns of the table of masters and their types, in order.
MASTER_COLUMNS = {
    "name": "U", "kind": "U", "group": "U", "group_key": "U", "night": "i4", "exposure": "f8",
    "filter": "U", "temperature": "f8", "mjd": "f8", "n_frames": "i4", "files": "U",
    "origin": "U", "path": "U",
}


def masters_table(rows):
    """A table of masters (the columns of `MASTER_COLUMNS`) from rows as dicts."""
    names = tuple(MASTER_COLUMNS)
    if not rows:
        return Table(names=names, dtype=[MASTER_COLUMNS[n] for n in names])
    return Table(rows=[[r[n] for n in names] for r in rows], names=names)


class OtherGroupsError(CalibrationMatchError):
    """There are masters of a kind, but none of the frame's group.

    ``group`` is the frame's group in words, ``groups`` those of the masters.
    """

    def __init__(self, message, *, group, groups):
        super().__init__(message)
        self.group, self.groups = group, groups


def choose_master(kind, frame, night, *, temperature, has_bias, only_buildable=False):
    """The master of ``kind`` for ``frame``, by the rules, and why.

    Parameters
    ----------
    kind : {"bias", "dark", "flat"}
    frame : `~astropy.table.Row` or dict
        The frame: its group keys (`group_key`), ``exposure``, ``filter``, ``mjd``.
    night : `MasterCandidates`
        The masters to choose among, and the settings of the rules.
    temperature : float
        The frame's matching temperature (C), NaN when unknown.
    has_bias : bool
        Whether the frame has a master bias (a dark can be scaled only then).
    only_buildable : bool, optional
        Choose only among masters known to be buildable. Default is ``False``.

    Returns
    -------
    master : `~astropy.table.Row` or None
        ``None`` when there are no frames of ``kind`` at all: the step is skipped.
    details : dict
        ``rule`` (in words), ``master`` (name), ``dexposure``, ``scale``, ``dtime``,
        ``dtemperature`` and ``note``.

    Raises
    ------
    CalibrationMatchError
        Saying, in words, why no master can be chosen (`OtherGroupsError` when the
        masters are all of other groups).
    """
    masters = night.masters
    details = {"rule": "", "master": "", "dexposure": math.nan, "scale": math.nan,
               "dtime": math.nan, "dtemperature": math.nan, "note": ""}
    candidates = np.flatnonzero(masters["kind"] == kind)
    if candidates.size == 0:
        if kind in night.present:
            raise CalibrationMatchError(
                f"no usable {kind} frame: every {kind} frame of this night has a problem")
        details["rule"] = f"no {kind} frames in this night: step skipped"
        return None, details
    key = group_key(frame)
    pool = [i for i in candidates if night.facts[masters["name"][i]]["key"] == key]
    if not pool:
        groups = "; ".join(sorted(set(masters["group"][candidates])))
        raise OtherGroupsError(
            f"no {kind} matches {describe_group(key)}; the {kind} frames are: {groups}",
            group=describe_group(key), groups=groups)
    if kind == "flat":
        pool = _flats_in_filter(frame, pool, candidates, night, details)
    if only_buildable:
        pool = [i for i in pool if night.buildable.get(masters["name"][i], True)]
        if not pool:
            raise CalibrationMatchError(NOT_BUILDABLE)
    pool, distance = _by_temperature(kind, temperature, pool, night)
    rule = ["same group"]
    if kind == "dark":
        pool, dark_rule = _by_exposure(frame, pool, night, details, has_bias=has_bias)
        rule.append(dark_rule)
    if kind == "flat":
        flat_filter = str(masters["filter"][pool[0]])
        rule.append(f"filter {flat_filter}" if flat_filter else "no filter")
    dtime = np.abs(np.asarray(masters["mjd"][pool], dtype=float) - frame["mjd"]) * 24.0
    dtime = np.where(np.isfinite(dtime), dtime, np.inf)
    best = int(np.argmin(dtime))
    chosen = pool[best]
    master = masters[chosen]
    if len(pool) > 1:
        rule.append("nearest in time")
    details["rule"] = ", ".join(rule)
    details["master"] = master["name"]
    details["dtime"] = float(dtime[best]) if np.isfinite(dtime[best]) else math.nan
    details["dtemperature"], temperature_note = _temperature_details(
        kind, temperature, master, night, distance[chosen])
    details["note"] = "; ".join(n for n in (details["note"], temperature_note) if n)
    return master, details


def _flats_in_filter(frame, pool, candidates, night, details):
    """The flats of ``pool`` in the frame's filter.

    A frame that names no filter takes the flats of its group when they are all of one
    filter (with a note): the night said its filter is unknown, and one filter is the
    only one it can have been taken in. Otherwise a flat of another filter is a problem.
    """
    masters = night.masters
    in_filter = [i for i in pool if masters["filter"][i] == frame["filter"]]
    if in_filter:
        return in_filter
    filters = sorted({str(masters["filter"][i]) for i in pool})
    if not str(frame["filter"]) and len(filters) == 1:
        details["note"] = (f"the frame names no filter; the flats of its group are all "
                           f"in filter {filters[0]!r}: used")
        return pool
    raise CalibrationMatchError(
        f"no flat in filter {str(frame['filter'])!r}; flats exist for "
        + ", ".join(repr(str(f)) for f in sorted(set(masters["filter"][candidates]))))


def _temperature_distances(temperature, pool, night):
    """Master index -> distance (C) from ``temperature`` to the nearest of its frames
    (NaN when either temperature is unknown)."""
    distance = {}
    for i in pool:
        temps = night.facts[night.masters["name"][i]]["temperatures"]
        gaps = np.abs(temps - temperature)
        distance[i] = float(np.nanmin(gaps)) if np.isfinite(gaps).any() else math.nan
    return distance


def _by_temperature(kind, temperature, pool, night):
    """The masters of ``pool`` to choose among by temperature, and every distance.

    Masters whose nearest frame is within the tolerance are preferred (an unknown
    temperature passes). When there is none, the nearest ones (and those within the
    tolerance of the nearest) are used, and the row gets a note; with strict temperature
    matching that is a problem instead.
    """
    distance = _temperature_distances(temperature, pool, night)
    tolerance = night.profile.temperature_tolerance
    if tolerance is None or not np.isfinite(temperature):
        return pool, distance
    within = [i for i in pool if not beyond(distance[i], tolerance)]  # NaN passes
    if within:
        return within, distance
    if night.strict_temperature:
        raise CalibrationMatchError(
            f"no {kind} within {tolerance:g} C of the frame's {_celsius(temperature)} C; "
            f"the {kind} frames are at "
            + ", ".join(f"{_celsius(t)} C" for t in sorted(set(night.masters["temperature"][pool])))
            + " (strict temperature matching: strict_temperature=True)")
    nearest = min(distance[i] for i in pool)
    return [i for i in pool if not beyond(distance[i] - nearest, tolerance)], distance


def _temperature_details(kind, temperature, master, night, distance):
    """(Δtemperature of the master's nearest frame minus the frame's, note or ``""``)."""
    if not np.isfinite(distance):
        return float(master["temperature"] - temperature), ""
    temps = night.facts[master["name"]]["temperatures"]
    nearest = float(temps[np.nanargmin(np.abs(temps - temperature))])
    tolerance = night.profile.temperature_tolerance
    note = ""
    if tolerance is not None and beyond(distance, tolerance):
        note = (f"{kind} at {_celsius(nearest)} C, {_celsius(distance)} C from the frame "
                f"(tolerance {tolerance:g} C): the nearest there is")
    return nearest - float(temperature), note


def _near_longest(times, exposure, slack):
    """The longest of the exposure times within ``slack`` of the nearest, and those."""
    distance = np.abs(times - exposure)
    near = times[[not beyond(d - distance.min(), slack) for d in distance]]
    return float(near.max()), sorted(set(near.tolist()))


def _by_exposure(frame, pool, night, details, *, has_bias):
    """The dark masters of ``pool`` of the chosen exposure time, and the rule in words.

    A dark within the tolerance is used as it is (the nearest; a tie to the longer).
    Otherwise the nearest is scaled by exposure time, a near-tie (exposure differences
    within the dark tolerance of each other) going to the longer dark, since scaling down
    adds less noise than scaling up. Scaling needs the frame's own master bias: a dark
    that still holds the bias level cannot be scaled.
    """
    masters, tolerance = night.masters, night.dark_tolerance
    exposure = float(frame["exposure"])
    if not np.isfinite(exposure):
        raise CalibrationMatchError("the frame has no exposure time: no dark can be chosen")
    times = np.asarray(masters["exposure"][pool], dtype=float)
    distance = np.abs(times - exposure)
    within = np.array([not beyond(d, tolerance) for d in distance])
    if within.any():
        chosen = find_nearest_dark_exposure(exposure, times[within], tolerance=None)
        details["scale"] = 1.0
        rule = f"exposure {chosen:g} s within {tolerance:g} s"
    else:
        chosen, near = _near_longest(times, exposure, tolerance)
        difference = abs(chosen - exposure)
        head = (f"frame exposure {exposure:g} s: the closest dark is {chosen:g} s, "
                f"{difference:g} s away, more than the tolerance of {tolerance:g} s, and ")
        if not night.scale_darks:
            raise CalibrationMatchError(
                head + f"dark scaling is off ({night.scale_source}); allow it with "
                "scale_darks=True or --scale-darks")
        if not has_bias:
            raise CalibrationMatchError(
                head + "it cannot be scaled: the frame has no master bias, so the dark "
                "still holds the bias level")
        if chosen <= 0:
            raise CalibrationMatchError(head + f"a {chosen:g} s dark cannot be scaled")
        problem = dark_scale_problem(exposure, chosen)
        if problem:  # the reason first: the command line groups problems by it
            raise CalibrationMatchError(f"{problem}; the closest dark is {chosen:g} s")
        details["scale"] = exposure / chosen
        rule = f"scaled {chosen:g} s -> {exposure:g} s (no dark within {tolerance:g} s"
        if len(near) > 1:
            rule += f"; {' and '.join(f'{t:g}' for t in near)} s about as near: the longer"
        rule += ")"
    details["dexposure"] = chosen - exposure
    return [i for i in pool if masters["exposure"][i] == chosen], rule
