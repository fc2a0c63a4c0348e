"""A frame's type (bias, dark, flat, science) from its header and its name, by a profile.

The evidence is weighed by `frame_type`, strongest first (the rules are listed in
`~ccdproc_ext.InstrumentProfile.classify_frame`, which calls it): the profile's
image-type words, its file-name patterns, calibration words of ``OBJECT``
(`OBJECT_WORDS`), and the exposure time.
"""

import fnmatch
import math
import re
from collections import namedtuple
from pathlib import PurePath
from types import MappingProxyType

from ..exceptions import HeaderError
from ..headers import card_value, first_card, first_filled, header_float
from .schema import CALIBRATION_TYPES, IMAGE_TYPES

__all__ = ["OBJECT_WORDS", "FrameType", "frame_type", "header_type", "name_has_word",
           "object_type", "path_type"]

#: The type of a frame, the rule that decided it (``"IMAGETYP = Bias Frame"``,
#: ``"file name"`` (patterns of the file or folder name), ``"guessed"``), and notes in
#: words (a tuple).
FrameType = namedtuple("FrameType", ["image_type", "rule", "notes"])


#: Words of ``OBJECT`` that say a frame is a calibration (besides the profile's own
#: image-type words): observatories that type every frame ``OBJECT`` name their
#: calibrations there.
OBJECT_WORDS = MappingProxyType({
    "bias": ("bias", "zero", "bias frame"),
    "dark": ("dark", "dark frame"),
    "flat": ("flat", "sky flat", "dome flat", "twilight flat", "skyflat", "domeflat",
             "twiflat", "flat field", "flatfield"),
})

_LETTERS_RE = re.compile(r"[a-z]+")


def _word_of_pattern(pattern):
    """``"dark"`` for the pattern ``"*dark*"``; ``None`` for any other pattern."""
    match = re.fullmatch(r"\*([a-z]+)\*", pattern)
    return match.group(1) if match else None


def name_has_word(text, word, compounds=()):
    """Whether ``word`` is a whole word of a file name or path.

    A word is a run of letters (digits, ``-``, ``_``, ``.``, ``/`` and blanks end it),
    compared ignoring case; a plural (``darks``, ``biases``) counts, and so does one of
    ``compounds`` that holds the word (``skyflat``, ``flatfield``).

    Examples
    --------
    >>> name_has_word("darks-expos1-Neg5.00000000.DARK.FIT", "dark")
    True
    >>> name_has_word("spec_neon_1s.00000001.NOAUTODARK.FIT", "dark")
    False
    >>> name_has_word("DarkSky-300s.fit", "dark")
    False
    """
    for found in _LETTERS_RE.findall(str(text).lower()):
        if found in (word, word + "s", word + "es"):
            return True
        if word in found and found.removesuffix("s") in compounds:
            return True
    return False


def _rule(key, word):
    """The rule of a type read from a keyword, as the frames table shows it."""
    return f"{key} = {' '.join(str(word).split())}"


def header_type(profile, header):
    """The type ``profile``'s image-type keyword gives, with the keyword and its word.

    Words are compared case-insensitively, runs of blanks as one blank.

    Parameters
    ----------
    profile : `~ccdproc_ext.InstrumentProfile`
    header : `~astropy.io.fits.Header`

    Returns
    -------
    image_type, keyword, word : str or None, str or None, object
        ``image_type`` is ``None`` when there is no keyword or its word is unknown.
    """
    key, word = first_filled(header, profile.image_type_keywords)
    if key is None:
        return None, first_card(header, profile.image_type_keywords), None
    text = " ".join(str(word).split()).lower()
    for image_type in IMAGE_TYPES:
        if text in profile.image_type_words.get(image_type, ()):
            return image_type, key, word
    return None, key, word


def frame_type(profile, header, path=None, *, exposure=None, folders=True):
    """The type of a frame, the rule that decided it, and notes (a `FrameType`).

    The rules are those of `~ccdproc_ext.InstrumentProfile.classify_frame`, which
    lists them.

    Parameters
    ----------
    profile : `~ccdproc_ext.InstrumentProfile`
    header : `~astropy.io.fits.Header`
    path : str or None, optional
        The file, as named in the collection. Default is ``None``.
    exposure : float or None, optional
        The exposure time; read from the header when ``None``.
    folders : bool, optional
        Whether the folders of ``path`` may overrule a science word of the header.
        Default is ``True``.

    Returns
    -------
    FrameType
    """
    if exposure is None:
        try:
            exposure = header_float(header, profile.exposure_time_keywords, required=False)
        except HeaderError:
            exposure = None
    found = _weigh_evidence(profile, header, path, exposure, folders)
    if found.image_type == "dark" and exposure == 0:
        return FrameType("bias", found.rule,
                         (*found.notes, f"a dark of 0 s is a bias ({found.rule})"))
    return found


