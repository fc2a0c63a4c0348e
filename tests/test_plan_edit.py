"""Plans edited by the user: a dry run's plan written to ECSV, changed, and executed.

The night (generic profile, 32 x 40 frames): biases at -10 C, darks of 60 s, flats in V
and R, two science frames in V; biases taken colder (-20 C) and biases binned 2 x 2 form
two more bias groups. Expected masters are named as the dry run's table of masters lists
them, which is what a user reads before editing.
"""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from ccdproc_ext import CalibrationMatchError, reduce_night
from ccdproc_ext.cli import main
from ccdproc_ext.plans import read_plan, write_plan
from ccdproc_ext.simulate import simulate_night

SHAPE = (32, 40)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    folder = tmp_path_factory.mktemp("night") / "raw"
    simulate_night(folder, shape=SHAPE, n_bias=3, dark_exposures=(60.0,), n_dark=2,
                   filters=("V", "R"), n_flat=3, science_filters=("V",), n_science=2)
    simulate_night(folder, shape=SHAPE, n_bias=2, dark_exposures=(), n_dark=0, filters=(),
                   n_flat=0, n_science=0, temperature=-20.0, prefix="cold_", seed=1)
    simulate_night(folder, shape=SHAPE, n_bias=2, dark_exposures=(), n_dark=0, filters=(),
                   n_flat=0, n_science=0, binning=(2, 2), prefix="binned_", seed=2)
    return folder


@pytest.fixture
def dry_run(raw, tmp_path):
    """The dry run's plan, written to plan.ecsv as a user would, and read back."""
    result = reduce_night(raw, tmp_path / "out", dry_run=True, progress=False)
    write_plan(result.plan, tmp_path / "plan.ecsv")
    return Table.read(tmp_path / "plan.ecsv")


def bias_named(plan, *, temperature=-10.0, binning="1x1"):
    """The master bias of the dry run's masters table with these properties."""
    masters = plan.meta["masters"]
    rows = masters[(masters["kind"] == "bias") & (masters["temperature"] == temperature)
                   & np.array([f"binning {binning}" in g for g in masters["group"]])]
    assert len(rows) == 1
    return str(rows["name"][0])


def edited(table, tmp_path, changes):
    """``table`` with cells changed, ``{(file, column): value}``, written to a file."""
    table = table.copy()
    for (file, column), value in changes.items():
        index = list(table["file"]).index(file)
        cells = table[column].filled("") if hasattr(table[column], "filled") else table[column]
        column_values = [str(v) for v in cells]
        column_values[index] = value
        table[column] = column_values
    path = tmp_path / "edited.ecsv"
    table.write(path, overwrite=True)
    return path


def row_number(table, file):
    return list(table["file"]).index(file) + 1


def reduce(raw, tmp_path, plan):
    return reduce_night(raw, tmp_path / "out", plan=plan, progress=False, workers=1)


def test_the_plan_as_written_gives_the_automatic_night(raw, tmp_path, dry_run):
    ours = reduce(raw, tmp_path, tmp_path / "plan.ecsv")
    assert set(ours.plan["edit"]) == {""}
    assert ours.n_science_reduced == 2
    for output in ours.science["output_file"]:
        assert "PLANEDIT" not in fits.getheader(output)


def test_a_frame_removed(raw, tmp_path, dry_run):
    plan = dry_run[dry_run["file"] != "bias_002.fits"]
    result = reduce(raw, tmp_path, plan)
    assert "bias_002.fits" not in result.plan["file"]
    warm = bias_named(result.plan)
    header = fits.getheader(tmp_path / "out" / "masters" / f"{warm}.fits")
    assert header["NCOMBINE"] == 2
    assert [header["IMCMB001"], header["IMCMB002"]] == ["bias_001.fits", "bias_003.fits"]


def test_a_type_changed(raw, tmp_path, dry_run):
    path = edited(dry_run, tmp_path, {"flat_V_003.fits": None} if False else {})
    table = Table.read(path)
    table["type"] = [("science" if f == "flat_V_003.fits" else str(t))
                     for f, t in zip(table["file"], table["type"], strict=True)]
    result = reduce(raw, tmp_path, table)
    row = result.plan[result.plan["file"] == "flat_V_003.fits"][0]
    assert row["type"] == "science"
    assert row["edit"] == "type: science (set in the plan)"
    assert sorted(result.science["raw_file"]) == ["flat_V_003.fits", "object_V_001.fits",
                                                  "object_V_002.fits"]
    output = result.science["output_file"][list(result.science["raw_file"])
                                           .index("flat_V_003.fits")]
    assert fits.getheader(output)["PLANEDIT"] == "type: science (set in the plan)"
    flat = result.plan.meta["masters"]
    flat = flat[flat["name"] == row["flat"]][0]
    assert flat["files"] == "flat_V_001.fits,flat_V_002.fits"


