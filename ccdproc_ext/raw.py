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

What the package reads of a FITS file is read here (`read_frame`,
`read_frame_and_checksum`, `read_ccd` for a master, `read_header`, `inspect_frame`) or,
in parts, in `ccdproc_ext._raw_parts`, with one choice of image (`open_image`) and one
rule for the unit (`~ccdproc_ext.headers.header_unit`).

Raw files are only ever opened read-only (no memory map). A file that is truncated, empty
or not FITS raises `~ccdproc_ext.FrameReadError` naming the file and what is wrong, never a
bare traceback from deep inside astropy. Header cards astropy cannot parse are read for
what they say (a decimal comma, ``3,2E-05``, is a number) and the repair is written in the
frame's ``HISTORY``.
"""

import bz2
import contextlib
import dataclasses
import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.nddata import CCDData, fits_ccddata_reader
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import FITSFixedWarning

from ._warnings import ignoring, recording
from .cards import clean_unprintable, header_problem, repair_cards
from .exceptions import FrameReadError
from .headers import header_unit, squeeze_header, squeeze_note, transpose_header

__all__ = ["COMPRESSED_SUFFIXES", "FITS_SUFFIXES", "RawImage", "file_checksum",
           "inspect_frame", "inspect_frame_and_notices", "is_fits_name", "open_image",
           "physical_values", "read_ccd", "read_ccddata", "read_frame", "read_frame_and_checksum",
           "read_header", "stored_offset"]

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
    if naxis > 2 and squeeze_note(header) is None:
        lengths = " x ".join(str(header.get(f"NAXIS{i}")) for i in range(1, naxis + 1))
        return (f"HDU {ext} is {naxis}-dimensional; a 2-D image is expected (a cube of "
                f"{lengths} pixels is several planes, not one frame)")
    return None


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
            caught = files.enter_context(recording(VerifyWarning, AstropyUserWarning))
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
    """What is wrong with the first header of a file astropy could not open (see
    `~ccdproc_ext.cards.header_problem`), or ``None`` when its cards do not tell."""
    opener = {None: open, "gzip": gzip.open, "bzip2": bz2.open}.get(_compression(path))
    if opener is None:
        return None
    try:
        with opener(path, "rb") as stream:
            content = stream.read(_HEADER_LIMIT)
    except (OSError, EOFError):
        return None
    return header_problem(content, more_follows=len(content) >= _HEADER_LIMIT)


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
        unparsable cards repaired (see `~ccdproc_ext.cards.repair_cards`).
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
    return inspect_frame_and_notices(path, ext)[:3]


def inspect_frame_and_notices(path, ext=0):
    """`inspect_frame`, and the `RawImage.notices` of the file.

    Returns
    -------
    header, problem, notes : see `inspect_frame`
    notices : list of `Warning`
        astropy's warnings that a card's keyword is invalid (see `RawImage`).
    """
    with open_image(path, ext) as image:
        header, problem = image.header, image.problem
    notes = [*image.repairs, *repair_cards(header)]
    note = None if problem else squeeze_note(header)
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
        `RawImage`), with the cards astropy cannot parse repaired (see
        `~ccdproc_ext.cards.repair_cards`) and each repair written in a ``HISTORY``
        card. An image with length-1 extra axes (``NAXIS3 = 1``) is squeezed to 2-D
        (see `~ccdproc_ext.headers.squeeze_header`); a transposed camera's WCS cards
        are transposed with its pixels (see `~ccdproc_ext.headers.transpose_header`); the
        unit is read by `~ccdproc_ext.headers.header_unit`.

    Raises
    ------
    FrameReadError
        If the file is missing, empty, truncated (its data unit shorter than the header
        says, or a compressed stream cut short) or not FITS.
    """
    frame, _ = _read_frame(Path(path), profile, dtype=dtype, ext=ext, unit=unit)
    return frame


def read_frame_and_checksum(path, profile=None, *, dtype=np.float32, ext=0):
    """`read_frame` and `file_checksum` of ``path`` from one read of the file.

    Parameters are those of `read_frame`.

    Returns
    -------
    frame : `~astropy.nddata.CCDData`
        As `read_frame` reads it.
    checksum : str
        As `file_checksum` gives it.
    """
    return _read_frame(Path(path), profile, dtype=dtype, ext=ext, checksum=True)


