"""The night report: made from the files of a reduced night, every frame and problem named.

The night is simulated with problems a real folder has: a truncated file (one of them with
a name that is HTML), and a science frame in a filter that has no flat. What the page must
show is known from how the night was made, not from the tables the reduction wrote.
"""

import html
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from matplotlib.image import imread

from ccdproc_ext import OutputError, reduce_night
from ccdproc_ext import report as report_module
from ccdproc_ext.pictures import master_pictures
from ccdproc_ext.report import night_html_summary, write_report
from ccdproc_ext.simulate import simulate_night

SHAPE = (48, 64)
TRUNCATED = ("truncated_object.fits", "evil<b>&'name.fits")
NO_FLAT = "object_nb_B_001.fits"


class _Page(HTMLParser):
    """The pictures, links, scripts and visible text of a page."""

    def __init__(self):
        super().__init__()
        self.images, self.links, self.scripts, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        elif tag == "a":
            self.links.append(attrs.get("href", ""))
        elif tag == "script":
            self.scripts.append(attrs)

    def handle_data(self, data):
        self.text.append(data)


def _parse(text):
    page = _Page()
    page.feed(text)
    return page


def _section(text, name):
    start = text.index(f'<section id="{name}">')
    return text[start:text.index("</section>", start)]


def _truncate(source, target, fraction=0.5):
    data = Path(source).read_bytes()
    Path(target).write_bytes(data[:int(len(data) * fraction)])


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """A reduced night with problems, its report written; and what it was made from."""
    folder = tmp_path_factory.mktemp("night")
    raw = folder / "raw"
    simulated = simulate_night(raw, "generic", shape=SHAPE, n_bias=3, n_dark=2, n_flat=2,
                               filters=("V", "R"), n_science=2)
    simulate_night(raw, "generic", shape=SHAPE, n_bias=0, n_dark=0, n_flat=0, filters=(),
                   dark_exposures=(), science_filters=("B",), n_science=1, prefix="nb_",
                   seed=3)
    science = sorted(str(f) for f, t in zip(simulated.files["file"], simulated.files["type"],
                                            strict=True) if t == "science")
    # cut at different lengths: two different files (the same bytes would be a duplicate)
    for name, fraction in zip(TRUNCATED, (0.5, 0.3), strict=True):
        _truncate(raw / science[0], raw / name, fraction)
    result = reduce_night(raw, folder / "out", progress=False)
    report = write_report(folder / "out")
    return {"raw": raw, "out": folder / "out", "report": report, "science": science,
            "result": result, "html": report.read_text(encoding="utf-8")}


def test_report_is_in_the_output_folder(night):
    assert night["report"] == night["out"] / "report.html"
    assert (night["out"] / "report").is_dir()


def test_every_science_frame_is_shown(night):
    page = night["html"]
    frames = _section(page, "science")
    for name in night["science"]:
        assert html.escape(name) in frames
    # one calibrated thumbnail per reduced frame: 2 filters x 2 frames
    thumbnails = [img for img in _parse(frames).images if img["alt"].endswith("calibrated")]
    assert sorted(img["alt"].split()[0] for img in thumbnails) == night["science"]


def test_every_problem_file_is_named_once_grouped_by_reason(night):
    problems = _section(night["html"], "problems")
    for name in (*TRUNCATED, NO_FLAT):
        assert problems.count(html.escape(name, quote=True)) == 1, name
    assert "2 files: truncated" in problems
    assert "1 file: no flat in filter &#x27;B&#x27;" in problems


def test_text_from_files_is_escaped(night):
    assert "evil<b>" not in night["html"]
    assert html.escape("evil<b>&'name.fits", quote=True) in night["html"]


def test_page_needs_no_javascript_and_no_network(night):
    page = _parse(night["html"])
    assert page.scripts == []
    assert "<script" not in night["html"].lower()
    for src in [img["src"] for img in page.images] + page.links:
        assert not src.startswith(("http:", "https:", "//")), src


