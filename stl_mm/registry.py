"""One place that registers stl_mm classes into the installed OpenMMLab codebases.

mmpretrain is required; mmsegmentation and mmdetection are optional. When one of them is
missing, ``import stl_mm`` still works and :data:`DISABLED_FEATURES` (also logged once) says
which features are off and how to turn them on.
"""
import importlib
import warnings
from types import ModuleType
from typing import Callable, Dict, Iterable, Optional, Type

#: Codebase package -> (what needs it, how to install it).
_OPTIONAL_CODEBASES = {
    'mmseg': ('semantic segmentation (configs/seg, tools/dataset_converters/gen_city_c.py,'
              ' tools/analysis_tools/test_city_c.py)',
              "pip install 'mmsegmentation==1.2.2'"),
    'mmdet': ('object detection (configs/det, tools/analysis_tools/test_coco_c.py)',
              "pip install 'mmdet==3.3.0' pycocotools"),
}
ALL_CODEBASES = ('mmpretrain', 'mmseg', 'mmdet')


def _import_registries() -> Dict[str, ModuleType]:
    found = {'mmpretrain': importlib.import_module('mmpretrain.registry')}
    for codebase, (feature, fix) in _OPTIONAL_CODEBASES.items():
        try:
            found[codebase] = importlib.import_module(f'{codebase}.registry')
        except Exception as error:  # ImportError, or a codebase refusing our mmcv version
            DISABLED_FEATURES[codebase] = (f'{codebase} is unavailable ({error}); {feature} '
                                           f'is off. To enable it: {fix}')
    return found


DISABLED_FEATURES: Dict[str, str] = {}
REGISTRIES: Dict[str, ModuleType] = _import_registries()
for _message in DISABLED_FEATURES.values():
    warnings.warn(f'stl_mm: {_message}', stacklevel=2)


def register(kind: str = 'MODELS',
             codebases: Iterable[str] = ALL_CODEBASES,
             name: Optional[str] = None) -> Callable[[Type], Type]:
    """Class decorator: register into ``kind`` (e.g. ``'MODELS'``) of every installed codebase.

    Args:
        kind: Name of the registry attribute in ``<codebase>.registry``.
        codebases: Codebases to register into; uninstalled ones are skipped.
        name: Registered name; defaults to the class name.
    """

    def decorator(cls: Type) -> Type:
        for codebase in codebases:
            if codebase in REGISTRIES:
                getattr(REGISTRIES[codebase], kind).register_module(name=name, module=cls)
        return cls

    return decorator
