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

__all__ = ["ignoring"]

_LOCK = threading.RLock()


@contextlib.contextmanager
def ignoring(*categories):
    """Ignore warnings of ``categories`` inside the block; one thread at a time."""
    with _LOCK, warnings.catch_warnings():
        for category in categories:
            warnings.simplefilter("ignore", category)
        yield
