"""Freed memory kept for reuse by the C allocator (Linux with glibc only).

A reduction allocates and frees arrays of megabytes many times a frame: each step of the
ccdproc chain returns a new frame, each piece a combine reads is a new array. glibc's
``malloc`` hands out a block above its *mmap threshold* as fresh pages from the kernel and
returns it to the kernel when it is freed, so the next array of that size is faulted in
and zeroed again, page by page. The threshold starts at 128 KiB and only rises as such
blocks are freed, and freed memory at the top of the heap is given back beyond the *trim
threshold*. On the night of ``benchmarks/bench_night.py`` (one worker) this cost the
kernel 15 s of 42.

`keep_freed_memory` sets both thresholds, once per process, to the values glibc's own
adjustment rises to at most on 64-bit systems (``DEFAULT_MMAP_THRESHOLD_MAX``, 32 MiB,
and twice that): arrays up to 32 MiB are then taken from memory the process already has,
and up to 64 MiB of freed memory is kept rather than returned. Peak memory is not raised
(the same arrays are alive at the same time); the process may just keep up to 64 MiB
more after a reduction. Nothing is done where the user tuned the allocator (the
``GLIBC_TUNABLES``, ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` environment
variables), nor on other systems or C libraries.
"""

import ctypes
import os
import sys
import threading

__all__ = ["keep_freed_memory"]

#: ``mallopt`` parameters (``<malloc.h>``).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's largest mmap threshold on 64-bit systems, which ``mallopt`` accepts at most.
MMAP_THRESHOLD = 32 * 2**20
#: The trim threshold glibc's own adjustment pairs with it.
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD

_USER_SETTINGS = ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

_lock = threading.Lock()
_state = {"pid": None, "set": False}


def keep_freed_memory():
    """Set glibc's mmap and trim thresholds for this process (see the module's text).

    Cheap after the first call in a process; a forked worker inherits the settings.

    Returns
    -------
    bool
        Whether the thresholds are set by this package in this process.
    """
    with _lock:
        if _state["pid"] != os.getpid():
            _state["pid"], _state["set"] = os.getpid(), _set_thresholds()
        return _state["set"]


def _set_thresholds():
    if not sys.platform.startswith("linux") or not _glibc():
        return False
    if any(name in os.environ for name in _USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def _glibc():
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # another C library
        return False
