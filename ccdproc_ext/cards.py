"""Header cards whose characters FITS does not allow, read and cleaned.

FITS headers hold printable ASCII only. Capture programs still write a C string's end
(``\\x00``), a line feed or a stray ``\\x7f`` into a value now and then, and astropy
can neither read nor fix such a card: it raises on it, and the whole night would stop on
one file. `clean_unprintable` reads those cards from their own bytes and writes them
back cleaned, each control character a space and any other character outside ASCII its
escape (`~ccdproc_ext.provenance.fits_text`), with a sentence saying what was done; the
reader (`ccdproc_ext.raw`) calls it on every header it reads.
"""

import copy
import re
import unicodedata

from astropy.io.fits.verify import VerifyError, VerifyWarning
from astropy.utils.exceptions import AstropyUserWarning

from ._warnings import ignoring
from .provenance import fits_text

__all__ = ["clean_unprintable"]


def clean_unprintable(header, hdus):
    r"""Clean, in place, the cards of ``header`` holding characters FITS does not allow.

    A control character (``\x00``, a line feed ...) or a letter outside ASCII in a
    card is beyond what astropy can read or fix: it raises on the card, and the whole
    night would stop on one file. Such a card keeps its keyword and its place; its
    value and comment, read from the card's own bytes in ``hdus`` (the HDUs the header
    was read from), are cleaned by `_cleaned`: a control character becomes a space, a
    letter outside ASCII its escape. Commentary cards are cleaned likewise.

    Parameters
    ----------
    header : `~astropy.io.fits.Header`
        The header to clean (a copy of one read from ``hdus``, perhaps merged).
    hdus : list of `~astropy.io.fits.PrimaryHDU` or `~astropy.io.fits.ImageHDU`
        The HDUs of an open file whose cards ``header`` holds, in the order their
        cards are looked for.

    Returns
    -------
    list of str
        One sentence per card cleaned, saying what it held and what it now holds.

    Examples
    --------
    A card as a capture program wrote it, a C string's end in its value:

    >>> import io
    >>> import numpy as np
    >>> from astropy.io import fits
    >>> raw = io.BytesIO()
    >>> fits.PrimaryHDU(np.zeros((2, 2), np.int16),
    ...                 fits.Header({"OBJECT": "M31#"})).writeto(raw)
    >>> raw = io.BytesIO(raw.getvalue().replace(b"#", b"\x00"))
    >>> with fits.open(raw) as hdul:
    ...     header = hdul[0].header.copy()
    ...     clean_unprintable(header, [hdul[0]])
    ["OBJECT held characters FITS does not allow (\\x00): read as 'M31'"]
    >>> header["OBJECT"]
    'M31'
    """
    images = [image for hdu in hdus for image in _card_images(hdu)]
    if images and _UNPRINTABLE_RE.search("".join(images)) is None:
        return []  # the usual header, told from its bytes without parsing a card
    notes = []
    with ignoring(VerifyWarning):
        for index, card in enumerate(header.cards):
            if card.keyword in ("COMMENT", "HISTORY", ""):
                text = str(card.value)
                if not _printable(text):
                    header[index] = _cleaned(text)
                    notes.append(_escape_note(card.keyword, text))
                continue
            if _parses_or_is_fixable(card):
                continue
            value, comment = _value_and_comment(images, card.keyword)
            keyword = card.keyword
            with ignoring(AstropyUserWarning):
                del header[index]
                header.insert(index, (keyword, _cleaned(value), _cleaned(comment)))
            notes.append(_escape_note(keyword, value))
    return notes


def _cleaned(text):
    """``text`` as FITS allows it: each control character (``\\x00``, a line feed,
    ``\\x7f`` ...) a space, since it says nothing (a C string's end, a stray key), and
    each other character outside ASCII escaped (``\\xe9``); trailing spaces removed, as
    FITS ignores them."""
    spaced = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
    return fits_text(spaced).rstrip(" ")


def _escape_note(keyword, text):
    """``OBJECT held characters FITS does not allow (\\x00): read as 'M31'``."""
    escapes = ", ".join(sorted({fits_text(c) for c in text if not _printable(c)}))
    return (f"{keyword} held characters FITS does not allow ({escapes}): read as "
            f"'{_cleaned(text)}'")


#: A character a FITS header may not hold: anything but the space to the tilde.
_UNPRINTABLE_RE = re.compile(r"[^ -~]")


def _printable(text):
    return _UNPRINTABLE_RE.search(text) is None


def _parses_or_is_fixable(card):
    """Whether astropy reads ``card``, or can fix it (a copy is tried)."""
    try:
        card.value  # noqa: B018 - parsing is the test
        return True
    except VerifyError:
        pass
    try:
        copy.copy(card).image  # noqa: B018 - the fix happens on access
    except (ValueError, VerifyError):  # "... must contain standard printable ASCII"
        return False
    return True


def _card_images(hdu):
    """The 80-character card images of ``hdu``'s header as the file holds them (bytes
    read as Latin-1), from the open file (`~astropy.io.fits.PrimaryHDU.fileinfo`)."""
    info = hdu.fileinfo()
    if info is None:
        return []
    stream = info["file"]
    stream.seek(info["hdrLoc"])
    content = stream.read(info["datLoc"] - info["hdrLoc"]).decode("latin-1")
    return [content[i:i + 80] for i in range(0, len(content), 80)]


#: A string value, quotes doubled inside, then perhaps a comment.
_STRING_CARD_RE = re.compile(r"^\s*'((?:[^']|'')*)'\s*(?:/\s?(.*))?$", re.DOTALL)


def _value_and_comment(images, keyword):
    """The value and comment of the first card ``keyword`` of ``images`` that holds a
    character outside printable ASCII, as text (``("", "")`` when none does). A long
    string goes on over the ``CONTINUE`` cards that follow it (each piece but the last
    ending with ``&``)."""
    for index, image in enumerate(images):
        if image[:8].rstrip() != keyword or image[8:10] != "= ":
            continue
        pieces = [image[10:]]
        for follower in images[index + 1:]:
            if follower[:8].rstrip() != "CONTINUE":
                break
            pieces.append(follower[8:])
        if all(_printable(piece) for piece in pieces):
            continue  # a card of the same keyword that astropy reads
        parsed = [_value_text(piece) for piece in pieces]
        value = "".join(text.removesuffix("&") for text, _ in parsed[:-1]) + parsed[-1][0]
        return value, " ".join(comment for _, comment in parsed if comment)
    return "", ""


def _value_text(text):
    """``(value, comment)`` of the text after a card's ``= ``: a quoted string
    (doubled quotes undone), or the text up to the comment's ``/``."""
    match = _STRING_CARD_RE.match(text)
    if match is not None:
        return match.group(1).replace("''", "'"), (match.group(2) or "").strip(" ")
    value, _, comment = text.partition("/")
    return value.strip(" "), comment.strip(" ")
