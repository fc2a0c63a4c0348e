"""A re-run decides from the outputs' recorded recipes: with everything up to date it
reads no raw pixels, builds no master and draws no thumbnail again; what changed (a raw
file, a deleted output) is redone, and only that.

Every test reduces its own copy of a small simulated night (two filters, two science
frames each) with ``workers=1``, so that the readers counted here are the ones that run.
Files that were not redone keep their modification time; files that were have new
contents, compared with a reduction or a report made afresh.
"""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from matplotlib.image import imread

from ccdproc_ext import raw as raw_module
from ccdproc_ext import reduce_night, report
from ccdproc_ext.outputs import recorded_header
from ccdproc_ext.report import write_report
from ccdproc_ext.simulate import simulate_night

SHAPE = (32, 40)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume") / "raw"
    night = simulate_night(folder, "generic", shape=SHAPE, n_bias=3, n_dark=2, n_flat=2,
                           filters=("V", "R"), n_science=2, n_stars=3, seed=5)
    return folder, night.files


@pytest.fixture
def night(simulated, tmp_path):
    """A copy of the raw night (so that a test may change it) and its first reduction."""
    raw = tmp_path / "raw"
    shutil.copytree(simulated[0], raw)
    result = reduce_night(raw, tmp_path / "out", progress=False, workers=1)
    assert len(result.problems) == 0
    return raw, tmp_path / "out", simulated[1]


def _stamps(out):
    """Modification time of every output, picture and table, by relative path."""
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns
            for p in Path(out).rglob("*") if p.is_file()}


def _statuses(result):
    return {str(f): str(s) for f, s in zip(result.science["raw_file"],
                                           result.science["status"], strict=True)}


@pytest.fixture
def reads(monkeypatch):
    """Every file whose pixels the package reads: raw frames and masters through the
    reader, and the files the report draws thumbnails of."""
    seen = []
    read_frame, file_sample = raw_module._read_frame, report.read_sample

    def counting_read_frame(path, *args, **kwargs):
        seen.append(Path(path).resolve())
        return read_frame(path, *args, **kwargs)

    def counting_file_sample(path, *args, **kwargs):
        seen.append(Path(path).resolve())
        return file_sample(path, *args, **kwargs)

    monkeypatch.setattr(raw_module, "_read_frame", counting_read_frame)
    monkeypatch.setattr(report, "read_sample", counting_file_sample)
    return seen


def _touch_pixels(path, add):
    """Change a raw frame's pixels (its size stays), and its time for certain."""
    before = path.stat().st_mtime_ns
    with fits.open(path) as hdul:
        data = hdul[0].data.astype(np.int64) + add
        hdu = fits.PrimaryHDU(data.astype(hdul[0].data.dtype), header=hdul[0].header)
    hdu.writeto(path, overwrite=True)
    os.utime(path, ns=(before + 10**10, before + 10**10))


def test_the_counted_readers_see_a_first_reduction(simulated, tmp_path, reads):
    """The counting below is not blind: a first reduction reads every raw frame."""
    reduce_night(simulated[0], tmp_path / "out", progress=False, workers=1)
    raw_files = {(simulated[0] / str(f)).resolve() for f in simulated[1]["file"]}
    assert raw_files <= set(reads)
    assert any(path.parent == (tmp_path / "out" / "science").resolve() for path in reads)


def test_an_up_to_date_rerun_reads_no_pixels_and_rewrites_nothing(night, reads):
    raw, out, _ = night
    before = _stamps(out)
    result = reduce_night(raw, out, progress=False, workers=1)
    assert set(_statuses(result).values()) == {"up to date"}
    assert len(result.problems) == 0
    # (the masters are read: what the science frames' recipes hold is their checksum)
    assert [path for path in reads if path.parent != (out / "masters").resolve()] == []
    after = _stamps(out)
    assert after.keys() == before.keys()
    # Masters, science frames and thumbnails are the same files; only the tables and the
    # page (and the sky plot and masters' pictures, drawn each time) are written again.
    unchanged = [name for name in before if name.startswith(("masters/", "science/"))
                 or name.startswith(("report/raw_", "report/science_"))]
    assert len(unchanged) >= 5 + 4 + 8
    assert {name: after[name] for name in unchanged} == {name: before[name]
                                                        for name in unchanged}


