"""Reading raw frames safely, and writing outputs atomically.

Raw files are only ever opened read-only. A file that is truncated, empty or not FITS
raises `~ccdproc_ext.FrameReadError` naming the file and what is wrong, never a bare
traceback from deep inside astropy. Outputs are written to a temporary name beside their
destination and renamed when complete, so an interrupted run never leaves a half-written
file under the final name.
"""

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.nddata import CCDData
from astropy.utils.exceptions import AstropyUserWarning

from .exceptions import FrameReadError

__all__ = ["file_checksum", "read_frame", "read_header", "write_atomic"]

_FITS_BLOCK = 2880


def _check_length(path):
    size = os.path.getsize(path)
    if size == 0:
        raise FrameReadError(f"{path}: the file is empty")
    if size < _FITS_BLOCK:
        raise FrameReadError(f"{path}: the file is {size} bytes, shorter than one FITS block "
                             f"({_FITS_BLOCK} bytes): not a FITS file, or truncated")


def read_header(path, ext=0):
    """Read the header of one HDU of a raw file, read-only.

    Cards astropy cannot parse are kept as they are (see `~ccdproc_ext.headers.card_value`).

    Raises
    ------
    FrameReadError
        If the file is missing, empty, or not FITS.
    """
    path = Path(path)
    try:
        _check_length(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VerifyWarning)
            warnings.simplefilter("ignore", AstropyUserWarning)
            with fits.open(path, mode="readonly", memmap=False, lazy_load_hdus=True) as hdul:
                return hdul[ext].header.copy()
    except FrameReadError:
        raise
    except (OSError, ValueError, IndexError, TypeError) as err:
        raise FrameReadError(f"{path}: cannot read the FITS header ({err})") from None


def _expected_data_bytes(header):
    naxis = header.get("NAXIS", 0)
    if not naxis:
        return 0
    count = 1
    for i in range(1, naxis + 1):
        count *= header.get(f"NAXIS{i}", 0)
    return count * abs(header.get("BITPIX", 8)) // 8


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
        The frame; ``meta`` is a copy of the header.

    Raises
    ------
    FrameReadError
        If the file is missing, empty, truncated (its data unit shorter than the header
        says) or not FITS.
    """
    path = Path(path)
    try:
        _check_length(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VerifyWarning)
            warnings.simplefilter("ignore", AstropyUserWarning)
            with fits.open(path, mode="readonly", memmap=False) as hdul:
                hdu = hdul[ext]
                header = hdu.header.copy()
                expected = _expected_data_bytes(header)
                if expected == 0:
                    raise FrameReadError(f"{path}: HDU {ext} holds no image")
                start = hdu._data_offset
                available = os.path.getsize(path) - start
                if available < expected:
                    raise FrameReadError(
                        f"{path}: truncated: the data unit needs {expected} bytes but the "
                        f"file holds only {available} after the header")
                data = np.asarray(hdu.data, dtype=dtype)
    except FrameReadError:
        raise
    except (OSError, ValueError, IndexError, TypeError) as err:
        raise FrameReadError(f"{path}: cannot read the FITS image ({err})") from None
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
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        fits.HDUList(hdus).writeto(temporary, overwrite=True, output_verify="silentfix")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
