"""A profile drafted from a night: what the default call inferred, as a file to correct.

The default call (`~ccdproc_ext.reduce_night` with the ``generic`` profile) works out
most of what a profile says about a camera: which keyword holds the frame type and which
words mean what, where the exposure, filter, date, temperature and binning are, the
sections, saturation and gain keywords. `draft_profile` writes that down as a profile of
the camera, and `draft_profile_text` as TOML in the documented schema, every value with a
comment saying what it was inferred from, for the user to correct and contribute.

A draft starts from the ``generic`` profile as the night applies it
(`~ccdproc_ext.NightCollection.night_profile`) and narrows it to what the night shows:
the keywords its headers hold (in the generic order, so that the same keyword wins), the
image-type words seen, the file patterns that match its files. Narrowing never changes
what the night's frames are: a draft left as it is reduces the night exactly as the
default call does. Where narrowing would change what the night says of a frame (its type,
or a note naming the keywords looked for), the generic rule is kept and the comment says
so. What the default call chose rather than inferred (whether darks scale, the
tolerances) is the generic choice, and said to be.
"""

import contextlib
import dataclasses
import math
import os
import re
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np

from ..collection import NightCollection
from ..exceptions import CcdprocExtError, HeaderError, ProfileError
from ..headers import card_value, first_filled, header_float, is_blank
from ..raw import read_frame
from .classify import OBJECT_WORDS
from .model import InstrumentProfile
from .schema import IMAGE_TYPES, SCHEMA_VERSION

__all__ = ["draft_profile", "draft_profile_text"]

#: The profile the default call uses, which a draft narrows.
_BASE = "generic"
#: The keyword lists of ``[keywords]``; each fills the profile's ``KIND_keywords``.
_KEYWORD_LISTS = ("image_type", "exposure_time", "filter", "date_obs", "time_obs",
                  "binning", "temperature", "set_temperature")

#: The keyword lists the night names whole when some frame has none of them (a problem
#: of the frame, or a night note): the others are said missing only where they matter
#: (see `_unread`).
_EVERY_FRAME = ("image_type", "exposure_time", "binning")

#: Lines of a comment are wrapped at this width (TOML itself has no limit).
_WIDTH = 88
#: How many examples (file names, values) a comment names before "...".
_EXAMPLES = 3


def draft_profile(raw, *, name=None):
    """The profile of a camera as the default call inferred it from one night.

    Parameters
    ----------
    raw : str, `pathlib.Path`, list of paths or `~ccdproc.ImageFileCollection`
        The night's raw frames, as `~ccdproc_ext.reduce_night` takes them.
    name : str or None, optional
        The profile's name: lower case letters, digits, ``-``, ``_`` and ``.``. Default
        is ``None``: made from the ``INSTRUME`` keyword most frames hold, else from the
        folder's name.

    Returns
    -------
    `~ccdproc_ext.InstrumentProfile`
        The ``generic`` profile narrowed to what the night shows; reducing the night
        with it gives the plan and the pixels of the default call.

    Raises
    ------
    ProfileError
        When no frame of ``raw`` has a header that can be read, or ``name`` is not a
        profile name.

    Examples
    --------
    >>> import tempfile
    >>> import ccdproc_ext
    >>> from ccdproc_ext.simulate import simulate_night
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = simulate_night(folder, "maxim-ccdsoft", shape=(16, 16), n_bias=2, n_dark=1,
    ...                        filters=("R",), n_flat=2, n_science=1)
    ...     draft = ccdproc_ext.draft_profile(folder, name="my-camera")
    >>> draft.image_type_keywords, draft.image_type_words["flat"]
    (('IMAGETYP',), ('flat field',))
    """
    return _draft(raw, name).profile()


def draft_profile_text(raw, *, name=None):
    """`draft_profile` as the text of a TOML profile file, each value commented.

    The comments say what each value was inferred from (``IMAGETYP on 48 of 48
    frames``), and where a choice was a guess, what else it could be.

    Parameters
    ----------
    raw, name
        As for `draft_profile`.

    Returns
    -------
    str
        A profile in the schema of the "Contributing a profile" page, which
        `~ccdproc_ext.validate_profile` accepts.
    """
    return _draft(raw, name).text()


