"""Processing flags and provenance records in FITS headers.

The flags follow IRAF's ccdproc: each step done writes a keyword saying what it used, and
a step whose flag is already present is not applied again.

========  ==========================================================
keyword   meaning
========  ==========================================================
OVERSCAN  overscan section and how its level was taken
TRIM      the section kept
ZEROCOR   master bias file name (ZEROSUM: its BLAKE2b checksum, first 16 hex)
DARKCOR   master dark file name (DARKSUM: checksum, DARKSCL: scale)
FLATCOR   master flat file name (FLATSUM: checksum)
GAINCOR   the gain (e-/ADU) the pixels were multiplied by; GAIN, EGAIN then say 1
CCDPROC   the package and version that calibrated the frame
PROFILE   the instrument profile used
========  ==========================================================
"""

from astropy.io import fits
from astropy.time import Time

__all__ = ["FLAGS", "already_done", "mark_processed", "mark_step", "software_version"]

#: The processing flags, in the order the steps are applied.
FLAGS = ("OVERSCAN", "TRIM", "ZEROCOR", "DARKCOR", "FLATCOR")

_COMMENTS = {
    "OVERSCAN": "overscan subtracted",
    "TRIM": "trimmed to this section",
    "ZEROCOR": "master bias subtracted",
    "ZEROSUM": "BLAKE2b of the master bias (first 16 hex)",
    "DARKCOR": "master dark subtracted",
    "DARKSUM": "BLAKE2b of the master dark (first 16 hex)",
    "DARKSCL": "factor the master dark was scaled by",
    "FLATCOR": "divided by this master flat",
    "FLATSUM": "BLAKE2b of the master flat (first 16 hex)",
    "GAINCOR": "pixels multiplied by this gain (e-/ADU)",
    "CCDPROC": "calibrated by",
    "CCDPDATE": "when it was calibrated (UTC)",
    "PROFILE": "ccdproc_ext instrument profile",
}


def software_version():
    """``'ccdproc_ext X with ccdproc Y'``, written in CCDPROC."""
    import ccdproc

    from . import __version__

    return f"ccdproc_ext {__version__} with ccdproc {ccdproc.__version__}"


def already_done(header, flag):
    """Whether ``flag`` (e.g. ``'ZEROCOR'``) says the step was done."""
    return flag in header and header[flag] not in (False, "", None)


def _set(header, key, value):
    # A CCDData made from an array has a plain dict for meta: no room for comments.
    if isinstance(header, fits.Header):
        header[key] = (value, _COMMENTS.get(key, ""))
    else:
        header[key] = value


def mark_step(header, flag, value, **extra):
    """Write ``flag = value`` and the extra cards (``ZEROSUM=...``), with comments."""
    _set(header, flag, value)
    for key, extra_value in extra.items():
        _set(header, key, extra_value)


def mark_processed(header, profile_name):
    """Write CCDPROC, CCDPDATE and PROFILE once the chain is done."""
    _set(header, "CCDPROC", software_version())
    _set(header, "CCDPDATE", Time.now().isot[:19])
    if profile_name:
        _set(header, "PROFILE", profile_name)
