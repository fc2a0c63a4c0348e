"""Reading raw frames: one reader for every file layout ccdproc reads.

A raw frame may be a plain FITS file, a gzip, bzip2, zip or LZW (``.Z``) compressed one
(astropy decompresses them), a tile-compressed file (``.fits.fz``: a
`~astropy.io.fits.CompImageHDU` in extension 1), or an image in any extension under a
primary header that holds the keywords (``INHERIT = T``, or a primary HDU without data,
as observatories and every ``.fz`` file write them): the primary header's cards are then
merged under the extension's own, as `~astropy.nddata.CCDData.read` does. Unsigned
integers (``BZERO = 32768`` or ``2147483648``) are read as the values they stand for, and
an image written with length-1 extra axes (``NAXIS3 = 1``) as the 2-D image it is.
astropy does all the reading; this module chooses the HDU, checks the file, repairs what
astropy cannot parse and turns the result into a `~astropy.nddata.CCDData`.

Raw files are only ever opened read-only (no memory map). A file that is truncated, empty
or not FITS raises `~ccdproc_ext.FrameReadError` naming the file and what is wrong, never a
bare traceback from deep inside astropy. Header cards astropy cannot parse are read for
what they say (a decimal comma, ``3,2E-05``, is a number) and the repair is written in the
frame's ``HISTORY``.
"""

import bz2
import contextlib
import copy
import dataclasses
import gzip
import hashlib
import io
import os
import re
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError, VerifyWarning
from astropy.nddata import CCDData
from astropy.utils.exceptions import AstropyUserWarning

from ._warnings import ignoring
from .cards import clean_unprintable
from .exceptions import CcdprocExtWarning, FrameReadError

__all__ = ["COMPRESSED_SUFFIXES", "FITS_SUFFIXES", "RawImage", "file_checksum",
           "header_unit", "inspect_frame", "is_fits_name", "open_image", "parse_unit",
           "read_frame", "read_header", "repair_cards", "squeeze_header", "transpose_header"]

_FITS_BLOCK = 2880

#: The endings of the FITS files ccdproc's `~ccdproc.ImageFileCollection` finds in a folder
#: (``.fits``, ``.fit``, ``.fts``, each plain or compressed), longest first, lower case.
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".z", ".zip", ".fz")
FITS_SUFFIXES = tuple(sorted((f"{stem}{compressed}" for stem in (".fits", ".fit", ".fts")
                              for compressed in ("", *COMPRESSED_SUFFIXES)),
                             key=len, reverse=True))

#: The first bytes of the compressed files astropy opens, and what they are. Their length
#: on disk says nothing about the FITS blocks inside.
_COMPRESSED_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"PK\x03\x04": "zip",
                     b"\x1f\x9d": "LZW"}


def is_fits_name(name):
    """Whether a file name ends as a FITS file's does (see `FITS_SUFFIXES`), in any case;
    hidden files (``.name``) are not frames."""
    lower = str(name).lower()
    return lower.endswith(FITS_SUFFIXES) and not lower.startswith(".")


def _compression(path):
    """The compression of a file from its first bytes (``"gzip"`` ...), or ``None``."""
    with open(path, "rb") as stream:
        start = stream.read(4)
    return next((kind for magic, kind in _COMPRESSED_MAGIC.items() if start.startswith(magic)),
                None)


def _check_length(path):
    """Refuse an empty file, and a plain one shorter than a FITS block; the compression."""
    try:
        size = os.path.getsize(path)
        compression = _compression(path) if size else None
    except OSError as err:
        raise FrameReadError(f"{path}: cannot read the file ({err.strerror or err})") from None
    if size == 0:
        raise FrameReadError(f"{path}: the file is empty")
    if size < _FITS_BLOCK and compression is None:
        raise FrameReadError(f"{path}: the file is {size} bytes, shorter than one FITS block "
                             f"({_FITS_BLOCK} bytes): not a FITS file, or truncated")
    return compression


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




