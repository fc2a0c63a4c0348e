"""Every header card ccdproc_ext writes about how a frame was processed.

The flags follow IRAF's ccdproc: each step done writes a keyword saying what it used, and
a step whose flag is already present is not applied again. ccdproc's own functions add
their history cards themselves (``subtract_bias = 'ccd=<CCDData>, master=<CCDData>'``...,
through their ``log_to_metadata`` decorator); the cards below are ours.

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
NNANPIX   pixels of the input that were not finite (masked)
NSATUR    pixels at or above the saturation level (masked)
BPMFILE   the bad-pixel mask applied (BPMSUM: checksum, NBADPIX: pixels it masked)
NCRPIX    pixels masked as cosmic-ray hits (CRCLEAN: whether they were replaced;
          CRFWHM, CRFWHMSR, CRFWHMLO, CRGAIN, CRRDNOIS, CRSIGMA, CROBJLIM,
          CRFSMODE, CRNITER: what L.A.Cosmic was given, chosen from the frame)
========  ==========================================================

The ``MASK`` extension of a calibrated frame holds one bit per reason a pixel is masked,
written in its own header: ``MASKB1 = 'saturated'``, ``MASKB2 = 'bad pixel'``,
``MASKB4 = 'cosmic ray'``, ``MASKB8 = 'not finite'``, ``MASKB16 = 'low flat'`` (the
card's number is the bit's value).

A bad-pixel mask (``masters/bpm_*.fits``) says what it was made from: ``BPMDARK`` and
``BPMFLAT``, ``NHOTPIX`` (dark current above the median by ``BPMHOTSG`` robust sigma and
``BPMHOTMR`` ADU/s) and ``NLOWFLAT`` (below ``BPMLOWFR`` of the flat's local median), its
values ``BPMB1 = 'hot in the master dark'``, ``BPMB2 = 'low in the master flat'`` and
``BPMB4 = 'bad in the user's mask file'`` (``BPMUSER`` naming the file it copies).

A master also says how it was made: ``COMBINED``, ``NCOMBINE``, ``COMBMETH``,
``MASTTYPE``, the files combined (``IMCMB001`` ...) and left out (``SKIP001``, with the
reason in ``SKIPW001``); a master flat the level it was divided by (``FLATNORM``), the mean
of its good pixels as written (``FLATMEAN``, 1 when it is 1 to float32's precision) and its
pixels too low to use (``NLOWPIX``).
"""

import unicodedata
from urllib.parse import quote, unquote

import ccdproc
from astropy.io import fits
from astropy.time import Time

from . import __version__

__all__ = ["FLAGS", "already_done", "done_by", "file_name_of", "file_name_value",
           "fits_text", "is_raw", "mark_bad_pixel_mask", "mark_bad_pixels",
           "mark_bad_pixels_applied", "mark_cosmic_rays", "mark_flat_normalised",
           "mark_gain_corrected", "mark_mask_bits", "mark_master", "mark_processed",
           "mark_step", "set_file_name", "software_version"]

#: The characters a FITS header string may hold: printable ASCII (FITS standard 4.0,
#: section 4.2.1), the space to the tilde.
_PRINTABLE = frozenset(map(chr, range(0x20, 0x7F)))


def fits_text(text):
    r"""``text`` as a FITS header string may hold it: each character that is not printable
    ASCII written as its Python escape (``\x00``, ``\xe9``, ``\u03b1``).

    >>> print(fits_text("M31\x00 Androm\u00e8de"))
    M31\x00 Androm\xe8de
    """
    return "".join(c if c in _PRINTABLE else ascii(c)[1:-1] for c in str(text))


#: Printable ASCII but the percent sign: what `file_name_value` leaves as it is.
_NAME_SAFE = "".join(sorted(_PRINTABLE - {"%"}))


def file_name_value(name):
    """A file name as a header value: printable ASCII that reads back as the name.

    FITS headers hold printable ASCII only, and file names may hold any character. A
    name of printable ASCII without ``%`` is written as it is; any other character is
    percent-encoded as its UTF-8 bytes (as in a URI: ``objét.fits`` is written
    ``obj%C3%A9t.fits``), so that `file_name_of` gives the name back exactly.
    """
    return quote(str(name), safe=_NAME_SAFE)


