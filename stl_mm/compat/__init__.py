"""Narrow fixes to the pinned OpenMMLab stack: loading under today's torch and numpy, and
checkpoints that are never left half-written."""
from . import atomic_checkpoint  # noqa: F401
from . import checkpoint  # noqa: F401
from . import imagecorruptions  # noqa: F401
