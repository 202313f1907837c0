"""Narrow fixes to the pinned OpenMMLab stack: loading under today's torch and numpy,
checkpoints that are never left half-written, attention in the FLOP counter, and the upstream
tools that need a hand with our configs (:mod:`stl_mm.compat.upstream_tools`)."""
from . import atomic_checkpoint  # noqa: F401
from . import checkpoint  # noqa: F401
from . import flops  # noqa: F401
from . import imagecorruptions  # noqa: F401
from . import upstream_tools  # noqa: F401
