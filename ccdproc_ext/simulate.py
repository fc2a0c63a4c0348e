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
  perfect reduction returns; ``cosmic_rays`` marks the pixels hit in each raw frame.

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

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time, TimeDelta

from .profiles import get_profile
from .profiles.sections import DetectorSection

__all__ = ["SimulatedNight", "simulate_night"]

_DEFAULT_GAIN = 1.5  # electron / adu, when the profile gives none
_DEFAULT_READ_NOISE = 8.0  # electron
_SECTION_WIDTH = 16  # overscan width written for cameras whose sections are header keywords


@dataclass
class SimulatedNight:
    """The files of a simulated night and the truth they were made from.

    All images are in the science pixels (the trimmed region), in ADU, float64.
    """

    location: Path
    profile_name: str
    files: Table
    bias: np.ndarray
    dark_current: np.ndarray
    flats: dict = field(default_factory=dict)
    sky: dict = field(default_factory=dict)
    cosmic_rays: dict = field(default_factory=dict)
    overscan_levels: dict = field(default_factory=dict)
    gain: float = _DEFAULT_GAIN
    read_noise: float = _DEFAULT_READ_NOISE
    raw_shape: tuple = ()
    trim_slices: tuple = ()

    @property
    def read_noise_adu(self):
        """Read noise in ADU."""
        return self.read_noise / self.gain

    def paths(self, image_type=None):
        """Full paths of the files, optionally of one type only."""
        rows = self.files if image_type is None else \
            self.files[self.files["type"] == image_type]
        return [self.location / name for name in rows["file"]]


