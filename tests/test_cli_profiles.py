"""The ``ccdproc-ext profiles`` commands: list, show, validate."""

import shutil
import subprocess
import sys
import sysconfig
import warnings
from importlib import resources
from types import SimpleNamespace

import pytest

import ccdproc_ext
from ccdproc_ext.cli import main
from ccdproc_ext.profiles import registry

GOOD_PROFILE = """\
schema_version = 1
name = "cli-camera"
description = "A camera for the command-line tests"

[image_types]
bias = ["bias"]

[detector]
overscan = "[1025:1056,*]"
"""

# Three problems in three tables: one line each.
BAD_PROFILE = """\
schema_version = 1
name = "cli-camera"
description = "A camera for the command-line tests"

[keywords]
exposure_time = 3

[image_types]
bias = ["bias"]

[detector]
overscan = "[1056:1025,*]"

[matching]
scale_darks = "yes"
"""


@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "good.toml"
    path.write_text(GOOD_PROFILE, encoding="utf-8")
    return path


@pytest.fixture
def bad_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(BAD_PROFILE, encoding="utf-8")
    return path


def test_profiles_list(capsys):
    assert main(["profiles", "list"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    names = ccdproc_ext.available_profiles()
    assert [line.split()[0] for line in lines] == names
    for line, name in zip(lines, names, strict=True):
        assert line.endswith(ccdproc_ext.get_profile(name).description)


def test_profiles_show_by_name(capsys):
    assert main(["profiles", "show", "palomar-lfc"]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("palomar-lfc: ")
    assert "overscan: [2056:2080,*]" in out
    assert "trim: [1:2048,*]" in out


@pytest.mark.parametrize("suffix", [".toml", ".cfg"])
def test_profiles_show_a_file(tmp_path, capsys, suffix):
    path = tmp_path / f"camera{suffix}"
    path.write_text(GOOD_PROFILE, encoding="utf-8")
    assert main(["profiles", "show", str(path)]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("cli-camera: A camera for the command-line tests")
    assert "overscan: [1025:1056,*]" in out


@pytest.mark.parametrize(("argv", "expected"), [
    (["profiles", "show", "no-such-camera"], "no instrument profile named 'no-such-camera'"),
    (["profiles", "show", "missing.toml"], "missing.toml: cannot read the profile file"),
])
def test_profiles_show_errors_are_one_line(capsys, argv, expected):
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("ccdproc-ext: error: ")
    assert expected in err
    assert len(err.splitlines()) == 1


def test_profiles_show_an_invalid_file_lists_its_problems(bad_file, capsys):
    assert main(["profiles", "show", str(bad_file)]) == 1
    _, err = capsys.readouterr()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 3
    assert "key 'matching.scale_darks'" in err


def test_profiles_validate_a_valid_file(good_file, capsys):
    assert main(["profiles", "validate", str(good_file)]) == 0
    assert capsys.readouterr().out == f"{good_file}: valid\n"


@pytest.mark.parametrize("name", ["generic", "palomar-lfc", "magellan-ifum"])
def test_profiles_validate_builtin_files(capsys, name):
    path = resources.files("ccdproc_ext.profiles") / "data" / f"{name}.toml"
    assert main(["profiles", "validate", str(path)]) == 0
    assert capsys.readouterr().out.endswith(": valid\n")


def test_profiles_validate_lists_problems_one_per_line(bad_file, capsys):
    assert main(["profiles", "validate", str(bad_file)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for line, key in zip(lines, ["keywords.exposure_time", "detector.overscan",
                                 "matching.scale_darks"], strict=True):
        assert line.startswith(f"{bad_file}: key '{key}'")


def test_profiles_validate_a_missing_file(tmp_path, capsys):
    path = tmp_path / "absent.toml"
    assert main(["profiles", "validate", str(path)]) == 1
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(f"{path}: cannot read the profile file")


def test_profiles_validate_several_files(good_file, bad_file, capsys):
    assert main(["profiles", "validate", str(good_file), str(bad_file)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{good_file}: valid"
    assert len(lines) == 4


@pytest.mark.parametrize(("argv", "status"), [
    ([], 2),
    (["profiles"], 2),
    (["profiles", "validate"], 2),
    (["profiles", "frobnicate"], 2),
    (["--help"], 0),
    (["profiles", "--help"], 0),
])
def test_usage(capsys, argv, status):
    assert main(argv) == status
    out, err = capsys.readouterr()
    assert "usage: ccdproc-ext" in (out if status == 0 else err)


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ccdproc-ext {ccdproc_ext.__version__}"


class _BrokenEntryPoint:
    name = "broken"
    value = "broken_plugin.profiles:ccdproc_ext_profiles"

    dist = SimpleNamespace(name="broken-plugin", version="0.3")

    def load(self):
        raise ImportError("No module named 'broken_plugin'")


def test_a_broken_plugin_is_a_one_line_warning(monkeypatch, capsys):
    monkeypatch.setattr(registry, "_entry_points", lambda: [_BrokenEntryPoint()])
    registry.reset_registry()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default", ccdproc_ext.CcdprocExtWarning)
            assert main(["profiles", "list"]) == 0
    finally:
        registry.reset_registry()
    out, err = capsys.readouterr()
    assert "palomar-lfc" in out
    assert err.startswith("ccdproc-ext: warning: ignoring the instrument profiles of package "
                          "broken-plugin 0.3")
    assert len(err.splitlines()) == 1


def _console_script():
    """The installed ``ccdproc-ext`` of the environment running the tests."""
    return (shutil.which("ccdproc-ext", path=sysconfig.get_path("scripts"))
            or shutil.which("ccdproc-ext"))


def test_console_script(tmp_path):
    script = _console_script()
    if script is None:
        pytest.skip("the ccdproc-ext console script is not installed")
    done = subprocess.run([script, "profiles", "list"], capture_output=True, text=True,
                          cwd=tmp_path, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "palomar-lfc" in done.stdout
    assert done.stderr == ""


def test_module_exits_with_the_status(tmp_path):
    done = subprocess.run([sys.executable, "-m", "ccdproc_ext.cli", "profiles", "validate",
                           "absent.toml"], capture_output=True, text=True, cwd=tmp_path,
                          check=False, timeout=120)
    assert done.returncode == 1
    assert done.stdout.startswith("absent.toml: cannot read the profile file")
    assert "Traceback" not in done.stderr
