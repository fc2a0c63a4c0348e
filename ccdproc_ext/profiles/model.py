"""The instrument profile: what ccdproc_ext knows about a camera, built from TOML data.

A profile is plain data. `InstrumentProfile.from_dict` checks every key against the schema
below and raises `~ccdproc_ext.ProfileError` naming the file, the key and what was
expected; nothing in a profile is ever executed.
"""

import dataclasses
import fnmatch
import math
import re
from collections import namedtuple
from dataclasses import dataclass, field, fields
from pathlib import PurePath
from types import MappingProxyType

import astropy.units as u

from ..exceptions import HeaderError, ProfileError
from ..headers import (
    card_value,
    combine_filters,
    first_card,
    first_filled,
    header_float,
    is_blank,
    parse_date,
)
from .sections import DetectorSection

__all__ = [
    "CALIBRATION_TYPES",
    "IMAGE_TYPES",
    "OBJECT_WORDS",
    "SCHEMA_VERSION",
    "Amplifier",
    "DetectorValue",
    "ExtensionEntry",
    "ExtensionLayout",
    "FrameType",
    "InstrumentProfile",
    "name_has_word",
]

#: The version of the profile schema this package reads.
SCHEMA_VERSION = 1

#: The frame types every profile classifies into.
IMAGE_TYPES = ("bias", "dark", "flat", "science")

#: The frame types that are calibrations.
CALIBRATION_TYPES = ("bias", "dark", "flat")

#: The type of a frame, the rule that decided it (``"IMAGETYP = Bias Frame"``,
#: ``"file name"`` (patterns of the file or folder name), ``"guessed"``), and notes in
#: words (a tuple).
FrameType = namedtuple("FrameType", ["image_type", "rule", "notes"])


def _where(path):
    return f"{path}: " if path else ""


#: Words of ``OBJECT`` that say a frame is a calibration (besides the profile's own
#: image-type words): observatories that type every frame ``OBJECT`` name their
#: calibrations there.
OBJECT_WORDS = MappingProxyType({
    "bias": ("bias", "zero", "bias frame"),
    "dark": ("dark", "dark frame"),
    "flat": ("flat", "sky flat", "dome flat", "twilight flat", "skyflat", "domeflat",
             "twiflat", "flat field", "flatfield"),
})

_LETTERS_RE = re.compile(r"[a-z]+")


def _word_of_pattern(pattern):
    """``"dark"`` for the pattern ``"*dark*"``; ``None`` for any other pattern."""
    match = re.fullmatch(r"\*([a-z]+)\*", pattern)
    return match.group(1) if match else None


def name_has_word(text, word, compounds=()):
    """Whether ``word`` is a whole word of a file name or path.

    A word is a run of letters (digits, ``-``, ``_``, ``.``, ``/`` and blanks end it),
    compared ignoring case; a plural (``darks``, ``biases``) counts, and so does one of
    ``compounds`` that holds the word (``skyflat``, ``flatfield``).

    Examples
    --------
    >>> name_has_word("darks-expos1-Neg5.00000000.DARK.FIT", "dark")
    True
    >>> name_has_word("spec_neon_1s.00000001.NOAUTODARK.FIT", "dark")
    False
    >>> name_has_word("DarkSky-300s.fit", "dark")
    False
    """
    for found in _LETTERS_RE.findall(str(text).lower()):
        if found in (word, word + "s", word + "es"):
            return True
        if word in found and found.removesuffix("s") in compounds:
            return True
    return False


def _rule(key, word):
    """The rule of a type read from a keyword, as the frames table shows it."""
    return f"{key} = {' '.join(str(word).split())}"


def _note_or_raise(notes, text, path):
    """Record ``text`` in ``notes``, or raise it as a `HeaderError` when there is no list."""
    if notes is None:
        raise HeaderError(f"{_where(path)}{text}")
    notes.append(text)


@dataclass(frozen=True)
class DetectorValue:
    """A detector property (gain, read noise, saturation) with its unit.

    It is a fixed ``value``, a header ``keyword`` to read, or both (the keyword wins
    when the header has it).
    """

    unit: u.UnitBase
    value: float | None = None
    keywords: tuple[str, ...] = ()

    def get(self, header=None, *, path=None):
        """The value for a frame as a `~astropy.units.Quantity`, or ``None``."""
        if header is not None and self.keywords:
            number = header_float(header, self.keywords, path=path, required=False)
            if number is not None:
                return number * self.unit
        if self.value is None:
            return None
        return self.value * self.unit

    def describe(self):
        parts = []
        if self.keywords:
            parts.append("header " + " or ".join(self.keywords))
        if self.value is not None:
            parts.append(f"{self.value:g}")
        return f"{', else '.join(parts)} [{self.unit.to_string()}]"


@dataclass(frozen=True)
class Amplifier:
    """One read-out amplifier of a multi-amplifier detector."""

    name: str
    data_section: DetectorSection
    overscan_section: DetectorSection | None = None
    gain: DetectorValue | None = None
    read_noise: DetectorValue | None = None


@dataclass(frozen=True)
class ExtensionEntry:
    """What one extension of a multi-extension file has of its own (``[extensions.NAME]``).

    Each field left ``None`` is the profile's own (``[detector]``).
    """

    name: str
    overscan: DetectorSection | None = None
    trim: DetectorSection | None = None
    gain: DetectorValue | None = None
    read_noise: DetectorValue | None = None
    saturation: DetectorValue | None = None


