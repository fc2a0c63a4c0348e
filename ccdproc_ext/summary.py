"""What `~ccdproc.ImageFileCollection` shows of a folder, made from headers read once.

The FITS files of a folder, found as ccdproc finds them (by name, or by their first bytes)
but in subfolders too, and the ``summary`` table of their headers in ccdproc's layout: one
lower-case column per keyword, ``file`` first, COMMENT and HISTORY joined, the first value
of a repeated keyword, missing values masked. `~ccdproc_ext.NightCollection` gives
ccdproc's API this table instead of letting ccdproc read every header a second time.
"""

import fnmatch
import logging
import os
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
from astropy.io.fits.card import UNDEFINED
from astropy.io.fits.connect import is_fits
from astropy.table import MaskedColumn, Table

from .headers import card_value, to_float
from .raw import is_fits_name

__all__ = ["find_fits_files", "header_pairs", "summary_table"]

#: ccdproc's collection logs its own words about a file it cannot read: they are said
#: here as it says them, through its logger.
ccdproc_log = logging.getLogger("ccdproc.image_collection")


def _looks_like_fits(path):
    """Whether a file starts as a FITS file does (as ccdproc's ``find_fits_by_reading``:
    compressed files are not recognised)."""
    try:
        with open(path, "rb") as stream:
            return bool(is_fits("read", str(path), stream))
    except OSError:
        return False


def find_fits_files(folder, *, glob_include=None, glob_exclude=None, by_reading=False):
    """The FITS files under ``folder``, recursively, as sorted POSIX paths relative to it.

    Parameters
    ----------
    folder : str or `pathlib.Path`
        The folder searched; hidden files and folders (``.name``) are left out.
    glob_include, glob_exclude : str or None, optional
        Unix-style patterns of the files to keep and to leave out, matched against the
        name and against the path relative to ``folder``. Default is ``None``.
    by_reading : bool, optional
        Whether a FITS file is one whose first bytes say so (as ccdproc's
        ``find_fits_by_reading``) rather than one whose name ends as ccdproc's do
        (`~ccdproc_ext.raw.FITS_SUFFIXES`: ``.fits``, ``.fit``, ``.fts``, plain or
        ``.gz``, ``.bz2``, ``.Z``, ``.zip``, ``.fz``). Default is ``False``.

    Returns
    -------
    list of str
    """
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if name.startswith("."):
                continue
            if _looks_like_fits(Path(root, name)) if by_reading else is_fits_name(name):
                found.append(Path(root, name).relative_to(folder).as_posix())
    if glob_include is not None:
        found = [f for f in found if fnmatch.fnmatch(Path(f).name, glob_include)
                 or fnmatch.fnmatch(f, glob_include)]
    if glob_exclude is not None:
        found = [f for f in found if not (fnmatch.fnmatch(Path(f).name, glob_exclude)
                                          or fnmatch.fnmatch(f, glob_exclude))]
    return sorted(found)


def _summary_value(header, keyword):
    """The value of a card for the summary table, even when astropy cannot parse it."""
    value, fixed = card_value(header, keyword)
    if value is UNDEFINED:
        return None
    if fixed:
        # A number written with a decimal comma ('3,2E-05') is a number, so that
        # files_filtered(exptime=...) compares it with the others; other text stays text.
        try:
            return to_float(value)
        except ValueError:
            return value
    return value


def header_pairs(header):
    """The cards of a header as the summary table shows them.

    Parameters
    ----------
    header : `~astropy.io.fits.Header`

    Returns
    -------
    pairs : list of tuple
        ``(keyword, value)`` of the cards, in order: values of cards astropy cannot
        parse read from their text (a number with a decimal comma as a number), a
        ``FILE`` card and the repeats of a keyword left out.
    repeated : list of tuple
        ``(lower-case keyword, value)`` of the cards that repeat a keyword (other than
        COMMENT and HISTORY): the summary keeps the first card's value, as ccdproc's.
    """
    pairs, repeated, seen = [], [], set()
    for index, card in enumerate(header.cards):
        keyword = card.keyword
        key = keyword.lower()
        if key in ("comment", "history"):
            pairs.append((keyword, card.value))
        elif key in seen:
            repeated.append((key, _summary_value(header, index)))
        elif key and key != "file":
            seen.add(key)
            pairs.append((keyword, _summary_value(header, keyword)))
    return pairs, repeated