def test_every_picture_is_a_png_that_decodes(night):
    images = _parse(night["html"]).images
    sources = [img["src"] for img in images]
    # 5 masters (bias, 2 darks, 2 flats) with image + histogram, + a large-scale map per
    # flat, the sky plot and 4 science thumbnails (and 4 of their raw frames when the
    # plan records the raw folder)
    plan = Table.read(night["out"] / "plan.ecsv", format="ascii.ecsv")
    assert len(sources) == 5 * 2 + 2 + 1 + 4 + (4 if plan.meta.get("raw_folder") else 0)
    assert len(set(sources)) == len(sources)
    for src in sources:
        path = night["out"] / src
        assert path.parent == night["out"] / "report"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = imread(path)  # grey pictures are one-channel PNGs: 2-D
        assert pixels.ndim in (2, 3) and min(pixels.shape[:2]) > 8
        assert np.var(pixels if pixels.ndim == 2 else pixels[..., :3]) > 0, f"{src} is blank"
    # and nothing in the folder that the page does not show
    assert sorted(p.name for p in (night["out"] / "report").iterdir()) == \
        sorted(Path(src).name for src in sources)


def test_master_statistics_are_those_of_the_files(night):
    masters = _section(night["html"], "masters")
    for name in ("bias_01", "dark_2s_01", "dark_60s_01", "flat_R_01", "flat_V_01"):
        assert f'id="master-{name}"' in masters
    # the level of the master bias, measured here with numpy
    data = fits.getdata(night["out"] / "masters" / "bias_01.fits")
    block = masters[masters.index('id="master-bias_01"'):masters.index('id="master-dark')]
    assert f"<td>level (median)</td><td>{float(np.median(data)):.4g}</td>" in block
    assert "<td>frames combined</td><td>3</td>" in block


def test_plan_says_which_masters_the_science_frames_used(night):
    plan = _section(night["html"], "plan")
    text = " ".join(_parse(plan).text)
    assert "flat_R_01" in text and "same group, filter R" in text
    assert "flat_V_01" in text and "same group, filter V" in text
    assert "CalibrationMatchError" in text  # the B frame: no flat


def test_report_is_rebuilt_from_the_files_alone(night, tmp_path):
    # The output folder alone, elsewhere, without the raw frames: the same page.
    copy = tmp_path / night["out"].name
    shutil.copytree(night["out"], copy)
    (copy / "report.html").unlink()
    shutil.rmtree(copy / "report")
    assert write_report(copy) == copy / "report.html"
    assert (copy / "report.html").read_text(encoding="utf-8") == night["html"]
    assert sorted(p.name for p in (copy / "report").iterdir()) == \
        sorted(p.name for p in (night["out"] / "report").iterdir())


def test_raw_thumbnails_when_the_plan_knows_the_raw_folder(night, tmp_path):
    copy = tmp_path / "out"
    shutil.copytree(night["out"], copy)
    plan = Table.read(copy / "plan.ecsv", format="ascii.ecsv")
    plan.meta["raw_folder"] = str(night["raw"])
    plan.write(copy / "plan.ecsv", format="ascii.ecsv", overwrite=True)
    page = _parse(write_report(copy).read_text(encoding="utf-8"))
    raw = sorted(img["alt"].split()[0] for img in page.images if img["alt"].endswith(" raw"))
    assert raw == night["science"]
    for img in page.images:  # every picture decodes (grey ones are one-channel: 2-D)
        assert imread(copy / img["src"]).ndim in (2, 3)


def test_raw_thumbnails_skipped_when_the_raw_folder_is_gone(night, tmp_path):
    copy = tmp_path / "out"
    shutil.copytree(night["out"], copy)
    plan = Table.read(copy / "plan.ecsv", format="ascii.ecsv")
    plan.meta["raw_folder"] = str(tmp_path / "moved away")
    plan.write(copy / "plan.ecsv", format="ascii.ecsv", overwrite=True)
    page = _parse(write_report(copy).read_text(encoding="utf-8"))
    assert not [img for img in page.images if img["alt"].endswith(" raw")]
    assert len([img for img in page.images if img["alt"].endswith("calibrated")]) == 4


def test_notebook_summary(night):
    fragment = night_html_summary(night["result"])
    assert "<script" not in fragment
    assert "frames: 3 bias, 4 dark, 4 flat, 7 science" in fragment
    assert "2 files: truncated" in fragment
    assert fragment.count(html.escape("evil<b>&'name.fits", quote=True)) == 1
    assert 'href="' in fragment and "report.html" in fragment


