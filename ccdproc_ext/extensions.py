"""Multi-extension detectors: one image HDU per amplifier or CCD.

A file whose primary HDU holds no image and which has several image extensions of one
shape is one frame of a detector read through several amplifiers, or of a mosaic of
CCDs. Each extension is calibrated with the same extension of each master, through the
code that calibrates a frame of one image: this module only finds the extensions
(`detector_extensions`), reads each as a `~astropy.nddata.CCDData` with the primary
header inherited (`read_extension`) and writes a multi-extension output
(`write_extensions`); `ccdproc_ext.master_frame.MultiMaster` holds the extensions of a
master together.

Extensions are named by their ``EXTNAME`` (``"AMP1"``), or by their index (``"1"``)
when they have none; outputs keep the names and the order of the raw file. A profile's
``[extensions]`` table may name the extensions a camera writes (see
`~ccdproc_ext.ExtensionLayout`); without it they are found in each file. An image in
extension 1 under a header-only primary HDU (a ``.fz`` file, an observatory's frame) is
a frame of one image, not a multi-extension one. Extensions named ``MASK`` or ``UNCERT``
(written by `~astropy.nddata.CCDData`) are never detector extensions.

Outputs: the primary HDU holds no image; its header keeps the raw file's own cards and
adds what is true of the whole file (the recipe, the raw file, the masters used); each
extension's header holds its own provenance. The ``MASK`` (and ``UNCERT``) of extension
number ``n`` follow all the images, with ``EXTNAME = 'MASK'``, ``EXTVER = n`` and
``MASKFOR`` naming the extension.
"""

from pathlib import Path

import numpy as np
from astropy.io import fits

from .cards import repair_cards
from .exceptions import CalibrationMatchError, FrameReadError
from .outputs import write_hdus
from .provenance import mark_mask_bits, set_file_name
from .raw import inspect_frame, open_image, read_frame

__all__ = ["check_extensions_readable", "check_same_extensions", "detector_extensions",
           "extension_index", "file_header", "primary_header", "read_extension",
           "write_extensions"]

#: Extension names that hold something about an image, never an image of the detector.
_NOT_DETECTOR = frozenset({"MASK", "UNCERT", "FLAGS", "WEIGHT", "VARIANCE", "ERR", "DQ",
                           "BPM"})

#: Cards of the extensions' headers that say what is true of the whole file: written in
#: the primary header of a multi-extension output too.
_FILE_CARDS = ("COMBINED", "NCOMBINE", "COMBMETH", "MASTTYPE", "ZEROCOR", "ZEROSUM",
               "DARKCOR", "DARKSUM", "DARKSCL", "FLATCOR", "FLATSUM", "BPMFILE", "BPMSUM",
               "CCDPROC", "CCDPDATE", "PROFILE", "BUNIT")

#: Structural cards an extension's header must not carry over into another HDU.
_STRUCTURE = ("SIMPLE", "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3",
              "EXTEND", "PCOUNT", "GCOUNT", "EXTNAME", "EXTVER", "INHERIT", "NEXTEND",
              "BZERO", "BSCALE", "BLANK", "CHECKSUM", "DATASUM")


# ----------------------------------------------------------------- finding them
def _label(hdu, index, names):
    """How an extension is named: its EXTNAME (with its EXTVER when the name repeats in
    the file), else its index."""
    name = str(hdu.header.get("EXTNAME", "")).strip()
    if not name:
        return str(index)
    if names.count(name.upper()) > 1:
        return f"{name},{hdu.header.get('EXTVER', index)}"
    return name


def _image_shape(hdu):
    """``(rows, columns)`` of a 2-D image HDU (extra axes of length 1 allowed), or
    ``None`` for anything else."""
    if not isinstance(hdu, fits.ImageHDU | fits.CompImageHDU):
        return None
    header = hdu.header
    naxis = header.get("NAXIS", 0)
    if not isinstance(naxis, int) or naxis < 2:
        return None
    if any(header.get(f"NAXIS{i}") != 1 for i in range(3, naxis + 1)):
        return None
    shape = (header.get("NAXIS2", 0), header.get("NAXIS1", 0))
    return shape if all(isinstance(n, int) and n > 0 for n in shape) else None


