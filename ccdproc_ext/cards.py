"""Header cards whose characters FITS does not allow, read and cleaned.

FITS headers hold printable ASCII only. Capture programs still write a C string's end
(``\\x00``), a line feed or a stray ``\\x7f`` into a value now and then, and astropy
can neither read nor fix such a card: it raises on it, and the whole night would stop on
one file. `clean_unprintable` reads those cards from their own bytes and writes them
back cleaned, each control character a space and any other character outside ASCII its
escape (`~ccdproc_ext.provenance.fits_text`), with a sentence saying what was done; the
reader (`ccdproc_ext.raw`) calls it on every header it reads. `repair_cards` reads a
card astropy can read but not parse for what it says (a decimal comma, ``3,2E-05``, is a
number).
"""

import copy
import re
import unicodedata

from astropy.io.fits.verify import VerifyError, VerifyWarning
from astropy.utils.exceptions import AstropyUserWarning

from ._warnings import ignoring
from .provenance import fits_text

__all__ = ["clean_unprintable", "header_problem", "repair_cards"]


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


#: A number written with a decimal comma, as some capture software writes it: 3,2E-05.
_DECIMAL_COMMA_RE = re.compile(r"^[+-]?\d+,\d*(?:[eEdD][+-]?\d+)?$")


def repair_cards(header):
    """Repair, in place, the cards of ``header`` that astropy cannot parse.

    A number written with a decimal comma (``EXPTIME = 3,2E-05``) becomes that number;
    any other unparsable value becomes its text. The header is left valid FITS.

    Returns
    -------
    list of str
        One sentence per repaired card, saying what it held and what it now holds.
    """
    notes = []
    with ignoring(VerifyWarning):
        # Parsing the value is the test; a card that parses costs nothing more.
        unparsable = []
        for index, card in enumerate(header.cards):
            if card.keyword in ("", "COMMENT", "HISTORY"):
                continue
            try:
                card.value  # noqa: B018 - parsing is the test
            except VerifyError:
                unparsable.append(index)
        repairs = []
        for index in unparsable:
            card = header.cards[index]
            # .image makes astropy fix the card (into a string): do it on a copy.
            fixed = copy.copy(card)
            fixed.image  # noqa: B018 - the fix happens on access
            repairs.append((index, card.keyword, str(fixed.value), fixed.comment))
    for index, keyword, text, comment in repairs:
        text = text.strip()
        if _DECIMAL_COMMA_RE.match(text):
            value = float(text.replace(",", ".").replace("D", "E").replace("d", "e"))
            notes.append(f"{keyword} = {text!r} is not valid FITS (a decimal comma): "
                         f"read as {value!r}")
        else:
            value = text
            notes.append(f"{keyword} = {text!r} is not valid FITS: kept as the text "
                         f"{text!r}")
        # the keyword may be repeated further down; this card keeps its place
        with ignoring(AstropyUserWarning):
            del header[index]
            header.insert(index, (keyword, value, comment))
    return notes


def header_problem(content, *, more_follows=False):
    """What is wrong with a FITS header, in the words of its own cards, or ``None`` when
    they do not tell.

    astropy says "Header missing END card" of a header cut short, or the name of the
    first ``NAXISn`` card it lacks; this says that the header has no END card, and
    which of the axes ``NAXIS`` announces have no card.

    Parameters
    ----------
    content : bytes
        The first bytes of the file (of its decompressed stream), from the first card.
    more_follows : bool, optional
        ``content`` is only the beginning of a longer file: a header without END in it
        is long, not cut short. Default is ``False``.

    Returns
    -------
    str or None
    """
    images = [content[i:i + 80] for i in range(0, len(content) - 79, 80)]
    if not images or not images[0].startswith(b"SIMPLE  ="):
        return None  # not a FITS header at all: astropy's words say so
    ends = [i for i, image in enumerate(images) if image.rstrip() == b"END"]
    cards = images[:ends[0]] if ends else images
    keywords = {image[:8].decode("latin-1").rstrip() for image in cards}
    naxis = _header_integer(cards, "NAXIS")
    missing = [f"NAXIS{i}" for i in range(1, (naxis or 0) + 1) if f"NAXIS{i}" not in keywords]
    axes = f"; NAXIS = {naxis} but it has no {', '.join(missing)} card" if missing else ""
    if not ends and not more_follows:
        return f"truncated or damaged: the header has no END card{axes}"
    if missing:
        return f"the header says NAXIS = {naxis} but has no {', '.join(missing)} card"
    return None


def _header_integer(images, keyword):
    """The integer value of the card ``keyword`` among card ``images``, or ``None``."""
    for image in images:
        if image[:8].decode("latin-1").rstrip() == keyword and image[8:10] == b"= ":
            text = image[10:].decode("latin-1").partition("/")[0].strip()
            return int(text) if text.isdigit() else None
    return None
