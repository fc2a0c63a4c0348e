"""Cosmic rays on star fields made independently of the package's simulator.

The stars are photutils' (`photutils.psf.make_psf_model_image`: Gaussian and Moffat stars
of FWHM 2 to 5 pixels, sparse and crowded, peaks of 300 to 8000 e-), on a sky of 400 e- with
Poisson noise and 5 e- of read noise; the hits are drawn here: single pixels and straight
tracks of 2 to 5 pixels (along rows, columns or diagonals) of 800 to 6000 e- a pixel. The
truth is what this file put in; the references are numbers written by hand and
`ccdproc.cosmicray_lacosmic` on the whole frame.
"""

import astropy.units as u
import ccdproc
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from scipy import ndimage

from ccdproc_ext import cosmic_rays, reduce_night
from ccdproc_ext.cosmic_rays import cosmic_ray_settings, detect_cosmic_rays
from ccdproc_ext.science import sky_statistics

# photutils' PSF models and PSF images came with photutils 2.0.
pytest.importorskip("photutils", minversion="2.0")
from photutils.psf import CircularGaussianPSF, MoffatPSF, make_psf_model_image

SHAPE = (400, 500)
SKY = 400.0  # e-
READ_NOISE = 5.0  # e-
MOFFAT_BETA = 2.5
LENGTHS = (1, 2, 3, 4, 5)
#: Each field: PSF, FWHM (pixels), stars, gain (e-/ADU: the frame is in ADU), seed.
FIELDS = [
    ("gaussian", 2.0, 60, 1.0, 1),
    ("moffat", 2.5, 250, 2.0, 2),
    ("gaussian", 3.0, 250, 1.0, 3),
    ("moffat", 3.5, 60, 1.5, 4),
    ("gaussian", 4.0, 60, 1.0, 5),
    ("moffat", 5.0, 250, 1.0, 6),
]


def _psf(kind, fwhm):
    """A photutils PSF of this FWHM, and its peak per unit flux (written by hand: a
    Gaussian's 4 ln 2 / (pi FWHM^2), a Moffat's (beta - 1) / (pi alpha^2))."""
    if kind == "gaussian":
        return CircularGaussianPSF(fwhm=fwhm), 4 * np.log(2) / (np.pi * fwhm**2)
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / MOFFAT_BETA) - 1))
    return MoffatPSF(alpha=alpha, beta=MOFFAT_BETA), (MOFFAT_BETA - 1) / (np.pi * alpha**2)


def _hits(rng, n_hits=150):
    """Hits of 1 to 5 pixels in a line, none touching another: (hit pixels, the length
    of the track of each hit pixel, the charge of each, e-)."""
    length = np.zeros(SHAPE, np.int8)
    charge = np.zeros(SHAPE)
    directions = [(0, 1), (1, 0), (1, 1), (1, -1)]
    for k in range(n_hits):
        n = LENGTHS[k % len(LENGTHS)]
        for _ in range(100):
            dy, dx = directions[rng.integers(len(directions))]
            y0, x0 = rng.integers(3, SHAPE[0] - 8), rng.integers(8, SHAPE[1] - 8)
            ys, xs = y0 + dy * np.arange(n), x0 + dx * np.arange(n)
            around = (slice(ys.min() - 1, ys.max() + 2), slice(xs.min() - 1, xs.max() + 2))
            if not length[around].any():
                break
        length[ys, xs] = n
        charge[ys, xs] = rng.uniform(800, 6000, n)
    return length > 0, length, charge


def star_field(kind, fwhm, n_stars, gain, seed, n_hits=150):
    """A frame in ADU, its stars (e-, without noise) and its hits."""
    rng = np.random.default_rng(seed)
    psf, peak_per_flux = _psf(kind, fwhm)
    stars, _ = make_psf_model_image(SHAPE, psf, n_stars, model_shape=(int(8 * fwhm) | 1,) * 2,
                                    flux=(300 / peak_per_flux, 8000 / peak_per_flux),
                                    min_separation=1, border_size=5, seed=seed)
    hits, length, charge = _hits(rng, n_hits)
    electrons = rng.poisson(SKY + stars) + rng.normal(0, READ_NOISE, SHAPE) + charge
    return (electrons / gain).astype(np.float32), stars, hits, length


def _near(pixels, distance=1):
    return ndimage.binary_dilation(pixels, structure=np.ones((3, 3), bool),
                                   iterations=distance)


def _star_cores(stars, fwhm):
    """The pixels of each star above half its peak, for stars whose peak is above 5 times
    the sky's noise."""
    peak = ndimage.maximum_filter(stars, size=int(2 * fwhm) | 1)
    return (stars >= 0.5 * peak) & (peak > 5 * np.sqrt(SKY + READ_NOISE**2))


