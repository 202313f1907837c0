"""Grey images (MNIST, Fashion-MNIST) as three-channel images for colour pipelines."""
import numpy as np
from mmcv.transforms import BaseTransform

from stl_mm.registry import register


@register('TRANSFORMS', codebases=('mmpretrain', ))
class GrayToBGR(BaseTransform):
    """Repeat a grey ``img`` into three identical channels (HxWx3, uint8).

    mmpretrain's ``MNIST`` and ``FashionMNIST`` datasets give HxW arrays, while RandAugment's
    colour and contrast ops, the data preprocessors and the FAN patch embedding expect HxWx3.
    Put this transform first in such a dataset's pipelines; three-channel images pass through
    unchanged. Sets ``img_shape`` and ``ori_shape``.
    """

    def transform(self, results: dict) -> dict:
        """Expand ``results['img']`` to HxWx3."""
        img = np.asarray(results['img'])
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[..., 0]
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        elif not (img.ndim == 3 and img.shape[2] == 3):
            raise ValueError(f'GrayToBGR expects an HxW or HxWx1 grey image (or HxWx3, kept as '
                             f'is), got shape {img.shape}.')
        results['img'] = np.ascontiguousarray(img)
        results['img_shape'] = results['ori_shape'] = img.shape[:2]
        return results
