"""The ``plan``, ``reduce`` and ``demo`` sub-commands of ``ccdproc-ext``."""

import pytest
from astropy.io import fits

from ccdproc_ext.cli import main
from ccdproc_ext.simulate import simulate_night


@pytest.fixture
def raw_night(tmp_path):
    simulate_night(tmp_path / "raw", "maxim-ccdsoft", shape=(24, 28), n_bias=3, n_dark=3,
                   n_flat=3, filters=("R",), n_science=2)
    return tmp_path / "raw"


def test_plan_prints_every_frame(raw_night, capsys):
    assert main(["plan", str(raw_night), "--profile", "maxim-ccdsoft"]) == 0
    out = capsys.readouterr().out
    assert "light_R_001.fits" in out or "object_R_001.fits" in out
    assert "flat_R_01" in out
    # 3 bias + 3 darks at each of 2 s and 60 s + 3 flats + 2 science frames
    assert "14 frames, 4 masters planned, 0 with problems" in out


def test_reduce_writes_science_frames(raw_night, tmp_path, capsys):
    out_dir = tmp_path / "out"
    assert main(["reduce", str(raw_night), str(out_dir), "--profile", "maxim-ccdsoft",
                 "--quiet"]) == 0
    written = sorted((out_dir / "science").glob("*.fits"))
    assert len(written) == 2
    assert fits.getval(written[0], "FLATCOR") == "flat_R_01.fits"
    assert "science frames: 2 written" in capsys.readouterr().out


def test_reduce_dry_run_writes_nothing(raw_night, tmp_path, capsys):
    assert main(["reduce", str(raw_night), str(tmp_path / "out"), "--profile",
                 "maxim-ccdsoft", "--dry-run"]) == 0
    assert not (tmp_path / "out").exists()
    assert "bias_01" in capsys.readouterr().out


def test_reduce_with_nothing_reducible_fails(tmp_path, capsys):
    simulate_night(tmp_path / "raw", "maxim-ccdsoft", shape=(24, 28), n_bias=3, n_dark=3,
                   n_flat=3, filters=("R",), science_filters=("B",), n_science=1)
    status = main(["reduce", str(tmp_path / "raw"), str(tmp_path / "out"), "--profile",
                   "maxim-ccdsoft", "--quiet"])
    assert status == 1
    captured = capsys.readouterr()
    assert "no flat in filter 'B'" in captured.out
    assert "none of the 1 science frames could be reduced" in captured.err
    strict = main(["reduce", str(tmp_path / "raw"), str(tmp_path / "strict"), "--profile",
                   "maxim-ccdsoft", "--strict", "--quiet"])
    assert strict == 1
    assert "no flat in filter 'B'" in capsys.readouterr().err


def test_type_override_must_be_pattern_equals_type(raw_night, capsys):
    assert main(["plan", str(raw_night), "--type", "flat-*"]) == 1
    assert "PATTERN=TYPE" in capsys.readouterr().err


def test_demo(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "demo"), "--profile", "maxim-ccdsoft",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "science frames: 6 written" in out
    assert len(list((tmp_path / "demo" / "reduced" / "science").glob("*.fits"))) == 6
