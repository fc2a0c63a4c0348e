"""The calibration library: nights reduced with the masters of other nights.

Nights are simulated with the generic profile (frames of 32 x 40 pixels, an overscan in
columns 33-40), a few days apart. References are ccdproc's own functions applied to the
library's master files, numbers and words written out here, and the files on disk.
"""

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap

import astropy.units as u
import ccdproc
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

from ccdproc_ext import CalibrationLibrary, reduce_night
from ccdproc_ext.cli import main
from ccdproc_ext.exceptions import CcdprocExtError, HeaderError, LibraryError
from ccdproc_ext.simulate import simulate_night

SHAPE = (32, 40)


def calibration_night(folder, start="2024-03-01T01:00:00", **options):
    """Biases, 60 s darks and V flats, no science frame."""
    return simulate_night(folder, shape=SHAPE, n_bias=3, dark_exposures=(60.0,), n_dark=3,
                          filters=("V",), n_flat=3, n_science=0, start=start, **options)


def science_night(folder, start, **options):
    """Two 60 s science frames in V, and no calibration at all."""
    options.setdefault("seed", 7)
    return simulate_night(folder, shape=SHAPE, n_bias=0, dark_exposures=(), n_dark=0,
                          filters=(), n_flat=0, science_filters=("V",), n_science=2,
                          start=start, **options)


@pytest.fixture
def library_of_one_night(tmp_path):
    """A library holding the masters of the night of 2024-03-01."""
    calibration_night(tmp_path / "raw1")
    library = tmp_path / "calibrations.db"
    reduce_night(tmp_path / "raw1", tmp_path / "out1", library=library, progress=False,
                 workers=1)
    return library


def by_hand(raw_path, bias_path, dark_path, flat_path):
    """The generic profile's chain, with ccdproc's functions on the master files."""
    def read(path):
        ccd = CCDData.read(path, unit="adu")
        ccd.data = ccd.data.astype(np.float32)
        return ccd

    ccd = read(raw_path)
    ccd = ccdproc.subtract_overscan(ccd, fits_section="[33:40,1:32]", overscan_axis=1,
                                    median=True)
    ccd = ccdproc.trim_image(ccd, fits_section="[1:32,1:32]")
    ccd = ccdproc.subtract_bias(ccd, read(bias_path))
    ccd = ccdproc.subtract_dark(ccd, read(dark_path), exposure_time="EXPTIME",
                                exposure_unit=u.s, scale=False)
    return ccdproc.flat_correct(ccd, read(flat_path))


def test_a_night_without_calibrations_reduced_from_the_library(tmp_path, library_of_one_night):
    """The default call (no profile) with a library: two days later, every master comes
    from the library, and the frames equal ccdproc's chain with those master files."""
    science_night(tmp_path / "raw2", "2024-03-03T02:00:00")
    result = reduce_night(tmp_path / "raw2", tmp_path / "out2", library=library_of_one_night,
                          progress=False, workers=1)
    masters = tmp_path / "out1" / "masters"
    # (and the night's bad-pixel mask, built from the library's dark and flat)
    assert sorted(name for kind, name in result.masters if kind != "bpm") == [
        "bias_01@2024-03-01", "dark_60s_01@2024-03-01", "flat_V_01@2024-03-01"]
    for row in result.plan:
        assert row["bias_rule"].startswith("library: bias_01 of 2024-03-01, 2.0 days before")
        assert row["flat_rule"].startswith("library: flat_V_01 of 2024-03-01, 2.0 days before")
    table = result.plan.meta["masters"]
    assert set(table["origin"]) == {"library"}
    assert sorted(os.path.basename(p) for p in table["path"]) == [
        "bias_01.fits", "dark_60s_01.fits", "flat_V_01.fits"]
    assert len(result.problems) == 0
    assert not any("not bias-subtracted" in note for note in result.notes["note"])
    assert len(result.science) == 2
    for row in result.science:
        ours = CCDData.read(row["output_file"], unit="adu")
        expected = by_hand(tmp_path / "raw2" / row["raw_file"], masters / "bias_01.fits",
                           masters / "dark_60s_01.fits", masters / "flat_V_01.fits")
        np.testing.assert_allclose(ours.data, expected.data, rtol=1e-5, atol=1e-3)
        assert ours.header["ZEROCOR"] == "bias_01.fits"
        assert ours.header["FLATCOR"] == "flat_V_01.fits"


