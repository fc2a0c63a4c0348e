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

Each output's ``MASK`` extension (written when any pixel is masked) holds the bits of
`ccdproc_ext.quality.MASK_BITS`, their meaning in its header (``MASKB1 = 'saturated'``
...): saturated and not-finite pixels of the raw frame, pixels of the bad-pixel mask
(hot: bad pixel; low in the flat: low flat) and masked in the master bias or dark (bad
pixel) or flat (low flat), and cosmic-ray hits.
"""

import dataclasses
import multiprocessing
import sys
import threading
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.stats import SigmaClip, sigma_clipped_stats
from photutils.background import Background2D, MedianBackground

from ._allocator import freed_memory_reused
from ._warnings import CaughtWarnings
from .bpm import BPM_HOT, BPM_LOW, BPM_USER
from .calibrate import calibrate_frame, raw_mask_bits
from .cosmic_rays import cosmic_ray_settings, detect_cosmic_rays, noise_model
from .exceptions import CcdprocExtError, CcdprocExtWarning, HeaderError, InternalError, OutputError
from .extensions import (
    check_extensions_readable,
    check_same_extensions,
    detector_extensions,
    file_header,
    primary_header,
    read_extension,
    write_extensions,
)
from .log import without_path
from .master_frame import extensions_of, load_master
from .outputs import file_stamp, frame_hdus, up_to_date, write_hdus
from .plans import EDIT_CARD
from .provenance import file_name_value, mark_cosmic_rays, mark_mask_bits, set_file_name
from .quality import MASK_BITS, NOT_FINITE, SATURATED, mask_bits, trimmed_like
from .raw import file_checksum, read_frame_and_checksum

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
    masters: dict  # kind ("bias", "dark", "flat", and "bpm": bad pixels) -> MasterRef
    dark_scale: float
    recipe: str
    gain_correct: bool = False
    create_deviation: bool = False
    write_uncertainty: bool = False
    dtype: object = np.float32
    #: False, True (find and mask cosmic-ray hits) or "clean" (and replace them).
    cosmic_rays: object = False
    #: What the user's plan changed for this frame (``PLANEDIT`` of its header), or "".
    plan_edit: str = ""

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
    n_bad_pixels: int = 0
    n_cosmic_rays: int = -1  # -1: not searched

    @classmethod
    def from_header(cls, status, header, notes=()):
        notes = list(notes)
        if header.get("NNANPIX", 0):
            notes.insert(0, ("DataQualityWarning", f"{header['NNANPIX']} pixel(s) of the raw "
                                                   "frame were NaN or infinite, masked"))
        return cls(status, header.get("SKYLEVEL", np.nan), header.get("SKYNOISE", np.nan),
                   header.get("NSATUR", -1), header.get("NMASKED", -1), tuple(notes),
                   header.get("NBADPIX", 0), header.get("NCRPIX", -1))


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
            load_master(ref.path, profile, checksum=ref.checksum)
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
            loaded = None if keep else built.get(Path(ref.path).stem)
            master = prepared_master(ref, task.profile, _scale_of(task, kind), keep,
                                     loaded=loaded)
            if not keep and kind != "bpm":  # what calibrate_frame will use, computed once
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
        with CaughtWarnings() as caught, freed_memory_reused():
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
    name = Path(task.raw_path).name
    extensions = detector_extensions(task.raw_path, task.profile)
    for master in masters.values():
        check_same_extensions(name, extensions, extensions_of(master),
                              f"its master {master.name}", path=task.raw_path)
    if extensions:
        return _calibrate_extensions(task, masters, extensions)
    raw, raw_checksum = read_frame_and_checksum(task.raw_path, task.profile, dtype=task.dtype)
    calibrated, bits, _, _ = _calibrated_image(raw, task.profile, masters, task, name)
    header = calibrated.meta
    set_file_name(header, "RAWFILE", name, "raw frame this was calibrated from")
    header["RAWSUM"] = (raw_checksum[:16], "BLAKE2b of the raw file (first 16 hex)")
    header["RECIPE"] = (task.recipe, "hash of the inputs and settings")
    _write(calibrated, bits, task, with_mask=task.write_uncertainty or header["NMASKED"] > 0)
    return header


def _calibrated_image(raw, profile, masters, task, where):
    """One image calibrated with its masters (through ``profile``), its cosmic rays found
    if the task asks, and its ``MASK`` bits: ``(calibrated, bits, sky, noise)``, the sky
    level and noise also in its header (``SKYLEVEL``, ``SKYNOISE``), with ``NMASKED``."""
    calibrated = calibrate_frame(
        raw, profile, master_bias=masters.get("bias"), master_dark=masters.get("dark"),
        master_flat=masters.get("flat"), scale_dark=False, gain_correct=task.gain_correct,
        create_deviation=task.create_deviation, dtype=task.dtype, name=where,
        bad_pixel_mask=masters.get("bpm"))
    mask = calibrated.mask
    sky, noise = sky_statistics(calibrated.data,
                                mask if mask is not None and mask.any() else None)
    hits = None
    if task.cosmic_rays:
        own_task = task if profile is task.profile else dataclasses.replace(task,
                                                                             profile=profile)
        calibrated, hits = _cosmic_rays(calibrated, raw.meta, own_task, sky, noise, where)
    bits = _mask_bits(calibrated, raw, profile, masters, hits, where)
    header = calibrated.meta
    if np.isfinite(sky) and np.isfinite(noise):
        header["SKYLEVEL"] = (round(sky, 4), "median sky level, sources masked")
        header["SKYNOISE"] = (round(noise, 4), "sky noise (rms), sources masked")
    header["NMASKED"] = (int(np.count_nonzero(bits)), "masked pixels (extension MASK)")
    return calibrated, bits, sky, noise


def _calibrate_extensions(task, masters, extensions):
    """`_calibrate` for a multi-extension frame: each extension calibrated with the same
    extension of each master, through the profile as it applies to it; one output file
    with the raw file's extensions. The primary header holds the raw file's own cards,
    the masters used, and the sums (``NMASKED``, ``NSATUR`` ...) and mean sky of the
    extensions; each extension's header its own."""
    name = Path(task.raw_path).name
    check_extensions_readable(task.raw_path, extensions)
    frames, masks, counts, skies = {}, {}, {}, []
    for extension in extensions:
        profile = task.profile.for_extension(extension)
        own = {kind: master.extension(extension, file=name) for kind, master in
               masters.items()}
        raw = read_extension(task.raw_path, extension, task.profile, dtype=task.dtype)
        calibrated, bits, sky, noise = _calibrated_image(raw, profile, own, task,
                                                         f"{name}[{extension}]")
        header = calibrated.meta
        if np.isfinite(sky) and np.isfinite(noise):
            skies.append((sky, noise))
        for key in ("NMASKED", "NSATUR", "NNANPIX", "NBADPIX", "NCRPIX"):
            if key in header:
                counts[key] = counts.get(key, 0) + int(header[key])
        frames[extension], masks[extension] = calibrated, bits
    first = next(iter(frames.values())).meta
    cards = {"RAWFILE": (file_name_value(name), "raw frame this was calibrated from"),
             "RAWSUM": (file_checksum(task.raw_path)[:16],
                        "BLAKE2b of the raw file (first 16 hex)"),
             "RECIPE": (task.recipe, "hash of the inputs and settings")}
    if skies:
        cards["SKYLEVEL"] = (round(float(np.mean([s for s, _ in skies])), 4),
                             "mean of the extensions' sky levels")
        cards["SKYNOISE"] = (round(float(np.mean([n for _, n in skies])), 4),
                             "mean of the extensions' sky noise")
    cards.update({key: (value, "sum over the extensions") for key, value in counts.items()})
    header = file_header(primary_header(task.raw_path), first, **cards)
    _mark_plan_edit(header, task.plan_edit)
    for frame in frames.values():
        frame.meta["RAWFILE"], frame.meta["RECIPE"] = cards["RAWFILE"], cards["RECIPE"]
    with_mask = task.write_uncertainty or counts.get("NMASKED", 0) > 0
    write_extensions(Path(task.output), header, frames, dtype=task.dtype,
                     uncertainty=task.write_uncertainty, masks=masks if with_mask else None,
                     mask_bits=MASK_BITS)
    return header


