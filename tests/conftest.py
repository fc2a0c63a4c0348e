"""Shared fixtures: the real frames (when present) and synthetic nights."""

import os
from pathlib import Path

import pytest

try:
    from pytest_astropy_header.display import PYTEST_HEADER_MODULES
except ImportError:  # pragma: no cover
    PYTEST_HEADER_MODULES = {}
else:
    PYTEST_HEADER_MODULES.clear()
    PYTEST_HEADER_MODULES.update({"Numpy": "numpy", "Astropy": "astropy", "ccdproc": "ccdproc",
                                  "photutils": "photutils", "bottleneck": "bottleneck"})


def _real_data_root():
    value = os.environ.get("CCDPROC_EXT_REAL_DATA")
    if not value:
        return None
    root = Path(value)
    return root if root.is_dir() else None


@pytest.fixture(scope="session")
def real_data():
    """The folder of real raw frames, or skip when ``CCDPROC_EXT_REAL_DATA`` is unset."""
    root = _real_data_root()
    if root is None:
        pytest.skip("CCDPROC_EXT_REAL_DATA is not set to the folder of real frames")
    return root