def file_name_of(value):
    """The file name a header value written by `file_name_value` stands for."""
    return unquote(str(value))


def _readable(name):
    """A readable ASCII approximation of a name (``objét.fits``: ``objet.fits``), for
    the comment of a card whose value is percent-encoded."""
    decomposed = unicodedata.normalize("NFKD", str(name))
    return "".join(c if c in _PRINTABLE else "?" for c in decomposed
                   if not unicodedata.combining(c))


def set_file_name(header, key, name, comment=""):
    """Write the file ``name`` as ``key`` (see `file_name_value`); when it had to be
    encoded, the comment is a readable approximation of it."""
    value = file_name_value(name)
    if value != name:
        comment = f"encoded; reads {_readable(name)}"
    _set(header, key, value, comment)


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
    return f"ccdproc_ext {__version__} with ccdproc {ccdproc.__version__}"


#: The letters of MaxIm DL's ``CALSTAT`` and the steps they say were done when it saved
#: the frame ("calibrate as you save"): bias, dark, flat.
_CALSTAT_STEPS = {"B": "ZEROCOR", "D": "DARKCOR", "F": "FLATCOR"}


def done_by(header, flag):
    """What says the step of ``flag`` (e.g. ``'ZEROCOR'``) was done, in words, or ``None``.

    The flag itself, ours or IRAF's ccdproc's (``ZEROCOR = '...'``, same names), or
    MaxIm DL's ``CALSTAT`` letters ``B``, ``D``, ``F``. A ``D`` without ``B`` is MaxIm's
    simple dark, taken without subtracting a bias: it held the bias, so the bias is
    gone with it.

    Examples
    --------
    >>> from astropy.io import fits
    >>> done_by(fits.Header({"CALSTAT": "D"}), "ZEROCOR")
    "CALSTAT = 'D' (a dark holding the bias was subtracted when the frame was saved)"
    >>> print(done_by(fits.Header({"CALSTAT": "BD"}), "FLATCOR"))
    None
    """
    if flag in header and header[flag] not in (False, "", None):
        return f"{flag} = {header[flag]!r}"
    letters = str(header.get("CALSTAT", "")).strip().upper() if "CALSTAT" in header else ""
    if not letters:
        return None
    if any(_CALSTAT_STEPS.get(letter) == flag for letter in letters):
        return f"CALSTAT = {letters!r} (done when the frame was saved)"
    if flag == "ZEROCOR" and "D" in letters and "B" not in letters:
        return (f"CALSTAT = {letters!r} (a dark holding the bias was subtracted when the "
                "frame was saved)")
    return None


def already_done(header, flag):
    """Whether ``flag`` (e.g. ``'ZEROCOR'``), or what stands for it (`done_by`), says the
    step was done."""
    return done_by(header, flag) is not None


def is_raw(header):
    """Whether no processing flag (nor ``CCDPROC``, nor MaxIm DL's ``CALSTAT``) says the
    frame was processed."""
    return not any(already_done(header, flag) for flag in (*FLAGS, "CCDPROC"))


def _set(header, key, value, comment=None):
    # A CCDData made from an array has a plain dict for meta: no room for comments.
    if isinstance(header, fits.Header):
        comment = _COMMENTS.get(key, "") if comment is None else comment
        if comment and not _fits_with_comment(key, value, comment):
            comment = ""  # astropy would truncate it, with a warning on every write
        header[key] = (value, comment)
    else:
        header[key] = value


def _fits_with_comment(key, value, comment):
    """Whether ``key = value / comment`` fits in one 80-character card."""
    if isinstance(value, str):
        if len(value) > 68:
            return False  # a long string goes on CONTINUE cards, whatever the comment
        value_text = f"'{value.replace(chr(39), chr(39) * 2):<8}'"
        width = max(len(value_text), 20)
    else:
        width = 20
    return 10 + width + 3 + len(comment) <= 80


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


def mark_bad_pixels(header, *, not_finite=None, saturated=None, level=None):
    """Write ``NNANPIX`` (pixels not finite) and ``NSATUR`` (pixels at or above
    ``level``), each when its count is given."""
    if not_finite is not None:
        _set(header, "NNANPIX", not_finite, "pixels not finite in the input, masked")
    if saturated is not None:
        _set(header, "NSATUR", saturated, f"pixels at or above {level:g}, masked")