@dataclass(frozen=True)
class ExtensionLayout:
    """How a camera names the extensions of its multi-extension files (``[extensions]``).

    Attributes
    ----------
    names : tuple of str or None
        The extensions that hold the detector's amplifiers or CCDs, by ``EXTNAME``
        (compared in upper case), in the order they are written; ``None`` (``names =
        "all"``) for every image extension of the detector's shape.
    entries : tuple of `ExtensionEntry`
        What some extensions have of their own: sections, gain, read noise, saturation.
    """

    names: tuple[str, ...] | None = None
    entries: tuple[ExtensionEntry, ...] = ()

    def entry(self, name):
        """The `ExtensionEntry` of extension ``name`` (any case), or ``None``."""
        key = str(name).strip().upper()
        return next((e for e in self.entries if e.name.strip().upper() == key), None)


@dataclass(frozen=True)
class InstrumentProfile:
    """Everything ccdproc_ext needs to know about one camera.

    Profiles are usually loaded with `~ccdproc_ext.get_profile`; see the "Contributing a
    profile" page for the TOML schema. All fields are read-only.

    Examples
    --------
    >>> import ccdproc_ext
    >>> lfc = ccdproc_ext.get_profile("palomar-lfc")
    >>> lfc.overscan.fits, lfc.trim.fits
    ('[2056:2080,*]', '[1:2048,*]')
    >>> from astropy.io import fits
    >>> lfc.classify(fits.Header({'IMAGETYP': 'FLATFIELD'}))
    'flat'
    """

    name: str
    description: str
    source: str = ""
    unit: str = "adu"
    transposed: bool = False

    # Header keywords, each a tuple of cards tried in order.
    image_type_keywords: tuple[str, ...] = ("IMAGETYP",)
    exposure_time_keywords: tuple[str, ...] = ("EXPTIME", "EXPOSURE")
    filter_keywords: tuple[str, ...] = ("FILTER",)
    date_obs_keywords: tuple[str, ...] = ("DATE-OBS", "DATE-BEG", "DATE")
    time_obs_keywords: tuple[str, ...] = ("TIME-OBS", "UT", "UTSTART", "TIME-BEG")
    binning_keywords: tuple[str, ...] = ("CCDSUM", "XBINNING,YBINNING")
    temperature_keywords: tuple[str, ...] = ("SET-TEMP", "CCD-TEMP")
    set_temperature_keywords: tuple[str, ...] = ("SET-TEMP", "SETTEMP", "SET_TEMP")

    # Image-type words (compared case-insensitively, blanks stripped) and file patterns.
    image_type_words: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    file_patterns: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))

    # Detector layout and properties.
    shape: tuple[int | None, int | None] | None = None
    overscan: DetectorSection | None = None
    trim: DetectorSection | None = None
    overscan_axis: int | str = 1
    overscan_method: str = "median"
    overscan_model_degree: int | None = None
    amplifiers: tuple[Amplifier, ...] = ()
    gain: DetectorValue | None = None
    read_noise: DetectorValue | None = None
    saturation: DetectorValue | None = None
    #: Multi-extension files: which extensions are the detector's, and what each has of
    #: its own. ``None``: found in each file (several image extensions of one shape).
    extensions: ExtensionLayout | None = None

    # Calibration matching.
    dark_tolerance: float = 0.5
    scale_darks: bool = False
    match_keywords: tuple[str, ...] = ()
    temperature_tolerance: float | None = 1.0

    path: str | None = None

    def __reduce__(self):
        # Profiles travel to worker processes; mappingproxy does not pickle, dicts do.
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in _MAPPING_FIELDS:
            values[key] = dict(values[key])
        return (_profile_from_fields, (values,))

    # ------------------------------------------------------------------ reading headers
    def classify(self, header, path=None):
        """The frame type (``bias``, ``dark``, ``flat``, ``science``) or ``None``.

        See `classify_frame` for the rules; this is its type alone.
        """
        return self.classify_frame(header, path).image_type

    def header_type(self, header):
        """The type the image-type keyword gives, with the keyword and its word.

        Words are compared case-insensitively, runs of blanks as one blank.

        Returns
        -------
        image_type, keyword, word : str or None, str or None, object
            ``image_type`` is ``None`` when there is no keyword or its word is unknown.
        """
        key, word = first_filled(header, self.image_type_keywords)
        if key is None:
            return None, first_card(header, self.image_type_keywords), None
        text = " ".join(str(word).split()).lower()
        for image_type in IMAGE_TYPES:
            if text in self.image_type_words.get(image_type, ()):
                return image_type, key, word
        return None, key, word

    def classify_frame(self, header, path=None, *, exposure=None, folders=True):
        """The type of a frame, the rule that decided it, and notes.

        Every piece of evidence is weighed, strongest first:

        1. A calibration word of the image-type keyword (``IMAGETYP = 'Bias Frame'``).
        2. A calibration word of the file or folder name (`classify_path`: whole words,
           so ``NOAUTODARK`` and ``DarkSky`` say nothing), even when the keyword says
           science: capture programs write their default ``'Light Frame'`` on flats
           (with a note).
        3. ``OBJECT`` holding exactly a calibration word (``'bias'``, ``'sky flat'``,
           ``'Dome Flat'``...): observatories that type their flats ``OBJECT`` name them
           there (with a note).
        4. A science word of the keyword.
        5. A science pattern of the file name.
        6. Nothing says (no image-type word, no pattern): science when the exposure time
           is above 0 (with a note), else unknown (``None``). A word the profile does not
           know ('arc', 'focus') is unknown too: such a frame is no science frame to guess.

        A dark of 0 s, whatever said dark, is a bias (with a note).

        Parameters
        ----------
        header : `~astropy.io.fits.Header`
        path : str or None, optional
            The file, as named in the collection. Default is ``None``.
        exposure : float or None, optional
            The exposure time; read from the header when ``None``.
        folders : bool, optional
            Whether the folders of ``path`` may overrule a science word of the header
            (rule 2). Pass ``False`` when ``path`` is not relative to the night's folder:
            a folder of the user's own tree (``~/darkroom/``) says nothing of the
            frame. Default is ``True``.

        Returns
        -------
        FrameType
        """
        if exposure is None:
            try:
                exposure = header_float(header, self.exposure_time_keywords, required=False)
            except HeaderError:
                exposure = None
        found = self._weigh_evidence(header, path, exposure, folders)
        if found.image_type == "dark" and exposure == 0:
            return FrameType("bias", found.rule,
                             (*found.notes, f"a dark of 0 s is a bias ({found.rule})"))
        return found

    def _weigh_evidence(self, header, path, exposure, folders):
        """`classify_frame`'s rules 1 to 6, in order."""
        header_type, key, word = self.header_type(header)
        by_name = self._path_type(path)
        if by_name is not None and by_name[1] == "folder name" and not folders and \
                header_type is not None:
            by_name = None  # a folder of the user's own tree does not overrule the header
        if header_type in CALIBRATION_TYPES:
            notes = ()
            if by_name is not None and by_name[0] != header_type:
                notes = (f"{key} says {word!r}, the {by_name[1]} {by_name[2]} says "
                         f"{by_name[0]}: {key} is trusted",)
            return FrameType(header_type, _rule(key, word), notes)
        by_object = self.object_type(header)
        said = f"; {key} says {word!r}" if header_type is not None else ""
        if by_name is not None and by_name[0] in CALIBRATION_TYPES:
            image_type, where, name = by_name
            notes = (f"{image_type} from {where} {name}{said}",) if said else ()
            if by_object is not None and by_object[0] != image_type:
                notes += (f"OBJECT = {by_object[1]!r} says {by_object[0]}, the {where} "
                          f"{name} says {image_type}: the {where} is trusted",)
            return FrameType(image_type, "file name", notes)
        if by_object is not None:
            image_type, value = by_object
            return FrameType(image_type, _rule("OBJECT", value),
                             (f"{image_type} from OBJECT = {value!r}{said}",))
        if header_type is not None:
            return FrameType(header_type, _rule(key, word), ())
        if by_name is not None:
            return FrameType(by_name[0], "file name", ())
        if key is not None and word is not None and str(word).strip():
            # An explicit word the profile does not know ('arc', 'focus', 'comp') says
            # what the frame is: not a science frame to guess.
            return FrameType(None, "", ())
        if exposure is not None and math.isfinite(exposure) and exposure > 0:
            return FrameType("science", "guessed",
                             ("type guessed: science (no image type in header or file name, "
                              f"exposure {exposure:g} s)",))
        return FrameType(None, "", ())

    def object_type(self, header):
        """``(type, value)`` when ``OBJECT`` is exactly a calibration word, else ``None``.

        The words are `OBJECT_WORDS` and the profile's own calibration words, compared
        ignoring case and runs of blanks: ``OBJECT = 'Dome Flat'`` says flat,
        ``OBJECT = 'flat of M31 field'`` says nothing.
        """
        if "OBJECT" not in header:
            return None
        value = card_value(header, "OBJECT")[0]
        if not isinstance(value, str):
            return None
        text = " ".join(value.split()).lower()
        for image_type in CALIBRATION_TYPES:
            if text in OBJECT_WORDS[image_type] or \
                    text in self.image_type_words.get(image_type, ()):
                return image_type, value.strip()
        return None

    def _path_type(self, path):
        """``(type, "file name" or "folder name", the name)`` from the patterns, or None."""
        if path is None:
            return None
        pure = PurePath(path)
        for image_type in IMAGE_TYPES:
            patterns = self.file_patterns.get(image_type, ())
            if any(self._name_matches(p, pure.name, image_type) for p in patterns):
                return image_type, "file name", pure.name
            if any(self._name_matches(p, pure.as_posix(), image_type) for p in patterns):
                return image_type, "folder name", pure.parent.as_posix()
        return None

    def classify_path(self, path):
        """The frame type given by the profile's file-name patterns, or ``None``.

        Patterns are shell-style, case-insensitive, and matched against the file name
        and against the path (so ``*/dark/*`` matches a folder). A pattern that is one
        word between stars (``*dark*``) matches that word as a whole word of the name
        (see `name_has_word`): ``darks-expos1.fits``, ``Fla2_dark.fit`` and
        ``bias.00000001.BIAS.FIT`` say their type, ``NOAUTODARK.FIT``, ``DarkSky-300s.fit``
        and ``horizon.fits`` do not.
        """
        found = self._path_type(path)
        return None if found is None else found[0]

    def _name_matches(self, pattern, text, image_type):
        word = _word_of_pattern(pattern)
        if word is None:
            return fnmatch.fnmatchcase(text.lower(), pattern)
        compounds = {w.replace(" ", "").replace("_", "")
                     for w in self.image_type_words.get(image_type, ())}
        return name_has_word(text, word, compounds)

    def exposure_time(self, header, *, path=None):
        """Exposure time in seconds (strings and decimal commas accepted).

        Raises
        ------
        HeaderError
            Naming the keyword, when it is missing, blank, not a number or negative.
        """
        exposure = header_float(header, self.exposure_time_keywords, path=path)
        if exposure < 0:
            key, value = first_filled(header, self.exposure_time_keywords)
            raise HeaderError(f"{_where(path)}keyword {key} = {value!r} is negative")
        return exposure

    def filter_name(self, header, *, path=None, notes=None):
        """The filter name, stripped, or ``None`` when the header names none.

        An entry ``"FILTER1,FILTER2"`` of the keyword list reads several filter wheels
        as one name (see ``ccdproc_ext.headers.combine_filters``). A value that is not a
        name (``FILTER = T``) is unknown: it is noted in ``notes`` when a list is given,
        else raised as `~ccdproc_ext.HeaderError`.
        """
        for entry in self.filter_keywords:
            keys = [k.strip() for k in entry.split(",")]
            values = {k: card_value(header, k)[0] for k in keys if k in header}
            values = {k: v for k, v in values.items() if not is_blank(v)}
            if not values:
                continue
            wrong = [k for k, v in values.items() if isinstance(v, bool)]
            if wrong:
                _note_or_raise(notes, f"{wrong[0]} = {values[wrong[0]]!r} is not a filter "
                                      "name: filter unknown", path)
                return None
            if len(keys) == 1:
                return " ".join(str(values[keys[0]]).split())
            return combine_filters([values[k] for k in keys if k in values]) or None
        return None

    def temperature(self, header, *, path=None, notes=None):
        """Detector temperature in degrees Celsius, or ``None``.

        The measured temperature (the keywords of ``temperature_keywords`` that are not
        set-point keywords: ``CCD-TEMP``, ``CCDTEMP``...) when the header has one, else
        the set point (`set_temperature`). A value that is not a number is noted in
        ``notes`` when a list is given, else raised as `~ccdproc_ext.HeaderError`.
        """
        measured = [k for k in self.temperature_keywords
                    if k not in self.set_temperature_keywords]
        value = self._optional_float(header, measured, "temperature", path, notes)
        if value is None:
            value = self.set_temperature(header, path=path, notes=notes)
        return value

    def set_temperature(self, header, *, path=None, notes=None):
        """The cooler's set point in degrees Celsius, or ``None``.

        Read from ``set_temperature_keywords`` (``SET-TEMP``, ``SETTEMP``...), and from
        those of ``temperature_keywords`` that are also set-point keywords.
        """
        keys = tuple(dict.fromkeys(
            [k for k in self.temperature_keywords if k in self.set_temperature_keywords]
            + list(self.set_temperature_keywords)))
        return self._optional_float(header, keys, "set temperature", path, notes)

    @staticmethod
    def _optional_float(header, keys, what, path, notes):
        try:
            return header_float(header, keys, path=path, required=False)
        except HeaderError:
            key, value = first_filled(header, keys)
            _note_or_raise(notes, f"{key} = {value!r} is not a number: {what} unknown", path)
        return None

    def date_obs(self, header, *, path=None, notes=None):
        """Start of the exposure as an `~astropy.time.Time`, or ``None``.

        The first of ``date_obs_keywords`` that holds a date: a full ISO date, or a date
        alone (``'2024-03-05'``, or ``'dd/mm/yy'`` as FITS wrote dates before 2000)
        completed by the first of ``time_obs_keywords`` (``TIME-OBS``, ``UT``...) when
        the header has one. A value that is not a date is noted in ``notes`` when a list
        is given (and the next keyword tried), else raised as `~ccdproc_ext.HeaderError`.
        """
        time_key, time_value = first_filled(header, self.time_obs_keywords)
        for key in self.date_obs_keywords:
            if key not in header:
                continue
            value, _ = card_value(header, key)
            if is_blank(value):
                continue
            try:
                return parse_date(value, time_value)
            except ValueError:
                pass
            try:  # the date is good and the time is not: the time is what to name
                parse_date(value)
                bad = f"{time_key} = {time_value!r} is not a time of day such as '01:02:03'"
            except ValueError:
                bad = (f"keyword {key} = {value!r} is not an ISO date such as "
                       "'2024-03-05T01:02:03' (or 'dd/mm/yy')")
            _note_or_raise(notes, f"{bad}: date unknown", path)
            if time_key is not None and bad.startswith(time_key):
                return None
        return None

    def binning(self, header, *, path=None):
        """Binning as ``(x, y)`` integers; ``(1, 1)`` when the header says nothing."""
        for entry in self.binning_keywords:
            keys = [k.strip() for k in entry.split(",")]
            if not all(k in header for k in keys):
                continue
            if all(is_blank(card_value(header, k)[0]) for k in keys):
                continue  # blank cards say nothing, as missing ones
            if len(keys) == 2:
                numbers = [header_float(header, [k], path=path) for k in keys]
                bad = [k for k, n in zip(keys, numbers, strict=True)
                       if n < 1 or n != int(n)]
                if bad:
                    raise HeaderError(f"{_where(path)}keyword {bad[0]} = "
                                      f"{card_value(header, bad[0])[0]!r} is not a binning "
                                      "factor (a whole number from 1)")
                return tuple(int(n) for n in numbers)
            value, _ = card_value(header, keys[0])
            numbers = [int(n) for n in re.findall(r"\d+", str(value))]
            if len(numbers) in (1, 2) and min(numbers) >= 1:
                return (numbers[0], numbers[-1])
            raise HeaderError(f"{_where(path)}keyword {keys[0]} = {value!r} is not a binning "
                              "such as '2 2' or '2x2'")
        return (1, 1)

    # -------------------------------------------------------------- detector geometry
    @property
    def has_amplifiers(self):
        return len(self.amplifiers) > 0

    def for_extension(self, name):
        """This profile as it applies to extension ``name`` of a multi-extension file.

        The sections, gain, read noise and saturation of the extension's entry
        (``[extensions.NAME]``) replace the profile's; without an entry the profile
        itself is returned. Everything a header keyword gives is read from the
        extension's own header, which wins over the primary header it inherits.
        """
        entry = None if self.extensions is None else self.extensions.entry(name)
        if entry is None:
            return self
        changes = {key: getattr(entry, key) for key in
                   ("overscan", "trim", "gain", "read_noise", "saturation")
                   if getattr(entry, key) is not None}
        return dataclasses.replace(self, **changes) if changes else self

    def section_notes(self, header, shape=None, binning=(1, 1)):
        """Notes on the overscan and trim sections a frame's header gives but that
        cannot be used (not a FITS section, or outside the image), and on those written
        in unbinned pixels and used divided by the frame's ``binning``.

        Such a step is skipped for the frame, not failed: see
        ``DetectorSection.unusable``.

        Parameters
        ----------
        header : `~astropy.io.fits.Header`
        shape : tuple of int or None, optional
            ``(rows, columns)`` of the image (as the profile turns it); ``None`` checks
            only the notation. Default is ``None``.

        Returns
        -------
        list of str
            E.g. ``"BIASSEC = '[0,513:0,1536]' is not a FITS section: overscan not
            subtracted"``.
        """
        notes = []
        for section, step in ((self.overscan, "overscan not subtracted"),
                              (self.trim, "frame not trimmed")):
            if section is None:
                continue
            reason = section.unusable(shape, header, binning)
            if reason:
                notes.append(f"{reason}: {step}")
            elif shape is not None and all(shape) and \
                    (key := first_card(header, section.keywords)) is not None:
                given = str(card_value(header, key)[0]).strip()
                used = section.fits_text(header, shape, binning)
                if used != given:
                    notes.append(f"{key} = {given!r} is in unbinned pixels: used as "
                                 f"{used} on this frame binned {binning[0]}x{binning[1]}")
        return notes

    def describe(self):
        """A few lines of text describing the profile, for ``ccdproc-ext profiles show``."""
        lines = [f"{self.name}: {self.description}"]
        if self.source:
            lines.append(f"  source: {self.source}")
        if self.path:
            lines.append(f"  file: {self.path}")
        turned = ", frames stored transposed" if self.transposed else ""
        lines.append(f"  unit: {self.unit}{turned}")
        if self.shape:
            ny, nx = self.shape
            lines.append(f"  raw shape (rows x columns): {ny or 'any'} x {nx or 'any'}")
        lines.append("  keywords: image type " + "/".join(self.image_type_keywords)
                     + "; exposure " + "/".join(self.exposure_time_keywords)
                     + "; filter " + "/".join(self.filter_keywords)
                     + "; binning " + "/".join(self.binning_keywords)
                     + "; temperature " + "/".join(self.temperature_keywords)
                     + " (set point " + "/".join(self.set_temperature_keywords) + ")"
                     + "; date " + "/".join(self.date_obs_keywords)
                     + " (time " + "/".join(self.time_obs_keywords) + ")")
        for image_type in IMAGE_TYPES:
            words = ", ".join(repr(w) for w in self.image_type_words.get(image_type, ()))
            patterns = ", ".join(self.file_patterns.get(image_type, ()))
            text = f"  {image_type}: {words or '-'}"
            if patterns:
                text += f" (files {patterns})"
            lines.append(text)
        if self.amplifiers:
            for amp in self.amplifiers:
                overscan = amp.overscan_section.describe() if amp.overscan_section else "none"
                lines.append(f"  amplifier {amp.name}: data {amp.data_section.describe()}, "
                             f"overscan {overscan}")
        else:
            lines.append("  overscan: " + (self.overscan.describe() if self.overscan else "none")
                         + f" (axis {self.overscan_axis}, {self.overscan_method})")
            lines.append("  trim: " + (self.trim.describe() if self.trim else "none"))
        for label, value in (("gain", self.gain), ("read noise", self.read_noise),
                             ("saturation", self.saturation)):
            lines.append(f"  {label}: {value.describe() if value else 'unknown'}")
        lines.extend(self._describe_extensions())
        lines.append(f"  darks: within {self.dark_tolerance:g} s, "
                     f"{'scaled' if self.scale_darks else 'not scaled'} otherwise; "
                     f"temperature within {self.temperature_tolerance} C; must agree: "
                     + (", ".join(self.match_keywords) or "-"))
        return "\n".join(lines)

    def _describe_extensions(self):
        """The lines of `describe` about multi-extension files (none when the profile
        says nothing of them: they are found in each file)."""
        if self.extensions is None:
            return []
        names = self.extensions.names
        lines = ["  extensions: " + (", ".join(names) if names is not None
                                     else "all image extensions of one shape")]
        for entry in self.extensions.entries:
            parts = [f"{label} {value.describe()}" for label, value in
                     (("overscan", entry.overscan), ("trim", entry.trim),
                      ("gain", entry.gain), ("read noise", entry.read_noise),
                      ("saturation", entry.saturation)) if value is not None]
            lines.append(f"  extension {entry.name}: " + "; ".join(parts))
        return lines

    # ----------------------------------------------------------------------- loading
    @classmethod
    def from_dict(cls, data, *, source="<dict>"):
        """Build and validate a profile from the TOML data structure.

        Parameters
        ----------
        data : dict
            The parsed TOML document.
        source : str, optional
            The file it came from, named in error messages.

        Raises
        ------
        ProfileError
            Naming ``source``, the key and what was expected.
        """
        return _ProfileReader(source).read(data)


