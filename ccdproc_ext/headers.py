"""Reading values out of FITS headers the way real cameras write them.

Cameras write exposure times as strings (``EXPTIME = '40      '``), with a decimal comma
(``EXPTIME = 3,2E-05``, which astropy refuses to parse) or under one of several names.
The helpers here read what can be read, record what they had to fix, and raise
`~ccdproc_ext.HeaderError` naming the file and the keyword when a value is missing or
cannot be understood.
"""

import copy
import re

from astropy.io.fits.verify import VerifyError, VerifyWarning

from ._warnings import ignoring
from .exceptions import HeaderError

__all__ = ["card_value", "first_card", "header_float"]

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


def _to_float(value):
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
    key = first_card(header, keywords)
    if key is None:
        if required:
            raise HeaderError(f"{_where(path)}none of the keywords {', '.join(keywords)} "
                              "is in the header")
        return default
    value, _ = card_value(header, key)
    try:
        return _to_float(value)
    except (TypeError, ValueError):
        raise HeaderError(f"{_where(path)}keyword {key} = {value!r} is not a number") from None
