"""Reading raw frames safely, and writing outputs atomically.

Raw files are only ever opened read-only (``mode="readonly"``, no memory map). A file that
is truncated, empty or not FITS raises `~ccdproc_ext.FrameReadError` naming the file and
what is wrong, never a bare traceback from deep inside astropy. Header cards astropy
cannot parse are read for what they say (a decimal comma, ``3,2E-05``, is a number) and
the repair is written in the frame's ``HISTORY``.

Outputs are written to a temporary name beside their destination (``.NAME.XXXX.part``)
and renamed when complete, so an interrupted run never leaves a half-written file under
the final name; `remove_partial_files` clears what a killed run left behind.
"""

import contextlib
import copy
import functools
import hashlib
import io
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.io.fits.card import UNDEFINED
from astropy.io.fits.verify import VerifyError, VerifyWarning
from astropy.nddata import CCDData
from astropy.utils.exceptions import AstropyUserWarning

from ._warnings import ignoring
from .exceptions import CcdprocExtWarning, FrameReadError

__all__ = ["file_checksum", "header_unit", "inspect_frame", "parse_unit", "read_frame",
           "read_header", "remove_partial_files", "repair_cards", "squeeze_header",
           "transpose_header", "write_atomic"]

_FITS_BLOCK = 2880
#: The first bytes of compressed files astropy opens (gzip, bzip2, zip): their length on
#: disk says nothing about the FITS blocks inside.
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"PK\x03\x04")
#: Temporary files of `write_atomic` and of the tables written by `reduce_night`.
PARTIAL_SUFFIX = ".part"


def _is_compressed(path):
    with open(path, "rb") as stream:
        start = stream.read(4)
    return start.startswith(_COMPRESSED_MAGIC)


def _check_length(path):
    size = os.path.getsize(path)
    if size == 0:
        raise FrameReadError(f"{path}: the file is empty")
    if size < _FITS_BLOCK and not _is_compressed(path):
        raise FrameReadError(f"{path}: the file is {size} bytes, shorter than one FITS block "
                             f"({_FITS_BLOCK} bytes): not a FITS file, or truncated")


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


def _expected_data_bytes(header):
    naxis = header.get("NAXIS", 0)
    if not naxis:
        return 0
    count = 1
    for i in range(1, naxis + 1):
        count *= header.get(f"NAXIS{i}", 0)
    return count * abs(header.get("BITPIX", 8)) // 8


_BITPIX = (8, 16, 32, 64, -32, -64)


def _data_problem(hdul, hdu, path, ext):
    """Why the data unit of ``hdu`` cannot be read as a 2-D image, or ``None``.

    Told from the header and the file's length, without reading the pixels; a compressed
    file's length says nothing, so only reading it can tell it is cut short.
    """
    header = hdu.header
    problem = _image_problem(header, ext)
    if problem or getattr(hdul._file, "compression", None):
        return problem
    return _truncation(header, os.path.getsize(path) - hdu._data_offset)


def _image_problem(header, ext):
    """Why ``header`` does not describe a 2-D image (see `_data_problem`), or ``None``."""
    bitpix = header.get("BITPIX")
    if bitpix not in _BITPIX:
        return (f"BITPIX = {bitpix!r} is not a FITS pixel type "
                f"({', '.join(map(str, _BITPIX))})")
    naxis = header.get("NAXIS", 0)
    if not isinstance(naxis, int) or naxis == 0 or _expected_data_bytes(header) == 0:
        return f"HDU {ext} holds no image"
    if naxis < 2:
        return f"HDU {ext} is {naxis}-dimensional; a 2-D image is expected"
    if naxis > 2 and not _extra_axes_of_length_one(header):
        lengths = " x ".join(str(header.get(f"NAXIS{i}")) for i in range(1, naxis + 1))
        return (f"HDU {ext} is {naxis}-dimensional; a 2-D image is expected (a cube of "
                f"{lengths} pixels is several planes, not one frame)")
    return None


def _extra_axes_of_length_one(header):
    """Whether every axis beyond the second (NAXIS3 ...) has length 1."""
    return all(header.get(f"NAXIS{i}") == 1 for i in range(3, header.get("NAXIS", 0) + 1))