# ------------------------------------------------------------------------ the draft
@dataclasses.dataclass
class _Draft:
    """The TOML document of a draft and the comment lines of each of its keys."""

    source: str
    data: dict = dataclasses.field(default_factory=dict)
    comments: dict = dataclasses.field(default_factory=dict)  # {(table, key): [lines]}
    heading: list = dataclasses.field(default_factory=list)

    def put(self, table, key, value, *comment):
        """Set ``table.key`` (``table`` ``""`` for the top level), with its comment."""
        (self.data.setdefault(table, {}) if table else self.data)[key] = value
        self.comments[(table, key)] = [line for line in comment if line]

    def remark(self, table, *comment):
        """Comment lines for a key left out of ``table`` (said above the table)."""
        self.data.setdefault(table, {})
        self.comments.setdefault((table, None), []).extend(comment)

    def profile(self):
        return InstrumentProfile.from_dict(self.data, source=self.source)

    def text(self):
        self.profile()  # a draft that does not load is a bug here, not a file to write
        return _toml_text(self.data, self.comments, self.heading)


def _draft(raw, name):
    night = NightCollection(raw, profile=_BASE, keywords=[])  # as the default call reads it
    frames = night.frames
    if len(frames) == 0:
        raise ProfileError(f"{_label(raw)}: no frame whose header can be read: nothing to "
                           "draft a profile from")
    headers = {str(file): night.header(str(file)) for file in frames["file"]}
    base = night.night_profile
    draft = _Draft(source=f"<draft of {_label(raw)}>")
    _top(draft, raw, headers, name)
    _keywords(draft, base, night, headers)
    _types(draft, base, night, headers)
    _detector(draft, night, headers)
    _matching(draft, night)
    return draft


def _label(raw):
    """The night in messages: its folder's name (never a whole path), or a count."""
    location = getattr(raw, "location", raw)
    if isinstance(location, str | os.PathLike) and str(location):
        return Path(location).name or str(location)
    return f"{len(raw)} files" if isinstance(raw, list | tuple) else "the night"


def _count(n, total):
    return f"{n} of {total} frames" if n != total else f"all {total} frames"


def _frames(n):
    return f"{n} frame" if n == 1 else f"{n} frames"


def _examples(names):
    names = sorted(names)
    shown = ", ".join(names[:_EXAMPLES])
    return shown + (f" and {len(names) - _EXAMPLES} more" if len(names) > _EXAMPLES else "")


# -------------------------------------------------------------------- the top level
_NAME_CHARACTERS = re.compile(r"[^a-z0-9_.-]+")


def _profile_name(raw, headers):
    """A name from the ``INSTRUME`` most frames hold, else from the folder's name."""
    instruments = Counter(" ".join(str(card_value(h, "INSTRUME")[0]).split())
                          for h in headers.values()
                          if "INSTRUME" in h and not is_blank(card_value(h, "INSTRUME")[0]))
    for text in ([instruments.most_common(1)[0][0]] if instruments else []) + [_label(raw)]:
        name = _NAME_CHARACTERS.sub("-", text.lower()).strip("-_.")
        if name:
            return name
    return "my-camera"


def _top(draft, raw, headers, name):
    chosen = name if name is not None else _profile_name(raw, headers)
    label, total = _label(raw), len(headers)
    draft.heading = [
        f"A draft of a profile, from the {total} frames of {label}: what the default "
        "call (the generic profile) inferred from their headers and file names. Each "
        "value says what it was inferred from. Left as it is, it reduces this night as "
        "the default call does; correct what is wrong, check it with 'ccdproc-ext "
        "profiles validate', and reduce with 'ccdproc-ext reduce RAW OUT --profile FILE'.",
    ]
    draft.put("", "schema_version", SCHEMA_VERSION)
    draft.put("", "name", chosen,
              "the name the profile is known by: "
              + ("given" if name is not None else "made from INSTRUME, else the folder's "
                 "name") + "; choose one specific to your observatory before contributing")
    draft.put("", "description", f"Drafted from the frames of {label}",
              "one line saying which camera this is: say it in your words")
    draft.put("", "source", f"the headers and file names of {_count(total, total)} of "
              f"{label}, as the default call read them")
    units = Counter(" ".join(str(card_value(h, "BUNIT")[0]).split()) for h in headers.values()
                    if "BUNIT" in h and not is_blank(card_value(h, "BUNIT")[0]))
    said = (f"BUNIT on {_count(sum(units.values()), total)} ("
            + ", ".join(repr(u) for u in sorted(units)) + "), which wins over this"
            if units else "no BUNIT in any header")
    draft.put("", "unit", "adu", f"{said}; 'adu', the generic unit, for the others")
    draft.put("", "transposed", False, "the generic profile turns no frame: a guess, "
              "true if your camera stores its frames turned")