def _settings_and_hits(frame, gain, **options):
    ccd = CCDData(frame, unit="adu")
    sky, noise = sky_statistics(frame)
    settings = cosmic_ray_settings(ccd, gain=gain, read_noise=READ_NOISE, sky=sky,
                                   noise=noise)
    result, found = detect_cosmic_rays(
        ccd, gain=settings.gain, read_noise=settings.read_noise, psffwhm=settings.fwhm,
        objlim=settings.objlim, sigclip=settings.sigclip, fsmode=settings.fsmode,
        niter=settings.niter, **options)
    return settings, result, found


@pytest.fixture(scope="module")
def fields():
    """Each field with what was found in it."""
    found_in = []
    for kind, fwhm, n_stars, gain, seed in FIELDS:
        frame, stars, hits, length = star_field(kind, fwhm, n_stars, gain, seed)
        settings, _, found = _settings_and_hits(frame, gain)
        found_in.append(dict(kind=kind, fwhm=fwhm, n_stars=n_stars, stars=stars, hits=hits,
                             length=length, settings=settings, found=found))
    return found_in


def test_every_track_length_is_found(fields):
    """At least 95% of the hit pixels of each track length, over the six fields."""
    recall = {}
    for n in LENGTHS:
        pixels = sum(np.count_nonzero(f["length"] == n) for f in fields)
        caught = sum(np.count_nonzero(f["found"] & (f["length"] == n)) for f in fields)
        assert pixels >= 6 * 30 * n - 5  # 30 tracks of each length a field
        recall[n] = caught / pixels
    assert min(recall.values()) >= 0.95, recall


def test_star_cores_and_other_pixels_are_kept(fields):
    """At most 2% of the star-core pixels and 0.1% of the other pixels are taken for
    hits, in every field (the pixels next to a hit left out: L.A.Cosmic adds a hit's
    neighbours when they stand out)."""
    for field in fields:
        near_hits = _near(field["hits"])
        cores = _star_cores(field["stars"], field["fwhm"]) & ~near_hits
        others = ~cores & ~near_hits
        assert cores.sum() > 200  # stars enough for the fraction to mean something
        core_fraction = np.count_nonzero(field["found"] & cores) / cores.sum()
        other_fraction = np.count_nonzero(field["found"] & others) / others.sum()
        assert core_fraction <= 0.02, (field["kind"], field["fwhm"], core_fraction)
        assert other_fraction <= 0.001, (field["kind"], field["fwhm"], other_fraction)


def test_settings_follow_the_frame(fields):
    """The FWHM is measured on the frame's stars, and the sharper the stars, the higher
    the contrast limit: 8 (2.5 / FWHM)^2 of the sharpest star measured."""
    for field in fields:
        settings = field["settings"]
        assert settings.fwhm_measured
        # photutils' PSFs sampled at pixel centres, measured with a Gaussian fit: a
        # Moffat's wings make it look wider.
        assert 0.9 * field["fwhm"] < settings.fwhm < 1.15 * field["fwhm"], settings
        assert settings.sharpest_fwhm <= settings.fwhm
        assert settings.objlim == pytest.approx(8 * (2.5 / settings.sharpest_fwhm) ** 2,
                                                rel=1e-6)
        assert settings.fsmode == "median" and settings.sigclip == 4.5
    sharp = next(f["settings"] for f in fields if f["fwhm"] == 2.0)
    wide = next(f["settings"] for f in fields if f["fwhm"] == 5.0)
    assert sharp.objlim > 10 > 3 > wide.objlim


def test_boxes_find_what_the_whole_frame_finds(monkeypatch):
    """A frame of sky with sparse stars is searched in boxes around the pixels that could
    be hits: the same hits, and the same cleaned values, as ccdproc.cosmicray_lacosmic
    run over the whole frame."""
    frame, _, hits, _ = star_field("gaussian", 3.0, 20, 1.0, 7, n_hits=30)
    boxes = cosmic_rays.search_boxes(frame, gain=1.0, read_noise=READ_NOISE)
    assert boxes is not None
    covered = np.zeros(SHAPE, bool)
    for box in boxes:
        covered[box] = True
    assert covered.mean() < 0.5  # boxes, not the frame
    assert covered[hits].all()
    _, cleaned, found = _settings_and_hits(frame, 1.0, clean=True)
    monkeypatch.setattr(cosmic_rays, "search_boxes", lambda *args, **kwargs: None)
    settings, whole_cleaned, whole = _settings_and_hits(frame, 1.0, clean=True)
    assert np.count_nonzero(found) > 0.95 * hits.sum()
    assert np.array_equal(found, whole)
    assert np.allclose(cleaned.data[found], whole_cleaned.data[found], rtol=1e-3, atol=1.0)
    # And the whole frame's are ccdproc's, called here directly (the frame mirrored
    # beyond its edges as detect_cosmic_rays does: no hit is near an edge here).
    direct = ccdproc.cosmicray_lacosmic(
        CCDData(frame, unit="adu"), gain=1.0 * u.electron / u.adu,
        readnoise=READ_NOISE * u.electron, sigclip=settings.sigclip,
        objlim=settings.objlim, fsmode="median", niter=settings.niter, satlevel=1e30)
    inner = (slice(10, -10), slice(10, -10))
    assert np.array_equal(np.asarray(direct.mask, bool)[inner], whole[inner])


