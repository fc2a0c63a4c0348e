"""Master bias, dark and flat frames.

Each raw calibration frame goes through the profile's overscan and trim (and, for darks
and flats, the lower masters) with `~ccdproc_ext.calibrate_frame`, then the frames are
combined with `ccdproc_ext.combine`. The default combination is the CCD Data Reduction
Guide's: an average after sigma clipping around the median with a MAD-based deviation.

The master's header lists the files it was made from (``IMCMB001`` ..., as IRAF's
imcombine does), their number (``NCOMBINE``), the method (``COMBMETH``) and
``COMBINED = True``. A flat is normalised to a mean of 1 and its normalisation value is
written as ``FLATNORM``.
"""

import logging
from pathlib import Path

import numpy as np
from astropy.nddata import CCDData
from astropy.stats import mad_std

from .calibrate import MasterFrame, calibrate_frame

# COMBINE-PENDING from .combine import combine
from .exceptions import CcdprocExtError
from .io import read_frame, write_atomic
from .profiles import get_profile

__all__ = ["DEFAULT_COMBINE", "make_master_bias", "make_master_dark", "make_master_flat"]

log = logging.getLogger(__name__)

#: The default combination of masters: the CCD Data Reduction Guide's choice.
DEFAULT_COMBINE = {
    "method": "average",
    "sigma_clip": True,
    "sigma_clip_low_thresh": 5,
    "sigma_clip_high_thresh": 5,
    "sigma_clip_func": np.ma.median,
    "sigma_clip_dev_func": mad_std,
}


def _frames(frames):
    """Turn paths, CCDData, or a collection into a list of (name, CCDData-or-path)."""
    from ccdproc import ImageFileCollection

    if isinstance(frames, ImageFileCollection):
        frames = [Path(frames.location or "", f) for f in frames.files]
    if isinstance(frames, str | Path | CCDData):
        frames = [frames]
    items = []
    for i, frame in enumerate(frames):
        if isinstance(frame, CCDData):
            items.append((str(frame.meta.get("FILENAME", f"frame {i + 1}")), frame))
        else:
            items.append((Path(frame).name, Path(frame)))
    if not items:
        raise CcdprocExtError("no frames to combine")
    return items


def _prepare(frames, profile, **calibration):
    prepared = []
    names = []
    for name, frame in frames:
        ccd = frame if isinstance(frame, CCDData) else read_frame(frame, profile)
        prepared.append(calibrate_frame(ccd, profile, name=name, **calibration))
        names.append(name)
    return names, prepared


def _combine(names, prepared, kind, combine_options):
    options = dict(DEFAULT_COMBINE)
    options.update(combine_options or {})
    options.setdefault("dtype", np.float32)
    if len(prepared) == 1:
        log.warning("master %s made from a single frame (%s): no rejection possible",
                    kind, names[0])
    from .combine import combine  # COMBINE-PENDING
    master = combine(prepared, **options)
    header = master.meta
    header["COMBINED"] = (True, "combined from several frames")
    header["NCOMBINE"] = (len(names), "number of frames combined")
    method = options["method"] + (" sigma-clipped" if options.get("sigma_clip") else "")
    header["COMBMETH"] = (method, "how the frames were combined")
    header["MASTTYPE"] = (kind, "kind of master calibration frame")
    for i, name in enumerate(names, start=1):
        header[f"IMCMB{i:03d}"] = (name, "combined file")
    return master


def _finish(master, output_file):
    if output_file is not None:
        output_file = Path(output_file)
        master.meta["FILENAME"] = output_file.name
        write_atomic(master, output_file, uncertainty=True, mask=True)
    return master


def make_master_bias(frames, profile="generic", *, combine_options=None, output_file=None):
    """Combine bias frames into a master bias.

    Parameters
    ----------
    frames : list of paths or `~astropy.nddata.CCDData`, or `~ccdproc.ImageFileCollection`
        The raw bias frames.
    profile : str or `~ccdproc_ext.InstrumentProfile`, optional
        Gives the overscan and trim. Default is ``"generic"``.
    combine_options : dict or None, optional
        Keyword arguments of `ccdproc_ext.combine` replacing the defaults
        (`DEFAULT_COMBINE`).
    output_file : str, `pathlib.Path` or None, optional
        Where to write the master (atomically, with its uncertainty and mask).

    Returns
    -------
    `~astropy.nddata.CCDData`
        The master bias, float32, with an uncertainty and a mask.
    """
    profile = get_profile(profile)
    names, prepared = _prepare(_frames(frames), profile)
    return _finish(_combine(names, prepared, "bias", combine_options),
                   output_file)