def test_a_master_of_the_night_wins_over_the_library(tmp_path, library_of_one_night):
    simulate_night(tmp_path / "raw2", shape=SHAPE, n_bias=2, dark_exposures=(), n_dark=0,
                   filters=(), n_flat=0, science_filters=("V",), n_science=1,
                   start="2024-03-02T01:00:00", seed=3)
    plan = reduce_night(tmp_path / "raw2", tmp_path / "out2", library=library_of_one_night,
                        dry_run=True, progress=False).plan
    science = plan[plan["type"] == "science"][0]
    assert science["bias"] == "bias_01"
    assert science["bias_rule"] == "same group"
    assert science["dark"] == "dark_60s_01@2024-03-01"


def test_the_night_registers_its_masters(tmp_path, library_of_one_night):
    table = CalibrationLibrary(library_of_one_night).table()
    assert sorted(table["kind"]) == ["bias", "dark", "flat"]
    assert set(table["shape"]) == {"32x40"}
    assert set(table["n_frames"]) == {3}
    assert set(table["profile"]) == {"generic"}
    flat = table[table["kind"] == "flat"][0]
    assert flat["filter"] == "V"
    assert flat["path"] == "out1/masters/flat_V_01.fits"  # relative to the library
    dark = table[table["kind"] == "dark"][0]
    assert dark["exposure"] == 60.0
    assert dark["temperature"] == -10.0
    # 2024-03-01 is MJD 60370; the darks were taken at 01:01:30, 01:03:00 and 01:04:30
    assert dark["mjd_first"] == pytest.approx(60370 + 61.5 / 1440, abs=1e-7)
    assert dark["mjd_last"] == pytest.approx(60370 + 64.5 / 1440, abs=1e-7)
    # Reducing the same night again registers the same masters again, not new rows.
    reduce_night(tmp_path / "raw1", tmp_path / "out1", library=library_of_one_night,
                 progress=False, workers=1)
    assert len(CalibrationLibrary(library_of_one_night).table()) == 3


@pytest.mark.parametrize("days_later, validity, library_kinds", [
    (2.0, None, {"bias", "dark", "flat"}),
    (4.0, None, {"bias", "dark"}),  # flats: 3 days by default
    (4.0, {"flat": 5}, {"bias", "dark", "flat"}),
    (4.0, {"flat": None}, {"bias", "dark", "flat"}),
    (4.0, {"bias": 1, "dark": 3.9}, set()),
    (40.0, None, set()),
    (40.0, {"bias": None, "dark": 41, "flat": 40.5}, {"bias", "dark", "flat"}),
])
def test_validity_window(tmp_path, library_of_one_night, days_later, validity, library_kinds):
    start = (np.datetime64("2024-03-01T01:05") + np.timedelta64(int(days_later * 24), "h"))
    science_night(tmp_path / "raw2", str(start))
    plan = reduce_night(tmp_path / "raw2", tmp_path / "out2", library=library_of_one_night,
                        validity=validity, dry_run=True, progress=False).plan
    for row in plan:
        used = {kind for kind in ("bias", "dark", "flat") if row[kind]}
        assert used == library_kinds
        for kind in {"bias", "dark", "flat"} - library_kinds:
            assert f"library calibrations.db: no {kind} of profile generic within" \
                in row["notes"]


