"""What a profile says of the detector besides its model: values with a unit, amplifiers,
extensions.

These are the records the TOML tables ``[detector]`` (``gain``, ``read_noise``,
``saturation``), ``[[detector.amplifiers]]`` and ``[extensions]`` are read into (see
`~ccdproc_ext.profiles.schema`); `~ccdproc_ext.InstrumentProfile` reads a frame's values
through them (`~ccdproc_ext.InstrumentProfile.gain`...).
"""

from dataclasses import dataclass

import astropy.units as u

from ..headers import header_float
from .sections import DetectorSection

__all__ = ["Amplifier", "DetectorValue", "ExtensionEntry", "ExtensionLayout"]


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
        """Where the value comes from, in words: ``"header EGAIN, else 1.5 [electron / adu]"``."""
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
