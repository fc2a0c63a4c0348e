"""Reading values out of FITS headers the way real cameras write them.

Cameras write exposure times as strings (``EXPTIME = '40      '``), with a decimal comma
(``EXPTIME = 3,2E-05``, which astropy refuses to parse) or under one of several names.
The helpers here read what can be read, record what they had to fix, and raise
`~ccdproc_ext.HeaderError` naming the file and the keyword when a value is missing or
cannot be understood.
"""

import copy
import math
import re
import warnings

import astropy.units as u
from astropy.io.fits.card import UNDEFINED
from astropy.io.fits.verify import VerifyError, VerifyWarning
from astropy.nddata import CCDData
from astropy.time import Time
from erfa import ErfaWarning

from ._warnings import ignoring
from .exceptions import CcdprocExtWarning, HeaderError

__all__ = ["card_value", "combine_filters", "first_card", "first_filled", "header_float",
           "is_blank", "parse_date", "to_float"]

_VALUE_TEXT_RE = re.compile(r"^[^=]*=\s*(?P<value>'(?:[^']|'')*'|[^/]*)")


def _where(path):
    return f"{path}: " if path else ""


def card_value(header, keyword):
    """The value of ``keyword`` in ``header``, even when astropy cannot parse the card.

    Returns
    -------
    value : object
        The parsed value; for a card astropy refuses, the text of its value field.
    fixed : bool
        Whether the card was unparsable and its raw text was returned instead.

    Raises
    ------
    KeyError
        If ``keyword`` is not in ``header``.
    """
    # Reading the image of an unparsable card makes astropy "fix" it with a VerifyWarning.
    with ignoring(VerifyWarning):
        try:
            return header[keyword], False
        except VerifyError:
            # .image repairs the card in place: read it from a copy, leave the header be.
            image = copy.copy(header.cards[keyword]).image
    match = _VALUE_TEXT_RE.match(image)
    text = match.group("value").strip().strip("'").strip() if match else ""
    return text, True


def first_card(header, keywords):
    """The first of ``keywords`` present in ``header``, or ``None``."""
    for key in keywords:
        if key in header:
            return key
    return None


def is_blank(value):
    """Whether a card's value says nothing: no value, or only blanks."""
    return value is None or value is UNDEFINED or (isinstance(value, str) and not value.strip())


def first_filled(header, keywords):
    """The first of ``keywords`` whose card has a value that is not blank, or ``None``.

    A camera that leaves ``EXPTIME = ''`` and writes ``EXPOSURE = 40`` has its exposure in
    ``EXPOSURE``: a blank card is taken as a missing one.

    Returns
    -------
    key, value : str and object, or ``(None, None)``
    """
    for key in keywords:
        if key in header:
            value, _ = card_value(header, key)
            if not is_blank(value):
                return key, value
    return None, None


def to_float(value):
    """A card's value as a float: numbers, strings holding numbers, decimal commas.

    Parameters
    ----------
    value : object
        The value of a card (`card_value`).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``value`` is a boolean or does not hold a number.

    Examples
    --------
    >>> to_float('3,2E-05')
    3.2e-05
    >>> to_float('40      ')
    40.0
    """
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        # A decimal comma, as some capture software writes it: '3,2E-05'.
        if text.count(",") == 1 and "." not in text:
            return float(text.replace(",", "."))
        raise




def header_float(header, keywords, *, path=None, required=True, default=None):
    """Read a number from the first of ``keywords`` present in ``header``.

    Strings holding numbers and decimal commas are accepted.

    Parameters
    ----------
    header : `~astropy.io.fits.Header`
        The header to read.
    keywords : sequence of str
        Keywords tried in order.
    path : str or None, optional
        The file the header came from, for error messages. Default is ``None``.
    required : bool, optional
        Whether a missing keyword is an error. Default is ``True``.
    default : float or None, optional
        Returned when no keyword is present and ``required`` is ``False``.

    Returns
    -------
    float or None

    Raises
    ------
    HeaderError
        If no keyword is present (and ``required``), or the value is not a number.

    Examples
    --------
    >>> from astropy.io import fits
    >>> header_float(fits.Header({'EXPOSURE': '40      '}), ['EXPTIME', 'EXPOSURE'])
    40.0
    """
    key, value = first_filled(header, keywords)
    if key is None:
        if not required:
            return default
        blank = first_card(header, keywords)
        if blank is not None:
            raise HeaderError(f"{_where(path)}keyword {blank} is blank (it holds no value)")
        raise HeaderError(f"{_where(path)}none of the keywords {', '.join(keywords)} "
                          "is in the header")
    try:
        number = to_float(value)
    except (TypeError, ValueError):
        raise HeaderError(f"{_where(path)}keyword {key} = {value!r} is not a number") from None
    if not math.isfinite(number):
        raise HeaderError(f"{_where(path)}keyword {key} = {value!r} is not a finite number")
    return number