def _add_file(summary, name, pairs):
    """Add one file's values to the columns of ``summary`` (``None`` where missing)."""
    n_previous = len(summary.get("file", []))
    summary.setdefault("file", []).append(name)
    values, multi_entry = OrderedDict(), {"comment": [], "history": []}
    for keyword, value in pairs:
        key = keyword.lower()
        if key in multi_entry:
            multi_entry[key].append(str(value))
        elif key not in values:  # a repeated keyword keeps its first value
            values[key] = None if value is UNDEFINED else value
    for key, joined in multi_entry.items():
        if joined:
            values[key] = ",".join(joined)
    for key in summary:
        if key != "file" and key not in values:
            summary[key].append(None)
    for key, value in values.items():
        summary.setdefault(key, [None] * n_previous).append(value)


def _columns(names, pairs_of, location):
    """The summary's columns, ``{key: values}``, of the files whose header can be read."""
    summary = OrderedDict()
    for name in names:
        path = os.path.join(location, name)
        try:
            pairs, repeated = pairs_of(name)
        except OSError as err:  # as ccdproc: the file stays listed, out of the summary
            ccdproc_log.warning("unable to get FITS header for file %s: %s.", path, err)
            continue
        for key, value in repeated:  # ccdproc's warning, in its words
            warnings.warn(f'Header from file "{path}" contains multiple entries for '
                          f'"{key}", the pair "{key}={value}" will be ignored.', UserWarning,
                          stacklevel=5)
        _add_file(summary, name, pairs)
    return summary


def summary_table(names, pairs_of, keywords, *, location=""):
    """The summary table of ccdproc's `~ccdproc.ImageFileCollection`, from headers read
    once.

    The same table as ccdproc's for the same headers: masked, ``file`` first, then the
    keywords in their order (in the headers' order for ``"*"``), a column of masked
    zeros for a keyword no header has, and column names in the case of ``keywords``.

    Parameters
    ----------
    names : list of str
        The collection's files, in order. ``None`` is returned when there is none.
    pairs_of : callable
        ``pairs_of(name)`` gives `header_pairs` of a file's header, or raises `OSError`
        when the header cannot be read: the file is then logged and left out, as
        ccdproc does.
    keywords : iterable of str or ``"*"``
        The columns, ``"*"`` for every keyword of every header.
    location : str, optional
        The folder of the files, for the messages. Default is ``""``.

    Returns
    -------
    `~astropy.table.Table` or None
    """
    if not names:
        return None
    original_keywords = list(keywords)
    header_keys = {*original_keywords, "file"}
    if header_keys == {"file"}:
        table = Table(masked=True)
        table.add_column(MaskedColumn(name="file", data=names))
        return table
    table = Table(_columns(names, pairs_of, location) or None, masked=True)
    for column in table.colnames:
        table[column].mask = [value is None for value in table[column].tolist()]
    for key in header_keys:
        if key.lower() != key and key.lower() in table.colnames:
            table.rename_column(key.lower(), key)
    length = len(table)
    for column in header_keys - set(table.colnames) - {"*"}:
        table.add_column(MaskedColumn(name=column, data=np.zeros(length),
                                      mask=np.ones(length)))
    if "*" not in header_keys:
        order = sorted(header_keys - {"file"}, key=original_keywords.index)
        table = table[["file", *order]]
    return table if table.masked else Table(table, masked=True)
