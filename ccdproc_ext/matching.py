"""Which calibration does each frame get, and why: the rules, in one place.

The plan is built in two steps:

1. **Masters.** Calibration frames are grouped into the masters they will be combined
   into: frames of one type that agree on shape, binning, the profile's
   ``match_keywords``, night and temperature; darks also by exposure time, flats by
   filter. The temperature is the set point when the frame has one (``SET-TEMP``), else
   the measured one; temperatures are clustered by single linkage (sorted, split only
   where neighbours are further apart than the profile's tolerance), so a night that
   drifts slowly is one group and no single frame decides where a group starts.
2. **Choice**, in the order calibrations depend on each other (bias, dark, flat,
   science). Every frame is given, for each calibration it needs, a master that agrees
   with it (shape, binning, ``match_keywords``; the same filter for flats) and that can
   be built (at least one of its frames has its own calibrations). Among those:

   - temperature: masters whose nearest frame is within the tolerance are preferred;
     when there is none, the nearest is used and the row's ``notes`` say so ("bias at
     24.6 C, 2.1 C from the frame"), unless temperature matching is strict
     (``strict_temperature=True``), when it is a problem;
   - darks: a dark within the dark tolerance is used as it is (the nearest, a tie to the
     longer). Otherwise, when scaling is allowed and the frame has a master bias, the
     nearest dark is scaled by exposure time; a near-tie (exposure differences within the
     dark tolerance of each other) goes to the longer dark, since scaling down adds less
     noise than scaling up. The rule says "scaled 300 s -> 10 s (no dark within 0.5 s)".
     Without a master bias a dark still holds the bias level and cannot be scaled;
   - then the nearest in time.

   A frame whose calibration cannot be chosen is a problem, in words, in its row.

Biases need nothing, darks need a bias, flats a bias and a dark, science frames all
three. A type of calibration absent from the whole night is a skipped step, not a
problem (TIRCAM2 nights have no darks); the science rows and the plan's
``meta["notes"]`` say so ("no flat frames: science frames not flat-fielded"). A type that
is present but matches nothing (or whose frames all have problems, truncated files say) is
a problem, found before any pixel is touched.
"""

import copy
import math

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.table import Table

from .calibrate import dark_scale_problem
from .exceptions import CalibrationMatchError
from .library import CalibrationLibrary, night_date, validity_text

__all__ = ["build_plan", "find_nearest_dark_exposure"]

_EXPOSURE_KEYWORDS = ("EXPTIME", "EXPOSURE")

#: Which calibrations each frame type needs, in the order they are applied.
NEEDS = {
    "bias": (),
    "dark": ("bias",),
    "flat": ("bias", "dark"),
    "science": ("bias", "dark", "flat"),
}


#: Relative and absolute slack (s) when comparing exposure differences, so that a tie or a
#: difference equal to the tolerance is not decided by floating-point rounding.
_RTOL, _ATOL = 1e-9, 1e-9


def _over(difference, tolerance):
    """Whether ``difference`` exceeds ``tolerance`` by more than rounding."""
    return difference > tolerance and not np.isclose(difference, tolerance, rtol=_RTOL,
                                                      atol=_ATOL)


def _exposure_of(image, profile=None):
    if isinstance(image, int | float | np.integer | np.floating):
        return float(image)
    header = image.meta if isinstance(image, CCDData) else image
    if not isinstance(header, dict | fits.Header):
        raise TypeError(f"expected a CCDData, a FITS header or an exposure time, "
                        f"not {type(image).__name__}")
    if profile is not None:
        return profile.exposure_time(header)
    from .headers import header_float

    return header_float(fits.Header(header) if isinstance(header, dict) else header,
                        _EXPOSURE_KEYWORDS)


