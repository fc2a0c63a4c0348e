"""Synthetic raw nights for any instrument profile, with the truth they were made from.

`simulate_night` writes bias, dark, flat and science frames the way the profile's camera
would: its header keywords and image-type words (or file names, for cameras that write no
image type), its overscan strip and trim section, its orientation. It returns a
`SimulatedNight` holding the truth in the science pixels (the trimmed region):

- ``bias``: the bias structure left after overscan subtraction (ADU);
- ``dark_current``: dark current per second, hot pixels included (ADU/s);
- ``flats``: the flat-field pattern per filter (vignetting, dust donuts, pixel response),
  normalised to a mean of 1;
- ``sky``: the true sky (background and stars, ADU) of each science frame, i.e. what a
  perfect reduction returns; ``cosmic_rays`` marks the pixels hit in each raw frame;
- ``hot_pixels``: the pixels whose dark current is 10 to 100 times the others';
- ``bad_calibrations``: the calibration frames spoiled on purpose (``bad_calibrations=``),
  each with what was done to it.

Tests, documentation examples and benchmarks all use it; sizes and counts are
parameters.

>>> import tempfile
>>> from ccdproc_ext.simulate import simulate_night
>>> with tempfile.TemporaryDirectory() as folder:
...     night = simulate_night(folder, "palomar-lfc", shape=(24, 2080), n_bias=3,
...                            dark_exposures=(30.0,), n_dark=3, filters=("R",), n_flat=3,
...                            n_science=2)
...     print(len(night.files), night.bias.shape)
11 (24, 2048)
"""

import dataclasses
import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time, TimeDelta

from .profiles import get_profile

__all__ = ["SimulatedNight", "simulate_night"]

_DEFAULT_GAIN = 1.5  # electron / adu, when the profile gives none
_DEFAULT_READ_NOISE = 8.0  # electron
_SECTION_WIDTH = 16  # overscan width written for cameras whose sections are header keywords
_AMPLIFIER_STEP = 75.0  # ADU between the offsets of one amplifier and the next
# Extensions of a multi-extension file: how the bias level, gain and read noise of the
# n-th differ from the first's (bias_level + n * step; gain times 1 + n * step ...).
_EXTENSION_BIAS_STEP = 150.0
_EXTENSION_GAIN_STEP = 0.2
_EXTENSION_NOISE_STEP = 0.1


@dataclass
class SimulatedNight:
    """The files of a simulated night and the truth they were made from.

    All images are in the science pixels (the trimmed region), in ADU, float64. For
    multi-extension files, each extension's truth is in `extensions`.
    """

    location: Path
    profile_name: str
    files: Table
    bias: np.ndarray
    dark_current: np.ndarray
    flats: dict = field(default_factory=dict)
    sky: dict = field(default_factory=dict)
    cosmic_rays: dict = field(default_factory=dict)
    hot_pixels: np.ndarray = None
    bad_calibrations: dict = field(default_factory=dict)
    overscan_levels: dict = field(default_factory=dict)
    gain: float = _DEFAULT_GAIN
    read_noise: float = _DEFAULT_READ_NOISE
    raw_shape: tuple = ()
    trim_slices: tuple = ()
    #: For a night of multi-extension files: the truth of each extension, by name (the
    #: fields above are the first extension's). Empty for files of one image.
    extensions: dict = field(default_factory=dict)

    @property
    def read_noise_adu(self):
        """Read noise in ADU."""
        return self.read_noise / self.gain

    def paths(self, image_type=None):
        """Full paths of the files, optionally of one type only."""
        rows = self.files if image_type is None else \
            self.files[self.files["type"] == image_type]
        return [self.location / name for name in rows["file"]]


def _section(text, shape):
    """Numpy slices of a FITS section (1-based, inclusive, ``*`` for a whole axis).

    The simulator reads the profile's fixed sections with this parser of its own, so that
    a bug in the package's parser shows up as a wrong reduction instead of being copied.
    """
    ny, nx = shape
    x_text, y_text = text.strip()[1:-1].split(",")

    def axis(part, length):
        part = part.strip()
        if part == "*":
            return slice(0, length)
        first, last = (int(n) for n in part.split(":"))
        return slice(first - 1, last)

    return axis(y_text, ny), axis(x_text, nx)


