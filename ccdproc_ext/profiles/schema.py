"""The TOML schema of instrument profiles: every key checked, every problem named.

`read_profile_fields` checks a parsed TOML document key by key and returns the fields of
an `~ccdproc_ext.InstrumentProfile`; each problem names the file, the key and what was
expected, and all of them are raised together as one `~ccdproc_ext.ProfileError`.
Nothing in a profile is ever executed.
"""

import math
import re
from types import MappingProxyType

import astropy.units as u

from ..exceptions import ProfileError
from .detector import Amplifier, DetectorValue, ExtensionEntry, ExtensionLayout
from .sections import DetectorSection

__all__ = ["CALIBRATION_TYPES", "IMAGE_TYPES", "SCHEMA_VERSION", "read_profile_fields"]

#: The version of the profile schema this package reads.
SCHEMA_VERSION = 1

#: The frame types every profile classifies into.
IMAGE_TYPES = ("bias", "dark", "flat", "science")

#: The frame types that are calibrations.
CALIBRATION_TYPES = ("bias", "dark", "flat")


def read_profile_fields(data, *, source="<dict>"):
    """The fields of an `~ccdproc_ext.InstrumentProfile`, checked, from a TOML document.

    Parameters
    ----------
    data : dict
        The parsed TOML document.
    source : str, optional
        The file it came from, named in error messages (and kept as the profile's
        ``path`` unless it is a ``<placeholder>``). Default is ``"<dict>"``.

    Returns
    -------
    dict
        Keyword arguments of `~ccdproc_ext.InstrumentProfile`.

    Raises
    ------
    ProfileError
        Listing every problem, each naming ``source``, the key and what was expected.
    """
    return _ProfileReader(source).read(data)


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
        return kwargs

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
                kwargs[f"{key}_spec"] = self.detector_value(detector[key], f"detector.{key}",
                                                            key)
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