def test_notebook_summary_before_the_report(night, tmp_path):
    result = night["result"]
    copy = tmp_path / "out"
    shutil.copytree(night["out"], copy)
    (copy / "report.html").unlink()
    result = type(result)(**{**vars(result), "output_dir": copy})
    fragment = night_html_summary(result)
    assert "href=" not in fragment
    assert "ccdproc-ext report" in fragment


# --------------------------------------------------------- a night folder made by hand
def _hand_made_night(folder, flat):
    """The smallest output folder: a plan, one master flat; no science, no other tables."""
    (folder / "masters").mkdir(parents=True)
    fits.PrimaryHDU(flat.astype(np.float32),
                    header=fits.Header({"NCOMBINE": 4, "COMBMETH": "median"})
                    ).writeto(folder / "masters" / "flat_R_01.fits")
    Table({"file": ["f1.fits"], "type": ["flat"], "status": ["ok"]}
          ).write(folder / "plan.ecsv", format="ascii.ecsv")
    Table({"name": ["flat_R_01"], "kind": ["flat"], "n_frames": [4]}
          ).write(folder / "masters.ecsv", format="ascii.ecsv")


def test_flatness_of_a_flat_with_a_known_gradient(tmp_path):
    # The response rises linearly from 0.9 to 1.1 across the columns. Cut into 8 boxes
    # across, the box medians are 0.9 + 0.2 * (j + 0.5) / 8: from 0.9125 to 1.0875, and
    # their median 1.0, so the large-scale max/min is 1.0875 / 0.9125 = 1.19178.
    columns = np.arange(800)
    flat = np.tile(0.9 + 0.2 * (columns + 0.5) / 800, (64, 1))
    _hand_made_night(tmp_path, flat)
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "<td>large-scale max/min</td><td>1.192</td>" in page
    assert "<td>frames combined</td><td>4</td>" in page
    # no science frames, no problems: said in words, no empty picture
    assert "No science frame" in page
    assert "No problem" in page


def test_a_perfectly_flat_flat(tmp_path):
    _hand_made_night(tmp_path, np.ones((64, 64)))
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "<td>large-scale max/min</td><td>1</td>" in page
    for img in _parse(page).images:  # every picture decodes (grey ones are 2-D)
        assert imread(tmp_path / img["src"]).ndim in (2, 3)


def test_not_a_night_folder(tmp_path):
    with pytest.raises(OutputError, match=r"plan\.ecsv"):
        write_report(tmp_path)
    with pytest.raises(OutputError, match="no such folder"):
        write_report(tmp_path / "missing")


def test_a_damaged_table_is_named(tmp_path):
    _hand_made_night(tmp_path, np.ones((16, 16)))
    (tmp_path / "problems.ecsv").write_text("# %ECSV 1.0\n# ---\n# datatype: [oops\n")
    with pytest.raises(OutputError, match=r"problems\.ecsv"):
        write_report(tmp_path)


def test_a_master_that_cannot_be_read_is_said(tmp_path):
    _hand_made_night(tmp_path, np.ones((16, 16)))
    _truncate(tmp_path / "masters" / "flat_R_01.fits", tmp_path / "masters" / "flat_R_01.fits")
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "flat_R_01" in page and "cannot be read" in page


# -------------------------------------------------------------------- real frames
def test_report_of_a_real_night_with_truncated_files(real_data, tmp_path):
    # The ZWO ASI178 folder: 9 of its 10 flats and 3 of its 5 1-s darks are truncated.
    reduce_night(real_data / "zwo-asi178", tmp_path / "out", progress=False)
    page = write_report(tmp_path / "out").read_text(encoding="utf-8")
    problems = _section(page, "problems")
    assert "12 files: truncated" in problems
    truncated = [p for p in sorted((real_data / "zwo-asi178").rglob("*.fit"))
                 if p.stat().st_size % 2880]
    assert len(truncated) == 12
    for path in truncated:
        name = path.relative_to(real_data / "zwo-asi178").as_posix()
        assert problems.count(html.escape(name)) == 1, name
    for img in _parse(page).images:  # every picture decodes (grey ones are 2-D)
        assert imread(tmp_path / "out" / img["src"]).ndim in (2, 3)