def _fits(rows, cols):
    """The FITS section of numpy slices: ``[x0:x1,y0:y1]``, 1-based and inclusive."""
    return f"[{cols.start + 1}:{cols.stop},{rows.start + 1}:{rows.stop}]"


@dataclass
class _Layout:
    """Where the simulator puts each amplifier's data and overscan in a raw frame."""

    data: list  # (rows, cols) of each amplifier's data
    overscans: list  # (rows, cols) or None, per amplifier
    trim: tuple  # (rows, cols): what a reduction keeps
    cards: dict  # section keywords to write


def _layout(profile, shape, *, required_only=False):
    """The regions of a raw frame of ``shape`` (after turning) and the cards that say so.

    A section the profile fixes is used as it is. A section read from a header keyword is
    the simulator's choice, written in the header: an overscan strip of ``w`` columns on
    the right (rows at the top for ``overscan_axis = 0``, a corner for ``"frame"``), and a
    trim section of everything else. With ``required_only``, sections read from optional
    keywords are not written: the frame then has none.
    """
    ny, nx = shape
    whole = (slice(0, ny), slice(0, nx))
    if profile.amplifiers:
        data = [_section(amp.data_section.fits, shape) for amp in profile.amplifiers]
        overscans = [_section(amp.overscan_section.fits, shape) if amp.overscan_section
                     else None for amp in profile.amplifiers]
        rows = slice(min(d[0].start for d in data), max(d[0].stop for d in data))
        cols = slice(min(d[1].start for d in data), max(d[1].stop for d in data))
        return _Layout(data, overscans, (rows, cols), {})
    w = min(_SECTION_WIDTH, nx // 4, ny // 4)
    strips = {  # overscan, trim chosen by the simulator
        1: ((slice(0, ny), slice(nx - w, nx)), (slice(0, ny), slice(0, nx - w))),
        0: ((slice(ny - w, ny), slice(0, nx)), (slice(0, ny - w), slice(0, nx))),
        "frame": ((slice(ny - w, ny), slice(nx - w, nx)), (slice(0, ny - w), slice(0, nx - w))),
    }[profile.overscan_axis]
    cards = {}

    def place(section, chosen):
        if section is None:
            return None
        if section.keywords:
            if required_only and not section.required:
                return None
            cards[section.keywords[0]] = _fits(*chosen)
            return chosen
        return _section(section.fits, shape)

    overscan = place(profile.overscan, strips[0])
    if profile.trim is not None and profile.trim.keywords and overscan is not None and \
            not profile.overscan.keywords:
        # A fixed overscan and a trim read from the header: the trim leaves the overscan
        # out, whichever side the profile put it on.
        rows, cols = overscan
        if cols == whole[1]:
            kept = (slice(0, rows.start) if rows.start else slice(rows.stop, ny), cols)
        else:
            kept = (rows, slice(0, cols.start) if cols.start else slice(cols.stop, nx))
        chosen_trim = kept
    else:
        chosen_trim = strips[1] if overscan is not None else whole
    trim = place(profile.trim, chosen_trim) or whole
    return _Layout([whole], [overscan], trim, cards)


def _binning_cards(profile, binning):
    entry = profile.binning_keywords[0]
    keys = [k.strip() for k in entry.split(",")]
    if len(keys) == 2:
        return {keys[0]: binning[0], keys[1]: binning[1]}
    if keys[0] == "BINNING":
        return {keys[0]: f"{binning[0]}x{binning[1]}"}
    return {keys[0]: f"{binning[0]} {binning[1]}"}


def _file_name(profile, image_type, stem, write_image_type):
    """A file name that the profile's file patterns classify as ``image_type``."""
    word = {"science": "light" if "light*" in profile.file_patterns.get("science", ())
            else "object"}.get(image_type, image_type)
    name = f"{word}_{stem}.fits"
    patterns = profile.file_patterns.get(image_type, ())
    if not write_image_type and not any(fnmatch.fnmatchcase(name.lower(), pattern)
                                        for pattern in patterns):
        raise ValueError(f"profile {profile.name!r} has neither an image-type word nor a file "
                         f"pattern for {image_type} frames, so they cannot be simulated")
    return name


#: How each kind of bad calibration frame is made: (words, change of its signal in ADU,
#: given the position across the frame from 0 to 1).
_SPOILS = {
    "bias": ("light leak", lambda signal, x: signal + 20.0 + 180.0 * x),
    "dark": ("light leak", lambda signal, x: signal + 20.0 + 180.0 * x),
    "flat": ("passing cloud", lambda signal, x: signal * (1.0 - 0.4 * x)),
    "flat-level": ("half the illumination", lambda signal, x: signal * 0.5),
}


def _flat_pattern(rng, shape, n_donuts=3):
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx]
    r2 = ((x - nx / 2) / max(nx, 1)) ** 2 + ((y - ny / 2) / max(ny, 1)) ** 2
    pattern = 1.0 - 0.4 * r2  # vignetting: 10% darker at the corners
    for _ in range(n_donuts):
        cx, cy = rng.uniform(0, nx), rng.uniform(0, ny)
        radius = rng.uniform(3, max(4.0, min(nx, ny) / 6))
        d = np.hypot(x - cx, y - cy)
        ring = np.exp(-0.5 * ((d - radius) / max(radius / 4, 0.8)) ** 2)
        pattern *= 1.0 - 0.08 * ring
    pattern *= rng.normal(1.0, 0.01, shape)  # pixel-to-pixel response
    return pattern / pattern.mean()


