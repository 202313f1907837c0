"""Narrow fixes that let the pinned OpenMMLab stack run on today's torch and numpy."""
from . import checkpoint  # noqa: F401
from . import imagecorruptions  # noqa: F401