def _squeeze_note(header):
    """The note `inspect_frame` gives an image with length-1 extra axes, or ``None``."""
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
    note = _squeeze_note(header)
    if note is None:
        return None
    for i in range(3, header["NAXIS"] + 1):
        header.remove(f"NAXIS{i}", ignore_missing=True)
    header["NAXIS"] = 2
    return note


def _truncation(header, available):
    """Whether ``available`` bytes after the header hold the data unit ``header`` needs."""
    expected = _expected_data_bytes(header)
    if available < expected:
        return (f"truncated: the data unit needs {expected} bytes but the file holds only "
                f"{max(available, 0)} after the header")
    return None


@contextlib.contextmanager
def _open_raw(source, what, *, path=None, **options):
    """Open a raw file read-only and quietly; whatever fails is a `FrameReadError`.

    ``source`` is the file's path, or its bytes in a file-like object (then ``path``
    names it). ``what`` ("header", "image") says what was being read, in the message.
    """
    path = source if path is None else path
    try:
        with contextlib.ExitStack() as files:
            if source is path:
                _check_length(path)
                # Opened here, closed here: fits.open leaves a file it opened itself
                # open when it fails on some headers (a missing NAXISn).
                source = files.enter_context(open(path, "rb"))
            with ignoring(VerifyWarning, AstropyUserWarning), \
                    fits.open(source, mode="readonly", memmap=False, **options) as hdul:
                yield hdul
    except FrameReadError:
        raise
    except Exception as err:  # whatever astropy raises, the file is bad
        # (a BITPIX of 17 is a KeyError, a cut gzip stream an EOFError ...)
        reason = str(err) or type(err).__name__
        raise FrameReadError(f"{path}: cannot read the FITS {what} ({reason})") from None


# ------------------------------------------------------------- reading headers quickly
# fits.open builds an HDUList, a file object and an HDU around every header it reads, and
# costs several times what the header does; astropy then parses each card's value anew
# in every header. A plain FITS file's header is read here from its blocks instead, and
# its cards parsed by astropy, once per distinct card image in a scan (a camera's frames
# repeat most of their cards); whatever is not plain goes to fits.open, for its checks
# and its messages.
_CARD_LENGTH = 80
_END_CARD = b"END" + b" " * 77
#: Keywords whose cards astropy reads one per 80 characters, under their own name:
#: blank, or up to eight of A-Z 0-9 _ - (no HIERARCH, no record-valued keyword).
_PLAIN_KEYWORD_RE = re.compile(r"[A-Z0-9_-]{0,8}")
#: In a cache of parsed cards: an image that is not a plain card (see `_parse_card`).
_NOT_PLAIN = object()


def _end_card(block):
    """Where the END card starts in ``block`` (a card boundary), or -1."""
    at = block.find(_END_CARD)
    while at > 0 and at % _CARD_LENGTH:
        at = block.find(_END_CARD, at + 1)
    return at


def _parse_card(image):
    """An 80-character card image parsed by astropy: ``(card, (keyword, value), (keyword,
    value or None))``, the last as ``header.get`` gives it (``None`` for COMMENT, HISTORY
    and blank cards).

    `_NOT_PLAIN` for an image that is not a card of its own (``CONTINUE``), whose keyword
    is not plain (HIERARCH, record-valued, odd characters), or whose value astropy
    cannot parse (`repair_cards` sees to it).
    """
    if image.startswith("CONTINUE"):
        return _NOT_PLAIN
    card = fits.Card.fromstring(image)
    keyword = card.keyword
    if not _PLAIN_KEYWORD_RE.fullmatch(keyword):
        return _NOT_PLAIN
    try:
        value = card.value
    except VerifyError:
        return _NOT_PLAIN
    card.comment  # noqa: B018 - parsed here, once, rather than in every copy
    if keyword in ("", "COMMENT", "HISTORY"):  # header.get gives all of them, not a value
        return card, (keyword, value), None
    return card, (keyword, value), (keyword, None if value is UNDEFINED else value)


def _copy_card_state(card):
    # What copy.copy does for a Card (its state is its __dict__), without the detours.
    new = _Card.__new__(_Card)
    new.__dict__.update(card.__dict__)
    return new


_Card = fits.Card
#: A copy of a card, as `copy.copy` makes it.
_copy_card = copy.copy if any(hasattr(_Card, name) for name in (
    "__copy__", "__setstate__", "__slots__")) else _copy_card_state