def _write(calibrated, bits, task, *, with_mask):
    """Write the output atomically (through a temporary name and a rename), its ``MASK``
    extension the bits, their meaning in its header."""
    hdus = frame_hdus(calibrated, dtype=task.dtype, uncertainty=task.write_uncertainty)
    _mark_plan_edit(hdus[0].header, task.plan_edit)
    if with_mask:
        hdus.append(fits.ImageHDU(np.asarray(bits, dtype=np.uint8), name="MASK"))
        mark_mask_bits(hdus[-1].header, MASK_BITS)
    write_hdus(hdus, Path(task.output))


def _mark_plan_edit(header, edit):
    """Write what the user's plan changed for the frame (``PLANEDIT``), if anything; a
    long edit continues on CONTINUE cards, where a comment would be cut."""
    if edit:
        header[EDIT_CARD] = (edit, "changed in the user's plan") if len(edit) <= 36 else edit


def _mask_bits(calibrated, raw, profile, masters, hits, name):
    """The ``MASK`` bits of a calibrated frame (see `ccdproc_ext.quality.mask_bits`)."""
    shape = calibrated.shape
    raw_bits = trimmed_like(raw_mask_bits(raw, profile, name=name), calibrated.meta, shape)
    if raw_bits is None:  # a geometry the TRIM card does not give: "bad pixel" below
        raw_bits = np.zeros(shape, np.uint8)
    in_master = np.zeros(shape, bool)
    for kind in ("bias", "dark"):
        master = masters.get(kind)
        if master is not None and master.ccd.mask is not None:
            in_master |= np.asarray(master.ccd.mask, bool)
    flat = masters.get("flat")
    low = np.zeros(shape, bool) if flat is None or flat.ccd.mask is None else \
        np.asarray(flat.ccd.mask, bool).copy()
    bpm = masters.get("bpm")
    if bpm is not None:
        values = np.asarray(bpm.ccd.data).astype(np.uint8)
        in_master |= (values & BPM_HOT) != 0
        low |= (values & BPM_LOW) != 0
        in_master |= (values & BPM_USER) != 0
    return mask_bits(shape, saturated=(raw_bits & SATURATED) != 0,
                     not_finite=(raw_bits & NOT_FINITE) != 0, bad_pixel=in_master,
                     cosmic_ray=hits, low_flat=low, masked=calibrated.mask)


