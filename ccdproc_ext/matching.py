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
   science), by the one matcher, `~ccdproc_ext.matcher.choose_master` (which
   `~ccdproc_ext.CalibrationLibrary.find` uses too, and the library's masters here,
   `~ccdproc_ext.library.LibraryMasters`). Every frame is given, for each calibration
   it needs, a master that agrees with it (shape, binning, ``match_keywords``; the same
   filter for flats) and that can be built (at least one of its frames has its own
   calibrations). Among those:

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
from astropy.table import Table

from .exceptions import CalibrationMatchError
from .library import CalibrationLibrary, LibraryMasters, LibraryMasterUnusable
from .matcher import (
    NOT_BUILDABLE,
    MasterCandidates,
    OtherGroupsError,
    beyond,
    choose_master,
    describe_group,
    find_nearest_dark_exposure,
    group_key,
    masters_table,
)

__all__ = ["build_plan", "find_nearest_dark_exposure"]

#: Which calibrations each frame type needs, in the order they are applied.
NEEDS = {
    "bias": (),
    "dark": ("bias",),
    "flat": ("bias", "dark"),
    "science": ("bias", "dark", "flat"),
}


# --------------------------------------------------------------------------- masters
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
        if previous is not None and beyond(values[i] - previous, tolerance):
            label += 1
        labels[i] = label
        previous = values[i]
    return labels


def _build_masters(frames, profile):
    """Group calibration frames into masters.

    Returns
    -------
    masters : `~astropy.table.Table`
        One row per master (see ``MASTER_COLUMNS``).
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
            key = (group_key(row), int(row["night"]), int(clusters[position]))
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
                "group": describe_group(key[0]),
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
    return masters_table(rows), facts


def _safe(text):
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in str(text)).strip("-")


# ---------------------------------------------------------------------------- choice
class _Night(MasterCandidates):
    """The night's masters and what the choice of one frame's calibrations needs to know
    about the whole night: its plan rows, which masters can be built, its library."""

    def __init__(self, frames, profile, *, scale_darks, scale_source, dark_tolerance,
                 strict_temperature, library=None):
        # Types present at all, usable or not: a type whose frames all have problems is
        # a missing calibration, not a step to skip.
        super().__init__(*_build_masters(frames, profile), profile, scale_darks=scale_darks,
                         scale_source=scale_source, dark_tolerance=dark_tolerance,
                         strict_temperature=strict_temperature, present=set(frames["type"]))
        self.rows = {}  # file -> plan row
        self.library = None if library is None else LibraryMasters(library, self)

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
                   if any(r[f"{k}_rule"] in ("no match", NOT_BUILDABLE) for r in rows)]
        frames = "its frame has" if len(files) == 1 else f"its {len(files)} frames have"
        what = f"no {' or '.join(missing)}" if missing else "a problem"
        return f"master {name} cannot be built: {frames} {what}: {files[0]}: {rows[0]['problem']}"


#: The rule of a calibration whose library masters fail verification (see
#: `~ccdproc_ext.library.LibraryMasters`).
_LIBRARY_UNUSABLE = "library master unusable"


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


def _choose_of_night(calibration, frame, night, options):
    """The night's own master for ``calibration`` (or ``None``, step skipped): raises
    `CalibrationMatchError`, or `_Unbuildable` when its only masters cannot be built."""
    try:
        master, details = choose_master(calibration, frame, night, **options)
    except OtherGroupsError as err:
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
            master, details = choose_master(calibration, frame, night, only_buildable=True,
                                      **options)
        except CalibrationMatchError:
            raise _Unbuildable(night.why_unbuildable(unbuildable)) from None
        details["rule"] += f" ({unbuildable} cannot be built)"
    return master, details


class _Unbuildable(CalibrationMatchError):
    """The only masters a frame could get cannot be built."""


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
        failure = (NOT_BUILDABLE, str(err))
    except CalibrationMatchError as err:
        failure = ("no match", str(err))
    if (failure is not None or master is None) and night.library is not None:
        try:
            master, details = night.library.choose(calibration, frame, options)
            failure = None
        except LibraryMasterUnusable as err:
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
        master, details = choose_master(calibration, frame, view, **options)
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
    night = _Night(frames, profile, scale_darks=bool(scale_darks), scale_source=scale_source,
                   dark_tolerance=float(dark_tolerance), strict_temperature=strict_temperature,
                   library=library)
    rows = _frame_rows(frames, night)
    _choose_calibrations(frames, rows, night, dict(choices or {}))
    # Files whose header could not be read get a row too, with nothing known about them
    # (NaN, not a made-up 0 s exposure).
    for problem in collection.problems:
        row = _plan_row(problem["file"], "unreadable")
        row.update(status="problem", problem=problem["problem"],
                   problem_kind=problem.get("kind", "FrameReadError"))
        rows.append(row)
    plan = _plan_table(rows)
    plan.meta["profile"] = profile.name
    plan.meta["scale_darks"] = bool(scale_darks)
    plan.meta["dark_tolerance"] = float(dark_tolerance)
    plan.meta["strict_temperature"] = bool(strict_temperature)
    plan.meta["notes"] = collection.night_notes + _night_notes(frames, night.present, rows)
    plan.meta.update(_masters_meta(night))
    return plan


def _frame_rows(frames, night):
    """One plan row per frame, with what the night says of it and nothing chosen yet;
    each is also ``night.rows[file]``."""
    set_points = (np.asarray(frames["set_temperature"], dtype=float)
                  if "set_temperature" in frames.colnames else np.full(len(frames), math.nan))
    rows = []
    for frame, set_point in zip(frames, set_points, strict=True):
        row = _plan_row(frame["file"], frame["type"] or "unknown")
        row.update({
            "type_rule": frame["type_rule"],
            "group": describe_group(group_key(frame)),
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
    return rows


def _choose_calibrations(frames, rows, night, choices):
    """Choose the calibrations of every frame whose row is ok, in the order calibrations
    depend on each other (`NEEDS`), so that a master none of whose frames can be
    calibrated is known to be unbuildable before any frame is given it."""
    temperatures = _matching_temperatures(frames)
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


def _plan_table(rows):
    """The plan's table of ``rows`` (the columns of ``_PLAN_COLUMNS``), with units."""
    names = tuple(_PLAN_COLUMNS)
    if rows:
        plan = Table(rows=[[r[n] for n in names] for r in rows], names=names)
    else:
        plan = Table(names=names, dtype=[_PLAN_COLUMNS[n] for n in names])
    for name in ("bias_dtime", "dark_dtime", "flat_dtime"):
        plan[name].unit = "h"
    for name in ("exposure", "dark_exposure", "dark_dexposure"):
        plan[name].unit = "s"
    return plan


def _masters_meta(night):
    """The plan's ``meta`` about masters: ``masters`` (the night's, and the library's
    chosen), and with a library ``library`` and ``library_problems``."""
    meta = {"masters": night.masters}
    if night.library is not None:
        adopted = list(night.library.adopted.values())
        if adopted:
            meta["masters"] = masters_table(
                [dict(zip(night.masters.colnames, r, strict=True)) for r in night.masters]
                + adopted)
        meta["library"] = str(night.library.library.path)
        meta["library_problems"] = [list(p) for p in night.library.problems]
    return meta


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
