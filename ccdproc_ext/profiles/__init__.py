"""Instrument profiles: the model, its validation, and where profiles come from."""

from . import classify, detector, model, registry, schema, sections
from .classify import *  # noqa: F403
from .detector import *  # noqa: F403
from .model import *  # noqa: F403
from .registry import *  # noqa: F403
from .schema import *  # noqa: F403
from .sections import *  # noqa: F403

# ``profiles.draft`` (a profile drafted from a night) reads a night with NightCollection,
# which reads the names above: it is imported as a module of its own, not here.

__all__ = (model.__all__ + classify.__all__ + detector.__all__ + schema.__all__
           + registry.__all__ + sections.__all__)
