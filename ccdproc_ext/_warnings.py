"""Ignoring warnings for a moment, safely when threads do it too.

`warnings.catch_warnings` saves the process's warning filters when entered and puts them
back when left. Before Python 3.14, two threads inside such blocks at once can leave one
thread's filters behind for good (an "ignore" that outlives its block). The package's
blocks all go through `ignoring`, which lets one thread in at a time; the blocks are
short (a header parsed, a card read), and pixels are never worked on inside them.
"""

import contextlib
import threading
import warnings

__all__ = ["CaughtWarnings", "ignoring"]

_LOCK = threading.RLock()


@contextlib.contextmanager
def ignoring(*categories):
    """Ignore warnings of ``categories`` inside the block; one thread at a time."""
    with _LOCK, warnings.catch_warnings():
        for category in categories:
            warnings.simplefilter("ignore", category)
        yield


class CaughtWarnings(warnings.catch_warnings):
    """Record the package's own warnings; let every other warning through as it was.

    After the block, ``ours`` holds the package's warnings (`~ccdproc_ext.CcdprocExtWarning`
    instances), which a night turns into notes.
    """

    def __init__(self):
        super().__init__(record=True)

    def __enter__(self):
        from .exceptions import CcdprocExtWarning

        self.caught = super().__enter__()
        warnings.simplefilter("always", CcdprocExtWarning)
        self._ours = CcdprocExtWarning
        return self

    def __exit__(self, *exc_info):
        super().__exit__(*exc_info)
        self.ours = []
        for caught in self.caught:
            if issubclass(caught.category, self._ours):
                self.ours.append(caught.message)
            else:
                warnings.warn_explicit(caught.message, caught.category, caught.filename,
                                       caught.lineno, source=caught.source)
        return False
