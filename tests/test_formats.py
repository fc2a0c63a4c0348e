"""Every file layout ccdproc reads, through the default call and the readers.

One simulated night is written plain, tile-compressed (``.fits.fz``, lossless), gzip- and
bzip2-compressed, and with each image in extension 1 under a primary header that holds
the keywords (``INHERIT = T``): ``reduce_night(folder, out)`` must give the same science
pixels for all of them. The references are the plain night's outputs and astropy's own
reading of each file.
"""

import bz2
import gzip
import logging
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

from ccdproc_ext import FrameReadError, NightCollection, reduce_night
from ccdproc_ext.combine import combine
from ccdproc_ext.raw import inspect_frame, read_frame
from ccdproc_ext.simulate import simulate_night

SHAPE = (40, 48)


def _night(folder):
    simulate_night(folder, shape=SHAPE, n_bias=3, dark_exposures=(2.0, 60.0), n_dark=2,
                   filters=("V",), n_flat=2, n_science=2, n_stars=3, seed=3)
    return sorted(Path(folder).glob("*.fits"))


def _hdus(path):
    with fits.open(path, do_not_scale_image_data=True) as hdul:
        return hdul[0].header.copy(), hdul[0].data.copy()


def _as_fz(path):
    header, _ = _hdus(path)
    data = fits.getdata(path)  # the integers the file stands for (uint16)
    assert data.dtype.kind in "iu" and header["BITPIX"] == 16, "lossless needs integers"
    image = fits.CompImageHDU(data, compression_type="RICE_1")
    for card in header.cards:
        if card.keyword not in image.header and card.keyword not in (
                "SIMPLE", "EXTEND", "BZERO", "BSCALE"):
            image.header.append(card)
    target = path.with_name(path.name + ".fz")
    fits.HDUList([fits.PrimaryHDU(), image]).writeto(target)
    return target


def _as_compressed(path, module, suffix):
    target = path.with_name(path.name + suffix)
    target.write_bytes(module.compress(path.read_bytes()))
    return target


def _as_extension(path):
    # The keywords in the primary header, the image (with its own structure cards) in
    # extension 1, which says it inherits them.
    header, _ = _hdus(path)
    data = fits.getdata(path)
    primary = fits.PrimaryHDU()
    for card in header.cards:
        if card.keyword not in ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND",
                                "BZERO", "BSCALE"):
            primary.header.append(card)
    image = fits.ImageHDU(data, name="SCI")
    image.header["INHERIT"] = True
    target = path.with_name(path.stem + "_ext.fits")
    fits.HDUList([primary, image]).writeto(target)
    return target


LAYOUTS = {
    "fz": _as_fz,
    "gz": lambda path: _as_compressed(path, gzip, ".gz"),
    "bz2": lambda path: _as_compressed(path, bz2, ".bz2"),
    "extension": _as_extension,
}


