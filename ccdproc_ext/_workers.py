"""Worker processes that end when the process that started them ends, whatever ends it.

A `~concurrent.futures.ProcessPoolExecutor` shuts its workers down when the process that
made it leaves normally, or is interrupted (Ctrl-C, or SIGTERM on the command line,
which is handled the same way). Killed (SIGKILL, the out-of-memory killer), it leaves
its workers behind: each waits for work on a pipe that its sister workers, forked from
the same process, keep open, so it never sees the end of it, and stays for good with
its memory (a few hundred megabytes each on a night of large frames).

`start_worker`, the pool's initializer, ties each worker to its parent: on Linux the
kernel kills the worker when its parent ends (``prctl(PR_SET_PDEATHSIG, SIGKILL)``;
strictly, when the parent's thread that started the worker ends: the night's pool is
made and shut down by one thread, which outlives it); elsewhere a thread of the worker
sees its parent change (the worker given to init, or to a sub-reaper) and ends the
worker. A parent that ended before either was set is looked for once. What a worker was
writing is left as a temporary file, which the next run of the night removes (see
`ccdproc_ext.outputs`).
"""

import ctypes
import os
import signal
import sys
import threading
import time

from ._allocator import reuse_freed_memory_for_good

__all__ = ["start_worker", "watch_parent"]

#: ``prctl`` option (``<linux/prctl.h>``): the signal a process gets when its parent ends.
_PR_SET_PDEATHSIG = 1

#: How often, in seconds, a worker without ``PR_SET_PDEATHSIG`` looks for its parent.
WATCH_INTERVAL = 0.5


def start_worker(parent_pid):
    """Initializer of the night's worker processes.

    Parameters
    ----------
    parent_pid : int
        The process id of the process that made the pool (``os.getpid()`` there).
    """
    # A forked worker inherits its parent's SIGTERM handler (the command line turns
    # SIGTERM into an interruption); the pool ends a broken worker by SIGTERM: restore
    # the default, which ends it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if not _die_with_parent():
        watch_parent(os.getppid())
    if os.getppid() != parent_pid and not _alive(parent_pid):
        os._exit(1)  # the parent ended before the worker could be tied to it
    reuse_freed_memory_for_good()  # the worker only reduces frames and ends with the night


def watch_parent(parent_pid, interval=WATCH_INTERVAL):
    """End this process, from a daemon thread, once its parent is no longer ``parent_pid``.

    When a process ends, its children are given to another (init, or a sub-reaper):
    their parent process id changes. Returns the thread.
    """
    def watch():
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os._exit(1)

    thread = threading.Thread(target=watch, name="ccdproc_ext parent watch", daemon=True)
    thread.start()
    return thread


def _die_with_parent():
    """Ask the kernel to kill this process when its parent ends; whether it could."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong,
                               ctypes.c_ulong, ctypes.c_ulong)
        libc.prctl.restype = ctypes.c_int
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):  # a C library without prctl
        return False


def _alive(pid):
    """Whether process ``pid`` exists (a process of another user counts)."""
    if os.name != "posix":  # os.kill(pid, 0) would end it on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