# ---------------------------------------------------------------------- [keywords]
def _entry_keys(entry):
    return [key.strip() for key in entry.split(",")]


def _narrowed_entry(kind, entry, headers):
    """``(entry as the draft writes it, frames that have it)``, or ``(None, 0)``.

    A binning pair counts where both keywords are there (as it is read); a list of
    filter wheels keeps the wheels present when at least two are (one wheel alone would
    be read as a plain keyword, not as wheels).
    """
    keys = _entry_keys(entry)
    if kind == "binning":
        n = sum(all(k in h for k in keys) for h in headers.values())
        return (entry, n) if n else (None, 0)
    present = [k for k in keys if any(k in h for h in headers.values())]
    n = sum(any(k in h for k in present) for h in headers.values())
    if not present:
        return None, 0
    if len(keys) > 1 and len(present) < 2:
        return entry, n
    return ",".join(present), n


def _gives(header, entry):
    """Whether ``header`` has a value of ``entry`` (not blank; both cards of a pair)."""
    keys = _entry_keys(entry)
    if len(keys) == 2 and not all(k in header for k in keys):
        return False
    return first_filled(header, keys)[0] is not None


def _unread(kind, frames):
    """Frames whose value of ``kind`` the default call could not read, where the night
    says so (`~ccdproc_ext.NightCollection.night_notes`, naming every keyword looked for):
    a date, a temperature that other frames give, a filter of a flat or science frame."""
    if kind in ("date_obs", "time_obs"):
        return int(np.count_nonzero(frames["date_obs"] == ""))
    if kind == "temperature":
        known = np.isfinite(np.asarray(frames["temperature"], dtype=float))
        return int(np.count_nonzero(~known)) if known.any() else 0
    if kind == "filter":
        return int(np.count_nonzero(np.isin(frames["type"], ("flat", "science"))
                                    & (frames["filter"] == "")))
    return 0


def _keywords(draft, base, night, headers):
    total = len(headers)
    usable = night.frames[night.frames["type"] != ""]
    for kind in _KEYWORD_LISTS:
        generic = getattr(base, f"{kind}_keywords")
        found = [(e, n) for e, n in (_narrowed_entry(kind, entry, headers)
                                     for entry in generic) if e is not None]
        if not found:
            draft.put("keywords", kind, list(generic),
                      "none of these in any header: the generic list, so that a frame "
                      "that has one is read; leave out what your camera never writes")
            continue
        said = "; ".join(f"{e} on {_count(n, total)}" for e, n in found)
        lacking = sum(not any(_gives(h, e) for e, _ in found)
                      for h in headers.values()) if kind in _EVERY_FRAME else 0
        unread = _unread(kind, usable)
        if lacking or unread:
            # What the night says of those frames names every keyword looked for: a
            # narrower list would say it of fewer.
            why = (f"{_frames(lacking)} without any of them" if lacking else
                   f"{_frames(unread)} without a value the default call could read")
            draft.put("keywords", kind, list(generic),
                      f"{said}; {why}: the generic list, as the default call looks them "
                      f"up; narrow it to {[e for e, _ in found]} once you have checked "
                      "those frames")
            continue
        order = (" (read in this order: the first one a frame has wins)"
                 if len(found) > 1 else "")
        draft.put("keywords", kind, [e for e, _ in found], said + order)


# ------------------------------------------------------- [image_types] and patterns
def _frame_evidence(base, night, headers):
    """For each frame: ``(file, header, exposure, FrameType of the default call)``."""
    folders, found = bool(night.location), []
    for file, header in headers.items():  # in the order of the night's frames
        try:
            exposure = base.exposure_time(header)
        except HeaderError:
            exposure = None
        found.append((file, header, exposure,
                      base.classify_frame(header, file, exposure=exposure, folders=folders)))
    return found