def test_a_changed_raw_frame_is_redone_alone(night, tmp_path):
    raw, out, files = night
    science = sorted(str(f) for f, t in zip(files["file"], files["type"], strict=True)
                     if t == "science")
    changed = science[0]
    _touch_pixels(raw / changed, add=7)
    before = _stamps(out)
    result = reduce_night(raw, out, progress=False, workers=1)
    statuses = _statuses(result)
    assert statuses.pop(changed) == "written"
    assert set(statuses.values()) == {"up to date"}
    after = _stamps(out)
    redone = sorted(name for name in before if after[name] != before[name]
                    and name.startswith(("masters/", "science/", "report/raw_",
                                         "report/science_")))
    stem = Path(changed).stem
    assert redone == [f"report/raw_{stem}.png", f"report/science_{stem}.png",
                      f"science/{stem}.fits"]
    # What was redone is what a reduction from scratch makes of the changed night.
    fresh = reduce_night(raw, tmp_path / "fresh", progress=False, workers=1)
    assert len(fresh.problems) == 0
    np.testing.assert_array_equal(fits.getdata(out / "science" / f"{stem}.fits"),
                                  fits.getdata(tmp_path / "fresh" / "science" / f"{stem}.fits"))


def test_thumbnails_kept_are_those_a_fresh_report_draws(night, tmp_path):
    raw, out, files = night
    changed = sorted(str(f) for f, t in zip(files["file"], files["type"], strict=True)
                     if t == "science")[-1]
    _touch_pixels(raw / changed, add=-5)
    reduce_night(raw, out, progress=False, workers=1)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "report")
    write_report(copy)
    kept = sorted(p.name for p in (out / "report").glob("*.png"))
    assert kept == sorted(p.name for p in (copy / "report").glob("*.png"))
    for name in kept:
        if name.startswith(("raw_", "science_")):
            np.testing.assert_array_equal(imread(out / "report" / name),
                                          imread(copy / "report" / name), err_msg=name)


def test_a_deleted_output_is_redone_alone(night):
    raw, out, _ = night
    outputs = sorted((out / "science").glob("*.fits"))
    deleted = outputs[1]
    expected = fits.getdata(deleted)
    deleted.unlink()
    before = _stamps(out)
    result = reduce_night(raw, out, progress=False, workers=1)
    statuses = list(_statuses(result).values())
    assert sorted(statuses) == ["up to date"] * (len(outputs) - 1) + ["written"]
    after = _stamps(out)
    assert {n for n in before if n.startswith(("masters/", "science/"))
            and after[n] != before[n]} == set()
    np.testing.assert_array_equal(fits.getdata(deleted), expected)


def test_a_changed_flat_rebuilds_its_master_and_the_frames_of_its_filter(night):
    raw, out, files = night
    flat = sorted(str(f) for f, t, b in zip(files["file"], files["type"], files["filter"],
                                            strict=True) if t == "flat" and b == "R")[0]
    _touch_pixels(raw / flat, add=300)
    before = _stamps(out)
    result = reduce_night(raw, out, progress=False, workers=1)
    by_filter = {str(f): str(b) for f, b in zip(files["file"], files["filter"], strict=True)}
    for raw_file, status in _statuses(result).items():
        assert status == ("written" if by_filter[raw_file] == "R" else "up to date"), raw_file
    after = _stamps(out)
    rebuilt = sorted(n for n in before if n.startswith("masters/") and after[n] != before[n])
    assert rebuilt and all("_R" in name or name.startswith("masters/bpm") for name in rebuilt)
    assert any(name.startswith("masters/flat") for name in rebuilt), rebuilt


@pytest.mark.parametrize("content, expected", [
    (None, False),  # no file
    (b"", False),  # empty
    (b"not a FITS file at all" * 200, False),
    ("other", False),  # made by another recipe
    ("abc123", True),
])
def test_recorded_header(tmp_path, content, expected):
    path = tmp_path / "output.fits"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        hdu = fits.PrimaryHDU(np.zeros((4, 4), np.float32))
        hdu.header["RECIPE"] = content
        hdu.header["SKYLEVEL"] = 12.5
        hdu.writeto(path)
    header = recorded_header(path, "abc123")
    assert (header is not None) == expected
    if expected:
        assert header["SKYLEVEL"] == 12.5
