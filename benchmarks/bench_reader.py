"""
What reading a raw frame costs with its checksum: the file's bytes read once for both
(fused), against public astropy and a checksum apart, side by side in one run.

Frames of ``--shape`` pixels (2000 x 3000 by default), ``--frames`` of them (20), are
written as uint16 (``BZERO = 32768``, as most cameras write them) and as float32. Each
is then read into float32 pixels, four ways, each over every frame:

fused read + checksum
    The file read once into memory, its BLAKE2b taken from those bytes, the stored
    values taken where they lie in them (``np.frombuffer``) and offset by ``BZERO`` in
    one ``np.add``: the hand decoder the reader once had, without its header checks.
reader (default call)
    `ccdproc_ext.raw.read_frame_and_checksum`, what the night calls (provenance needs
    the checksum): astropy reads the stored values (``do_not_scale_image_data=True``),
    one ``np.add`` of ``BZERO`` into float32, `~ccdproc_ext.raw.file_checksum` apart;
    with the reader's header checks and repairs.
astropy + checksum
    `astropy.io.fits.open` with ``do_not_scale_image_data=True``, the same ``np.add``,
    and `~ccdproc_ext.raw.file_checksum`.
astropy alone
    The same read, without the checksum.

The table gives each way's time per frame and its ratio to the fused path (above 1: the
fused path is faster). The reader would keep the fused path only if it paid: the
checksum costs the same either way (most of the time of the default call), and the
decoding gains at most one copy of the file's bytes; when this was measured, the fused
path and the reader differed by less than the noise between runs. Each way's pixels are
compared with `~astropy.nddata.CCDData.read`'s, to the last bit, before anything is
timed. Every way is timed on warm files (the page cache holds them after a first pass),
over ``--repeat`` passes, the best kept.

Usage::

    python benchmarks/bench_reader.py                      # 20 frames of 2000 x 3000
    python benchmarks/bench_reader.py --frames 5 --shape 1000 1500
"""

import argparse
import hashlib
import io
import time

import numpy as np
from _folders import work_folder  # benchmarks/ is sys.path[0] when run as a script
from astropy.io import fits
from astropy.nddata import CCDData

from ccdproc_ext.raw import file_checksum, read_frame_and_checksum


def _write_frames(folder, kind, count, shape):
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        if kind == "uint16":
            data = rng.integers(0, 65536, shape, dtype=np.uint16)
        else:
            data = rng.normal(1000, 30, shape).astype(np.float32)
        path = folder / f"{kind}_{index:03d}.fits"
        fits.PrimaryHDU(data).writeto(path)
        paths.append(path)
    return paths


def _astropy_read(path):
    with fits.open(path, memmap=False, do_not_scale_image_data=True) as hdul:
        hdu = hdul[0]
        stored = hdu.data
        bzero = hdu.header.get("BZERO", 0)
    if not bzero:
        return stored.astype(np.float32)
    return np.add(stored, np.array(bzero, dtype=np.float32), dtype=np.float32)


def _fused(path):
    content = path.read_bytes()
    hashlib.blake2b(content).hexdigest()
    with fits.open(io.BytesIO(content), lazy_load_hdus=True,
                   do_not_scale_image_data=True) as hdul:
        hdu = hdul[0]
        offset = hdu.fileinfo()["datLoc"]
        stored_type = np.dtype(">i2" if hdu.header["BITPIX"] == 16 else ">f4")
        bzero = hdu.header.get("BZERO", 0)
        shape = hdu.shape
    stored = np.frombuffer(content, dtype=stored_type, count=int(np.prod(shape)),
                           offset=offset).reshape(shape)
    if not bzero:
        return stored.astype(np.float32)
    return np.add(stored, np.array(bzero, dtype=np.float32), dtype=np.float32)


def _reader(path):
    return read_frame_and_checksum(path)[0].data


def _astropy_and_checksum(path):
    pixels = _astropy_read(path)
    file_checksum(path)
    return pixels


WAYS = {"fused read + checksum": _fused, "reader (default call)": _reader,
        "astropy + checksum": _astropy_and_checksum, "astropy alone": _astropy_read}


def _check_same_values(paths):
    for path in paths[:2]:
        expected = CCDData.read(path, unit="adu").data.astype(np.float32)
        for name, way in WAYS.items():
            if not np.array_equal(way(path), expected):
                raise SystemExit(f"{name}: other values than CCDData.read for {path.name}")


def _best_time(way, paths, repeat):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for path in paths:
            way(path)
        best = min(best, time.perf_counter() - start)
    return best / len(paths)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--shape", type=int, nargs=2, default=(2000, 3000))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", help="work in this folder and keep it (new or empty)")
    args = parser.parse_args(argv)
    with work_folder(args.keep, "bench_reader_", parser) as folder:
        print(f"{args.frames} frames of {args.shape[0]} x {args.shape[1]} pixels, "
              f"best of {args.repeat} passes (warm page cache)\n")
        print(f"{'pixels':<8} {'way':<24} {'ms / frame':>11} {'ratio to fused':>15}")
        for kind in ("uint16", "float32"):
            paths = _write_frames(folder, kind, args.frames, tuple(args.shape))
            _check_same_values(paths)
            for way in WAYS.values():  # a first pass puts the files in the page cache
                way(paths[0])
            times = {name: _best_time(way, paths, args.repeat) for name, way in WAYS.items()}
            fused = times["fused read + checksum"]
            for name, seconds in times.items():
                print(f"{kind:<8} {name:<24} {seconds * 1e3:>11.1f} {seconds / fused:>15.2f}")


if __name__ == "__main__":
    main()
