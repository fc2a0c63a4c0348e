"""Which calibration does each frame get, and why: the rules, in one place.

The plan is built in two steps:

1. **Masters.** Calibration frames are grouped into the masters they will be combined
   into: frames of one type that agree on shape, binning, the profile's
   ``match_keywords``, night and set temperature (within the profile's tolerance); darks
   also by exposure time, flats by filter.
2. **Choice.** Every frame is then given, for each calibration it needs, the master that
   agrees with it (shape, binning, ``match_keywords``, temperature within tolerance; the
   same filter for flats). Among those: for darks the nearest exposure time (a tie goes
   to the longer dark, since scaling down adds less noise than scaling up), then the
   nearest in time; for bias and flats the nearest in time. A dark further than the
   tolerance is used scaled when the profile (or the caller) allows it, and is otherwise
   a problem, written in words in the frame's row.

Biases need nothing, darks need a bias, flats a bias and a dark, science frames all
three. A type of calibration absent from the whole night is a skipped step, not a
problem (TIRCAM2 nights have no darks); a type that is present but matches nothing (or
whose frames all have problems, truncated files say) is a problem, found before any pixel
is touched.
"""

import math

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.table import Table

from .exceptions import CalibrationMatchError

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
    return (row["shape"], int(row["xbin"]), int(row["ybin"]), row["agree"])


def _describe_group(key):
    shape, xbin, ybin, agree = key
    text = f"{shape}, binning {xbin}x{ybin}"
    return text + (f", {agree}" if agree else "")


def _temperature_clusters(values, tolerance):
    """Split set-point temperatures into clusters no wider than ``tolerance``."""
    labels = np.zeros(len(values), dtype=int)
    if tolerance is None:
        return labels
    known = np.isfinite(values)
    order = np.argsort(np.where(known, values, np.inf))
    label, start = 0, None
    for i in order:
        if not known[i]:
            labels[i] = -1
            continue
        if start is None or values[i] - start > tolerance:
            label += 1
            start = values[i]
        labels[i] = label
    return labels


