"""The instrument profile: what ccdproc_ext knows about a camera, and how it reads a frame.

A profile is plain data, built from TOML: `InstrumentProfile.from_dict` checks every key
against the schema (`~ccdproc_ext.profiles.schema`) and raises
`~ccdproc_ext.ProfileError` naming the file, the key and what was expected; nothing in a
profile is ever executed. Its methods read a frame's header the way the camera writes it:
`~InstrumentProfile.exposure_time`, `~InstrumentProfile.gain`,
`~InstrumentProfile.read_noise`, `~InstrumentProfile.saturation`, the filter, the
temperatures, the date, the binning, and the frame's type.
"""

import dataclasses
import math
import re
from dataclasses import dataclass, field, fields
from types import MappingProxyType

from ..exceptions import HeaderError
from ..headers import (
    card_value,
    combine_filters,
    first_card,
    first_filled,
    header_float,
    is_blank,
    parse_date,
)
from .classify import frame_type, header_type, object_type, path_type
from .detector import Amplifier, DetectorValue, ExtensionLayout
from .schema import IMAGE_TYPES, read_profile_fields
from .sections import DetectorSection

__all__ = ["InstrumentProfile"]

def _where(path):
    return f"{path}: " if path else ""


def _note_or_raise(notes, text, path):
    """Record ``text`` in ``notes``, or raise it as a `HeaderError` when there is no list."""
    if notes is None:
        raise HeaderError(f"{_where(path)}{text}")
    notes.append(text)


