"""The rules of the house, checked from the syntax tree of the package.

Each module has one job and data flows one way; these tests keep the measurable part of
that true: no function over 80 code lines (``combine``, whose signature mirrors ccdproc's,
aside), no module over 700 lines, no underscore name crossing modules, no private name of
ccdproc or astropy used or overridden, no import of the package inside a function (the
command line and optional dependencies aside), and raw pixels read in at most two modules.
"""

import ast
import inspect
import io
import tokenize
from pathlib import Path

import pytest
from ccdproc import ImageFileCollection

import ccdproc_ext

PACKAGE = Path(ccdproc_ext.__file__).parent
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "tests" not in p.parts)

MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 700
# Functions allowed to be longer, and why.
LONG_FUNCTIONS = {("combine.py", "combine")}  # its signature mirrors ccdproc.combine's
# Modules whose imports of the package inside functions are allowed: the command line
# starts fast. (Third-party libraries may be imported where used, to keep
# ``import ccdproc_ext`` fast: matplotlib, scipy, photutils ...)
IMPORTS_ANYWHERE = {"cli.py"}
# Calls that read pixels of a file.
PIXEL_READERS = {"open", "getdata", "read", "fits_ccddata_reader", "memmap"}
PIXEL_OWNERS = {"fits", "CCDData", "np", "numpy", "ccdproc"}
MAX_PIXEL_MODULES = 2


def _name(path):
    return path.relative_to(PACKAGE).as_posix()


def _tree(path):
    return ast.parse(path.read_text(), filename=str(path))


def _code_lines(source, node):
    """Lines of ``node`` holding code: no blank line, comment or docstring."""
    lines = source.splitlines()[node.lineno - 1:node.end_lineno]
    text = "\n".join(lines)
    docstring_lines = set()
    body = node.body
    if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)):
        docstring_lines = set(range(body[0].lineno, body[0].end_lineno + 1))
    code = set()
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                          tokenize.DEDENT, tokenize.ENDMARKER):
            continue
        for row in range(token.start[0], token.end[0] + 1):
            line = row + node.lineno - 1
            if line not in docstring_lines:
                code.add(line)
    return len(code)


def _functions(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_modules_found():
    assert len(MODULES) > 20
    assert any(p.name == "night.py" for p in MODULES)


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_functions_short(path):
    source = path.read_text()
    long = []
    for node in _functions(_tree(path)):
        if (path.name, node.name) in LONG_FUNCTIONS:
            continue
        count = _code_lines(source, node)
        if count > MAX_FUNCTION_LINES:
            long.append(f"{node.name} (line {node.lineno}): {count} code lines")
    assert not long, long


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_module_size(path):
    count = len(path.read_text().splitlines())
    assert count <= MAX_MODULE_LINES, f"{_name(path)}: {count} lines"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_private_name_crosses_modules(path):
    crossing = []
    tree = _tree(path)
    imported_modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            own = node.level > 0 or (node.module or "").startswith("ccdproc_ext")
            for alias in node.names:
                if own and _private(alias.name):
                    # a private *module* of the package may be imported by name
                    target = PACKAGE.joinpath(*(node.module or "").split(".")) / alias.name
                    if not target.with_suffix(".py").exists() and not target.is_dir():
                        crossing.append(f"line {node.lineno}: {alias.name}")
                if own:
                    imported_modules.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in imported_modules and _private(node.attr)):
            crossing.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    assert not crossing, crossing


def _third_party_private(module, names):
    parts = (module or "").split(".")
    root = parts[0]
    if root not in ("ccdproc", "astropy"):
        return []
    found = [module] if any(_private(p) for p in parts) else []
    found += [f"{module}.{n}" for n in names if _private(n)]
    return found


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_private_ccdproc_or_astropy_name(path):
    tree = _tree(path)
    used = []
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            used += _third_party_private(node.module, [a.name for a in node.names])
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                used += _third_party_private(alias.name, [])
                aliases[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and _private(node.attr)):
            root = aliases[node.value.id].split(".")[0]
            if root in ("ccdproc", "astropy"):
                used.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    assert not used, used


def _collection_private_names():
    names = {n for n in dir(ImageFileCollection) if _private(n)}
    source = inspect.getsource(ImageFileCollection)
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id == "self" and _private(node.attr)):
            names.add(node.attr)
    return names


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_image_file_collection_private_parts_untouched(path):
    """A subclass of ImageFileCollection neither overrides nor reads its private parts."""
    private = _collection_private_names()
    assert "_get_files" in private  # the check sees ccdproc's private names
    touched = []
    for node in ast.walk(_tree(path)):
        if not isinstance(node, ast.ClassDef):
            continue
        bases = {getattr(b, "id", getattr(b, "attr", None)) for b in node.bases}
        if "ImageFileCollection" not in bases:
            continue
        for inner in ast.walk(node):
            if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)) and inner.name in private:
                touched.append(f"overrides {inner.name}")
            if (isinstance(inner, ast.Attribute) and isinstance(inner.value, ast.Name)
                    and inner.value.id == "self" and inner.attr in private):
                touched.append(f"line {inner.lineno}: self.{inner.attr}")
    assert not touched, sorted(set(touched))


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_package_import_inside_functions(path):
    if path.name in IMPORTS_ANYWHERE:
        return
    inside = []
    for function in _functions(_tree(path)):
        for node in ast.walk(function):
            if isinstance(node, ast.ImportFrom):
                own = node.level > 0 or (node.module or "").startswith("ccdproc_ext")
            elif isinstance(node, ast.Import):
                own = any(a.name.startswith("ccdproc_ext") for a in node.names)
            else:
                continue
            if own:
                inside.append(f"{function.name} (line {node.lineno})")
    assert not inside, inside


def _reads_pixels(tree):
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Name):  # a reader imported by name
            if node.func.id in PIXEL_READERS - {"open", "read"}:
                lines.append(node.lineno)
            continue
        if not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value
        owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", None)
        if node.func.attr in PIXEL_READERS and owner_name in PIXEL_OWNERS:
            lines.append(node.lineno)
    return lines


def test_raw_pixels_read_in_at_most_two_modules():
    readers = {_name(p): _reads_pixels(_tree(p)) for p in MODULES}
    readers = {name: lines for name, lines in readers.items() if lines}
    assert "raw.py" in readers  # the check sees the reader
    assert len(readers) <= MAX_PIXEL_MODULES, readers