@pytest.fixture(scope="module")
def plain_night(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plain")
    paths = _night(folder)
    result = reduce_night(folder, tmp_path_factory.mktemp("plain_out"), progress=False,
                          workers=1)
    return folder, paths, result


def _science_pixels(result):
    pixels = {}
    for row in result.science:
        if str(row["status"]) == "written":
            name = Path(str(row["raw_file"])).name.split(".")[0].removesuffix("_ext")
            pixels[name] = fits.getdata(Path(result.output_dir, str(row["output_file"])))
    return pixels


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_same_science_pixels_in_every_layout(plain_night, tmp_path, layout):
    _, paths, plain = plain_night
    folder = tmp_path / "raw"
    folder.mkdir()
    for path in paths:
        copy = folder / path.name
        copy.write_bytes(path.read_bytes())
        LAYOUTS[layout](copy)
        copy.unlink()
    result = reduce_night(folder, tmp_path / "out", progress=False, workers=1)
    assert len(result.problems) == 0, result.summary()
    expected = _science_pixels(plain)
    got = _science_pixels(result)
    assert len(expected) == 2 and sorted(got) == sorted(expected)
    for name, pixels in expected.items():
        np.testing.assert_array_equal(got[name], pixels, err_msg=name)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_read_frame_gives_astropys_pixels_and_the_keywords(plain_night, tmp_path, layout):
    _, paths, _ = plain_night
    source = tmp_path / paths[0].name
    source.write_bytes(paths[0].read_bytes())
    path = LAYOUTS[layout](source)
    frame = read_frame(path)
    np.testing.assert_array_equal(frame.data, fits.getdata(paths[0]).astype(np.float32))
    original = fits.getheader(paths[0])
    for key in ("IMAGETYP", "EXPTIME", "FILTER", "DATE-OBS"):
        if key in original:
            assert frame.meta[key] == original[key], key
    header, problem, _ = inspect_frame(path)
    assert problem is None and header["IMAGETYP"] == original["IMAGETYP"]


def test_a_folder_of_fz_frames_is_found_and_one_given_by_name_is_read(plain_night, tmp_path):
    _, paths, _ = plain_night
    for path in paths:
        copy = tmp_path / path.name
        copy.write_bytes(path.read_bytes())
        _as_fz(copy)
        copy.unlink()
    night = NightCollection(tmp_path)
    assert night.files == sorted(p.name + ".fz" for p in paths)
    assert night.problems == [] and all(night.frames["problem"] == "")
    assert night.count_by_type()["bias"] == 3
    single = NightCollection(tmp_path, filenames=paths[0].name + ".fz")
    assert single.files == [paths[0].name + ".fz"]
    assert single.frames["shape"][0] == f"{SHAPE[0]}x{SHAPE[1]}"
    # combine reads them too, in adu without BUNIT
    biases = [tmp_path / f"{p.name}.fz" for p in paths if "bias" in p.name]
    master = combine(biases, method="median")
    reference = np.median([fits.getdata(p).astype(float) for p in paths if "bias" in p.name],
                          axis=0)
    np.testing.assert_array_equal(master.data, reference)
    assert str(master.unit) == "adu"


def test_ccdproc_suffixes_are_found(tmp_path):
    data = np.arange(12, dtype=np.uint16).reshape(3, 4)
    fits.PrimaryHDU(data).writeto(tmp_path / "a.fits")
    raw = (tmp_path / "a.fits").read_bytes()
    names = ["b.fit.gz", "c.fts.bz2", "d.FITS", "e.fits.fz"]
    (tmp_path / names[0]).write_bytes(gzip.compress(raw))
    (tmp_path / names[1]).write_bytes(bz2.compress(raw))
    (tmp_path / names[2]).write_bytes(raw)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data)]).writeto(tmp_path / names[3])
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / "no_suffix").write_bytes(raw)
    night = NightCollection(tmp_path, keywords=["naxis"])
    assert night.files == ["a.fits", *names]
    by_reading = NightCollection(tmp_path, find_fits_by_reading=True, keywords=["naxis"])
    # as ccdproc: the first bytes say it, so gzip and bzip2 files are not recognised by
    # it (a tile-compressed file starts with a plain primary header)
    assert by_reading.files == ["a.fits", "d.FITS", "e.fits.fz", "no_suffix"]
    for name in night.files:
        np.testing.assert_array_equal(read_frame(tmp_path / name).data, data, err_msg=name)


def test_unsigned_32_bit_frames(tmp_path):
    values = np.array([[0, 1, 2**31 - 1], [2**31, 2**32 - 2, 2**32 - 1]], dtype=np.uint32)
    fits.PrimaryHDU(values).writeto(tmp_path / "u32.fits")
    header = fits.getheader(tmp_path / "u32.fits")
    assert (header["BITPIX"], header["BZERO"]) == (32, 2147483648)  # as cameras write it
    for dtype in (np.float32, np.float64):
        frame = read_frame(tmp_path / "u32.fits", dtype=dtype)
        # astropy's uint32 values, converted once
        np.testing.assert_array_equal(frame.data, values.astype(dtype))
        assert "BZERO" not in frame.meta
    assert float(read_frame(tmp_path / "u32.fits", dtype=np.float64).data[1, 2]) == \
        4294967295.0


def test_truncated_compressed_files_are_named(tmp_path):
    data = np.arange(40 * 48, dtype=np.uint16).reshape(40, 48)
    fits.PrimaryHDU(data).writeto(tmp_path / "a.fits")
    cut = gzip.compress((tmp_path / "a.fits").read_bytes())
    (tmp_path / "cut.fits.gz").write_bytes(cut[:len(cut) // 2])
    with pytest.raises(FrameReadError, match=r"cut\.fits\.gz.*truncated"):
        read_frame(tmp_path / "cut.fits.gz")
    rng = np.random.default_rng(1)
    noisy = rng.integers(0, 60000, (200, 200)).astype(np.uint16)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(noisy)]).writeto(tmp_path / "n.fits.fz")
    whole = (tmp_path / "n.fits.fz").read_bytes()
    (tmp_path / "short.fits.fz").write_bytes(whole[:len(whole) - 3 * 2880])
    _, problem, _ = inspect_frame(tmp_path / "short.fits.fz")
    assert problem.startswith("truncated")
    with pytest.raises(FrameReadError, match=r"short\.fits\.fz: truncated"):
        read_frame(tmp_path / "short.fits.fz")