# ----------------------------------------------------------------------- in a browser
def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_chromium() is None, reason="no Chromium on PATH")
def test_report_renders_in_a_browser(night, tmp_path):
    screenshot = tmp_path / "report.png"
    # No sandbox: tests may run as root, where Chromium refuses to start with one.
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
                    "--window-size=1200,1600", f"--screenshot={screenshot}",
                    night["report"].as_uri()],
                   check=True, capture_output=True, timeout=120,
                   env={**os.environ, "HOME": str(tmp_path)})
    pixels = imread(screenshot)[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    assert np.var(pixels) > 0.005, "the screenshot is blank"
    # more than text on white: the pictures are drawn (grey and coloured pixels)
    grey = np.abs(pixels - pixels.mean(axis=-1, keepdims=True)).max(axis=-1) < 0.02
    assert (grey & (pixels.mean(axis=-1) < 0.8) & (pixels.mean(axis=-1) > 0.2)).mean() > 0.01


# ------------------------------------------------- the pictures are those of the files
def _matplotlib_grey(pixels, path):
    """The thumbnail matplotlib draws of ``pixels``: z-scale, grey, row 0 at the bottom."""
    from astropy.visualization import ZScaleInterval
    from matplotlib.image import imsave

    low, high = ZScaleInterval().get_limits(pixels[np.isfinite(pixels)])
    imsave(path, np.nan_to_num(pixels, nan=low), cmap="gray", vmin=low, vmax=high,
           origin="lower")
    return imread(path)[..., 0]


def test_thumbnails_are_the_calibrated_pixels_drawn_by_matplotlib(night, tmp_path):
    """Each calibrated thumbnail is what matplotlib's imsave draws of the file's pixels
    as astropy reads them (48 x 64 pixels: every pixel shown)."""
    science = Table.read(night["out"] / "science.ecsv", format="ascii.ecsv")
    images = {img["alt"]: img["src"] for img in _parse(night["html"]).images}
    for row in science:
        pixels = fits.getdata(night["out"] / row["output_file"]).astype(float)
        expected = _matplotlib_grey(pixels, tmp_path / "expected.png")
        shown = imread(night["out"] / images[f"{row['raw_file']} calibrated"])
        np.testing.assert_array_equal(shown, expected)


@pytest.mark.parametrize(("shape", "step"), [((500, 300), 3), ((100, 1000), 6),
                                             ((40, 50), 1)])
def test_a_thumbnail_reads_every_nth_pixel_of_the_file(tmp_path, shape, step):
    from ccdproc_ext._raw_parts import read_sample

    rng = np.random.default_rng(1)
    data = rng.normal(100, 10, shape).astype(np.float32)
    data[0, 0] = np.nan
    path = tmp_path / "frame.fits"
    fits.PrimaryHDU(data).writeto(path)
    np.testing.assert_array_equal(read_sample(path, 192),
                                  fits.getdata(path)[::step, ::step].astype(float))


def _raw_file(path, layout):
    """A raw 16-bit frame of 500 x 300 stored as ``layout`` says; its physical pixels."""
    rng = np.random.default_rng(7)
    physical = rng.integers(0, 65536, (500, 300)).astype(np.float32)
    physical[1, 2], physical[3, 3] = 0, 65535  # the ends of the range
    if layout == "int16":  # signed, no offset
        physical -= 32768
        fits.PrimaryHDU(physical.astype(np.int16)).writeto(path)
    elif layout == "bscale":  # astropy scales it: read whole
        hdu = fits.PrimaryHDU((physical / 2).astype(np.int32))
        hdu.header["BSCALE"] = 2.0
        hdu.writeto(path)
        physical = (physical / 2).astype(np.int32).astype(np.float32) * 2
    elif layout == "extension":  # the image in extension 1: read whole
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(physical.astype(np.uint16))]
                     ).writeto(path)
    elif layout == "cube":  # NAXIS3 = 1: read whole, squeezed
        fits.PrimaryHDU(physical.astype(np.uint16)[np.newaxis]).writeto(path)
    elif layout == "gzip":
        fits.PrimaryHDU(physical.astype(np.uint16)).writeto(path)
        import gzip
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path = path.with_name(path.name + ".gz")
    else:  # uint16: BZERO = 32768
        fits.PrimaryHDU(physical.astype(np.uint16)).writeto(path)
    return path, physical