def find_nearest_dark_exposure(image, dark_exposure_times, tolerance=0.5, *, profile=None):
    """Find the dark exposure time closest to that of ``image``.

    The CCD Data Reduction Guide's helper, with ties and errors settled: a tie goes to the
    longer dark, and a difference over ``tolerance`` is an error naming both times.

    Parameters
    ----------
    image : `~astropy.nddata.CCDData`, `~astropy.io.fits.Header` or float
        The frame (its exposure is read from ``EXPTIME`` or ``EXPOSURE``, or the profile's
        keywords), or its exposure time in seconds.
    dark_exposure_times : sequence of float
        The exposure times of the available darks.
    tolerance : float or None, optional
        Largest allowed difference in seconds; ``None`` skips the check. Default is 0.5.
    profile : `~ccdproc_ext.InstrumentProfile` or None, optional
        Whose exposure-time keywords to read. Default is ``None``.

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
    exposure = _exposure_of(image, profile)
    times = np.unique(np.asarray(dark_exposure_times, dtype=float))
    if times.size == 0:
        raise CalibrationMatchError(f"image exposure {exposure:g} s: there are no darks")
    distance = np.abs(times - exposure)
    # Exposure times are decimal numbers held in binary: 0.3 s is not exactly halfway
    # between 0.2 s and 0.4 s, and a tie must not depend on that.
    tied = np.isclose(distance, distance.min(), rtol=_RTOL, atol=_ATOL)
    closest = float(times[tied].max())  # a tie goes to the longer dark
    difference = abs(closest - exposure)
    if tolerance is not None and _over(difference, tolerance):
        raise CalibrationMatchError(
            f"image exposure {exposure:g} s: the closest dark is {closest:g} s, "
            f"{difference:g} s away, more than the tolerance of {tolerance:g} s")
    return closest


# --------------------------------------------------------------------------- masters
def _group_key(row):
    """What a frame and its calibrations must share: shape, binning, ``match_keywords``."""
    return (str(row["shape"]), int(row["xbin"]), int(row["ybin"]), str(row["agree"]))


def _describe_group(key):
    shape, xbin, ybin, agree = key
    text = f"{shape}, binning {xbin}x{ybin}"
    return text + (f", {agree}" if agree else "")


def _celsius(value):
    """A temperature or a temperature difference as the plan writes it: ``-10``, ``24.6``."""
    return f"{round(float(value), 2):g}"


def _matching_temperatures(frames):
    """The temperature each frame is matched by: its set point, else its measured one.

    The set point is what the camera was asked to hold and is the same for every frame of
    a setting; a measured temperature drifts with the night (uncooled cameras).
    """
    measured = np.asarray(frames["temperature"], dtype=float)
    if "set_temperature" not in frames.colnames:
        return measured
    set_point = np.asarray(frames["set_temperature"], dtype=float)
    return np.where(np.isfinite(set_point), set_point, measured)


def _temperature_clusters(values, tolerance):
    """Label temperatures by single-linkage clusters: sorted, split only at gaps > ``tolerance``.

    A cluster does not depend on where it starts: a night drifting 24.5 -> 26.7 C in
    steps smaller than the tolerance is one cluster, and one outlier frame cannot split
    the others. Unknown temperatures get the label -1; ``tolerance=None`` puts every frame
    in one cluster.
    """
    labels = np.zeros(len(values), dtype=int)
    if tolerance is None:
        return labels
    known = np.isfinite(values)
    labels[~known] = -1
    order = np.flatnonzero(known)[np.argsort(values[known], kind="stable")]
    label, previous = 0, None
    for i in order:
        if previous is not None and _over(values[i] - previous, tolerance):
            label += 1
        labels[i] = label
        previous = values[i]
    return labels


#: The columns of the table of masters and their types, in order.
_MASTER_COLUMNS = {
    "name": "U", "kind": "U", "group": "U", "group_key": "U", "night": "i4", "exposure": "f8",
    "filter": "U", "temperature": "f8", "mjd": "f8", "n_frames": "i4", "files": "U",
    "origin": "U", "path": "U",
}


def _build_masters(frames, profile):
    """Group calibration frames into masters.

    Returns
    -------
    masters : `~astropy.table.Table`
        One row per master (see ``_MASTER_COLUMNS``).
    facts : dict
        Master name -> ``{"key": group key tuple, "temperatures": array of its frames'
        matching temperatures, "files": list}``, compared directly by the choice.
    """
    matching_temperature = _matching_temperatures(frames)
    rows = []
    for kind in ("bias", "dark", "flat"):
        usable = np.flatnonzero((frames["type"] == kind) & (frames["problem"] == ""))
        if usable.size == 0:
            continue
        temperatures = matching_temperature[usable]
        clusters = _temperature_clusters(temperatures, profile.temperature_tolerance)
        keys = {}
        for position, i in enumerate(usable):
            row = frames[i]
            key = (_group_key(row), int(row["night"]), int(clusters[position]))
            if kind == "dark":
                key += (float(row["exposure"]),)
            if kind == "flat":
                key += (str(row["filter"]),)
            keys.setdefault(key, []).append(position)
        for key, members in sorted(keys.items(), key=lambda kv: str(kv[0])):
            sel = frames[usable[members]]
            temps = temperatures[members]
            rows.append({
                "kind": kind,
                "group": _describe_group(key[0]),
                "group_key": repr(key[0]),
                "key": key[0],
                "temperatures": temps,
                "night": key[1],
                "exposure": float(np.median(sel["exposure"])),
                "filter": str(sel["filter"][0]) if kind == "flat" else "",
                "temperature": float(np.nanmedian(temps)) if np.isfinite(temps).any()
                else math.nan,
                "mjd": float(np.nanmean(sel["mjd"])) if np.isfinite(sel["mjd"]).any()
                else math.nan,
                "n_frames": len(sel),
                "files": ",".join(sel["file"]),
                "origin": "night",
                "path": "",
            })
    # Stable, readable names: bias_01, dark_60s_01, flat_R_01 ...
    counters = {}
    for row in rows:
        stem = row["kind"]
        if row["kind"] == "dark":
            stem += f"_{row['exposure']:g}s"
        if row["kind"] == "flat":
            stem += f"_{_safe(row['filter']) or 'nofilter'}"
        counters[stem] = counters.get(stem, 0) + 1
        row["name"] = f"{stem}_{counters[stem]:02d}"
    facts = {row["name"]: {"key": row["key"], "temperatures": row["temperatures"],
                           "files": row["files"].split(",")} for row in rows}
    names = tuple(_MASTER_COLUMNS)
    if not rows:
        return Table(names=names, dtype=[_MASTER_COLUMNS[n] for n in names]), facts
    return Table(rows=[[r[n] for n in names] for r in rows], names=names), facts


def _safe(text):
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in str(text)).strip("-")


# ---------------------------------------------------------------------------- choice
class _Night:
    """What the choice of one frame's calibrations needs to know about the whole night."""

    def __init__(self, frames, profile, *, scale_darks, scale_source, dark_tolerance,
                 strict_temperature, library=None):
        self.profile = profile
        self.masters, self.facts = _build_masters(frames, profile)
        self.scale_darks = scale_darks
        self.scale_source = scale_source
        self.dark_tolerance = dark_tolerance
        self.strict_temperature = strict_temperature
        # Types present at all, usable or not: a type whose frames all have problems is
        # a missing calibration, not a step to skip.
        self.present = set(frames["type"])
        self.buildable = {}  # master name -> bool, known once its kind's rows are planned
        self.rows = {}  # file -> plan row
        self.library = None if library is None else _Library(library, self)

    def settle(self, kind):
        """Mark which masters of ``kind`` can be built: at least one member frame is ok."""
        for name in self.masters["name"][(self.masters["kind"] == kind)
                                         & (self.masters["origin"] == "night")]:
            self.buildable[name] = any(self.rows[f]["status"] == "ok"
                                       for f in self.facts[name]["files"])

    def why_unbuildable(self, name):
        """Why master ``name`` cannot be built, from its frames' rows, in words."""
        files = self.facts[name]["files"]
        rows = [self.rows[f] for f in files]
        missing = [k for k in ("bias", "dark", "flat")
                   if any(r[f"{k}_rule"] in ("no match", _NOT_BUILDABLE) for r in rows)]
        frames = "its frame has" if len(files) == 1 else f"its {len(files)} frames have"
        what = f"no {' or '.join(missing)}" if missing else "a problem"
        return f"master {name} cannot be built: {frames} {what}: {files[0]}: {rows[0]['problem']}"