def detector_extensions(path, profile=None, *, at_least=2):
    """The names of the detector extensions of a raw file, or ``()`` for one image.

    Parameters
    ----------
    path : str or `pathlib.Path`
        The file (any layout `ccdproc_ext.raw` reads); only its headers are read.
    profile : `~ccdproc_ext.InstrumentProfile` or None, optional
        Its ``extensions`` name the extensions to use. Default is ``None``: every image
        extension of the first one's shape, when there are at least two and the primary
        HDU holds no image.
    at_least : int, optional
        Fewer extensions than this make a file of one image (``()``). Default is 2;
        1 gives the name of an image in an extension (for messages).

    Returns
    -------
    tuple of str
        In the order of the file.

    Raises
    ------
    FrameReadError
        If the file cannot be read, or lacks an extension the profile names (the
        message names the file and the extension).
    """
    path = Path(path)
    with open_image(path) as image:
        hdul = image.hdulist
        if image.index == 0:
            return ()  # the primary HDU holds the image
        images = [(i, hdu, _image_shape(hdu)) for i, hdu in enumerate(hdul) if i > 0]
        images = [(i, hdu, shape) for i, hdu, shape in images if shape is not None and
                  str(hdu.header.get("EXTNAME", "")).strip().upper() not in _NOT_DETECTOR]
        upper = [str(hdu.header.get("EXTNAME", "")).strip().upper() for _, hdu, _ in images]
        labelled = [(_label(hdu, i, upper), shape) for i, hdu, shape in images]
    layout = None if profile is None else profile.extensions
    if layout is None or layout.names is None:
        if not labelled:
            return ()
        first_shape = labelled[0][1]
        names = tuple(name for name, shape in labelled if shape == first_shape)
        return names if len(names) >= at_least else ()
    present = {name.upper(): name for name, _ in labelled}
    missing = [name for name in layout.names if name.upper() not in present]
    if missing:
        raise FrameReadError(f"{path}: no image extension {missing[0]!r} (profile "
                             f"{profile.name!r} names {', '.join(layout.names)}; the file "
                             f"has {', '.join(present.values()) or 'none'})")
    return tuple(present[name.upper()] for name in layout.names)


def check_same_extensions(file, names, expected, what, *, path=None):
    """Raise `~ccdproc_ext.CalibrationMatchError` unless ``names`` (a file's extensions)
    are ``expected`` (its master's, or the other frames'); the message names the file
    and the first extension that differs. With the file's ``path``, a file left with
    one image extension is named by it (``no extension 'AMP2'``)."""
    if tuple(names) == tuple(expected):
        return
    if not names and path is not None:
        names = detector_extensions(path, at_least=1)
    missing = [n for n in expected if n not in names]
    extra = [n for n in names if n not in expected]
    if not expected:
        why = f"it has extensions {', '.join(names)} and {what} is a single image"
    elif not names:
        why = f"it is a single image and {what} has extensions {', '.join(expected)}"
    elif missing:
        why = f"no extension {missing[0]!r}, which {what} has ({', '.join(expected)})"
    elif extra:
        why = f"extension {extra[0]!r}, which {what} has not ({', '.join(expected)})"
    else:
        why = f"its extensions are in another order than those of {what}"
    raise CalibrationMatchError(f"{file}: {why}")


def check_extensions_readable(path, names):
    """Raise `~ccdproc_ext.FrameReadError` when an extension of ``names`` cannot be read as
    a 2-D image (truncated ...), naming the file and the extension; told from the
    headers and the file's length, without reading the pixels."""
    for name in names:
        _, problem, _ = inspect_frame(path, extension_index(name))
        if problem:
            raise FrameReadError(f"{path}: extension {name}: {problem}")


# ------------------------------------------------------------------ reading them
def primary_header(path):
    """The primary header of a raw file, its unparsable cards repaired (the cards of a
    multi-extension output's primary header)."""
    with open_image(path) as image:
        header = image.hdulist[0].header.copy()
    repair_cards(header)
    return header


def extension_index(name):
    """The HDU of extension ``name`` (a label of `detector_extensions`), as
    `astropy.io.fits.HDUList` indexes it.

    Parameters
    ----------
    name : str
        ``"AMP1"``, ``"AMP1,2"`` (``EXTNAME``, ``EXTVER``) or ``"1"`` (an index).

    Returns
    -------
    int, str or tuple
        The index, the ``EXTNAME``, or ``(EXTNAME, EXTVER)``.
    """
    base, _, version = name.partition(",")
    if base.isdigit() and not version:
        return int(base)
    return (base, int(version)) if version else base


