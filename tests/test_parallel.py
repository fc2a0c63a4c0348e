"""Frames calibrated in parallel are the frames calibrated one at a time.

A small night is reduced once serially; then its science frames are calibrated again into
fresh output folders through a thread pool, a process pool, reduce_night's own worker
processes and a ``dask.distributed`` cluster. Those runs start from a copy of the serial
run's masters (found up to date, not rebuilt, nor submitted); one test rebuilds the whole
night on all cores and finds the masters byte for byte the same. On a cluster, a larger
night is reduced whole, its masters and bad-pixel masks built by the workers: the same
outputs as one process, and this process only plans, submits and records.
"""

import shutil
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from ccdproc_ext import reduce_night
from ccdproc_ext.simulate import simulate_night

PROFILE = "maxim-ccdsoft"
#: Cards that may differ between two runs of the same night: the processing time.
VOLATILE_CARDS = {"CCDPDATE"}


@pytest.fixture(scope="module")
def serial_night(tmp_path_factory):
    """A two-filter night reduced one frame at a time: (raw folder, result)."""
    root = tmp_path_factory.mktemp("parallel")
    simulate_night(root / "raw", PROFILE, shape=(48, 56), n_bias=3, n_dark=3,
                   filters=("V", "R"), n_flat=3, n_science=3, seed=7)
    result = reduce_night(root / "raw", root / "serial", PROFILE, progress=False, workers=1)
    assert len(result.problems) == 0, result.summary()
    assert len(result.science) == 6
    return root / "raw", result


