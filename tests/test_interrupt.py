"""An interrupted night resumes: killed at any moment and run again, it ends with exactly
the outputs of an uninterrupted run, and only what was not finished is done again.

A reduction runs in a subprocess on a simulated night of 40 science frames (one frame at a
time, about two seconds of work) and is killed (SIGKILL: no clean-up of any kind) once
some outputs exist; the same call is then made again. Every output is compared with an
uninterrupted run of the same night in another folder: the same files, the same pixels,
the same headers but for ``CCDPDATE`` (the time of calibration).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from ccdproc_ext import reduce_night
from ccdproc_ext.outputs import write_atomic
from ccdproc_ext.simulate import simulate_night

PROFILE = "maxim-ccdsoft"
N_SCIENCE = 40
#: Cards that may differ between two runs of the same night: the processing time.
VOLATILE_CARDS = {"CCDPDATE"}


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """The raw night, and an uninterrupted reduction of it: (raw folder, output folder)."""
    root = tmp_path_factory.mktemp("interrupt")
    simulate_night(root / "raw", PROFILE, shape=(128, 128), n_bias=5, n_dark=3, n_flat=3,
                   filters=("R",), n_science=N_SCIENCE, n_stars=5, seed=11)
    result = reduce_night(root / "raw", root / "reference", PROFILE, progress=False,
                          workers=1)
    assert len(result.problems) == 0 and len(result.science) == N_SCIENCE
    return root / "raw", root / "reference"


def files_under(folder):
    """Every file under ``folder`` (temporary ones included), by relative path."""
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*")
                  if p.is_file())


def assert_same_outputs(folder, reference):
    assert files_under(folder) == files_under(reference)
    for name in files_under(reference):
        ours, theirs = Path(folder, name), Path(reference, name)
        if name == "report.html" or name.startswith("report/"):
            continue  # a view of the outputs, titled by its folder's name
        if name == "science.ecsv":
            # A resumed run finds some frames "up to date" that the reference "wrote".
            a, b = Table.read(ours), Table.read(theirs)
            del a["status"], b["status"]
            assert a.pformat(max_lines=-1, max_width=-1) == b.pformat(max_lines=-1, max_width=-1)
            continue
        if not name.endswith(".fits"):
            assert ours.read_text() == theirs.read_text(), name
            continue
        with fits.open(ours) as a, fits.open(theirs) as b:
            assert [h.name for h in a] == [h.name for h in b], name
            for hdu_a, hdu_b in zip(a, b, strict=True):
                np.testing.assert_array_equal(hdu_a.data, hdu_b.data, err_msg=name)
                assert list(hdu_a.header.keys()) == list(hdu_b.header.keys()), name
                differing = {ca.keyword for ca, cb in
                             zip(hdu_a.header.cards, hdu_b.header.cards, strict=True)
                             if ca.image != cb.image}
                assert differing <= VOLATILE_CARDS, f"{name}: {sorted(differing)}"


def run_and_kill(raw, out, log, *, subfolder, at_least):
    """Start the reduction in a subprocess; kill it once ``at_least`` outputs exist in
    ``out/subfolder``. Returns the outputs there were when it was killed."""
    code = ("import ccdproc_ext; ccdproc_ext.reduce_night("
            f"{str(raw)!r}, {str(out)!r}, {PROFILE!r}, progress=False, workers=1)")
    with open(log, "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                                   stderr=stderr)
    deadline = time.monotonic() + 120
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if len(list((out / subfolder).glob("*.fits"))) >= at_least:
                os.kill(process.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL, \
        f"the reduction was not killed (status {process.returncode}): {log.read_text()}"
    return {name: os.stat(out / name).st_mtime_ns for name in files_under(out)
            if not Path(name).name.startswith(".")}


@pytest.mark.parametrize("subfolder, at_least", [
    ("masters", 1),  # killed while the masters are built
    ("science", 5),  # killed while the science frames are calibrated
])
def test_killed_and_run_again_equals_an_uninterrupted_run(night, tmp_path, subfolder,
                                                          at_least):
    raw, reference = night
    out = tmp_path / "out"
    finished = run_and_kill(raw, out, tmp_path / "stderr.txt", subfolder=subfolder,
                            at_least=at_least)
    science_done = [n for n in finished if n.startswith("science/")]
    assert len(science_done) < N_SCIENCE, "killed too late to test anything"
    # A temporary file as a kill in the middle of a write leaves it (the kill may or may
    # not have left one of its own).
    stale = out / "science" / ".object_R_007.fits.k1ll3d.part"
    stale.write_bytes(b"SIMPLE  =                    T" + b" " * 50)

    result = reduce_night(raw, out, PROFILE, progress=False, workers=1)

    assert len(result.problems) == 0
    statuses = dict(zip(result.science["raw_file"], result.science["status"], strict=True))
    assert sum(s == "up to date" for s in statuses.values()) == len(science_done)
    assert sum(s == "written" for s in statuses.values()) == N_SCIENCE - len(science_done)
    # What was finished before the kill was not done again.
    for name, mtime in finished.items():
        if name.endswith(".fits"):
            assert os.stat(out / name).st_mtime_ns == mtime, f"{name} was made again"
    assert not stale.exists()
    assert [n for n in files_under(out) if n.endswith(".part")] == []
    assert_same_outputs(out, reference)


def test_interrupted_write_leaves_no_file_under_the_final_name(night, tmp_path,
                                                               monkeypatch):
    """Ctrl-C during the rename of the first science frame: nothing under its name, no
    temporary file; the next run completes the night as an uninterrupted one."""
    raw, reference = night
    out = tmp_path / "out"
    real_replace = os.replace

    def interrupted(source, destination):
        if Path(destination).parent.name == "science":
            raise KeyboardInterrupt
        return real_replace(source, destination)

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reduce_night(raw, out, PROFILE, progress=False, workers=1)
    monkeypatch.setattr(os, "replace", real_replace)
    assert files_under(out / "science") == []
    assert len(files_under(out / "masters")) == 5  # bias, 2 darks, flat, bad-pixel mask

    result = reduce_night(raw, out, PROFILE, progress=False, workers=1)
    assert set(result.science["status"]) == {"written"}
    assert_same_outputs(out, reference)


def test_write_atomic_cleans_up_after_a_failure(tmp_path, monkeypatch):
    from astropy.nddata import CCDData

    frame = CCDData(np.ones((4, 5)), unit="adu")
    path = write_atomic(frame, tmp_path / "a.fits")
    before = path.read_bytes()

    def failing(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fits.HDUList, "writeto", failing)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(CCDData(np.zeros((4, 5)), unit="adu"), path)
    assert files_under(tmp_path) == ["a.fits"]
    assert path.read_bytes() == before  # the complete file of before is still there


def test_ctrl_c_on_the_command_line(night, tmp_path, monkeypatch, capsys):
    from ccdproc_ext.cli import main

    raw, reference = night
    out = tmp_path / "out"
    real_replace = os.replace

    def interrupted(source, destination):
        if Path(destination).name == "object_R_003.fits":
            raise KeyboardInterrupt
        return real_replace(source, destination)

    monkeypatch.setattr(os, "replace", interrupted)
    command = ["reduce", str(raw), str(out), "--profile", PROFILE, "--workers", "1",
               "--quiet"]
    assert main(command) == 130
    assert "interrupted; run the same command again to resume" in capsys.readouterr().err
    monkeypatch.setattr(os, "replace", real_replace)
    assert main(command) == 0
    assert f"science frames: 2 up to date, {N_SCIENCE - 2} written" in capsys.readouterr().out
    assert_same_outputs(out, reference)


# ------------------------------------------------ the worker processes end with the command
#: Seconds the worker processes of a killed command may take to end.
WORKERS_END_WITHIN = 5


def descendants(pid):
    """The processes ``pid`` started and the processes they started, from ``/proc``:
    ``{pid: start time}`` (the start time tells a process from a later one given the
    same id)."""
    found, parents = {}, [pid]
    while parents:
        for task in Path(f"/proc/{parents.pop()}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:  # the process or its thread ended meanwhile
                continue
            for child in children:
                start = start_time(child)
                if start is not None and child not in found:
                    found[child] = start
                    parents.append(child)
    return found


def start_time(pid):
    """When process ``pid`` started (clock ticks after boot), or ``None`` when it is gone
    or a zombie (ended, not yet collected by its new parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command's name, which may hold ')'
    return None if fields[0] in ("Z", "X") else int(fields[19])