def _stars(rng, shape, n_stars):
    ny, nx = shape
    image = np.zeros(shape)
    y, x = np.mgrid[0:ny, 0:nx]
    for _ in range(n_stars):
        cx, cy = rng.uniform(0, nx), rng.uniform(0, ny)
        flux = rng.uniform(2e3, 5e4)
        sigma = rng.uniform(1.2, 2.0)
        # Only near pixels matter; evaluate in a box to stay fast on large frames.
        half = int(6 * sigma) + 1
        ys = slice(max(0, int(cy) - half), min(ny, int(cy) + half + 1))
        xs = slice(max(0, int(cx) - half), min(nx, int(cx) + half + 1))
        r2 = (x[ys, xs] - cx) ** 2 + (y[ys, xs] - cy) ** 2
        image[ys, xs] += flux / (2 * np.pi * sigma**2) * np.exp(-0.5 * r2 / sigma**2)
    return image


def simulate_night(location, profile="generic", *, shape=None, n_bias=5,
                   dark_exposures=None, n_dark=3, filters=("V", "R"), n_flat=3,
                   flat_exposure=2.0, flat_level=20000.0, science_exposure=60.0,
                   n_science=2, science_filters=None, sky_level=300.0, n_stars=15,
                   bias_level=1000.0, overscan_drift=4.0, dark_rate=0.05,
                   hot_pixel_fraction=0.002, cosmic_rays=8, binning=(1, 1),
                   temperature=-10.0, header_extra=None, start="2024-03-05T01:00:00",
                   nights=1, prefix="", write_image_type=None, keywords="all",
                   drop_keywords=(), bad_calibrations=(), extensions=None, seed=0):
    """Write a synthetic raw night for ``profile`` into ``location``.

    Parameters
    ----------
    location : str or `pathlib.Path`
        Folder to write into (created if needed). Existing files are overwritten.
    profile : str or `~ccdproc_ext.InstrumentProfile`, optional
        The camera to imitate. Default is ``"generic"``.
    shape : tuple of int or None, optional
        Raw frame shape ``(rows, columns)`` as the profile's sections see it (after
        turning, for transposed cameras). Default is the profile's ``shape`` or
        ``(128, 160)``; with fixed sections such as LFC's ``[2056:2080,*]`` only the number
        of rows may change.
    n_bias, n_dark, n_flat, n_science : int, optional
        Frames of each kind (``n_dark`` per exposure time, ``n_flat`` and ``n_science``
        per filter).
    dark_exposures : sequence of float or None, optional
        Dark exposure times in seconds. Default: those of the flats and the science
        frames.
    filters : sequence of str, optional
        Filters of the flats. ``science_filters`` (default: the same) those of the science
        frames.
    flat_exposure, science_exposure : float, optional
        Exposure times in seconds.
    flat_level, sky_level : float, optional
        Mean flat illumination and sky background, in ADU.
    n_stars : int, optional
        Stars per science frame.
    bias_level, overscan_drift : float, optional
        Electronic offset in ADU, and how much it drifts from one frame to the next. The
        drift is only simulated for cameras with an overscan, which is what removes it.
    dark_rate, hot_pixel_fraction : float, optional
        Mean dark current (ADU/s) and the fraction of hot pixels (10 to 100 times more).
    cosmic_rays : int, optional
        Cosmic-ray hits per raw dark and science frame, scaled with exposure.
    binning : tuple of int, optional
        Binning written in the header. Default is ``(1, 1)``.
    temperature : float, optional
        Detector set-point temperature written in the header (degrees Celsius).
    header_extra : dict or None, optional
        Further header cards for every frame (e.g. ``{"OPAMP": 1}``).
    start : str, optional
        ISO time of the first frame.
    nights : int, optional
        The whole sequence is repeated on this many consecutive nights.
    prefix : str, optional
        Prepended to every file stem, so several calls can share a folder.
    write_image_type : bool or None, optional
        Write the image-type keyword. Default: unless the profile's file patterns name
        every frame type (a camera that writes none, like ASIImg).
    keywords : {"all", "required"}, optional
        ``"all"`` (the default) writes every keyword the profile reads. ``"required"``
        writes only what a reduction cannot do without: the image type (or a file name
        that says it), the exposure time of darks, flats and science frames (a bias needs
        none), the filter when the night has more than one, and the sections the profile
        requires. No date, binning, temperature, gain, ``OBJECT`` or optional section.
    drop_keywords : sequence of str, optional
        Keywords removed from every header after it is made (the truth is unchanged), to
        see what a reduction does without them.
    bad_calibrations : sequence of str, optional
        Calibration frames to spoil, one each (the second of its kind, the third for
        ``"flat-level"``; the darks of the longest exposure; the truth in
        `SimulatedNight.bad_calibrations`): ``"bias"`` gets a light leak (light rising
        from 20 to 200 ADU across the frame), ``"dark"`` the same leak, ``"flat"`` a
        passing cloud (the illumination falls by 40% across the frame), ``"flat-level"``
        half the illumination of the others. Default: none.
    extensions : sequence of str or None, optional
        Write multi-extension files: a primary header holding the frame's keywords and
        no image, then one image extension per name (``EXTNAME``, ``INHERIT = T``), each
        an amplifier of its own: bias level ``bias_level + 150 * n`` ADU (its overscan
        too), gain ``(1 + 0.2 n)`` times the profile's and read noise ``(1 + 0.1 n)``
        times (``n`` = 0, 1 ... its place; a profile's ``[extensions.NAME]`` values
        win), bias structure, dark current, flat pattern and stars. Every extension
        receives the same light in electrons: its ADU are those divided by its gain.
        Sections come from the profile's entry for the extension, else as for a file of
        one image. The truth of each is in `SimulatedNight.extensions`. Default is
        ``None``: files of one image.
    seed : int, optional
        Seed of the random generator; the same seed gives the same night.

    Returns
    -------
    `SimulatedNight`
    """
    profile = get_profile(profile)
    rng = np.random.default_rng(seed)
    location = Path(location)
    location.mkdir(parents=True, exist_ok=True)
    if shape is None:
        shape = profile.shape if profile.shape else (128, 160)
    shape = tuple(int(s) for s in shape)
    if keywords not in ("all", "required"):
        raise ValueError(f"keywords={keywords!r}: expected 'all' or 'required'")
    required_only = keywords == "required"
    several_filters = len(set(filters) | set(science_filters or ())) > 1
    dropped = {key.upper() for key in drop_keywords}
    if write_image_type is None:
        write_image_type = not all(profile.file_patterns.get(t) for t in
                                   ("bias", "dark", "flat", "science"))
    science_filters = tuple(filters if science_filters is None else science_filters)
    if dark_exposures is None:
        dark_exposures = tuple(sorted({float(flat_exposure), float(science_exposure)}))
    spoils = {kind: _SPOILS[kind] for kind in bad_calibrations}

    detectors = _detectors(rng, profile, shape, extensions,
                           dict.fromkeys(tuple(filters) + science_filters),
                           required_only=required_only, dark_rate=dark_rate,
                           hot_pixel_fraction=hot_pixel_fraction)

    writer = _NightWriter(
        location, profile, detectors, rng, spoils=spoils, shape=shape, prefix=prefix,
        bias_level=bias_level, overscan_drift=overscan_drift,
        write_image_type=write_image_type, required_only=required_only,
        several_filters=several_filters, binning=binning, temperature=temperature,
        header_extra=header_extra, dropped=dropped, several=extensions is not None)
    for night in range(nights):
        writer.time = Time(start, format="isot", scale="utc") + TimeDelta(night, format="jd")
        tag = f"n{night + 1}_" if nights > 1 else ""
        zero = np.zeros(shape)
        for i in range(n_bias):
            stem = f"{tag}{i + 1:03d}"
            writer.write("bias", stem, 0.0, None,
                         [writer.spoil("bias", i, zero, stem)] * len(detectors))
        for exposure in dark_exposures:
            for i in range(n_dark):
                n_cr = round(cosmic_rays * exposure / max(science_exposure, 1))
                stem = f"{tag}{exposure:g}s_{i + 1:03d}"
                signal = writer.spoil("dark", i, zero, stem) \
                    if exposure == dark_exposures[-1] else zero
                writer.write("dark", stem, exposure, None, [signal] * len(detectors),
                             n_cr=n_cr)
        for name in filters:
            for i in range(n_flat):
                level = flat_level * rng.uniform(0.9, 1.1) / flat_exposure
                stem = f"{tag}{name}_{i + 1:03d}"
                writer.write("flat", stem, flat_exposure, name,
                             [d.adu(writer.spoil("flat", i,
                                                 d.flats[name] * level * flat_exposure, stem))
                              for d in detectors])
        for name in science_filters:
            for i in range(n_science):
                level = sky_level * rng.uniform(0.8, 1.2)
                skies = [d.adu(level + _stars(rng, shape, n_stars)) for d in detectors]
                writer.write("science", f"{tag}{name}_{i + 1:03d}", science_exposure, name,
                             [d.flats[name] * sky
                              for d, sky in zip(detectors, skies, strict=True)],
                             skies=skies, n_cr=cosmic_rays)

    rows, spoiled = writer.rows, writer.spoiled
    files = Table(rows=rows, names=("file", "type", "exposure", "filter", "date_obs"))
    truths = [_truth(detector, location, profile.name, files, spoiled, shape, bias_level)
              for detector in detectors]
    if extensions is None:
        return truths[0]
    return dataclasses.replace(truths[0], extensions=dict(zip(extensions, truths,
                                                              strict=True)))