@pytest.mark.parametrize("layout", ["uint16", "int16", "bscale", "extension", "cube",
                                    "gzip"])
@pytest.mark.parametrize("transposed", [False, True])
def test_a_raw_thumbnail_samples_the_physical_pixels(tmp_path, layout, transposed):
    from ccdproc_ext import InstrumentProfile
    from ccdproc_ext._raw_parts import read_sample

    path, physical = _raw_file(tmp_path / "raw.fits", layout)
    profile = InstrumentProfile.from_dict(
        {"schema_version": 1, "name": "hand-made", "description": "a test detector",
         "image_types": {"science": ["object"]}, "transposed": transposed})
    shown = physical.T if transposed else physical
    step = 3  # 500 rows / 192 pixels, rounded up
    sample = read_sample(path, 192, profile)
    assert sample.dtype == float
    np.testing.assert_array_equal(sample, shown[::step, ::step].astype(float))


def test_a_thumbnail_of_a_damaged_file_says_what_is_wrong(tmp_path):
    from ccdproc_ext import FrameReadError
    from ccdproc_ext._raw_parts import read_sample

    path = tmp_path / "frame.fits"
    fits.PrimaryHDU(np.ones((300, 200), np.float32)).writeto(path)
    _truncate(path, path.with_name("cut.fits"), 0.5)
    with pytest.raises(FrameReadError, match="truncated"):
        read_sample(path.with_name("cut.fits"), 192)


def _report_files(folder):
    """The page of a night's report and the pixels of each of its pictures."""
    pictures = {path.name: imread(path) for path in sorted((folder / "report").iterdir())}
    return (folder / "report.html").read_text(encoding="utf-8"), pictures


def _assert_same_report(drawn, written):
    assert drawn[0] == written[0]
    assert sorted(drawn[1]) == sorted(written[1])
    for name, pixels in drawn[1].items():
        np.testing.assert_array_equal(pixels, written[1][name], err_msg=name)


def _rewritten(out, tmp_path):
    """The report of the night in ``out`` written again from its files alone, in a copy
    of the folder of the same name."""
    copy = tmp_path / "again" / out.name
    shutil.copytree(out, copy)
    (copy / "report.html").unlink()
    shutil.rmtree(copy / "report")
    write_report(copy)
    return _report_files(copy)


@pytest.fixture(scope="module")
def busy_night(tmp_path_factory):
    """A night of several science frames, to be reduced in worker processes."""
    raw = tmp_path_factory.mktemp("busy") / "raw"
    simulate_night(raw, "generic", shape=SHAPE, n_bias=3, n_dark=3, n_flat=3,
                   filters=("V",), n_science=6)
    return raw


def test_the_report_drawn_while_frames_are_calibrated_is_the_one_written_after(
        busy_night, tmp_path):
    """With worker processes, the masters and each frame's thumbnails are drawn while
    the other frames are calibrated: the page and pictures are those write_report
    draws from the files alone."""
    out = tmp_path / "out"
    reduce_night(busy_night, out, progress=False, workers=2)
    # drawn ahead: before the science table was written at the end of the frames
    thumbnails = list((out / "report").glob("science_*.png"))
    assert len(thumbnails) == 6
    assert max(p.stat().st_mtime_ns for p in thumbnails) < \
        (out / "science.ecsv").stat().st_mtime_ns
    _assert_same_report(_report_files(out), _rewritten(out, tmp_path))


def test_a_drawing_that_fails_while_frames_are_calibrated_is_drawn_again(
        busy_night, tmp_path, monkeypatch):
    """The report drawn ahead is a way to save time, never a way to lose or rename a
    picture: the masters' drawing fails half-way (the first master drawn, not the
    next), and the page is the one write_report draws from the files alone."""
    drawn = []

    def fails_once(name, *args):
        if len(drawn) == 1:
            drawn.append(name)
            raise OSError("no space left on device")
        drawn.append(name)
        return master_pictures(name, *args)

    monkeypatch.setattr(report_module, "master_pictures", fails_once)
    out = tmp_path / "out"
    result = reduce_night(busy_night, out, progress=False, workers=2)
    assert len(drawn) > 3  # failed once while the frames were calibrated, then drawn
    assert "report.html" not in " ".join(result.notes["note"])
    _assert_same_report(_report_files(out), _rewritten(out, tmp_path))
