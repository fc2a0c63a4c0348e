"""A master as calibration uses it: read once, prepared once per process.

`MasterFrame` is a master calibration frame of one image with the name and checksum its
provenance records; `MultiMaster` holds the `MasterFrame` of each extension of a
multi-extension master. `load_master` reads either from a file (through
`ccdproc_ext.raw`), and `MasterFrame.prepare` makes once what ccdproc's functions are
given to calibrate with it.
"""

import dataclasses
import functools
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData

from ._raw_parts import read_extension_images
from .exceptions import DataQualityError, HeaderError
from .extensions import check_same_extensions, detector_extensions, extension_index
from .raw import file_checksum, read_ccd

__all__ = ["MasterFacts", "MasterFrame", "MultiMaster", "extensions_of", "load_master",
           "read_master"]


@dataclass(frozen=True)
class MasterFrame:
    """A master calibration frame, with the name and checksum recorded in provenance.

    `MasterFrame.of` is the one way a master becomes one (from a path, a
    `~astropy.nddata.CCDData` or a `MasterFrame`); `prepare` computes once what
    calibrating with it needs. `~ccdproc_ext.calibrate_frame` accepts any of the three.
    """

    ccd: CCDData
    name: str
    checksum: str = ""
    exposure: float | None = None
    #: Factor the dark was already scaled by (see `scaled`).
    scale: float = 1.0

    @classmethod
    def of(cls, master, profile=None, *, path=None, checksum=None):
        """``master`` as a `MasterFrame`; ``None`` stays ``None``, a `MasterFrame` itself.

        Parameters
        ----------
        master : path, `~astropy.nddata.CCDData`, `MasterFrame` or None
            A path is read (any FITS image; the unit from ``BUNIT``, else the profile's)
            and its checksum (BLAKE2b, first 16 hex) computed, unless given.
        profile : `~ccdproc_ext.InstrumentProfile` or None, optional
            Reads the exposure time (a dark's) and the default unit.
        path : str, `pathlib.Path` or None, optional
            For a `~astropy.nddata.CCDData`: the file it was written to, which names it and
            gives its checksum. Default: named by its ``FILENAME`` card, no checksum.
        checksum : str or None, optional
            The file's checksum when the caller knows it already (spares reading the
            file twice).
        """
        if master is None or isinstance(master, MasterFrame):
            return master
        if isinstance(master, CCDData):
            path = None if path is None else Path(path)
            name = path.name if path is not None else \
                str(master.meta.get("FILENAME", "in-memory CCDData"))
            if checksum is None and path is not None:
                checksum = file_checksum(path)[:16]
            return cls(ccd=master, name=name, checksum=checksum or "",
                       exposure=_exposure(master.meta, profile, path or name))
        path = Path(master)
        ccd = read_ccd(path, default_unit=profile.unit if profile else "adu")
        if checksum is None:
            checksum = file_checksum(path)[:16]
        return cls(ccd=ccd, name=path.name, checksum=checksum,
                   exposure=_exposure(ccd.meta, profile, path))

    @classmethod
    def load(cls, path, profile=None, *, checksum=None):
        """The master written at ``path``: `MasterFrame.of` for a file."""
        return cls.of(Path(path), profile, checksum=checksum)

    def scaled(self, factor):
        """This dark multiplied by ``factor``, once for every frame of one exposure time.

        The multiplication is `astropy.nddata.CCDData.multiply`, in the master's own type
        (float32 for ccdproc_ext's masters); the result's exposure is scaled too, so it is
        subtracted as it is (``ccdproc.subtract_dark(..., scale=False)``), and its `scale`
        is the factor written in ``DARKSCL``. Asked again for the same factor, the same
        object is returned.
        """
        factor = float(factor)
        if factor == 1.0:
            return self
        with _PREPARE_LOCK:
            cached = self._prepared.get(("scaled", factor))
        if cached is None:
            ccd = self.ccd.multiply(factor)
            cached = MasterFrame(ccd=ccd, name=self.name, checksum=self.checksum,
                                 exposure=None if self.exposure is None
                                 else self.exposure * factor,
                                 scale=self.scale * factor)
            with _PREPARE_LOCK:
                cached = self._prepared.setdefault(("scaled", factor), cached)
        return cached

    def without_uncertainty(self):
        """The same master without uncertainty, for frames calibrated without one.

        Its mask is kept when it masks any pixel (those pixels are masked in every frame
        calibrated with it) and dropped otherwise.
        """
        mask = self.ccd.mask
        keep_mask = mask is not None and bool(np.any(mask))
        if self.ccd.uncertainty is None and (mask is None or keep_mask):
            return self
        ccd = CCDData(self.ccd.data, unit=self.ccd.unit, meta=self.ccd.meta,
                      mask=mask if keep_mask else None)
        return MasterFrame(ccd=ccd, name=self.name, checksum=self.checksum,
                           exposure=self.exposure, scale=self.scale)

    def prepare(self, dtype=np.float32, *, flat=False, min_value=None):
        """What ccdproc's functions are given to calibrate with this master, made once.

        Parameters
        ----------
        dtype : numpy dtype, optional
            The pixel type of the frames calibrated. Default is ``float32``.
        flat : bool, optional
            This master is a flat: it is normalised (see below). Default is ``False``.
        min_value : float or None, optional
            For a flat: ``min_value`` of `ccdproc.flat_correct`, the value pixels of the
            flat below it are raised to before normalising. Default is ``None``.

        Returns
        -------
        `~astropy.nddata.CCDData`
            For a bias or dark, the master with its pixels in ``dtype``: the ``master``
            of `ccdproc.subtract_bias` or `ccdproc.subtract_dark`. For a flat, the flat
            that `ccdproc.flat_correct` divides a frame by: values below ``min_value``
            raised to it, divided by its ``FLATMEAN`` card (a master flat of
            ccdproc_ext: the mean of its good pixels as written), else by the mean of its
            good pixels, else (none masked) by its mean; masked pixels set to 1. Given to
            ``ccdproc.flat_correct(frame, prepared, norm_value=1)`` it gives, to the bit,
            ``ccdproc.flat_correct(frame, flat, min_value, norm_value)``: once per
            master, not once per frame. Divided by a power of two (a ``FLATMEAN`` of 1)
            it is in ``dtype``, exactly; by any other level, float64 (ccdproc's
            division by a float64 level). A float32 frame is divided by a float32 flat
            in float32: the float64 quotient of two float32 numbers, rounded to float32,
            is their float32 quotient, to the bit.
            The same object is returned for the same arguments: do not change it.
        """
        key = ("flat", min_value, np.dtype(dtype)) if flat else ("data", np.dtype(dtype))
        with _PREPARE_LOCK:
            prepared = self._prepared.get(key)
        if prepared is None:
            prepared = self._normalised(dtype, min_value) if flat else \
                _in_type(self.ccd, dtype)
            with _PREPARE_LOCK:
                prepared = self._prepared.setdefault(key, prepared)
        return prepared

    @functools.cached_property
    def _prepared(self):
        # (kind, ...) -> what `prepare` and `scaled` made; filled once per key
        return {}

    def _normalised(self, dtype, min_value):
        """The steps of `ccdproc.flat_correct` that depend on the flat alone."""
        flat = _in_type(self.ccd, dtype)
        if min_value is not None:
            flat = flat.copy()
            flat.data[flat.data < min_value] = min_value
        norm_value = self._level()
        if norm_value is None:
            norm_value = _finite_mean(flat.data)
        if flat.data.dtype.kind == "f" and np.frexp(norm_value)[0] == 0.5:
            # By a power of two (a FLATMEAN of 1): exact in the flat's own type, which
            # ccdproc's float64 division by it would only widen.
            norm_value = np.asarray(norm_value, dtype=flat.data.dtype)[()]
        normed = flat.divide(norm_value * flat.unit)
        if normed.mask is not None and normed.mask.any():
            normed.data[normed.mask] = 1.0  # as flat_correct does: masked pixels divide by 1
        return normed

    def _level(self):
        """The level this flat is divided by: its ``FLATMEAN`` card when it has a usable
        one; else the mean of its good, finite pixels (a masked corner does not change
        the level of the frame), or ``None`` (the mean of every finite pixel) when none
        is masked."""
        norm_value = _flat_mean_card(self.ccd.meta)
        mask = self.ccd.mask
        if norm_value is not None or mask is None or not np.any(mask):
            return norm_value
        good = ~mask & np.isfinite(self.ccd.data)
        if not good.any():
            raise DataQualityError(f"master flat {self.name}: every pixel is masked or "
                                   "not finite")
        return float(np.mean(self.ccd.data[good], dtype=np.float64))