def _detectors(rng, profile, shape, extensions, filters, **options):
    """One detector for a file of one image, one per extension otherwise; the truth of
    each over its whole raw frame (the trimmed part is returned), with its flat in each
    of ``filters``."""
    gain = (profile.gain_spec.value if profile.gain_spec and profile.gain_spec.value
            else _DEFAULT_GAIN)
    read_noise = (profile.read_noise_spec.value
                  if profile.read_noise_spec and profile.read_noise_spec.value
                  else _DEFAULT_READ_NOISE)
    detectors = [_detector(rng, profile, shape, place, name, gain, read_noise, **options)
                 for place, name in enumerate(extensions or (None,))]
    for name in filters:
        for detector in detectors:
            pattern = _flat_pattern(rng, shape)
            # Normalised over the science pixels, as a master flat is.
            detector.flats[name] = pattern / pattern[detector.layout.trim].mean()
    return detectors


class _NightWriter:
    """Writes the frames of a simulated night one at a time, and keeps what they hold:
    a row for the file table each, the frames spoiled, each detector's levels, skies and
    cosmic rays."""

    def __init__(self, location, profile, detectors, rng, *, spoils, shape, prefix,
                 **options):
        self.location, self.profile, self.detectors, self.rng = (location, profile,
                                                                 detectors, rng)
        self.spoils, self.prefix, self.options = spoils, prefix, options
        self.across = np.broadcast_to(np.linspace(0.0, 1.0, shape[1])[np.newaxis, :],
                                      shape)
        self.rows, self.spoiled = [], {}
        self.frame_index, self.time = 0, None

    def spoil(self, kind, index, signal, name):
        """``signal`` of the ``index``-th frame of its kind, spoiled when asked."""
        for what, (words, change) in self.spoils.items():
            if what.split("-")[0] == kind and index == (2 if what == "flat-level" else 1):
                self.spoiled[name] = words
                return change(signal, self.across)
        return signal

    def header(self, image_type, exposure, filter_name):
        """The primary header of a frame."""
        profile, options = self.profile, self.options
        required_only = options["required_only"]
        header = fits.Header()
        if options["write_image_type"] and profile.image_type_words.get(image_type):
            header[profile.image_type_keywords[0]] = profile.image_type_words[image_type][0].upper()
        if not (required_only and image_type == "bias"):
            header[profile.exposure_time_keywords[0]] = float(exposure)
        if filter_name is not None and (options["several_filters"] or not required_only):
            header[profile.filter_keywords[0]] = filter_name
        if not required_only:
            header[profile.date_obs_keywords[0]] = self.time.isot
            header.update(_binning_cards(profile, options["binning"]))
            header[profile.temperature_keywords[0]] = float(options["temperature"])
        if not options["several"]:  # the detector's own cards (else in its extension)
            if not required_only:
                header.update(self.detectors[0].cards)
            header.update(self.detectors[0].layout.cards)
        for key in profile.match_keywords:
            header.setdefault(key, 1)
        if options["header_extra"]:
            header.update(options["header_extra"])
        if not required_only:
            header["OBJECT"] = {"science": "simulated field", "flat": "flat"}.get(image_type,
                                                                                   image_type)
        for key in options["dropped"]:
            header.remove(key, ignore_missing=True, remove_all=True)
        return header

    def write(self, image_type, stem, exposure, filter_name, signals, *, skies=None, n_cr=0):
        """Write one frame; ``signals`` (and ``skies``) hold one image per detector."""
        options = self.options
        images = [_raw_image(self.rng, detector, signal, exposure, self.frame_index,
                             bias_level=options["bias_level"],
                             overscan_drift=options["overscan_drift"], n_cr=n_cr)
                  for detector, signal in zip(self.detectors, signals, strict=True)]
        self.frame_index += 1
        header = self.header(image_type, exposure, filter_name)
        name = _file_name(self.profile, image_type, f"{self.prefix}{stem}",
                          options["write_image_type"])
        if stem in self.spoiled:
            self.spoiled[name] = self.spoiled.pop(stem)
        _write_file(self.location / name, header, self.detectors,
                    [raw for raw, _, _ in images], transposed=self.profile.transposed,
                    several=options["several"], required_only=options["required_only"],
                    dropped=options["dropped"])
        self.rows.append((name, image_type, float(exposure), filter_name or "",
                          self.time.isot))
        for detector, (_, offset, hits) in zip(self.detectors, images, strict=True):
            detector.levels[name] = offset
            if skies is not None:
                detector.sky[name] = skies[detector.place][detector.layout.trim]
                detector.cosmic_rays[name] = hits[detector.layout.trim]
        self.time = self.time + TimeDelta(exposure + 30.0, format="sec")