_MAPPING_FIELDS = ("image_type_words", "file_patterns")


def _profile_from_fields(values):
    for key in _MAPPING_FIELDS:
        values[key] = MappingProxyType(values[key])
    return InstrumentProfile(**values)


# ---------------------------------------------------------------------------- schema
_TOP_KEYS = {
    "schema_version": "the schema version, 1",
    "name": "the profile name (lower case, digits, '-', '_')",
    "description": "one line saying which camera this is",
    "source": "where the numbers come from",
    "unit": "the unit of raw pixel values, e.g. 'adu'",
    "transposed": "true when frames are stored transposed",
    "keywords": "table of header keyword lists",
    "image_types": "table of image-type words per frame type",
    "file_patterns": "table of file-name patterns per frame type",
    "detector": "table describing sections, gain, read noise, saturation",
    "matching": "table of calibration matching rules",
    "extensions": "table naming the extensions of multi-extension files",
}
_KEYWORD_KEYS = {
    "image_type": "image_type_keywords",
    "exposure_time": "exposure_time_keywords",
    "filter": "filter_keywords",
    "date_obs": "date_obs_keywords",
    "time_obs": "time_obs_keywords",
    "binning": "binning_keywords",
    "temperature": "temperature_keywords",
    "set_temperature": "set_temperature_keywords",
}
_DETECTOR_KEYS = ("shape", "overscan", "trim", "overscan_axis", "overscan_method",
                  "overscan_model_degree", "amplifiers", "gain", "read_noise", "saturation")