def _header_from_text(text, cards_text, cache):
    """The `~astropy.io.fits.Header` astropy makes from ``text``, and its cards' values.

    Returns ``(header, pairs, values)``. With a ``cache`` (a dict of card images, filled
    here, see `_parse_card`), the header is made of copies of cards parsed once per scan,
    ``pairs`` lists the ``(keyword, value)`` of its cards and ``values`` maps each
    keyword but COMMENT, HISTORY and blank to the value of its first card (``None`` for
    no value, as ``header.get`` gives it). Without a cache, or when a card is not plain,
    the header is ``Header.fromstring(text)``, as fits.open makes it, ``pairs`` is
    ``None`` and ``values`` is the header. ``cards_text`` is ``text`` up to the END card.
    """
    if cache is not None:
        cards, pairs, values = [], [], {}
        for start in range(0, len(cards_text), _CARD_LENGTH):
            image = cards_text[start:start + _CARD_LENGTH]
            parsed = cache.get(image)
            if parsed is None:
                parsed = cache[image] = _parse_card(image)
            if parsed is _NOT_PLAIN:
                break
            cards.append(_copy_card(parsed[0]))
            pairs.append(parsed[1])
            if parsed[2] is not None:
                values.setdefault(*parsed[2])
        else:
            return fits.Header(cards), pairs, values
    header = fits.Header.fromstring(text)
    return header, None, header


def _plain_data_bytes(header, index):
    """The length of the data unit of HDU ``index`` whose header is ``header``, or ``None``.

    ``None`` unless the HDU is what fits.open reads without a remark: a primary image
    (``SIMPLE = T``, no random groups) or an IMAGE extension, with whole-number BITPIX,
    NAXIS and NAXISn, GCOUNT = 1 and PCOUNT = 0 (or none), and the cards astropy's
    ImageHDU reads (BZERO, BSCALE, BLANK) parsable (a card that is not stops fits.open).
    Raises what astropy raises on a card it cannot parse. ``header`` may be the dict of
    `_header_from_text`.
    """
    first = header.get("SIMPLE" if index == 0 else "XTENSION")
    if index == 0:
        if first is not True or "GROUPS" in header:
            return None
    elif not isinstance(first, str) or first.rstrip() != "IMAGE":
        return None
    bitpix, naxis = header.get("BITPIX"), header.get("NAXIS")
    if type(bitpix) is not int or bitpix not in _BITPIX:
        return None
    if type(naxis) is not int or not 0 <= naxis <= 999:
        return None
    count = 1
    for i in range(1, naxis + 1):
        length = header.get(f"NAXIS{i}")  # astropy needs each one
        if type(length) is not int or length < 0:
            return None
        count *= length
    gcount, pcount = header.get("GCOUNT", 1), header.get("PCOUNT", 0)
    if type(gcount) is not int or type(pcount) is not int or (gcount, pcount) != (1, 0):
        return None
    for keyword in ("BZERO", "BSCALE", "BLANK"):
        header.get(keyword)
    if naxis == 0:
        return 0
    return abs(bitpix) // 8 * count