#: Guards the prepared pixels of masters shared by the threads that calibrate frames.
_PREPARE_LOCK = threading.Lock()


def _exposure(header, profile, where):
    """A master's exposure time through the profile, or ``None`` when it gives none."""
    if profile is None:
        return None
    try:
        return profile.exposure_time(header, path=where, required=False)
    except HeaderError:  # not a number, or negative: as if not given
        return None


def _flat_mean_card(header):
    """The ``FLATMEAN`` of a master flat's header, or ``None`` without a usable one."""
    value = header.get("FLATMEAN")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if np.isfinite(value) and value > 0 else None


def _finite_mean(data):
    """The mean of the finite pixels of ``data`` (``data.mean()``, the same number, when
    all are): a few NaN must not make a flat's level NaN."""
    finite = np.isfinite(data)
    return data.mean() if finite.all() else data[finite].mean()


def _in_type(ccd, dtype):
    """``ccd`` with its pixels in ``dtype`` (itself when they are)."""
    if ccd.data.dtype == dtype:
        return ccd
    converted = ccd.copy()
    converted.data = converted.data.astype(dtype)
    return converted


def extensions_of(master):
    """The extensions of a master (`MultiMaster` or `MasterFacts`), ``()`` for one of one
    image."""
    if isinstance(master, MasterFacts):
        return master.extensions
    return master.names if isinstance(master, MultiMaster) else ()


