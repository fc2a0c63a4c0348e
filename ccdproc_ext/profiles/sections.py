"""FITS detector sections: parsing, checking and conversion to numpy slices.

A FITS section names columns first and rows second, counts from 1 and includes both
ends: ``[2056:2080,1:4128]`` is ``data[0:4128, 2055:2080]`` in numpy. ``*`` stands for
a whole axis, so ``[2056:2080,*]`` is the overscan strip on the right of a frame of any
height.
"""

import re
from dataclasses import dataclass

from ..headers import card_value

__all__ = ["DetectorSection", "binned_section", "parse_fits_section", "section_slices"]

_AXIS = r"\s*(\*|\d+\s*:\s*\d+|\d+)\s*"
_SECTION_RE = re.compile(rf"^\s*\[{_AXIS},{_AXIS}\]\s*$")


def parse_fits_section(text):
    """Parse a FITS section into ``((x_start, x_stop), (y_start, y_stop))``.

    Each pair is 1-based and inclusive, or ``None`` for ``*`` (the whole axis).

    Parameters
    ----------
    text : str
        A section such as ``'[2056:2080,1:4128]'`` or ``'[1:2048,*]'``.

    Returns
    -------
    tuple
        ``(columns, rows)``, each ``(start, stop)`` or ``None``.

    Raises
    ------
    ValueError
        If ``text`` is not a two-axis FITS section with ascending, positive bounds.

    Examples
    --------
    >>> parse_fits_section('[2056:2080,1:4128]')
    ((2056, 2080), (1, 4128))
    >>> parse_fits_section('[1:2048, *]')
    ((1, 2048), None)
    """
    if not isinstance(text, str):
        raise ValueError(f"a FITS section must be a string such as '[1:2048,1:4096]', "
                         f"not {text!r}")
    match = _SECTION_RE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a FITS section of the form '[x1:x2,y1:y2]' "
                         "(1-based, inclusive; '*' for a whole axis)")
    axes = []
    for part in match.groups():
        if part == "*":
            axes.append(None)
            continue
        bounds = [int(v) for v in part.split(":")]
        start, stop = bounds[0], bounds[-1]
        if start < 1 or stop < start:
            raise ValueError(f"{text!r}: the range {part.replace(' ', '')} must count up "
                             "from 1 (flipped sections are not supported)")
        axes.append((start, stop))
    return tuple(axes)


@dataclass(frozen=True)
class DetectorSection:
    """A region of the detector, fixed in the profile or read from a header keyword.

    Parameters
    ----------
    fits : str or None
        The section in FITS convention, e.g. ``'[2056:2080,*]'``. When ``keywords`` are
        given too, it is the fallback used when none of them is in the header.
    keywords : tuple of str
        Header keywords tried in order (``BIASSEC``, ``TRIMSEC``, ``DATASEC`` ...).
    required : bool
        Whether a frame without any of ``keywords`` (and no fallback) is an error. When
        ``False`` such a frame simply has no such section.
    """

    fits: str | None = None
    keywords: tuple[str, ...] = ()
    required: bool = True

    def __post_init__(self):
        if self.fits is not None:
            parse_fits_section(self.fits)

    def describe(self):
        """Say in words where the section comes from."""
        parts = []
        if self.keywords:
            parts.append("header keyword " + " or ".join(self.keywords))
        if self.fits is not None:
            parts.append(self.fits)
        return ", else ".join(parts) if parts else "none"

    def unusable(self, shape=None, header=None, binning=(1, 1)):
        """Why the section a header gives cannot be used, or ``None`` when it can.

        Only sections read from a header keyword are checked (a profile's own sections
        are checked when it is loaded): a value that is not a FITS section
        (``BIASSEC = '[0,513:0,1536]'``), or one outside an image of ``shape``. Such a
        section is a note on the frame and its step is skipped: the frame is not lost.

        Parameters
        ----------
        shape : tuple of int or None, optional
            ``(rows, columns)`` of the image; ``None`` (or a 0 in it) checks the
            notation only. Default is ``None``.
        header : `~astropy.io.fits.Header` or None, optional
            The frame's header. Default is ``None``.
        binning : tuple of int, optional
            ``(x, y)`` binning of the frame: a section in unbinned pixels that fits once
            divided by it is usable (see `binned_section`). Default is ``(1, 1)``.

        Returns
        -------
        str or None
            E.g. ``"BIASSEC = '[0,513:0,1536]' is not a FITS section"``.

        Examples
        --------
        >>> from astropy.io import fits
        >>> section = DetectorSection(keywords=('BIASSEC',), required=False)
        >>> section.unusable((1536, 1536), fits.Header({'BIASSEC': '[0,513:0,1536]'}))
        "BIASSEC = '[0,513:0,1536]' is not a FITS section"
        >>> print(section.unusable((100, 100), fits.Header({'BIASSEC': '[91:120,*]'})))
        BIASSEC = '[91:120,*]' lies outside the image: it reaches column 120, but the ...
        >>> section.unusable((1536, 1536), fits.Header({'BIASSEC': '[1:20,*]'})) is None
        True
        """
        if header is None:
            return None
        for key in self.keywords:
            if key not in header:
                continue
            value = card_value(header, key)[0]
            text = str(value).strip()
            try:
                parse_fits_section(text)
            except ValueError:
                return f"{key} = {value!r} is not a FITS section"
            if shape is None or not all(shape):
                return None
            cols, rows = parse_fits_section(binned_section(text, shape, binning))
            for bounds, size, axis in ((cols, shape[1], "column"), (rows, shape[0], "row")):
                if bounds is not None and bounds[1] > size:
                    return (f"{key} = {value!r} lies outside the image: it reaches {axis} "
                            f"{bounds[1]}, but the image has only {size} {axis}s")
            return None
        return None

    def fits_text(self, header=None, shape=None, binning=(1, 1)):
        """The FITS section string for a frame, or ``None`` when the frame has none.

        A section read from the header in unbinned pixels is given in the binned pixels
        of a frame of ``shape`` and ``binning`` (see `binned_section`).

        Raises `KeyError` naming the keywords when a required keyword is missing.
        """
        for key in self.keywords:
            if header is not None and key in header:
                value = str(card_value(header, key)[0]).strip()
                parse_fits_section(value)
                return value if shape is None else binned_section(value, shape, binning)
        if self.fits is not None:
            return self.fits
        if self.keywords and self.required:
            raise KeyError(" or ".join(self.keywords))
        return None

    def slices(self, shape, header=None, binning=(1, 1)):
        """The numpy slices ``(rows, columns)`` of this section in an array of ``shape``
        binned ``binning``.

        Returns ``None`` when the frame has no such section.
        """
        text = self.fits_text(header, shape, binning)
        if text is None:
            return None
        return section_slices(text, shape)

    def resolved(self, shape, header=None, binning=(1, 1)):
        """The section with ``*`` replaced by explicit bounds for an array of ``shape``
        binned ``binning``.

        This is the form ccdproc's ``fits_section`` arguments accept.
        """
        sl = self.slices(shape, header, binning)
        if sl is None:
            return None
        rows, cols = sl
        return f"[{cols.start + 1}:{cols.stop},{rows.start + 1}:{rows.stop}]"


