"""Worker processes that end when the process that started them ends, whatever ends it.

A `~concurrent.futures.ProcessPoolExecutor` shuts its workers down when the process that
made it leaves normally, or is interrupted (Ctrl-C, or SIGTERM on the command line,
which is handled the same way). Killed (SIGKILL, the out-of-memory killer), it leaves
its workers behind for good, with their memory (a few hundred megabytes each on a night
of large frames): a forked worker waits for work on a pipe that its sister workers keep
open, so it never sees the end of it; a worker started by a fork server (Python's
default on Linux from 3.12) is the server's child, and the server lives as long as its
workers do.

`start_worker`, the pool's initializer, ties each worker to the process that made the
pool. A worker that process forked asks the kernel to kill it when its parent ends
(Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``; strictly, when the parent's thread that
forked it ends: the night's pool is made and shut down by one thread, which outlives
it). Any other worker (from a fork server, or on another system) watches that process
from a thread, twice a second, and ends when it is gone. A process that ended before
either was set up is looked for once. What a worker was writing is left as a temporary
file, which the next run of the night removes (see `ccdproc_ext.outputs`). On Windows,
where a process cannot be watched this way, only the pool's own shut-down ends them.
"""

import ctypes
import os
import signal
import sys
import threading
import time

from ._allocator import reuse_freed_memory_for_good

__all__ = ["start_worker", "watch_process"]

#: ``prctl`` option (``<linux/prctl.h>``): the signal a process gets when its parent ends.
_PR_SET_PDEATHSIG = 1

#: How often, in seconds, a watching worker looks for the process that made its pool.
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
    if not (os.getppid() == parent_pid and _die_with_parent()):
        watch_process(parent_pid)
    if _identity(parent_pid) is None:
        os._exit(1)  # it ended before the worker could be tied to it
    reuse_freed_memory_for_good()  # the worker only reduces frames and ends with the night


def watch_process(pid, interval=WATCH_INTERVAL):
    """End this process, from a daemon thread, once process ``pid`` has ended.

    Returns the thread.
    """
    identity = _identity(pid)

    def watch():
        while identity is not None and _identity(pid) == identity:
            time.sleep(interval)
        os._exit(1)

    thread = threading.Thread(target=watch, name="ccdproc_ext watch", daemon=True)
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


def _identity(pid):
    """What tells process ``pid`` from a later one given the same id (its start time,
    where ``/proc`` says it; else ``True``), or ``None`` when it has ended (a process
    that ended and waits for its parent to collect it has ended)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rpartition(")")[2].split()  # the name may hold ')'
    except FileNotFoundError:
        if os.path.isdir(f"/proc/{os.getpid()}"):
            return None
    except OSError:
        pass
    else:
        return None if fields[0] in ("Z", "X") else fields[19]
    if os.name != "posix":  # os.kill(pid, 0) would end it on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # another user's: it exists
        pass
    return True