#: The rule of a calibration whose only possible masters cannot be built.
_NOT_BUILDABLE = "no master that can be built"

#: The rule of a calibration whose library masters fail verification (see `_Library`).
_LIBRARY_UNUSABLE = "library master unusable"


def _choose(kind, frame, night, *, temperature, has_bias, only_buildable=False):
    """Pick the master of ``kind`` for ``frame``: (master row or None, details dict).

    Raises `CalibrationMatchError` in words when none can be chosen.
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
    key = _group_key(frame)
    pool = [i for i in candidates if night.facts[masters["name"][i]]["key"] == key]
    if not pool:
        groups = "; ".join(sorted(set(masters["group"][candidates])))
        raise _OtherGroups(
            f"no {kind} matches {_describe_group(key)}; the {kind} frames are: {groups}",
            group=_describe_group(key), groups=groups)
    if kind == "flat":
        pool = _flats_in_filter(frame, pool, candidates, night, details)
    if only_buildable:
        pool = [i for i in pool if night.buildable.get(masters["name"][i], True)]
        if not pool:
            raise CalibrationMatchError(_NOT_BUILDABLE)
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
    within = [i for i in pool if not _over(distance[i], tolerance)]  # NaN passes
    if within:
        return within, distance
    if night.strict_temperature:
        raise CalibrationMatchError(
            f"no {kind} within {tolerance:g} C of the frame's {_celsius(temperature)} C; "
            f"the {kind} frames are at "
            + ", ".join(f"{_celsius(t)} C" for t in sorted(set(night.masters["temperature"][pool])))
            + " (strict temperature matching: strict_temperature=True)")
    nearest = min(distance[i] for i in pool)
    return [i for i in pool if not _over(distance[i] - nearest, tolerance)], distance


def _temperature_details(kind, temperature, master, night, distance):
    """(Δtemperature of the master's nearest frame minus the frame's, note or ``""``)."""
    if not np.isfinite(distance):
        return float(master["temperature"] - temperature), ""
    temps = night.facts[master["name"]]["temperatures"]
    nearest = float(temps[np.nanargmin(np.abs(temps - temperature))])
    tolerance = night.profile.temperature_tolerance
    note = ""
    if tolerance is not None and _over(distance, tolerance):
        note = (f"{kind} at {_celsius(nearest)} C, {_celsius(distance)} C from the frame "
                f"(tolerance {tolerance:g} C): the nearest there is")
    return nearest - float(temperature), note


def _near_longest(times, exposure, slack):
    """The longest of the exposure times within ``slack`` of the nearest, and those."""
    distance = np.abs(times - exposure)
    near = times[[not _over(d - distance.min(), slack) for d in distance]]
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
    within = np.array([not _over(d, tolerance) for d in distance])
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


#: The columns of the plan and their types, in order.
_PLAN_COLUMNS = {
    "file": "U", "type": "U", "type_rule": "U", "group": "U", "night": "i8", "exposure": "f8",
    "filter": "U", "temperature": "f8", "set_temperature": "f8", "date_obs": "U",
    "bias": "U", "bias_rule": "U", "bias_dtime": "f8", "bias_dtemperature": "f8",
    "dark": "U", "dark_rule": "U", "dark_exposure": "f8", "dark_dexposure": "f8",
    "dark_scale": "f8", "dark_dtime": "f8", "dark_dtemperature": "f8",
    "flat": "U", "flat_rule": "U", "flat_dtime": "f8", "flat_dtemperature": "f8",
    "status": "U", "problem": "U", "problem_kind": "U", "notes": "U", "edit": "U",
}

#: What a science frame lacks when the night has no frame of a calibration type.
_MISSING_NOTES = {
    "bias": "no bias frames: science frames not bias-subtracted",
    "dark": "no dark frames: science frames not dark-subtracted",
    "flat": "no flat frames: science frames not flat-fielded",
}


def _plan_row(file, image_type):
    """A plan row with nothing chosen yet: empty strings and NaN distances."""
    row = {name: ("" if dtype == "U" else math.nan) for name, dtype in _PLAN_COLUMNS.items()}
    row.update(file=file, type=image_type, night=0, status="ok")
    return row


def _add_note(row, note):
    row["notes"] = "; ".join(n for n in (row["notes"], note) if n)


class _OtherGroups(CalibrationMatchError):
    """The night has calibrations of a kind, but none of the frame's group."""

    def __init__(self, message, *, group, groups):
        super().__init__(message)
        self.group, self.groups = group, groups