@dataclass
class _Detector:
    """One amplifier or CCD of a simulated camera, and its truth over the raw frame."""

    place: int  # 0, 1 ...: its extension's place in the file
    name: str | None  # its EXTNAME, None for a file of one image
    layout: _Layout
    gain: float
    read_noise: float
    gain_ratio: float  # the first detector's gain over its own
    bias_offset: float  # ADU added to the bias level of the night
    bias_structure: np.ndarray
    dark_current: np.ndarray
    hot: np.ndarray
    cards: dict  # gain and read-noise cards of its header
    flats: dict = field(default_factory=dict)
    sky: dict = field(default_factory=dict)
    cosmic_rays: dict = field(default_factory=dict)
    levels: dict = field(default_factory=dict)

    @property
    def overscans(self):
        return [o for o in self.layout.overscans if o is not None]

    def adu(self, signal):
        """``signal`` (ADU of the first detector) in this detector's ADU: the same
        electrons divided by its own gain."""
        return signal if self.place == 0 else signal * self.gain_ratio


def _entry_value(profile, name, what):
    entry = None if name is None or profile.extensions is None else \
        profile.extensions.entry(name)
    value = None if entry is None else getattr(entry, what)
    return None if value is None else value.value


def _detector(rng, profile, shape, place, name, gain, read_noise, *, required_only,
              dark_rate, hot_pixel_fraction):
    """The truth of one detector, drawn from ``rng``: for a file of one image, in the
    order the simulator has always drawn it (the same seed, the same night)."""
    own = profile if name is None else profile.for_extension(name)
    layout = _layout(own, shape, required_only=required_only)
    own_gain = _entry_value(profile, name, "gain") or (
        gain if place == 0 else round(gain * (1 + _EXTENSION_GAIN_STEP * place), 6))
    own_noise = _entry_value(profile, name, "read_noise") or (
        read_noise if place == 0 else round(read_noise * (1 + _EXTENSION_NOISE_STEP * place), 6))
    ny, nx = shape
    column_pattern = rng.normal(0.0, 3.0, nx)[np.newaxis, :] + np.linspace(0, 5, ny)[:, None]
    bias_structure = np.broadcast_to(column_pattern, shape).copy()
    overscans = [o for o in layout.overscans if o is not None]
    for overscan in overscans:
        bias_structure[overscan] = 0.0  # the overscan sees only the offset
    dark_current = np.full(shape, dark_rate) * rng.uniform(0.8, 1.2, shape)
    hot = rng.random(shape) < hot_pixel_fraction
    dark_current[hot] = dark_rate * rng.uniform(10, 100, hot.sum())
    for overscan in overscans:
        dark_current[overscan] = 0.0
    cards = {}
    for value, number in ((own.gain_spec, own_gain), (own.read_noise_spec, own_noise)):
        if value is not None and value.keywords:
            cards[value.keywords[0]] = number
    return _Detector(place=place, name=name, layout=layout, gain=own_gain,
                     read_noise=own_noise, gain_ratio=gain / own_gain,
                     bias_offset=_EXTENSION_BIAS_STEP * place, bias_structure=bias_structure,
                     dark_current=dark_current, hot=hot, cards=cards)