def _words_seen(base, evidence):
    """``{type: Counter of the words of the image-type keyword}``, and ``Counter of the
    keyword's words that are no type``."""
    words, unknown = {}, Counter()
    for _, header, _, _ in evidence:
        image_type, key, word = base.header_type(header)
        if key is None or is_blank(word):
            continue
        text = " ".join(str(word).split())
        if image_type is None:
            unknown[text] += 1
        else:
            words.setdefault(image_type, Counter())[text] += 1
    for *_, frame in evidence:
        # OBJECT names a calibration with the profile's words as well as its own.
        if frame.rule.startswith("OBJECT = "):
            word = " ".join(frame.rule.removeprefix("OBJECT = ").split())
            if word.lower() not in OBJECT_WORDS[frame.image_type]:
                words.setdefault(frame.image_type, Counter())[word] += 1
    return words, unknown


def _patterns_seen(base, evidence):
    """``{type: {pattern: files whose name or folder it matches}}``."""
    found = {}
    for image_type in IMAGE_TYPES:
        for pattern in base.file_patterns.get(image_type, ()):
            alone = dataclasses.replace(base, file_patterns={image_type: (pattern,)})
            files = [file for file, *_ in evidence if alone.classify_path(file)]
            if files:
                found.setdefault(image_type, {})[pattern] = files
    return found


def _types(draft, base, night, headers):
    evidence = _frame_evidence(base, night, headers)
    words, unknown = _words_seen(base, evidence)
    patterns = _patterns_seen(base, evidence)
    word_table, pattern_table, fallbacks = _faithful_types(
        base, evidence, {t: tuple(dict.fromkeys(w.lower() for w in words[t])) for t in words},
        {t: tuple(patterns[t]) for t in patterns}, bool(night.location))
    by_type = Counter(frame.image_type for *_, frame in evidence)
    decided = {t: Counter(frame.rule for *_, frame in evidence if frame.image_type == t)
               for t in IMAGE_TYPES}
    for table, narrowed in fallbacks.items():
        if narrowed != "narrowed":
            draft.remark(table, _GENERIC_KEPT[table, narrowed])
    for image_type in IMAGE_TYPES:
        if image_type in word_table:
            draft.put("image_types", image_type, list(word_table[image_type]),
                      *_words_comment(image_type, words, fallbacks["image_types"]))
        if image_type in pattern_table:
            draft.put("file_patterns", image_type, list(pattern_table[image_type]),
                      *_patterns_comment(image_type, patterns, decided,
                                         fallbacks["file_patterns"]))
    draft.remark("image_types", *_types_remarks(evidence, unknown, by_type))


def _faithful_types(base, evidence, words, patterns, folders):
    """The narrowed words and patterns, or the generic ones where narrowing changes the
    type, rule or notes of a frame: ``(words, patterns, {table: "narrowed", "none seen"
    or "kept"})``."""
    generic_words, generic_patterns = dict(base.image_type_words), dict(base.file_patterns)
    # Nothing seen is nothing to narrow to.
    no_words, no_patterns = not words, not patterns
    words, patterns = words or generic_words, patterns or generic_patterns
    for use_words, use_patterns in ((words, patterns), (generic_words, patterns),
                                    (generic_words, generic_patterns)):
        candidate = dataclasses.replace(base, image_type_words=use_words,
                                        file_patterns=use_patterns)
        if _same_types(candidate, evidence, folders):
            break
    def how(none_seen, kept):
        return "none seen" if none_seen else "kept" if kept else "narrowed"

    return use_words, use_patterns, {
        "image_types": how(no_words, use_words is generic_words),
        "file_patterns": how(no_patterns, use_patterns is generic_patterns)}


def _same_types(candidate, evidence, folders):
    """Whether ``candidate`` gives every frame the type, rule and notes it had."""
    return all(candidate.classify_frame(header, file, exposure=exposure,
                                        folders=folders) == frame
               for file, header, exposure, frame in evidence)