def _choose_of_night(calibration, frame, night, options):
    """The night's own master for ``calibration`` (or ``None``, step skipped): raises
    `CalibrationMatchError`, or `_Unbuildable` when its only masters cannot be built."""
    try:
        master, details = _choose(calibration, frame, night, **options)
    except _OtherGroups as err:
        if calibration != "bias":
            raise
        # Premise of "no bias, no frame": the bias must be taken out, and only a master
        # bias can. A group without biases is a night without them: its darks hold the
        # bias and are used as they are, so the rule steps aside with a note (a dark to
        # scale still needs a bias, and says so).
        return None, {"rule": "no bias of this group: step skipped", "master": "",
                      "dexposure": math.nan, "scale": math.nan, "dtime": math.nan,
                      "dtemperature": math.nan,
                      "note": (f"no bias frames of {err.group} (the bias frames are: "
                               f"{err.groups}): not bias-subtracted; darks of this group "
                               "hold the bias and are used unscaled")}
    if master is not None and not night.buildable.get(master["name"], True):
        unbuildable = master["name"]
        try:
            master, details = _choose(calibration, frame, night, only_buildable=True,
                                      **options)
        except CalibrationMatchError:
            raise _Unbuildable(night.why_unbuildable(unbuildable)) from None
        details["rule"] += f" ({unbuildable} cannot be built)"
    return master, details


