"""Science frames as tasks that any executor can run.

A `ScienceTask` says everything one science frame needs: its raw file, its output, the
masters it is calibrated with (each a `MasterRef`: path, checksum, size and time), the
dark scale and the settings. `run_task` calibrates it with `~ccdproc_ext.calibrate_frame`,
measures the sky, writes the output atomically and returns a `ScienceOutcome`. Tasks and
outcomes are small picklable dataclasses, so `reduce_night` can hand them to this
process, to its own worker processes, or to any `concurrent.futures.Executor` (a
``dask.distributed`` client's ``get_executor()``).

Masters are read once per process and prepared once (the dark scaled, the flat
normalised): `prepare_masters` does it in the planning process before worker processes
are forked, so that they inherit them.
"""

import multiprocessing
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.stats import SigmaClip, sigma_clipped_stats
from photutils.background import Background2D, MedianBackground

from ._warnings import CaughtWarnings
from .calibrate import calibrate_frame
from .exceptions import CcdprocExtError, InternalError, OutputError
from .masters import MasterFrame
from .outputs import file_stamp, up_to_date, write_atomic
from .raw import _read_frame_and_checksum

__all__ = ["MasterRef", "ScienceOutcome", "ScienceTask", "process_context", "run_task",
           "sky_statistics"]


@dataclass(frozen=True)
class MasterRef:
    """A master file as a task sees it: where it is and what it must still be."""

    path: str
    checksum: str
    stamp: tuple

    @classmethod
    def of(cls, path, checksum):
        return cls(str(path), checksum, tuple(file_stamp(path)))


@dataclass(frozen=True)
class ScienceTask:
    """One science frame to calibrate."""

    raw_path: Path
    output: Path
    profile: object
    masters: dict  # kind ("bias", "dark", "flat") -> MasterRef
    dark_scale: float
    recipe: str
    gain_correct: bool = False
    create_deviation: bool = False
    write_uncertainty: bool = False
    dtype: object = np.float32

    @property
    def keeps_uncertainty(self):
        return bool(self.write_uncertainty or self.create_deviation)


@dataclass(frozen=True)
class ScienceOutcome:
    """What the night records of a calibrated science frame, read from its header."""

    status: str  # "written" or "up to date"
    sky_level: float = np.nan
    sky_noise: float = np.nan
    n_saturated: int = -1
    n_masked: int = -1
    notes: tuple = field(default=())  # (kind, words)

    @classmethod
    def from_header(cls, status, header, notes=()):
        notes = list(notes)
        if header.get("NNANPIX", 0):
            notes.insert(0, ("DataQualityWarning", f"{header['NNANPIX']} pixel(s) of the raw "
                                                   "frame were NaN or infinite, masked"))
        return cls(status, header.get("SKYLEVEL", np.nan), header.get("SKYNOISE", np.nan),
                   header.get("NSATUR", -1), header.get("NMASKED", -1), tuple(notes))


# ------------------------------------------------------------------- master cache
#: Masters prepared for science frames in this process: (path, checksum, scale,
#: uncertainty) -> MasterFrame. Filled before worker processes are forked.
_MASTER_CACHE = {}
_MASTER_CACHE_SIZE = 16
_MASTER_CACHE_LOCK = threading.Lock()


def clear_master_cache():
    _MASTER_CACHE.clear()


def prepared_master(ref, profile, scale, keep_uncertainty, *, loaded=None):
    """A master read once per process, scaled once, stripped of what is not needed.

    The checksum is part of the key, and the file's size and modification time must
    still be those of ``ref``: a master rewritten on disk is not used unnoticed.
    """
    key = (ref.path, ref.checksum, scale, keep_uncertainty)
    with _MASTER_CACHE_LOCK:  # thread executors share this process's cache
        master = _MASTER_CACHE.get(key)
    if master is None:
        if tuple(file_stamp(ref.path)) != tuple(ref.stamp):
            raise OutputError(f"{ref.path}: the master changed while the night was reduced")
        master = loaded if loaded is not None else \
            MasterFrame.of(ref.path, profile, checksum=ref.checksum)
        if not keep_uncertainty:
            master = master.without_uncertainty()
        master = master.scaled(scale)
        with _MASTER_CACHE_LOCK:
            while len(_MASTER_CACHE) >= _MASTER_CACHE_SIZE:
                _MASTER_CACHE.pop(next(iter(_MASTER_CACHE)))
            master = _MASTER_CACHE.setdefault(key, master)
    return master


def _scale_of(task, kind):
    return float(task.dark_scale) if kind == "dark" else 1.0


def prepare_masters(tasks, built):
    """Read, scale and prepare every master of ``tasks`` in this process, once.

    ``built`` maps master names to the `MasterFrame` already in memory. Worker processes
    forked afterwards inherit the prepared masters instead of reading them again.
    """
    clear_master_cache()
    for task in tasks:
        for kind, ref in task.masters.items():
            keep = task.keeps_uncertainty
            master = prepared_master(ref, task.profile, _scale_of(task, kind), keep,
                                     loaded=None if keep else built[Path(ref.path).stem])
            if not keep:  # what calibrate_frame will use, computed once
                master.prepare(task.dtype, flat=kind == "flat")