def _weigh_evidence(profile, header, path, exposure, folders):
    """`frame_type`'s rules 1 to 6, in order."""
    said_type, key, word = header_type(profile, header)
    by_name = path_type(profile, path)
    if by_name is not None and by_name[1] == "folder name" and not folders and \
            said_type is not None:
        by_name = None  # a folder of the user's own tree does not overrule the header
    if said_type in CALIBRATION_TYPES:
        notes = ()
        if by_name is not None and by_name[0] != said_type:
            notes = (f"{key} says {word!r}, the {by_name[1]} {by_name[2]} says "
                     f"{by_name[0]}: {key} is trusted",)
        return FrameType(said_type, _rule(key, word), notes)
    by_object = object_type(profile, header)
    said = f"; {key} says {word!r}" if said_type is not None else ""
    if by_name is not None and by_name[0] in CALIBRATION_TYPES:
        image_type, where, name = by_name
        notes = (f"{image_type} from {where} {name}{said}",) if said else ()
        if by_object is not None and by_object[0] != image_type:
            notes += (f"OBJECT = {by_object[1]!r} says {by_object[0]}, the {where} "
                      f"{name} says {image_type}: the {where} is trusted",)
        return FrameType(image_type, "file name", notes)
    if by_object is not None:
        image_type, value = by_object
        return FrameType(image_type, _rule("OBJECT", value),
                         (f"{image_type} from OBJECT = {value!r}{said}",))
    if said_type is not None:
        return FrameType(said_type, _rule(key, word), ())
    if by_name is not None:
        return FrameType(by_name[0], "file name", ())
    if key is not None and word is not None and str(word).strip():
        # An explicit word the profile does not know ('arc', 'focus', 'comp') says
        # what the frame is: not a science frame to guess.
        return FrameType(None, "", ())
    if exposure is not None and math.isfinite(exposure) and exposure > 0:
        return FrameType("science", "guessed",
                         ("type guessed: science (no image type in header or file name, "
                          f"exposure {exposure:g} s)",))
    return FrameType(None, "", ())


def object_type(profile, header):
    """``(type, value)`` when ``OBJECT`` is exactly a calibration word, else ``None``.

    The words are `OBJECT_WORDS` and the profile's own calibration words, compared
    ignoring case and runs of blanks: ``OBJECT = 'Dome Flat'`` says flat,
    ``OBJECT = 'flat of M31 field'`` says nothing.

    Parameters
    ----------
    profile : `~ccdproc_ext.InstrumentProfile`
    header : `~astropy.io.fits.Header`

    Returns
    -------
    tuple or None
    """
    if "OBJECT" not in header:
        return None
    value = card_value(header, "OBJECT")[0]
    if not isinstance(value, str):
        return None
    text = " ".join(value.split()).lower()
    for image_type in CALIBRATION_TYPES:
        if text in OBJECT_WORDS[image_type] or \
                text in profile.image_type_words.get(image_type, ()):
            return image_type, value.strip()
    return None


def path_type(profile, path):
    """What the profile's file-name patterns say of ``path``.

    Parameters
    ----------
    profile : `~ccdproc_ext.InstrumentProfile`
    path : str, `pathlib.Path` or None

    Returns
    -------
    tuple or None
        ``(type, "file name" or "folder name", the name)``, or ``None``.
    """
    if path is None:
        return None
    pure = PurePath(path)
    for image_type in IMAGE_TYPES:
        patterns = profile.file_patterns.get(image_type, ())
        if any(_name_matches(profile, p, pure.name, image_type) for p in patterns):
            return image_type, "file name", pure.name
        if any(_name_matches(profile, p, pure.as_posix(), image_type) for p in patterns):
            return image_type, "folder name", pure.parent.as_posix()
    return None


def _name_matches(profile, pattern, text, image_type):
    word = _word_of_pattern(pattern)
    if word is None:
        return fnmatch.fnmatchcase(text.lower(), pattern)
    compounds = {w.replace(" ", "").replace("_", "")
                 for w in profile.image_type_words.get(image_type, ())}
    return name_has_word(text, word, compounds)