class _Unbuildable(CalibrationMatchError):
    """The only masters a frame could get cannot be built."""


class _LibraryMasterUnusable(CalibrationMatchError):
    """The library masters that fit a frame are there, but fail verification (file
    missing or changed): a calibration missing, not a step to leave out."""


def _plan_calibration(row, calibration, frame, night, temperature, forced=None):
    """Choose ``calibration`` for one frame and write it into ``row``; returns the
    problem in words, or ``""``.

    The night's own masters come first; when the night has none for the frame, the
    library's (if any). ``forced`` is ``(row number, master name)`` from an edited plan:
    when it differs from the automatic choice it replaces it, checked by the same rules
    (a `CalibrationMatchError` naming the row and the column when it breaks them).
    """
    options = dict(temperature=temperature, has_bias=bool(row["bias"]))
    failure, library_words = None, ""
    try:
        master, details = _choose_of_night(calibration, frame, night, options)
    except _Unbuildable as err:
        failure = (_NOT_BUILDABLE, str(err))
    except CalibrationMatchError as err:
        failure = ("no match", str(err))
    if (failure is not None or master is None) and night.library is not None:
        try:
            master, details = night.library.choose(calibration, frame, options)
            failure = None
        except _LibraryMasterUnusable as err:
            failure = failure or (_LIBRARY_UNUSABLE, str(err))
            library_words = str(err) if failure[1] != str(err) else ""
        except CalibrationMatchError as err:
            library_words = str(err)
    if forced is not None:
        automatic = "" if failure is not None or master is None else str(master["name"])
        number, name = forced
        if name != automatic:
            master, details = _forced(calibration, frame, night, options, number, name)
            failure = None
            _add_edit(row, f"{calibration}: {name or 'none'} instead of "
                           f"{automatic or 'none'}")
    if failure is not None:
        row[f"{calibration}_rule"] = failure[0]
        return failure[1] + (f"; {library_words}" if library_words else "")
    row[calibration] = details["master"]
    row[f"{calibration}_rule"] = details["rule"]
    row[f"{calibration}_dtime"] = details["dtime"]
    row[f"{calibration}_dtemperature"] = details["dtemperature"]
    if details["note"]:
        _add_note(row, details["note"])
    if calibration == "dark" and master is not None:
        row["dark_exposure"] = float(master["exposure"])
        row["dark_dexposure"] = details["dexposure"]
        row["dark_scale"] = details["scale"]
    if master is None and frame["type"] == "science" and not row["edit"] and \
            not details["note"]:
        _add_note(row, _MISSING_NOTES[calibration])
        if library_words:
            _add_note(row, library_words)
    return ""


def _add_edit(row, edit):
    row["edit"] = "; ".join(e for e in (row["edit"], edit) if e)