def section_slices(text, shape):
    """Numpy ``(row_slice, column_slice)`` for FITS section ``text`` in ``shape``.

    Raises
    ------
    ValueError
        If the section reaches outside an array of ``shape``.

    Examples
    --------
    >>> section_slices('[2056:2080,*]', (4128, 2080))
    (slice(0, 4128, None), slice(2055, 2080, None))
    """
    cols, rows = parse_fits_section(text)
    ny, nx = shape
    out = []
    for bounds, size, axis in ((rows, ny, "rows"), (cols, nx, "columns")):
        if bounds is None:
            out.append(slice(0, size))
            continue
        start, stop = bounds
        if stop > size:
            raise ValueError(f"section {text} reaches {axis[:-1]} {stop}, but the frame "
                             f"has only {size} {axis} (shape {ny} x {nx})")
        out.append(slice(start - 1, stop))
    return tuple(out)


def binned_section(text, shape, binning):
    """A FITS section in the binned pixels of a frame, when it is written in unbinned ones.

    IRAF writes sections in the pixels of the frame; several observatories write them in
    detector pixels (``BIASSEC = '[3:52,1:2102]'`` on a frame of 1051 rows binned 1x2).
    A section that does not fit a frame of ``shape`` but fits once each axis is divided
    by the frame's binning is returned divided (first pixel ``(start - 1) // bin + 1``,
    last ``ceil(stop / bin)``); any other section is returned as it is.

    Parameters
    ----------
    text : str
        A FITS section.
    shape : tuple of int
        ``(rows, columns)`` of the frame.
    binning : tuple of int
        ``(x, y)`` binning of the frame.

    Examples
    --------
    >>> binned_section('[3:52,1:2102]', (1051, 60), (1, 2))
    '[3:52,1:1051]'
    >>> binned_section('[3:52,1:1051]', (1051, 60), (1, 2))
    '[3:52,1:1051]'
    """
    cols, rows = parse_fits_section(text)
    ny, nx = shape
    if (_inside(cols, nx) and _inside(rows, ny)) or tuple(binning) == (1, 1):
        return text
    xbin, ybin = binning
    cols, rows = _divided(cols, xbin), _divided(rows, ybin)
    if not (_inside(cols, nx) and _inside(rows, ny)):
        return text
    return f"[{_axis_text(cols)},{_axis_text(rows)}]"


def _inside(bounds, size):
    return bounds is None or bounds[1] <= size


def _divided(bounds, factor):
    if bounds is None:
        return None
    start, stop = bounds
    return (start - 1) // factor + 1, -(-stop // factor)


def _axis_text(bounds):
    return "*" if bounds is None else f"{bounds[0]}:{bounds[1]}"
