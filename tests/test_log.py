"""Problems and notes grouped by reason: each reason once, each file once in it."""

import pytest
from astropy.table import Table

from ccdproc_ext.log import group_by_reason


@pytest.mark.parametrize(("rows", "expected"), [
    # the same reason with different numbers: one group, each file once
    ([("a.fits", "FrameReadError", "truncated: needs 10 bytes, has 5"),
      ("b.fits", "FrameReadError", "truncated: needs 10 bytes, has 7"),
      ("a.fits", "FrameReadError", "truncated: needs 10 bytes, has 5")],
     [("truncated", ["a.fits", "b.fits"])]),
    # the same words, another kind: another reason
    ([("a.fits", "FrameReadError", "not FITS"), ("b.fits", "HeaderError", "not FITS")],
     [("not FITS", ["a.fits"]), ("not FITS", ["b.fits"])]),
    # a count in the clause itself: the words are kept, the numbers are not
    ([("m1.fits", "DataQualityWarning", "945 pixel(s) below the minimum of the flat"),
      ("m2.fits", "DataQualityWarning", "3 pixel(s) below the minimum of the flat")],
     [("… pixel below the minimum of the flat", ["m1.fits", "m2.fits"])]),
    # different filters are different reasons
    ([("x.fits", "CalibrationMatchError", "no flat in filter 'B'; flats exist for 'R'"),
      ("y.fits", "CalibrationMatchError", "no flat in filter 'I'; flats exist for 'R'")],
     [("no flat in filter 'B'", ["x.fits"]), ("no flat in filter 'I'", ["y.fits"])]),
    # the file's own name in the text does not make a reason of its own
    ([("flat-1.FIT", "HeaderNote", "flat from file name flat-1.FIT; IMAGETYP says 'Light'"),
      ("flat-2.FIT", "HeaderNote", "flat from file name flat-2.FIT; IMAGETYP says 'Light'")],
     [("flat from file name", ["flat-1.FIT", "flat-2.FIT"])]),
])
def test_group_by_reason(rows, expected):
    table = Table(rows=rows, names=["file", "kind", "problem"])
    groups = group_by_reason(table, "problem")
    assert [(g["reason"], g["files"]) for g in groups] == expected


def test_group_by_reason_of_an_empty_table():
    assert group_by_reason(Table(names=["file", "kind", "note"], dtype=["U1"] * 3),
                           "note") == []