def _read_header_blocks(path, ext=0, cache=None):
    """The header of HDU ``ext`` of a plain FITS file, read straight from its blocks.

    Parameters
    ----------
    path : str or `pathlib.Path`
    ext : int, optional
        The HDU. Default is 0.
    cache : dict or None, optional
        Card images already parsed (see `_header_from_text`); filled here.

    Returns
    -------
    tuple or None
        ``(header, pairs, values, data_offset, size)``: the `~astropy.io.fits.Header`,
        with the cards astropy makes from the header's text (as `~astropy.io.fits.open`
        does), ``pairs`` and ``values`` as `_header_from_text` gives them, where the data
        unit starts, and the file's length. ``None`` when the file is anything else:
        missing, compressed, shorter than a block, not FITS, a header without END card
        or with bytes that are not ASCII, an HDU that is not a plain image (see
        `_plain_data_bytes`), a primary header fits.open would add ``EXTEND`` to, an
        ``ext`` that is not a whole number... `~astropy.io.fits.open` then reads the
        file, with its own checks and messages.
    """
    if isinstance(ext, bool) or not isinstance(ext, int) or ext < 0:
        return None
    try:
        with open(path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            offset = 0
            for index in range(ext + 1):
                stream.seek(offset)
                blocks = []
                while True:
                    block = stream.read(_FITS_BLOCK)
                    if len(block) < _FITS_BLOCK:
                        return None  # no END card before the end of the file
                    if not blocks and not block.startswith(
                            b"XTENSION=" if index else b"SIMPLE  ="):
                        return None  # not a FITS header (or a compressed file)
                    blocks.append(block)
                    end = _end_card(block)
                    if end >= 0:
                        break
                raw = b"".join(blocks)
                if b"\0" in raw:
                    return None
                text = raw.decode("ascii")
                with ignoring(VerifyWarning, AstropyUserWarning):
                    header, pairs, values = _header_from_text(
                        text, text[:len(raw) - _FITS_BLOCK + end], cache)
                    data_bytes = _plain_data_bytes(values, index)
                    # (read whatever ext is: fits.open reads it, and fails on a bad card)
                    extend = values.get("EXTEND") if index == 0 else True
                if data_bytes is None:
                    return None
                data_offset = offset + len(raw)
                offset = data_offset + -(-data_bytes // _FITS_BLOCK) * _FITS_BLOCK
                # fits.open adds EXTEND = T to a primary header followed by an extension.
                if ext == 0 and not extend and size > offset:
                    return None
    except Exception:  # whatever it is, fits.open says it better
        return None
    return header, pairs, values, data_offset, size


def _inspect(path, ext=0, cache=None):
    """`inspect_frame`, and the values of the header's cards when they were read here.

    Returns ``(header, problem, notes, pairs, values)``. With a ``cache`` of parsed cards
    (see `_header_from_text`), filled here, a plain file whose cards are all plain gives
    ``pairs``, the ``(keyword, value)`` of each card, and ``values``, the value of the
    first card of each keyword but the commentary ones (as ``header.get`` gives it);
    otherwise (and when a card had to be repaired) both are ``None``, and the header's
    cards say them.
    """
    fast = _read_header_blocks(path, ext, cache)
    if fast is None:
        path = Path(path)
        with _open_raw(path, "header", lazy_load_hdus=True) as hdul:
            hdu = hdul[ext]
            header = hdu.header.copy()
            problem = _data_problem(hdul, hdu, path, ext)
        return header, problem, _squeezed(header, problem, repair_cards(header)), None, None
    # The header is the file's own, new: no copy.
    header, pairs, values, data_offset, size = fast
    problem = _image_problem(values, ext) or _truncation(values, size - data_offset)
    if pairs is not None:  # every card parsed: nothing to repair
        return header, problem, _squeezed(values, problem, []), pairs, values
    return header, problem, _squeezed(header, problem, repair_cards(header)), None, None


def _squeezed(header, problem, notes):
    """``notes``, with the note of an image whose extra axes have length 1 (its header
    is left as the file has it: its pixels are squeezed when read)."""
    note = None if problem else _squeeze_note(header)
    return notes if note is None else [*notes, note]


def read_header(path, ext=0):
    """Read the header of one HDU of a raw file, read-only.

    Cards astropy cannot parse are kept as they are (see `~ccdproc_ext.headers.card_value`).

    Raises
    ------
    FrameReadError
        If the file is missing, empty, or not FITS.
    """
    fast = _read_header_blocks(path, ext)
    if fast is not None:
        return fast[0]
    with _open_raw(path, "header", lazy_load_hdus=True) as hdul:
        return hdul[ext].header.copy()


def inspect_frame(path, ext=0):
    """Read the header of a raw file and check, from the file's length, its data unit.

    Returns
    -------
    header : `~astropy.io.fits.Header`
        A copy, with unparsable cards repaired (see `repair_cards`).
    problem : str or None
        Why the data unit cannot be read as a 2-D image (``"truncated: ..."``), without
        the file name; ``None`` when it looks complete.
    notes : list of str
        The repairs made to the header, and ``"3-D image with one plane: squeezed to
        2-D"`` for an image with length-1 extra axes (read as 2-D by `read_frame`).

    Raises
    ------
    FrameReadError
        If the header itself cannot be read (as `read_header`).
    """
    return _inspect(path, ext)[:3]


def read_frame(path, profile=None, *, dtype=np.float32, ext=0, unit=None):
    """Read a raw frame as a `~astropy.nddata.CCDData`, turned and typed for reduction.

    Parameters
    ----------
    path : str or `pathlib.Path`
        The raw file; opened read-only.
    profile : `~ccdproc_ext.InstrumentProfile` or None, optional
        Gives the unit and whether frames are stored transposed. Default is ``None``
        (unit from ``BUNIT``, else adu).
    dtype : numpy dtype, optional
        Pixel type of the result. Default is ``float32``.
    ext : int, optional
        The HDU holding the image. Default is 0.
    unit : str or `~astropy.units.Unit` or None, optional
        Overrides the unit.

    Returns
    -------
    `~astropy.nddata.CCDData`
        The frame; ``meta`` is a copy of the header, with the cards astropy cannot parse
        repaired (see `repair_cards`) and each repair written in a ``HISTORY`` card. An
        image with length-1 extra axes (``NAXIS3 = 1``) is squeezed to 2-D (see
        `squeeze_header`); a transposed camera's WCS cards are transposed with its
        pixels (see `transpose_header`); the unit is read by `header_unit`.

    Raises
    ------
    FrameReadError
        If the file is missing, empty, truncated (its data unit shorter than the header
        says) or not FITS.
    """
    frame, _ = _read_frame(Path(path), profile, dtype=dtype, ext=ext, unit=unit)
    return frame


def _read_frame_and_checksum(path, profile=None, *, dtype=np.float32, ext=0):
    """`read_frame` and `file_checksum` of ``path`` from one read of the file."""
    return _read_frame(Path(path), profile, dtype=dtype, ext=ext, checksum=True)


def _read_frame(path, profile, *, dtype, ext, unit=None, checksum=False):
    """The frame of `read_frame` (and the file's checksum), reading the file once.

    The whole file is read into memory: its header is parsed by astropy, and the
    pixels of a plain image are converted straight from those bytes (`_pixels`).
    """
    _check_length(path)
    try:
        content = path.read_bytes()
    except OSError as err:
        raise FrameReadError(f"{path}: cannot read the FITS image "
                             f"({err.strerror or err})") from None
    digest = hashlib.blake2b(content).hexdigest() if checksum else None
    with _open_raw(io.BytesIO(content), "image", path=path, lazy_load_hdus=True) as hdul:
        hdu = hdul[ext]
        header = hdu.header.copy()
        problem = _data_problem(hdul, hdu, path, ext)
        if problem:
            raise FrameReadError(f"{path}: {problem}")
        offset = hdu._data_offset
        plain = not getattr(hdul._file, "compression", None) and _is_plain(header)
        if not plain:
            data = np.asarray(hdu.data, dtype=dtype)
    if plain:  # outside the block above: other threads may parse headers meanwhile
        data = _pixels(content, header, offset, dtype)
    return _as_frame(data, header, path, profile, ext=ext, unit=unit), digest


#: Numpy types of the FITS pixel types, as stored (big-endian).
_STORED_TYPES = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


def _is_plain(header):
    """Whether `_pixels` decodes this image: stored as it is, or as unsigned integers
    (``BZERO`` = 2**(BITPIX-1), or signed bytes with ``BZERO = -128``); not with
    ``BSCALE``, another ``BZERO`` or ``BLANK``, which astropy then handles."""
    bitpix = header.get("BITPIX")
    if bitpix not in _STORED_TYPES or header.get("BSCALE", 1) != 1 or "BLANK" in header:
        return False
    bzero = header.get("BZERO", 0)
    return bzero == 0 or (bitpix > 8 and bzero == 2 ** (bitpix - 1)) or \
        (bitpix == 8 and bzero == -128)


def _pixels(content, header, offset, dtype):
    """The pixels of a plain image (`_is_plain`) converted to ``dtype`` straight from
    the file's bytes: the values astropy gives (``hdu.data``), converted the same way."""
    bitpix = header["BITPIX"]
    bzero = header.get("BZERO", 0)
    shape = tuple(header.get(f"NAXIS{i}", 0) for i in range(header.get("NAXIS", 0), 0, -1))
    count = int(np.prod(shape)) if shape else 0
    stored = np.frombuffer(content, dtype=_STORED_TYPES[bitpix], count=count,
                           offset=offset).reshape(shape)
    if bzero == 0:
        return stored.astype(dtype)
    if bitpix == 16:
        # Every uint16 is exact in float32 and float64: one conversion and one addition.
        return np.add(stored, np.array(bzero, dtype=dtype), dtype=dtype)
    if bitpix == 8:
        return (stored ^ np.uint8(0x80)).view(np.int8).astype(dtype)
    unsigned = stored.view(f">u{bitpix // 8}")
    return (unsigned ^ np.array(1 << (bitpix - 1), dtype=unsigned.dtype)).astype(dtype)


def _as_frame(data, header, path, profile, *, ext, unit):
    if data.ndim > 2 and all(length == 1 for length in data.shape[:-2]):
        # Length-1 extra axes (Andor Solis writes NAXIS = 3, NAXIS3 = 1): one plane.
        data = data.reshape(data.shape[-2:])
        note = squeeze_header(header)
        if note:
            header.add_history(f"ccdproc_ext: {note}")
    if data.ndim != 2:
        raise FrameReadError(f"{path}: HDU {ext} is {data.ndim}-dimensional; a 2-D image "
                             "is expected")
    if profile is not None and profile.transposed:
        data = np.ascontiguousarray(data.T)
        transpose_header(header)
    if unit is None:
        unit = header_unit(header, profile.unit if profile is not None else "adu", path=path)
    # The scaling keywords describe the stored integers, not these pixels.
    for key in ("BZERO", "BSCALE", "BLANK"):
        header.remove(key, ignore_missing=True)
    for note in repair_cards(header):
        header.add_history(f"ccdproc_ext: {note}")
    return CCDData(data, unit=unit, meta=header)


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


def header_unit(header, default="adu", *, path=None):
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
        The file, named in the warning.

    Returns
    -------
    `~astropy.units.UnitBase`

    Warns
    -----
    CcdprocExtWarning
        When ``BUNIT`` is not a unit: ``default`` is used instead.
    """
    default = u.Unit(default)
    value = header.get("BUNIT")
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    unit = parse_unit(value)
    if unit is not None:
        return unit
    where = f"{path}: " if path is not None else ""
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


def file_checksum(path, *, chunk_size=1 << 20):
    """BLAKE2b of a file's bytes, as hex (recorded in provenance).

    BLAKE2b is as strong as SHA-256 and, without SHA instructions in the processor,
    about twice as fast.
    """
    digest = hashlib.blake2b()
    with open(path, "rb") as stream:
        while block := stream.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(ccd, path, *, dtype=np.float32, uncertainty=False, mask=False):
    """Write a `~astropy.nddata.CCDData` to ``path`` through a temporary file and a rename.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The frame to write.
    path : str or `pathlib.Path`
        Destination; its folder must exist.
    dtype : numpy dtype, optional
        Pixel type written. Default is ``float32``.
    uncertainty, mask : bool, optional
        Whether to write the uncertainty and mask extensions (when present). Default is
        ``False``: they double or triple the bytes written.

    Returns
    -------
    `pathlib.Path`
    """
    path = Path(path)
    header = fits.Header(ccd.meta) if not isinstance(ccd.meta, fits.Header) else ccd.meta.copy()
    if ccd.unit is not None:
        header["BUNIT"] = ccd.unit.to_string()
    hdus = [fits.PrimaryHDU(np.ascontiguousarray(ccd.data, dtype=dtype), header=header)]
    if uncertainty and ccd.uncertainty is not None:
        hdus.append(fits.ImageHDU(np.ascontiguousarray(ccd.uncertainty.array, dtype=dtype),
                                  name="UNCERT"))
        hdus[-1].header["UTYPE"] = type(ccd.uncertainty).__name__
    if mask and ccd.mask is not None:
        hdus.append(fits.ImageHDU(ccd.mask.astype(np.uint8), name="MASK"))
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX,
                                     dir=path.parent)
    os.close(fd)
    try:
        fits.HDUList(hdus).writeto(temporary, overwrite=True, output_verify="silentfix")
        # mkstemp makes the file private (0600); an output is as readable as any new file.
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


@functools.cache
def _umask():
    # os.umask can only be read by setting it; done once, at the first write.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_partial_files(folder):
    """Delete the temporary files (``.*.part``) an interrupted run left in ``folder``.

    Only hidden files and folders ending in ``.part`` directly in ``folder`` are
    removed; they are never complete outputs (a complete output has been renamed), and
    a folder of that name holds the calibrated frames of a master being combined. Two
    reductions must not write into one folder at the same time.

    Returns
    -------
    list of `pathlib.Path`
        The files and folders removed.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in sorted(folder.glob(f".*{PARTIAL_SUFFIX}")):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        elif path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