def _forced(calibration, frame, night, options, number, name):
    """The master ``name`` that an edited plan gives ``frame``, checked by the rules of
    the automatic choice; ``""`` leaves the step out."""
    where = f"plan row {number} ({frame['file']}), column {calibration!r}"
    if not name:
        details = {"rule": "left out in the plan", "master": "", "dexposure": math.nan,
                   "scale": math.nan, "dtime": math.nan, "dtemperature": math.nan, "note": ""}
        return None, details
    source = night
    found = night.masters[night.masters["name"] == name]
    if not len(found) and night.library is not None:
        source = night.library.view_of(name)
        found = [] if source is None else source.masters
    if not len(found):
        known = ", ".join(str(n) for n in night.masters["name"][night.masters["kind"]
                                                                == calibration])
        hint = " (a library master: reduce with the library)" \
            if "@" in name and night.library is None else ""
        raise CalibrationMatchError(f"{where}: there is no master {name!r}{hint}; the "
                                    f"{calibration} masters of the plan are: {known or 'none'}")
    if found["kind"][0] != calibration:
        raise CalibrationMatchError(f"{where}: {name} is a {found['kind'][0]}, not a "
                                    f"{calibration}")
    if source is night and not night.buildable.get(name, True):
        raise CalibrationMatchError(f"{where}: {night.why_unbuildable(name)}")
    view = copy.copy(source)
    view.masters = found
    view.present = {calibration}
    try:
        master, details = _choose(calibration, frame, view, **options)
    except CalibrationMatchError as err:
        raise CalibrationMatchError(f"{where}: {name} cannot calibrate this frame: {err}") \
            from None
    if source is not night:
        problem = night.library.check(name, source.entries[name])
        if problem:
            raise CalibrationMatchError(f"{where}: {name} cannot be used: {problem}")
        night.library.adopt(master, source)
        details["rule"] = night.library.rule_of(name, master, frame, "")
    details["rule"] = f"set in the plan: {details['rule']}"
    return master, details


