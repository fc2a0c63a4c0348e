"""Doctests of the narrative pages run in a fresh folder holding the example profile.

The pages tell the reader to save ``my-camera.toml`` and work next to it; this sets up
the same situation for every page, so examples can write files without touching the
source tree.
"""

import shutil
from pathlib import Path

import pytest

_EXAMPLE_PROFILE = Path(__file__).parent / "my-camera.toml"


@pytest.fixture(autouse=True)
def _in_a_folder_with_the_example_profile(tmp_path, monkeypatch):
    shutil.copy(_EXAMPLE_PROFILE, tmp_path)
    monkeypatch.chdir(tmp_path)
