"""ccdproc_ext: instrument profiles, calibration matching, fast combining and whole-night
reduction, built on ccdproc.

>>> import ccdproc_ext
>>> profile = ccdproc_ext.get_profile("generic")
"""

try:
    from ._version import version as __version__
except ImportError:  # pragma: no cover - running from a source tree without a build
    __version__ = "0.0.0"

from ._allocator import tune_allocator
from .calibrate import calibrate_frame
from .collection import NightCollection
from .combine import combine
from .exceptions import *  # noqa: F403
from .library import CalibrationLibrary
from .master_frame import MasterFrame
from .masters import make_master_bias, make_master_dark, make_master_flat
from .matching import build_plan, find_nearest_dark_exposure
from .night import NightResult, reduce_night
from .profiles import InstrumentProfile, available_profiles, get_profile, validate_profile
from .profiles.draft import draft_profile

__all__ = [
    "CalibrationLibrary",
    "InstrumentProfile",
    "MasterFrame",
    "NightCollection",
    "NightResult",
    "available_profiles",
    "build_plan",
    "calibrate_frame",
    "combine",
    "draft_profile",
    "find_nearest_dark_exposure",
    "get_profile",
    "make_master_bias",
    "make_master_dark",
    "make_master_flat",
    "reduce_night",
    "tune_allocator",
    "validate_profile",
]
__all__ += exceptions.__all__  # noqa: F405