def _layout(profile, shape, *, required_only=False):
    """Overscan and trim slices of the frame (after turning), and header keywords to write.

    With ``required_only``, sections the profile reads from optional header keywords are
    not written: such a camera then has no overscan and no trim.
    """
    ny, nx = shape
    keywords = {}
    overscan = profile.overscan
    trim = profile.trim
    if required_only:
        overscan, trim = (
            section if section is None or not section.keywords or section.required
            else (DetectorSection(fits=section.fits) if section.fits else None)
            for section in (overscan, trim))

    def keyword_section(section, text):
        # A camera that writes its sections: write them, consistent with this shape.
        keywords[section.keywords[0]] = text
        return DetectorSection(fits=text)

    w = min(_SECTION_WIDTH, nx // 4, ny // 4)
    if overscan is not None and overscan.keywords:
        if profile.overscan_axis == "frame":
            text = f"[{nx - w + 1}:{nx},{ny - w + 1}:{ny}]"
        elif profile.overscan_axis == 0:
            text = f"[1:{nx},{ny - w + 1}:{ny}]"
        else:
            text = f"[{nx - w + 1}:{nx},1:{ny}]"
        overscan = keyword_section(overscan, text)
    if trim is not None and trim.keywords:
        if overscan is None:
            text = f"[1:{nx},1:{ny}]"
        elif profile.overscan_axis == "frame":
            text = f"[1:{nx - w},1:{ny - w}]"
        elif profile.overscan_axis == 0:
            text = f"[1:{nx},1:{ny - w}]"
        else:
            text = f"[1:{nx - w},1:{ny}]"
        trim = keyword_section(trim, text)
    overscan_slices = overscan.slices(shape) if overscan is not None else None
    trim_slices = trim.slices(shape) if trim is not None else (slice(0, ny), slice(0, nx))
    return overscan_slices, trim_slices, keywords


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
    if not write_image_type and profile.classify_path(name) != image_type:
        raise ValueError(f"profile {profile.name!r} has neither an image-type word nor a file "
                         f"pattern for {image_type} frames, so they cannot be simulated")
    return name


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
                   drop_keywords=(), seed=0):
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
    overscan_slices, trim_slices, section_cards = _layout(profile, shape,
                                                          required_only=required_only)
    several_filters = len(set(filters) | set(science_filters or ())) > 1
    dropped = {key.upper() for key in drop_keywords}
    if write_image_type is None:
        write_image_type = not all(profile.file_patterns.get(t) for t in
                                   ("bias", "dark", "flat", "science"))
    science_filters = tuple(filters if science_filters is None else science_filters)
    if dark_exposures is None:
        dark_exposures = tuple(sorted({float(flat_exposure), float(science_exposure)}))

    gain = profile.gain.value if profile.gain and profile.gain.value else _DEFAULT_GAIN
    read_noise = (profile.read_noise.value if profile.read_noise and profile.read_noise.value
                  else _DEFAULT_READ_NOISE)
    rn_adu = read_noise / gain

    # The truth, over the whole raw frame; the trimmed part is returned.
    ny, nx = shape
    column_pattern = rng.normal(0.0, 3.0, nx)[np.newaxis, :] + np.linspace(0, 5, ny)[:, None]
    bias_structure = np.broadcast_to(column_pattern, shape).copy()
    has_overscan = overscan_slices is not None
    if has_overscan:
        bias_structure[overscan_slices] = 0.0  # the overscan sees only the offset
    dark_current = np.full(shape, dark_rate) * rng.uniform(0.8, 1.2, shape)
    hot = rng.random(shape) < hot_pixel_fraction
    dark_current[hot] = dark_rate * rng.uniform(10, 100, hot.sum())
    if has_overscan:
        dark_current[overscan_slices] = 0.0
    flats = {}
    for name in dict.fromkeys(tuple(filters) + science_filters):
        pattern = _flat_pattern(rng, shape)
        # Normalised over the science pixels, as a master flat is.
        flats[name] = pattern / pattern[trim_slices].mean()

    gain_cards = {}
    for value, default in ((profile.gain, gain), (profile.read_noise, read_noise)):
        if value is not None and value.keywords:
            gain_cards[value.keywords[0]] = default

    rows = []
    truth_sky, truth_cr, levels = {}, {}, {}
    frame_index = 0
    time = Time(start, format="isot", scale="utc")

    def write(image_type, stem, exposure, filter_name, signal, *, sky=None, n_cr=0):
        nonlocal frame_index, time
        offset = bias_level + (overscan_drift * frame_index + rng.normal(0, 1.5)
                               if has_overscan else 0.0)
        frame_index += 1
        signal = signal.copy()
        if has_overscan:
            signal[overscan_slices] = 0.0  # the overscan sees no light
        electrons = np.clip(signal + dark_current * exposure, 0, None) * gain
        data = offset + bias_structure + rng.poisson(electrons) / gain
        data += rng.normal(0.0, rn_adu, shape)
        hits = np.zeros(shape, dtype=bool)
        if n_cr:
            idx = rng.integers(0, ny * nx, n_cr)
            hits.flat[idx] = True
            data.flat[idx] += rng.uniform(500, 5000, n_cr)
        raw = np.clip(np.rint(data), 0, 65535).astype(np.uint16)

        header = fits.Header()
        if write_image_type and profile.image_type_words.get(image_type):
            header[profile.image_type_keywords[0]] = profile.image_type_words[image_type][0].upper()
        if not (required_only and image_type == "bias"):
            header[profile.exposure_time_keywords[0]] = float(exposure)
        if filter_name is not None and (several_filters or not required_only):
            header[profile.filter_keywords[0]] = filter_name
        if not required_only:
            header[profile.date_obs_keywords[0]] = time.isot
            header.update(_binning_cards(profile, binning))
            header[profile.temperature_keywords[0]] = float(temperature)
            header.update(gain_cards)
        header.update(section_cards)
        for key in profile.match_keywords:
            header.setdefault(key, 1)
        if header_extra:
            header.update(header_extra)
        if not required_only:
            header["OBJECT"] = {"science": "simulated field", "flat": "flat"}.get(image_type,
                                                                                   image_type)
        for key in dropped:
            header.remove(key, ignore_missing=True, remove_all=True)
        name = _file_name(profile, image_type, f"{prefix}{stem}", write_image_type)
        out = raw.T if profile.transposed else raw
        fits.PrimaryHDU(out, header=header).writeto(location / name, overwrite=True)
        rows.append((name, image_type, float(exposure), filter_name or "", time.isot))
        levels[name] = offset
        if sky is not None:
            truth_sky[name] = sky[trim_slices]
            truth_cr[name] = hits[trim_slices]
        time = time + TimeDelta(exposure + 30.0, format="sec")

    for night in range(nights):
        time = Time(start, format="isot", scale="utc") + TimeDelta(night, format="jd")
        tag = f"n{night + 1}_" if nights > 1 else ""
        zero = np.zeros(shape)
        for i in range(n_bias):
            write("bias", f"{tag}{i + 1:03d}", 0.0, None, zero)
        for exposure in dark_exposures:
            for i in range(n_dark):
                n_cr = round(cosmic_rays * exposure / max(science_exposure, 1))
                write("dark", f"{tag}{exposure:g}s_{i + 1:03d}", exposure, None, zero,
                      n_cr=n_cr)
        for name in filters:
            for i in range(n_flat):
                level = flat_level * rng.uniform(0.9, 1.1) / flat_exposure
                write("flat", f"{tag}{name}_{i + 1:03d}", flat_exposure, name,
                      flats[name] * level * flat_exposure)
        for name in science_filters:
            for i in range(n_science):
                sky = sky_level * rng.uniform(0.8, 1.2) + _stars(rng, shape, n_stars)
                write("science", f"{tag}{name}_{i + 1:03d}", science_exposure, name,
                      flats[name] * sky, sky=sky, n_cr=cosmic_rays)

    files = Table(rows=rows, names=("file", "type", "exposure", "filter", "date_obs"))
    return SimulatedNight(
        location=location,
        profile_name=profile.name,
        files=files,
        bias=(bias_structure + (0.0 if has_overscan else bias_level))[trim_slices],
        dark_current=dark_current[trim_slices],
        flats={name: pattern[trim_slices] for name, pattern in flats.items()},
        sky=truth_sky,
        cosmic_rays=truth_cr,
        overscan_levels=levels,
        gain=gain,
        read_noise=read_noise,
        raw_shape=shape,
        trim_slices=trim_slices,
    )

