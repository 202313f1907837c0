"""stl_mm: FAN backbones and Self-emerging Token Labeling for OpenMMLab 2.x.

Importing the package applies the narrow compatibility fixes in :mod:`stl_mm.compat` and
registers every module into mmpretrain, mmsegmentation and mmdetection (those installed), and
the model zoo into mmpretrain's model hub (:mod:`stl_mm.apis.model_zoo`).
"""
from .version import __version__
from . import compat  # noqa: F401,I001  (must run before any checkpoint is loaded)
from .registry import DISABLED_FEATURES, REGISTRIES
from . import datasets, engine, evaluation, models  # noqa: F401
from .apis.model_zoo import register_model_zoo

register_model_zoo()

__all__ = ['__version__', 'DISABLED_FEATURES', 'REGISTRIES']