# --------------------------------------------------- NightCollection as ccdproc's
def test_collection_behaves_as_ccdprocs(plain_night, tmp_path, caplog):
    _, paths, _ = plain_night
    for path in paths[:3]:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "broken.fits").write_text("not FITS")
    # One name, not its characters.
    one = NightCollection(tmp_path, filenames=paths[0].name)
    assert one.files == [paths[0].name]
    # keywords=[]: no header read, nothing said, until the frames are asked for.
    with caplog.at_level(logging.WARNING):
        quiet = NightCollection(tmp_path, keywords=[])
    assert caplog.text == ""
    assert [p["file"] for p in quiet.problems] == ["broken.fits"]
    # refresh sees new files and new keywords.
    night = NightCollection(tmp_path)
    (tmp_path / paths[3].name).write_bytes(paths[3].read_bytes())
    with fits.open(tmp_path / paths[0].name, mode="update") as hdul:
        hdul[0].header["BARKARK"] = True
    night.refresh()
    assert paths[3].name in night.files and "barkark" in night.summary.colnames
    assert paths[3].name in list(night.frames["file"])
    # A unit without BUNIT: the profile's.
    ccds = list(night.ccds(imagetyp="*"))
    assert ccds and all(isinstance(c, CCDData) and str(c.unit) == "adu" for c in ccds)
    # The repr is ccdproc's, with the class's own name.
    assert repr(NightCollection(tmp_path, glob_include="*bias*")) == \
        f"NightCollection(location={str(tmp_path)!r}, glob_include='*bias*')"


@pytest.mark.parametrize("stored", ["uint8", "int16", "uint16", "int32", "uint32", "int64",
                                    "float32", "float64"])
@pytest.mark.parametrize("where", ["primary", "extension"])
def test_stored_values_scaled_are_astropys(tmp_path, stored, where):
    """The values of a plain image, read unscaled and offset by BZERO in one step:
    astropy's own values, in float32, for every BITPIX, to the last bit, with or without
    the checksum."""
    from ccdproc_ext.raw import read_frame_and_checksum

    rng = np.random.default_rng(4)
    info = np.iinfo(stored) if stored[0] in "ui" else None
    if info is None:
        values = rng.normal(0, 1e3, (37, 23)).astype(stored)
    else:
        values = rng.integers(max(info.min, -2**40), min(info.max, 2**40), (37, 23),
                              dtype=stored, endpoint=True)
        values.flat[:2] = max(info.min, -2**40), min(info.max, 2**40)
    hdu = fits.PrimaryHDU(values) if where == "primary" else fits.ImageHDU(values)
    hdu.header["EXTRA"] = ("x" * 40, "a card before the data")
    hdus = [hdu] if where == "primary" else [fits.PrimaryHDU(), hdu]
    path = tmp_path / "frame.fits"
    fits.HDUList(hdus).writeto(path)
    frame = read_frame(path)
    with fits.open(path) as hdul:
        expected = np.asarray(hdul[len(hdus) - 1].data, dtype=np.float32)
    assert frame.data.dtype == np.float32
    np.testing.assert_array_equal(frame.data, expected)
    assert frame.data.tobytes() == expected.tobytes()
    assert read_frame_and_checksum(path)[0].data.tobytes() == expected.tobytes()


@pytest.mark.parametrize("stored", ["uint16", "int16", "uint32", "float32", "bscale"])
def test_the_reader_gives_ccddata_reads_values_to_the_last_bit(tmp_path, stored):
    """`read_frame_and_checksum` (the default call's read: one read of the file for the
    pixels and the checksum) gives, in float32, the bits `CCDData.read` gives."""
    from ccdproc_ext.raw import file_checksum, read_frame_and_checksum

    rng = np.random.default_rng(11)
    if stored == "float32":
        values = rng.normal(1000, 30, (200, 300)).astype(np.float32)
        values[0, :3] = np.nan, np.inf, -0.0
    elif stored == "bscale":
        values = rng.integers(-30000, 30000, (200, 300), dtype=np.int16)
    else:
        info = np.iinfo(stored)
        values = rng.integers(info.min, info.max, (200, 300), dtype=stored, endpoint=True)
        values.flat[:2] = info.min, info.max
    hdu = fits.PrimaryHDU(values)
    if stored == "bscale":
        hdu.header["BSCALE"] = 0.37
        hdu.header["BZERO"] = 12.5
    path = tmp_path / "frame.fits"
    hdu.writeto(path)
    expected = CCDData.read(path, unit="adu").data.astype(np.float32)
    frame, checksum = read_frame_and_checksum(path)
    assert frame.data.dtype == np.float32
    assert frame.data.tobytes() == expected.tobytes()
    assert read_frame(path).data.tobytes() == expected.tobytes()
    assert checksum == file_checksum(path)