#: Why a table of types is the generic one: the night shows nothing to narrow it to, or
#: narrowing it would change the type of a frame.
_GENERIC_KEPT = {
    ("image_types", "none seen"): "no frame has an image-type keyword: the generic "
                                  "words, so that a frame that has one is read",
    ("file_patterns", "none seen"): "no file or folder name of this night matches a "
                                    "generic pattern: the generic patterns, for nights "
                                    "whose names say the type",
    ("image_types", "kept"): "the generic words are kept: the words seen alone would "
                             "change the type of some frame (a file name or OBJECT word "
                             "is read with them)",
    ("file_patterns", "kept"): "the generic patterns are kept: the patterns seen alone "
                               "would change the type of some frame",
}


def _words_comment(image_type, words, fallback):
    seen = words.get(image_type, Counter())
    return [] if fallback == "none seen" else [
        "; ".join(f"{w!r} on {n} frames -> {image_type}" for w, n in seen.items())
        or f"no frame of this night says {image_type}"]


def _patterns_comment(image_type, patterns, decided, fallback):
    if fallback == "none seen":
        return []
    lines = [f"{pattern!r} matches {len(files)} file or folder names ({_examples(files)})"
             for pattern, files in patterns.get(image_type, {}).items()]
    n_decided = decided[image_type].get("file name", 0)
    if n_decided:
        lines.append(f"the name decided the type of {n_decided} {image_type} frames "
                     "(their header says no calibration type)")
    return lines


def _types_remarks(evidence, unknown, by_type):
    """What the tables of types do not say: guessed frames, words of no type."""
    lines = ["frames of each type: " + ", ".join(f"{by_type.get(t, 0)} {t}"
                                                  for t in IMAGE_TYPES)]
    guessed = [file for file, *_, frame in evidence if frame.rule == "guessed"]
    if guessed:
        # The names' common start, character by character (a prefix of names, not paths).
        stem = os.path.commonprefix([Path(file).name for file in guessed])  # noqa: RUF071
        pattern = f"{stem}*" if stem else "*"
        lines.append(f"{_frames(len(guessed))} ({_examples(guessed)}) have no type in "
                     "their header or name: the default call guessed science (exposure "
                     "above 0 s), a guess no profile states. If they are science frames, "
                     f"science = [\"{pattern}\"] in [file_patterns] says so (the plan then "
                     "gives 'file name' as their rule instead of 'guessed'); if not, name "
                     "their type there")
    for word, n in unknown.items():
        lines.append(f"{word!r} on {n} frames is no type of the generic profile: such "
                     "frames are not reduced; add the word to a type to reduce them")
    by_object = [file for file, *_, frame in evidence if frame.rule.startswith("OBJECT")]
    if by_object:
        lines.append(f"{len(by_object)} frames ({_examples(by_object)}) are typed by "
                     "their OBJECT, which every profile reads")
    return lines


# ---------------------------------------------------------------------- [detector]
def _values_seen(headers, key):
    return Counter(str(card_value(h, key)[0]).strip() for h in headers.values() if key in h)


def _keywords_present(keywords, headers):
    return [k for k in keywords if any(k in h for h in headers.values())]


def _detector(draft, night, headers):
    base, total = night.night_profile, len(headers)
    for key, generic in (("overscan", base.overscan), ("trim", base.trim)):
        present = _keywords_present(generic.keywords, headers)
        if not present:
            said = f"no {key}: no {' or '.join(generic.keywords)} in any header"
            if key == "overscan":
                draft.remark("detector", f"{said}, {_overscan_in_pixels(night)}")
            else:
                draft.remark("detector", f"{said}; if your frames are to be trimmed, write "
                             f"{key} = \"[x1:x2,y1:y2]\" (the part to keep)")
            continue
        seen = "; ".join(f"{k} on {_count(sum(k in h for h in headers.values()), total)} ("
                         + _examples(repr(v) for v in _values_seen(headers, k)) + ")"
                         for k in present)
        draft.put("detector", key, {"keyword": present, "required": False},
                  f"{seen}; a frame without it has no {key} (required = false), as in "
                  "the generic profile")
        if key == "overscan":
            draft.put("detector", "overscan_axis", base.overscan_axis,
                      "one overscan level per row: the generic choice, not inferred")
            draft.put("detector", "overscan_method", base.overscan_method,
                      "the generic choice, not inferred")
    for key in ("gain", "read_noise", "saturation"):
        _detector_value(draft, night, headers, key)