#: Filter names that say "no filter" in one wheel of a pair (FILTER1/FILTER2).
EMPTY_FILTER_WORDS = frozenset({"", "open", "clear", "none", "empty", "-", "--", "n/a",
                                "na", "no filter", "nofilter"})


def combine_filters(values):
    """One filter name for the values of several filter wheels.

    The names that do not say "no filter" (``open``, ``clear``, ``none``, ``empty``, ``-``,
    blank) are joined with ``+``; an opaque ``BLOCK`` is a filter like any other.

    Examples
    --------
    >>> combine_filters(['J       ', 'None    '])
    'J'
    >>> combine_filters(['V', 'ND1'])
    'V+ND1'
    >>> combine_filters(['Open', 'Clear'])
    ''
    """
    names = [" ".join(str(v).split()) for v in values if not is_blank(v)]
    return "+".join(n for n in names if n.lower() not in EMPTY_FILTER_WORDS)


_ISO_DATE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:[T ](\d{1,2}:\d{2}(?::\d{2}(?:\.\d*)?)?))?Z?$")
# FITS before 2000 wrote DATE-OBS as 'dd/mm/yy', the year being 19yy.
_OLD_DATE_RE = re.compile(r"^(\d{2})/(\d{2})/(\d{2})$")
_TIME_RE = re.compile(r"^\d{1,2}:\d{2}(?::\d{2}(?:\.\d*)?)?$")


def parse_date(value, time_value=None):
    """The UTC `~astropy.time.Time` that a date card (and a time card) say.

    Parameters
    ----------
    value : str
        An ISO date with or without a time (``'2024-03-05T01:02:03.5'``,
        ``'2024-03-05'``), or a date in the FITS form before 2000, ``'dd/mm/yy'``
        (year ``19yy``).
    time_value : str or None, optional
        The time of day (``'01:02:03.5'``) that completes a date without a time, from
        ``TIME-OBS``, ``UT`` ...; ignored when ``value`` has a time. Default is ``None``.

    Returns
    -------
    `~astropy.time.Time`

    Raises
    ------
    ValueError
        If ``value`` is not a date, or ``time_value`` (when used) is not a time of day.

    Examples
    --------
    >>> parse_date('05/03/98', '01:02:03').isot
    '1998-03-05T01:02:03.000'
    >>> parse_date('2024-03-05', '22:48:01.984').isot
    '2024-03-05T22:48:01.984'
    """
    text = str(value).strip()
    iso, old = _ISO_DATE_RE.match(text), _OLD_DATE_RE.match(text)
    if iso:
        date, clock = iso.groups()
    elif old:
        day, month, year = old.groups()
        date, clock = f"19{year}-{month}-{day}", None
    else:
        raise ValueError(f"{value!r} is not a date such as '2024-03-05T01:02:03' "
                         "or 'dd/mm/yy'")
    if clock is None and not is_blank(time_value):
        clock = str(time_value).strip()
        if not _TIME_RE.match(clock):
            raise ValueError(f"{time_value!r} is not a time of day such as '01:02:03'")
    text = date if clock is None else f"{date}T{clock}"
    # ERFA calls years before 1960 (old-style dates) 'dubious' for UTC: they are dates.
    with ignoring(ErfaWarning):
        try:
            return Time(text, format="isot", scale="utc")
        except ValueError:
            raise ValueError(f"{text!r} is not a date of the calendar") from None