class _Library:
    """The masters of a `~ccdproc_ext.CalibrationLibrary` as the choice sees them.

    Candidates of each kind are read once (for the night's profile), as a table of
    masters like the night's own; a frame sees those within the validity window of its
    kind. The master chosen is checked (file there, checksum unchanged) before it is
    taken: one that fails is refused, said in ``problems``, and the next is chosen.
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
                rows.append({"name": name, "kind": kind, "group": _describe_group(key),
                             "group_key": repr(key), "night": -1,
                             "exposure": entry["exposure"], "filter": entry["filter"],
                             "temperature": entry["temperature"], "mjd": entry["mjd"],
                             "n_frames": entry["n_frames"], "files": "",
                             "origin": "library",
                             "path": str(self.library.resolve(entry))})
            self.tables[kind] = (_masters_table(rows), facts, by_name)
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
        `CalibrationMatchError` saying why there is none: `_LibraryMasterUnusable` when
        the masters that fit the frame are there but cannot be verified."""
        while True:
            view = self.view(kind, frame, self.refused)
            try:
                master, details = self._nearest(kind, frame, view, options)
            except CalibrationMatchError:
                unusable = self._nearest_refused(kind, frame, options)
                if unusable is None:
                    raise
                raise _LibraryMasterUnusable(
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
            return _choose(kind, frame, view, **options)
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
            master, _ = _choose(kind, frame, view, **options)
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
        name = str(master["name"])
        if name not in self.adopted:
            self.adopted[name] = {column: master[column] for column in _MASTER_COLUMNS}
            self.night.facts[name] = view.facts[name]

    @staticmethod
    def rule_of(name, master, frame, rest):
        stem, _, date = name.partition("@")
        rule = f"library: {stem} of {date.partition('#')[0]}"
        if frame is not None and np.isfinite(frame["mjd"]) and np.isfinite(master["mjd"]):
            days = float(frame["mjd"] - master["mjd"])
            rule += f", {abs(days):.1f} days {'before' if days >= 0 else 'after'}"
        return rule + (f" ({rest})" if rest else "")


def _masters_table(rows):
    names = tuple(_MASTER_COLUMNS)
    if not rows:
        return Table(names=names, dtype=[_MASTER_COLUMNS[n] for n in names])
    return Table(rows=[[r[n] for n in names] for r in rows], names=names)


def build_plan(collection, *, scale_darks=None, dark_tolerance=None, strict_temperature=None,
               library=None, validity=None, choices=None):
    """Build the calibration plan of a `~ccdproc_ext.NightCollection`.

    Rows are planned in the order calibrations depend on each other (bias, dark, flat,
    science), so that a master none of whose frames can be calibrated is known to be
    unbuildable before any frame is given it: such a frame gets another master of the
    same rules if one can be built, and is a problem saying why otherwise.

    Parameters
    ----------
    collection : `~ccdproc_ext.NightCollection`
        The night.
    scale_darks : bool or None, optional
        Allow darks of another exposure time, scaled (only for frames that have a master
        bias). Default: the profile's setting.
    dark_tolerance : float or None, optional
        Largest exposure difference (s) for an unscaled dark; also how close two
        exposure differences must be to count as a near-tie when scaling. Default: the
        profile's.
    strict_temperature : bool or None, optional
        When no master is within the profile's temperature tolerance, make the frame a
        problem instead of using the nearest one with a note. Default: the profile's
        ``strict_temperature`` when it has one, else ``False``.

    Returns
    -------
    `~astropy.table.Table`
        One row per frame: ``file``, ``type``, ``type_rule`` (the evidence that decided
        the type: ``IMAGETYP = Bias Frame``, ``file name``, ``OBJECT = sky flat``,
        ``guessed``, ``override``), ``group``, ``night``, ``exposure``,
        ``filter``, ``temperature`` (measured, else set point) and ``set_temperature``,
        then for each of ``bias``, ``dark``, ``flat`` the master's name (``""`` when
        none), the rule that chose it, and the distances (``dark_dexposure`` in s,
        ``*_dtime`` in hours, ``*_dtemperature`` in C, each the master's value minus the
        frame's, times as absolute values; the temperature is that of the master's frame
        nearest to the frame's), ``dark_scale``, and ``status`` (``ok`` or ``problem``)
        with ``problem`` in words and ``problem_kind`` the name of the error class it is
        (``FrameReadError``, ``HeaderError``, ``CalibrationMatchError``,
        ``DuplicateFrameError``), and ``notes`` (header cards repaired, a calibration
        further than the temperature tolerance, a step skipped for lack of frames), and
        ``edit`` (what an edited plan changed, ``"flat: flat_R_01 instead of
        flat_V_01"``). A file whose header could not be read gets a row of type
        ``unreadable``. ``meta["masters"]`` is the table of masters (name, kind, group,
        group_key, night, exposure, filter, temperature, mjd, n_frames, files, origin
        (``night`` or ``library``) and path (of a library master)); ``meta["notes"]``
        the night's notes (``"no flat frames: science frames not flat-fielded"``);
        with a library, ``meta["library"]`` its path and ``meta["library_problems"]``
        the library masters refused, ``[file, words]`` each.

    Other Parameters
    ----------------
    library : str, `pathlib.Path`, `~ccdproc_ext.CalibrationLibrary` or None, optional
        Where masters come from for frames whose night has none that fits them: the
        library master of the same group keys nearest in time, within the validity window
        of its kind, whose file is there unchanged. A master of the night always wins.
        Its rule says so: ``"library: bias_01 of 2024-03-01, 4.2 days before"``.
    validity : dict or None, optional
        Validity windows (days, or ``None`` for no limit) by kind, over the library's.
    choices : dict or None, optional
        ``{file: {"bias": (row number, master name), ...}}``: masters an edited plan
        gives frames (see `ccdproc_ext.plans`); ``""`` leaves the step out.

    Raises
    ------
    CalibrationMatchError
        When a master of ``choices`` breaks the rules (another shape, binning or filter),
        naming the plan's row and column.
    """
    profile = collection.profile
    if scale_darks is None:
        scale_darks = profile.scale_darks
        scale_source = f"scale_darks = {str(bool(scale_darks)).lower()} in profile {profile.name}"
    else:
        scale_source = f"scale_darks={bool(scale_darks)} was passed"
    dark_tolerance = profile.dark_tolerance if dark_tolerance is None else dark_tolerance
    if strict_temperature is None:
        strict_temperature = bool(getattr(profile, "strict_temperature", False))
    frames = collection.frames
    if library is not None:
        library = CalibrationLibrary.of(library, validity=validity)
    choices = dict(choices or {})
    night = _Night(frames, profile, scale_darks=bool(scale_darks), scale_source=scale_source,
                   dark_tolerance=float(dark_tolerance), strict_temperature=strict_temperature,
                   library=library)
    temperatures = _matching_temperatures(frames)
    set_points = (np.asarray(frames["set_temperature"], dtype=float)
                  if "set_temperature" in frames.colnames else np.full(len(frames), math.nan))
    rows = []
    for frame, set_point in zip(frames, set_points, strict=True):
        row = _plan_row(frame["file"], frame["type"] or "unknown")
        row.update({
            "type_rule": frame["type_rule"],
            "group": _describe_group(_group_key(frame)),
            "night": int(frame["night"]),
            "exposure": float(frame["exposure"]),
            "filter": frame["filter"],
            "temperature": float(frame["temperature"]),
            "set_temperature": float(set_point),
            "date_obs": frame["date_obs"],
            "notes": frame["notes"],
        })
        if frame["problem"]:
            row.update(status="problem", problem=frame["problem"],
                       problem_kind=frame["problem_kind"])
        rows.append(row)
        night.rows[row["file"]] = row
    for image_type in NEEDS:
        for frame, temperature, row in zip(frames, temperatures, rows, strict=True):
            if row["type"] != image_type or row["status"] != "ok":
                continue
            forced = choices.get(row["file"], {})
            done = set(str(frame["done"]).split(",")) if "done" in frames.colnames else set()
            for calibration in done.intersection(NEEDS[image_type]):
                row[f"{calibration}_rule"] = "done before (the frame's header says so)"
            problems = [_plan_calibration(row, calibration, frame, night, temperature,
                                          forced.get(calibration))
                        for calibration in NEEDS[image_type] if calibration not in done]
            problems = [p for p in problems if p]
            if problems:
                row.update(status="problem", problem="; ".join(problems),
                           problem_kind=CalibrationMatchError.__name__)
        if image_type in night.masters["kind"]:
            night.settle(image_type)
    # Files whose header could not be read get a row too, with nothing known about them
    # (NaN, not a made-up 0 s exposure).
    for problem in collection.problems:
        row = _plan_row(problem["file"], "unreadable")
        row.update(status="problem", problem=problem["problem"],
                   problem_kind=problem.get("kind", "FrameReadError"))
        rows.append(row)
    names = tuple(_PLAN_COLUMNS)
    if rows:
        plan = Table(rows=[[r[n] for n in names] for r in rows], names=names)
    else:
        plan = Table(names=names, dtype=[_PLAN_COLUMNS[n] for n in names])
    for name in ("bias_dtime", "dark_dtime", "flat_dtime"):
        plan[name].unit = "h"
    for name in ("exposure", "dark_exposure", "dark_dexposure"):
        plan[name].unit = "s"
    plan.meta["profile"] = profile.name
    plan.meta["scale_darks"] = bool(scale_darks)
    plan.meta["dark_tolerance"] = float(dark_tolerance)
    plan.meta["strict_temperature"] = bool(strict_temperature)
    plan.meta["notes"] = collection.night_notes + _night_notes(frames, night.present, rows)
    plan.meta["masters"] = night.masters
    if night.library is not None:
        adopted = list(night.library.adopted.values())
        if adopted:
            plan.meta["masters"] = _masters_table(
                [dict(zip(night.masters.colnames, r, strict=True)) for r in night.masters]
                + adopted)
        plan.meta["library"] = str(night.library.library.path)
        plan.meta["library_problems"] = [list(p) for p in night.library.problems]
    return plan


def _night_notes(frames, present, rows):
    """The night's notes: each calibration type absent while there are science frames,
    unless the library gave every science frame one."""
    if "science" not in present:
        return []
    # A frame whose library master is unusable is not reduced without it: not counted.
    return [_MISSING_NOTES[kind] for kind in ("bias", "dark", "flat") if kind not in present
            and any(r["type"] == "science" and not r[kind]
                    and r[f"{kind}_rule"] != _LIBRARY_UNUSABLE
                    and not r[f"{kind}_rule"].startswith("done before") for r in rows)]
