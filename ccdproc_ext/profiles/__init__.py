"""Instrument profiles: the model, its validation, and where profiles come from."""

from . import classify, detector, model, registry, schema, sections
from .classify import *  # noqa: F403
from .detector import *  # noqa: F403
from .model import *  # noqa: F403
from .registry import *  # noqa: F403
from .schema import *  # noqa: F403
from .sections import *  # noqa: F403

# isort: split
# Last: a draft is made from a NightCollection, whose module reads the names above.
from . import draft
from .draft import *  # noqa: F403

__all__ = (model.__all__ + classify.__all__ + detector.__all__ + schema.__all__
           + registry.__all__ + sections.__all__ + draft.__all__)
