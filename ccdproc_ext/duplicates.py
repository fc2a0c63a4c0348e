"""Files with the same bytes: a night copied twice into one folder is one night.

Files are compared by size, then by what was read from their headers, then by their first
bytes, and only then whole, so that a night whose frames differ in their headers opens no
file again.
"""

import hashlib
import os

from .raw import file_checksum

__all__ = ["find_duplicates"]

#: Bytes compared before whole files: the header, where two frames of a night differ.
_HEAD_BYTES = 1 << 16


def _head_digest(path):
    with open(path, "rb") as stream:
        return hashlib.sha256(stream.read(_HEAD_BYTES)).hexdigest()


def _group_by(names, key):
    """``names`` grouped by ``key(name)``; a file that cannot be read again is left out."""
    groups = {}
    for name in names:
        try:
            groups.setdefault(key(name), []).append(name)
        except OSError:  # gone or unreadable since its header was read: not a duplicate
            continue
    return [group for group in groups.values() if len(group) > 1]


def find_duplicates(paths, headers=None):
    """The files with the same bytes as an earlier one.

    Parameters
    ----------
    paths : dict
        ``{name: path}``, in order; the first of identical files is the one kept.
    headers : dict or None, optional
        ``{name: what was read from its header}`` (files with the same bytes have the
        same): files of one size that all have one are compared by it before their
        first bytes are read. Default is ``None``.

    Returns
    -------
    dict
        ``{name: name of the first file with the same bytes}``.
    """
    headers = {} if headers is None else headers
    candidates = []
    for same_size in _group_by(paths, lambda name: os.path.getsize(paths[name])):
        if all(name in headers for name in same_size):
            candidates.extend(_group_by(same_size, headers.__getitem__))
        else:
            candidates.append(same_size)
    duplicates = {}
    for group in candidates:
        for same_head in _group_by(group, lambda name: _head_digest(paths[name])):
            for same in _group_by(same_head, lambda name: file_checksum(paths[name])):
                for other in same[1:]:
                    duplicates[other] = same[0]
    return duplicates