def _cosmic_rays(calibrated, raw_header, task, sky, noise, name):
    """Cosmic-ray hits found (and replaced, for ``"clean"``) in a calibrated frame.

    L.A.Cosmic is given the profile's gain and read noise (measured from the sky when the
    profile gives none, with a warning that becomes a note), the saturation level, the
    FWHM of the frame's stars (`~ccdproc_ext.cosmic_rays.DEFAULT_FWHM` when too few can be
    measured) and the contrast limit that FWHM calls for
    (`~ccdproc_ext.cosmic_rays.cosmic_ray_settings`).
    """
    profile = task.profile
    in_electrons = calibrated.unit is not None and calibrated.unit.is_equivalent("electron")
    given = {}  # the profile's numbers (float), None when it gives none or no usable one
    for what, read in (("gain", profile.gain), ("read_noise", profile.read_noise),
                       ("saturation", profile.saturation)):
        try:
            value = read(raw_header, path=name, required=False)
        except HeaderError:  # not a number, or out of range: as if not given
            value = None
        given[what] = None if value is None else float(value.value)
    adu_gain = given["gain"]
    gain, read_noise, assumed = noise_model(
        sky, noise, 1.0 if in_electrons else adu_gain, given["read_noise"])
    if assumed:
        warnings.warn(CcdprocExtWarning(f"{name}: cosmic rays: {assumed}"), stacklevel=2)
    saturation = given["saturation"]
    if saturation is not None and in_electrons:
        saturation = None if adu_gain is None else saturation * adu_gain
    settings = cosmic_ray_settings(calibrated, gain=gain, read_noise=read_noise,
                                   saturation=saturation, sky=sky, noise=noise)
    clean = str(task.cosmic_rays).lower() == "clean"
    result, hits = detect_cosmic_rays(
        calibrated, gain=settings.gain, read_noise=settings.read_noise,
        saturation=settings.saturation, psffwhm=settings.fwhm, clean=clean,
        sigclip=settings.sigclip, objlim=settings.objlim, fsmode=settings.fsmode,
        niter=settings.niter)
    mark_cosmic_rays(result.meta, int(np.count_nonzero(hits)), clean=clean,
                     settings=settings)
    return result, hits


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
    if bad.any():
        # Masked either way; but values that are not finite make astropy's sigma clipping
        # warn, and photutils' silencing of that warning is not thread-safe before
        # Python 3.14 (calibrating frames in threads, the warning could escape).
        data = np.where(bad, 0.0, data)
    try:
        # The default rms estimator is the sigma-clipped standard deviation.
        background = Background2D(data, box, filter_size=3, sigma_clip=SigmaClip(sigma=3.0),
                                  bkg_estimator=MedianBackground(),
                                  mask=bad if bad.any() else None)
        return float(background.background_median), float(background.background_rms_median)
    except ValueError:
        _, median, std = sigma_clipped_stats(data, mask=bad, sigma=3.0, maxiters=5)
        return float(median), float(std)