def test_a_master_changed_on_disk_is_refused_and_the_next_one_taken(tmp_path):
    library = tmp_path / "calibrations.db"
    for night, start in (("a", "2024-03-01T01:00:00"), ("b", "2024-03-02T01:00:00")):
        calibration_night(tmp_path / f"raw_{night}", start=start, seed=ord(night))
        reduce_night(tmp_path / f"raw_{night}", tmp_path / f"out_{night}", library=library,
                     progress=False, workers=1)
    changed = tmp_path / "out_b" / "masters" / "bias_01.fits"
    with fits.open(changed, mode="update") as hdul:
        hdul[0].data[0, 0] += 1
    (tmp_path / "out_b" / "masters" / "flat_V_01.fits").unlink()
    science_night(tmp_path / "raw_c", "2024-03-03T01:00:00")
    result = reduce_night(tmp_path / "raw_c", tmp_path / "out_c", library=library,
                          progress=False, workers=1)
    for row in result.plan:
        assert row["bias_rule"].startswith("library: bias_01 of 2024-03-01")  # not b's
        assert row["dark_rule"].startswith("library: dark_60s_01 of 2024-03-02")  # b's
        assert row["flat_rule"].startswith("library: flat_V_01 of 2024-03-01")
    problems = {os.path.basename(str(f)): text
                for f, text in zip(result.problems["file"], result.problems["problem"],
                                   strict=True)}
    assert "library master bias_01 not used: changed since it was registered" in \
        problems["bias_01.fits"]
    assert problems["flat_V_01.fits"] == "library master flat_V_01 not used: file missing"
    assert result.n_science_reduced == 2
    header = fits.getheader(result.science["output_file"][0])
    used = tmp_path / "out_a" / "masters" / "bias_01.fits"
    assert header["ZEROSUM"] == hashlib.blake2b(used.read_bytes()).hexdigest()[:16]
    verified = CalibrationLibrary(library).verify()
    assert len(verified) == 2
    assert any(str(changed) in problem and "changed since it was registered" in problem
               for problem in verified)


def test_a_library_moved_with_its_masters_still_works(tmp_path):
    first = tmp_path / "first"
    calibration_night(first / "raw1")
    reduce_night(first / "raw1", first / "out1", library=first / "calibrations.db",
                 progress=False, workers=1)
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(first, moved)
    library = CalibrationLibrary(moved / "calibrations.db")
    assert library.verify() == []
    science_night(tmp_path / "raw2", "2024-03-02T01:00:00")
    result = reduce_night(tmp_path / "raw2", tmp_path / "out2", library=library,
                          progress=False, workers=1)
    assert result.n_science_reduced == 2
    paths = {str(p) for p in result.plan.meta["masters"]["path"]}
    assert paths == {str(moved / "out1" / "masters" / f"{n}.fits")
                     for n in ("bias_01", "dark_60s_01", "flat_V_01")}


def fake_master(path, kind, *, exptime=0.0, filter_name=None, date="2024-03-01T01:00:00"):
    header = fits.Header({"MASTTYPE": kind, "EXPTIME": exptime, "DATE-OBS": date,
                          "NCOMBINE": 4, "PROFILE": "generic"})
    if filter_name:
        header["FILTER"] = filter_name
    fits.PrimaryHDU(np.zeros((6, 5), np.float32), header=header).writeto(path)
    return path


