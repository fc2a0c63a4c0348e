"""End-to-end reductions of simulated nights, checked against the truth they were made from,
and against the hand-written ccdproc reduction of the CCD Data Reduction Guide."""

import os
import warnings

import astropy.units as u
import ccdproc
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

import ccdproc_ext
from ccdproc_ext import calibrate_frame, reduce_night
from ccdproc_ext.exceptions import CcdprocExtError, CcdprocExtWarning
from ccdproc_ext.raw import read_frame
from ccdproc_ext.simulate import simulate_night

# Small frames: LFC and CG16M keep their fixed columns, only the rows shrink.
NIGHTS = {
    "palomar-lfc": dict(shape=(40, 2080)),
    "andor-aspen-cg16m": dict(shape=(32, 4109), dark_exposures=(90.0,),
                              science_exposure=60.0, flat_exposure=2.0),
    "maxim-ccdsoft": dict(shape=(64, 72)),
    "magellan-ifum": dict(shape=(72, 96), dark_exposures=(30.0,)),
    "magellan-imacs": dict(shape=(24, 4160)),
    "zwo-asiimg": dict(shape=(48, 64)),
}


def _simulate(folder, profile, **extra):
    options = dict(n_bias=7, n_dark=5, n_flat=5, n_science=2, filters=("R",), seed=3)
    options.update(NIGHTS[profile])
    options.update(extra)
    return simulate_night(folder, profile, **options)


@pytest.fixture(scope="module", params=sorted(NIGHTS))
def reduced(request, tmp_path_factory):
    profile = request.param
    root = tmp_path_factory.mktemp(profile)
    night = _simulate(root / "raw", profile)
    result = reduce_night(root / "raw", root / "out", profile, progress=False)
    return profile, night, result


def _expected_noise(night, sky):
    """Per-pixel noise of a calibrated frame: Poisson noise of sky (ADU) plus read noise."""
    return np.sqrt(sky / night.gain + night.read_noise_adu**2)


def test_every_science_frame_equals_the_true_sky(reduced):
    _profile, night, result = reduced
    assert len(result.problems) == 0, result.summary()
    assert len(result.science) == len(night.sky)
    for row in result.science:
        data = fits.getdata(row["output_file"])
        truth = night.sky[row["raw_file"]]
        good = ~night.cosmic_rays[row["raw_file"]]
        residual = (data - truth)[good]
        noise = _expected_noise(night, truth)[good]
        # No bias left: the mean residual is zero within 5 standard errors
        # (plus the masters' own noise, a few tenths of an ADU).
        assert abs(residual.mean()) < 5 * noise.mean() / np.sqrt(good.sum()) + 0.5
        # No structure left: the scatter is what photon and read noise give, with a margin
        # for the noise the masters add.
        assert 0.9 < residual.std() / np.sqrt(np.mean(noise**2)) < 1.25
        assert data.dtype.kind == "f" and data.dtype.itemsize == 4


def test_headers_carry_flags_and_master_names(reduced):
    profile, night, result = reduced
    row = result.science[0]
    header = fits.getheader(row["output_file"])
    for flag, master in (("ZEROCOR", row["bias"]), ("DARKCOR", row["dark"]),
                         ("FLATCOR", row["flat"])):
        assert header[flag] == f"{master}.fits"
    for key in ("ZEROSUM", "DARKSUM", "FLATSUM"):
        assert len(header[key]) == 16
    assert header["PROFILE"] == profile
    assert header["CCDPROC"].startswith("ccdproc_ext")
    assert header["RAWFILE"] == os.path.basename(row["raw_file"])
    master = fits.getheader(result.output_dir / "masters" / f"{row['bias']}.fits")
    assert master["COMBINED"] is True
    assert master["NCOMBINE"] == 7
    listed = sorted(master[f"IMCMB{i:03d}"] for i in range(1, 8))
    assert listed == sorted(os.path.basename(p) for p in night.paths("bias"))


def test_rerun_does_nothing(reduced):
    profile, night, result = reduced
    outputs = [result.output_dir / "masters" / p.name for p in result.masters.values()]
    outputs += [row["output_file"] for row in result.science]
    before = {str(p): os.stat(p).st_mtime_ns for p in outputs}
    again = reduce_night(night.location, result.output_dir, profile, progress=False)
    assert set(again.science["status"]) == {"up to date"}
    assert {str(p): os.stat(p).st_mtime_ns for p in outputs} == before