# ---------------------------------------------------------------- image structure
# How a raw file's header describes its image: its extra axes, its unit, its
# transposition (read by `ccdproc_ext.raw`).
def _extra_axes_of_length_one(header):
    """Whether every axis beyond the second (NAXIS3 ...) has length 1."""
    return all(header.get(f"NAXIS{i}") == 1 for i in range(3, header.get("NAXIS", 0) + 1))


def squeeze_note(header):
    """The note saying that ``header`` describes an image with length-1 extra axes
    (``"3-D image with one plane: squeezed to 2-D"``), or ``None`` when it does not.

    Parameters
    ----------
    header : `~astropy.io.fits.Header`
        The image's header; not changed.

    Returns
    -------
    str or None
    """
    naxis = header.get("NAXIS", 0)
    if isinstance(naxis, int) and naxis > 2 and _extra_axes_of_length_one(header):
        return f"{naxis}-D image with one plane: squeezed to 2-D"
    return None


def squeeze_header(header):
    """Make, in place, the NAXIS cards of ``header`` describe a 2-D image.

    For an image written with length-1 extra axes (``NAXIS = 3``, ``NAXIS3 = 1``, as
    Andor Solis writes every frame): ``NAXIS`` becomes 2 and ``NAXIS3`` ... are removed.
    A header that already says 2-D is left as it is.

    Returns
    -------
    str or None
        The note saying what was done (``"3-D image with one plane: squeezed to 2-D"``),
        or ``None`` when nothing was.
    """
    note = squeeze_note(header)
    if note is None:
        return None
    for i in range(3, header["NAXIS"] + 1):
        header.remove(f"NAXIS{i}", ignore_missing=True)
    header["NAXIS"] = 2
    return note


# ------------------------------------------------------------------------------ BUNIT
#: Spellings of BUNIT that cameras write, lower case, and the unit each means. Counts,
#: DN and ADU all name the raw digital numbers of the converter: they are read as adu,
#: so that raw frames and masters (written in adu) can be subtracted from each other.
_UNIT_SPELLINGS = {
    **dict.fromkeys(("adu", "adus", "count", "counts", "cnt", "cnts", "ct", "cts", "dn",
                     "dns", "data number", "data numbers", "digital number",
                     "digital numbers"), u.adu),
    **dict.fromkeys(("electron", "electrons", "e-", "e", "el", "electron(s)"), u.electron),
    **dict.fromkeys(("photon", "photons", "ph"), u.photon),
}


def header_unit(header, default="adu", *, path=None, unknown="warn"):
    """The unit of the pixels that ``BUNIT`` says, in whatever case and usual spelling.

    ``ADU``, ``adu``, ``count``, ``counts``, ``Counts`` and ``DN`` are read as adu (they
    all name the raw digital numbers); ``electron``, ``electrons`` and ``e-`` as
    electron; ``photon(s)`` as photon; anything else astropy parses (``adu / s``,
    ``ELECTRONS/S``) as what it says.

    Parameters
    ----------
    header : `~astropy.io.fits.Header` or dict
        The frame's header.
    default : str or `~astropy.units.UnitBase`, optional
        The unit when the header has no ``BUNIT`` (or a blank one), or one that is not a
        unit: the profile's unit. Default is ``"adu"``.
    path : str or `pathlib.Path` or None, optional
        The file, named in the warning or the error. Default is ``None``.
    unknown : {"warn", "raise"}, optional
        What a ``BUNIT`` that is not a unit makes: ``"warn"`` (the default, for raw
        frames and masters, whose profile states their unit) warns and reads the pixels
        in ``default``; ``"raise"`` (`~ccdproc_ext.combine`, which reads files as
        `~astropy.nddata.CCDData.read` does) raises a `ValueError` that asks for
        ``unit=``.

    Returns
    -------
    `~astropy.units.UnitBase`

    Warns
    -----
    CcdprocExtWarning
        When ``BUNIT`` is not a unit and ``unknown`` is ``"warn"``: ``default`` is used
        instead.

    Raises
    ------
    ValueError
        When ``BUNIT`` is not a unit and ``unknown`` is ``"raise"``.
    """
    default = u.Unit(default)
    value = header.get("BUNIT")
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    unit = parse_unit(value)
    if unit is not None:
        return unit
    where = f"{path}: " if path is not None else ""
    if unknown == "raise":
        raise ValueError(f"{where}the header value of BUNIT ({value}) is not a valid unit; "
                         "pass unit= explicitly.")
    warnings.warn(f"{where}BUNIT = {value!r} is not a unit ccdproc_ext knows: the pixels are "
                  f"read as {default.to_string()}", CcdprocExtWarning, stacklevel=3)
    return default


