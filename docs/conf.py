"""Sphinx configuration: the shared astropy settings (confv3), plus this package's names.

Every build makes a simulated night, reduces it and writes its report into
``_generated/`` (see `make_example_night`): the gallery page shows the report's own
pictures, and the whole report is published beside the pages as ``report.html``.
"""

import datetime
import shutil
from importlib import metadata
from pathlib import Path

from sphinx_astropy.conf.v3 import *  # noqa: F403

project = "ccdproc_ext"
author = "The ccdproc_ext developers"
copyright = f"2024-{datetime.datetime.now(datetime.UTC).year}, {author}"

# The installed package, so the documentation describes what users get.
release = metadata.version(project)
version = release.split(".dev")[0]
html_title = f"{project} {release}"

intersphinx_mapping.update({  # noqa: F405
    "ccdproc": ("https://ccdproc.readthedocs.io/en/stable/", None),
    "photutils": ("https://photutils.readthedocs.io/en/stable/", None),
})

# Every cross-reference must resolve: a broken one is a warning, and warnings fail the
# build (sphinx-build -W).
nitpicky = True
nitpick_ignore = [
    # numpydoc's words for parameter types, not objects to link to
    ("py:class", "optional"),
    ("py:class", "array-like"),
    ("py:class", "path-like"),
    ("py:class", "callable"),
]

# The types are in the numpydoc docstrings; signatures stay short and link nothing twice.
autodoc_typehints = "none"

exclude_patterns = [*exclude_patterns, "_generated"]  # noqa: F405
html_static_path = ["_static"]

# ----------------------------------------------------------- the example night
DOCS = Path(__file__).parent
GENERATED = DOCS / "_generated"
#: The report, published beside the pages as example-night/report.html.
PUBLISHED = GENERATED / "published"
html_extra_path = [str(PUBLISHED.relative_to(DOCS))]


def make_example_night(folder=GENERATED):
    """Simulate, reduce and report the night the gallery shows.

    Two filters with dust on the flats, three science frames in each, a file cut short
    and a frame in a filter with no flat: the report then shows every kind of picture
    and how problems are grouped. Returns the output folder.
    """
    from ccdproc_ext import reduce_night
    from ccdproc_ext.report import REPORT_FOLDER, REPORT_NAME, write_report
    from ccdproc_ext.simulate import simulate_night

    raw, out = folder / "raw", folder / "night"
    if not raw.is_dir():
        night = simulate_night(raw, "generic", shape=(256, 320), filters=("V", "R"),
                               n_science=3, n_stars=40, seed=7)
        simulate_night(raw, "generic", shape=(256, 320), n_bias=0, n_dark=0, n_flat=0,
                       filters=(), dark_exposures=(), science_filters=("B",), n_science=1,
                       prefix="late_", seed=8)
        first = raw / sorted(str(f) for f, t in zip(night.files["file"], night.files["type"],
                                                    strict=True) if t == "science")[0]
        for name, fraction in (("object_cut_001.fits", 0.5), ("object_cut_002.fits", 0.3)):
            data = first.read_bytes()
            (raw / name).write_bytes(data[:int(len(data) * fraction)])
    reduce_night(raw, out, progress=False)
    write_report(out)
    if PUBLISHED.exists():
        shutil.rmtree(PUBLISHED)
    (PUBLISHED / "example-night").mkdir(parents=True)
    shutil.copy2(out / REPORT_NAME, PUBLISHED / "example-night" / REPORT_NAME)
    shutil.copytree(out / REPORT_FOLDER, PUBLISHED / "example-night" / REPORT_FOLDER)
    return out


def _make_example_night(app, config):
    make_example_night()


def setup(app):
    # Before Sphinx checks html_extra_path (config-inited, priority 800).
    app.connect("config-inited", _make_example_night, priority=400)
