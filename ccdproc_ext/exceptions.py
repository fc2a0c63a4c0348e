"""Exceptions and warnings of ccdproc_ext.

Every error the package raises on purpose derives from `CcdprocExtError`, and every
warning from `CcdprocExtWarning`, so a script can catch or filter them precisely::

    try:
        ccdproc_ext.reduce_night("raw", "out", strict=True)
    except ccdproc_ext.CcdprocExtError as err:
        print(err)
"""

from astropy.utils.exceptions import AstropyUserWarning

__all__ = [
    "CalibrationMatchError",
    "CcdprocExtError",
    "CcdprocExtWarning",
    "FrameReadError",
    "HeaderError",
    "ProfileError",
]


class CcdprocExtError(Exception):
    """Base class of every error raised on purpose by ccdproc_ext."""


class ProfileError(CcdprocExtError, ValueError):
    """An instrument profile is malformed or cannot be found.

    The message names the profile file, the offending key and what was expected.
    """


class HeaderError(CcdprocExtError, ValueError):
    """A FITS header lacks a keyword the profile needs, or its value cannot be read.

    The message names the file and the keyword.
    """


class FrameReadError(CcdprocExtError, OSError):
    """A raw frame cannot be read: truncated, empty or not FITS."""


class CalibrationMatchError(CcdprocExtError, LookupError):
    """No calibration frame satisfies the matching rules for a frame."""


class CcdprocExtWarning(AstropyUserWarning):
    """Base class of the warnings issued by ccdproc_ext."""