def assert_all_end(processes, within=WORKERS_END_WITHIN):
    """Assert that every process of ``{pid: start time}`` ends within ``within`` s; those
    that do not are killed, not left behind by the test."""
    deadline = time.monotonic() + within
    while True:
        running = {pid for pid, start in processes.items() if start_time(pid) == start}
        if not running or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid in running:
        os.kill(pid, signal.SIGKILL)
    assert running == set(), f"still running {within} s after: {sorted(running)}"


needs_proc_children = pytest.mark.skipif(
    not sys.platform.startswith("linux")
    or not Path(f"/proc/self/task/{os.getpid()}/children").exists(),
    reason="finds worker processes through Linux's /proc/PID/task/TID/children")


@pytest.fixture(scope="module")
def busy_night(tmp_path_factory):
    """A night whose science frames keep two worker processes busy for several seconds
    (L.A.Cosmic on each), with masters made in a moment."""
    raw = tmp_path_factory.mktemp("busy") / "raw"
    simulate_night(raw, PROFILE, shape=(128, 128), n_bias=3, n_dark=2, n_flat=3,
                   filters=("R",), n_science=24, n_stars=5, seed=3)
    return raw


def start_and_signal(raw, out, log, signal_number):
    """Start ``ccdproc-ext reduce`` with two workers; once its first science frame is
    written, send it ``signal_number``. Returns (the command, its worker processes)."""
    command = [sys.executable, "-m", "ccdproc_ext.cli", "reduce", str(raw), str(out),
               "--profile", PROFILE, "--workers", "2", "--cosmic-rays", "--no-report", "-q"]
    with open(log, "wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 120
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if list((out / "science").glob("*.fits")):
                workers = descendants(process.pid)
                os.kill(process.pid, signal_number)
                return process, workers
            time.sleep(0.01)
    except BaseException:
        process.kill()
        raise
    process.kill()
    pytest.fail(f"no science frame written before the command ended: {log.read_text()}")


@needs_proc_children
def test_workers_end_when_the_command_is_killed(busy_night, tmp_path):
    """SIGKILL leaves no clean-up to the command: its workers must end by themselves."""
    process, workers = start_and_signal(busy_night, tmp_path / "out",
                                        tmp_path / "stderr.txt", signal.SIGKILL)
    assert process.wait(timeout=10) == -signal.SIGKILL
    assert len(workers) >= 2
    assert_all_end(workers)


@needs_proc_children
def test_sigterm_ends_the_command_as_ctrl_c_does(busy_night, tmp_path):
    """SIGTERM: the frames being calibrated are finished and written whole, the workers
    end, and the command says how to resume, with exit status 143 (128 + SIGTERM)."""
    out = tmp_path / "out"
    process, workers = start_and_signal(busy_night, out, tmp_path / "stderr.txt",
                                        signal.SIGTERM)
    assert process.wait(timeout=30) == 143
    assert len(workers) >= 2
    assert_all_end(workers)
    said = (tmp_path / "stderr.txt").read_text()
    assert said == "ccdproc-ext: terminated; run the same command again to resume\n"
    assert list(out.rglob("*.part")) == []  # no temporary file left
    written = sorted((out / "science").glob("*.fits"))
    assert 1 <= len(written) < 24
    for path in written:
        with fits.open(path) as hdus:
            assert hdus[0].data.shape == (128, 128)
            assert "FLATCOR" in hdus[0].header


@needs_proc_children
def test_a_watching_process_ends_with_the_process_it_watches():
    """The watch of workers the kernel cannot kill with their parent: a process forks a
    child that watches it, and is killed; the child ends by itself."""
    code = ("import os, time\n"
            "from ccdproc_ext._workers import watch_process\n"
            "child = os.fork()\n"
            "if child == 0:\n"
            "    watch_process(os.getppid(), interval=0.05)\n"
            "    time.sleep(60)\n"
            "    os._exit(0)\n"
            "print(child, flush=True)\n"
            "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        child = int(parent.stdout.readline())
        start = start_time(child)
        assert start is not None
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
    assert_all_end({child: start})


@needs_proc_children
def test_workers_of_a_fork_server_end_with_the_process_that_made_the_pool():
    """Workers started by a fork server (Python's default on Linux from 3.12) are its
    children, and it lives as long as they do: they must watch the process that made
    the pool. Killed, it leaves no worker, nor server, behind."""
    code = ("import multiprocessing, os, time\n"
            "from concurrent.futures import ProcessPoolExecutor\n"
            "from ccdproc_ext._workers import start_worker\n"
            "if __name__ == '__main__':\n"
            "    context = multiprocessing.get_context('forkserver')\n"
            "    pool = ProcessPoolExecutor(2, mp_context=context, initializer=start_worker,\n"
            "                               initargs=(os.getpid(),))\n"
            "    print(sorted({pool.submit(os.getpid).result() for _ in range(4)}),\n"
            "          flush=True)\n"
            "    time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert parent.stdout.readline()  # the workers have run a task
        processes = descendants(parent.pid)
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
    assert len(processes) >= 3  # the server and its workers (and a resource tracker)
    assert_all_end(processes)