def _raw_image(rng, detector, signal, exposure, frame_index, *, bias_level, overscan_drift,
               n_cr):
    """One detector's raw pixels (uint16), its offset, and the pixels cosmic rays hit."""
    shape = signal.shape
    layout = detector.layout
    overscans = detector.overscans
    offset = bias_level + detector.bias_offset + (
        overscan_drift * frame_index + rng.normal(0, 1.5) if overscans else 0.0)
    signal = signal.copy()
    for overscan in overscans:
        signal[overscan] = 0.0  # the overscan sees no light
    electrons = np.clip(signal + detector.dark_current * exposure, 0, None) * detector.gain
    # Each amplifier has its own offset, in its data and in its overscan.
    offsets = np.full(shape, offset)
    for amp, (data_region, overscan) in enumerate(zip(layout.data, layout.overscans,
                                                      strict=True)):
        offsets[data_region] = offset + _AMPLIFIER_STEP * amp
        if overscan is not None:
            offsets[overscan] = offset + _AMPLIFIER_STEP * amp
    data = offsets + detector.bias_structure + rng.poisson(electrons) / detector.gain
    data += rng.normal(0.0, detector.read_noise / detector.gain, shape)
    hits = np.zeros(shape, dtype=bool)
    if n_cr:
        idx = rng.integers(0, data.size, n_cr)
        hits.flat[idx] = True
        data.flat[idx] += rng.uniform(500, 5000, n_cr)
    return np.clip(np.rint(data), 0, 65535).astype(np.uint16), offset, hits