def parse_unit(value):
    """The unit a ``BUNIT`` value means (see `header_unit`), or ``None`` when it is not
    one (or not a string)."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = " ".join(value.split())
    known = _UNIT_SPELLINGS.get(text.lower())
    if known is not None:
        return known
    fixed = CCDData.known_invalid_fits_unit_strings.get(text)
    if fixed is not None:  # ELECTRONS/S ...: astropy knows what they mean
        return u.Unit(fixed)
    for candidate in (text, text.lower()):
        try:
            unit = u.Unit(candidate, parse_strict="raise")
        except (ValueError, TypeError):
            continue
        if not isinstance(unit, u.UnrecognizedUnit):
            return unit
    return None


# ------------------------------------------------------------------- transposed WCS
#: Cards indexed by one axis (CRPIX1, CDELT2A ...) and by two (PC1_2, CD2_1A ...).
_ONE_AXIS_RE = re.compile(r"^(CTYPE|CRVAL|CRPIX|CDELT|CUNIT|CNAME|CRDER|CSYER|LTV)([12])"
                          r"([A-Z]?)$")
_TWO_AXES_RE = re.compile(r"^(PC|CD|LTM)([12])_([12])([A-Z]?)$")
_PARAMETER_RE = re.compile(r"^(PV|PS)([12])_(\d+)([A-Z]?)$")
_ROTATION_RE = re.compile(r"^CROTA([12])$")


def _other_axis(index):
    return "2" if index == "1" else "1"


def transpose_header(header):
    """Make, in place, the cards of ``header`` describe its image transposed.

    The two axes swap places, in the pixels and in the world coordinates: ``NAXIS1``
    and ``NAXIS2``, ``CRPIX1`` and ``CRPIX2``, ``CRVAL``, ``CTYPE``, ``CDELT``, ``CUNIT``
    and the ``PC``/``CD`` matrices (``CD1_2`` becomes ``CD2_1``), with their alternate
    versions (``CRPIX1A``), the IRAF ``LTV``/``LTM`` cards and the ``PV``/``PS``
    parameters; ``CROTA`` moves to the other axis. The world
    coordinates of the transposed pixel ``(y, x)`` are then those of ``(x, y)`` before.

    Returns
    -------
    list of str
        The keywords changed.
    """
    moves = {}
    for card in header.cards:
        key = card.keyword
        if (match := _ONE_AXIS_RE.match(key)) is not None:
            prefix, axis, alt = match.groups()
            moves[key] = (f"{prefix}{_other_axis(axis)}{alt}", card.value, card.comment)
        elif (match := _TWO_AXES_RE.match(key)) is not None:
            prefix, i, j, alt = match.groups()
            moves[key] = (f"{prefix}{_other_axis(i)}_{_other_axis(j)}{alt}", card.value,
                          card.comment)
        elif (match := _PARAMETER_RE.match(key)) is not None:
            prefix, axis, number, alt = match.groups()
            moves[key] = (f"{prefix}{_other_axis(axis)}_{number}{alt}", card.value,
                          card.comment)
        elif (match := _ROTATION_RE.match(key)) is not None:
            # the rotation belongs to the latitude axis, whose number changes
            moves[key] = (f"CROTA{_other_axis(match.group(1))}", card.value, card.comment)
    if "NAXIS1" in header and "NAXIS2" in header:
        header["NAXIS1"], header["NAXIS2"] = header["NAXIS2"], header["NAXIS1"]
    targets = {new: (value, comment) for new, value, comment in moves.values()}
    for key in moves:
        if key not in targets:
            del header[key]
    for key, card in targets.items():
        header[key] = card
    return sorted(moves)


__all__ += ["header_unit", "parse_unit", "squeeze_header", "squeeze_note",
            "transpose_header"]