def make_master_dark(frames, profile="generic", *, master_bias=None, combine_options=None,
                     output_file=None):
    """Combine dark frames of one exposure time into a bias-subtracted master dark.

    Parameters
    ----------
    frames : list of paths or `~astropy.nddata.CCDData`, or `~ccdproc.ImageFileCollection`
        The raw darks, all of one exposure time.
    profile : str or `~ccdproc_ext.InstrumentProfile`, optional
        Default is ``"generic"``.
    master_bias : `CCDData`, path or None, optional
        Subtracted from each dark. Default is ``None`` (darks that include the bias).
    combine_options, output_file
        As for `make_master_bias`.

    Returns
    -------
    `~astropy.nddata.CCDData`
        The master dark in ADU for its exposure time (written in the profile's exposure
        keyword).
    """
    profile = get_profile(profile)
    items = _frames(frames)
    bias = MasterFrame.load(master_bias, profile) if isinstance(master_bias, str | Path) \
        else master_bias
    names, prepared = _prepare(items, profile, master_bias=bias)
    exposures = {profile.exposure_time(ccd.meta, path=name) for name, ccd in
                 zip(names, prepared, strict=True)}
    if len(exposures) > 1:
        raise CcdprocExtError(f"darks of several exposure times ({sorted(exposures)} s) "
                              "cannot be combined into one master dark")
    master = _combine(names, prepared, "dark", combine_options)
    return _finish(master, output_file)


def make_master_flat(frames, profile="generic", *, master_bias=None, master_dark=None,
                     scale_dark=None, combine_options=None, min_value=0.1, output_file=None):
    """Combine flat frames of one filter into a normalised master flat.

    Each flat is bias- and dark-corrected (the dark scaled by exposure time when the
    exposures differ and scaling is allowed), the flats are combined with inverse-median
    scaling, and the result is divided by its mean (written as ``FLATNORM``).

    Parameters
    ----------
    frames : list of paths or `~astropy.nddata.CCDData`, or `~ccdproc.ImageFileCollection`
        The raw flats of one filter.
    profile : str or `~ccdproc_ext.InstrumentProfile`, optional
        Default is ``"generic"``.
    master_bias, master_dark : `CCDData`, path or None, optional
        Lower masters. Default is ``None``.
    scale_dark : bool or None, optional
        See `~ccdproc_ext.calibrate_frame`.
    combine_options, output_file
        As for `make_master_bias`; the default adds ``scale`` (inverse median).
    min_value : float or None, optional
        Pixels of the normalised flat below this are masked. Default is 0.1.

    Returns
    -------
    `~astropy.nddata.CCDData`
        The master flat, mean 1, float32, with uncertainty and mask.
    """
    profile = get_profile(profile)
    def load(m):
        return (MasterFrame.load(m, profile) if isinstance(m, str | Path) else m)
    names, prepared = _prepare(_frames(frames), profile, master_bias=load(master_bias),
                               master_dark=load(master_dark), scale_dark=scale_dark)
    filters = {profile.filter_name(ccd.meta) for ccd in prepared}
    if len(filters) > 1:
        raise CcdprocExtError(f"flats of several filters ({', '.join(map(str, filters))}) "
                              "cannot be combined into one master flat")
    options = {"scale": _inverse_median}
    options.update(combine_options or {})
    master = _combine(names, prepared, "flat", options)
    good = ~master.mask if master.mask is not None else np.ones(master.shape, bool)
    norm = float(np.mean(master.data[good], dtype=np.float64))
    if not np.isfinite(norm) or norm <= 0:
        raise CcdprocExtError(f"master flat from {names[0]} ...: mean level {norm}, cannot "
                              "normalise")
    master.data = (master.data / norm).astype(np.float32)
    if master.uncertainty is not None:
        master.uncertainty.array = (master.uncertainty.array / norm).astype(np.float32)
    master.meta["FLATNORM"] = (norm, "the combined flat was divided by this")
    if min_value is not None:
        low = master.data < min_value
        master.mask = low if master.mask is None else (master.mask | low)
    return _finish(master, output_file)


def _inverse_median(data):
    return 1.0 / np.median(data)