@pytest.fixture
def dask_executor():
    """The executor of a two-process ``dask.distributed`` cluster, closed afterwards."""
    distributed = pytest.importorskip("dask.distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    yield client.get_executor()
    client.close()
    cluster.close()


def _event_loop_cpu():
    """CPU seconds of distributed's event loop thread ("IO loop") so far; 0 if there is
    none (every thread then counts)."""
    psutil = pytest.importorskip("psutil")
    loops = {thread.native_id for thread in threading.enumerate() if thread.name == "IO loop"}
    return sum(t.user_time + t.system_time for t in psutil.Process().threads()
               if t.id in loops)


def _reduce_again(serial_night, output_dir, **options):
    """The night reduced into ``output_dir``, starting from the serial run's masters."""
    raw, serial = serial_night
    shutil.copytree(serial.output_dir / "masters", output_dir / "masters")
    result = reduce_night(raw, output_dir, PROFILE, progress=False, **options)
    assert len(result.problems) == 0, result.summary()
    assert set(result.science["status"]) == {"written"}
    for path in (serial.output_dir / "masters").iterdir():
        assert (output_dir / "masters" / path.name).read_bytes() == path.read_bytes(), \
            f"master {path.name} was rebuilt"
    return result


def _assert_same_science(expected, actual):
    """Same science frames: identical pixels, headers equal but for the processing time."""
    outputs = {row["raw_file"]: row["output_file"] for row in actual.science}
    assert sorted(outputs) == sorted(expected.science["raw_file"])
    for row in expected.science:
        ours = outputs[row["raw_file"]]
        assert Path(ours).name == Path(row["output_file"]).name
        np.testing.assert_array_equal(fits.getdata(ours), fits.getdata(row["output_file"]))
        reference = fits.getheader(row["output_file"])
        header = fits.getheader(ours)
        assert list(header.keys()) == list(reference.keys())
        differing = {card.keyword for card, expected_card in
                     zip(header.cards, reference.cards, strict=True)
                     if card.image != expected_card.image}
        assert differing <= VOLATILE_CARDS, f"{ours}: {sorted(differing - VOLATILE_CARDS)}"
    assert list(actual.science["sky_level"]) == list(expected.science["sky_level"])


# photutils silences astropy's "invalid values" warning of the masked pixels it sets to
# NaN with warnings.catch_warnings, which is not thread-safe before Python 3.14: another
# thread leaving its own catch_warnings can restore this test's "error" filter in the
# middle, and the warning becomes an error of that frame (seen twice in this suite). In
# a user's session the filters are not "error": a note or a printed warning at most.
@pytest.mark.filterwarnings(
    "ignore:Input data contains invalid values:astropy.utils.exceptions.AstropyUserWarning")
def test_thread_pool(serial_night, tmp_path):
    with ThreadPoolExecutor(2) as executor:
        result = _reduce_again(serial_night, tmp_path, executor=executor)
    _assert_same_science(serial_night[1], result)


def test_process_pool(serial_night, tmp_path):
    with ProcessPoolExecutor(2) as executor:
        result = _reduce_again(serial_night, tmp_path, executor=executor)
    _assert_same_science(serial_night[1], result)


def test_own_worker_processes(serial_night, tmp_path):
    result = _reduce_again(serial_night, tmp_path, workers=2)
    _assert_same_science(serial_night[1], result)


# The scheduler runs in this process and warns when a loaded machine makes it slow to
# create its scratch folder; that says nothing about the reduction.
@pytest.mark.filterwarnings(
    "ignore:Creating scratch directories is taking a surprisingly long time:UserWarning")
def test_dask_distributed(serial_night, dask_executor, tmp_path):
    result = _reduce_again(serial_night, tmp_path, executor=dask_executor)
    _assert_same_science(serial_night[1], result)


def test_whole_night_on_all_cores(serial_night, tmp_path):
    """Masters built by threads and kept in memory for forked workers, from scratch: the
    same masters, byte for byte, and the same science frames as one frame at a time."""
    raw, serial = serial_night
    result = reduce_night(raw, tmp_path, PROFILE, progress=False, workers=2)
    assert len(result.problems) == 0, result.summary()
    for path in (serial.output_dir / "masters").iterdir():
        assert (tmp_path / "masters" / path.name).read_bytes() == path.read_bytes(), \
            f"master {path.name} differs"
    _assert_same_science(serial, result)


def test_workers_started_by_a_fork_server(serial_night, tmp_path, monkeypatch):
    """As from Python 3.12: workers that inherit nothing read the masters themselves."""
    import multiprocessing

    import ccdproc_ext.night_science

    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork server on this platform")
    monkeypatch.setattr(ccdproc_ext.night_science, "process_context",
                        lambda: multiprocessing.get_context("forkserver"))
    result = _reduce_again(serial_night, tmp_path, workers=2)
    _assert_same_science(serial_night[1], result)



# ------------------------------------------------------------ masters on a cluster
#: The size of the frames of a night whose masters cost real work.
BIG_SHAPE = (1536, 1536)


@pytest.fixture(scope="module")
def big_night(tmp_path_factory):
    """A night of 5 biases, 5 darks of two exposures, 5 flats in 2 filters and 3 science
    frames of each, reduced one frame at a time in this process: (raw folder, result, the
    CPU time of this process)."""
    root = tmp_path_factory.mktemp("cluster")
    simulate_night(root / "raw", PROFILE, shape=BIG_SHAPE, n_bias=5, n_dark=5,
                   filters=("V", "R"), n_flat=5, n_science=3, seed=11)
    start = time.process_time()
    result = reduce_night(root / "raw", root / "serial", PROFILE, progress=False,
                          workers=1, report=False)
    cpu = time.process_time() - start
    assert len(result.problems) == 0, result.summary()
    return root / "raw", result, cpu


def _assert_same_outputs(expected_dir, actual_dir):
    """Every FITS file of two output folders: the same pixels in every extension, the
    same header cards but for the processing time; every table the same."""
    expected = sorted(p.relative_to(expected_dir) for p in expected_dir.rglob("*")
                      if p.is_file() and p.suffix in (".fits", ".ecsv"))
    actual = sorted(p.relative_to(actual_dir) for p in actual_dir.rglob("*")
                    if p.is_file() and p.suffix in (".fits", ".ecsv"))
    assert actual == expected
    for name in expected:
        if name.suffix == ".ecsv":
            ours, theirs = Table.read(actual_dir / name), Table.read(expected_dir / name)
            assert ours.pformat(max_lines=-1, max_width=-1) == \
                theirs.pformat(max_lines=-1, max_width=-1), name
            assert ours.meta == theirs.meta, name
            continue
        with fits.open(actual_dir / name) as ours, fits.open(expected_dir / name) as theirs:
            assert len(ours) == len(theirs), name
            for hdu, reference in zip(ours, theirs, strict=True):
                if reference.data is None:
                    assert hdu.data is None, name
                else:
                    np.testing.assert_array_equal(hdu.data, reference.data, err_msg=str(name))
                assert list(hdu.header.keys()) == list(reference.header.keys()), name
                differing = {card.keyword for card, theirs_card in
                             zip(hdu.header.cards, reference.header.cards, strict=True)
                             if card.image != theirs_card.image}
                assert differing <= VOLATILE_CARDS, f"{name}: {differing}"


@pytest.mark.filterwarnings(
    "ignore:Creating scratch directories is taking a surprisingly long time:UserWarning")
def test_masters_built_on_the_cluster(big_night, dask_executor, tmp_path):
    """Masters, bad-pixel masks and science frames all made by the cluster's workers: the
    outputs of a serial run, and this process spends at most a quarter of its CPU time
    (it only plans, submits and records). The time of dask's event loop, a thread of this
    process that runs the cluster's scheduler and the client, is not counted: on a
    cluster it runs elsewhere, and on a slow machine it alone comes near a quarter."""
    raw, serial, serial_cpu = big_night
    # A small night first, as in a season of nights: the workers have started and read
    # the package (the scheduler, a thread of this process, works for them meanwhile).
    simulate_night(tmp_path / "small", PROFILE, shape=(48, 56), n_bias=3, n_dark=3,
                   filters=("V",), n_flat=3, n_science=1, seed=3)
    reduce_night(tmp_path / "small", tmp_path / "small out", PROFILE, progress=False,
                 executor=dask_executor, report=False)
    out = tmp_path / "out"
    start, loop_start = time.process_time(), _event_loop_cpu()
    result = reduce_night(raw, out, PROFILE, progress=False, executor=dask_executor,
                          report=False)
    # Every thread of this process, those that ended included, but dask's event loop.
    cpu = time.process_time() - start - (_event_loop_cpu() - loop_start)
    assert len(result.problems) == 0, result.summary()
    assert result.masters.keys() == serial.masters.keys()
    for path in (serial.output_dir / "masters").iterdir():
        assert (out / "masters" / path.name).read_bytes() == path.read_bytes(), \
            f"master {path.name} differs"
    _assert_same_outputs(serial.output_dir, out)
    assert result.summary().replace(str(out), "OUT") == \
        serial.summary().replace(str(serial.output_dir), "OUT")
    assert cpu <= serial_cpu / 4, f"this process: {cpu:.2f} s on the cluster, " \
        f"{serial_cpu:.2f} s alone"


@pytest.mark.filterwarnings(
    "ignore:Creating scratch directories is taking a surprisingly long time:UserWarning")
def test_master_failing_on_the_cluster(dask_executor, tmp_path):
    """A truncated bias left out of its master, and darks of NaN only that make no
    master: the same problems and notes on the cluster as in a serial run."""
    simulate_night(tmp_path / "raw", PROFILE, shape=(48, 56), n_bias=3, n_dark=3,
                   filters=("V",), n_flat=3, n_science=2, seed=5)
    bias = tmp_path / "raw" / "bias_002.fits"
    bias.write_bytes(bias.read_bytes()[:2880 + 500])
    darks = sorted((tmp_path / "raw").glob("dark_*.fits"))
    for dark in darks[:3]:
        with fits.open(dark, mode="update") as hdus:
            hdus[0].data = np.full(hdus[0].data.shape, np.nan, dtype=np.float32)
    serial = reduce_night(tmp_path / "raw", tmp_path / "serial", PROFILE, progress=False,
                          workers=1, report=False)
    result = reduce_night(tmp_path / "raw", tmp_path / "cluster", PROFILE, progress=False,
                          executor=dask_executor, report=False)
    assert "bias_002.fits" in set(serial.problems["file"])
    assert serial.unbuilt_masters, serial.summary()
    assert [tuple(row) for row in result.problems] == [tuple(row) for row in serial.problems]
    assert [tuple(row) for row in result.notes] == [tuple(row) for row in serial.notes]
    assert result.unbuilt_masters == serial.unbuilt_masters
    _assert_same_outputs(tmp_path / "serial", tmp_path / "cluster")
    # Re-run: the masters and masks up to date are told from their files here, and only
    # the science frames whose master could not be built are tried again.
    counting = _CountingExecutor(dask_executor)
    again = reduce_night(tmp_path / "raw", tmp_path / "cluster", PROFILE, progress=False,
                         executor=counting, report=False)
    assert set(counting.submitted) <= {"build_master_task"}, counting.submitted
    assert counting.submitted.count("build_master_task") == len(serial.unbuilt_masters)
    assert [tuple(row) for row in again.problems] == [tuple(row) for row in serial.problems]


class _CountingExecutor(Executor):
    """An executor that names the functions submitted to it, then runs them on another."""

    def __init__(self, executor):
        self.executor = executor
        self.submitted = []

    def submit(self, fn, /, *args, **kwargs):
        self.submitted.append(fn.__name__)
        return self.executor.submit(fn, *args, **kwargs)