def mark_gain_corrected(header, gain, keywords):
    """Record that the pixels were multiplied by ``gain`` (a Quantity, e-/ADU).

    The gain cards among ``keywords`` that the header has (``GAIN``, ``EGAIN`` ...) are
    set to 1, the gain of pixels in electrons, their comment keeping the old value;
    ``GAINCOR`` is the gain applied.
    """
    for key in sorted(keywords):
        if key in header:
            was = header[key]
            _set(header, key, 1.0, f"e-/e-: pixels are in electrons (was {was})")
    _set(header, "GAINCOR", float(gain.value),
         f"pixels multiplied by this gain [{gain.unit.to_string()}]")


#: Cards of the first frame that say nothing true about a master. CCDPDATE goes too: a
#: master made again from the same frames is then the same file, with the same checksum
#: in the frames calibrated with it, so a resumed night equals an uninterrupted one.
_NOT_IN_MASTERS = ("NSATUR", "NNANPIX", "CCDPDATE")


def mark_master(header, kind, names, method, *, not_finite=0, skipped=()):
    """Write how a master was combined, in place of the first frame's own counts.

    Parameters
    ----------
    header : `~astropy.io.fits.Header`
        The master's header (a copy of its first frame's).
    kind : str
        ``"bias"``, ``"dark"`` or ``"flat"`` (``MASTTYPE``).
    names : list of str
        The files combined (``IMCMB001`` ..., ``NCOMBINE``), each written by
        `file_name_value`.
    method : str
        How they were combined (``COMBMETH``).
    not_finite : int, optional
        Pixels not finite in all the frames (``NNANPIX`` when not 0).
    skipped : list of (str, str), optional
        Files left out and why (``SKIP001``, ``SKIPW001`` ...).
    """
    for key in _NOT_IN_MASTERS:
        if key in header:
            del header[key]
    if not_finite:
        _set(header, "NNANPIX", not_finite, "pixels not finite in the frames, masked")
    _set(header, "COMBINED", True, "combined from several frames")
    _set(header, "NCOMBINE", len(names), "number of frames combined")
    _set(header, "COMBMETH", method, "how the frames were combined")
    _set(header, "MASTTYPE", kind, "kind of master calibration frame")
    for i, name in enumerate(names, start=1):
        set_file_name(header, f"IMCMB{i:03d}", name, "combined file")
    for i, (name, why) in enumerate(skipped, start=1):
        set_file_name(header, f"SKIP{i:03d}", name, "file left out")
        # no comment: the reason may be long (CONTINUE cards)
        header[f"SKIPW{i:03d}"] = fits_text(why)


def mark_flat_normalised(header, norm, mean, min_value, n_low):
    """Write ``FLATNORM`` (the level a combined flat was divided by), ``FLATMEAN`` (the
    mean of its good pixels as written, or 1 for one that is 1 to float32's precision:
    the ``norm_value`` of `ccdproc.flat_correct`)
    and, with a ``min_value``, ``NLOWPIX`` (pixels below it, masked and set to 1)."""
    _set(header, "FLATNORM", norm, "the combined flat was divided by this")
    _set(header, "FLATMEAN", mean, "mean of the unmasked pixels (norm_value)")
    if min_value is not None:
        _set(header, "NLOWPIX", n_low, f"pixels below {min_value:g}, masked, set to 1")


def mark_bad_pixels_applied(header, name, checksum, n_bad):
    """Write ``BPMFILE`` (the bad-pixel mask applied), ``BPMSUM`` (its checksum) and
    ``NBADPIX`` (the pixels it masked)."""
    set_file_name(header, "BPMFILE", name, "bad-pixel mask applied")
    if checksum:
        _set(header, "BPMSUM", checksum, "BLAKE2b of the bad-pixel mask (first 16 hex)")
    _set(header, "NBADPIX", n_bad, "pixels masked by the bad-pixel mask")


