"""Warning filters changed for a moment, safely when threads do it too.

`warnings.catch_warnings` saves the process's warning filters when entered and puts them
back when left. Before Python 3.14, two threads inside such blocks at once can leave one
thread's filters behind for good (an "ignore" that outlives its block). Every block of
the package goes through this module, and this module alone uses
`warnings.catch_warnings` (a ruff rule says so):

- `ignoring` and `as_errors` hold a lock for the whole block: the blocks are short (a
  header parsed, a card read, a fit), and pixels are never worked on inside them;
- `recording` holds it too, and gives the package's caller the warnings of the block;
- `SavedFilters` and `CaughtWarnings` last as long as a command or a night, while the
  package's threads enter short blocks: they take the lock when they save the filters and
  when they put them back, so that neither happens inside another block.
"""

import contextlib
import threading
import warnings

from .exceptions import CcdprocExtWarning

__all__ = ["CaughtWarnings", "SavedFilters", "as_errors", "ignoring", "recording"]

_LOCK = threading.RLock()


@contextlib.contextmanager
def ignoring(*categories, message=""):
    """Ignore warnings of ``categories`` whose text starts with ``message`` inside the
    block; one thread at a time (with no category, the block only guards filters that
    another helper changes inside it)."""
    with _LOCK, warnings.catch_warnings():
        for category in categories:
            warnings.filterwarnings("ignore", message, category)
        yield


@contextlib.contextmanager
def as_errors():
    """Turn every warning inside the block into an exception; one thread at a time."""
    with _LOCK, warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


@contextlib.contextmanager
def recording(*categories):
    """Record the warnings of ``categories`` inside the block (each time they occur); the
    others pass on as they would have. One thread at a time.

    Yields
    ------
    list of `warnings.WarningMessage`
        Filled when the block is left.
    """
    recorded, caught = [], []
    with _LOCK:
        try:
            with warnings.catch_warnings(record=True) as caught:
                for category in categories:
                    warnings.simplefilter("always", category)
                yield recorded
        finally:  # an error inside the block too: what was heard is kept
            for warning in caught:
                if issubclass(warning.category, categories):
                    recorded.append(warning)
                else:
                    warnings.warn_explicit(warning.message, warning.category,
                                           warning.filename, warning.lineno)


class SavedFilters(warnings.catch_warnings):
    """The warning filters as they were before the block, put back after it.

    Unlike `ignoring`, the block may be long (a whole command) and other threads may
    enter their own blocks meanwhile: the lock is held only while the filters are saved
    and while they are put back.
    """

    def __enter__(self):
        with _LOCK:
            return super().__enter__()

    def __exit__(self, *exc_info):
        with _LOCK:
            return super().__exit__(*exc_info)


class CaughtWarnings(SavedFilters):
    """Record the package's own warnings; let every other warning through as it was.

    After the block, ``ours`` holds the package's warnings (`~ccdproc_ext.CcdprocExtWarning`
    instances), which a night turns into notes.
    """

    def __init__(self):
        super().__init__(record=True)

    def __enter__(self):
        with _LOCK:
            self.caught = super().__enter__()
            warnings.simplefilter("always", CcdprocExtWarning)
        return self

    def __exit__(self, *exc_info):
        super().__exit__(*exc_info)
        self.ours = []
        for caught in self.caught:
            if issubclass(caught.category, CcdprocExtWarning):
                self.ours.append(caught.message)
            else:
                warnings.warn_explicit(caught.message, caught.category, caught.filename,
                                       caught.lineno, source=caught.source)
        return False