def read_extension(path, name, profile=None, *, dtype=np.float32):
    """Extension ``name`` of a raw file as a `~astropy.nddata.CCDData`.

    Its header is the extension's own, with the primary header's cards it lacks added
    (see `ccdproc_ext.raw.read_frame`), and ``FILENAME`` the file's name, which names it
    in the masters it is combined into.
    """
    path = Path(path)
    frame = read_frame(path, None if profile is None else profile.for_extension(name),
                       dtype=dtype, ext=extension_index(name))
    set_file_name(frame.meta, "FILENAME", path.name)
    return frame


# ------------------------------------------------------------------ writing them
def _extension_header(meta, name):
    header = fits.Header(meta) if not isinstance(meta, fits.Header) else meta.copy()
    for key in _STRUCTURE:
        header.remove(key, ignore_missing=True, remove_all=True)
    header["EXTNAME"] = name
    return header


def file_header(primary, first_extension, **cards):
    """The primary header of a multi-extension output: the raw file's own cards
    (``primary``), what the first extension's header says of the whole file
    (`_FILE_CARDS`, the ``IMCMB`` list of a master) and ``cards``."""
    header = _extension_header(primary, "")
    del header["EXTNAME"]
    for card in first_extension.cards:
        if card.keyword in _FILE_CARDS or card.keyword.startswith("IMCMB"):
            header[card.keyword] = (card.value, card.comment)
    for key, value in cards.items():
        header[key] = value
    return header


def write_extensions(path, primary_header, frames, *, dtype=np.float32, uncertainty=False,
                     masks=None, mask_bits=None):
    """Write a multi-extension file atomically (a temporary file, then a rename).

    Parameters
    ----------
    path : str or `pathlib.Path`
        Destination; its folder must exist.
    primary_header : `~astropy.io.fits.Header`
        The primary HDU's header (the primary HDU holds no image).
    frames : dict
        ``extension name -> CCDData``, in the order to write.
    dtype : numpy dtype, optional
        Pixel type of the images. Default is ``float32``.
    uncertainty : bool, optional
        Write each frame's uncertainty (``UNCERT``, ``EXTVER`` its number). Default is
        ``False``.
    masks : dict or None, optional
        ``extension name -> array`` of the ``MASK`` extensions to write (``uint8``:
        bits, or booleans), ``EXTVER`` the extension's number. Default is ``None``.
    mask_bits : dict or None, optional
        The meaning of the bits, written in each ``MASK`` header
        (`~ccdproc_ext.provenance.mark_mask_bits`). Default is ``None``.

    Returns
    -------
    `pathlib.Path`
    """
    path = Path(path)
    primary = fits.PrimaryHDU(header=primary_header)
    primary.header["NEXTEND"] = (len(frames), "detector extensions")
    hdus = [primary]
    extras = []
    for number, (name, ccd) in enumerate(frames.items(), start=1):
        header = _extension_header(ccd.meta, name)
        if ccd.unit is not None:
            header["BUNIT"] = ccd.unit.to_string()
        hdus.append(fits.ImageHDU(np.ascontiguousarray(ccd.data, dtype=dtype), header=header))
        if uncertainty and ccd.uncertainty is not None:
            extras.append(_extra(np.asarray(ccd.uncertainty.array, dtype=dtype), "UNCERT",
                                 number, name))
            extras[-1].header["UTYPE"] = type(ccd.uncertainty).__name__
        mask = None if masks is None else masks.get(name)
        if mask is not None:
            extras.append(_extra(np.asarray(mask).astype(np.uint8), "MASK", number, name))
            if mask_bits is not None:
                mark_mask_bits(extras[-1].header, mask_bits)
    hdus.extend(extras)
    return write_hdus(hdus, path)


def _extra(data, kind, number, name):
    hdu = fits.ImageHDU(data, name=kind, ver=number)
    hdu.header["MASKFOR" if kind == "MASK" else "UNCFOR"] = (name, "the extension it is of")
    return hdu