def _data_problem(image, size, compression):
    """Why the image of ``image`` (a `RawImage`) cannot be read as a 2-D image, or ``None``.

    Told from the header and the file's length, without reading the pixels. The length
    of a gzip, bzip2 or zip file says nothing: only reading it tells it is cut short
    (`read_frame` says so). A tile-compressed image's data unit is a table whose length
    astropy gives (``hdu.fileinfo()['datSpan']``, rounded up to whole blocks).
    """
    problem = _image_problem(image.header, image.index)
    if problem or compression is not None:
        return problem
    # The HDU's own fileinfo: the HDUList's compares every header's length first.
    location = image.hdu.fileinfo()
    available = size - location["datLoc"]
    if isinstance(image.hdu, fits.CompImageHDU):
        needed = location["datSpan"]
        # Only the padding of the last block may be missing.
        if available <= needed - _FITS_BLOCK:
            return (f"truncated: the compressed data unit needs about {needed} bytes but "
                    f"the file holds only {max(available, 0)} after the header")
        return None
    return _truncation(image.header, available)


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
def _open_raw(source, what, *, path=None, notices=None, **options):
    """Open a raw file read-only and quietly; whatever fails is a `FrameReadError`.

    ``source`` is the file's path, or its bytes in a file-like object (then ``path``
    names it). ``what`` ("header", "image") says what was being read, in the message.
    astropy's warnings about the file are not shown; those saying a card's keyword is
    invalid (which ccdproc's collection shows) are added to the list ``notices``, if given.
    """
    path = source if path is None else path
    caught = []
    try:
        with contextlib.ExitStack() as files:
            if source is path:
                # Opened here, closed here: fits.open leaves a file it opened itself
                # open when it fails on some headers (a missing NAXISn).
                source = files.enter_context(open(path, "rb"))
            caught = files.enter_context(_recording())
            options.setdefault("memmap", False)
            with fits.open(source, mode="readonly", **options) as hdul:
                yield hdul
    except FrameReadError:
        raise
    except Exception as err:  # whatever astropy raises, the file is bad
        # (a BITPIX of 17 is a KeyError, a cut gzip stream an EOFError ...)
        problem = _first_header_problem(path)
        if problem is not None:
            raise FrameReadError(f"{path}: {problem}") from None
        raise FrameReadError(f"{path}: cannot read the FITS {what} ({_reason(err)})") from None
    finally:
        if notices is not None:
            notices.extend(w.message for w in caught if issubclass(w.category, AstropyUserWarning)
                           and "header keyword is invalid" in str(w.message))


#: How far `_first_header_problem` looks for the END card: 36 blocks, 1296 cards.
_HEADER_LIMIT = 36 * _FITS_BLOCK


def _first_header_problem(path):
    """What is wrong with the first header of a file astropy could not open, in the
    words of a header's own cards, or ``None`` when they do not tell.

    astropy says "Header missing END card" of a header cut short, or the name of the
    first ``NAXISn`` card it lacks; this says that the header has no END card, and
    which of the axes ``NAXIS`` announces have no card.
    """
    opener = {None: open, "gzip": gzip.open, "bzip2": bz2.open}.get(_compression(path))
    if opener is None:
        return None
    try:
        with opener(path, "rb") as stream:
            content = stream.read(_HEADER_LIMIT)
    except (OSError, EOFError):
        return None
    images = [content[i:i + 80] for i in range(0, len(content) - 79, 80)]
    if not images or not images[0].startswith(b"SIMPLE  ="):
        return None  # not a FITS header at all: astropy's words say so
    ends = [i for i, image in enumerate(images) if image.rstrip() == b"END"]
    cards = images[:ends[0]] if ends else images
    keywords = {image[:8].decode("latin-1").rstrip() for image in cards}
    naxis = _header_integer(cards, "NAXIS")
    missing = [f"NAXIS{i}" for i in range(1, (naxis or 0) + 1) if f"NAXIS{i}" not in keywords]
    axes = f"; NAXIS = {naxis} but it has no {', '.join(missing)} card" if missing else ""
    if not ends and len(content) < _HEADER_LIMIT:
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


