"""Freed memory reused by glibc's allocator while frames are reduced, and given back.

Each check runs in a fresh Python process (the allocator's settings are the process's),
with numpy's huge pages off, so that every fresh page of an array is one minor fault.
"""

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux")
    or not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"),
    reason="the allocator's settings are glibc's")

PROLOGUE = """
import resource
import numpy as np
from ccdproc_ext._allocator import (freed_memory_reused, give_back_freed_memory,
                                    reuse_freed_memory_for_good, tune_allocator)

SIZE = 48 * 2**20  # a frame above glibc's largest mmap threshold (32 MiB)

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()

def fault_a_frame():
    before = faults()
    frame = np.ones(SIZE, np.uint8)
    del frame
    return faults() - before
"""


def _run(body):
    """The script's printed lines (``key value``) as a dict of numbers."""
    env = {k: v for k, v in os.environ.items()
           if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")}
    env["NUMPY_MADVISE_HUGEPAGE"] = "0"
    output = subprocess.run([sys.executable, "-c", PROLOGUE + textwrap.dedent(body)],
                            capture_output=True, text=True, env=env, check=True).stdout
    return {key: float(value) for key, value in (line.split() for line in output.splitlines())}


SIZE_OF_A_FRAME = 48 * 2**20
PAGES = SIZE_OF_A_FRAME // os.sysconf("SC_PAGE_SIZE")


def test_a_users_process_is_left_as_it_is_unless_asked():
    numbers = _run("""
        with freed_memory_reused():
            fault_a_frame()
            print("inside", fault_a_frame())
        print("previous", int(tune_allocator()))
        with freed_memory_reused():
            fault_a_frame()
            print("asked", fault_a_frame())
        print("previous_again", int(tune_allocator(False)))
        with freed_memory_reused():
            fault_a_frame()
            print("no_longer", fault_a_frame())
    """)
    assert numbers["inside"] > 0.9 * PAGES  # glibc's defaults: a new mapping per frame
    assert numbers["previous"] == 0
    assert numbers["asked"] < 0.02 * PAGES
    assert numbers["previous_again"] == 1
    assert numbers["no_longer"] > 0.9 * PAGES


def test_the_command_owns_its_process():
    numbers = _run("""
        import contextlib, io
        from ccdproc_ext.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            main(["--version"])
        with freed_memory_reused():
            fault_a_frame()
            print("inside", fault_a_frame())
    """)
    assert numbers["inside"] < 0.02 * PAGES


def test_a_frame_freed_in_a_block_is_reused_and_given_back_after():
    numbers = _run("""
        tune_allocator()
        fault_a_frame()
        print("outside", fault_a_frame())
        with freed_memory_reused():
            fault_a_frame()
            print("inside", fault_a_frame())
            print("rss_inside", rss())
        print("rss_after", rss())
        print("after", fault_a_frame())
    """)
    # Outside a block, glibc maps every frame anew: each of its pages is faulted in.
    assert numbers["outside"] > 0.9 * PAGES
    # Inside, the frame freed is the next one's memory.
    assert numbers["inside"] < 0.02 * PAGES
    # Leaving the block gives the freed frame back to the system...
    assert numbers["rss_inside"] - numbers["rss_after"] > 0.9 * 48 * 2**20
    # ... and the allocator's default (a new mapping per frame) is back.
    assert numbers["after"] > 0.9 * PAGES


def test_nested_blocks_keep_the_memory_until_the_last_is_left():
    numbers = _run("""
        tune_allocator()
        with freed_memory_reused():
            with freed_memory_reused():
                fault_a_frame()
            print("kept", fault_a_frame())
            print("between", fault_a_frame())
            print("rss_inside", rss())
        print("rss_after", rss())
        print("after", fault_a_frame())
    """)
    assert numbers["kept"] < 0.02 * PAGES  # the inner block's end kept it for the outer
    assert numbers["between"] < 0.02 * PAGES
    assert numbers["rss_inside"] - numbers["rss_after"] > 0.9 * 48 * 2**20
    assert numbers["after"] > 0.9 * PAGES


def test_the_frames_of_one_master_are_the_memory_of_the_next():
    """Frames held together and freed together (a master's, once combined) are more
    than glibc's trim threshold (64 MiB): they stay in the heap for the next master."""
    numbers = _run("""
        tune_allocator()
        with freed_memory_reused():
            frames = [np.ones(SIZE, np.uint8) for _ in range(4)]
            del frames
            before = faults()
            frames = [np.ones(SIZE, np.uint8) for _ in range(4)]
            print("again", faults() - before)
            del frames
            print("rss_inside", rss())
        print("rss_after", rss())
    """)
    assert numbers["again"] < 0.02 * 4 * PAGES
    # all four given back when the block is left
    assert numbers["rss_inside"] - numbers["rss_after"] > 0.9 * 4 * SIZE_OF_A_FRAME


def test_a_worker_process_reuses_for_good():
    numbers = _run("""
        reuse_freed_memory_for_good()
        fault_a_frame()
        with freed_memory_reused():
            fault_a_frame()
        print("after_a_block", fault_a_frame())
        give_back_freed_memory()
        print("after_giving_back", fault_a_frame())
    """)
    assert numbers["after_a_block"] < 0.02 * PAGES  # a block's end changes nothing
    assert numbers["after_giving_back"] > 0.9 * PAGES  # the pages were given back


def test_the_users_own_tuning_is_left_alone():
    env = dict(os.environ, GLIBC_TUNABLES="glibc.malloc.check=0",
               NUMPY_MADVISE_HUGEPAGE="0")
    output = subprocess.run([sys.executable, "-c", PROLOGUE + textwrap.dedent("""
        tune_allocator()
        with freed_memory_reused():
            fault_a_frame()
            print("inside", fault_a_frame())
    """)], capture_output=True, text=True, env=env, check=True).stdout
    assert float(output.split()[1]) > 0.9 * PAGES
