"""What other libraries say while a command runs, said once at its end, grouped by reason.

ccdproc logs ``unable to get FITS header for file ...`` for each file it cannot read;
a header with a keyword twice is warned about as ccdproc's collection does
(``contains multiple entries for ...``), file by file; astropy warns about cards it
cannot parse. Printed as they come, they name each file again beside the night's own
problems and notes, which are grouped by reason. The command line gathers them here
instead (`HeardMessages`) and says them at its end the same way
(`~ccdproc_ext.log.grouped_lines`): one line per reason with the files after it, and
nothing more about a file the night lists as a problem (its problem says it).
"""

import logging
import os
import re
import sys
import warnings
from collections import Counter

from astropy.table import Table

from .log import grouped_lines

__all__ = ["HeardMessages"]


class HeardMessages(logging.Handler):
    """Inside ``with``, the warnings shown and the records of ``loggers`` are kept here.

    Parameters
    ----------
    loggers : tuple of str, optional
        The loggers heard (each stops passing its records on while heard). Default is
        ccdproc's.
    level : int, optional
        The least level of record heard. Default is ``logging.WARNING``.
    prefix : str, optional
        Put before what a forked worker process says at once. Default is
        ``"warning: "``.

    A worker process forked inside the block says what it hears at once, on standard
    error: what it keeps would be lost with it.
    """

    def __init__(self, loggers=("ccdproc",), level=logging.WARNING, prefix="warning: "):
        super().__init__(level)
        self.prefix = prefix
        self.heard = []  # (kind, words): the warning's class or the logger's name
        self._loggers = [logging.getLogger(name) for name in loggers]
        self._pid = os.getpid()

    def __enter__(self):
        self._saved = [(logger.handlers[:], logger.propagate) for logger in self._loggers]
        for logger in self._loggers:
            logger.handlers[:] = [self]
            logger.propagate = False
        self._showwarning, warnings.showwarning = warnings.showwarning, self._warning
        return self

    def __exit__(self, *exc_info):
        warnings.showwarning = self._showwarning
        for logger, (handlers, propagate) in zip(self._loggers, self._saved, strict=True):
            logger.handlers[:], logger.propagate = handlers, propagate
        return False

    def emit(self, record):
        self._hear(record.name, record.getMessage())

    def _warning(self, message, category, filename, lineno, file=None, line=None):
        self._hear(category.__name__, str(message))

    def _hear(self, kind, words):
        if os.getpid() != self._pid:  # a forked worker: said now, or never
            print(f"{self.prefix}{words}", file=sys.stderr)
            return
        self.heard.append((kind, words))

    def lines(self, files=(), *, said=(), verbose=False):
        """What was heard since the last call, for people, and forget it.

        Parameters
        ----------
        files : iterable of str
            The files of the command (as a night names them): a message naming one (as
            a path ending in it) is about that file.
        said : iterable of str
            Files said already (the night's problems): nothing more is said of them.
        verbose : bool, optional
            One line per file with its own words, instead of one per reason.

        Returns
        -------
        list of str
            One line per reason, with the files it was said of (see
            `~ccdproc_ext.log.grouped_lines`), then each message about no file once,
            with how many times it was heard.
        """
        finder = _FileFinder(files)
        said = set(said)
        of_files, of_none = {}, Counter()
        for kind, words in self.heard:
            file, words = finder.split(words)
            if file is None:
                of_none[words] += 1
            elif file not in said:
                of_files[(file, kind, words)] = None  # said twice, heard once
        self.heard = []
        names = ("file", "kind", "message")
        table = Table(rows=list(of_files), names=names) if of_files else \
            Table(names=names, dtype=("U", "U", "U"))
        lines = grouped_lines(table, "message", verbose=verbose)
        return lines + [words if n == 1 else f"{words} ({n} times)"
                        for words, n in of_none.items()]


class _FileFinder:
    """Which of a command's files a message names, and its words without that path."""

    def __init__(self, files):
        self._by_name = {}
        for file in map(str, files):
            self._by_name.setdefault(_base_name(file), []).append(file)

    def split(self, words):
        """``(file, words without its path)``, or ``(None, words)`` when it names none."""
        found = None  # (file, the path as written)
        for token in re.findall(r"[^\s\"']+", words):
            path = token.rstrip(".,:;)")
            for file in self._by_name.get(_base_name(path), ()):
                if _ends_with(path, file) and (found is None or len(file) > len(found[0])):
                    found = (file, path)
        if found is None:
            return None, words
        file, path = found
        words = re.sub(r"\s*[\"']?" + re.escape(path) + r"[\"']?", "", words)
        words = re.sub(r":(\s*:)+", ":", words).strip().lstrip(":").strip()
        return file, re.sub(r"(?<!\.)\.$", "", words)  # a reason, said before its files


def _base_name(path):
    return path.replace("\\", "/").rpartition("/")[2]


def _ends_with(path, file):
    """Whether ``path`` is ``file`` or a path to it (``RAW/sub/f.fits`` ends with
    ``sub/f.fits``)."""
    path, file = path.replace("\\", "/"), file.replace("\\", "/")
    return path == file or path.endswith("/" + file)
