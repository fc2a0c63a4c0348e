"""Sphinx configuration: the shared astropy settings, plus this package's names."""

import datetime
from importlib import metadata

from sphinx_astropy.conf.v2 import *  # noqa: F403

project = "ccdproc_ext"
author = "The ccdproc_ext developers"
copyright = f"{datetime.datetime.now(datetime.UTC).year}, {author}"

# The installed package, so the documentation describes what users get.
release = metadata.version(project)
version = release.split(".dev")[0]
html_title = f"{project} {release}"

intersphinx_mapping.update({  # noqa: F405
    "ccdproc": ("https://ccdproc.readthedocs.io/en/stable/", None),
    "photutils": ("https://photutils.readthedocs.io/en/stable/", None),
})
