"""Narrow fixes that let the pinned OpenMMLab stack run on today's torch and numpy."""
from . import checkpoint  # noqa: F401
