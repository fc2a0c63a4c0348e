"""ccdproc's own tests, run against the drop-ins of ccdproc_ext.

`NightCollection` is an `~ccdproc.ImageFileCollection` and `ccdproc_ext.combine.combine` a
drop-in for `ccdproc.combine`: the installed ccdproc's ``test_image_collection.py`` and
``test_combiner.py`` are run twice, as they are and with the name swapped, and must give the
same counts. The swapped copy differs from ccdproc's module in its import line only, and in
the repr tests, which expect the instance's own class name (``NightCollection(...)``).

One test is left out of the swapped run, a deliberate difference: ccdproc's
``test_generator_ccds_without_unit`` expects ``ccds()`` to fail on files without ``BUNIT``
("a unit for CCDData must be specified"); `NightCollection.ccds` reads them in the
profile's unit (adu by default) instead. Every other test must pass as it does in ccdproc.

Nothing is downloaded: the tests are skipped when ccdproc's test modules are not installed.
"""

import importlib.util
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

SUITES = ("test_image_collection", "test_combiner")


def _installed_tests():
    try:
        spec = importlib.util.find_spec("ccdproc.tests")
    except ImportError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not all((folder / f"{name}.py").is_file() for name in SUITES):
        return None
    return folder


CCDPROC_TESTS = _installed_tests()
pytestmark = pytest.mark.skipif(CCDPROC_TESTS is None,
                                reason="ccdproc's test modules are not installed")

#: The import lines of ccdproc's modules, and what the swapped copy imports instead.
_SWAPS = {
    "test_image_collection": [
        ("from ccdproc.image_collection import ImageFileCollection\n",
         "from ccdproc_ext import NightCollection as ImageFileCollection\n"),
    ],
    "test_combiner": [
        ("from ccdproc.image_collection import ImageFileCollection\n",
         "from ccdproc.image_collection import ImageFileCollection\n"
         "from ccdproc_ext.combine import combine\n"),
    ],
}
#: ccdproc's tests of behaviours the drop-ins change on purpose (see the module's docstring).
DELIBERATE = {
    "test_image_collection": ("TestImageFileCollection::test_generator_ccds_without_unit",),
    "test_combiner": (),
}
#: The repr tests' expected text starts with the class name: the instance's own.
_REPR_RE = re.compile(r'(f?")ImageFileCollection\(')
#: Relative imports (``from ..combiner import``) name ccdproc's modules outside its package.
_RELATIVE_RE = re.compile(r"^(\s*)from (\.+)(\w*)", re.MULTILINE)


def _absolute(match):
    indent, dots, module = match.groups()
    package = ["ccdproc", "tests"][:3 - len(dots)]
    return f"{indent}from {'.'.join([*package, module] if module else package)}"


def _swapped_source(name):
    source = (CCDPROC_TESTS / f"{name}.py").read_text()
    for old, new in _SWAPS[name]:
        assert source.count(old) == 1, f"{name}.py no longer has the line {old!r}"
        source = source.replace(old, new)
    source = _RELATIVE_RE.sub(_absolute, source)
    if name == "test_image_collection":
        source, count = _REPR_RE.subn(r"\1NightCollection(", source)
        assert count >= 4, "the repr tests of test_image_collection.py have changed"
    return source


def _counts(junit_file):
    """``{outcome: number}`` of the test cases in a JUnit XML report."""
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for case in ElementTree.parse(junit_file).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped"
        counts[outcome] += 1
    return counts


def _run_pytest(target, folder, report, deselect=()):
    """Run pytest on ``target``, warnings being errors as in ccdproc's own configuration;
    the counts of its report."""
    ini = folder / "pytest.ini"
    ini.write_text("[pytest]\n")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(ini),
               "--rootdir", str(folder), "-W", "error", f"--junitxml={report}", str(target)]
    command += [f"--deselect={target.name}::{test}" for test in deselect]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=900)
    assert report.is_file(), result.stdout[-3000:] + result.stderr[-3000:]
    return _counts(report), result.stdout


@pytest.fixture(scope="module")
def suite_counts(tmp_path_factory):
    """For each suite: ccdproc's own counts, and the counts with the names swapped."""
    counts = {}
    for name in SUITES:
        folder = tmp_path_factory.mktemp(name)
        own, _ = _run_pytest(CCDPROC_TESTS / f"{name}.py", folder, folder / "own.xml")
        swapped_folder = folder / "swapped"
        swapped_folder.mkdir()
        # The copy finds ccdproc's data files and fixtures where its original does.
        (swapped_folder / "data").symlink_to(CCDPROC_TESTS / "data")
        (swapped_folder / "conftest.py").write_text(
            "from ccdproc.tests.pytest_fixtures import triage_setup  # noqa: F401\n")
        (swapped_folder / f"{name}.py").write_text(_swapped_source(name))
        swapped, output = _run_pytest(swapped_folder / f"{name}.py", swapped_folder,
                                      swapped_folder / "swapped.xml", DELIBERATE[name])
        counts[name] = own, swapped, output
    return counts


@pytest.mark.parametrize("name", SUITES)
def test_swapped_counts_equal_ccdprocs(suite_counts, name):
    own, swapped, output = suite_counts[name]
    assert own["passed"] > 0
    print(f"{name}: ccdproc {own}, swapped {swapped}, left out {len(DELIBERATE[name])}")
    left_out = len(DELIBERATE[name])
    assert swapped == {**own, "passed": own["passed"] - left_out}, output[-6000:]