def _read_frame(path, profile, *, dtype, ext, unit=None, checksum=False):
    """The frame of `read_frame` (and the file's checksum, with ``checksum``).

    astropy reads the stored values of a plain image (``do_not_scale_image_data``) and
    `physical_values` offsets them by ``BZERO`` in one step into ``dtype``: the values
    astropy's scaling gives, converted once. Reading the file's bytes once for both the pixels
    and the checksum did not measurably pay (``benchmarks/bench_reader.py``): the
    checksum costs the same either way.
    """
    with open_image(path, ext, do_not_scale_image_data=True) as image:
        if image.problem:
            raise FrameReadError(f"{path}: {image.problem}")
        header = image.header
        scaling = stored_offset(image.hdu)
        if scaling is not None:
            data = _pixels(image, path, lambda hdu: hdu.data)
    if scaling is None:
        # BSCALE, BLANK or a compressed image: astropy scales them, in a second opening.
        with open_image(path, ext) as image:
            data = np.asarray(_pixels(image, path, lambda hdu: hdu.data), dtype=dtype)
    else:
        data = physical_values(data, scaling, dtype)
    digest = file_checksum(path) if checksum else None
    return _as_frame(data, header, path, profile, ext=image.index, unit=unit,
                     repairs=image.repairs), digest


def _pixels(image, path, read):
    """``read(image.hdu)``, whatever astropy raises on the way a `FrameReadError`."""
    try:
        with ignoring(VerifyWarning, AstropyUserWarning):
            return read(image.hdu)
    except Exception as err:  # a cut compressed stream, a damaged tile ...
        raise FrameReadError(f"{path}: cannot read the FITS image ({_reason(err)})") from None


def stored_offset(hdu):
    """The ``BZERO`` of an image `physical_values` scales (0 for none), or ``None``.

    ``None`` for what astropy scales itself: ``BSCALE``, ``BLANK``, and tile-compressed
    images (their quantisation is theirs).

    Parameters
    ----------
    hdu : `~astropy.io.fits.PrimaryHDU`, `~astropy.io.fits.ImageHDU` or \
`~astropy.io.fits.CompImageHDU`
        The image, opened with ``do_not_scale_image_data=True``.

    Returns
    -------
    int, float or None
    """
    header = hdu.header
    if isinstance(hdu, fits.CompImageHDU) or "BLANK" in header or \
            header.get("BSCALE", 1) != 1 or header.get("BITPIX") == 64:
        # (an unsigned 64-bit offset is not exact in float64: astropy's uint64 is)
        return None
    bzero = header.get("BZERO", 0)
    return bzero if isinstance(bzero, int | float) and not isinstance(bzero, bool) else None


def physical_values(stored, bzero, dtype):
    """The values the stored pixels stand for (``stored + BZERO``), as ``dtype``: the
    values astropy's scaling gives, converted once.

    Parameters
    ----------
    stored : `numpy.ndarray`
        The stored values (read with ``do_not_scale_image_data=True``).
    bzero : int or float
        The offset, from `stored_offset`.
    dtype : numpy dtype
        The type of the result.

    Returns
    -------
    `numpy.ndarray`
    """
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




# ------------------------------------------------------------------------ masters
def read_ccd(path, *, default_unit="adu", dtype=np.float32):
    """Read a FITS image with its mask, uncertainty and WCS, as
    `~astropy.nddata.CCDData.read` reads them: a master written by
    `~astropy.nddata.CCDData.write`.

    Parameters
    ----------
    path : str or `pathlib.Path`
        The file.
    default_unit : str or `~astropy.units.UnitBase`, optional
        The unit without a ``BUNIT`` (see `~ccdproc_ext.headers.header_unit`). Default
        is ``"adu"``.
    dtype : numpy dtype, optional
        Pixel type of the result. Default is ``float32``.

    Returns
    -------
    `~astropy.nddata.CCDData`
    """
    path = Path(path)
    unit = header_unit(read_header(path), default_unit, path=path)
    # astropy.wcs notes DATE-OBS -> MJD-OBS; a master has no WCS to speak of.
    with ignoring(FITSFixedWarning):
        ccd = CCDData.read(path, unit=unit)
    ccd.data = ccd.data.astype(dtype, copy=False)
    return ccd


def read_ccddata(path, **options):
    """Read a FITS image exactly as `~astropy.nddata.fits_ccddata_reader` (ccdproc's
    `~ccdproc.ImageFileCollection.ccds`) does: ``options`` are its keyword arguments.

    Returns
    -------
    `~astropy.nddata.CCDData`
    """
    return fits_ccddata_reader(path, **options)


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
