"""Finding profiles: built-in TOML files, plugins' entry points, and user paths.

Other packages contribute profiles through the entry-point group ``ccdproc_ext.profiles``.
Each entry point is a zero-argument callable returning a list of TOML file paths (``str``,
`pathlib.Path` or `importlib.resources` traversables), so one package can ship several
cameras::

    # pyproject.toml of a plugin package
    [project.entry-points."ccdproc_ext.profiles"]
    my_observatory = "my_observatory.profiles:ccdproc_ext_profiles"

Discovery is lazy (on first use), cached, and reset with `reset_registry`. A plugin that
fails to load becomes a `~ccdproc_ext.CcdprocExtWarning` naming the package; two profiles
with the same name are an error naming both.
"""

import tomllib
import warnings
from importlib import metadata, resources
from pathlib import Path

from ..exceptions import CcdprocExtWarning, ProfileError
from .model import InstrumentProfile

__all__ = [
    "ENTRY_POINT_GROUP",
    "available_profiles",
    "get_profile",
    "load_profile",
    "reset_registry",
    "validate_profile",
]

#: Entry-point group through which installed packages contribute profiles.
ENTRY_POINT_GROUP = "ccdproc_ext.profiles"

_registry = None


def load_profile(path):
    """Read and validate one TOML profile file.

    Parameters
    ----------
    path : str, `pathlib.Path` or traversable
        The TOML file.

    Returns
    -------
    `~ccdproc_ext.InstrumentProfile`

    Raises
    ------
    ProfileError
        If the file cannot be read, is not TOML, or breaks the schema; the message names
        the file and every offending key.
    """
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8") if hasattr(path, "read_text") else \
            Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ProfileError(f"{source}: cannot read the profile file ({err})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ProfileError(f"{source}: not valid TOML ({err})") from None
    return InstrumentProfile.from_dict(data, source=source)


def validate_profile(path):
    """List the problems of a profile file; an empty list means it is valid.

    Parameters
    ----------
    path : str or `pathlib.Path`
        The TOML file to check.

    Returns
    -------
    list of str
        One message per problem, each naming the file and the key.

    Examples
    --------
    >>> import ccdproc_ext
    >>> from importlib import resources
    >>> folder = resources.files("ccdproc_ext.profiles") / "data"
    >>> ccdproc_ext.validate_profile(folder / "generic.toml")
    []
    """
    try:
        load_profile(path)
    except ProfileError as err:
        return str(err).splitlines()
    return []


def _builtin_files():
    folder = resources.files("ccdproc_ext.profiles") / "data"
    return sorted((f for f in folder.iterdir() if f.name.endswith(".toml")),
                  key=lambda f: f.name)


def _entry_points():
    return metadata.entry_points(group=ENTRY_POINT_GROUP)


def _plugin_label(entry_point):
    dist = getattr(entry_point, "dist", None)
    if dist is not None:
        return f"package {dist.name} {dist.version} (entry point {entry_point.name!r})"
    return f"entry point {entry_point.name!r} ({entry_point.value})"


def _discover():
    found = {}

    def add(profile, origin):
        if profile.name in found:
            other = found[profile.name][1]
            raise ProfileError(f"two profiles are named {profile.name!r}: one from {other}, "
                               f"one from {origin}; rename one of them")
        found[profile.name] = (profile, origin)

    for path in _builtin_files():
        add(load_profile(path), f"ccdproc_ext ({path.name})")

    for entry_point in _entry_points():
        label = _plugin_label(entry_point)
        try:
            paths = entry_point.load()()
            profiles = [(load_profile(p), p) for p in paths]
        except Exception as err:  # a broken plugin must not break the host
            warnings.warn(f"ignoring the instrument profiles of {label}: {err}",
                          CcdprocExtWarning, stacklevel=3)
            continue
        for profile, path in profiles:
            add(profile, f"{label} ({Path(str(path)).name})")
    return {name: profile for name, (profile, _) in found.items()}


def _profiles():
    global _registry
    if _registry is None:
        _registry = _discover()
    return _registry


def reset_registry():
    """Forget the discovered profiles, so the next lookup searches again."""
    global _registry
    _registry = None


def available_profiles():
    """Names of all profiles: built-in and contributed by installed packages.

    Examples
    --------
    >>> import ccdproc_ext
    >>> 'palomar-lfc' in ccdproc_ext.available_profiles()
    True
    """
    return sorted(_profiles())


def get_profile(name_or_path):
    """Return an instrument profile by name, from a TOML file, or as given.

    Parameters
    ----------
    name_or_path : str, `pathlib.Path` or `~ccdproc_ext.InstrumentProfile`
        A registered profile name (see `available_profiles`), or the path of a TOML file.

    Returns
    -------
    `~ccdproc_ext.InstrumentProfile`

    Raises
    ------
    ProfileError
        If the name is unknown (the message lists the known ones) or the file is invalid.
    """
    if isinstance(name_or_path, InstrumentProfile):
        return name_or_path
    if isinstance(name_or_path, Path) or str(name_or_path).lower().endswith(".toml"):
        return load_profile(Path(name_or_path))
    profiles = _profiles()
    try:
        return profiles[name_or_path]
    except KeyError:
        raise ProfileError(f"no instrument profile named {name_or_path!r}; available: "
                           f"{', '.join(sorted(profiles))}, or the path of a .toml file"
                           ) from None