def test_calibrating_an_output_again_changes_no_pixel(reduced):
    profile, _night, result = reduced
    path = result.science[0]["output_file"]
    calibrated = CCDData.read(path, unit="adu")
    bias = result.output_dir / "masters" / f"{result.science[0]['bias']}.fits"
    with pytest.warns(CcdprocExtWarning, match="already in the header"):
        again = calibrate_frame(calibrated, profile, master_bias=bias)
    np.testing.assert_array_equal(again.data, calibrated.data)


def test_masters_recover_the_truth(tmp_path):
    night = _simulate(tmp_path / "raw", "palomar-lfc", n_bias=9, n_dark=9, n_flat=9)
    result = reduce_night(tmp_path / "raw", tmp_path / "out", "palomar-lfc", progress=False)
    masters = {name: path for (_, name), path in result.masters.items()}
    n = 9
    rn = night.read_noise_adu
    bias = fits.getdata(masters["bias_01"])
    # A sigma-clipped mean of n frames: noise about rn / sqrt(n), a little more.
    assert abs((bias - night.bias).mean()) < 0.1
    assert (bias - night.bias).std() < 1.2 * rn / np.sqrt(n)
    for name, path in masters.items():
        if not name.startswith("dark"):
            continue
        exposure = fits.getval(path, "EXPTIME")
        dark = fits.getdata(path)
        truth = night.dark_current * exposure
        # read and dark noise of n darks, plus the master bias subtracted from them all
        expected = np.sqrt((rn**2 + truth / night.gain) / n + rn**2 / n)
        hot = night.dark_current > 1.0
        assert abs((dark - truth)[~hot].mean()) < 0.1
        assert (dark - truth)[~hot].std() < 1.3 * expected[~hot].mean()
        # hot pixels are recovered too
        np.testing.assert_allclose(dark[hot], truth[hot], rtol=0.05, atol=5 * rn)
    flat = fits.getdata(masters["flat_R_01"])
    truth = night.flats["R"]
    assert abs(flat.mean() - 1) < 1e-5
    # each flat frame has ~20000 ADU: relative noise ~ 1/sqrt(20000 * gain) per frame
    relative = 1 / np.sqrt(20000 * night.gain * n)
    assert (flat / truth - 1).std() < 1.5 * relative
    # frames are scaled to a median of 1 before combining, so the mean is near 1
    assert fits.getval(masters["flat_R_01"], "FLATNORM") == pytest.approx(1, abs=0.05)


def test_same_result_as_the_guide_reduction(tmp_path):
    """Our chain equals the CCD Data Reduction Guide's, written out with ccdproc."""
    night = _simulate(tmp_path / "raw", "palomar-lfc", science_exposure=45.0,
                      dark_exposures=(2.0, 60.0))
    result = reduce_night(tmp_path / "raw", tmp_path / "out", "palomar-lfc", progress=False,
                          scale_darks=True)
    row = result.science[0]
    masters = tmp_path / "out" / "masters"
    bias = CCDData.read(masters / f"{row['bias']}.fits")
    dark = CCDData.read(masters / f"{row['dark']}.fits")
    flat = CCDData.read(masters / f"{row['flat']}.fits")
    for frame in (bias, dark, flat):
        frame.uncertainty = None
        frame.mask = None
    raw = CCDData.read(night.location / row["raw_file"], unit="adu")
    guide = ccdproc.subtract_overscan(raw, overscan=raw[:, 2055:], median=True)
    guide = ccdproc.trim_image(guide[:, :2048])
    guide = ccdproc.subtract_bias(guide, bias)
    guide = ccdproc.subtract_dark(guide, dark, exposure_time="exptime", exposure_unit=u.s,
                                  scale=True)
    guide = ccdproc.flat_correct(guide, flat)
    ours = fits.getdata(row["output_file"])
    assert row["dark_scale"] == pytest.approx(45 / 60)
    np.testing.assert_allclose(ours, guide.data, rtol=2e-6, atol=2e-3)