#: An edge column (or row) of a lit frame at most this fraction of the way from the bias
#: level to the frame's level is counted at the bias level: an overscan sees no light.
_DARK_EDGE = 0.2
#: The light must stand this many times the bias noise above the bias for edges to tell.
_LIGHT_OVER_NOISE = 20.0


def _overscan_in_pixels(night):
    """Words to follow "no BIASSEC in any header,": the edge columns or rows of a lit
    frame at the level of a bias (an overscan no header names), or none. The premise,
    checked: a bias and a lit frame of one shape, with light well above the bias noise;
    without it the pixels are said to tell nothing."""
    lit = next((row for image_type in ("flat", "science")
                for row in night.frames_of_type(image_type)), None)
    bias = next(iter(night.frames_of_type("bias")), None)
    if lit is None or bias is None:
        return "and no bias and lit frame to compare their edges"
    try:
        data = read_frame(night.path(str(lit["file"])), dtype=np.float64).data
        zero = read_frame(night.path(str(bias["file"])), dtype=np.float64).data
    except CcdprocExtError:
        return "and the pixels were not compared (a frame could not be read)"
    if data.ndim != 2 or data.shape != zero.shape:
        return "and the pixels were not compared (the bias and lit frames differ in shape)"
    bias_level = float(np.median(zero))
    noise = 1.4826 * float(np.median(np.abs(zero - bias_level)))
    light = float(np.median(data)) - bias_level
    if not light > _LIGHT_OVER_NOISE * max(noise, 1.0):
        return f"and {lit['file']} has too little light to tell an overscan from its edges"
    threshold = bias_level + _DARK_EDGE * light
    found = [(axis, edge) for axis, levels in (("columns", np.median(data, axis=0)),
                                                ("rows", np.median(data, axis=1)))
             for edge in _dark_edges(levels < threshold)]
    if not found:
        return (f"and no edge column or row of {lit['file']} has the level of the bias "
                f"{bias['file']}: none")
    ny, nx = data.shape
    sections = [f"[{a}:{b},*]" if axis == "columns" else f"[*,{a}:{b}]"
                for axis, (a, b) in found]
    return (f"but {' and '.join(f'{axis} {a} to {b}' for axis, (a, b) in found)} "
            f"of {lit['file']} ({ny} x {nx}) have the level of the bias {bias['file']} "
            f"(about {bias_level:.0f} against {bias_level + light:.0f}): an overscan? If "
            f"so, write overscan = \"{sections[0]}\" and a trim that leaves it out; "
            f"this draft keeps the default call's choice")


def _dark_edges(dark):
    """``(first, last)`` (1-based, inclusive) of the runs of ``dark`` at either end of
    the axis, when they are not the whole axis."""
    n = len(dark)
    if dark.all() or not n:
        return []
    left = int(np.argmin(dark))  # the first one that is not dark
    right = int(np.argmin(dark[::-1]))
    return ([(1, left)] if left else []) + ([(n - right + 1, n)] if right else [])


def _detector_value(draft, night, headers, key):
    """``gain``, ``read_noise`` or ``saturation``: the keywords of the generic profile
    the night holds, less those the night says are no saturation level."""
    spec = f"{key}_spec"
    generic, used = getattr(night.profile, spec), getattr(night.night_profile, spec)
    # The night's own reasons (see NightCollection.night_profile), not found again here.
    dropped = list(night.saturation_not_levels().values()) if key == "saturation" else []
    present = _keywords_present(used.keywords if used is not None else (), headers)
    what = key.replace("_", " ")
    if not present:
        absent = ("" if dropped else
                  f"none of {', '.join(generic.keywords)} in any header, so ")
        draft.remark("detector", f"{what}: " + "; ".join(
            [*dropped, f"{absent}none; write {key} = {{ value = ..., unit = "
                       f"\"{generic.unit.to_string()}\" }} if you know it"]))
        return
    total = len(headers)
    seen = "; ".join(f"{k} on {_count(sum(k in h for h in headers.values()), total)} "
                     f"({_examples(_values_seen(headers, k))})" for k in present)
    lines = [seen, *dropped]
    if key == "gain" and _not_above_zero(headers, present):
        lines.append("a gain not above 0 electron/adu is no gain: likely the camera's gain "
                     "setting, which some cameras write as GAIN; if so, leave gain out or "
                     "give the value of the camera's manual")
    lines.append(f"the unit is the generic one ({used.unit.to_string()}): check that the "
                 "camera's number is in it")
    draft.put("detector", key, {"keyword": present, "unit": used.unit.to_string()}, *lines)


