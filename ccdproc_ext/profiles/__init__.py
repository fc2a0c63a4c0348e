"""Instrument profiles: the model, its validation, and where profiles come from."""

from . import draft, model, registry, sections
from .draft import *  # noqa: F403
from .model import *  # noqa: F403
from .registry import *  # noqa: F403
from .sections import *  # noqa: F403

__all__ = model.__all__ + registry.__all__ + sections.__all__ + draft.__all__