def test_dry_run_touches_nothing(tmp_path):
    night = _simulate(tmp_path / "raw", "maxim-ccdsoft")
    result = reduce_night(night.location, tmp_path / "out", "maxim-ccdsoft", dry_run=True)
    assert not (tmp_path / "out").exists()
    assert set(result.plan["type"]) == {"bias", "dark", "flat", "science"}
    assert len(result.science) == 0


def test_output_folder_inside_raw_is_refused(tmp_path):
    night = _simulate(tmp_path / "raw", "maxim-ccdsoft")
    with pytest.raises(CcdprocExtError, match="raw data is never written"):
        reduce_night(night.location, night.location / "reduced", "maxim-ccdsoft")


def test_missing_flat_is_a_problem_found_before_any_pixel(tmp_path):
    _simulate(tmp_path / "raw", "maxim-ccdsoft", filters=("R",), science_filters=("B",))
    result = reduce_night(tmp_path / "raw", tmp_path / "out", "maxim-ccdsoft",
                          progress=False)
    assert len(result.science) == 0
    assert all("no flat in filter 'B'" in p for p in result.problems["problem"])
    with pytest.raises(CcdprocExtError, match="no flat in filter 'B'"):
        reduce_night(tmp_path / "raw", tmp_path / "strict", "maxim-ccdsoft", strict=True)


def test_calibrate_frame_leaves_its_input_alone(tmp_path):
    night = _simulate(tmp_path / "raw", "palomar-lfc")
    raw = read_frame(night.paths("science")[0], ccdproc_ext.get_profile("palomar-lfc"))
    before = raw.data.copy()
    header_before = raw.header.copy()
    calibrate_frame(raw, "palomar-lfc")
    np.testing.assert_array_equal(raw.data, before)
    assert list(raw.header.items()) == list(header_before.items())


def test_real_tircam2_night(real_data, tmp_path):
    """Five calibrated J frames from a camera with no image type and string EXPTIMEs."""
    result = reduce_night(real_data / "dot-tircam2", tmp_path / "out", "dot-tircam2",
                          progress=False)
    assert len(result.problems) == 0, result.summary()
    assert len(result.science) == 5
    assert set(result.science["flat"]) == {"flat_J_01"}
    for row in result.science:
        header = fits.getheader(row["output_file"])
        assert header["FLATCOR"] == "flat_J_01.fits"
        assert header["ZEROCOR"] == "bias_01.fits"
        assert "DARKCOR" not in header  # the night has no darks
        data = fits.getdata(row["output_file"])
        assert data.shape == (512, 512)
        assert np.isfinite(row["sky_level"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reduce_night(real_data / "dot-tircam2", tmp_path / "out", "dot-tircam2",
                     progress=False)


def test_uncertainty_extensions_only_when_asked(tmp_path):
    """Masters and science frames carry an uncertainty only with write_uncertainty, and
    then it is ccdproc's propagation: the science uncertainty is at least the masters'."""
    _simulate(tmp_path / "raw", "maxim-ccdsoft", n_science=1)
    plain = reduce_night(tmp_path / "raw", tmp_path / "plain", "maxim-ccdsoft",
                         progress=False, workers=1)
    full = reduce_night(tmp_path / "raw", tmp_path / "full", "maxim-ccdsoft",
                        progress=False, workers=1, write_uncertainty=True)
    for path in list(plain.masters.values()) + list(plain.science["output_file"]):
        with fits.open(path) as hdul:
            assert "UNCERT" not in hdul
    science = {}
    for result in (plain, full):
        for (kind, _), path in result.masters.items():
            with fits.open(path) as hdul:  # a bad-pixel mask has no uncertainty
                assert ("UNCERT" in hdul) == (result is full and kind != "bpm")
        with fits.open(result.science["output_file"][0]) as hdul:
            science[result is full] = (hdul[0].data, hdul["UNCERT"].data if result is full
                                       else None)
    # The pixels do not depend on whether uncertainties were propagated.
    np.testing.assert_allclose(science[True][0], science[False][0], rtol=1e-6, atol=1e-4)
    row = full.science[0]
    with fits.open(full.masters[("bias", row["bias"])]) as hdul:
        bias_uncertainty = hdul["UNCERT"].data
    # Without create_deviation, the frame's uncertainty is the masters' propagated:
    # bias and dark added in quadrature, divided by the flat (near 1).
    assert np.isfinite(science[True][1]).all()
    assert np.median(science[True][1]) > np.median(bias_uncertainty)