#: The detector values in words, as errors name them.
_LABELS = {"gain": "gain", "read_noise": "read noise", "saturation": "saturation level"}


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
    # Where the gain, read noise and saturation come from (``[detector]`` ``gain``,
    # ``read_noise``, ``saturation``); a frame's own values are read by the methods of
    # the same names (`gain`, `read_noise`, `saturation`).
    gain_spec: DetectorValue | None = None
    read_noise_spec: DetectorValue | None = None
    saturation_spec: DetectorValue | None = None
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
        return header_type(self, header)

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
        return frame_type(self, header, path, exposure=exposure, folders=folders)

    def object_type(self, header):
        """``(type, value)`` when ``OBJECT`` is exactly a calibration word, else ``None``.

        The words are `~ccdproc_ext.profiles.classify.OBJECT_WORDS` and the profile's own
        calibration words, compared ignoring case and runs of blanks: ``OBJECT = 'Dome
        Flat'`` says flat, ``OBJECT = 'flat of M31 field'`` says nothing.
        """
        return object_type(self, header)

    def classify_path(self, path):
        """The frame type given by the profile's file-name patterns, or ``None``.

        Patterns are shell-style, case-insensitive, and matched against the file name
        and against the path (so ``*/dark/*`` matches a folder). A pattern that is one
        word between stars (``*dark*``) matches that word as a whole word of the name
        (see `~ccdproc_ext.profiles.classify.name_has_word`): ``darks-expos1.fits``,
        ``Fla2_dark.fit`` and ``bias.00000001.BIAS.FIT`` say their type,
        ``NOAUTODARK.FIT``, ``DarkSky-300s.fit`` and ``horizon.fits`` do not.
        """
        found = path_type(self, path)
        return None if found is None else found[0]

    def exposure_time(self, header, *, path=None, required=True):
        """Exposure time in seconds (strings and decimal commas accepted).

        Parameters
        ----------
        header : `~astropy.io.fits.Header`
        path : str or None, optional
            The file, named in errors. Default is ``None``.
        required : bool, optional
            When ``False``, ``None`` is returned for a header without any of the
            keywords. Default is ``True``.

        Raises
        ------
        HeaderError
            Naming the keyword, when it is blank, not a number or negative, or missing
            (when ``required``).
        """
        exposure = header_float(header, self.exposure_time_keywords, path=path,
                                required=required)
        if exposure is not None and exposure < 0:
            key, value = first_filled(header, self.exposure_time_keywords)
            raise HeaderError(f"{_where(path)}keyword {key} = {value!r} is negative")
        return exposure

    def gain(self, header=None, *, path=None, required=True, needed_by=None):
        """The gain of a frame, in electron / adu, as a `~astropy.units.Quantity`.

        The header keyword the profile names (``[detector] gain = { keyword = ... }``)
        when the header has it, else the profile's fixed ``value``; an extension's own
        (see `for_extension`).

        Parameters
        ----------
        header : `~astropy.io.fits.Header` or None, optional
            The frame's raw header; ``None`` gives the fixed value. Default is ``None``.
        path : str or None, optional
            The file, named in errors. Default is ``None``.
        required : bool, optional
            When ``False``, ``None`` is returned when the profile gives no gain for this
            frame (no fixed value, and none of its keywords in the header): the way to
            read a gain a step can do without. A value that is there but is no gain is
            an error either way. Default is ``True``.
        needed_by : str or None, optional
            What needs the value (``"gain_correct"``), named in errors. Default is
            ``None``.

        Returns
        -------
        `~astropy.units.Quantity` or None

        Raises
        ------
        HeaderError
            Naming the file and the keywords: the keyword's value is not a number, or
            not above 0, or (when ``required``) the profile gives no gain for this frame.

        Examples
        --------
        >>> import ccdproc_ext
        >>> from astropy.io import fits
        >>> maxim = ccdproc_ext.get_profile("maxim-ccdsoft")
        >>> maxim.gain(fits.Header({"EGAIN": 2.06}))
        <Quantity 2.06 electron / adu>
        >>> maxim.gain(fits.Header(), required=False) is None
        True
        """
        return self._detector_value("gain", header, path, required, needed_by)

    def read_noise(self, header=None, *, path=None, required=True, needed_by=None):
        """The read noise of a frame, in electron, as a `~astropy.units.Quantity`.

        Read as `gain` is (the same parameters); a read noise below 0 is no read noise.
        """
        return self._detector_value("read_noise", header, path, required, needed_by)

    def saturation(self, header=None, *, path=None, required=True, needed_by=None):
        """The saturation level of a raw frame, in the profile's unit (adu), or ``None``.

        Read as `gain` is (the same parameters); a level not above 0 (``DATAMAX = 0``
        for "not set") is no saturation level.
        """
        return self._detector_value("saturation", header, path, required, needed_by)

    def _detector_value(self, what, header, path, required, needed_by):
        """`gain`, `read_noise` or `saturation`: the value, checked, or ``None``."""
        spec = getattr(self, f"{what}_spec")
        label = _LABELS[what]
        # "gain_correct needs the gain (header GAIN or EGAIN [electron / adu])"
        needs = f"{needed_by} needs the {label}" if needed_by else f"the {label}"
        given = f" ({spec.describe()})" if spec is not None else ""
        value = spec.get(header, path=path) if spec is not None else None
        if value is None:
            if not required:
                return None
            missing = (f", which profile {self.name!r} does not give for this frame"
                       if needed_by else f" is not given for this frame by profile "
                                         f"{self.name!r}")
            raise HeaderError(f"{_where(path)}{needs}{given}{missing}")
        number = float(value.value)
        if what == "saturation" and math.isfinite(number) and number <= 0:
            # Premise: a saturation level is a positive number of counts.
            raise HeaderError(f"{_where(path)}a saturation level of {number:g} is not a "
                              "saturation level (not above 0)")
        if what != "saturation" and (not math.isfinite(number) or number < 0
                                     or (what == "gain" and number == 0)):
            raise HeaderError(f"{_where(path)}{needs}{given}" + (
                f", and {number:g} is not a {label}" if needed_by
                else f" is {number:g}: not a {label}"))
        return value

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
        changes = {field_name: getattr(entry, key) for key, field_name in
                   (("overscan", "overscan"), ("trim", "trim"), ("gain", "gain_spec"),
                    ("read_noise", "read_noise_spec"), ("saturation", "saturation_spec"))
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
        for label, value in (("gain", self.gain_spec), ("read noise", self.read_noise_spec),
                             ("saturation", self.saturation_spec)):
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
        return cls(**read_profile_fields(data, source=source))


_MAPPING_FIELDS = ("image_type_words", "file_patterns")


def _profile_from_fields(values):
    for key in _MAPPING_FIELDS:
        values[key] = MappingProxyType(values[key])
    return InstrumentProfile(**values)


# ---------------------------------------------------------------------------- schema