def _build_masters(frames, profile):
    """Group calibration frames into masters; returns a Table, one row per master."""
    rows = []
    for kind in ("bias", "dark", "flat"):
        usable = frames[(frames["type"] == kind) & (frames["problem"] == "")]
        if len(usable) == 0:
            continue
        keys = {}
        temperature = np.asarray(usable["temperature"], dtype=float)
        clusters = _temperature_clusters(temperature, profile.temperature_tolerance)
        for i, row in enumerate(usable):
            key = (_group_key(row), int(row["night"]), int(clusters[i]))
            if kind == "dark":
                key += (float(row["exposure"]),)
            if kind == "flat":
                key += (row["filter"],)
            keys.setdefault(key, []).append(i)
        for key, members in sorted(keys.items(), key=lambda kv: str(kv[0])):
            sel = usable[members]
            group = key[0]
            temps = np.asarray(sel["temperature"], dtype=float)
            exposure = float(np.median(sel["exposure"]))
            rows.append({
                "kind": kind,
                "group": _describe_group(group),
                "group_key": repr(group),
                "night": key[1],
                "exposure": exposure,
                "filter": sel["filter"][0] if kind == "flat" else "",
                "temperature": float(np.nanmedian(temps)) if np.isfinite(temps).any()
                else math.nan,
                "mjd": float(np.nanmean(sel["mjd"])) if np.isfinite(sel["mjd"]).any()
                else math.nan,
                "n_frames": len(sel),
                "files": ",".join(sel["file"]),
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
    names = ("name", "kind", "group", "group_key", "night", "exposure", "filter",
             "temperature", "mjd", "n_frames", "files")
    dtypes = ("U", "U", "U", "U", "i4", "f8", "U", "f8", "f8", "i4", "U")
    if not rows:
        return Table(names=names, dtype=dtypes)
    return Table(rows=[[r[n] for n in names] for r in rows], names=names)


def _safe(text):
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in str(text)).strip("-")


# ---------------------------------------------------------------------------- choice
def _choose(kind, frame, masters, profile, *, scale_darks, dark_tolerance, present=()):
    """Pick the master of ``kind`` for ``frame``: (master row or None, details dict).

    ``present`` are the frame types of the night, usable or not: a type whose frames all
    have problems is not a step to skip, it is a calibration missing.
    """
    candidates = masters[masters["kind"] == kind]
    details = {"rule": "", "master": "", "dexposure": math.nan, "scale": math.nan,
               "dtime": math.nan, "dtemperature": math.nan}
    if len(candidates) == 0:
        if kind in present:
            raise CalibrationMatchError(
                f"no usable {kind} frame: every {kind} frame of this night has a problem")
        details["rule"] = f"no {kind} frames in this night: step skipped"
        return None, details
    key = repr(_group_key(frame))
    same_group = candidates[candidates["group_key"] == key]
    if len(same_group) == 0:
        groups = sorted(set(candidates["group"]))
        raise CalibrationMatchError(
            f"no {kind} matches {_describe_group(_group_key(frame))}; the {kind} frames are: "
            + "; ".join(groups))
    pool = same_group
    temperature = frame["temperature"]
    if profile.temperature_tolerance is not None and np.isfinite(temperature):
        dtemp = np.abs(np.asarray(pool["temperature"], dtype=float) - temperature)
        ok = ~(dtemp > profile.temperature_tolerance)  # unknown temperatures pass
        if not ok.any():
            raise CalibrationMatchError(
                f"no {kind} within {profile.temperature_tolerance:g} C of the frame's "
                f"{temperature:g} C; the {kind} frames are at "
                + ", ".join(f"{t:g} C" for t in sorted(set(pool["temperature"]))))
        pool = pool[ok]
    if kind == "flat":
        pool = pool[pool["filter"] == frame["filter"]]
        if len(pool) == 0:
            raise CalibrationMatchError(
                f"no flat in filter {str(frame['filter'])!r}; flats exist for "
                + ", ".join(repr(str(f)) for f in sorted(set(candidates["filter"]))))
    rule = []
    if kind == "dark":
        exposure = float(frame["exposure"])
        chosen = find_nearest_dark_exposure(exposure, pool["exposure"], tolerance=None)
        difference = abs(chosen - exposure)
        if _over(difference, dark_tolerance):
            if not scale_darks:
                raise CalibrationMatchError(
                    f"frame exposure {exposure:g} s: the closest dark is {chosen:g} s, "
                    f"{difference:g} s away, more than the tolerance of {dark_tolerance:g} s, "
                    "and dark scaling is not allowed")
            details["scale"] = exposure / chosen
            rule.append(f"nearest exposure {chosen:g} s, scaled by {exposure / chosen:.4g}")
        else:
            details["scale"] = 1.0
            rule.append(f"exposure {chosen:g} s within {dark_tolerance:g} s")
        pool = pool[pool["exposure"] == chosen]
        details["dexposure"] = chosen - exposure
    if kind == "flat":
        rule.append(f"filter {frame['filter']}")
    dtime = np.abs(np.asarray(pool["mjd"], dtype=float) - frame["mjd"]) * 24.0
    dtime = np.where(np.isfinite(dtime), dtime, np.inf)
    best = int(np.argmin(dtime))
    master = pool[best]
    if len(pool) > 1:
        rule.append("nearest in time")
    rule.insert(0, "same group")
    details["rule"] = ", ".join(rule)
    details["master"] = master["name"]
    details["dtime"] = float(dtime[best]) if np.isfinite(dtime[best]) else math.nan
    details["dtemperature"] = float(master["temperature"] - temperature)
    return master, details


#: The columns of the plan and their types, in order.
_PLAN_COLUMNS = {
    "file": "U", "type": "U", "group": "U", "night": "i8", "exposure": "f8", "filter": "U",
    "temperature": "f8", "date_obs": "U",
    "bias": "U", "bias_rule": "U", "bias_dtime": "f8", "bias_dtemperature": "f8",
    "dark": "U", "dark_rule": "U", "dark_exposure": "f8", "dark_dexposure": "f8",
    "dark_scale": "f8", "dark_dtime": "f8", "dark_dtemperature": "f8",
    "flat": "U", "flat_rule": "U", "flat_dtime": "f8", "flat_dtemperature": "f8",
    "status": "U", "problem": "U", "problem_kind": "U", "notes": "U",
}


def _plan_row(file, image_type):
    """A plan row with nothing chosen yet: empty strings and NaN distances."""
    row = {name: ("" if dtype == "U" else math.nan) for name, dtype in _PLAN_COLUMNS.items()}
    row.update(file=file, type=image_type, night=0, status="ok")
    return row


def build_plan(collection, *, scale_darks=None, dark_tolerance=None):
    """Build the calibration plan of a `~ccdproc_ext.NightCollection`.

    Parameters
    ----------
    collection : `~ccdproc_ext.NightCollection`
        The night.
    scale_darks : bool or None, optional
        Allow darks of another exposure time, scaled. Default: the profile's setting.
    dark_tolerance : float or None, optional
        Largest exposure difference (s) for an unscaled dark. Default: the profile's.

    Returns
    -------
    `~astropy.table.Table`
        One row per frame: ``file``, ``type``, ``group``, ``night``, ``exposure``,
        ``filter``, then for each of ``bias``, ``dark``, ``flat`` the master's name
        (``""`` when none), the rule that chose it, and the distances (``dark_dexposure``
        in s, ``*_dtime`` in hours, ``*_dtemperature`` in C, each the master's value
        minus the frame's, times as absolute values), ``dark_scale``, and ``status``
        (``ok`` or ``problem``) with ``problem`` in words and ``problem_kind`` the name
        of the error class it is (``FrameReadError``, ``HeaderError``,
        ``CalibrationMatchError``, ``DuplicateFrameError``), and ``notes`` (header cards
        repaired). A file whose header could not be read gets a row of type
        ``unreadable``. ``meta["masters"]`` is the table of
        masters (name, kind, group, night, exposure, filter, files).
    """
    profile = collection.profile
    scale_darks = profile.scale_darks if scale_darks is None else scale_darks
    dark_tolerance = profile.dark_tolerance if dark_tolerance is None else dark_tolerance
    frames = collection.frames
    masters = _build_masters(frames, profile)
    present = set(frames["type"])
    rows = []
    for frame in frames:
        row = _plan_row(frame["file"], frame["type"] or "unknown")
        row.update({
            "group": _describe_group(_group_key(frame)),
            "night": int(frame["night"]),
            "exposure": float(frame["exposure"]),
            "filter": frame["filter"],
            "temperature": float(frame["temperature"]),
            "date_obs": frame["date_obs"],
        })
        problems = [frame["problem"]] if frame["problem"] else []
        kind = frame["problem_kind"] if problems else ""
        row["notes"] = frame["notes"]
        if not problems:
            for calibration in NEEDS[frame["type"]]:
                try:
                    master, details = _choose(calibration, frame, masters, profile,
                                              scale_darks=scale_darks,
                                              dark_tolerance=dark_tolerance,
                                              present=present)
                except CalibrationMatchError as err:
                    problems.append(str(err))
                    kind = kind or CalibrationMatchError.__name__
                    row[f"{calibration}_rule"] = "no match"
                    continue
                row[calibration] = details["master"]
                row[f"{calibration}_rule"] = details["rule"]
                row[f"{calibration}_dtime"] = details["dtime"]
                row[f"{calibration}_dtemperature"] = details["dtemperature"]
                if calibration == "dark" and master is not None:
                    row["dark_exposure"] = float(master["exposure"])
                    row["dark_dexposure"] = details["dexposure"]
                    row["dark_scale"] = details["scale"]
        row["status"] = "problem" if problems else "ok"
        row["problem"] = "; ".join(problems)
        row["problem_kind"] = kind
        rows.append(row)
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
    plan.meta["masters"] = masters
    return plan