_AMPLIFIER_KEYS = ("name", "data", "overscan", "gain", "read_noise")
_MATCHING_KEYS = ("dark_tolerance", "scale_darks", "match_keywords", "temperature_tolerance")
_SECTION_KEYS = ("fits", "keyword", "required")
_EXTENSION_ENTRY_KEYS = ("overscan", "trim", "gain", "read_noise", "saturation")
_VALUE_KEYS = ("value", "keyword", "unit")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_UNITS = {
    "gain": u.electron / u.adu,
    "read_noise": u.electron,
    "saturation": u.adu,
}


class _ProfileReader:
    """Validates the TOML structure of one profile; errors name the file and the key."""

    def __init__(self, source):
        self.source = source

    def fail(self, key, expected, got=None):
        text = f"{self.source}: key '{key}': expected {expected}"
        if got is not None:
            text += f", got {got!r}"
        raise ProfileError(text)

    def check_keys(self, table, allowed, where):
        if not isinstance(table, dict):
            self.fail(where, "a table", table)
        for key in table:
            if key not in allowed:
                prefix = f"{where}." if where else ""
                raise ProfileError(f"{self.source}: unknown key '{prefix}{key}'; the keys "
                                   f"allowed {'in ' + repr(where) if where else 'at the top'} "
                                   f"are: {', '.join(sorted(allowed))}")

    def string(self, value, key, *, allow_empty=False):
        if not isinstance(value, str) or (not allow_empty and not value.strip()):
            self.fail(key, "a non-empty string", value)
        return value

    def string_list(self, value, key):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(
                isinstance(v, str) and v.strip() for v in value):
            self.fail(key, "a list of non-empty strings", value)
        return tuple(v.strip() for v in value)

    def number(self, value, key, *, minimum=None):
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not math.isfinite(value)):
            self.fail(key, "a number", value)
        if minimum is not None and value < minimum:
            self.fail(key, f"a number >= {minimum}", value)
        return float(value)

    def boolean(self, value, key):
        if not isinstance(value, bool):
            self.fail(key, "true or false", value)
        return value

    def section(self, value, key):
        if isinstance(value, str):
            try:
                return DetectorSection(fits=value)
            except ValueError as err:
                self.fail(key, f"a FITS section ({err})")
        if isinstance(value, dict):
            self.check_keys(value, _SECTION_KEYS, key)
            fits_text = value.get("fits")
            if fits_text is not None:
                self.string(fits_text, f"{key}.fits")
            keywords = ()
            if "keyword" in value:
                keywords = self.string_list(value["keyword"], f"{key}.keyword")
            if fits_text is None and not keywords:
                self.fail(key, "a table with 'fits' and/or 'keyword'", value)
            required = self.boolean(value.get("required", True), f"{key}.required")
            try:
                return DetectorSection(fits=fits_text, keywords=keywords, required=required)
            except ValueError as err:
                self.fail(f"{key}.fits", f"a FITS section ({err})")
        self.fail(key, "a FITS section string such as '[1:2048,*]' or a table "
                       "{ keyword = 'BIASSEC' }", value)

    def detector_value(self, value, key, quantity):
        if not isinstance(value, dict):
            self.fail(key, f"a table {{ value = ..., unit = '{_UNITS[quantity]}' }} or "
                           f"{{ keyword = ..., unit = ... }}", value)
        self.check_keys(value, _VALUE_KEYS, key)
        if "unit" not in value:
            self.fail(f"{key}.unit", f"a unit convertible to '{_UNITS[quantity]}'")
        try:
            unit = u.Unit(self.string(value["unit"], f"{key}.unit"))
        except ValueError:
            self.fail(f"{key}.unit", "a unit astropy understands", value["unit"])
        if not unit.is_equivalent(_UNITS[quantity]):
            self.fail(f"{key}.unit", f"a unit convertible to '{_UNITS[quantity]}'", value["unit"])
        number = None
        if "value" in value:
            number = self.number(value["value"], f"{key}.value", minimum=0)
        keywords = ()
        if "keyword" in value:
            keywords = self.string_list(value["keyword"], f"{key}.keyword")
        if number is None and not keywords:
            self.fail(key, "'value' and/or 'keyword'")
        return DetectorValue(unit=unit, value=number, keywords=keywords)

    def step(self, function, *args):
        """Run one check; collect its problem instead of stopping at it."""
        try:
            function(*args)
        except ProfileError as err:
            self.problems.append(str(err))

    def read(self, data):
        """Check every key, then raise one `ProfileError` listing all the problems."""
        self.problems = []
        if not isinstance(data, dict):
            self.fail("", "a TOML document", data)
        kwargs = {}
        self.step(self.read_top, data, kwargs)
        for key, reader in (("keywords", self.read_keywords),
                            ("image_types", self.read_image_types),
                            ("file_patterns", self.read_file_patterns),
                            ("detector", self.read_detector),
                            ("matching", self.read_matching),
                            ("extensions", self.read_extensions)):
            self.step(reader, data.get(key, {}), kwargs)
        if not self.problems and not kwargs["image_type_words"] and not kwargs["file_patterns"]:
            self.step(self.fail, "image_types",
                      "image-type words or file_patterns for at least one type")
        if self.problems:
            raise ProfileError("\n".join(self.problems))
        kwargs["path"] = None if self.source.startswith("<") else self.source
        return InstrumentProfile(**kwargs)

    def read_top(self, data, kwargs):
        self.check_keys(data, _TOP_KEYS, "")
        if "schema_version" not in data:
            self.fail("schema_version", f"the schema version ({SCHEMA_VERSION})")
        if data["schema_version"] != SCHEMA_VERSION:
            self.fail("schema_version", f"{SCHEMA_VERSION} (the version this package reads)",
                      data["schema_version"])
        for key in ("name", "description"):
            if key not in data:
                self.fail(key, _TOP_KEYS[key])
        name = self.string(data["name"], "name")
        if not _NAME_RE.match(name):
            self.fail("name", _TOP_KEYS["name"], name)
        kwargs["name"] = name
        kwargs["description"] = self.string(data["description"], "description")
        if "source" in data:
            kwargs["source"] = self.string(data["source"], "source")
        if "unit" in data:
            unit = self.string(data["unit"], "unit")
            try:
                u.Unit(unit)
            except ValueError:
                self.fail("unit", "a unit astropy understands", unit)
            kwargs["unit"] = unit
        if "transposed" in data:
            kwargs["transposed"] = self.boolean(data["transposed"], "transposed")

    def read_keywords(self, keywords, kwargs):
        self.check_keys(keywords, _KEYWORD_KEYS, "keywords")
        for key, attribute in _KEYWORD_KEYS.items():
            if key in keywords:
                kwargs[attribute] = tuple(k.upper() for k in
                                          self.string_list(keywords[key], f"keywords.{key}"))

    def read_image_types(self, words, kwargs):
        kwargs["image_type_words"] = MappingProxyType({})
        self.check_keys(words, IMAGE_TYPES, "image_types")
        kwargs["image_type_words"] = MappingProxyType({
            kind: tuple(" ".join(w.split()).lower()
                        for w in self.string_list(value, f"image_types.{kind}"))
            for kind, value in words.items()})

    def read_file_patterns(self, patterns, kwargs):
        kwargs["file_patterns"] = MappingProxyType({})
        self.check_keys(patterns, IMAGE_TYPES, "file_patterns")
        kwargs["file_patterns"] = MappingProxyType({
            kind: tuple(p.lower() for p in self.string_list(value, f"file_patterns.{kind}"))
            for kind, value in patterns.items()})

    def read_detector(self, detector, kwargs):
        self.check_keys(detector, _DETECTOR_KEYS, "detector")
        if "shape" in detector:
            shape = detector["shape"]
            if (not isinstance(shape, list) or len(shape) != 2
                    or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                               for s in shape)):
                self.fail("detector.shape", "[rows, columns] of the raw frame, "
                                            "two positive integers", shape)
            kwargs["shape"] = tuple(shape)
        for key in ("overscan", "trim"):
            if key in detector:
                kwargs[key] = self.section(detector[key], f"detector.{key}")
        if "overscan_axis" in detector:
            axis = detector["overscan_axis"]
            if axis not in (0, 1, "frame") or isinstance(axis, bool):
                self.fail("detector.overscan_axis", "1 (one level per row, overscan columns), "
                          "0 (one level per column, overscan rows) or 'frame' (one level "
                          "for the whole frame)", axis)
            kwargs["overscan_axis"] = axis
        if "overscan_method" in detector:
            method = detector["overscan_method"]
            if method not in ("mean", "median"):
                self.fail("detector.overscan_method", "'mean' or 'median'", method)
            kwargs["overscan_method"] = method
        if "overscan_model_degree" in detector:
            degree = detector["overscan_model_degree"]
            if not isinstance(degree, int) or isinstance(degree, bool) or not 0 <= degree <= 9:
                self.fail("detector.overscan_model_degree", "an integer from 0 to 9", degree)
            kwargs["overscan_model_degree"] = degree
        for key in ("gain", "read_noise", "saturation"):
            if key in detector:
                kwargs[key] = self.detector_value(detector[key], f"detector.{key}", key)
        if "amplifiers" in detector:
            amplifiers = detector["amplifiers"]
            if not isinstance(amplifiers, list) or not amplifiers:
                self.fail("detector.amplifiers", "a list of [[detector.amplifiers]] tables",
                          amplifiers)
            if "overscan" in detector or "trim" in detector:
                self.fail("detector.amplifiers", "either amplifiers or a single "
                                                 "overscan/trim, not both")
            kwargs["amplifiers"] = tuple(self.amplifier(amp, f"detector.amplifiers[{i}]")
                                         for i, amp in enumerate(amplifiers))
            names = [amp.name for amp in kwargs["amplifiers"]]
            if len(set(names)) != len(names):
                self.fail("detector.amplifiers", "distinct amplifier names", names)

    def amplifier(self, table, where):
        self.check_keys(table, _AMPLIFIER_KEYS, where)
        for key in ("name", "data"):
            if key not in table:
                self.fail(f"{where}.{key}", "a value")
        return Amplifier(
            name=self.string(table["name"], f"{where}.name"),
            data_section=self.section(table["data"], f"{where}.data"),
            overscan_section=(self.section(table["overscan"], f"{where}.overscan")
                              if "overscan" in table else None),
            gain=(self.detector_value(table["gain"], f"{where}.gain", "gain")
                  if "gain" in table else None),
            read_noise=(self.detector_value(table["read_noise"], f"{where}.read_noise",
                                            "read_noise")
                        if "read_noise" in table else None),
        )

    def read_extensions(self, table, kwargs):
        """``[extensions]``: ``names`` (a list of EXTNAMEs, or ``"all"``) and optional
        ``[extensions.NAME]`` tables of sections, gain, read noise and saturation."""
        if isinstance(table, dict) and not table:
            return  # no [extensions]: found in each file
        if not isinstance(table, dict):
            self.fail("extensions", "a table", table)
        if "names" not in table:
            self.fail("extensions.names", "a list of extension names (EXTNAME) or 'all'")
        names = table["names"]
        if isinstance(names, str) and names.strip().lower() == "all":
            names = None
        else:
            if isinstance(names, str):
                self.fail("extensions.names", "a list of extension names (EXTNAME) or "
                                              "'all'", names)
            names = self.string_list(names, "extensions.names")
            upper = [n.upper() for n in names]
            if len(set(upper)) != len(upper):
                self.fail("extensions.names", "distinct extension names", list(names))
        entries = []
        for key, value in table.items():
            if key == "names":
                continue
            where = f"extensions.{key}"
            if names is not None and key.strip().upper() not in {n.upper() for n in names}:
                self.fail(where, f"a table of one of the extensions of 'extensions.names' "
                                 f"({', '.join(names)})", key)
            entries.append(self.extension_entry(key, value, where))
        if "amplifiers" in kwargs and any(e.overscan or e.trim for e in entries):
            self.fail("extensions", "sections per extension or detector.amplifiers, "
                                    "not both")
        kwargs["extensions"] = ExtensionLayout(names=names, entries=tuple(entries))

    def extension_entry(self, name, table, where):
        if not isinstance(table, dict):
            self.fail(where, "a table of overscan, trim, gain, read_noise or saturation",
                      table)
        self.check_keys(table, _EXTENSION_ENTRY_KEYS, where)
        values = {}
        for key in ("overscan", "trim"):
            if key in table:
                values[key] = self.section(table[key], f"{where}.{key}")
        for key in ("gain", "read_noise", "saturation"):
            if key in table:
                values[key] = self.detector_value(table[key], f"{where}.{key}", key)
        return ExtensionEntry(name=self.string(name, where), **values)

    def read_matching(self, matching, kwargs):
        self.check_keys(matching, _MATCHING_KEYS, "matching")
        if "dark_tolerance" in matching:
            kwargs["dark_tolerance"] = self.number(matching["dark_tolerance"],
                                                   "matching.dark_tolerance", minimum=0)
        if "scale_darks" in matching:
            kwargs["scale_darks"] = self.boolean(matching["scale_darks"], "matching.scale_darks")
        if "match_keywords" in matching:
            value = matching["match_keywords"]
            if value == []:
                kwargs["match_keywords"] = ()
            else:
                kwargs["match_keywords"] = tuple(
                    k.upper() for k in self.string_list(value, "matching.match_keywords"))
        if "temperature_tolerance" in matching:
            kwargs["temperature_tolerance"] = self.number(
                matching["temperature_tolerance"], "matching.temperature_tolerance", minimum=0)