@contextlib.contextmanager
def _recording():
    """Record astropy's warnings about a file (the others pass as they would)."""
    with ignoring(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", VerifyWarning)
        warnings.simplefilter("always", AstropyUserWarning)
        yield caught
    for warning in caught:
        if not issubclass(warning.category, VerifyWarning | AstropyUserWarning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                   warning.lineno)


_STREAM_MODULES = {"gzip": gzip, "bzip2": bz2}


@contextlib.contextmanager
def _cut_stream_said(path, compression):
    """When reading a gzip or bzip2 file fails, say whether its stream is cut short."""
    try:
        yield
    except FrameReadError as err:
        module = _STREAM_MODULES.get(compression)
        reason = str(err).removeprefix(f"{path}: ")
        if module is None or reason.startswith("truncated"):
            raise
        try:
            with module.open(path, "rb") as stream:
                while stream.read(1 << 20):
                    pass
        except (EOFError, OSError):
            raise FrameReadError(f"{path}: truncated: the {compression} stream ends before "
                                 f"its end ({reason})") from None
        raise


def _reason(err):
    if isinstance(err, EOFError):
        return "truncated: the compressed stream ends before the data unit does"
    return str(err) or type(err).__name__


# ----------------------------------------------------------------- choosing the image
@dataclasses.dataclass
class RawImage:
    """The image HDU of a raw file, as `open_image` chose it.

    Attributes
    ----------
    path : `pathlib.Path`
        The file.
    index : int
        The HDU holding the image (0 for the primary HDU).
    hdu : `~astropy.io.fits.PrimaryHDU`, `~astropy.io.fits.ImageHDU` or \
`~astropy.io.fits.CompImageHDU`
        The HDU itself, valid while the file is open.
    header : `~astropy.io.fits.Header`
        A copy of the HDU's header; for an image in an extension whose primary header
        holds no data or that says ``INHERIT = T``, with the primary header's cards that
        the extension does not have added after its own (as `~astropy.nddata.CCDData.read`
        merges them).
    problem : str or None
        Why the data unit cannot be read as a 2-D image (see `inspect_frame`).
    notices : list of `Warning`
        astropy's warnings that a card's keyword is invalid, as ccdproc's collection
        shows them (they are not shown when reading).
    hdulist : `~astropy.io.fits.HDUList`
        The open file (for its other HDUs: a mask ...).
    repairs : list of str
        The cards of ``header`` whose characters FITS does not allow were cleaned
        (see `~ccdproc_ext.cards.clean_unprintable`): one sentence each.
    """

    path: Path
    index: int
    hdu: object
    header: fits.Header
    problem: str | None = None
    notices: list = dataclasses.field(default_factory=list)
    hdulist: fits.HDUList | None = None
    repairs: list = dataclasses.field(default_factory=list)


def _has_data(hdu):
    naxis = hdu.header.get("NAXIS", 0)
    return isinstance(naxis, int) and naxis > 0 and _expected_data_bytes(hdu.header) > 0


def _choose_hdu(hdul, ext, path):
    """``(index, hdu)`` of the image: HDU ``ext``, or, when ``ext`` is 0 and the primary HDU
    holds no data, the first image extension that does (as `~astropy.nddata.CCDData.read`)."""
    try:
        index = hdul.index_of(ext)
        hdu = hdul[index]
    except (KeyError, IndexError):
        raise FrameReadError(f"{path}: there is no HDU {ext!r} in the file "
                             f"({len(hdul)} HDUs)") from None
    if index == 0 and not _has_data(hdu):
        for other in range(1, len(hdul)):
            candidate = hdul[other]
            if isinstance(candidate, fits.ImageHDU | fits.CompImageHDU) and \
                    _has_data(candidate):
                return other, candidate
    return index, hdu


def _merged_header(hdul, index, hdu):
    """The header of the image: its own, and the primary header's cards it inherits."""
    header = hdu.header.copy()
    if index == 0:
        return header
    primary = hdul[0]
    if hdu.header.get("INHERIT") is True or not _has_data(primary):
        # The extension's cards win (its BITPIX, NAXIS ...), as in CCDData.read.
        header.extend(primary.header, unique=True)
    return header


@contextlib.contextmanager
def open_image(path, ext=0, *, source=None, **options):
    """Open a raw file read-only and choose its image HDU.

    Parameters
    ----------
    path : str or `pathlib.Path`
        The file.
    ext : int or str, optional
        The HDU, by number or name. Default is 0: the primary HDU, or, when it holds
        no data, the first image extension that does (a ``.fz`` file, an observatory's
        image in extension 1).
    source : file-like or None, optional
        The file's bytes, already read (then ``path`` only names it). Default is ``None``.
    **options
        Passed on to `astropy.io.fits.open`.

    Yields
    ------
    `RawImage`
        Valid while the ``with`` block lasts.

    Raises
    ------
    FrameReadError
        If the file is missing, empty, not FITS, or has no HDU ``ext``.
    """
    path = Path(path)
    compression = _check_length(path)
    size = os.path.getsize(path)
    options.setdefault("lazy_load_hdus", True)
    notices = []
    with _cut_stream_said(path, compression), \
            _open_raw(path if source is None else source, "header", path=path,
                      notices=notices, **options) as hdul:
        index, hdu = _choose_hdu(hdul, ext, path)
        header = _merged_header(hdul, index, hdu)
        repairs = clean_unprintable(header, [hdu, hdul[0]] if index else [hdu])
        image = RawImage(path, index, hdu, header, notices=notices, hdulist=hdul,
                         repairs=repairs)
        image.problem = _data_problem(image, size, compression)
        yield image


# ------------------------------------------------------------------------ headers
def inspect_frame(path, ext=0):
    """Read the header of a raw file and check, from the file's length, its data unit.

    Parameters
    ----------
    path : str or `pathlib.Path`
    ext : int or str, optional
        The HDU (see `open_image`). Default is 0.

    Returns
    -------
    header : `~astropy.io.fits.Header`
        The image's header (merged with the primary one, see `RawImage`), with
        unparsable cards repaired (see `repair_cards`).
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


def _inspect(path, ext=0):
    """`inspect_frame`, and the `RawImage.notices` of the file."""
    with open_image(path, ext) as image:
        header, problem = image.header, image.problem
    notes = [*image.repairs, *repair_cards(header)]
    note = None if problem else _squeeze_note(header)
    return header, problem, notes if note is None else [*notes, note], image.notices


def read_header(path, ext=0):
    """Read the header of a raw file's image (see `open_image`), read-only.

    Cards astropy cannot parse are kept as they are (see `~ccdproc_ext.headers.card_value`).

    Raises
    ------
    FrameReadError
        If the file is missing, empty, or not FITS.
    """
    with open_image(path, ext) as image:
        return image.header


# ------------------------------------------------------------------------- pixels
def read_frame(path, profile=None, *, dtype=np.float32, ext=0, unit=None):
    """Read a raw frame as a `~astropy.nddata.CCDData`, turned and typed for reduction.

    Parameters
    ----------
    path : str or `pathlib.Path`
        The raw file, in any layout of this module; opened read-only.
    profile : `~ccdproc_ext.InstrumentProfile` or None, optional
        Gives the unit and whether frames are stored transposed. Default is ``None``
        (unit from ``BUNIT``, else adu).
    dtype : numpy dtype, optional
        Pixel type of the result. Default is ``float32``.
    ext : int or str, optional
        The HDU holding the image (see `open_image`). Default is 0.
    unit : str or `~astropy.units.Unit` or None, optional
        Overrides the unit.

    Returns
    -------
    `~astropy.nddata.CCDData`
        The frame; ``meta`` is a copy of the header (merged with the primary one, see
        `RawImage`), with the cards astropy cannot parse repaired (see `repair_cards`)
        and each repair written in a ``HISTORY`` card. An image with length-1 extra
        axes (``NAXIS3 = 1``) is squeezed to 2-D (see `squeeze_header`); a transposed
        camera's WCS cards are transposed with its pixels (see `transpose_header`); the
        unit is read by `header_unit`.

    Raises
    ------
    FrameReadError
        If the file is missing, empty, truncated (its data unit shorter than the header
        says, or a compressed stream cut short) or not FITS.
    """
    frame, _ = _read_frame(Path(path), profile, dtype=dtype, ext=ext, unit=unit)
    return frame


def _read_frame_and_checksum(path, profile=None, *, dtype=np.float32, ext=0):
    """`read_frame` and `file_checksum` of ``path`` from one read of the file."""
    return _read_frame(Path(path), profile, dtype=dtype, ext=ext, checksum=True)


def _read_frame(path, profile, *, dtype, ext, unit=None, checksum=False):
    """The frame of `read_frame` (and the file's checksum), reading the file once.

    The whole file is read into memory and astropy reads its headers from there; the
    stored values of a plain image are then taken where they lie in those bytes
    (`_stored_values`), and `_physical` scales them (faster than astropy, to the same
    values).
    """
    compression = _check_length(path)
    # One extension of a multi-extension file is read from the file itself: astropy then
    # reads the headers and that extension's data, not the other extensions' pixels.
    whole_file = checksum or ext == 0
    try:
        content = path.read_bytes() if whole_file else None
    except OSError as err:
        raise FrameReadError(f"{path}: cannot read the FITS image "
                             f"({err.strerror or err})") from None
    digest = hashlib.blake2b(content).hexdigest() if checksum else None

    source_is_bytes = compression is None and whole_file

    def source():
        # astropy recognises a compressed file (gzip, bzip2 ...) by its name and first
        # bytes when it opens it itself, not in bytes in memory.
        return io.BytesIO(content) if source_is_bytes else None

    with open_image(path, ext, source=source(), do_not_scale_image_data=True) as image:
        if image.problem:
            raise FrameReadError(f"{path}: {image.problem}")
        header = image.header
        scaling = _scaling(image.hdu)
        if scaling is not None:
            data = _stored_values(image.hdu, content) if source_is_bytes else None
            if data is None:
                data = _pixels(image, path, lambda hdu: hdu.data)
    if scaling is None:
        # BSCALE, BLANK or a compressed image: astropy scales them, in a second opening
        # of the bytes already read.
        with open_image(path, ext, source=source()) as image:
            data = np.asarray(_pixels(image, path, lambda hdu: hdu.data), dtype=dtype)
    else:
        data = _physical(data, scaling, dtype)
    return _as_frame(data, header, path, profile, ext=image.index, unit=unit,
                     repairs=image.repairs), digest


#: The type of the stored values of each BITPIX (FITS stores them big-endian).
_STORED_TYPES = {8: np.dtype("u1"), 16: np.dtype(">i2"), 32: np.dtype(">i4"),
                 64: np.dtype(">i8"), -32: np.dtype(">f4"), -64: np.dtype(">f8")}


def _stored_values(hdu, content):
    """The stored values of an image HDU read from the bytes ``content`` (the whole
    file), as a read-only view of those bytes: what ``hdu.data`` gives unscaled, without
    astropy's two copies. ``None`` for what this does not read (then astropy does)."""
    if not isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU) or hdu.header.get("GROUPS"):
        return None
    stored = _STORED_TYPES.get(hdu.header.get("BITPIX"))
    shape = hdu.shape
    if stored is None or not shape:
        return None
    offset = hdu.fileinfo()["datLoc"]
    size = stored.itemsize * int(np.prod(shape))
    if offset is None or offset + size > len(content):
        return None  # (a truncated data unit is found before this, by its length)
    return np.frombuffer(content, dtype=stored, count=size // stored.itemsize,
                         offset=offset).reshape(shape)


def _pixels(image, path, read):
    """``read(image.hdu)``, whatever astropy raises on the way a `FrameReadError`."""
    try:
        with ignoring(VerifyWarning, AstropyUserWarning):
            return read(image.hdu)
    except Exception as err:  # a cut compressed stream, a damaged tile ...
        raise FrameReadError(f"{path}: cannot read the FITS image ({_reason(err)})") from None


def _scaling(hdu):
    """The ``BZERO`` of an image `_physical` scales (0 for none), or ``None``.

    ``None`` for what astropy scales itself: ``BSCALE``, ``BLANK``, and tile-compressed
    images (their quantisation is theirs).
    """
    header = hdu.header
    if isinstance(hdu, fits.CompImageHDU) or "BLANK" in header or \
            header.get("BSCALE", 1) != 1 or header.get("BITPIX") == 64:
        # (an unsigned 64-bit offset is not exact in float64: astropy's uint64 is)
        return None
    bzero = header.get("BZERO", 0)
    return bzero if isinstance(bzero, int | float) and not isinstance(bzero, bool) else None


def _physical(stored, bzero, dtype):
    """The values the stored pixels stand for (``stored + BZERO``), as ``dtype``: the
    values astropy's scaling gives, converted once."""
    if not bzero:
        return stored.astype(dtype)
    if stored.dtype.kind in "iu" and stored.dtype.itemsize <= 2:
        # Every 8- and 16-bit integer plus its offset is exact in float32 and float64.
        return np.add(stored, np.array(bzero, dtype=dtype), dtype=dtype)
    # (unsigned 32-bit: BZERO = 2147483648): exact in float64, then one rounding.
    return np.add(stored, float(bzero), dtype=np.float64).astype(dtype, copy=False)


def _as_frame(data, header, path, profile, *, ext, unit, repairs=()):
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
    for note in [*repairs, *repair_cards(header)]:
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