def test_clean_replaces_hits_by_the_sky_and_stars_under_them():
    frame, stars, hits, _ = star_field("moffat", 3.0, 60, 1.0, 8)
    _, cleaned, found = _settings_and_hits(frame, 1.0, clean=True)
    caught = hits & found
    truth = SKY + stars
    sigma = np.sqrt(truth + READ_NOISE**2)
    assert np.mean(np.abs(cleaned.data - truth)[caught] < 5 * sigma[caught]) >= 0.9
    assert np.array_equal(cleaned.data[~found], frame[~found])
    assert np.array_equal(cleaned.mask, found)


def test_reduce_night_finds_hits_and_writes_the_settings(tmp_path):
    """The default call with cosmic_rays=True on raw frames of such fields (a camera
    in ADU with a gain of 2 e-/ADU): the hits in the MASK extension, what L.A.Cosmic was
    given in the header and the rule in the plan."""
    raw = tmp_path / "raw"
    raw.mkdir()
    truths = {}
    for i, (kind, fwhm) in enumerate((("gaussian", 2.5), ("moffat", 4.0))):
        frame, _, hits, _ = star_field(kind, fwhm, 60, 2.0, 20 + i)
        header = fits.Header({"IMAGETYP": "Light Frame", "EXPTIME": 30.0, "GAIN": 2.0,
                              "RDNOISE": READ_NOISE, "FILTER": "R",
                              "DATE-OBS": f"2024-03-05T0{i + 1}:00:00"})
        name = f"field_{i}.fits"
        fits.PrimaryHDU(frame, header).writeto(raw / name)
        truths[name] = (hits, fwhm)
    result = reduce_night(raw, tmp_path / "out", progress=False, workers=1,
                          cosmic_rays=True)
    assert len(result.science) == 2 and len(result.problems) == 0, result.summary()
    assert "L.A.Cosmic" in result.plan.meta["cosmic_rays"]
    for row in result.science:
        hits, fwhm = truths[row["raw_file"]]
        with fits.open(row["output_file"]) as hdul:
            header, bits = hdul[0].header, hdul["MASK"].data
        flagged = (bits & 4) != 0
        assert np.count_nonzero(flagged & hits) >= 0.95 * hits.sum()
        assert header["NCRPIX"] == flagged.sum()
        assert header["CRGAIN"] == 2.0 and header["CRRDNOIS"] == READ_NOISE
        assert header["CRFWHMSR"] == "measured"
        assert abs(header["CRFWHM"] - fwhm) < 0.2 * fwhm
        # Both cards rounded to 3 decimals.
        assert header["CROBJLIM"] == pytest.approx(8 * (2.5 / header["CRFWHMLO"]) ** 2,
                                                   rel=1e-3)
        assert (header["CRSIGMA"], header["CRFSMODE"], header["CRNITER"]) == \
            (4.5, "median", 2)


def test_star_peaks_are_those_of_photutils_find_peaks():
    """The peaks measure_fwhm fits are looked for among the pixels above the threshold
    only: the same peaks as photutils' find_peaks over the whole frame."""
    from photutils.detection import find_peaks

    frame, _, _, _ = star_field("moffat", 3.0, 250, 1.0, 9)
    bad = np.zeros(SHAPE, bool)
    bad[100:110, 200:260] = True  # a masked band across stars
    threshold = SKY + 20 * np.sqrt(SKY + READ_NOISE**2)
    table = find_peaks(np.where(bad, 0.0, frame), threshold, box_size=11, border_width=8,
                       mask=bad)
    expected = sorted(zip(table["y_peak"].tolist(), table["x_peak"].tolist(), strict=True))
    found = cosmic_rays._peaks(frame, bad, threshold, box=11, border=8)
    assert len(expected) > 50
    assert sorted(found) == expected
    values = [frame[y, x] for y, x in found]
    assert values == sorted(values, reverse=True)  # brightest first
