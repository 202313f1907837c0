"""Student and teacher views of one image with shared spatial randomness (STL stage 2)."""
from typing import Callable, List, Optional, Sequence, Union

from mmcv.transforms import BaseTransform, Compose
from mmcv.transforms.utils import cache_random_params
from mmpretrain.datasets.transforms import PackInputs, RandAugment
from mmpretrain.registry import TRANSFORMS

from stl_mm.registry import register

TEACHER_IMG_KEY = 'teacher_img'
TransformConfig = Union[dict, Callable]


@register('TRANSFORMS', codebases=('mmpretrain', ))
class DualView(BaseTransform):
    """Make the student view (``img``) and the teacher view (``teacher_img``) of an image.

    The teacher's token labels must describe the same pixels the student sees, so both views
    share every spatial decision, while only the student gets the appearance changes
    (Table 1 of the STL paper):

    1. ``shared`` transforms (random resized crop, flip) run once; both views start from
       their output.
    2. ``rand_augment`` (mmpretrain's :class:`RandAugment`, e.g. ``policies='timm_increasing'``)
       samples its op sequence once. Every op is applied to the student. The geometric ops
       (``geometric_ops``: rotate, shear, translate) are applied to the teacher as well, in
       the same order and with the same draws (on/off, magnitude, sign): they run inside
       mmcv's ``cache_random_params``, so the teacher call reuses the values the student call
       drew, and with the same fill value and interpolation (same op instance). Photometric
       ops (contrast, solarize, posterize, ...) touch the student only.
    3. ``student_only`` transforms (random erasing) touch the student only.

    The numpy random stream advances exactly as for the student pipeline alone.

    Args:
        shared: Transforms applied once before the views split, e.g.
            ``[dict(type='RandomResizedCrop', ...), dict(type='RandomFlip', ...)]``.
        rand_augment: Config (or instance) of a ``RandAugment``; None for none.
        student_only: Transforms applied to the student view last, e.g.
            ``[dict(type='RandomErasing', ...)]``.
        geometric_ops: Registered type names of the RandAugment ops that move pixels and
            are therefore shared with the teacher. Defaults to
            ``('Rotate', 'Shear', 'Translate')``.
        teacher_key: Results key of the teacher view. Defaults to ``'teacher_img'``.
    """

    def __init__(self,
                 shared: Sequence[TransformConfig] = (),
                 rand_augment: Optional[TransformConfig] = None,
                 student_only: Sequence[TransformConfig] = (),
                 geometric_ops: Sequence[str] = ('Rotate', 'Shear', 'Translate'),
                 teacher_key: str = TEACHER_IMG_KEY) -> None:
        self.shared = _compose(shared)
        if isinstance(rand_augment, dict):
            rand_augment = TRANSFORMS.build(rand_augment)
        if rand_augment is not None and not isinstance(rand_augment, RandAugment):
            raise TypeError('DualView: rand_augment must build an mmpretrain RandAugment (e.g. '
                            "dict(type='RandAugment', policies='timm_increasing', ...)), got "
                            f'{type(rand_augment).__name__}. Put other transforms in '
                            '`shared` or `student_only`.')
        self.rand_augment = rand_augment
        self.student_only = _compose(student_only)
        self.geometric_types = tuple(_registered_type(name) for name in geometric_ops)
        self.teacher_key = teacher_key

    def transform(self, results: dict) -> Optional[dict]:
        """Add the teacher view to ``results`` and augment the student view in ``img``."""
        results = self.shared(results)
        if results is None:
            return None
        teacher_img = results['img'].copy()
        for op in self._sample_rand_augment_ops():
            if isinstance(op, self.geometric_types):
                with cache_random_params(op):
                    results = op(results)
                    teacher_img = op(dict(results, img=teacher_img))['img']
            else:
                results = op(results)
        results = self.student_only(results)
        if results is None:
            return None
        results[self.teacher_key] = teacher_img
        return results

    def _sample_rand_augment_ops(self) -> List[BaseTransform]:
        if self.rand_augment is None:
            return []
        indices = self.rand_augment.random_policy_indices()
        return [self.rand_augment.transforms[index] for index in indices]

    def __repr__(self) -> str:
        geometric = [op_type.__name__ for op_type in self.geometric_types]
        return (f'{self.__class__.__name__}(shared={self.shared}, '
                f'rand_augment={self.rand_augment}, student_only={self.student_only}, '
                f'geometric_ops={geometric}, teacher_key={self.teacher_key!r})')


def _compose(transforms: Sequence[TransformConfig]) -> Compose:
    # Built from mmpretrain's registry: mmcv's Compose alone would look configs up in
    # mmengine's root registry, which lacks mmpretrain's transforms outside a default scope.
    return Compose([TRANSFORMS.build(t) if isinstance(t, dict) else t for t in transforms])


def _registered_type(name: str) -> type:
    op_type = TRANSFORMS.get(name)
    if op_type is None:
        raise KeyError(f'DualView: geometric op {name!r} is not a registered mmpretrain '
                       "transform; use type names such as 'Rotate', 'Shear', 'Translate'.")
    return op_type


@register('TRANSFORMS', codebases=('mmpretrain', ))
class PackDualViewInputs(PackInputs):
    """mmpretrain ``PackInputs`` that also packs the teacher view as ``teacher_inputs``.

    The teacher view is formatted like ``inputs`` (a (3, H, W) tensor) and reaches
    :class:`~stl_mm.models.utils.TokenLabelingDataPreprocessor` next to the student images.

    Args:
        teacher_key: Results key of the teacher view (set by :class:`DualView`).
        **kwargs: Arguments of :class:`mmpretrain.datasets.transforms.PackInputs`.
    """

    def __init__(self, teacher_key: str = TEACHER_IMG_KEY, **kwargs) -> None:
        super().__init__(**kwargs)
        self.teacher_key = teacher_key

    def transform(self, results: dict) -> dict:
        """Pack ``img`` (as ``inputs``), the teacher view and the annotations."""
        if self.teacher_key not in results:
            raise KeyError(f'PackDualViewInputs: no {self.teacher_key!r} in the results. Put '
                           'a DualView transform before it in the pipeline, or use PackInputs '
                           'for single-view training.')
        packed = super().transform(results)
        packed['teacher_inputs'] = self.format_input(results[self.teacher_key])
        return packed

    def __repr__(self) -> str:
        return f'{super().__repr__()[:-1]}, teacher_key={self.teacher_key!r})'
