"""Where a night's outputs go, what they are called, and whether they are up to date.

Raw data is never written: the output folder may not be the raw folder, be inside it or
contain it, no raw file may lie inside it, and every output name is made from a raw file's
name (or a master's), cleaned of anything but letters, digits and ``-_.+``, and checked to
stay in its folder. Outputs and tables are written under a temporary name and renamed
when complete (`write_atomic`); the temporary files a killed run leaves behind are removed
when the next run starts.

Each output carries a ``RECIPE`` card: a hash of what it was made from (the raw files'
names, sizes and modification times, the masters' checksums, the settings). A re-run
skips the outputs whose recipe is unchanged (`up_to_date`), so an interrupted night
resumes where it stopped.
"""

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path, PurePath

import numpy as np
from astropy.io import fits
from ccdproc import ImageFileCollection

from .exceptions import OutputError
from .raw import FITS_SUFFIXES

__all__ = ["FITS_SUFFIXES", "check_output_dir", "check_raw_files", "file_stamp", "inside",
           "output_name", "prepare_output_dir", "recipe", "recorded_header", "up_to_date",
           "write_atomic", "write_hdus", "write_table"]

log = logging.getLogger(__name__)

#: Part of every recipe: outputs of an older layout are made again.
RECIPE_VERSION = 3

#: Temporary files of `write_atomic` and of the tables written by `reduce_night`.
PARTIAL_SUFFIX = ".part"


def recipe(*parts):
    """A short hash of what an output is made from."""
    digest = hashlib.sha256(json.dumps([RECIPE_VERSION, *parts], sort_keys=True,
                                       default=str).encode())
    return digest.hexdigest()[:16]


def file_stamp(path):
    """Name, size and modification time of a file: changes when the file does."""
    stat = os.stat(path)
    return [Path(path).name, stat.st_size, stat.st_mtime_ns]


def up_to_date(path, expected_recipe):
    """Whether ``path`` exists and was made by ``expected_recipe``."""
    return recorded_header(path, expected_recipe) is not None


def recorded_header(path, expected_recipe):
    """The primary header of ``path`` when the file exists and was made by
    ``expected_recipe`` (its ``RECIPE`` card), else ``None``.

    Only the header's bytes are read and parsed, not the file's structure (a re-run of a
    night reads one per output, and what the night records of an output is in it).
    """
    try:
        with open(path, "rb") as stream:
            header = fits.Header.fromfile(stream)
    except (OSError, ValueError, EOFError):  # missing, or not a complete FITS header
        return None
    return header if header.get("RECIPE") == expected_recipe else None