def _not_above_zero(headers, keywords):
    for header in headers.values():
        with contextlib.suppress(HeaderError):  # not a number: no gain to doubt
            value = header_float(header, keywords, required=False)
            if value is not None and value <= 0:
                return True
    return False


# ---------------------------------------------------------------------- [matching]
def _matching(draft, night):
    base = night.night_profile
    plan = night.plan()
    scaled = [str(row["file"]) for row in plan
              if row["dark"] and math.isfinite(row["dark_scale"]) and row["dark_scale"] != 1]
    darks = sorted({float(e) for e in night.frames_of_type("dark")["exposure"]})
    said = (f"{_frames(len(scaled))} of this night "
            f"{'gets' if len(scaled) == 1 else 'get'} a scaled dark ({_examples(scaled)})"
            if scaled else "no frame of this night gets a scaled dark")
    draft.put("matching", "dark_tolerance", base.dark_tolerance,
              "seconds: the generic choice, not inferred")
    draft.put("matching", "scale_darks", base.scale_darks,
              "the generic choice (dark current grows with exposure), not inferred: "
              f"darks of {', '.join(f'{e:g}' for e in darks) or 'no'} s; {said}; write "
              "false for a camera with amplifier glow")
    draft.put("matching", "match_keywords", list(base.match_keywords),
              "the generic choice: none; name the read-out mode or gain setting keyword "
              "if calibrations must share it")
    draft.put("matching", "temperature_tolerance", base.temperature_tolerance,
              "degrees Celsius: the generic choice, not inferred")


# ------------------------------------------------------------------ writing TOML
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_CONTROL = [*range(0x20), 0x7F]
#: TOML's escapes in a basic string: its short ones, else \uXXXX for a control character.
_ESCAPES = {i: f"\\u{i:04X}" for i in _CONTROL} | {
    ord(c): e for c, e in {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t",
                           "\n": "\\n", "\f": "\\f", "\r": "\\r"}.items()}
#: A comment may hold no control character but the tab.
_NOT_IN_COMMENTS = {i: "?" for i in _CONTROL if i != ord("\t")}


def _toml_string(text):
    """``text`` as a TOML basic string, with TOML's escapes.

    Examples
    --------
    >>> print(_toml_string('Light "Frame"\\t1'))
    "Light \\"Frame\\"\\t1"
    """
    return '"' + text.translate(_ESCAPES) + '"'


def _toml_value(value):
    """A value of a profile (string, boolean, number, list, table) as TOML text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} has no place in a profile")
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}"
                                for k, v in value.items()) + " }"
    raise TypeError(f"{type(value).__name__} is no TOML value of a profile")


def _toml_key(key):
    """A key as TOML writes it: bare when it can be, else quoted."""
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _comment_lines(lines):
    """Comment lines, wrapped; characters a TOML comment may not hold are replaced."""
    out = []
    for line in lines:
        out.extend("# " + part for part in textwrap.wrap(
            line.translate(_NOT_IN_COMMENTS), _WIDTH - 2, break_long_words=False,
            break_on_hyphens=False) or [""])
    return out


def _toml_text(data, comments=None, heading=()):
    """A profile document ``data`` (as `tomllib.loads` returns it: top-level keys, then
    tables) as TOML text, after the ``heading`` lines; ``comments[(table, key)]`` (table
    ``""`` for the top level, key ``None`` above the table) are the lines before a key."""
    comments = comments or {}
    lines = _comment_lines(heading)
    tables = [(k, v) for k, v in data.items() if isinstance(v, dict)]
    for key, value in data.items():
        if not isinstance(value, dict):
            lines.extend(_comment_lines(comments.get(("", key), ())))
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for table, entries in tables:
        lines.append("")
        lines.extend(_comment_lines(comments.get((table, None), ())))
        lines.append(f"[{_toml_key(table)}]")
        for key, value in entries.items():
            lines.extend(_comment_lines(comments.get((table, key), ())))
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"