def test_a_master_swapped(raw, tmp_path, dry_run):
    warm = bias_named(reduce_night(raw, tmp_path / "o", dry_run=True, progress=False).plan)
    cold = bias_named(reduce_night(raw, tmp_path / "o", dry_run=True, progress=False).plan,
                      temperature=-20.0)
    assert dry_run["bias"][row_number(dry_run, "object_V_001.fits") - 1] == warm
    plan = edited(dry_run, tmp_path, {("object_V_001.fits", "bias"): cold})
    result = reduce(raw, tmp_path, plan)
    row = result.plan[result.plan["file"] == "object_V_001.fits"][0]
    assert row["bias"] == cold
    assert row["edit"] == f"bias: {cold} instead of {warm}"
    assert row["bias_rule"].startswith("set in the plan: same group")
    assert "bias at -20 C, 10 C from the frame" in row["notes"]
    headers = {str(r["raw_file"]): fits.getheader(r["output_file"]) for r in result.science}
    assert headers["object_V_001.fits"]["ZEROCOR"] == f"{cold}.fits"
    assert headers["object_V_001.fits"]["PLANEDIT"] == f"bias: {cold} instead of {warm}"
    assert headers["object_V_002.fits"]["ZEROCOR"] == f"{warm}.fits"
    assert "PLANEDIT" not in headers["object_V_002.fits"]


def test_a_step_left_out(raw, tmp_path, dry_run):
    plan = edited(dry_run, tmp_path, {("object_V_002.fits", "flat"): ""})
    result = reduce(raw, tmp_path, plan)
    headers = {str(r["raw_file"]): fits.getheader(r["output_file"]) for r in result.science}
    assert "FLATCOR" not in headers["object_V_002.fits"]
    assert headers["object_V_002.fits"]["PLANEDIT"] == "flat: none instead of flat_V_01"
    assert headers["object_V_001.fits"]["FLATCOR"] == "flat_V_01.fits"


@pytest.mark.parametrize("file, column, value, words", [
    ("object_V_001.fits", "flat", "flat_R_01",
     "column 'flat': flat_R_01 cannot calibrate this frame: no flat in filter 'V'; "
     "flats exist for 'R'"),
    ("object_V_001.fits", "bias", "BINNED",
     "column 'bias': BINNED cannot calibrate this frame: no bias matches 32x40, "
     "binning 1x1; the bias frames are: 32x40, binning 2x2"),
    ("object_V_001.fits", "bias", "flat_V_01", "column 'bias': flat_V_01 is a flat, not a bias"),
    ("object_V_001.fits", "dark", "dark_30s_01",
     "column 'dark': there is no master 'dark_30s_01'; the dark masters of the plan are: "
     "dark_60s_01"),
    ("flat_R_001.fits", "type", "Flat Field",
     "column 'type': 'flat field' is not a frame type; expected one of bias, dark, flat, "
     "science"),
])
def test_an_invalid_edit_is_refused_naming_row_and_column(raw, tmp_path, dry_run, file,
                                                          column, value, words):
    if value == "BINNED":
        value = bias_named(reduce_night(raw, tmp_path / "o", dry_run=True,
                                        progress=False).plan, binning="2x2")
        words = words.replace("BINNED", value)
    plan = edited(dry_run, tmp_path, {(file, column): value})
    with pytest.raises(CalibrationMatchError) as error:
        reduce(raw, tmp_path, plan)
    assert str(error.value).endswith(f"row {row_number(dry_run, file)} ({file}), {words}") \
        or f"row {row_number(dry_run, file)} ({file}), {words}" in str(error.value)
    assert not (tmp_path / "out" / "science").exists()  # refused before anything is written


def test_rows_that_are_not_of_this_night(raw, tmp_path, dry_run):
    table = dry_run.copy()
    table.add_row({"file": "elsewhere.fits", "type": "bias"})
    with pytest.raises(CalibrationMatchError,
                       match=f"row {len(table)}, column 'file': 'elsewhere.fits' is not a "
                             "frame of this night"):
        reduce(raw, tmp_path, table)
    twice = dry_run.copy()
    twice.add_row(dry_run[0])
    with pytest.raises(CalibrationMatchError, match="listed twice"):
        reduce(raw, tmp_path, twice)
    with pytest.raises(CalibrationMatchError, match="no column 'type'"):
        reduce(raw, tmp_path, dry_run["file", "bias"])
    (tmp_path / "broken.ecsv").write_text("# %ECSV 1.0\n# ---\n# garbage: [\n")
    with pytest.raises(CalibrationMatchError, match=r"broken\.ecsv: cannot be read as a plan"):
        read_plan(tmp_path / "broken.ecsv")


def test_command_line(raw, tmp_path, capsys):
    assert main(["plan", str(raw), "--write", str(tmp_path / "plan.ecsv")]) == 0
    capsys.readouterr()
    table = Table.read(tmp_path / "plan.ecsv")
    path = edited(table, tmp_path, {("object_V_001.fits", "flat"): "flat_R_01"})
    status = main(["reduce", str(raw), str(tmp_path / "out"), "--plan", str(path), "-q"])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("ccdproc-ext: error: plan row")
    assert "column 'flat'" in err and "Traceback" not in err
    path = edited(table, tmp_path, {("object_V_002.fits", "flat"): ""})
    assert main(["reduce", str(raw), str(tmp_path / "out"), "--plan", str(path), "-q",
                 "--workers", "1"]) == 0