# ------------------------------------------------------------------------ names
def _clean_name(text):
    """Letters, digits and ``-_.+`` only; no leading dot (hidden files, ``..``)."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "-_.+") else "_"
                      for c in text)
    return cleaned.lstrip(".") or "frame"


def output_name(file, used):
    """The output file name of a raw file: its path (relative parts) joined with ``_``.

    Only the raw file's own name and the sub-folders it was found in are used (for an
    absolute path, its name alone), never a header value, and every character other than
    letters, digits and ``-_.+`` becomes ``_``: the name cannot leave its folder. Names
    already in ``used`` (compared without case) get ``-2``, ``-3``...
    """
    path = PurePath(file)
    parts = [path.name] if path.is_absolute() else \
        [part for part in path.parts if part not in ("", ".", "..")]
    stem = "_".join(parts) or "frame"
    lower = stem.lower()
    for suffix in FITS_SUFFIXES:
        if lower.endswith(suffix):
            stem = stem[:-len(suffix)]
            break
    stem = _clean_name(stem)
    name = f"{stem}.fits"
    i = 1
    while name.lower() in used:
        i += 1
        name = f"{stem}-{i}.fits"
    used.add(name.lower())
    return name


def inside(path, folder):
    """``path``, after checking that it is a file directly in ``folder``."""
    if Path(path).parent.resolve() != Path(folder).resolve() or \
            Path(path).name in ("", ".", ".."):
        raise OutputError(f"{path}: an output must be written in {folder}")
    return path


# ----------------------------------------------------------------------- folders
def _raw_location(raw):
    if isinstance(raw, ImageFileCollection):
        return raw.location or None
    if isinstance(raw, list | tuple):
        return None
    return raw


def check_output_dir(raw, output_dir):
    """The output folder, resolved, after refusing one in, equal to, or around the raw
    folder of ``raw`` (a folder, a list of files or a collection)."""
    output_dir = Path(output_dir).expanduser().resolve()
    raw_folder = _raw_location(raw)
    if raw_folder is not None:
        raw_folder = Path(raw_folder).expanduser().resolve()
        if output_dir == raw_folder:
            raise OutputError(f"output folder {output_dir} is the raw folder: raw data is "
                              "never written; choose another")
        if raw_folder in output_dir.parents:
            raise OutputError(f"output folder {output_dir} is inside the raw folder "
                              f"{raw_folder}: raw data is never written; choose another")
        if output_dir in raw_folder.parents:
            raise OutputError(f"output folder {output_dir} contains the raw folder "
                              f"{raw_folder}: raw data is never written, and no output may "
                              "land in or above it; choose a folder beside it")
    return output_dir


def check_raw_files(collection, output_dir):
    """Refuse a raw file (a listed one, or a link) that lies inside the output folder."""
    for file in collection.files:
        if output_dir in collection.path(file).resolve().parents:
            raise OutputError(f"raw file {file} is inside the output folder {output_dir}: "
                              "raw data is never written; choose another output folder")


def prepare_output_dir(output_dir):
    """Create ``masters/`` and ``science/``, check they can be written, clear what an
    interrupted run left."""
    folders = (output_dir, output_dir / "masters", output_dir / "science")
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=PARTIAL_SUFFIX,
                                         dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise OutputError(f"output folder {folder} cannot be written: "
                              f"{err.strerror or err}") from None
    for folder in folders:
        for path in remove_partial_files(folder):
            log.info("removed %s, left by an interrupted run", path)


def write_table(table, path):
    """Write an astropy Table as ECSV, atomically."""
    temporary = path.with_name(f".{path.name}{PARTIAL_SUFFIX}")
    try:
        table.write(temporary, format="ascii.ecsv", overwrite=True)
        os.replace(temporary, path)
    except OSError as err:
        temporary.unlink(missing_ok=True)
        raise _not_written(path, err) from None


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
    return write_hdus(frame_hdus(ccd, dtype=dtype, uncertainty=uncertainty, mask=mask), path)


def frame_hdus(ccd, *, dtype=np.float32, uncertainty=False, mask=False):
    """The HDUs `write_atomic` writes for ``ccd``: its pixels in ``dtype`` under its header
    (with ``BUNIT``), then ``UNCERT`` and ``MASK`` (as bytes) if asked for and present."""
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
    return hdus


def write_hdus(hdus, path):
    """Write a list of HDUs to ``path`` through a temporary file and a rename.

    Returns
    -------
    `pathlib.Path`

    Raises
    ------
    OutputError
        If the file cannot be written or replaced (a full disk, an existing output
        that is read-only or immutable), naming it.
    """
    path = Path(path)
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX,
                                         dir=path.parent)
    except OSError as err:
        raise _not_written(path, err) from None
    os.close(fd)
    try:
        fits.HDUList(hdus).writeto(temporary, overwrite=True, output_verify="silentfix")
        # mkstemp makes the file private (0600); an output is as readable as any new file.
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException as err:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _not_written(path, err) from None
        raise
    return path


def _not_written(path, err):
    """The `OutputError` of an output that cannot be written: the file (also by its
    folder and name, which remain when a report shortens the path) and the reason (an
    immutable file says 'Operation not permitted')."""
    return OutputError(f"{path}: {path.parent.name}/{path.name} cannot be written: "
                       f"{err.strerror or err}")


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