@dataclasses.dataclass(frozen=True)
class MasterFacts:
    """What a process that did not build a master keeps of it: its file's name and
    checksum and its extensions, not its pixels (a master built by a task on an
    executor).

    Attributes
    ----------
    name : str
        The file name.
    checksum : str
        The file's checksum (BLAKE2b, first 16 hex), as `MasterFrame` has it.
    extensions : tuple of str
        The extensions of a master of multi-extension frames, ``()`` for one image.
    """

    name: str
    checksum: str
    extensions: tuple = ()

    @classmethod
    def of(cls, master):
        """The facts of a `MasterFrame` or `MultiMaster`."""
        return cls(master.name, master.checksum, tuple(extensions_of(master)))


@dataclasses.dataclass(frozen=True)
class MultiMaster:
    """A master of a multi-extension detector: one `~ccdproc_ext.MasterFrame` per
    extension, all named after the one file (so the provenance of a calibrated extension
    names the file and its checksum).

    It answers what the night asks of a master (`without_uncertainty`, `scaled`,
    `prepare`) for every extension at once, and `extension` gives one.
    """

    frames: dict  # extension name -> MasterFrame
    name: str
    checksum: str = ""
    primary_header: fits.Header = None

    @property
    def names(self):
        """The extensions, in the order of the file."""
        return tuple(self.frames)

    @property
    def ccd(self):
        """The first extension's frame (what a report of one image shows)."""
        return next(iter(self.frames.values())).ccd

    @property
    def exposure(self):
        return next(iter(self.frames.values())).exposure

    def extension(self, name, *, file=None):
        """The `~ccdproc_ext.MasterFrame` of extension ``name``.

        Raises
        ------
        CalibrationMatchError
            If the master has no such extension (naming ``file``, the frame calibrated).
        """
        try:
            return self.frames[name]
        except KeyError:
            check_same_extensions(file or "frame", (name,), self.names,
                                  f"master {self.name}")
            raise

    def _each(self, method, *args, **kwargs):
        frames = {n: getattr(f, method)(*args, **kwargs) for n, f in self.frames.items()}
        return dataclasses.replace(self, frames=frames)

    def without_uncertainty(self):
        return self._each("without_uncertainty")

    def scaled(self, factor):
        return self._each("scaled", factor)

    def prepare(self, dtype=np.float32, *, flat=False, min_value=None):
        return {n: f.prepare(dtype, flat=flat, min_value=min_value)
                for n, f in self.frames.items()}


def read_master(path, profile=None, *, checksum=None):
    """A master file: a `MultiMaster` when it has detector extensions, else ``None``
    (a master of one image, read by `MasterFrame.of`)."""
    path = Path(path)
    names = detector_extensions(path)
    if not names:
        return None
    if checksum is None:
        checksum = file_checksum(path)[:16]
    primary, images = read_extension_images(
        path, {name: extension_index(name) for name in names},
        default_unit=profile.unit if profile else "adu")
    frames = {name: MasterFrame(ccd=ccd, name=path.name, checksum=checksum,
                                exposure=_exposure(ccd.meta, profile, path))
              for name, ccd in images.items()}
    return MultiMaster(frames=frames, name=path.name, checksum=checksum,
                       primary_header=primary)


def load_master(path, profile=None, *, checksum=None):
    """A master file as the night uses it: a `MultiMaster` for a multi-extension file,
    else a `MasterFrame`."""
    master = read_master(path, profile, checksum=checksum)
    return master if master is not None else MasterFrame.of(path, profile, checksum=checksum)