@pytest.mark.parametrize(("kind", "keys", "expected"), [
    # The plan's rules (the one matcher): a dark within the tolerance, the nearest
    # exposure first, then the nearest in time; never a dark to scale.
    ("dark", {"exposure": 60.3}, "dark_60_far"),
    ("dark", {"exposure": 30.0}, None),
    ("dark", {"exposure": 30.0, "dark_tolerance": 40.0}, "dark_60_near"),
    # A frame that names no filter takes the flats of its group when they are all of one
    # filter, as in the plan.
    ("flat", {"filter": ""}, "flat_R"),
    ("flat", {"filter": "V"}, None),
])
def test_find_chooses_by_the_plans_rules(tmp_path, kind, keys, expected):
    library = CalibrationLibrary(tmp_path / "calibrations.db")
    for name, master_kind, exptime, filter_name, date in (
            ("dark_60_far.fits", "dark", 60.0, None, "2024-03-01T01:00:00"),
            ("dark_61_near.fits", "dark", 61.0, None, "2024-03-02T23:00:00"),
            ("dark_60_near.fits", "dark", 59.5, None, "2024-03-02T22:00:00"),
            ("flat_R.fits", "flat", 2.0, "R", "2024-03-02T01:00:00")):
        library.add(fake_master(tmp_path / name, master_kind, exptime=exptime,
                                filter_name=filter_name, date=date))
    row = library.find(kind, shape="6x5", mjd=60372.0, **keys)
    assert (None if row is None else row["name"]) == expected


_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from ccdproc_ext import CalibrationLibrary
    library = CalibrationLibrary(sys.argv[1])
    for path in sorted(Path(sys.argv[2]).glob("*.fits")):
        library.add(path)