def _write_file(path, header, detectors, images, *, transposed, several, required_only,
                dropped):
    """Write a frame: one image under ``header``, or ``header`` in a primary HDU without
    an image and one extension per detector (its sections, gain and read noise in its
    own header, ``INHERIT = T``)."""

    def turned(image):
        return image.T if transposed else image

    if not several:
        fits.PrimaryHDU(turned(images[0]), header=header).writeto(path, overwrite=True)
        return
    hdus = [fits.PrimaryHDU(header=header)]
    for detector, image in zip(detectors, images, strict=True):
        own = fits.Header({"EXTNAME": detector.name, "INHERIT": True})
        if not required_only:
            own.update(detector.cards)
        own.update(detector.layout.cards)
        for key in dropped:
            own.remove(key, ignore_missing=True, remove_all=True)
        hdus.append(fits.ImageHDU(turned(image), header=own))
    fits.HDUList(hdus).writeto(path, overwrite=True)


def _truth(detector, location, profile_name, files, spoiled, shape, bias_level):
    trim = detector.layout.trim
    has_overscan = bool(detector.overscans)
    return SimulatedNight(
        location=location,
        profile_name=profile_name,
        files=files,
        bias=(detector.bias_structure + (0.0 if has_overscan else
                                          bias_level + detector.bias_offset))[trim],
        dark_current=detector.dark_current[trim],
        flats={name: pattern[trim] for name, pattern in detector.flats.items()},
        sky=detector.sky,
        cosmic_rays=detector.cosmic_rays,
        hot_pixels=detector.hot[trim],
        bad_calibrations=spoiled,
        overscan_levels=detector.levels,
        gain=detector.gain,
        read_noise=detector.read_noise,
        raw_shape=shape,
        trim_slices=trim,
    )