def process_context():
    """How worker processes start.

    On Linux before Python 3.12, by fork: workers inherit the imported modules and the
    prepared masters. From 3.12 on, forking a process that runs threads (a progress
    bar's monitor, say) is deprecated: a fork server is used, which imports this module
    once; each worker then reads the masters itself.
    """
    if sys.platform.startswith("linux") and sys.version_info < (3, 12):
        return multiprocessing.get_context("fork")
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context()


# --------------------------------------------------------------------- the task
def run_task(task, *, overwrite=True):
    """Calibrate one science frame; returns a `ScienceOutcome`.

    The package's warnings become notes instead of being lost in a worker process. An
    error that is not the package's own becomes an `~ccdproc_ext.InternalError` carrying
    the traceback's text (tracebacks do not travel back from worker processes).
    """
    if not overwrite and up_to_date(task.output, task.recipe):
        return ScienceOutcome.from_header("up to date", fits.getheader(task.output))
    try:
        with CaughtWarnings() as caught:
            header = _calibrate(task)
    except CcdprocExtError:
        raise
    except Exception as err:  # reported as a problem, not a crash
        internal = InternalError(f"unexpected {type(err).__name__}: {err}")
        internal.details = traceback.format_exc()
        raise internal from None
    # NaN pixels are noted from the header (NNANPIX), as for a frame found up to date.
    notes = [(type(message).__name__, without_path(message)) for message in caught.ours
             if "NaN or infinite" not in str(message)]
    return ScienceOutcome.from_header("written", header, notes)


def _calibrate(task):
    masters = {kind: prepared_master(ref, task.profile, _scale_of(task, kind),
                                     task.keeps_uncertainty)
               for kind, ref in task.masters.items()}
    raw, raw_checksum = _read_frame_and_checksum(task.raw_path, task.profile, dtype=task.dtype)
    calibrated = calibrate_frame(
        raw, task.profile, master_bias=masters.get("bias"), master_dark=masters.get("dark"),
        master_flat=masters.get("flat"), scale_dark=False, gain_correct=task.gain_correct,
        create_deviation=task.create_deviation, dtype=task.dtype,
        name=Path(task.raw_path).name)
    mask = calibrated.mask
    n_masked = 0 if mask is None else int(np.count_nonzero(mask))
    sky, noise = sky_statistics(calibrated.data, mask if n_masked else None)
    header = calibrated.meta
    header["RAWFILE"] = (Path(task.raw_path).name, "raw frame this was calibrated from")
    header["RAWSUM"] = (raw_checksum[:16], "BLAKE2b of the raw file (first 16 hex)")
    if np.isfinite(sky) and np.isfinite(noise):
        header["SKYLEVEL"] = (round(sky, 4), "median sky level, sources masked")
        header["SKYNOISE"] = (round(noise, 4), "sky noise (rms), sources masked")
    header["NMASKED"] = (n_masked, "masked pixels (extension MASK)")
    header["RECIPE"] = (task.recipe, "hash of the inputs and settings")
    write_atomic(calibrated, task.output, dtype=task.dtype, uncertainty=task.write_uncertainty,
                 mask=task.write_uncertainty or n_masked > 0)
    return header


def without_path(err):
    """An error's words without the full path of the file it starts with."""
    text = str(err)
    head, sep, rest = text.partition(": ")
    return rest if sep and "/" in head.replace("\\", "/") else text


# ------------------------------------------------------------------ sky statistics
#: Sky statistics look at about this many pixels: a regular subsample of large frames.
_SKY_SAMPLE_PIXELS = 1 << 17


def sky_statistics(data, mask=None):
    """Sky level and noise of a calibrated frame, sources and masked pixels left out.

    Large frames are subsampled on a regular grid (every ``step``-th row and column):
    the sky's level and per-pixel noise are the same in the subsample, at a fraction of
    the cost of photutils' background meshes over every pixel.
    """
    step = max(1, int(np.ceil(np.sqrt(data.size / _SKY_SAMPLE_PIXELS))))
    data = data[::step, ::step]
    mask = None if mask is None else mask[::step, ::step]
    ny, nx = data.shape
    box = max(8, min(64, ny // 4, nx // 4))
    bad = ~np.isfinite(data)
    if mask is not None:
        bad |= mask
    if bad.all():
        return np.nan, np.nan
    try:
        # The default rms estimator is the sigma-clipped standard deviation.
        background = Background2D(data, box, filter_size=3, sigma_clip=SigmaClip(sigma=3.0),
                                  bkg_estimator=MedianBackground(),
                                  mask=bad if bad.any() else None)
        return float(background.background_median), float(background.background_rms_median)
    except ValueError:
        _, median, std = sigma_clipped_stats(data, mask=bad, sigma=3.0, maxiters=5)
        return float(median), float(std)