def mark_cosmic_rays(header, n_hits, *, clean, settings):
    """Write ``NCRPIX`` (pixels masked as cosmic-ray hits), ``CRCLEAN`` (replaced or
    not) and what L.A.Cosmic was given (``settings``, a
    `~ccdproc_ext.cosmic_rays.CosmicRaySettings`): ``CRFWHM`` (and ``CRFWHMSR``, whether it
    was measured on the frame's stars), ``CRGAIN``, ``CRRDNOIS``, ``CRSIGMA``,
    ``CRFWHMLO`` (the sharpest star), ``CROBJLIM``, ``CRFSMODE`` and ``CRNITER``."""
    _set(header, "NCRPIX", n_hits, "cosmic-ray pixels (L.A.Cosmic), masked")
    _set(header, "CRCLEAN", bool(clean), "cosmic-ray pixels replaced by cleaned values")
    _set(header, "CRFWHM", round(float(settings.fwhm), 3),
         "PSF FWHM given to L.A.Cosmic (pixels)")
    _set(header, "CRFWHMSR", "measured" if settings.fwhm_measured else "default",
         "CRFWHM measured on the frame's stars or default")
    _set(header, "CRGAIN", round(float(settings.gain), 4), "gain given to L.A.Cosmic (e-/ADU)")
    _set(header, "CRRDNOIS", round(float(settings.read_noise), 4),
         "read noise given to L.A.Cosmic (e-)")
    _set(header, "CRSIGMA", float(settings.sigclip), "L.A.Cosmic detection limit (sigma)")
    _set(header, "CRFWHMLO", round(float(settings.sharpest_fwhm), 3),
         "FWHM of the sharpest star measured (pixels)")
    _set(header, "CROBJLIM", round(float(settings.objlim), 3),
         "L.A.Cosmic contrast limit, from CRFWHMLO")
    _set(header, "CRFSMODE", settings.fsmode, "L.A.Cosmic fine-structure model")
    _set(header, "CRNITER", int(settings.niter), "L.A.Cosmic iterations")


def mark_mask_bits(header, bits):
    """Write, in a ``MASK`` extension's header, what each bit means: ``MASKB1 =
    'saturated'`` ... from ``bits`` (bit value -> words)."""
    for bit, meaning in sorted(bits.items()):
        _set(header, f"MASKB{bit}", meaning, f"pixels with bit {bit} set are masked as")


def mark_bad_pixel_mask(header, *, dark=None, flat=None, n_hot=None, n_low=None,
                        hot_sigma=None, hot_min_rate=None, dark_exposure=None,
                        low_fraction=None, user=None, n_user=None):
    """Write how a bad-pixel mask was made: the masters it comes from (``BPMDARK``,
    ``BPMFLAT``) or the user's file it copies (``BPMUSER``), the pixels found
    (``NHOTPIX``, ``NLOWFLAT``, ``NUSERPIX``), the thresholds (``BPMHOTSG``,
    ``BPMHOTMR``, ``BPMLOWFR``) and what its values mean (``BPMB1``, ``BPMB2``,
    ``BPMB4``)."""
    _set(header, "MASTTYPE", "bpm", "kind of master calibration frame")
    _set(header, "BPMB1", "hot in the master dark", "meaning of value 1")
    _set(header, "BPMB2", "low in the master flat", "meaning of value 2")
    _set(header, "BPMB4", "bad in the user's mask file", "meaning of value 4")
    if user is not None:
        set_file_name(header, "BPMUSER", user, "the user's mask file this copies")
        _set(header, "NUSERPIX", n_user, "bad pixels in it (value 4)")
    if n_hot is not None:
        _set(header, "BPMDARK", dark or "", "master dark the hot pixels come from")
        if dark_exposure:
            _set(header, "BPMDEXP", float(dark_exposure), "its exposure time (s)")
        _set(header, "NHOTPIX", n_hot, "hot pixels (value 1)")
        _set(header, "BPMHOTSG", float(hot_sigma), "hot: rate above median by N mad_std")
        _set(header, "BPMHOTMR", float(hot_min_rate), "hot: and by at least this (ADU/s)")
    if n_low is not None:
        _set(header, "BPMFLAT", flat or "", "master flat the low pixels come from")
        _set(header, "NLOWFLAT", n_low, "low or dead pixels in the flat (value 2)")
        _set(header, "BPMLOWFR", float(low_fraction), "low: below this of the local median")
