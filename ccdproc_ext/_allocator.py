"""Freed memory reused by the C allocator while frames are reduced (Linux with glibc only).

A reduction allocates and frees arrays of megabytes many times a frame: each step of the
ccdproc chain returns a new frame, each piece a combine reads is a new array. glibc's
``malloc`` hands out a block above its *mmap threshold* as fresh pages from the kernel
and gives them back when the block is freed, so the next array of that size is faulted
in and zeroed again, page by page. The threshold starts at 128 KiB and rises as such
blocks are freed, but never above 32 MiB, and a full frame (4k x 2k float32) is more.
On the night of ``benchmarks/bench_night.py`` this cost the kernel 15 s of 42 (one
worker).

While `freed_memory_reused` is entered, large blocks are taken from the heap (``mallopt``
``M_MMAP_MAX = 0``), where a freed frame is there for the next one, and freed memory is
kept at the heap's top however much there is (``M_TRIM_THRESHOLD`` at its largest): the
frames of one master, freed when it is combined, are the frames of the next. Blocks
nest (a night, each master in it, each combine); when the outermost is left,
``malloc_trim`` gives back every free page, so that what a reduction freed does not stay
with the process, and glibc's defaults for ``M_MMAP_MAX`` and the trim threshold are
restored. A reduction gives back what it freed itself before it forks worker processes
(`give_back_freed_memory`). The mmap threshold is set to 32 MiB for good: the value
glibc's own adjustment reaches after the first large block is freed. The cost is memory
a heap cannot reuse for a larger array than the ones freed (a float64 frame after
float32 ones), and the memory of a reduction's largest moment kept until it ends: on
the night of ``benchmarks/bench_peers.py`` (100 frames of 2000 x 3000, two workers)
the largest resident size of the process that makes the masters went from 790 to
810 MB, and the kernel's time from 8.9 to 5.7 s of 27 (trimming at the end of each
master and frame, as this module did, and at 64 MiB freed, as glibc does).

The allocator is the process's, so this is done only where the package owns the
process: the ``ccdproc-ext`` command and the worker processes a night starts. In any
other process (a script, a notebook's kernel) `freed_memory_reused` does nothing until
the user asks for it with `tune_allocator`. Nothing is done where the user tuned the
allocator (the ``GLIBC_TUNABLES`` or ``MALLOC_*_`` environment variables), nor on other
systems or C libraries.
"""

import contextlib
import ctypes
import os
import sys
import threading

__all__ = ["freed_memory_reused", "give_back_freed_memory", "reuse_freed_memory_for_good",
           "tune_allocator"]

#: ``mallopt`` parameters (``<malloc.h>``).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
#: glibc's default ``M_MMAP_MAX``.
_DEFAULT_MMAP_MAX = 65536
#: glibc's largest mmap threshold on 64-bit systems, which ``mallopt`` accepts at most.
MMAP_THRESHOLD = 32 * 2**20
#: The trim threshold glibc's own adjustment pairs with it: restored when the last block
#: is left.
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD

#: The trim threshold within a block, the largest ``mallopt`` takes: freed memory stays.
HELD_THRESHOLD = 2**31 - 1

_USER_SETTINGS = ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                  "MALLOC_MMAP_MAX_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX")

_lock = threading.Lock()
_state = {"depth": 0, "pid": None, "for_good": False, "allowed": False}


def tune_allocator(enabled=True):
    """Let a reduction tune glibc's allocator in this process while it runs (see above).

    The ``ccdproc-ext`` command does this itself; in a script or a notebook it is the
    caller's choice, off by default: the reduction of a night of large frames is faster
    with it (on a night of 4k x 2k frames, a third less time), and every other array of
    the process is allocated as glibc's defaults say, before and after.

    Parameters
    ----------
    enabled : bool, optional
        Whether reductions in this process may tune the allocator. Default is ``True``.

    Returns
    -------
    bool
        The previous setting.

    Examples
    --------
    >>> import ccdproc_ext
    >>> previous = ccdproc_ext.tune_allocator()
    >>> ccdproc_ext.tune_allocator(previous)
    True
    """
    with _lock:
        previous, _state["allowed"] = _state["allowed"], bool(enabled)
    return previous


@contextlib.contextmanager
def freed_memory_reused():
    """Within this block, large arrays freed are reused by the next ones (see above).

    Blocks may nest and be entered by several threads; free pages are given back, and
    the allocator's defaults restored, when the last one is left. Does nothing where
    the allocator is not glibc's, nor in a process set by `reuse_freed_memory_for_good`,
    nor where `tune_allocator` has not allowed it.
    """
    libc = _glibc() if _state["allowed"] or _state["for_good"] else None
    if libc is None:
        yield
        return
    with _lock:
        _own_process()
        _state["depth"] += 1
        if _state["depth"] == 1 and not _state["for_good"]:
            _hold(libc)
    try:
        yield
    finally:
        with _lock:
            _state["depth"] -= 1
            if _state["depth"] == 0 and not _state["for_good"]:
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
                libc.malloc_trim(0)


def give_back_freed_memory():
    """Give the free pages of every arena back to the system (``malloc_trim``), where
    `tune_allocator` allowed the package to tune the allocator."""
    libc = _glibc() if _state["allowed"] or _state["for_good"] else None
    if libc is not None:
        libc.malloc_trim(0)


def reuse_freed_memory_for_good():
    """`freed_memory_reused` for the rest of this process: for worker processes that
    only reduce frames and end with the night."""
    libc = _glibc()
    if libc is None:
        return
    with _lock:
        _own_process()
        _state["for_good"] = True
        _hold(libc)


def _hold(libc):
    """Large blocks from the heap, and what is freed kept there."""
    libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    libc.mallopt(_M_TRIM_THRESHOLD, HELD_THRESHOLD)
    libc.mallopt(_M_MMAP_MAX, 0)


def _own_process():
    # A process forked inside a block inherits its settings, not the count of the
    # parent's threads in it: its own blocks start from none.
    if _state["pid"] != os.getpid():
        _state["pid"], _state["depth"] = os.getpid(), 0


_LIBC = []


def _glibc():
    """The C library's functions, or ``None`` when it is not glibc or the user tuned it."""
    if not _LIBC:
        _LIBC.append(_load_glibc())
    return _LIBC[0]


def _load_glibc():
    if not sys.platform.startswith("linux") or \
            any(name in os.environ for name in _USER_SETTINGS):
        return None
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return None
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
        libc.malloc_trim.restype = ctypes.c_int
    except (ValueError, OSError, AttributeError):  # another C library
        return None
    return libc
