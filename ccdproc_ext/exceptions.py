"""Exceptions and warnings of ccdproc_ext.

Every error the package raises on purpose derives from `CcdprocExtError`, and every
warning from `CcdprocExtWarning`, so a script can catch or filter them precisely::

    try:
        ccdproc_ext.reduce_night("raw", "out", strict=True)
    except ccdproc_ext.FrameReadError as err:     # a truncated or unreadable file
        print(err)
    except ccdproc_ext.CcdprocExtError as err:    # anything else the package refuses
        print(err)

The subclasses say what kind of input was bad; the same names appear in the ``kind``
column of `~ccdproc_ext.NightResult.problems` and in the ``problem_kind`` column of the
plan, so the answer is the same whether a reduction stops (``strict=True``) or goes on.
"""

from astropy.utils.exceptions import AstropyUserWarning

__all__ = [
    "CalibrationMatchError",
    "CcdprocExtError",
    "CcdprocExtWarning",
    "DataQualityError",
    "DataQualityWarning",
    "DuplicateFrameError",
    "FrameReadError",
    "FrameSkippedWarning",
    "HeaderError",
    "InternalError",
    "LibraryError",
    "OutputError",
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

    The message names the file and the keyword. A frame whose type cannot be told (no
    image-type keyword, an unknown word, no file pattern) is a header problem too.
    """


class FrameReadError(CcdprocExtError, OSError):
    """A raw frame cannot be read: truncated, empty, not FITS, or not a 2-D image."""


class CalibrationMatchError(CcdprocExtError, LookupError):
    """No calibration frame satisfies the matching rules for a frame.

    For instance a frame whose shape or binning matches no master bias.
    """


class DuplicateFrameError(CcdprocExtError, ValueError):
    """A file holds the same bytes as another file of the night.

    The first of the two (in file-name order) is used, the other is reported.
    """


class DataQualityError(CcdprocExtError, ValueError):
    """The pixels of a frame cannot give a meaningful result.

    For instance a frame without a single finite pixel, or a flat whose level is zero
    or negative.
    """


class OutputError(CcdprocExtError, OSError):
    """The output folder cannot be used: not writable, or in or around the raw data."""


class InternalError(CcdprocExtError, RuntimeError):
    """A frame or master failed with an error the package did not expect: a bug.

    The night goes on without it; the message names the file and the original error, and
    the traceback is written to ``internal-errors.log`` in the output folder so that it
    can be reported.
    """


class LibraryError(OutputError):
    """The calibration library cannot be read or written, or a master cannot be read."""


class CcdprocExtWarning(AstropyUserWarning):
    """Base class of the warnings issued by ccdproc_ext."""


class DataQualityWarning(CcdprocExtWarning):
    """Pixels were masked (not-a-number, saturated, a flat below its minimum), or a
    master was combined from a single frame: the result is usable, but look at it."""


class FrameSkippedWarning(CcdprocExtWarning):
    """A frame was left out and the work went on without it.

    Attributes
    ----------
    file : str
        The frame left out.
    error : `CcdprocExtError`
        Why.
    """

    def __init__(self, message, *, file="", error=None):
        super().__init__(message)
        self.file = file
        self.error = error


def error_class(kind):
    """The exception class named ``kind`` (e.g. ``"FrameReadError"``).

    Used to raise, in strict mode, the same kind of error a problem row names. Unknown
    names give `CcdprocExtError`.
    """
    return _ERRORS_BY_NAME.get(str(kind), CcdprocExtError)


def _subclasses(cls):
    for subclass in cls.__subclasses__():
        yield subclass
        yield from _subclasses(subclass)


#: Every error class of the package by name: a plan row's ``problem_kind`` is one of them.
_ERRORS_BY_NAME = {cls.__name__: cls for cls in (CcdprocExtError,
                                                 *_subclasses(CcdprocExtError))}
