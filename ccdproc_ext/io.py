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
import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError, VerifyWarning
from astropy.nddata import CCDData
from astropy.utils.exceptions import AstropyUserWarning

from .exceptions import FrameReadError

__all__ = ["file_checksum", "inspect_frame", "read_frame", "read_header",
           "remove_partial_files", "repair_cards", "write_atomic"]

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
    for index in range(len(header)):
        card = header.cards[index]
        if card.keyword in ("", "COMMENT", "HISTORY"):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VerifyWarning)
            try:
                header[index]
                continue
            except VerifyError:
                # .image makes astropy fix the card (into a string): do it on a copy.
                fixed = copy.copy(card)
                fixed.image  # noqa: B018 - the fix happens on access
                text = str(fixed.value)
                comment = fixed.comment
        text = text.strip()
        keyword = card.keyword
        if _DECIMAL_COMMA_RE.match(text):
            value = float(text.replace(",", ".").replace("D", "E").replace("d", "e"))
            notes.append(f"{keyword} = {text!r} is not valid FITS (a decimal comma): "
                         f"read as {value!r}")
        else:
            value = text
            notes.append(f"{keyword} = {text!r} is not valid FITS: kept as the text "
                         f"{text!r}")
        with warnings.catch_warnings():
            # the keyword may be repeated further down; this card keeps its place
            warnings.simplefilter("ignore", AstropyUserWarning)
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
    bitpix = header.get("BITPIX")
    if bitpix not in _BITPIX:
        return (f"BITPIX = {bitpix!r} is not a FITS pixel type "
                f"({', '.join(map(str, _BITPIX))})")
    naxis = header.get("NAXIS", 0)
    if not isinstance(naxis, int) or naxis == 0 or _expected_data_bytes(header) == 0:
        return f"HDU {ext} holds no image"
    if naxis != 2:
        return f"HDU {ext} is {naxis}-dimensional; a 2-D image is expected"
    if getattr(hdul._file, "compression", None):
        return None
    expected = _expected_data_bytes(header)
    available = os.path.getsize(path) - hdu._data_offset
    if available < expected:
        return (f"truncated: the data unit needs {expected} bytes but the file holds only "
                f"{max(available, 0)} after the header")
    return None


@contextlib.contextmanager
def _open_raw(path, what, **options):
    """Open a raw file read-only and quietly; whatever fails is a `FrameReadError`.

    ``what`` ("header", "image") says what was being read, in the message.
    """
    try:
        _check_length(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VerifyWarning)
            warnings.simplefilter("ignore", AstropyUserWarning)
            with fits.open(path, mode="readonly", memmap=False, **options) as hdul:
                yield hdul
    except FrameReadError:
        raise
    except Exception as err:  # whatever astropy raises, the file is bad
        # (a BITPIX of 17 is a KeyError, a cut gzip stream an EOFError ...)
        reason = str(err) or type(err).__name__
        raise FrameReadError(f"{path}: cannot read the FITS {what} ({reason})") from None


def read_header(path, ext=0):
    """Read the header of one HDU of a raw file, read-only.

    Cards astropy cannot parse are kept as they are (see `~ccdproc_ext.headers.card_value`).

    Raises
    ------
    FrameReadError
        If the file is missing, empty, or not FITS.
    """
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
        The repairs made to the header.

    Raises
    ------
    FrameReadError
        If the header itself cannot be read (as `read_header`).
    """
    path = Path(path)
    with _open_raw(path, "header", lazy_load_hdus=True) as hdul:
        hdu = hdul[ext]
        header = hdu.header.copy()
        problem = _data_problem(hdul, hdu, path, ext)
    notes = repair_cards(header)
    return header, problem, notes


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
        repaired (see `repair_cards`) and each repair written in a ``HISTORY`` card.

    Raises
    ------
    FrameReadError
        If the file is missing, empty, truncated (its data unit shorter than the header
        says) or not FITS.
    """
    path = Path(path)
    with _open_raw(path, "image") as hdul:
        hdu = hdul[ext]
        header = hdu.header.copy()
        problem = _data_problem(hdul, hdu, path, ext)
        if problem:
            raise FrameReadError(f"{path}: {problem}")
        data = np.asarray(hdu.data, dtype=dtype)
    if data.ndim != 2:
        raise FrameReadError(f"{path}: HDU {ext} is {data.ndim}-dimensional; a 2-D image "
                             "is expected")
    if profile is not None and profile.transposed:
        data = np.ascontiguousarray(data.T)
    if unit is None:
        unit = header.get("BUNIT", None) or (profile.unit if profile is not None else "adu")
    # The scaling keywords describe the stored integers, not these pixels.
    for key in ("BZERO", "BSCALE", "BLANK"):
        header.remove(key, ignore_missing=True)
    for note in repair_cards(header):
        header.add_history(f"ccdproc_ext: {note}")
    return CCDData(data, unit=unit, meta=header)


def file_checksum(path, *, chunk_size=1 << 20):
    """SHA-256 of a file's bytes, as hex (recorded in provenance)."""
    digest = hashlib.sha256()
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

    Only hidden files ending in ``.part`` directly in ``folder`` are removed; they are
    never complete outputs (a complete output has been renamed). Two reductions must not
    write into one folder at the same time.

    Returns
    -------
    list of `pathlib.Path`
        The files removed.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in sorted(folder.glob(f".*{PARTIAL_SUFFIX}")):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