""")


def test_two_processes_writing_one_library_lose_nothing(tmp_path):
    for writer in ("a", "b"):
        (tmp_path / writer).mkdir()
        for i in range(25):
            fake_master(tmp_path / writer / f"dark_{i:02d}.fits", "dark", exptime=i + 1.0)
    library = tmp_path / "calibrations.db"
    processes = [subprocess.Popen([sys.executable, "-c", _WRITER, str(library),
                                   str(tmp_path / writer)], stderr=subprocess.PIPE, text=True)
                 for writer in ("a", "b")]
    errors = [process.communicate(timeout=300)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], errors
    table = CalibrationLibrary(library).table()
    assert len(table) == 50
    assert sorted(table["path"]) == sorted(f"{w}/dark_{i:02d}.fits" for w in "ab"
                                           for i in range(25))


def test_add_reads_the_header_and_find_takes_the_nearest(tmp_path):
    library = CalibrationLibrary(tmp_path / "lib" / "calibrations.db")
    early = fake_master(tmp_path / "early.fits", "flat", exptime=2.0, filter_name="R",
                        date="2024-03-01T01:00:00")
    late = fake_master(tmp_path / "late.fits", "flat", exptime=2.0, filter_name="R",
                       date="2024-03-04T01:00:00")
    fake_master(tmp_path / "other.fits", "flat", exptime=2.0, filter_name="V",
                date="2024-03-05T01:00:00")
    for name in ("early", "late", "other"):
        library.add(tmp_path / f"{name}.fits")
    row = library.table()[0]
    assert (row["kind"], row["shape"], row["xbin"], row["filter"], row["n_frames"]) == \
        ("flat", "6x5", 1, "R", 4)
    assert row["path"] == "../early.fits"
    frame = {"shape": "6x5", "filter": "R"}
    assert library.find("flat", mjd=60373.0, **frame)["path"] == "../late.fits"
    assert library.find("flat", mjd=60370.5, **frame)["path"] == "../early.fits"
    assert library.find("flat", mjd=60380.0, **frame) is None  # 3 days
    assert library.find("flat", mjd=60380.0, validity=None, **frame)["path"] == "../late.fits"
    assert library.find("flat", mjd=60373.0, shape="6x6", filter="R") is None
    late.write_bytes(late.read_bytes()[:2880])  # truncated: refused, the next one taken
    assert library.find("flat", mjd=60373.0, **frame)["path"] == "../early.fits"
    assert library.remove(early) == 1
    assert library.remove(early) == 0
    assert sorted(library.table()["path"]) == ["../late.fits", "../other.fits"]


def test_add_refuses_what_it_cannot_read(tmp_path):
    library = CalibrationLibrary(tmp_path / "calibrations.db")
    with pytest.raises(LibraryError, match=r"nothing\.fits: cannot read the master"):
        library.add(tmp_path / "nothing.fits")
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(np.zeros((4, 4))).writeto(plain)
    with pytest.raises(HeaderError, match=r"plain\.fits: MASTTYPE = None: not a master"):
        library.add(plain)
    trimmed = tmp_path / "trimmed.fits"
    fits.PrimaryHDU(np.zeros((4, 4)), header=fits.Header(
        {"MASTTYPE": "bias", "TRIM": "[1:4,1:4]"})).writeto(trimmed)
    with pytest.raises(HeaderError, match="shape of the raw frames"):
        library.add(trimmed)
    assert library.add(trimmed, shape="4x6")["shape"] == "4x6"
    with pytest.raises(LibraryError, match="validity\\['flat'\\] = 'three'"):
        CalibrationLibrary(tmp_path / "x.db", validity={"flat": "three"})
    with pytest.raises(LibraryError, match="'science' is not a kind of master"):
        CalibrationLibrary(tmp_path / "x.db", validity={"science": 1})


def test_a_file_that_is_not_a_library(tmp_path):
    bad = tmp_path / "calibrations.db"
    bad.write_text("not a database at all, " * 100)
    with pytest.raises(LibraryError, match="not a calibration library"):
        CalibrationLibrary(bad).table()
    assert isinstance(LibraryError("x"), CcdprocExtError)


def test_a_locked_library_is_waited_for(tmp_path):
    library = CalibrationLibrary(tmp_path / "calibrations.db")
    library.add(fake_master(tmp_path / "a.fits", "bias"))
    holder = sqlite3.connect(library.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    script = textwrap.dedent(f"""
        from ccdproc_ext import CalibrationLibrary
        CalibrationLibrary({str(library.path)!r}).add({str(tmp_path / 'b.fits')!r})
    """)
    fake_master(tmp_path / "b.fits", "bias")
    process = subprocess.Popen([sys.executable, "-c", script])
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=1.5)  # still waiting for the lock
    finally:
        holder.execute("COMMIT")
        holder.close()
    assert process.wait(timeout=60) == 0
    assert len(library.table()) == 2


def test_command_line(tmp_path, library_of_one_night, capsys):
    library = str(library_of_one_night)
    assert main(["library", "list", library]) == 0
    listed = capsys.readouterr().out
    assert "flat_V_01" in listed and "2024-03-01" in listed
    assert main(["library", "verify", library]) == 0
    capsys.readouterr()
    master = tmp_path / "out1" / "masters" / "bias_01.fits"
    assert main(["library", "remove", library, str(master)]) == 0
    assert main(["library", "remove", library, str(master)]) == 1
    assert "is not in" in capsys.readouterr().err
    assert main(["library", "add", library, str(master)]) == 1  # trimmed: shape needed
    err = capsys.readouterr().err
    assert err.startswith("ccdproc-ext: error:") and "Traceback" not in err
    assert main(["library", "add", library, str(master), "--shape", "32x40"]) == 0
    master.unlink()
    assert main(["library", "verify", library]) == 1
    assert "bias_01.fits: file missing" in capsys.readouterr().out
    science_night(tmp_path / "raw2", "2024-03-02T01:00:00")
    status = main(["reduce", str(tmp_path / "raw2"), str(tmp_path / "out2"), "--library",
                   library, "-q", "--workers", "1"])
    captured = capsys.readouterr()
    # The library's bias is missing: a calibration missing, not a step to leave out. No
    # frame is written without its bias, and the exit status says nothing was reduced.
    assert status == 1
    assert "library master bias_01 not used: file missing" in captured.out
    assert "library master bias_01@2024-03-01 cannot be used" in captured.out
    assert "not bias-subtracted" not in captured.out
    assert "none of the 2 science frames could be reduced" in captured.err
    assert "Traceback" not in captured.err
    assert not list((tmp_path / "out2" / "science").glob("*.fits"))
